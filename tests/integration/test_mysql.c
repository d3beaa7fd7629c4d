/*
 * The MySQL/MariaDB driver (participants/mysql.c) against a real MariaDB: first the driver
 * contract (tests/support/contract.c, group contract/mysql), then what is MariaDB's own: the
 * statement cache, a prepared branch attached to its preparing session, error numbers, exact
 * values of every column type, binary parameters, lock waits and deadlocks, XA state errors,
 * statements that try to end their own branch, session reset, markers, bad arguments, connect
 * timeouts and recovery after a server crash. Each test runs its own loop and ends by checking
 * that the loop closed cleanly.
 */
#include "admin.h"
#include "contract.h"
#include "pxcall.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define D (&px_mysql_driver)

/* The last result of k that has columns: where a query's rows are. */
static const px_result *rows_of(const px_call *k)
{
    for (int i = k->nresults < PXC_MAX_RES ? k->nresults : PXC_MAX_RES; i-- > 0;)
        if (k->res[i].ncols > 0)
            return &k->res[i];
    fail_msg("no result with columns");
    return NULL;
}

/* Column i of the first row: its type and exact text. */
static void assert_cell(const px_result *r, int i, px_coltype type, const char *text)
{
    assert_int_equal(r->coltypes[i], type);
    assert_string_equal(r->cells[i], text);
}

static char g_prefix[32];  /* gtrid prefix of this run: branches of other runs are ignored */
static px_target g_target; /* filled once: tu_target's strings live until exit */
static int g_seq;

static void new_xid(px_xid *x, const char *bqual)
{
    char g[64];
    snprintf(g, sizeof g, "%s.%d", g_prefix, ++g_seq);
    assert_int_equal(px_xid_set(x, g, bqual), 0);
}

static px_param p_int(int64_t v)
{
    return (px_param){.type = PX_P_INT, .i = v};
}
static px_param p_text(const char *s)
{
    return (px_param){.type = PX_P_TEXT, .text = s, .len = strlen(s)};
}

static px_stmt stmt(const char *sql, const px_param *p, int n, int64_t expect)
{
    return (px_stmt){.sql = sql, .params = p, .nparams = n, .expect_rows = expect};
}

static void must_exec(uv_loop_t *loop, px_conn *c, const char *sql, const px_param *p, int n)
{
    px_call k = {0};
    px_stmt s = stmt(sql, p, n, -1);
    if (pxc_exec(loop, c, &s, 1, &k) != PX_OK)
        fail_msg("%s: %d %s", sql, k.err.code, k.err.message);
    pxc_reset(&k);
}

static char *admin(const char *sql)
{
    return adm_sql("order", sql);
}

static void admin_expect(const char *sql, const char *want)
{
    adm_expect("order", sql, want);
}

/* ---- tests ---- */

static int setup(void **state)
{
    snprintf(g_prefix, sizeof g_prefix, "xa1.mt%d", (int)getpid());
    tu_target(&g_target, "order");
    free(admin("DROP TABLE IF EXISTS mxt_kv, mxt_acct, mxt_types, mxt_bulk, mxt_bin;"
               "CREATE TABLE mxt_kv (id INT PRIMARY KEY, v VARCHAR(400), b BLOB)"
               " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;"
               "CREATE TABLE mxt_acct (id INT PRIMARY KEY, balance INT NOT NULL,"
               " CONSTRAINT mxt_nonneg CHECK (balance >= 0)) ENGINE=InnoDB;"
               "CREATE TABLE mxt_types (i BIGINT, u BIGINT UNSIGNED, d DOUBLE, f FLOAT,"
               " m DECIMAL(10,2), s VARCHAR(10), dt DATETIME, n INT, big TEXT, t TINYINT)"
               " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;"
               "CREATE TABLE mxt_bulk (id INT PRIMARY KEY, w INT) ENGINE=InnoDB;"
               "CREATE TABLE mxt_bin (bn BINARY(3), vb VARBINARY(300), bl BLOB, bt BIT(10),"
               " u BIGINT UNSIGNED, t TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;"
               "INSERT INTO mxt_acct VALUES (1, 100), (2, 100), (3, 100);"));
    return 0;
}

static void test_connect_exec_params(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_param p[2] = {p_int(1), p_text("first")};
    px_param q[1] = {p_int(1)};
    px_stmt s[2] = {stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", p, 2, 1),
                    stmt("SELECT id, v FROM mxt_kv WHERE id = ?", q, 1, 1)};
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    assert_ptr_equal(px_driver_find("mysql"), D);
    c = pxc_connect_ok(&loop, D, &t);
    assert_ptr_equal(px_conn_base(c)->driver, D);
    assert_int_equal(pxc_exec(&loop, c, s, 2, &k), PX_OK);
    assert_int_equal(k.nresults, 2);
    assert_int_equal(k.res[0].rows_affected, 1);
    assert_int_equal(k.res[1].rows_affected, 1);
    assert_int_equal(rows_of(&k)->ncols, 2);
    assert_string_equal(rows_of(&k)->colnames[0], "id");
    assert_string_equal(rows_of(&k)->cells[0], "1");
    assert_string_equal(rows_of(&k)->cells[1], "first");
    /* autocommit outside a branch: another session sees it */
    admin_expect("SELECT v FROM mxt_kv WHERE id = 1", "first");
    /* the same statement again comes from the cache and still binds fresh values */
    p[0] = p_int(2);
    p[1] = p_text("second");
    assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_OK);
    admin_expect("SELECT v FROM mxt_kv WHERE id = 2", "second");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void test_statement_cache_eviction(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_conn *c;
    char sql[80];
    long v1, v2, v3;
    px_stmt status = stmt("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS"
                          " WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'",
                          NULL, 0, 1);
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, &status, 1, &k), PX_OK);
    v1 = atol(rows_of(&k)->cells[0]);
    /* a hot statement is prepared once */
    for (int i = 0; i < 10; i++) {
        px_param p[1] = {p_int(i)};
        px_stmt s = stmt("SELECT ? + 0 AS v", p, 1, 1);
        assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
        assert_int_equal(atoi(rows_of(&k)->cells[0]), i);
    }
    assert_int_equal(pxc_exec(&loop, c, &status, 1, &k), PX_OK);
    v2 = atol(rows_of(&k)->cells[0]);
    assert_int_equal(v2, v1 + 1);
    /* more distinct statements than the cache holds: the least recently used are evicted */
    for (int i = 0; i < 40; i++) {
        px_param p[1] = {p_int(i)};
        px_stmt s;
        snprintf(sql, sizeof sql, "SELECT ? + %d AS w", i);
        s = stmt(sql, p, 1, 1);
        assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
        assert_int_equal(atoi(rows_of(&k)->cells[0]), 2 * i);
    }
    assert_int_equal(pxc_exec(&loop, c, &status, 1, &k), PX_OK);
    v3 = atol(rows_of(&k)->cells[0]);
    assert_int_equal(v3, v2 + 41); /* the status query itself was evicted too */
    /* and the server holds at most the cache's worth of statements for us */
    assert_int_equal(pxc_exec(&loop, c, &status, 1, &k), PX_OK);
    assert_int_equal(atol(rows_of(&k)->cells[0]), v3);
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void test_prepared_branch_stays_attached(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    px_param p[2] = {p_int(11), p_text("attached")};
    px_stmt s = stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", p, 2, 1);
    px_conn *c[2];
    uv_loop_init(&loop);
    t = g_target;
    c[0] = pxc_connect_ok(&loop, D, &t);
    c[1] = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c[0], &x);
    assert_int_equal(pxc_exec(&loop, c[0], &s, 1, &k), PX_OK);
    pxc_xid_ok(&loop, D->prepare, c[0], &x);
    /* another session cannot finish it while the preparing one lives, but sees it listed */
    assert_int_equal(pxc_xid(&loop, D->commit_prepared, c[1], &x, &k), PX_XID_NOT_FOUND);
    assert_int_equal(k.err.code, 1397);
    assert_false(k.err.conn_broken);
    pxc_recover_ok(&loop, c[1], g_prefix, "order", &k);
    assert_true(pxc_listed(&k, &x));
    /* the preparing session can */
    pxc_xid_ok(&loop, D->commit_prepared, c[0], &x);
    admin_expect("SELECT v FROM mxt_kv WHERE id = 11", "attached");
    pxc_recover_ok(&loop, c[1], g_prefix, "order", &k);
    assert_false(pxc_listed(&k, &x));
    /* a second XA COMMIT: 1397, "not found" (the lost-reply case) */
    assert_int_equal(pxc_xid(&loop, D->commit_prepared, c[0], &x, &k), PX_XID_NOT_FOUND);
    assert_int_equal(k.err.code, 1397);
    assert_string_equal(k.err.sqlstate, "XAE04");
    /* the connection is free for a new branch */
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c[0], &x);
    pxc_xid_ok(&loop, D->prepare, c[0], &x);
    pxc_xid_ok(&loop, D->rollback_prepared, c[0], &x);
    pxc_finish(&loop, D, c, 2);
}

static void test_constraint_violations_are_business(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_param ok[2] = {p_int(20), p_text("x")}, dup[2] = {p_int(20), p_text("y")};
    px_stmt s[2] = {stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", ok, 2, 1),
                    stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", dup, 2, 1)};
    px_param amt[2] = {p_int(500), p_int(1)};
    px_stmt check = stmt("UPDATE mxt_acct SET balance = balance - ? WHERE id = ?", amt, 2, 1);
    px_stmt bad = stmt("SELECT nosuchcolumn FROM mxt_kv", NULL, 0, -1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, s, 2, &k), PX_BUSINESS);
    assert_int_equal(k.err.code, 1062);
    assert_string_equal(k.err.sqlstate, "23000");
    assert_false(k.err.conn_broken);
    assert_int_equal(k.failed_index, 1);
    assert_int_equal(k.nresults, 1);
    assert_int_equal(k.res[0].rows_affected, 1);
    assert_int_equal(pxc_exec(&loop, c, &check, 1, &k), PX_BUSINESS);
    assert_int_equal(k.err.code, 4025);
    assert_int_equal(k.failed_index, 0);
    assert_int_equal(pxc_exec(&loop, c, &bad, 1, &k), PX_BUSINESS);
    assert_int_equal(k.err.code, 1054);
    /* the connection is still usable */
    must_exec(&loop, c, "UPDATE mxt_acct SET balance = balance WHERE id = 1", NULL, 0);
    admin_expect("SELECT balance FROM mxt_acct WHERE id = 1", "100");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* A text parameter with any bytes (NUL, quote, backslash, 0xff) goes into a BLOB exactly. */
static void test_binary_parameter_stored_verbatim(void **state)
{
    static const char blob[] = {'a', '\0', '\'', '\\', (char)0xff, 'z'};
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_conn *c;
    px_param p[2] = {p_int(200), {.type = PX_P_TEXT, .text = blob, .len = sizeof blob}};
    px_stmt ins = stmt("INSERT INTO mxt_kv (id, b) VALUES (?, ?)", p, 2, 1);
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, &ins, 1, &k), PX_OK);
    admin_expect("SELECT HEX(b) FROM mxt_kv WHERE id = 200", "6100275CFF7A");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void test_result_types(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    char big[301];
    px_param p[10];
    px_stmt ins, sel = stmt("SELECT i, u, d, f, m, s, dt, n, big, t FROM mxt_types", NULL, 0, 1);
    px_conn *c;
    memset(big, 'q', 300);
    big[300] = '\0';
    p[0] = p_int(-42);
    p[1] = p_text("18446744073709551615");
    p[2] = (px_param){.type = PX_P_REAL, .r = 1.5};
    p[3] = (px_param){.type = PX_P_REAL, .r = 0.1};
    p[4] = p_text("12.34");
    p[5] = p_text("x");
    p[6] = p_text("2024-01-02 03:04:05");
    p[7] = (px_param){.type = PX_P_NULL};
    p[8] = p_text(big);
    p[9] = (px_param){.type = PX_P_BOOL, .b = true};
    ins = stmt("INSERT INTO mxt_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", p, 10, 1);
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, &ins, 1, &k), PX_OK);
    assert_int_equal(pxc_exec(&loop, c, &sel, 1, &k), PX_OK);
    assert_int_equal(rows_of(&k)->ncols, 10);
    assert_int_equal(rows_of(&k)->nrows, 1);
    assert_cell(rows_of(&k), 0, PX_COL_INT, "-42");
    assert_cell(rows_of(&k), 1, PX_COL_INT, "18446744073709551615");
    assert_cell(rows_of(&k), 2, PX_COL_REAL, "1.5");
    assert_cell(rows_of(&k), 3, PX_COL_REAL, "0.1");
    assert_cell(rows_of(&k), 4, PX_COL_DECIMAL, "12.34");
    assert_cell(rows_of(&k), 5, PX_COL_TEXT, "x");
    assert_cell(rows_of(&k), 6, PX_COL_TEXT, "2024-01-02 03:04:05");
    assert_null(rows_of(&k)->cells[7]);
    assert_string_equal(rows_of(&k)->cells[8], big);
    assert_cell(rows_of(&k), 9, PX_COL_INT, "1");
    assert_string_equal(rows_of(&k)->colnames[8], "big");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* The exact text of every kind of value: integers beyond int64, exact decimals, binary bytes
 * (NULs included, also past the in-place fetch buffer) as base64, duplicate column names. */
static void test_value_types(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    unsigned char blob[200];
    char *want;
    px_stmt expr = stmt("SELECT CAST(18446744073709551615 AS UNSIGNED) AS u,"
                        " CAST(12345678901234567.89 AS DECIMAL(30,2)) AS m, 1e0 / 4 AS r,"
                        " UNHEX('FF00FE') AS h, 1 AS a, 2 AS a",
                        NULL, 0, 1);
    px_stmt cols = stmt("SELECT bn, vb, bl, bt, u, t FROM mxt_bin", NULL, 0, 1);
    px_conn *c;
    free(admin("INSERT INTO mxt_bin VALUES ('a', REPEAT(X'00FF', 100), X'', b'1100000001',"
               " 18446744073709551615, 'text')"));
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, &expr, 1, &k), PX_OK);
    assert_int_equal(rows_of(&k)->ncols, 6);
    assert_cell(rows_of(&k), 0, PX_COL_INT, "18446744073709551615");
    assert_cell(rows_of(&k), 1, PX_COL_DECIMAL, "12345678901234567.89");
    assert_cell(rows_of(&k), 2, PX_COL_REAL, "0.25");
    assert_cell(rows_of(&k), 3, PX_COL_BINARY, "/wD+");
    assert_string_equal(rows_of(&k)->colnames[4], "a");
    assert_string_equal(rows_of(&k)->colnames[5], "a");
    assert_string_equal(rows_of(&k)->cells[5], "2");
    assert_int_equal(pxc_exec(&loop, c, &cols, 1, &k), PX_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rows_of(&k)->coltypes[i], PX_COL_BINARY);
    assert_string_equal(rows_of(&k)->cells[0], "YQAA"); /* 'a' padded with NULs */
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = i % 2 ? 0xff : 0x00;
    want = px_base64(blob, sizeof blob);
    assert_string_equal(rows_of(&k)->cells[1], want);
    free(want);
    assert_string_equal(rows_of(&k)->cells[2], "");
    assert_string_equal(rows_of(&k)->cells[3], "AwE="); /* b'1100000001' = 0x0301 */
    assert_cell(rows_of(&k), 4, PX_COL_INT, "18446744073709551615");
    assert_cell(rows_of(&k), 5, PX_COL_TEXT, "text");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* Waits until the background admin session sleeps, which it does only once its SELECT ... FOR
 * UPDATE holds the row. */
static void admin_wait_row_lock(void)
{
    for (int i = 0; i < 400; i++) {
        char *got = admin("SELECT COUNT(*) FROM information_schema.processlist"
                          " WHERE info LIKE 'DO SLEEP(4)%'");
        bool locked = strcmp(got, "1") == 0;
        free(got);
        if (locked)
            return;
        usleep(25000);
    }
    fail_msg("the admin session did not lock the row");
}

static void test_lock_wait_timeout_is_retryable(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    px_param id[1] = {p_int(2)};
    px_stmt s = stmt("UPDATE mxt_acct SET balance = balance - 1 WHERE id = ?", id, 1, 1);
    px_conn *c;
    uint64_t t0;
    uv_loop_init(&loop);
    t = g_target;
    t.lock_timeout_ms = 1000;
    c = pxc_connect_ok(&loop, D, &t);
    /* an admin session holds the row for 4 s */
    assert_int_equal(tu_sh("mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P%s -uroot xatest "
                           "-e 'BEGIN; SELECT * FROM mxt_acct WHERE id = 2 FOR UPDATE; "
                           "DO SLEEP(4); ROLLBACK' >/dev/null 2>&1 &",
                           tu_env("XA_ORDER_PORT")),
                     0);
    admin_wait_row_lock();
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c, &x);
    t0 = uv_hrtime();
    assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_RETRYABLE);
    assert_int_equal(k.err.code, 1205);
    assert_false(k.err.conn_broken);
    /* innodb_lock_wait_timeout = ceil(1000 ms) = 1 s, not the server's 5 s */
    assert_true(uv_hrtime() - t0 < 2500000000ULL);
    /* only the statement was undone: the branch can still end */
    pxc_xid_ok(&loop, D->rollback, c, &x);
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
    /* wait for the admin session to let go */
    for (int i = 0; i < 200; i++) {
        char *got = admin("SELECT COUNT(*) FROM information_schema.innodb_trx");
        bool idle = strcmp(got, "0") == 0;
        free(got);
        if (idle)
            break;
        usleep(25000);
    }
}

/* Two branches on two connections that deadlock on rows 1 and 3 of mxt_acct: MariaDB picks one
 * as the victim (k[victim] failed), the other's statement goes through. */
typedef struct deadlock {
    uv_loop_t loop;
    px_target t; /* outlives the connections (participant.h) */
    px_conn *c[2];
    px_xid x[2];
    px_call k[2];
    int victim, winner;
} deadlock;

static void deadlock_make(deadlock *d)
{
    px_param one[1] = {p_int(1)}, three[1] = {p_int(3)};
    px_stmt u1 = stmt("UPDATE mxt_acct SET balance = balance + 1 WHERE id = ?", one, 1, 1);
    px_stmt u3 = stmt("UPDATE mxt_acct SET balance = balance + 1 WHERE id = ?", three, 1, 1);
    memset(d, 0, sizeof *d);
    uv_loop_init(&d->loop);
    d->t = g_target;
    for (int i = 0; i < 2; i++) {
        d->c[i] = pxc_connect_ok(&d->loop, D, &d->t);
        new_xid(&d->x[i], "order");
        pxc_xid_ok(&d->loop, D->begin, d->c[i], &d->x[i]);
    }
    assert_int_equal(pxc_exec(&d->loop, d->c[0], &u1, 1, &d->k[0]), PX_OK);
    assert_int_equal(pxc_exec(&d->loop, d->c[1], &u3, 1, &d->k[1]), PX_OK);
    pxc_reset(&d->k[0]);
    pxc_reset(&d->k[1]);
    assert_int_equal(D->exec(d->c[0], &u3, 1, pxc_on_exec, &d->k[0]), 0); /* waits for c[1] */
    usleep(100000);
    assert_int_equal(D->exec(d->c[1], &u1, 1, pxc_on_exec, &d->k[1]), 0); /* closes the cycle */
    tu_run_until(&d->loop, &d->k[0].done, 10000);
    tu_run_until(&d->loop, &d->k[1].done, 10000);
    assert_true(d->k[0].failed != d->k[1].failed);
    d->victim = d->k[0].failed ? 0 : 1;
    d->winner = 1 - d->victim;
}

/* Both branches ended: neither increment is left. */
static void deadlock_finish(deadlock *d)
{
    admin_expect("SELECT SUM(balance) FROM mxt_acct WHERE id IN (1, 3)", "200");
    pxc_reset(&d->k[0]);
    pxc_reset(&d->k[1]);
    pxc_finish(&d->loop, D, d->c, 2);
}

static void test_deadlock_is_retryable(void **state)
{
    deadlock d;
    int v, w;
    deadlock_make(&d);
    v = d.victim;
    w = d.winner;
    assert_int_equal(d.k[v].err.code, 1213);
    assert_int_equal(d.k[v].err.cls, PX_RETRYABLE);
    assert_false(d.k[v].err.conn_broken);
    assert_false(d.k[w].failed);
    /* the victim's branch is rollback-only: rollback still ends it (XA END gives 1399) */
    pxc_xid_ok(&d.loop, D->rollback, d.c[v], &d.x[v]);
    pxc_xid_ok(&d.loop, D->prepare, d.c[w], &d.x[w]);
    pxc_xid_ok(&d.loop, D->rollback_prepared, d.c[w], &d.x[w]);
    deadlock_finish(&d);
}

static void test_deadlock_victim_cannot_commit(void **state)
{
    deadlock d;
    px_call k = {0};
    int v, w;
    deadlock_make(&d);
    v = d.victim;
    w = d.winner;
    /* MariaDB 10.11 refuses already the XA END of a rollback-only branch (1399, "ROLLBACK
     * ONLY state"): nothing is committed, and rollback still ends the branch. */
    assert_int_equal(pxc_xid(&d.loop, D->commit_one_phase, d.c[v], &d.x[v], &k), PX_FATAL);
    assert_int_equal(k.err.code, 1399);
    assert_int_equal(pxc_xid(&d.loop, D->prepare, d.c[v], &d.x[v], &k), PX_FATAL);
    pxc_xid_ok(&d.loop, D->rollback, d.c[v], &d.x[v]);
    pxc_xid_ok(&d.loop, D->rollback, d.c[w], &d.x[w]);
    pxc_reset(&k);
    deadlock_finish(&d);
}

/* XA state errors are fatal: XA START inside an active branch (1399). */
static void test_xa_state_error_is_fatal(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x, y;
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    new_xid(&y, "order");
    pxc_xid_ok(&loop, D->begin, c, &x);
    assert_int_equal(pxc_xid(&loop, D->begin, c, &y, &k), PX_FATAL);
    assert_int_equal(k.err.code, 1399);
    pxc_xid_ok(&loop, D->rollback, c, &x);
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* A statement that ends the branch itself - XA END and XA COMMIT ... ONE PHASE for the branch's
 * own XID are accepted as prepared statements - is noticed at once, even when a later statement
 * opens a new branch under the same XID. */
static void test_statement_cannot_end_branch(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    char end[160], commit[160], start[160];
    px_param p[2] = {p_int(50), p_text("ended")};
    px_stmt s[3];
    px_conn *c[2];
    uv_loop_init(&loop);
    t = g_target;
    c[0] = pxc_connect_ok(&loop, D, &t);
    c[1] = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    snprintf(end, sizeof end, "XA END '%s','%s'", x.gtrid, x.bqual);
    snprintf(commit, sizeof commit, "XA COMMIT '%s','%s' ONE PHASE", x.gtrid, x.bqual);
    snprintf(start, sizeof start, "XA START '%s','%s'", x.gtrid, x.bqual);
    s[0] = stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", p, 2, 1);
    s[1] = stmt(end, NULL, 0, -1);
    s[2] = stmt(commit, NULL, 0, -1);
    pxc_xid_ok(&loop, D->begin, c[0], &x);
    assert_int_equal(pxc_exec(&loop, c[0], s, 3, &k), PX_BUSINESS);
    assert_true(k.err.conn_broken);
    assert_int_equal(k.failed_index, 2);
    assert_string_equal(k.err.message, "the branch's XA transaction was ended by a statement");
    admin_expect("SELECT v FROM mxt_kv WHERE id = 50", "ended"); /* the server did commit */
    /* prepare does not send XA END for a branch that is gone (the server would say 1397) */
    assert_int_equal(pxc_xid(&loop, D->prepare, c[0], &x, &k), PX_BUSINESS);
    assert_true(k.err.conn_broken);
    /* a new branch under the same XID right after the commit does not hide it */
    new_xid(&x, "order");
    snprintf(end, sizeof end, "XA END '%s','%s'", x.gtrid, x.bqual);
    snprintf(commit, sizeof commit, "XA COMMIT '%s','%s' ONE PHASE", x.gtrid, x.bqual);
    snprintf(start, sizeof start, "XA START '%s','%s'", x.gtrid, x.bqual);
    s[0] = stmt(end, NULL, 0, -1);
    s[1] = stmt(commit, NULL, 0, -1);
    s[2] = stmt(start, NULL, 0, -1);
    pxc_xid_ok(&loop, D->begin, c[1], &x);
    assert_int_equal(pxc_exec(&loop, c[1], s, 3, &k), PX_BUSINESS);
    assert_int_equal(k.failed_index, 1);
    assert_true(k.err.conn_broken);
    pxc_reset(&k);
    pxc_finish(&loop, D, c, 2);
}

/* A parameter count that does not fit the statement is the request's fault: the connection
 * stays usable for the rest of the branch and the next one. */
static void test_param_mismatch_keeps_connection(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    px_param one[1] = {p_int(1)};
    px_stmt wrong = stmt("SELECT ? + ? AS v", one, 1, -1);
    px_stmt upd = stmt("UPDATE mxt_acct SET balance = balance WHERE id = ?", one, 1, 1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c, &x);
    assert_int_equal(pxc_exec(&loop, c, &wrong, 1, &k), PX_BUSINESS);
    assert_false(k.err.conn_broken);
    assert_int_equal(k.failed_index, 0);
    pxc_xid_ok(&loop, D->rollback, c, &x);
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c, &x);
    assert_int_equal(pxc_exec(&loop, c, &upd, 1, &k), PX_OK);
    pxc_xid_ok(&loop, D->prepare, c, &x);
    pxc_xid_ok(&loop, D->rollback_prepared, c, &x);
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* Failures that a fresh connection gets past: a refused connect (whatever the server's code)
 * and 1440 XAER_DUPID on XA START (the XID is still held by another session). */
static void test_dupid_and_connect_errors_retryable(void **state)
{
    uv_loop_t loop;
    px_target t, bad;
    px_call k = {0};
    px_xid x;
    px_conn *c[2];
    uv_loop_init(&loop);
    t = g_target;
    bad = t;
    bad.password = "not the password";
    assert_null(pxc_try_connect(&loop, D, &bad, &k));
    assert_int_equal(k.err.code, 1045);
    assert_int_equal(k.err.cls, PX_RETRYABLE);
    assert_true(k.err.conn_broken);
    c[0] = pxc_connect_ok(&loop, D, &t);
    c[1] = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c[0], &x);
    assert_int_equal(pxc_xid(&loop, D->begin, c[1], &x, &k), PX_RETRYABLE);
    assert_int_equal(k.err.code, 1440);
    assert_true(k.err.conn_broken);
    pxc_xid_ok(&loop, D->rollback, c[0], &x);
    pxc_reset(&k);
    pxc_finish(&loop, D, c, 2);
}

/* ---- session hygiene: reset ---- */

static void sync_reset(uv_loop_t *loop, px_conn *c)
{
    px_call k = {0};
    assert_int_equal(D->reset(c, pxc_on_done, &k), 0);
    tu_run_until(loop, &k.done, 15000);
    if (k.failed)
        fail_msg("reset failed: %d %s", k.err.code, k.err.message);
}

static void test_reset_restores_settings(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    px_stmt set[5] = {stmt("SET SESSION tx_read_only = 1", NULL, 0, -1),
                      stmt("SET SESSION autocommit = 0", NULL, 0, -1),
                      stmt("SET SESSION innodb_lock_wait_timeout = 100", NULL, 0, -1),
                      stmt("SET SESSION sql_mode = ''", NULL, 0, -1),
                      stmt("SET NAMES latin1", NULL, 0, -1)};
    px_stmt show = stmt("SELECT @@tx_read_only, @@autocommit, @@innodb_lock_wait_timeout,"
                        " @@sql_mode = @@global.sql_mode, @@character_set_client",
                        NULL, 0, 1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target; /* lock_timeout_ms 2000: innodb_lock_wait_timeout 2 */
    c = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c, set, 5, &k), PX_OK);
    assert_int_equal(pxc_exec(&loop, c, &show, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "1");
    assert_string_equal(rows_of(&k)->cells[2], "100");
    sync_reset(&loop, c);
    assert_int_equal(pxc_exec(&loop, c, &show, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "0");
    assert_string_equal(rows_of(&k)->cells[1], "1");
    assert_string_equal(rows_of(&k)->cells[2], "2");
    assert_string_equal(rows_of(&k)->cells[3], "1");
    assert_string_equal(rows_of(&k)->cells[4],
                        "utf8mb4"); /* the handshake's, not the server's default */
    /* autocommit is back on: XA START works again */
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_xid_ok(&loop, D->rollback, c, &x);
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

/* A transaction whose statements are session-neutral (the engine proved it, guard.h) skips the
 * reset: the cached statements stay. The server's own flag still forces the reset when a
 * statement changed the session after all - here a SET that claims to be neutral. */
static void test_reset_skipped_for_neutral_statements(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_stmt var = stmt("SELECT @mxt_n := 7", NULL, 0, 1);
    px_stmt read = stmt("SELECT @mxt_n", NULL, 0, 1);
    px_stmt set = stmt("SET SESSION innodb_lock_wait_timeout = 100", NULL, 0, -1);
    px_stmt show = stmt("SELECT @@innodb_lock_wait_timeout", NULL, 0, 1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    /* A neutral exec leaves nothing to reset; the variable (a test's lie) shows no reset ran. */
    var.session_neutral = true;
    assert_int_equal(pxc_exec(&loop, c, &var, 1, &k), PX_OK);
    sync_reset(&loop, c);
    assert_int_equal(pxc_exec(&loop, c, &read, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "7");
    /* The same statement, not marked neutral: the reset runs. */
    var.session_neutral = false;
    assert_int_equal(pxc_exec(&loop, c, &var, 1, &k), PX_OK);
    sync_reset(&loop, c);
    assert_int_equal(pxc_exec(&loop, c, &read, 1, &k), PX_OK);
    assert_null(rows_of(&k)->cells[0]);
    /* A statement marked neutral that the server reports as changing the session. */
    set.session_neutral = true;
    assert_int_equal(pxc_exec(&loop, c, &set, 1, &k), PX_OK);
    sync_reset(&loop, c);
    assert_int_equal(pxc_exec(&loop, c, &show, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "2");
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void on_marker(px_conn *c, const px_error *err, bool found, void *arg)
{
    px_call *k = arg;
    k->failed = err != NULL;
    if (err)
        k->err = *err;
    k->res[0].rows_affected = found;
    k->done = true;
}

static bool marker_found(uv_loop_t *loop, px_conn *c, const px_xid *x)
{
    px_call k = {0};
    assert_int_equal(D->marker_exists(c, x, on_marker, &k), 0);
    tu_run_until(loop, &k.done, 15000);
    if (k.failed)
        fail_msg("marker_exists failed: %d %s", k.err.code, k.err.message);
    return k.res[0].rows_affected != 0;
}

/* prepare writes the branch's marker inside the branch: it exists once the branch committed and
 * is gone once it rolled back; pruning deletes old markers of the prefix, nobody else's. */
static void test_markers(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid a, b;
    px_stmt upd = stmt("UPDATE mxt_acct SET balance = balance WHERE id = 2", NULL, 0, 1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    new_xid(&a, "order");
    new_xid(&b, "order");
    pxc_xid_ok(&loop, D->begin, c, &a);
    assert_int_equal(pxc_exec(&loop, c, &upd, 1, &k), PX_OK);
    pxc_xid_ok(&loop, D->prepare, c, &a);
    pxc_xid_ok(&loop, D->commit_prepared, c, &a);
    pxc_xid_ok(&loop, D->begin, c, &b);
    assert_int_equal(pxc_exec(&loop, c, &upd, 1, &k), PX_OK);
    pxc_xid_ok(&loop, D->prepare, c, &b);
    pxc_xid_ok(&loop, D->rollback_prepared, c, &b);
    assert_true(marker_found(&loop, c, &a));
    assert_false(marker_found(&loop, c, &b));
    k.done = false;
    assert_int_equal(D->markers_prune(c, g_prefix, 0, pxc_on_done, &k), 0);
    tu_run_until(&loop, &k.done, 15000);
    assert_false(k.failed);
    assert_false(marker_found(&loop, c, &a));
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void test_reset_drops_session_objects(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_param one[1] = {p_int(1)};
    px_stmt cached = stmt("SELECT ? + 1 AS v", one, 1, 1);
    px_stmt leave[3] = {stmt("CREATE TEMPORARY TABLE mxt_tmp (a INT)", NULL, 0, -1),
                        stmt("SELECT @mxt_x := 5", NULL, 0, 1),
                        stmt("SELECT GET_LOCK('mxt_lock', 0)", NULL, 0, 1)};
    px_stmt var = stmt("SELECT @mxt_x", NULL, 0, 1);
    px_stmt lock = stmt("SELECT GET_LOCK('mxt_lock', 0)", NULL, 0, 1);
    px_stmt tmp = stmt("SELECT COUNT(*) FROM mxt_tmp", NULL, 0, 1);
    px_stmt id = stmt("SELECT CONNECTION_ID()", NULL, 0, 1);
    px_conn *c[2];
    char sql[64];
    uv_loop_init(&loop);
    t = g_target;
    c[0] = pxc_connect_ok(&loop, D, &t);
    c[1] = pxc_connect_ok(&loop, D, &t);
    assert_int_equal(pxc_exec(&loop, c[0], &cached, 1, &k), PX_OK);
    assert_int_equal(pxc_exec(&loop, c[0], leave, 3, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "1");
    assert_int_equal(pxc_exec(&loop, c[1], &lock, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "0"); /* held by c[0] */
    sync_reset(&loop, c[0]);
    assert_int_equal(pxc_exec(&loop, c[0], &var, 1, &k), PX_OK);
    assert_null(rows_of(&k)->cells[0]);
    assert_int_equal(pxc_exec(&loop, c[1], &lock, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "1");
    must_exec(&loop, c[1], "DO RELEASE_LOCK('mxt_lock')", NULL, 0);
    assert_int_equal(pxc_exec(&loop, c[0], &tmp, 1, &k), PX_BUSINESS);
    assert_int_equal(k.err.code, 1146);
    /* the cached statement is gone on the server: it is prepared again */
    assert_int_equal(pxc_exec(&loop, c[0], &cached, 1, &k), PX_OK);
    assert_string_equal(rows_of(&k)->cells[0], "2");
    /* a session that cannot be reset must be discarded */
    assert_int_equal(pxc_exec(&loop, c[0], &id, 1, &k), PX_OK);
    snprintf(sql, sizeof sql, "KILL %s", rows_of(&k)->cells[0]);
    free(admin(sql));
    pxc_reset(&k);
    assert_int_equal(D->reset(c[0], pxc_on_done, &k), 0);
    tu_run_until(&loop, &k.done, 15000);
    assert_true(k.failed);
    assert_true(k.err.conn_broken);
    pxc_reset(&k);
    pxc_finish(&loop, D, c, 2);
}

static void test_bad_arguments(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0}, k2 = {0};
    px_xid bad;
    px_stmt s = stmt("SELECT 1", NULL, 0, 1);
    px_conn *c;
    uv_loop_init(&loop);
    t = g_target;
    c = pxc_connect_ok(&loop, D, &t);
    /* an XID outside the charset never reaches the SQL text */
    memset(&bad, 0, sizeof bad);
    strcpy(bad.gtrid, "x','y'; DROP TABLE mxt_kv; --");
    strcpy(bad.bqual, "order");
    assert_int_equal(D->begin(c, &bad, pxc_on_done, &k2), -EINVAL);
    assert_int_equal(D->exec(c, &s, 0, pxc_on_exec, &k2), -EINVAL);
    assert_false(k2.done); /* refused calls never call back */
    /* wrong parameter count is the request's fault */
    {
        px_stmt wrong = stmt("SELECT ? + ?", NULL, 0, -1);
        assert_int_equal(pxc_exec(&loop, c, &wrong, 1, &k), PX_BUSINESS);
    }
    {
        px_target named = t;
        named.host = "localhost"; /* would need a blocking name lookup */
        assert_int_equal(D->connect(&loop, &named, pxc_on_connect, &k2), -EINVAL);
    }
    pxc_reset(&k);
    pxc_finish(&loop, D, &c, 1);
}

static void test_connect_timeout(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint64_t t0;
    /* a listener that never answers: TCP connects, the server greeting never comes */
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    uv_loop_init(&loop);
    t = g_target;
    t.port = ntohs(sa.sin_port);
    t.connect_timeout_ms = 300;
    t0 = uv_hrtime();
    assert_null(pxc_try_connect(&loop, D, &t, &k));
    assert_int_equal(k.err.cls, PX_RETRYABLE);
    assert_true(k.err.conn_broken);
    assert_true(uv_hrtime() - t0 < 1500000000ULL);
    assert_true(uv_hrtime() - t0 >= 290000000ULL);
    pxc_finish(&loop, D, NULL, 0);
    close(fd);
}

/* ---- the server dies with a prepared branch ---- */

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void test_server_crash_recovery(void **state)
{
    uv_loop_t loop;
    px_target t;
    px_call k = {0};
    px_xid x;
    px_param p[2] = {p_int(40), p_text("survives")};
    px_stmt s = stmt("INSERT INTO mxt_kv (id, v) VALUES (?, ?)", p, 2, 1);
    px_conn *c1, *c2;
    uint64_t t0;
    uv_loop_init(&loop);
    t = g_target;
    c1 = pxc_connect_ok(&loop, D, &t);
    new_xid(&x, "order");
    pxc_xid_ok(&loop, D->begin, c1, &x);
    assert_int_equal(pxc_exec(&loop, c1, &s, 1, &k), PX_OK);
    pxc_xid_ok(&loop, D->prepare, c1, &x);

    assert_int_equal(tu_sh("%s", env_or("XA_ORDER_KILL_CMD", "scripts/db kill order")), 0);
    /* the live connection reports a broken, retryable failure */
    assert_int_equal(pxc_xid(&loop, D->commit_prepared, c1, &x, &k), PX_RETRYABLE);
    assert_true(k.err.conn_broken);
    D->close(c1);
    /* server down: connect fails fast */
    t0 = uv_hrtime();
    assert_null(pxc_try_connect(&loop, D, &t, &k));
    assert_int_equal(k.err.cls, PX_RETRYABLE);
    assert_true(k.err.conn_broken);
    assert_true(uv_hrtime() - t0 < 1000000000ULL);

    assert_int_equal(tu_sh("%s", env_or("XA_ORDER_START_CMD", "scripts/db restart order")), 0);
    c2 = pxc_connect_ok(&loop, D, &t);
    pxc_recover_ok(&loop, c2, g_prefix, "order", &k);
    assert_true(pxc_listed(&k, &x));
    pxc_xid_ok(&loop, D->commit_prepared, c2, &x);
    admin_expect("SELECT v FROM mxt_kv WHERE id = 40", "survives");
    pxc_recover_ok(&loop, c2, g_prefix, "order", &k);
    assert_false(pxc_listed(&k, &x));
    pxc_finish(&loop, D, &c2, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_markers),
        cmocka_unit_test(test_reset_skipped_for_neutral_statements),
        cmocka_unit_test(test_connect_exec_params),
        cmocka_unit_test(test_statement_cache_eviction),
        cmocka_unit_test(test_prepared_branch_stays_attached),
        cmocka_unit_test(test_constraint_violations_are_business),
        cmocka_unit_test(test_binary_parameter_stored_verbatim),
        cmocka_unit_test(test_result_types),
        cmocka_unit_test(test_value_types),
        cmocka_unit_test(test_lock_wait_timeout_is_retryable),
        cmocka_unit_test(test_deadlock_is_retryable),
        cmocka_unit_test(test_deadlock_victim_cannot_commit),
        cmocka_unit_test(test_xa_state_error_is_fatal),
        cmocka_unit_test(test_statement_cannot_end_branch),
        cmocka_unit_test(test_param_mismatch_keeps_connection),
        cmocka_unit_test(test_dupid_and_connect_errors_retryable),
        cmocka_unit_test(test_reset_restores_settings),
        cmocka_unit_test(test_reset_drops_session_objects),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_server_crash_recovery),
    };
    return contract_run(&contract_mysql) + cmocka_run_group_tests(tests, setup, NULL);
}
