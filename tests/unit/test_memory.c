/*
 * The in-memory participant driver (participants/memory.c): first the driver contract
 * (tests/support/contract.c, group contract/memory), then what is the memory driver's own: branch
 * state rules, outcomes and their bounded memory, statistics, injected faults and lost replies, a
 * server that is down, latency, the statement language, and closing with an operation in flight.
 */
#include "contract.h"
#include "memory.h"

#include <stdlib.h>
#include <string.h>

typedef int (*done_fn)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);

/* One test's loop and everything its callbacks recorded. */
typedef struct fx {
    uv_loop_t loop;
    px_target t;
    const px_driver *d;
    px_conn *conn;
    int calls;
    px_errclass cls;
    bool broken;
    char msg[256];
    char sqlstate[6];
    int failed_index, nresults;
    int64_t rows[8];
    int ncols;
    px_coltype types[8];
    char cells[8][32];
    bool null[8];
    char colname[32];
    px_xid xids[16];
    size_t nxids;
    bool close_in_cb;
} fx;

static void record(fx *f, const px_error *err)
{
    f->calls++;
    f->cls = err ? err->cls : PX_OK;
    f->broken = err ? err->conn_broken : false;
    snprintf(f->msg, sizeof f->msg, "%s", err ? err->message : "");
    snprintf(f->sqlstate, sizeof f->sqlstate, "%s", err ? err->sqlstate : "");
}

static void on_conn(px_conn *c, const px_error *err, void *arg)
{
    fx *f = arg;
    f->conn = c;
    record(f, err);
}

static void on_done(px_conn *c, const px_error *err, void *arg)
{
    fx *f = arg;
    record(f, err);
    if (f->close_in_cb)
        f->d->close(c);
}

static void on_exec(px_conn *c, const px_error *err, int failed_index, const px_result *res, int n,
                    void *arg)
{
    fx *f = arg;
    record(f, err);
    f->failed_index = failed_index;
    f->nresults = n;
    for (int i = 0; i < n && i < 8; i++)
        f->rows[i] = res[i].rows_affected;
    f->ncols = n > 0 ? res[0].ncols : 0;
    for (int i = 0; i < f->ncols && i < 8 && res[0].nrows == 1; i++) {
        f->types[i] = res[0].coltypes[i];
        f->null[i] = res[0].cells[i] == NULL;
        snprintf(f->cells[i], sizeof f->cells[i], "%s", res[0].cells[i] ? res[0].cells[i] : "");
        snprintf(f->colname, sizeof f->colname, "%s", res[0].colnames[i]);
    }
}

static void on_recover(px_conn *c, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    fx *f = arg;
    record(f, err);
    f->nxids = n < 16 ? n : 16;
    if (f->nxids)
        memcpy(f->xids, xids, f->nxids * sizeof *xids);
}

static px_errclass try_connect(fx *f)
{
    int want = f->calls + 1;
    f->conn = NULL;
    assert_int_equal(f->d->connect(&f->loop, &f->t, on_conn, f), 0);
    tu_run_until_count(&f->loop, &f->calls, want, 2000);
    return f->cls;
}

static px_conn *connect_ok(fx *f)
{
    assert_int_equal(try_connect(f), PX_OK);
    assert_non_null(f->conn);
    return f->conn;
}

static px_errclass run_done(fx *f, done_fn fn, px_conn *c, const px_xid *x)
{
    int want = f->calls + 1;
    assert_int_equal(fn(c, x, on_done, f), 0);
    tu_run_until_count(&f->loop, &f->calls, want, 2000);
    return f->cls;
}

static px_errclass run_exec(fx *f, px_conn *c, const px_stmt *s, int n)
{
    int want = f->calls + 1;
    assert_int_equal(f->d->exec(c, s, n, on_exec, f), 0);
    tu_run_until_count(&f->loop, &f->calls, want, 2000);
    return f->cls;
}

static px_errclass run_recover(fx *f, px_conn *c, const char *prefix, const char *bqual)
{
    int want = f->calls + 1;
    assert_int_equal(f->d->recover(c, prefix, bqual, on_recover, f), 0);
    tu_run_until_count(&f->loop, &f->calls, want, 2000);
    return f->cls;
}

static px_xid xid(const char *gtrid, const char *bqual)
{
    px_xid x;
    assert_int_equal(px_xid_set(&x, gtrid, bqual), 0);
    return x;
}

static void count_handle(uv_handle_t *h, void *arg)
{
    ++*(int *)arg;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    f->t.name = "mem";
    f->t.driver = "memory";
    f->d = px_driver_find("memory");
    *state = f;
    return f->d == &px_memory_driver ? 0 : -1;
}

/* Every connection the test closed must have released its handles: nothing is left for
 * tu_loop_close to close on the test's behalf. */
static int teardown(void **state)
{
    fx *f = *state;
    int handles = 0;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_walk(&f->loop, count_handle, &handles);
    assert_int_equal(handles, 0);
    tu_loop_close(&f->loop);
    px_memory_reset();
    free(f);
    return 0;
}

static void test_two_phase_commit(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.1.1", "mem");
    px_stmt st[2] = {{"rows 3", NULL, 0, 3, false}, {"UPDATE t SET a = 1", NULL, 0, -1, false}};
    px_memory_stats ms;
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(run_exec(f, c, st, 2), PX_OK);
    assert_int_equal(f->nresults, 2);
    assert_int_equal(f->rows[0], 3);
    assert_int_equal(f->rows[1], 1);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_NONE);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_OK);
    assert_true(px_memory_is_prepared("mem", &x));
    assert_int_equal(px_memory_prepared_count("mem"), 1);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_OK);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_prepared_count("mem"), 0);

    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.connects, 1);
    assert_int_equal(ms.begun, 1);
    assert_int_equal(ms.executed, 2);
    assert_int_equal(ms.prepared, 1);
    assert_int_equal(ms.committed, 1);
    assert_int_equal(ms.connections, 1);
    f->d->close(c);
    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.connections, 0);
    assert_int_equal(ms.rolled_back, 0);
}

/* The callback never runs inside the starting call, and a zero-latency op completes on the very
 * next loop iteration. */
static void test_completes_next_iteration(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.1.2", "mem");
    px_conn *c = connect_ok(f);
    int before = f->calls;

    assert_int_equal(f->d->begin(c, &x, on_done, f), 0);
    assert_int_equal(f->calls, before);
    assert_int_equal(f->d->rollback(c, &x, on_done, f), -EBUSY);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->calls, before + 1);
    assert_int_equal(f->cls, PX_OK);
    f->d->close(c);
}

static void test_state_rules(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.1.3", "mem"), y = xid("xa1.c1.1.4", "mem");
    px_stmt st = {"rows 1", NULL, 0, -1, false};
    px_conn *c = connect_ok(f);

    assert_int_equal(run_exec(f, c, &st, 1), PX_FATAL);
    assert_int_equal(f->failed_index, 0);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_FATAL);
    assert_int_equal(run_done(f, f->d->commit_one_phase, c, &x), PX_FATAL);
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(run_done(f, f->d->begin, c, &y), PX_FATAL);
    assert_int_equal(run_done(f, f->d->prepare, c, &y), PX_FATAL); /* not the open branch */
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_OK);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_FATAL); /* prepare twice */
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_FATAL);   /* xid in use */
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &y), PX_XID_NOT_FOUND);
    assert_string_equal(f->sqlstate, "42704");
    assert_int_equal(run_done(f, f->d->rollback_prepared, c, &y), PX_XID_NOT_FOUND);
    assert_int_equal(run_done(f, f->d->rollback_prepared, c, &x), PX_OK);
    assert_int_equal(run_done(f, f->d->rollback_prepared, c, &x), PX_XID_NOT_FOUND);
    assert_int_equal(run_done(f, f->d->rollback, c, &x), PX_OK); /* nothing open: no-op */
    f->d->close(c);
}

static void test_outcomes(void **state)
{
    fx *f = *state;
    px_xid a = xid("xa1.c1.2.1", "mem"), b = xid("xa1.c1.2.2", "mem"), n = xid("xa1.c1.2.9", "mem");
    px_memory_stats ms;
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &a), PX_OK);
    assert_int_equal(run_done(f, f->d->commit_one_phase, c, &a), PX_OK);
    assert_int_equal(run_done(f, f->d->begin, c, &b), PX_OK);
    assert_int_equal(run_done(f, f->d->rollback, c, &b), PX_OK);
    assert_int_equal(px_memory_outcome("mem", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("mem", &b), PX_MEM_ROLLED_BACK);
    assert_int_equal(px_memory_outcome("mem", &n), PX_MEM_NONE);
    assert_int_equal(px_memory_outcome("nosuchserver", &n), PX_MEM_NONE);
    /* A finished XID may be used again, as on MySQL. */
    assert_int_equal(run_done(f, f->d->begin, c, &a), PX_OK);
    assert_int_equal(run_done(f, f->d->prepare, c, &a), PX_OK);
    assert_int_equal(px_memory_outcome("mem", &a), PX_MEM_PREPARED);
    assert_int_equal(run_done(f, f->d->rollback_prepared, c, &a), PX_OK);
    assert_int_equal(px_memory_outcome("mem", &a), PX_MEM_ROLLED_BACK);
    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.committed_one_phase, 1);
    assert_int_equal(ms.rolled_back, 1);
    assert_int_equal(ms.rolled_back_prepared, 1);
    f->d->close(c);
}

/* A branch planted under the XID of a branch open on a connection: prepare refuses, the open
 * branch is rolled back, and the planted one stays prepared. */
static void test_planted_xid_collision(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.2.5", "mem");
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(px_memory_add_prepared("mem", &x), 0);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_FATAL);
    assert_true(px_memory_is_prepared("mem", &x));
    assert_int_equal(px_memory_prepared_count("mem"), 1);
    assert_int_equal(run_done(f, f->d->rollback, c, &x), PX_OK); /* already rolled back */
    assert_int_equal(run_done(f, f->d->rollback_prepared, c, &x), PX_OK);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_ROLLED_BACK);
    assert_int_equal(px_memory_prepared_count("mem"), 0);
    f->d->close(c);
}

/* Chained commits of planted branches: each is issued from the previous one's callback. */
struct chain {
    fx *f;
    int next, total, done;
};

static void chain_step(px_conn *c, const px_error *err, void *arg)
{
    struct chain *ch = arg;
    char g[32];
    px_xid x;
    assert_null(err);
    if (ch->next == ch->total) {
        ch->done = 1;
        return;
    }
    snprintf(g, sizeof g, "xa1.c1.9.%d", ch->next++);
    x = xid(g, "mem");
    assert_int_equal(ch->f->d->commit_prepared(c, &x, chain_step, ch), 0);
}

static void test_outcome_memory_is_bounded(void **state)
{
    fx *f = *state;
    struct chain ch = {f, 0, PX_MEMORY_OUTCOMES_MAX + 10, 0};
    px_xid first = xid("xa1.c1.9.0", "mem"), last;
    char g[32];
    px_conn *c = connect_ok(f);

    for (int i = 0; i < ch.total; i++) {
        snprintf(g, sizeof g, "xa1.c1.9.%d", i);
        last = xid(g, "mem");
        assert_int_equal(px_memory_add_prepared("mem", &last), 0);
    }
    assert_int_equal(px_memory_add_prepared("mem", &last), -EEXIST);
    assert_int_equal(px_memory_prepared_count("mem"), ch.total);
    chain_step(c, NULL, &ch);
    tu_run_until_count(&f->loop, &ch.done, 1, 30000);
    assert_int_equal(px_memory_prepared_count("mem"), 0);
    assert_int_equal(px_memory_outcome("mem", &first), PX_MEM_NONE); /* forgotten */
    assert_int_equal(px_memory_outcome("mem", &last), PX_MEM_COMMITTED);
    f->d->close(c);
}

static void test_close_rolls_back_open_branch(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.3.2", "mem");
    px_memory_stats ms;
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    f->d->close(c);
    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.rolled_back, 1);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_ROLLED_BACK);
}

static void test_injected_faults(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.5.1", "mem");
    px_stmt st = {"rows 1", NULL, 0, -1, false};
    px_memory_stats ms;
    px_conn *c;

    px_memory_fail("mem", PX_MEM_CONNECT, PX_RETRYABLE, 1);
    assert_int_equal(try_connect(f), PX_RETRYABLE);
    assert_null(f->conn);
    c = connect_ok(f);

    px_memory_fail("mem", PX_MEM_BEGIN, PX_RETRYABLE, 2);
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_RETRYABLE);
    assert_non_null(strstr(f->msg, "begin"));
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_RETRYABLE);
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);

    px_memory_fail("mem", PX_MEM_EXEC, PX_BUSINESS, 1);
    assert_int_equal(run_exec(f, c, &st, 1), PX_BUSINESS);
    assert_int_equal(f->failed_index, 0);
    assert_int_equal(f->nresults, 0);
    assert_int_equal(run_exec(f, c, &st, 1), PX_OK);

    /* A failed prepare rolls the branch back, as real servers do. */
    px_memory_fail("mem", PX_MEM_PREPARE, PX_FATAL, 1);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_FATAL);
    assert_false(px_memory_is_prepared("mem", &x));
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_ROLLED_BACK);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(run_done(f, f->d->prepare, c, &x), PX_OK);
    px_memory_fail("mem", PX_MEM_COMMIT_PREPARED, PX_XID_NOT_FOUND, 1);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_XID_NOT_FOUND);
    assert_true(px_memory_is_prepared("mem", &x)); /* a failure has no effect */
    px_memory_fail("mem", PX_MEM_RECOVER, PX_FATAL, 1);
    assert_int_equal(run_recover(f, c, "xa1.", "mem"), PX_FATAL);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_OK);

    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.connect_failures, 1);
    assert_int_equal(ms.begun, 2);
    f->d->close(c);
}

/* The server acts but the reply is lost: the retry learns the branch is gone. */
static void test_lost_reply(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.5.2", "mem");
    px_conn *c;

    assert_int_equal(px_memory_add_prepared("mem", &x), 0);
    c = connect_ok(f);
    px_memory_lose_reply("mem", PX_MEM_COMMIT_PREPARED, 1);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_RETRYABLE);
    assert_true(f->broken);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_COMMITTED);
    f->d->close(c);
    c = connect_ok(f);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_XID_NOT_FOUND);
    f->d->close(c);
}

static void test_server_down(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.6.1", "mem"), p = xid("xa1.c1.6.2", "mem");
    px_conn *c = connect_ok(f), *c2;

    assert_int_equal(run_done(f, f->d->begin, c, &p), PX_OK);
    assert_int_equal(run_done(f, f->d->prepare, c, &p), PX_OK);
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    px_memory_set_down("mem", true);
    assert_int_equal(try_connect(f), PX_RETRYABLE);
    assert_non_null(strstr(f->msg, "mem"));
    assert_int_equal(run_done(f, f->d->commit_one_phase, c, &x), PX_RETRYABLE);
    assert_true(f->broken);
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_ROLLED_BACK);
    px_memory_set_down("mem", false);
    /* The broken connection stays broken; a new one works and the prepared branch survived. */
    assert_int_equal(run_done(f, f->d->rollback, c, &x), PX_RETRYABLE);
    assert_true(f->broken);
    f->d->close(c);
    c2 = connect_ok(f);
    assert_int_equal(run_done(f, f->d->rollback_prepared, c2, &p), PX_OK);
    f->d->close(c2);
}

static void test_latency_and_sleep(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.7.1", "mem");
    px_stmt st[2] = {{"sleep 60", NULL, 0, 1, false}, {"rows 2", NULL, 0, -1, false}};
    px_conn *c = connect_ok(f);
    uint64_t t0;

    px_memory_set_latency_ms("mem", 40);
    t0 = uv_hrtime();
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_true(uv_hrtime() - t0 >= 39 * 1000000ULL);
    px_memory_set_latency_ms("mem", 0);
    t0 = uv_hrtime();
    assert_int_equal(run_exec(f, c, st, 2), PX_OK);
    assert_true(uv_hrtime() - t0 >= 59 * 1000000ULL);
    assert_int_equal(f->rows[0], 1);
    assert_int_equal(f->rows[1], 2);
    f->d->close(c);
}

static void test_statement_errors_and_expect_rows(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.7.2", "mem");
    px_stmt rows[3] = {{"rows 1", NULL, 0, 1, false},
                       {"rows 2", NULL, 0, 3, false},
                       {"rows 1", NULL, 0, -1, false}};
    const char *kinds[3] = {"error business", "ERROR retryable", "error fatal"};
    const px_errclass want[3] = {PX_BUSINESS, PX_RETRYABLE, PX_FATAL};
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(run_exec(f, c, rows, 3), PX_BUSINESS);
    assert_int_equal(f->failed_index, 1);
    assert_int_equal(f->nresults, 1);
    assert_string_equal(f->msg, "expected 3 rows, got 2");
    for (int i = 0; i < 3; i++) {
        px_stmt st[2] = {{"rows 1", NULL, 0, -1, false}, {kinds[i], NULL, 0, -1, false}};
        assert_int_equal(run_exec(f, c, st, 2), want[i]);
        assert_int_equal(f->failed_index, 1);
        assert_string_equal(f->sqlstate, "XX000");
        assert_non_null(strstr(f->msg, px_errclass_name(want[i])));
    }
    f->d->close(c);
}

static void test_echo_typing(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.7.3", "mem");
    px_param p[5] = {{.type = PX_P_INT, .i = -42},
                     {.type = PX_P_REAL, .r = 2.5},
                     {.type = PX_P_BOOL, .b = true},
                     {.type = PX_P_TEXT, .text = "abcdef", .len = 3},
                     {.type = PX_P_NULL}};
    px_stmt st = {"echo", p, 5, 1, false};
    px_conn *c = connect_ok(f);

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    assert_int_equal(run_exec(f, c, &st, 1), PX_OK);
    assert_int_equal(f->rows[0], 1);
    assert_int_equal(f->ncols, 5);
    assert_string_equal(f->colname, "value");
    assert_int_equal(f->types[0], PX_COL_INT);
    assert_string_equal(f->cells[0], "-42");
    assert_int_equal(f->types[1], PX_COL_REAL);
    assert_string_equal(f->cells[1], "2.5");
    assert_int_equal(f->types[2], PX_COL_BOOL);
    assert_string_equal(f->cells[2], "t");
    assert_int_equal(f->types[3], PX_COL_TEXT);
    assert_string_equal(f->cells[3], "abc");
    assert_true(f->null[4]);
    assert_false(f->null[3]);
    f->d->close(c);
}

/* close() abandons the op in flight: its callback never runs, and its effect never happens. */
static void test_close_with_op_in_flight(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.8.1", "mem");
    px_stmt st = {"echo", (px_param[]){{.type = PX_P_INT, .i = 1}}, 1, -1, false};
    px_conn *c = connect_ok(f);
    int before;

    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    before = f->calls;
    assert_int_equal(f->d->prepare(c, &x, on_done, f), 0);
    f->d->close(c);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->calls, before);
    assert_false(px_memory_is_prepared("mem", &x));
    assert_int_equal(px_memory_outcome("mem", &x), PX_MEM_ROLLED_BACK);

    /* The same with a timer in flight and an exec holding results. */
    c = connect_ok(f);
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    px_memory_set_latency_ms("mem", 20);
    before = f->calls;
    assert_int_equal(f->d->exec(c, &st, 1, on_exec, f), 0);
    f->d->close(c);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* returns once nothing is active: the timer was stopped */
    assert_int_equal(f->calls, before);
}

static void test_close_inside_callback(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.8.2", "mem");
    px_memory_stats ms;
    px_conn *c = connect_ok(f);

    f->close_in_cb = true;
    assert_int_equal(run_done(f, f->d->begin, c, &x), PX_OK);
    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.connections, 0);
    assert_int_equal(ms.rolled_back, 1);
}

/* reset while a connection is open: the connection keeps its detached server until it closes. */
static void test_reset_with_open_connection(void **state)
{
    fx *f = *state;
    px_xid x = xid("xa1.c1.8.3", "mem");
    px_memory_stats ms;
    px_conn *c = connect_ok(f);

    assert_int_equal(px_memory_add_prepared("mem", &x), 0);
    px_memory_reset();
    assert_int_equal(px_memory_prepared_count("mem"), 0);
    assert_int_equal(run_done(f, f->d->commit_prepared, c, &x), PX_OK); /* the old server */
    f->d->close(c);
    px_memory_stats_get("mem", &ms);
    assert_int_equal(ms.connects, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_phase_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completes_next_iteration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_planted_xid_collision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_memory_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_rolls_back_open_branch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_injected_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_latency_and_sleep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_errors_and_expect_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo_typing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_op_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_with_open_connection, setup, teardown),
    };
    int failed = contract_run(&contract_memory);
    px_memory_reset();
    return failed + cmocka_run_group_tests(tests, NULL, NULL);
}
