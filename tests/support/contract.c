/*
 * The driver contract suite (contract.h). Every test runs its own loop and ends by closing its
 * connections and checking that the loop closes cleanly: a driver that leaks a handle fails.
 */
#include "contract.h"
#include "admin.h"
#include "pxcall.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const contract_driver *g_drv;
static px_target g_target;
static char g_prefix[40]; /* gtrid prefix of this run: leftovers of other runs never match */

static px_conn *connect_ok(uv_loop_t *loop)
{
    return pxc_connect_ok(loop, g_drv->d, &g_target);
}

static void on_never(px_conn *c, const px_error *err, int failed_index, const px_result *results,
                     int nresults, void *arg)
{
    fail_msg("the callback of an abandoned operation ran");
}

/* ---------------------------------------------------------------- statements and XIDs */

/* gtrid "<prefix><tag>.<n>". */
static void mkxid(px_xid *x, const char *tag, int n, const char *bqual)
{
    char g[PX_XID_PART_MAX + 1];
    snprintf(g, sizeof g, "%s%s.%d", g_prefix, tag, n);
    assert_int_equal(px_xid_set(x, g, bqual), 0);
}

static void mkprefix(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "%s%s.", g_prefix, tag);
}

/* The write of row id, parameters in p (two of them, kept by the caller). */
static px_stmt write_stmt(px_param p[2], int64_t id, int64_t expect)
{
    p[0] = (px_param){.type = PX_P_INT, .i = id};
    p[1] = (px_param){.type = PX_P_TEXT, .text = "contract", .len = 8};
    return (px_stmt){.sql = g_drv->write, .params = p, .nparams = 2, .expect_rows = expect};
}

static px_stmt plain(const char *sql, int64_t expect)
{
    return (px_stmt){.sql = sql, .expect_rows = expect};
}

/* How many of the n branches committed (see contract_driver.admin). */
static int count_committed(const px_xid *xs, const int64_t *ids, int n)
{
    size_t len = 64 + (size_t)n * 24, off;
    char *sql, *out;
    int count;
    if (!g_drv->admin)
        return g_drv->count_committed(xs, ids, n);
    sql = malloc(len);
    assert_non_null(sql);
    off = (size_t)snprintf(sql, len, "SELECT count(*) FROM ct_item WHERE id IN (");
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(sql + off, len - off, "%s%lld", i ? "," : "", (long long)ids[i]);
    snprintf(sql + off, len - off, ")");
    out = adm_sql(g_drv->admin, sql);
    count = atoi(out);
    free(out);
    free(sql);
    return count;
}

static int committed(const px_xid *x, int64_t id)
{
    return count_committed(x, &id, 1);
}

/* begin, the write of row id, prepare. */
static void prepare_branch(uv_loop_t *loop, px_conn *c, const px_xid *x, int64_t id)
{
    px_call k = {0};
    px_param p[2];
    px_stmt s = write_stmt(p, id, 1);
    pxc_xid_ok(loop, g_drv->d->begin, c, x);
    pxc_exec(loop, c, &s, 1, &k);
    pxc_check_ok(&k);
    pxc_reset(&k);
    pxc_xid_ok(loop, g_drv->d->prepare, c, x);
}

/* COMMIT/ROLLBACK PREPARED from a connection that did not prepare: where the server attaches
 * the branch to its session until the close is processed, "not found" is retried for 5 s. */
static px_errclass finish_elsewhere(uv_loop_t *loop, pxc_xid_fn fn, px_conn *c, const px_xid *x,
                                    px_call *k)
{
    uint64_t deadline = uv_hrtime() + 5000000000ULL;
    px_errclass cls;
    while ((cls = pxc_xid(loop, fn, c, x, k)) == PX_XID_NOT_FOUND && g_drv->detach_after_close &&
           uv_hrtime() < deadline)
        usleep(20000);
    return cls;
}

/* Row id holds want: read back through the driver, with the server's count of bytes. */
static void assert_read_back(uv_loop_t *loop, px_conn *c, int64_t id, const char *want)
{
    px_call k = {0};
    px_param p[] = {{.type = PX_P_INT, .i = id}};
    px_stmt s = {.sql = g_drv->read_text, .params = p, .nparams = 1, .expect_rows = 1};
    assert_int_equal(pxc_exec(loop, c, &s, 1, &k), PX_OK);
    assert_string_equal(k.res[0].cells[0], want);
    assert_int_equal(atoi(k.res[0].cells[1]), (int)strlen(want));
    pxc_reset(&k);
}

/* The server holds exactly the bytes of the n values, as the administrator's client sees them
 * (one query for all: each value in upper-case hex followed by '='). */
static void assert_stored_hex(const char *const *values, int n)
{
    size_t len = 2, off = 0;
    char *want, *got;
    for (int i = 0; i < n; i++)
        len += 2 * strlen(values[i]) + 1;
    want = malloc(len);
    assert_non_null(want);
    for (int i = 0; i < n; i++) {
        for (const unsigned char *b = (const unsigned char *)values[i]; *b; b++)
            off += (size_t)snprintf(want + off, len - off, "%02X", *b);
        want[off++] = '=';
    }
    want[off] = '\0';
    got = adm_sql(g_drv->admin, g_drv->stored_hex);
    assert_string_equal(got, want);
    free(got);
    free(want);
}

/* ---------------------------------------------------------------- tests */

/* Statements run in order inside a branch with bound parameters; each has its result. */
static void test_connect_exec(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_param p[2], echo[] = {{.type = PX_P_TEXT, .text = "it's ? $1; --", .len = 13}};
    px_stmt s[4];
    px_conn *c;
    px_xid x;
    uv_loop_init(&loop);
    assert_ptr_equal(px_driver_find(g_drv->d->name), g_drv->d);
    mkxid(&x, "exec", 1, g_drv->bqual);
    c = connect_ok(&loop);
    s[0] = write_stmt(p, 100, 1);
    s[1] = (px_stmt){.sql = g_drv->echo_text, .params = echo, .nparams = 1, .expect_rows = 1};
    s[2] = plain(g_drv->no_rows, 0);
    /* An UPDATE counts the rows it matched, even where it changed nothing. */
    s[3] = (px_stmt){.sql = g_drv->touch, .params = p, .nparams = 1, .expect_rows = 1};
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);
    assert_int_equal(pxc_exec(&loop, c, s, 4, &k), PX_OK);
    assert_int_equal(k.nresults, 4);
    assert_int_equal(k.failed_index, -1);
    assert_int_equal(k.res[0].rows_affected, 1);
    assert_int_equal(k.res[1].rows_affected, 1);
    assert_int_equal(k.res[1].nrows, 1);
    assert_true(k.res[1].ncols >= 1);
    assert_int_equal(k.res[1].coltypes[0], PX_COL_TEXT);
    assert_string_equal(k.res[1].cells[0], "it's ? $1; --");
    assert_int_equal(k.res[2].rows_affected, 0);
    assert_int_equal(k.res[3].rows_affected, 1);
    pxc_xid_ok(&loop, g_drv->d->commit_one_phase, c, &x);
    assert_int_equal(committed(&x, 100), 1);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

/* Prepared on one connection, committed from another after the first closed; a second COMMIT
 * PREPARED (a lost reply replayed) and an unknown XID are "not found" and harm nothing. */
static void test_prepare_commit_elsewhere(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c[2];
    px_xid x, unknown;
    char prefix[64];
    uv_loop_init(&loop);
    mkxid(&x, "pc", 1, g_drv->bqual);
    mkxid(&unknown, "pc", 2, g_drv->bqual);
    mkprefix(prefix, sizeof prefix, "pc");
    c[0] = connect_ok(&loop);
    c[1] = connect_ok(&loop);
    prepare_branch(&loop, c[0], &x, 200);
    assert_int_equal(committed(&x, 200), 0);
    pxc_recover_ok(&loop, c[1], prefix, g_drv->bqual, &k);
    assert_true(pxc_listed(&k, &x));
    g_drv->d->close(c[0]);
    c[0] = NULL;

    assert_int_equal(finish_elsewhere(&loop, g_drv->d->commit_prepared, c[1], &x, &k), PX_OK);
    assert_int_equal(committed(&x, 200), 1);
    assert_int_equal(pxc_recover_ok(&loop, c[1], prefix, g_drv->bqual, &k), 0);

    assert_int_equal(pxc_xid(&loop, g_drv->d->commit_prepared, c[1], &x, &k), PX_XID_NOT_FOUND);
    assert_false(k.err.conn_broken);
    assert_string_equal(k.err.sqlstate, g_drv->not_found_sqlstate);
    assert_int_equal(pxc_xid(&loop, g_drv->d->rollback_prepared, c[1], &unknown, &k),
                     PX_XID_NOT_FOUND);
    assert_false(k.err.conn_broken);
    assert_string_equal(k.err.sqlstate, g_drv->not_found_sqlstate);
    /* The connection is still good for a branch. */
    prepare_branch(&loop, c[1], &unknown, 201);
    pxc_xid_ok(&loop, g_drv->d->rollback_prepared, c[1], &unknown);
    assert_int_equal(committed(&unknown, 201), 0);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, c, 2);
}

/* ROLLBACK PREPARED from another connection leaves nothing of the branch. */
static void test_rollback_prepared_elsewhere(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c[2];
    px_xid x;
    char prefix[64];
    uv_loop_init(&loop);
    mkxid(&x, "rp", 1, g_drv->bqual);
    mkprefix(prefix, sizeof prefix, "rp");
    c[0] = connect_ok(&loop);
    c[1] = connect_ok(&loop);
    prepare_branch(&loop, c[0], &x, 300);
    g_drv->d->close(c[0]);
    c[0] = NULL;
    assert_int_equal(finish_elsewhere(&loop, g_drv->d->rollback_prepared, c[1], &x, &k), PX_OK);
    assert_int_equal(committed(&x, 300), 0);
    assert_int_equal(pxc_recover_ok(&loop, c[1], prefix, g_drv->bqual, &k), 0);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, c, 2);
}

/* A single branch commits in one phase; an unprepared branch rolls back; a prepared one rolls
 * back on its own connection. */
static void test_one_phase_and_rollback(void **state)
{
    static const int64_t ids[] = {401, 402};
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c;
    px_xid x[3];
    px_param p[2];
    px_stmt s;
    uv_loop_init(&loop);
    for (int i = 0; i < 3; i++)
        mkxid(&x[i], "op", i, g_drv->bqual);
    c = connect_ok(&loop);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[0]);
    s = write_stmt(p, 400, 1);
    assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
    pxc_xid_ok(&loop, g_drv->d->commit_one_phase, c, &x[0]);
    assert_int_equal(committed(&x[0], 400), 1);

    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[1]);
    s = write_stmt(p, 401, 1);
    assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[1]);

    prepare_branch(&loop, c, &x[2], 402);
    pxc_xid_ok(&loop, g_drv->d->rollback_prepared, c, &x[2]);
    assert_int_equal(count_committed(&x[1], ids, 2), 0);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

/* The listing names only the branches of the gtrid prefix and the bqual asked for. */
static void test_recover_filters(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c[4] = {NULL, NULL, NULL, NULL};
    px_xid x[3];
    char prefix[64], longer[64];
    uv_loop_init(&loop);
    mkxid(&x[0], "rec", 1, g_drv->bqual);
    mkxid(&x[1], "rec", 2, g_drv->bqual_other);
    mkxid(&x[2], "recx", 1, g_drv->bqual); /* its prefix starts with the other as a string */
    mkprefix(prefix, sizeof prefix, "rec");
    mkprefix(longer, sizeof longer, "recx");
    for (int i = 0; i < 4; i++)
        c[i] = connect_ok(&loop);
    for (int i = 0; i < 3; i++) {
        pxc_xid_ok(&loop, g_drv->d->begin, c[i], &x[i]);
        pxc_xid_ok(&loop, g_drv->d->prepare, c[i], &x[i]);
    }
    assert_int_equal(pxc_recover_ok(&loop, c[3], prefix, g_drv->bqual, &k), 1);
    assert_string_equal(k.xids[0].gtrid, x[0].gtrid);
    assert_string_equal(k.xids[0].bqual, g_drv->bqual);
    assert_int_equal(pxc_recover_ok(&loop, c[3], prefix, g_drv->bqual_other, &k), 1);
    assert_string_equal(k.xids[0].gtrid, x[1].gtrid);
    assert_string_equal(k.xids[0].bqual, g_drv->bqual_other);
    assert_int_equal(pxc_recover_ok(&loop, c[3], longer, g_drv->bqual, &k), 1);
    assert_string_equal(k.xids[0].gtrid, x[2].gtrid);
    pxc_recover_ok(&loop, c[3], g_prefix, g_drv->bqual, &k);
    assert_true(pxc_listed(&k, &x[0]) && pxc_listed(&k, &x[2]) && !pxc_listed(&k, &x[1]));
    for (int i = 0; i < 3; i++)
        pxc_xid_ok(&loop, g_drv->d->rollback_prepared, c[i], &x[i]);
    assert_int_equal(pxc_recover_ok(&loop, c[3], g_prefix, g_drv->bqual, &k), 0);
    assert_int_equal(pxc_recover_ok(&loop, c[3], g_prefix, g_drv->bqual_other, &k), 0);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, c, 4);
}

/* A statement's failure is the request's (business) or not (fatal); a wrong row count is the
 * request's, with a message that names both counts; the failing statement's index is reported
 * with the results of those before it, and the connection stays usable. */
static void test_error_classes(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c;
    px_xid x[5];
    px_param p[2];
    px_stmt s[3];
    uv_loop_init(&loop);
    for (int i = 0; i < 5; i++)
        mkxid(&x[i], "err", i, g_drv->bqual);
    c = connect_ok(&loop);

    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[0]);
    s[0] = write_stmt(p, 500, 1);
    s[1] = plain(g_drv->business, -1);
    s[2] = plain(g_drv->echo_text, -1);
    assert_int_equal(pxc_exec(&loop, c, s, 3, &k), PX_BUSINESS);
    assert_int_equal(k.failed_index, 1);
    assert_int_equal(k.nresults, 1);
    assert_int_equal(k.res[0].rows_affected, 1);
    assert_false(k.err.conn_broken);
    assert_false(k.err.rows_mismatch);
    assert_true(k.err.message[0] != '\0');
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[0]);
    assert_int_equal(committed(&x[0], 500), 0);

    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[1]);
    s[0] = write_stmt(p, 501, 1);
    s[1] = plain(g_drv->no_rows, 1);
    assert_int_equal(pxc_exec(&loop, c, s, 3, &k), PX_BUSINESS);
    assert_int_equal(k.failed_index, 1);
    assert_int_equal(k.nresults, 1);
    assert_true(k.err.rows_mismatch);
    assert_false(k.err.conn_broken);
    assert_string_equal(k.err.message, "expected 1 rows, got 0");
    assert_string_equal(k.err.sqlstate, "");
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[1]);
    /* Returned rows count for queries. */
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[4]);
    s[0] = plain(g_drv->two_rows, 1);
    assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_BUSINESS);
    assert_true(k.err.rows_mismatch);
    assert_string_equal(k.err.message, "expected 1 rows, got 2");
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[4]);

    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[2]);
    s[0] = plain(g_drv->fatal, -1);
    assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_FATAL);
    assert_int_equal(k.failed_index, 0);
    assert_int_equal(k.nresults, 0);
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[2]);

    /* After all that a branch still commits. */
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[3]);
    s[0] = write_stmt(p, 502, 1);
    assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_OK);
    pxc_xid_ok(&loop, g_drv->d->commit_one_phase, c, &x[3]);
    assert_int_equal(committed(&x[3], 502), 1);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

/* No server: the connect fails once, retryable, and hands out no connection. */
static void test_unreachable_is_retryable(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_target t = g_target;
    uv_loop_init(&loop);
    g_drv->unreachable(&t);
    assert_null(pxc_try_connect(&loop, g_drv->d, &t, &k));
    assert_true(k.failed);
    assert_int_equal(k.err.cls, PX_RETRYABLE);
    assert_true(k.err.conn_broken);
    assert_true(k.err.message[0] != '\0');
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, NULL, 0);
}

/* One operation at a time; a refused call never calls back; a call never reports from inside
 * itself; close works from inside a callback and with an operation in flight (whose callback
 * then never comes). */
static void test_async_rules(void **state)
{
    uv_loop_t loop;
    px_call k = {0}, k2 = {0};
    px_conn *c;
    px_xid x;
    /* Any statement is in flight until a later loop turn: the refusals are checked at once. */
    px_stmt any = plain(g_drv->two_rows, 2), long_stmt = plain(g_drv->slow, 1);
    uint64_t t0;
    uv_loop_init(&loop);
    mkxid(&x, "busy", 1, g_drv->bqual);
    c = connect_ok(&loop);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);

    assert_int_equal(g_drv->d->exec(c, &any, 1, pxc_on_exec, &k), 0);
    assert_int_equal(g_drv->d->exec(c, &any, 1, pxc_on_exec, &k2), -EBUSY);
    assert_int_equal(g_drv->d->rollback(c, &x, pxc_on_done, &k2), -EBUSY);
    assert_int_equal(g_drv->d->prepare(c, &x, pxc_on_done, &k2), -EBUSY);
    assert_int_equal(g_drv->d->commit_prepared(c, &x, pxc_on_done, &k2), -EBUSY);
    assert_int_equal(g_drv->d->recover(c, g_prefix, g_drv->bqual, pxc_on_recover, &k2), -EBUSY);
    assert_int_equal(g_drv->d->reset(c, pxc_on_done, &k2), -EBUSY);
    pxc_wait(&loop, &k);
    pxc_check_ok(&k);
    assert_int_equal(k2.calls, 0);
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x);

    pxc_reset(&k);
    assert_int_equal(g_drv->d->begin(c, &x, pxc_on_done, &k), 0);
    assert_int_equal(k.calls, 0);
    pxc_wait(&loop, &k);
    pxc_check_ok(&k);
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x);

    /* The exec callback closes the connection (with its branch open). */
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);
    pxc_reset(&k);
    k.close_in_cb = true;
    assert_int_equal(g_drv->d->exec(c, &any, 1, pxc_on_exec, &k), 0);
    pxc_wait(&loop, &k);
    pxc_check_ok(&k);

    /* Closed from inside the connect callback. */
    pxc_reset(&k);
    k.close_in_cb = true;
    assert_int_equal(g_drv->d->connect(&loop, &g_target, pxc_on_connect, &k), 0);
    pxc_wait(&loop, &k);
    pxc_check_ok(&k);
    pxc_reset(&k);

    /* Closed while a long statement runs: the statement is abandoned (its callback never
     * comes) and the connection's handles close at once, without waiting for it. */
    c = connect_ok(&loop);
    mkxid(&x, "busy", 2, g_drv->bqual);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);
    assert_int_equal(g_drv->d->exec(c, &long_stmt, 1, on_never, NULL), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    t0 = uv_hrtime();
    pxc_finish(&loop, g_drv->d, &c, 1);
    assert_true(uv_hrtime() - t0 < 1000000000ULL);
}

/* An XID that px_xid_set would not build - outside the charset, unterminated - is refused by
 * every call that takes one, at once and without a callback, whether or not the driver builds
 * SQL from it. */
static void test_bad_xid_refused(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c;
    px_xid bad[2];
    const px_driver *d = g_drv->d;
    uv_loop_init(&loop);
    c = connect_ok(&loop);
    memset(bad, 0, sizeof bad);
    strcpy(bad[0].gtrid, "x','y'; DROP TABLE t; --");
    strcpy(bad[0].bqual, g_drv->bqual);
    memset(bad[1].gtrid, 'a', sizeof bad[1].gtrid); /* no terminator */
    strcpy(bad[1].bqual, g_drv->bqual);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(d->begin(c, &bad[i], pxc_on_done, &k), -EINVAL);
        assert_int_equal(d->prepare(c, &bad[i], pxc_on_done, &k), -EINVAL);
        assert_int_equal(d->rollback(c, &bad[i], pxc_on_done, &k), -EINVAL);
        assert_int_equal(d->commit_one_phase(c, &bad[i], pxc_on_done, &k), -EINVAL);
        assert_int_equal(d->commit_prepared(c, &bad[i], pxc_on_done, &k), -EINVAL);
        assert_int_equal(d->rollback_prepared(c, &bad[i], pxc_on_done, &k), -EINVAL);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(k.calls, 0);
    pxc_finish(&loop, d, &c, 1);
}

/* reset reports later, never from inside the call, and the next branch starts from the session
 * connect made, whatever a committed branch changed in it. */
static void test_reset(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c;
    px_xid x[3];
    px_stmt s;
    uv_loop_init(&loop);
    for (int i = 0; i < 3; i++)
        mkxid(&x[i], "reset", i, g_drv->bqual);
    c = connect_ok(&loop);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x[0]);
    if (g_drv->dirty) {
        s = plain(g_drv->dirty, -1);
        assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
    }
    pxc_xid_ok(&loop, g_drv->d->commit_one_phase, c, &x[0]);
    for (int i = 1; i < 3; i++) {
        /* The second time nothing changed the session: reset still reports. */
        pxc_reset(&k);
        assert_int_equal(g_drv->d->reset(c, pxc_on_done, &k), 0);
        assert_int_equal(k.calls, 0);
        pxc_wait(&loop, &k);
        pxc_check_ok(&k);
        pxc_xid_ok(&loop, g_drv->d->begin, c, &x[i]);
        if (g_drv->probe) {
            s = plain(g_drv->probe, 1);
            assert_int_equal(pxc_exec(&loop, c, &s, 1, &k), PX_OK);
            assert_string_equal(k.res[0].cells[0], g_drv->probe_clean);
        }
        pxc_xid_ok(&loop, g_drv->d->rollback, c, &x[i]);
    }
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

/* A text parameter reaches the server as exactly its bytes (len of them: no NUL needed), whatever
 * quotes, placeholders or SQL it holds, and comes back so. */
static void test_parameters_verbatim(void **state)
{
    static const char *const values[] = {
        "it's",
        "O''Brien",
        "\"double\" `back` E'\\x00'",
        "back\\slash\\",
        "semi;colon; ;",
        "'; DROP TABLE ct_item; --",
        "SELECT * FROM ct_item WHERE 1=1 OR ''=''; COMMIT; ROLLBACK PREPARED 'x'",
        "$1 $2 ? :name %s %n",
        "NULL",
        "Z\xc3\xbcrich \xe2\x9c\x93 \xe6\x9d\xb1\xe4\xba\xac",
        "%s%n\\0\\'",
        "\x01\x7f tab\tnewline\ncr\r",
        "",
    };
    enum { N = sizeof values / sizeof values[0] };
    uv_loop_t loop;
    px_call k = {0};
    px_conn *c;
    px_xid x;
    px_param p[N][2], part[] = {{.type = PX_P_TEXT, .text = "abcdef", .len = 3}};
    px_stmt s[N];
    uv_loop_init(&loop);
    c = connect_ok(&loop);
    for (int i = 0; i < N; i++) {
        s[i] = write_stmt(p[i], 700 + i, 1);
        p[i][1] = (px_param){.type = PX_P_TEXT, .text = values[i], .len = strlen(values[i])};
    }
    mkxid(&x, "text", 1, g_drv->bqual);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);
    assert_int_equal(pxc_exec(&loop, c, s, N, &k), PX_OK);
    assert_int_equal(k.nresults, N);
    pxc_xid_ok(&loop, g_drv->d->commit_one_phase, c, &x);

    mkxid(&x, "text", 2, g_drv->bqual);
    pxc_xid_ok(&loop, g_drv->d->begin, c, &x);
    for (int i = 0; i < N; i++) {
        s[0] =
            (px_stmt){.sql = g_drv->echo_text, .params = &p[i][1], .nparams = 1, .expect_rows = 1};
        assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_OK);
        assert_string_equal(k.res[0].cells[0], values[i]);
        if (g_drv->read_text)
            assert_read_back(&loop, c, 700 + i, values[i]);
    }
    s[0] = (px_stmt){.sql = g_drv->echo_text, .params = part, .nparams = 1, .expect_rows = 1};
    assert_int_equal(pxc_exec(&loop, c, s, 1, &k), PX_OK);
    assert_string_equal(k.res[0].cells[0], "abc");
    pxc_xid_ok(&loop, g_drv->d->rollback, c, &x);
    if (g_drv->stored_hex)
        assert_stored_hex(values, N);
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

/* ---- many branches in flight: 8 connections, each runs its branches back to back ---- */

#define BRANCHES 200
#define CONNS 8
#define MANY_BASE 10000

typedef struct fleet fleet;

typedef struct worker {
    fleet *fl;
    px_conn *c;
    int step, seq, completed;
    px_param p[2];
    px_stmt s;
} worker;

struct fleet {
    int next, completed, errors;
    char first_error[300];
    px_xid x[BRANCHES];
    int64_t ids[BRANCHES];
    worker w[CONNS];
};

static void worker_next(worker *w);

static void worker_fail(worker *w, const px_error *err)
{
    if (w->fl->errors++ == 0)
        snprintf(w->fl->first_error, sizeof w->fl->first_error, "step %d of %d: %s", w->step,
                 w->seq, err ? err->message : "refused");
    w->fl->completed++; /* so the test ends; counted as an error */
}

static void worker_done(px_conn *c, const px_error *err, void *arg)
{
    worker *w = arg;
    if (err)
        return worker_fail(w, err);
    if (++w->step == 4) {
        w->fl->completed++;
        w->completed++;
        w->step = 0;
    }
    worker_next(w);
}

static void worker_exec(px_conn *c, const px_error *err, int failed_index, const px_result *results,
                        int nresults, void *arg)
{
    worker_done(c, err, arg);
}

/* begin, write, prepare, commit prepared: each step starts from the previous one's callback. */
static void worker_next(worker *w)
{
    fleet *fl = w->fl;
    int rc = 0;
    switch (w->step) {
    case 0:
        if (fl->next == BRANCHES)
            return;
        w->seq = fl->next++;
        rc = g_drv->d->begin(w->c, &fl->x[w->seq], worker_done, w);
        break;
    case 1:
        w->s = write_stmt(w->p, fl->ids[w->seq], 1);
        rc = g_drv->d->exec(w->c, &w->s, 1, worker_exec, w);
        break;
    case 2:
        rc = g_drv->d->prepare(w->c, &fl->x[w->seq], worker_done, w);
        break;
    case 3:
        rc = g_drv->d->commit_prepared(w->c, &fl->x[w->seq], worker_done, w);
        break;
    }
    if (rc != 0)
        worker_fail(w, NULL);
}

static void test_many_branches(void **state)
{
    uv_loop_t loop;
    px_call k = {0};
    fleet *fl = calloc(1, sizeof *fl);
    px_conn *c[CONNS];
    char prefix[64];
    uv_loop_init(&loop);
    for (int i = 0; i < BRANCHES; i++) {
        mkxid(&fl->x[i], "many", i, g_drv->bqual);
        fl->ids[i] = MANY_BASE + i;
    }
    for (int i = 0; i < CONNS; i++) {
        c[i] = connect_ok(&loop);
        fl->w[i] = (worker){.fl = fl, .c = c[i]};
    }
    for (int i = 0; i < CONNS; i++)
        worker_next(&fl->w[i]);
    tu_run_until_count(&loop, &fl->completed, BRANCHES, 60000);
    if (fl->errors)
        fail_msg("%d branches failed, first: %s", fl->errors, fl->first_error);
    assert_int_equal(count_committed(fl->x, fl->ids, BRANCHES), BRANCHES);
    for (int i = 0; i < CONNS; i++)
        assert_true(fl->w[i].completed > 0); /* the branches were in flight together */
    mkprefix(prefix, sizeof prefix, "many");
    assert_int_equal(pxc_recover_ok(&loop, c[0], prefix, g_drv->bqual, &k), 0);
    free(fl);
    pxc_finish(&loop, g_drv->d, c, CONNS);
}

/* ---------------------------------------------------------------- the run */

int contract_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Branches of earlier runs (gtrid prefix "xa1.ct") that a crash left prepared hold locks that
 * would block the setup: rolled back first, through the driver. */
static void roll_back_leftovers(void)
{
    const char *bquals[] = {g_drv->bqual, g_drv->bqual_other};
    uv_loop_t loop;
    px_call k = {0};
    px_xid xids[PXC_MAX_XIDS];
    px_conn *c;
    size_t n;
    uv_loop_init(&loop);
    c = connect_ok(&loop);
    for (int b = 0; b < 2; b++) {
        n = pxc_recover_ok(&loop, c, "xa1.ct", bquals[b], &k);
        memcpy(xids, k.xids, n * sizeof *xids);
        for (size_t i = 0; i < n; i++)
            pxc_xid(&loop, g_drv->d->rollback_prepared, c, &xids[i], &k);
    }
    pxc_reset(&k);
    pxc_finish(&loop, g_drv->d, &c, 1);
}

static int group_setup(void **state)
{
    g_drv->target(&g_target);
    roll_back_leftovers();
    if (g_drv->setup)
        g_drv->setup();
    return 0;
}

int contract_run(const contract_driver *drv)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_exec),
        cmocka_unit_test(test_prepare_commit_elsewhere),
        cmocka_unit_test(test_rollback_prepared_elsewhere),
        cmocka_unit_test(test_one_phase_and_rollback),
        cmocka_unit_test(test_recover_filters),
        cmocka_unit_test(test_error_classes),
        cmocka_unit_test(test_unreachable_is_retryable),
        cmocka_unit_test(test_async_rules),
        cmocka_unit_test(test_bad_xid_refused),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_parameters_verbatim),
        cmocka_unit_test(test_many_branches),
    };
    char group[64];
    g_drv = drv;
    snprintf(g_prefix, sizeof g_prefix, "xa1.ct%d.", (int)getpid());
    snprintf(group, sizeof group, "contract/%s", drv->name);
    return _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], group_setup, NULL);
}
