/*
 * The PostgreSQL driver (participants/postgres.c) against a real server: first the driver
 * contract (tests/support/contract.c, group contract/postgres), then what is PostgreSQL's own:
 * column types and values, SQLSTATEs of constraint, syntax, privilege and protocol errors, a
 * PREPARE in a failed transaction, lock timeouts, connect failures and timeouts, a server that is
 * killed, COPY and transaction control in a client's SQL, DISCARD ALL (what it undoes, when it is
 * skipped, when it fails), clean sessions for COMMIT/ROLLBACK PREPARED and the recovery listing,
 * the owner of a prepared branch, and markers. Needs XA_PG_PORT and XA_DB_DIR; XA_PG_KILL_CMD /
 * XA_PG_START_CMD override the commands that kill and restart the server (default: scripts/db
 * kill|restart payment); XA_TEST_FILTER (a cmocka name pattern) runs a subset of both groups.
 */
#include "admin.h"
#include "contract.h"
#include "pxcall.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define D (&px_postgres_driver)
#define WAIT_MS PXC_WAIT_MS

typedef struct fixture {
    px_target t;
} fixture;

#define P_INT(v) ((px_param){.type = PX_P_INT, .i = (v)})
#define P_REAL(v) ((px_param){.type = PX_P_REAL, .r = (v)})
#define P_BOOL(v) ((px_param){.type = PX_P_BOOL, .b = (v)})
#define P_TEXT(s) ((px_param){.type = PX_P_TEXT, .text = (s), .len = sizeof(s) - 1})
#define P_NULL ((px_param){.type = PX_P_NULL})

/* ---------------------------------------------------------------- helpers */

/* One statement that must succeed; the result is left in w->res[0]. */
static void exec_ok(uv_loop_t *loop, px_conn *c, const char *sql, const px_param *p, int np,
                    px_call *w)
{
    px_stmt s = {.sql = sql, .params = p, .nparams = np, .expect_rows = -1};
    pxc_exec(loop, c, &s, 1, w);
    pxc_check_ok(w);
    assert_int_equal(w->nresults, 1);
}

/* reset reports on a later loop turn, never from inside the call. */
static void reset_ok(uv_loop_t *loop, px_conn *c)
{
    px_call w = {0};
    assert_int_equal(D->reset(c, pxc_on_done, &w), 0);
    assert_int_equal(w.calls, 0);
    tu_run_until(loop, &w.done, WAIT_MS);
    pxc_check_ok(&w);
    assert_int_equal(w.calls, 1);
}

/* gtrid "xa1.pgt<pid>.<tag>.<n>": unique per run, so leftovers of a crashed run never match. */
static void mkxid(px_xid *x, const char *tag, int n, const char *bqual)
{
    char g[PX_XID_PART_MAX + 1];
    snprintf(g, sizeof g, "xa1.pgt%d.%s.%d", (int)getpid(), tag, n);
    assert_int_equal(px_xid_set(x, g, bqual), 0);
}

static void mkprefix(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "xa1.pgt%d.%s.", (int)getpid(), tag);
}

static char *admin(const char *sql)
{
    return adm_sql("payment", sql);
}

static void admin_expect(const char *sql, const char *want)
{
    adm_expect("payment", sql, want);
}

static bool prepared_exists(const px_xid *x)
{
    char gid[160], sql[300], *out;
    bool yes;
    px_xid_gid(x, gid, sizeof gid);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = '%s'", gid);
    out = admin(sql);
    yes = strcmp(out, "1") == 0;
    free(out);
    return yes;
}

static void on_wait(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop for ms milliseconds (lets close callbacks and stray events happen). */
static void loop_wait(uv_loop_t *loop, unsigned ms)
{
    bool elapsed = false;
    uv_timer_t t;
    uv_timer_init(loop, &t);
    t.data = &elapsed;
    uv_timer_start(&t, on_wait, ms, 0);
    tu_run_until(loop, &elapsed, ms + 5000);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static const char *cmd_from_env(const char *name, const char *verb, char *buf, size_t len)
{
    const char *v = getenv(name);
    const char *tail = strstr(__FILE__, "/tests/integration/");
    int rootlen = tail ? (int)(tail - __FILE__) : 1;
    if (v && *v)
        return v;
    snprintf(buf, len, "%.*s/scripts/db %s payment", rootlen, tail ? __FILE__ : ".", verb);
    return buf;
}

/* ------------------------------------------------------------------ tests */

static void test_connect_exec_params(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_param ins[] = {P_INT(1),      P_TEXT("widget"), P_REAL(2.5), P_BOOL(true),
                      P_REAL(12.34), P_INT(7),         P_NULL};
    px_param ins2[] = {P_INT(2), P_TEXT("gadget"), P_REAL(-0.125), P_BOOL(false),
                       P_NULL,   P_INT(-3),        P_INT(5)};
    px_param upd[] = {P_TEXT("renamed")};
    px_param sel[] = {P_INT(1)};
    const px_result *r;
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    assert_ptr_equal(px_conn_base(c)->driver, D);

    exec_ok(&loop, c,
            "INSERT INTO pgt_item (id, name, amount, ok, price, small, qty) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ins, 7, &w);
    assert_int_equal(w.res[0].rows_affected, 1);
    assert_int_equal(w.res[0].nrows, 0);
    exec_ok(&loop, c,
            "INSERT INTO pgt_item (id, name, amount, ok, price, small, qty) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            ins2, 7, &w);
    assert_int_equal(w.res[0].rows_affected, 1);
    assert_int_equal(w.res[0].nrows, 1);
    assert_string_equal(w.res[0].cells[0], "2");
    exec_ok(&loop, c, "UPDATE pgt_item SET name = $1 WHERE id IN (1, 2)", upd, 1, &w);
    assert_int_equal(w.res[0].rows_affected, 2);

    exec_ok(&loop, c,
            "SELECT id, name, amount, ok, price, small, qty, now() AS ts FROM pgt_item "
            "WHERE id = $1",
            sel, 1, &w);
    r = &w.res[0];
    assert_int_equal(r->rows_affected, 1);
    assert_int_equal(r->nrows, 1);
    assert_int_equal(r->ncols, 8);
    assert_string_equal(r->colnames[0], "id");
    assert_string_equal(r->colnames[7], "ts");
    assert_int_equal(r->coltypes[0], PX_COL_INT);
    assert_int_equal(r->coltypes[1], PX_COL_TEXT);
    assert_int_equal(r->coltypes[2], PX_COL_REAL);
    assert_int_equal(r->coltypes[3], PX_COL_BOOL);
    assert_int_equal(r->coltypes[4], PX_COL_DECIMAL);
    assert_int_equal(r->coltypes[5], PX_COL_INT);
    assert_int_equal(r->coltypes[6], PX_COL_INT);
    assert_int_equal(r->coltypes[7], PX_COL_TEXT);
    assert_string_equal(r->cells[0], "1");
    assert_string_equal(r->cells[1], "renamed");
    assert_string_equal(r->cells[2], "2.5");
    assert_string_equal(r->cells[3], "true");
    assert_string_equal(r->cells[4], "12.34");
    assert_string_equal(r->cells[5], "7");
    assert_null(r->cells[6]);

    exec_ok(&loop, c, "SELECT ok, qty FROM pgt_item ORDER BY id", NULL, 0, &w);
    assert_int_equal(w.res[0].nrows, 2);
    assert_string_equal(w.res[0].cells[2], "false");
    assert_string_equal(w.res[0].cells[3], "5");

    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

static void test_failed_transaction_is_not_prepared(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x;
    px_param p[] = {P_INT(20)};
    px_stmt s[] = {{.sql = "INSERT INTO pgt_item (id) VALUES ($1)",
                    .params = p,
                    .nparams = 1,
                    .expect_rows = 1},
                   {.sql = "SELECT 1 / 0", .expect_rows = -1},
                   {.sql = "SELECT 2", .expect_rows = -1}};
    uv_loop_init(&loop);
    mkxid(&x, "fail", 1, "payment");
    c = pxc_connect_ok(&loop, D, &f->t);
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, s, 3, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_string_equal(w.err.sqlstate, "22012");
    assert_int_equal(w.failed_index, 1);
    assert_int_equal(w.nresults, 1);
    assert_int_equal(w.res[0].rows_affected, 1);

    /* PREPARE in the aborted transaction: tag ROLLBACK, nothing prepared. */
    pxc_xid(&loop, D->prepare, c, &x, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_false(w.err.conn_broken);
    assert_false(prepared_exists(&x));
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 20", "0");

    /* A rolled-back branch leaves nothing either, and the session is clean afterwards. */
    mkxid(&x, "fail", 2, "payment");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, s, 1, &w);
    pxc_check_ok(&w);
    pxc_xid_ok(&loop, D->rollback, c, &x);
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 20", "0");
    exec_ok(&loop, c, "SELECT 1", NULL, 0, &w);
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

static void test_constraint_violations(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x;
    px_param dup[] = {P_INT(30)};
    px_param neg[] = {P_INT(31), P_INT(-1)};
    px_stmt ins = {.sql = "INSERT INTO pgt_item (id) VALUES ($1)",
                   .params = dup,
                   .nparams = 1,
                   .expect_rows = 1};
    px_stmt chk = {.sql = "INSERT INTO pgt_item (id, qty) VALUES ($1, $2)",
                   .params = neg,
                   .nparams = 2,
                   .expect_rows = 1};
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    pxc_exec(&loop, c, &ins, 1, &w);
    pxc_check_ok(&w);

    mkxid(&x, "uniq", 1, "payment");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, &ins, 1, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_string_equal(w.err.sqlstate, "23505");
    assert_int_equal(w.failed_index, 0);
    assert_int_equal(w.nresults, 0);
    assert_false(w.err.conn_broken);
    pxc_xid_ok(&loop, D->rollback, c, &x);

    pxc_exec(&loop, c, &chk, 1, &w);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_string_equal(w.err.sqlstate, "23514");

    /* A syntax error is the request's fault too; a missing privilege is not. */
    {
        px_stmt bad = {.sql = "SELEC 1", .expect_rows = -1};
        px_stmt priv = {.sql = "SELECT * FROM pg_authid", .expect_rows = -1};
        pxc_exec(&loop, c, &bad, 1, &w);
        assert_int_equal(w.err.cls, PX_BUSINESS);
        assert_string_equal(w.err.sqlstate, "42601");
        pxc_exec(&loop, c, &priv, 1, &w);
        assert_int_equal(w.err.cls, PX_FATAL);
        assert_string_equal(w.err.sqlstate, "42501");
    }
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

/* A NUL byte cannot travel in a text parameter: business error at that statement. */
static void test_nul_byte_in_text_is_business(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x;
    px_param ok[] = {P_INT(101), P_TEXT("fine")};
    px_param nul[] = {P_INT(102), {.type = PX_P_TEXT, .text = "a\0b", .len = 3}};
    px_stmt two[] = {{.sql = "INSERT INTO pgt_text (id, v) VALUES ($1, $2)",
                      .params = ok,
                      .nparams = 2,
                      .expect_rows = 1},
                     {.sql = "INSERT INTO pgt_text (id, v) VALUES ($1, $2)",
                      .params = nul,
                      .nparams = 2,
                      .expect_rows = 1}};
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    mkxid(&x, "text", 2, "payment");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, two, 2, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_int_equal(w.failed_index, 1);
    assert_int_equal(w.nresults, 1);
    assert_int_equal(w.res[0].rows_affected, 1);
    assert_string_equal(w.err.message, "parameter 2 contains a NUL byte");
    pxc_xid_ok(&loop, D->rollback, c, &x);
    admin_expect("SELECT count(*) FROM pgt_text WHERE id IN (101, 102)", "0");
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

static void test_lock_timeout(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_target t = f->t;
    px_param p[] = {P_INT(1)};
    px_stmt s = {.sql = "UPDATE pgt_lock SET v = 10 WHERE id = $1",
                 .params = p,
                 .nparams = 1,
                 .expect_rows = 1};
    char sql[256], gid[64];
    uint64_t t0, ms;
    uv_loop_init(&loop);
    t.lock_timeout_ms = 500;
    /* The administrator holds the row lock in a prepared transaction: it never lets go. */
    snprintf(gid, sizeof gid, "xa1.pgt%d.lock.admin", (int)getpid());
    snprintf(sql, sizeof sql,
             "BEGIN; UPDATE pgt_lock SET v = v + 1 WHERE id = 1; PREPARE TRANSACTION '%s';", gid);
    free(admin(sql));
    c = pxc_connect_ok(&loop, D, &t);
    t0 = uv_hrtime();
    pxc_exec(&loop, c, &s, 1, &w);
    ms = (uv_hrtime() - t0) / 1000000;
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_string_equal(w.err.sqlstate, "55P03");
    assert_false(w.err.conn_broken);
    assert_true(ms >= 450);
    assert_true(ms < 5000);
    snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s'", gid);
    free(admin(sql));
    pxc_exec(&loop, c, &s, 1, &w);
    pxc_check_ok(&w);
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

static void connect_fail(uv_loop_t *loop, const px_target *t, px_call *w)
{
    pxc_reset(w);
    assert_int_equal(D->connect(loop, t, pxc_on_connect, w), 0);
    tu_run_until(loop, &w->done, WAIT_MS);
    assert_int_equal(w->calls, 1);
    assert_true(w->failed);
    assert_null(w->conn);
}

static void test_connect_failures(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_target t = f->t;
    char ci[256];
    uint64_t t0;
    uv_loop_init(&loop);

    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=xatest user=xacoord sslmode=disable "
             "gssencmode=disable",
             contract_free_port());
    t.conninfo = ci;
    t0 = uv_hrtime();
    connect_fail(&loop, &t, &w);
    assert_true((uv_hrtime() - t0) / 1000000 < 1000);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_true(w.err.conn_broken);
    assert_non_null(strstr(w.err.message, "server down"));

    /* A server that accepts TCP but never answers: the connect timeout ends the wait. */
    {
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(listen(fd, 4), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=xatest sslmode=disable",
                 ntohs(a.sin_port));
        t.connect_timeout_ms = 300;
        t0 = uv_hrtime();
        connect_fail(&loop, &t, &w);
        close(fd);
        assert_true((uv_hrtime() - t0) / 1000000 >= 290);
        assert_true((uv_hrtime() - t0) / 1000000 < 3000);
        assert_int_equal(w.err.cls, PX_RETRYABLE);
        assert_non_null(strstr(w.err.message, "timeout"));
    }

    /* Wrong password: an operator must fix it, retrying will not; never echoed. */
    t = f->t;
    t.password = "wrong-secret-8c1f";
    connect_fail(&loop, &t, &w);
    assert_int_equal(w.err.cls, PX_FATAL);
    assert_string_equal(w.err.sqlstate, "28P01");
    assert_null(strstr(w.err.message, "wrong-secret-8c1f"));

    t = f->t;
    snprintf(ci, sizeof ci, "%s dbname=pgt_no_such_db", f->t.conninfo);
    t.conninfo = ci;
    connect_fail(&loop, &t, &w);
    assert_int_equal(w.err.cls, PX_FATAL);
    assert_string_equal(w.err.sqlstate, "3D000");
    assert_null(strstr(w.err.message, f->t.password));

    /* Names would be resolved with a blocking call: refused up front, no callback. */
    t.conninfo = "host=localhost port=5432 dbname=xatest";
    assert_int_equal(D->connect(&loop, &t, pxc_on_connect, &w), -EINVAL);
    t.conninfo = "host=127.0.0.1 nonsense_option=1";
    assert_int_equal(D->connect(&loop, &t, pxc_on_connect, &w), -EINVAL);
    pxc_reset(&w);
    tu_loop_close(&loop);
}

static void test_kill_restart_then_recover(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *a, *idle, *c = NULL;
    px_xid x;
    char prefix[64], kill_buf[1024], start_buf[1024];
    const char *kill_cmd = cmd_from_env("XA_PG_KILL_CMD", "kill", kill_buf, sizeof kill_buf);
    const char *start_cmd = cmd_from_env("XA_PG_START_CMD", "restart", start_buf, sizeof start_buf);
    px_param p[] = {P_INT(40), P_TEXT("survivor")};
    px_stmt s = {.sql = "INSERT INTO pgt_item (id, name) VALUES ($1, $2)",
                 .params = p,
                 .nparams = 2,
                 .expect_rows = 1};
    uv_loop_init(&loop);
    mkxid(&x, "kill", 1, "payment");
    a = pxc_connect_ok(&loop, D, &f->t);
    pxc_xid_ok(&loop, D->begin, a, &x);
    pxc_exec(&loop, a, &s, 1, &w);
    pxc_check_ok(&w);
    pxc_xid_ok(&loop, D->prepare, a, &x);
    D->close(a);
    idle = pxc_connect_ok(&loop, D, &f->t);

    assert_int_equal(tu_sh("%s", kill_cmd), 0);
    assert_int_equal(tu_sh("%s", start_cmd), 0);

    /* The connection that lived through the crash reports it as retryable and broken. */
    pxc_exec(&loop, idle, &s, 1, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_true(w.err.conn_broken);
    D->close(idle);

    for (int i = 0; i < 40 && !c; i++) {
        pxc_reset(&w);
        assert_int_equal(D->connect(&loop, &f->t, pxc_on_connect, &w), 0);
        tu_run_until(&loop, &w.done, WAIT_MS);
        if (w.failed) {
            assert_int_equal(w.err.cls, PX_RETRYABLE);
            loop_wait(&loop, 250);
        }
        c = w.conn;
    }
    assert_non_null(c);
    mkprefix(prefix, sizeof prefix, "kill");
    pxc_recover_ok(&loop, c, prefix, "payment", &w);
    assert_int_equal(w.nxids, 1);
    assert_string_equal(w.xids[0].gtrid, x.gtrid);
    pxc_xid_ok(&loop, D->commit_prepared, c, &w.xids[0]);
    admin_expect("SELECT name FROM pgt_item WHERE id = 40", "survivor");
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

/* COPY would leave libpq in COPY mode, where every PQgetResult is a new COPY result: the exec
 * must end at once (alarm: a driver that spins never returns to the loop) and the connection
 * is not reused. */
static void copy_fails(uv_loop_t *loop, const px_target *t, const char *sql, bool in_branch)
{
    px_call w = {0};
    px_stmt s = {.sql = sql, .expect_rows = -1};
    px_conn *c = pxc_connect_ok(loop, D, t);
    px_xid x;
    uint64_t t0;
    if (in_branch) {
        mkxid(&x, "copy", 1, "payment");
        pxc_xid_ok(loop, D->begin, c, &x);
    }
    alarm(20);
    t0 = uv_hrtime();
    pxc_exec(loop, c, &s, 1, &w);
    alarm(0);
    assert_true((uv_hrtime() - t0) / 1000000 < 2000);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_true(w.err.conn_broken);
    assert_int_equal(w.failed_index, 0);
    assert_string_equal(w.err.message, "COPY is not supported");
    pxc_exec(loop, c, &s, 1, &w);
    assert_true(w.err.conn_broken);
    pxc_reset(&w);
    D->close(c);
}

static void test_copy_fails_promptly(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    uv_loop_init(&loop);
    copy_fails(&loop, &f->t, "COPY (SELECT 1) TO STDOUT", false);
    copy_fails(&loop, &f->t, "COPY pgt_text FROM STDIN", true);
    c = pxc_connect_ok(&loop, D, &f->t);
    exec_ok(&loop, c, "SELECT 1", NULL, 0, &w);
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

/* Runs stmts in a new branch (gtrid tag "tc", number n) on a new connection; returns the exec's
 * outcome in w, and the connection in *out if out is not NULL (else it is closed). */
static void exec_in_branch(uv_loop_t *loop, const px_target *t, const px_stmt *s, int n, px_call *w,
                           px_conn **out)
{
    px_xid x;
    px_conn *c = pxc_connect_ok(loop, D, t);
    mkxid(&x, "tc", n, "payment");
    pxc_xid_ok(loop, D->begin, c, &x);
    pxc_exec(loop, c, s, n, w);
    if (!w->failed)
        pxc_xid_ok(loop, D->rollback, c, &x);
    if (out) {
        *out = c;
        return;
    }
    D->close(c);
}

static void assert_branch_ended(const px_call *w, int index)
{
    assert_true(w->failed);
    assert_int_equal(w->err.cls, PX_BUSINESS);
    assert_true(w->err.conn_broken);
    assert_int_equal(w->failed_index, index);
    assert_non_null(strstr(w->err.message, "the branch's transaction was ended by a statement"));
}

static void test_transaction_control_in_branch_fails(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x;
    char gid[80], sql[160];
    px_stmt debit = {.sql = "UPDATE pgt_item SET qty = qty - 10 WHERE id = 60", .expect_rows = 1};
    px_stmt rb_begin[] = {
        debit, {.sql = "ROLLBACK", .expect_rows = -1}, {.sql = "BEGIN", .expect_rows = -1}};
    px_stmt commit[] = {debit, {.sql = "COMMIT", .expect_rows = -1}};
    px_stmt end = {.sql = "END", .expect_rows = -1};
    px_stmt abort_ = {.sql = "ABORT", .expect_rows = -1};
    px_stmt prep = {.sql = sql, .expect_rows = -1};
    px_stmt savepoint[] = {{.sql = "SAVEPOINT a", .expect_rows = -1},
                           debit,
                           {.sql = "ROLLBACK TO SAVEPOINT a", .expect_rows = -1},
                           {.sql = "RELEASE a", .expect_rows = -1}};
    uv_loop_init(&loop);
    free(admin("INSERT INTO pgt_item (id, qty) VALUES (60, 100)"));

    /* Each statement succeeds, but the debit went with the branch's own transaction. */
    exec_in_branch(&loop, &f->t, rb_begin, 3, &w, NULL);
    assert_branch_ended(&w, 2);
    loop_wait(&loop, 50);
    admin_expect("SELECT qty FROM pgt_item WHERE id = 60", "100");

    /* The server committed the debit: only the report can tell. */
    exec_in_branch(&loop, &f->t, commit, 2, &w, NULL);
    assert_branch_ended(&w, 1);
    exec_in_branch(&loop, &f->t, &end, 1, &w, NULL);
    assert_branch_ended(&w, 0);
    exec_in_branch(&loop, &f->t, &abort_, 1, &w, NULL);
    assert_branch_ended(&w, 0);

    /* The client prepares under a name of its own: the driver's PREPARE must not follow. */
    snprintf(gid, sizeof gid, "xa1.pgt%d.tc.client", (int)getpid());
    snprintf(sql, sizeof sql, "PREPARE TRANSACTION '%s'", gid);
    exec_in_branch(&loop, &f->t, &prep, 1, &w, &c);
    assert_branch_ended(&w, 0);
    mkxid(&x, "tc", 1, "payment"); /* the branch exec_in_branch began */
    pxc_xid(&loop, D->prepare, c, &x, &w);
    assert_true(w.failed);
    assert_false(prepared_exists(&x));
    D->close(c);
    snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s'", gid);
    free(admin(sql));

    /* Savepoints stay inside the branch (ROLLBACK TO has the tag ROLLBACK too). */
    exec_in_branch(&loop, &f->t, savepoint, 4, &w, NULL);
    pxc_check_ok(&w);
    pxc_reset(&w);
    tu_loop_close(&loop);
}

static void test_reset_restores_session(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c, *other;
    px_xid x;
    /* statement_timeout last: it would cut the statements after it short. */
    px_stmt dirty[] = {
        {.sql = "SELECT set_config('search_path', 'pg_catalog', false)", .expect_rows = 1},
        {.sql = "SELECT set_config('lock_timeout', '0', false)", .expect_rows = 1},
        {.sql = "SELECT set_config('default_transaction_read_only', 'on', false)",
         .expect_rows = 1},
        {.sql = "SELECT pg_advisory_lock(42)", .expect_rows = 1},
        {.sql = "SELECT set_config('statement_timeout', '1', false)", .expect_rows = 1}};
    px_stmt check[] = {{.sql = "SHOW search_path", .expect_rows = 1},
                       {.sql = "SHOW lock_timeout", .expect_rows = 1},
                       {.sql = "SHOW statement_timeout", .expect_rows = 1},
                       {.sql = "SHOW default_transaction_read_only", .expect_rows = 1},
                       {.sql = "UPDATE pgt_lock SET v = v WHERE id = 1", .expect_rows = 1},
                       {.sql = "SELECT pg_sleep(0.01)", .expect_rows = 1}};
    px_stmt one = {.sql = "SELECT 1", .expect_rows = 1};
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    other = pxc_connect_ok(&loop, D, &f->t);
    pxc_exec(&loop, c, dirty, 5, &w);
    pxc_check_ok(&w);
    exec_ok(&loop, other, "SELECT pg_try_advisory_lock(42)", NULL, 0, &w);
    assert_string_equal(w.res[0].cells[0], "false");

    /* Returned to the pool: the next branch on it starts in the configured state. */
    reset_ok(&loop, c);
    mkxid(&x, "reset", 1, "payment");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, check, 6, &w);
    pxc_check_ok(&w);
    assert_string_equal(w.res[0].cells[0], "\"$user\", public");
    assert_string_equal(w.res[1].cells[0], "2s"); /* tu_target's lock_timeout_ms */
    assert_string_equal(w.res[2].cells[0], "0");
    assert_string_equal(w.res[3].cells[0], "off");
    pxc_xid_ok(&loop, D->rollback, c, &x);
    exec_ok(&loop, other, "SELECT pg_try_advisory_lock(42)", NULL, 0, &w);
    assert_string_equal(w.res[0].cells[0], "true");

    /* Without reset (the owner's lock session) the session is left as it is. */
    exec_ok(&loop, other, "SELECT set_config('search_path', 'pg_catalog', false)", NULL, 0, &w);
    pxc_xid_ok(&loop, D->begin, other, &x);
    exec_ok(&loop, other, "SHOW search_path", NULL, 0, &w);
    assert_string_equal(w.res[0].cells[0], "pg_catalog");
    pxc_xid_ok(&loop, D->rollback, other, &x);
    D->close(other);

    /* Not with a branch open: the pool then discards the connection. */
    pxc_xid_ok(&loop, D->begin, c, &x);
    assert_int_equal(D->reset(c, pxc_on_done, &w), -EINVAL);
    pxc_xid_ok(&loop, D->rollback, c, &x);

    /* A session left inside a transaction block cannot be discarded: retryable, broken. */
    exec_ok(&loop, c, "BEGIN", NULL, 0, &w);
    reset_ok(&loop, c);
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, &one, 1, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_true(w.err.conn_broken);
    assert_int_equal(w.failed_index, 0);
    assert_non_null(strstr(w.err.message, "session reset failed"));
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

/* A branch (begin, statements, prepare) on c that inserts pgt_item row id and runs the extra
 * statements after the insert. */
static void prepare_branch(uv_loop_t *loop, px_conn *c, const px_xid *x, int64_t id,
                           const px_stmt *extra, int nextra)
{
    px_call w = {0};
    px_param p[1];
    px_stmt s[8];
    p[0] = P_INT(id);
    s[0] = (px_stmt){.sql = "INSERT INTO pgt_item (id) VALUES ($1)",
                     .params = p,
                     .nparams = 1,
                     .expect_rows = 1};
    assert_true(nextra < 8);
    for (int i = 0; i < nextra; i++)
        s[1 + i] = extra[i];
    pxc_xid_ok(loop, D->begin, c, x);
    pxc_exec(loop, c, s, 1 + nextra, &w);
    pxc_check_ok(&w);
    pxc_reset(&w);
    pxc_xid_ok(loop, D->prepare, c, x);
}

/* Whether another session can take the advisory lock key (and it releases it again). */
static void assert_advisory_free(uv_loop_t *loop, px_conn *other, int key)
{
    px_call w = {0};
    px_param p[] = {P_INT(key)};
    exec_ok(loop, other, "SELECT pg_try_advisory_lock($1)", p, 1, &w);
    assert_string_equal(w.res[0].cells[0], "true");
    exec_ok(loop, other, "SELECT pg_advisory_unlock($1)", p, 1, &w);
    pxc_reset(&w);
}

/* One statement outside any branch whose one cell must be want. */
static void assert_cell(uv_loop_t *loop, px_conn *c, const char *sql, const char *want)
{
    px_call w = {0};
    exec_ok(loop, c, sql, NULL, 0, &w);
    assert_int_equal(w.res[0].nrows, 1);
    assert_string_equal(w.res[0].cells[0], want);
    pxc_reset(&w);
}

/* The engine keeps the connection that ran a branch's statements and its PREPARE for phase 2,
 * and lists prepared branches on connections it holds: COMMIT/ROLLBACK PREPARED and the listing
 * must run in a clean session there, not in what the client's statements left (here a temporary
 * view that a search_path finds before the catalog, and a session advisory lock). Afterwards the
 * next branch starts with the lock wait limit again, also after a branch that rolled back. */
static void test_phase2_on_preparing_connection_runs_clean(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c, *other;
    px_xid x[3];
    char prefix[64];
    /* Set up outside the branch: a temporary object touched in a branch makes PREPARE fail. */
    px_stmt shadow = {.sql = "CREATE TEMP VIEW pg_prepared_xacts AS "
                             "SELECT NULL::text AS gid, NULL::name AS database WHERE false",
                      .expect_rows = -1};
    px_stmt leak[3][2] = {
        {{.sql = "SELECT set_config('search_path', 'pg_temp, pg_catalog', false)",
          .expect_rows = 1},
         {.sql = "SELECT pg_advisory_lock(4201)", .expect_rows = 1}},
        {{.sql = "SELECT set_config('search_path', 'pg_catalog', false)", .expect_rows = 1},
         {.sql = "SELECT pg_advisory_lock(4202)", .expect_rows = 1}},
        {{.sql = "SELECT set_config('search_path', 'pg_catalog', false)", .expect_rows = 1},
         {.sql = "SELECT pg_advisory_lock(4203)", .expect_rows = 1}}};
    px_stmt show_lt = {.sql = "SHOW lock_timeout", .expect_rows = 1};
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    other = pxc_connect_ok(&loop, D, &f->t);
    for (int i = 0; i < 3; i++)
        mkxid(&x[i], "p2s", i, "payment");
    mkprefix(prefix, sizeof prefix, "p2s");

    /* The listing on the preparing connection sees the catalog, not the client's view. */
    pxc_exec(&loop, c, &shadow, 1, &w);
    pxc_check_ok(&w);
    prepare_branch(&loop, c, &x[0], 700, leak[0], 2);
    pxc_recover_ok(&loop, c, prefix, "payment", &w);
    assert_int_equal(w.nxids, 1);
    assert_string_equal(w.xids[0].gtrid, x[0].gtrid);
    assert_advisory_free(&loop, other, 4201);
    pxc_xid_ok(&loop, D->commit_prepared, c, &x[0]);
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 700", "1");

    /* COMMIT PREPARED on the preparing connection leaves a clean session behind it. */
    prepare_branch(&loop, c, &x[1], 701, leak[1], 2);
    pxc_xid_ok(&loop, D->commit_prepared, c, &x[1]);
    assert_false(prepared_exists(&x[1]));
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 701", "1");
    assert_advisory_free(&loop, other, 4202);
    assert_cell(&loop, c, "SHOW search_path", "\"$user\", public");

    /* So does ROLLBACK PREPARED. */
    prepare_branch(&loop, c, &x[2], 702, leak[2], 2);
    pxc_xid_ok(&loop, D->rollback_prepared, c, &x[2]);
    assert_false(prepared_exists(&x[2]));
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 702", "0");
    assert_advisory_free(&loop, other, 4203);
    assert_cell(&loop, c, "SHOW search_path", "\"$user\", public");

    /* DISCARD ALL dropped the lock wait limit: the next branch sets it again, and so does the
     * one after a branch that rolled back (the SET travels inside the branch's transaction). */
    for (int i = 0; i < 2; i++) {
        mkxid(&x[0], "p2s", 10 + i, "payment");
        pxc_xid_ok(&loop, D->begin, c, &x[0]);
        pxc_exec(&loop, c, &show_lt, 1, &w);
        pxc_check_ok(&w);
        assert_string_equal(w.res[0].cells[0], "2s");
        pxc_xid_ok(&loop, D->rollback, c, &x[0]);
    }
    pxc_reset(&w);
    D->close(c);
    D->close(other);
    tu_loop_close(&loop);
}

/* A pooled connection whose reset is still pending finishes another transaction's branch: one
 * client's session (here a role it switched to) must not reach that work. A connection that
 * ran no client statement sends nothing in front (its lock wait limit is still there). */
static void test_phase2_on_pooled_connection_runs_clean(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *p, *q, *r;
    px_xid x[4];
    px_stmt leak[] = {
        {.sql = "SELECT set_config('search_path', 'pg_catalog', false)", .expect_rows = 1},
        {.sql = "SELECT set_config('role', 'pgt_other', false)", .expect_rows = 1}};
    px_stmt check[] = {{.sql = "SHOW search_path", .expect_rows = 1},
                       {.sql = "SHOW lock_timeout", .expect_rows = 1},
                       {.sql = "SELECT current_user", .expect_rows = 1}};
    uv_loop_init(&loop);
    free(admin("DO $$ BEGIN CREATE ROLE pgt_other NOLOGIN; "
               "EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n"
               "GRANT pgt_other TO xacoord;\n"));
    for (int i = 0; i < 4; i++)
        mkxid(&x[i], "p2p", i, "payment");
    p = pxc_connect_ok(&loop, D, &f->t);
    q = pxc_connect_ok(&loop, D, &f->t);
    r = pxc_connect_ok(&loop, D, &f->t);

    /* A client's transaction on p commits with its session changed; p goes back to the pool. */
    pxc_xid_ok(&loop, D->begin, p, &x[0]);
    pxc_exec(&loop, p, leak, 2, &w);
    pxc_check_ok(&w);
    pxc_xid_ok(&loop, D->commit_one_phase, p, &x[0]);
    reset_ok(&loop, p);

    /* Another transaction's branch, prepared on q, is committed on p: under the client's role
     * PostgreSQL would refuse it (42501, only the owner may finish a prepared transaction). */
    prepare_branch(&loop, q, &x[1], 710, NULL, 0);
    pxc_xid_ok(&loop, D->commit_prepared, p, &x[1]);
    assert_false(prepared_exists(&x[1]));
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 710", "1");

    /* The next branch on p starts in the configured state. */
    pxc_xid_ok(&loop, D->begin, p, &x[2]);
    pxc_exec(&loop, p, check, 3, &w);
    pxc_check_ok(&w);
    assert_string_equal(w.res[0].cells[0], "\"$user\", public");
    assert_string_equal(w.res[1].cells[0], "2s");
    assert_string_equal(w.res[2].cells[0], "xacoord");
    pxc_xid_ok(&loop, D->rollback, p, &x[2]);

    /* r never ran a client statement: no DISCARD ALL goes out, the limit set at connect stays. */
    prepare_branch(&loop, q, &x[3], 711, NULL, 0);
    pxc_xid_ok(&loop, D->rollback_prepared, r, &x[3]);
    assert_false(prepared_exists(&x[3]));
    assert_cell(&loop, r, "SHOW lock_timeout", "2s");

    pxc_reset(&w);
    D->close(p);
    D->close(q);
    D->close(r);
    loop_wait(&loop, 50);
    free(admin("REVOKE pgt_other FROM xacoord; DROP ROLE pgt_other;"));
    tu_loop_close(&loop);
}

/* The DISCARD ALL in front of a phase-2 command or the listing fails (the session was left
 * inside a transaction block): reported once, retryable, the connection broken, and the
 * command did not run - another connection then finishes the branch. */
static void test_phase2_reset_failure(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c, *d, *other;
    px_xid x;
    char prefix[64];
    uv_loop_init(&loop);
    mkxid(&x, "p2f", 1, "payment");
    mkprefix(prefix, sizeof prefix, "p2f");
    c = pxc_connect_ok(&loop, D, &f->t);
    d = pxc_connect_ok(&loop, D, &f->t);
    other = pxc_connect_ok(&loop, D, &f->t);
    prepare_branch(&loop, other, &x, 720, NULL, 0);
    exec_ok(&loop, c, "BEGIN", NULL, 0, &w);
    exec_ok(&loop, d, "BEGIN", NULL, 0, &w);

    alarm(20);
    pxc_xid(&loop, D->commit_prepared, c, &x, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_true(w.err.conn_broken);
    assert_string_equal(w.err.sqlstate, "25001");
    assert_non_null(strstr(w.err.message, "session reset failed"));
    loop_wait(&loop, 50);
    assert_int_equal(w.calls, 1);
    assert_true(prepared_exists(&x));

    pxc_reset(&w);
    assert_int_equal(D->recover(d, prefix, "payment", pxc_on_recover, &w), 0);
    tu_run_until(&loop, &w.done, WAIT_MS);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_RETRYABLE);
    assert_true(w.err.conn_broken);
    assert_non_null(strstr(w.err.message, "session reset failed"));
    loop_wait(&loop, 50);
    assert_int_equal(w.calls, 1);
    alarm(0);

    pxc_xid_ok(&loop, D->commit_prepared, other, &x);
    assert_false(prepared_exists(&x));
    admin_expect("SELECT count(*) FROM pgt_item WHERE id = 720", "1");
    pxc_reset(&w);
    D->close(c);
    D->close(d);
    D->close(other);
    tu_loop_close(&loop);
}

static void test_protocol_error_is_business(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x;
    px_param p[] = {P_INT(1)};
    px_stmt s = {.sql = "SELECT $1::int + $2::int", .params = p, .nparams = 1, .expect_rows = -1};
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    mkxid(&x, "bind", 1, "payment");
    pxc_xid_ok(&loop, D->begin, c, &x);
    pxc_exec(&loop, c, &s, 1, &w);
    assert_true(w.failed);
    assert_int_equal(w.err.cls, PX_BUSINESS);
    assert_string_equal(w.err.sqlstate, "08P01");
    assert_false(w.err.conn_broken);
    assert_non_null(strstr(w.err.message, "bind message supplies 1 parameters"));
    pxc_xid_ok(&loop, D->rollback, c, &x);
    exec_ok(&loop, c, "SELECT 1", NULL, 0, &w);
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

static void test_column_types_exact(void **state)
{
    static const struct {
        const char *cell;
        px_coltype type;
    } want[] = {
        {"12345678901234567.89", PX_COL_DECIMAL},
        {"NaN", PX_COL_DECIMAL},
        {"0.30000000000000004", PX_COL_REAL},
        {"NaN", PX_COL_REAL},
        {"Infinity", PX_COL_REAL},
        {"-Infinity", PX_COL_REAL},
        {"0.1", PX_COL_REAL},
        {"7", PX_COL_INT},
        {"-8", PX_COL_INT},
        {"9223372036854775807", PX_COL_INT},
        {"true", PX_COL_BOOL},
        {"AP9B", PX_COL_BINARY},
        {"", PX_COL_BINARY},
        {NULL, PX_COL_BINARY},
        {"txt", PX_COL_TEXT},
        {"1", PX_COL_INT},
        {"2", PX_COL_INT},
    };
    enum { N = sizeof want / sizeof want[0] };
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    const px_result *r;
    uv_loop_init(&loop);
    c = pxc_connect_ok(&loop, D, &f->t);
    exec_ok(&loop, c,
            "SELECT 12345678901234567.89::numeric, 'NaN'::numeric, 0.1::float8 + 0.2::float8, "
            "'NaN'::float8, 'Infinity'::float8, '-Infinity'::float4, 0.1::float4, 7::int2, "
            "-8::int4, 9223372036854775807::int8, true, '\\x00ff41'::bytea, ''::bytea, "
            "NULL::bytea, 'txt'::text, 1 AS a, 2 AS a",
            NULL, 0, &w);
    r = &w.res[0];
    assert_int_equal(r->nrows, 1);
    assert_int_equal(r->ncols, N);
    for (int j = 0; j < N; j++) {
        assert_int_equal(r->coltypes[j], want[j].type);
        if (want[j].cell)
            assert_string_equal(r->cells[j], want[j].cell);
        else
            assert_null(r->cells[j]);
    }
    assert_string_equal(r->colnames[N - 2], "a");
    assert_string_equal(r->colnames[N - 1], "a");
    pxc_reset(&w);
    D->close(c);
    tu_loop_close(&loop);
}

/* ------------------------------------------------------------------ setup */

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tu_target(&f->t, "payment");
    /* Leftovers of an earlier run hold locks that would block the DROP below. */
    free(admin("SELECT format('ROLLBACK PREPARED %L', gid) FROM pg_prepared_xacts "
               "WHERE gid LIKE 'xa1.pgt%' AND database = current_database() \\gexec\n"
               "DROP TABLE IF EXISTS pgt_item, pgt_text, pgt_lock, pgt_many;\n"
               "CREATE TABLE pgt_item (id bigint PRIMARY KEY, name text, amount float8, ok bool,"
               " price numeric(10,2), small int2, qty int4 CHECK (qty >= 0));\n"
               "CREATE TABLE pgt_text (id int PRIMARY KEY, v text NOT NULL);\n"
               "CREATE TABLE pgt_lock (id int PRIMARY KEY, v int NOT NULL);\n"
               "INSERT INTO pgt_lock VALUES (1, 0);\n"
               "CREATE TABLE pgt_many (id int PRIMARY KEY);\n"
               "ALTER TABLE pgt_item OWNER TO xacoord; ALTER TABLE pgt_text OWNER TO xacoord;\n"
               "ALTER TABLE pgt_lock OWNER TO xacoord; ALTER TABLE pgt_many OWNER TO xacoord;\n"));
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    if (!f)
        return 0; /* the set-up failed before making it */
    free((char *)f->t.password);
    free((char *)f->t.conninfo);
    free(f);
    return 0;
}

/* A statement that switches to another role (set_config('role', ...), possible for a member)
 * must not make that role the owner of the prepared branch: only the owner or a superuser can
 * finish it, so the branch would stay prepared, holding its locks. */
static void test_prepared_branch_keeps_the_session_owner(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_conn *p, *q;
    px_xid x;
    px_stmt become[] = {{.sql = "SELECT set_config('role', 'pgt_owner', false)", .expect_rows = 1}};
    char gid[160], sql[256], *owner;
    uv_loop_init(&loop);
    free(admin("DO $$ BEGIN CREATE ROLE pgt_owner NOLOGIN; "
               "EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n"
               "GRANT pgt_owner TO xacoord; GRANT INSERT ON pgt_item TO pgt_owner;\n"));
    mkxid(&x, "own", 1, "payment");
    p = pxc_connect_ok(&loop, D, &f->t);
    q = pxc_connect_ok(&loop, D, &f->t);
    prepare_branch(&loop, p, &x, 730, become, 1);
    px_xid_gid(&x, gid, sizeof gid);
    snprintf(sql, sizeof sql, "SELECT owner FROM pg_prepared_xacts WHERE gid = '%s'", gid);
    owner = admin(sql);
    assert_string_equal(owner, "xacoord");
    free(owner);
    pxc_xid_ok(&loop, D->commit_prepared, q, &x);
    assert_false(prepared_exists(&x));
    D->close(p);
    D->close(q);
    loop_wait(&loop, 50);
    free(admin("REVOKE INSERT ON pgt_item FROM pgt_owner; REVOKE pgt_owner FROM xacoord; "
               "DROP ROLE pgt_owner;"));
    tu_loop_close(&loop);
}

/* A branch whose statements are session-neutral (the engine proved it, guard.h) needs no DISCARD
 * ALL: the session a test's mislabelled set_config leaves behind shows that none was sent. The
 * same statement, not marked neutral, is discarded before the next branch. */
static void test_reset_skipped_for_neutral_statements(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *c;
    px_xid x[4];
    px_stmt leak = {.sql = "SELECT set_config('search_path', 'pg_catalog', false)",
                    .expect_rows = 1,
                    .session_neutral = true};
    px_stmt show = {.sql = "SELECT current_setting('search_path')", .expect_rows = 1};
    uv_loop_init(&loop);
    for (int i = 0; i < 4; i++)
        mkxid(&x[i], "neu", i, "payment");
    c = pxc_connect_ok(&loop, D, &f->t);
    for (int i = 0; i < 2; i++) {
        pxc_xid_ok(&loop, D->begin, c, &x[2 * i]);
        pxc_exec(&loop, c, &leak, 1, &w);
        pxc_check_ok(&w);
        pxc_xid_ok(&loop, D->commit_one_phase, c, &x[2 * i]);
        reset_ok(&loop, c);
        /* The next branch on the connection, where a pending DISCARD ALL would go out. */
        pxc_xid_ok(&loop, D->begin, c, &x[2 * i + 1]);
        pxc_exec(&loop, c, &show, 1, &w);
        pxc_check_ok(&w);
        assert_string_equal(w.res[0].cells[0], i == 0 ? "pg_catalog" : "\"$user\", public");
        pxc_xid_ok(&loop, D->rollback, c, &x[2 * i + 1]);
        leak.session_neutral = false;
    }
    pxc_reset(&w);
    D->close(c);
    loop_wait(&loop, 50);
    tu_loop_close(&loop);
}

static void w_marker(px_conn *c, const px_error *err, bool found, void *arg)
{
    int *out = arg;
    *out = err ? -1 : found;
}

static int marker_state(uv_loop_t *loop, px_conn *c, const px_xid *x)
{
    int found = -2;
    assert_int_equal(D->marker_exists(c, x, w_marker, &found), 0);
    for (int i = 0; i < 1000 && found == -2; i++)
        uv_run(loop, UV_RUN_ONCE);
    return found;
}

/* prepare writes the branch's marker inside the branch: it exists once the branch committed and
 * is gone once it rolled back; pruning deletes old markers of the prefix. */
static void test_markers(void **state)
{
    fixture *f = *state;
    uv_loop_t loop;
    px_call w = {0};
    px_conn *p, *q;
    px_xid a, b;
    char prefix[64];
    uv_loop_init(&loop);
    mkxid(&a, "mark", 1, "payment");
    mkxid(&b, "mark", 2, "payment");
    p = pxc_connect_ok(&loop, D, &f->t);
    q = pxc_connect_ok(&loop, D, &f->t);
    prepare_branch(&loop, p, &a, 740, NULL, 0);
    prepare_branch(&loop, p, &b, 741, NULL, 0);
    assert_int_equal(marker_state(&loop, q, &a), 0); /* prepared: not committed yet */
    pxc_xid_ok(&loop, D->commit_prepared, q, &a);
    pxc_xid_ok(&loop, D->rollback_prepared, q, &b);
    assert_int_equal(marker_state(&loop, q, &a), 1);
    assert_int_equal(marker_state(&loop, q, &b), 0);
    snprintf(prefix, sizeof prefix, "xa1.pgt%d.mark.", (int)getpid());
    assert_int_equal(D->markers_prune(q, prefix, 0, pxc_on_done, &w), 0);
    tu_run_until(&loop, &w.done, 10000);
    pxc_check_ok(&w);
    assert_int_equal(marker_state(&loop, q, &a), 0);
    pxc_reset(&w);
    D->close(p);
    D->close(q);
    loop_wait(&loop, 50);
    tu_loop_close(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_exec_params),
        cmocka_unit_test(test_markers),
        cmocka_unit_test(test_reset_skipped_for_neutral_statements),
        cmocka_unit_test(test_prepared_branch_keeps_the_session_owner),
        cmocka_unit_test(test_failed_transaction_is_not_prepared),
        cmocka_unit_test(test_constraint_violations),
        cmocka_unit_test(test_nul_byte_in_text_is_business),
        cmocka_unit_test(test_lock_timeout),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_copy_fails_promptly),
        cmocka_unit_test(test_transaction_control_in_branch_fails),
        cmocka_unit_test(test_reset_restores_session),
        cmocka_unit_test(test_phase2_on_preparing_connection_runs_clean),
        cmocka_unit_test(test_phase2_on_pooled_connection_runs_clean),
        cmocka_unit_test(test_phase2_reset_failure),
        cmocka_unit_test(test_protocol_error_is_business),
        cmocka_unit_test(test_column_types_exact),
        cmocka_unit_test(test_kill_restart_then_recover),
    };
    if (getenv("XA_TEST_FILTER"))
        cmocka_set_test_filter(getenv("XA_TEST_FILTER"));
    return contract_run(&contract_postgres) +
           cmocka_run_group_tests(tests, group_setup, group_teardown);
}
