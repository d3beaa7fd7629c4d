/*
 * The connection pool (participants/pool.c), over the in-memory driver: the size limit under load,
 * FIFO order, release and discard, down / fail fast / recovery with backoff, cancel and close, and
 * a connection handed back twice.
 */
#include "testutil.h"

#include "memory.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>

#define NREQ 200

typedef struct fx fx;

/* One acquire request and what its callback saw. */
typedef struct waiter {
    px_pool_req req;
    fx *f;
    int id;
    px_conn *conn;
    px_errclass cls;
    char msg[256];
    int calls;
} waiter;

struct fx {
    uv_loop_t loop;
    px_target t;
    px_pool *pool;
    waiter w[NREQ];
    int order[NREQ]; /* ids in the order their callbacks ran */
    int norder;
    int lent, max_lent, done, max_open;
    bool closed;
    px_xid xid;
};

static void on_acquire(px_pool_req *req, px_conn *conn, const px_error *err)
{
    waiter *w = req->data;
    fx *f = w->f;
    px_pool_stats st;
    w->calls++;
    w->conn = conn;
    w->cls = err ? err->cls : PX_OK;
    snprintf(w->msg, sizeof w->msg, "%s", err ? err->message : "");
    assert_true((conn == NULL) == (err != NULL));
    f->order[f->norder++] = w->id;
    px_pool_get_stats(f->pool, &st);
    if (st.open > f->max_open)
        f->max_open = st.open;
}

static int acquire(fx *f, int i)
{
    waiter *w = &f->w[i];
    w->f = f;
    w->id = i;
    w->req.data = w;
    return px_pool_acquire(f->pool, &w->req, on_acquire);
}

static void on_closed(void *arg)
{
    ((fx *)arg)->closed = true;
}

static void close_pool(fx *f)
{
    px_pool_close(f->pool, on_closed, f);
    tu_run_until(&f->loop, &f->closed, 2000);
}

static void count_handle(uv_handle_t *h, void *arg)
{
    ++*(int *)arg;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    uv_loop_init(&f->loop);
    f->t.name = "pooled";
    f->t.driver = "memory";
    f->pool = px_pool_new(&f->loop, &f->t, 8);
    *state = f;
    return f->pool ? 0 : -1;
}

/* Each test closes its pool; afterwards no connection and no handle may be left. */
static int teardown(void **state)
{
    fx *f = *state;
    px_memory_stats ms;
    int handles = 0;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_walk(&f->loop, count_handle, &handles);
    assert_int_equal(handles, 0);
    px_memory_stats_get("pooled", &ms);
    assert_int_equal(ms.connections, 0);
    tu_loop_close(&f->loop);
    px_memory_reset();
    free(f);
    return 0;
}

/* A released connection is idle again only once its reset completed (a driver operation). */
static void settle_resets(fx *f)
{
    px_pool_stats st;
    px_pool_get_stats(f->pool, &st);
    for (int i = 0; i < 1000 && st.busy > 0; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
        px_pool_get_stats(f->pool, &st);
    }
}

/* A pool of the given size replacing the default one. */
static void resize(fx *f, int size)
{
    close_pool(f);
    f->closed = false;
    f->pool = px_pool_new(&f->loop, &f->t, size);
    assert_non_null(f->pool);
}

/* ---- 200 concurrent users of 8 connections: each holds its connection for two round trips ---- */

static void on_rolled_back(px_conn *c, const px_error *err, void *arg)
{
    waiter *w = arg;
    assert_null(err);
    w->f->lent--;
    w->f->done++;
    px_pool_release(w->f->pool, c);
}

static void on_begun(px_conn *c, const px_error *err, void *arg)
{
    waiter *w = arg;
    assert_null(err);
    assert_int_equal(px_pool_driver(w->f->pool)->rollback(c, &w->f->xid, on_rolled_back, w), 0);
}

static void on_acquire_work(px_pool_req *req, px_conn *conn, const px_error *err)
{
    waiter *w = req->data;
    fx *f = w->f;
    on_acquire(req, conn, err);
    assert_non_null(conn);
    if (++f->lent > f->max_lent)
        f->max_lent = f->lent;
    assert_int_equal(px_pool_driver(f->pool)->begin(conn, &f->xid, on_begun, w), 0);
}

static void test_limit_under_load(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    px_memory_stats ms;

    assert_int_equal(px_xid_set(&f->xid, "xa1.c1.1.1", "pooled"), 0);
    px_memory_set_latency_ms("pooled", 1);
    for (int i = 0; i < NREQ; i++) {
        f->w[i] = (waiter){.f = f, .id = i, .req.data = &f->w[i]};
        assert_int_equal(px_pool_acquire(f->pool, &f->w[i].req, on_acquire_work), 0);
    }
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.waiting, NREQ);
    tu_run_until_count(&f->loop, &f->done, NREQ, 10000);
    assert_int_equal(f->max_lent, 8);
    assert_true(f->max_open <= 8);
    for (int i = 0; i < NREQ; i++)
        assert_int_equal(f->w[i].calls, 1);
    settle_resets(f);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.connects, 8);
    assert_int_equal(st.idle, 8);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.waiting, 0);
    px_memory_stats_get("pooled", &ms);
    assert_int_equal(ms.connections, 8);
    assert_int_equal(ms.begun, NREQ);
    close_pool(f);
}

/* ---- order, hand-over, discard ---- */

static void test_fifo_and_release_hands_over(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    px_conn *first;

    resize(f, 1);
    assert_int_equal(acquire(f, 0), 0);
    assert_int_equal(f->w[0].calls, 0); /* never inside acquire */
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    first = f->w[0].conn;
    assert_non_null(first);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(acquire(f, i), 0);
    assert_int_equal(acquire(f, 1), -EBUSY); /* already queued */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.waiting, 4);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.open, 1);
    for (int i = 1; i <= 4; i++) {
        px_pool_release(f->pool, f->w[i - 1].conn);
        assert_int_equal(f->w[i].calls, 0);
        tu_run_until_count(&f->loop, &f->w[i].calls, 1, 2000);
        assert_ptr_equal(f->w[i].conn, first); /* the released connection itself */
    }
    for (int i = 0; i <= 4; i++)
        assert_int_equal(f->order[i], i);
    px_pool_release(f->pool, f->w[4].conn);
    settle_resets(f);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.idle, 1);
    close_pool(f);
}

/* Warming opens connections ahead of demand, never beyond the limit. */
static void test_warm(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    px_pool_warm(f->pool, 3);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.idle, 3);
    assert_int_equal(st.open, 3);
    px_pool_warm(f->pool, 100);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.open, 8);
    assert_int_equal(st.idle, 8);
    assert_int_equal(st.connects, 8);
    close_pool(f);
}

static void test_idle_connection_is_reused(void **state)
{
    fx *f = *state;
    px_pool_stats st;

    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    px_pool_release(f->pool, f->w[0].conn);
    settle_resets(f);
    assert_int_equal(acquire(f, 1), 0);
    assert_int_equal(f->w[1].calls, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* an idle connection is lent on the next turn */
    assert_int_equal(f->w[1].calls, 1);
    assert_ptr_equal(f->w[1].conn, f->w[0].conn);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.connects, 1);
    px_pool_release(f->pool, f->w[1].conn);
    close_pool(f);
}

static void test_discard_frees_slot(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    px_memory_stats ms;

    resize(f, 1);
    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    assert_int_equal(acquire(f, 1), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->w[1].calls, 0);
    px_pool_discard(f->pool, f->w[0].conn);
    tu_run_until_count(&f->loop, &f->w[1].calls, 1, 2000);
    assert_non_null(f->w[1].conn);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.discards, 1);
    assert_int_equal(st.open, 1);
    px_memory_stats_get("pooled", &ms);
    assert_int_equal(ms.connections, 1);
    px_pool_release(f->pool, f->w[1].conn);
    close_pool(f);
}

static void test_cancel(void **state)
{
    fx *f = *state;

    resize(f, 1);
    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    assert_int_equal(acquire(f, 1), 0);
    assert_int_equal(acquire(f, 2), 0);
    px_pool_cancel(&f->w[1].req);
    px_pool_release(f->pool, f->w[0].conn);
    tu_run_until_count(&f->loop, &f->w[2].calls, 1, 2000);
    assert_int_equal(f->w[1].calls, 0);
    px_pool_cancel(&f->w[2].req); /* already served: no effect */
    assert_int_equal(f->w[2].calls, 1);
    px_pool_release(f->pool, f->w[2].conn);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->w[1].calls, 0);
    close_pool(f);
}

/* ---- down, fail fast, backoff, recovery ---- */

static void on_poll(uv_timer_t *t)
{
    fx *f = t->data;
    px_pool_stats st;
    px_pool_get_stats(f->pool, &st);
    if (st.up) {
        f->done = 1;
        uv_timer_stop(t);
    }
}

static void test_down_fail_fast_and_recover(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    uv_timer_t poll;
    uint64_t t0;

    px_memory_set_down("pooled", true);
    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    assert_int_equal(f->w[0].cls, PX_RETRYABLE);
    assert_non_null(strstr(f->w[0].msg, "pooled"));
    px_pool_get_stats(f->pool, &st);
    assert_false(st.up);
    assert_int_equal(st.connect_failures, 1);
    assert_int_equal(st.open, 0);

    /* While down, acquire fails on the next turn without trying to connect. */
    assert_int_equal(acquire(f, 1), 0);
    assert_int_equal(f->w[1].calls, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->w[1].calls, 1);
    assert_int_equal(f->w[1].cls, PX_RETRYABLE);
    assert_non_null(strstr(f->w[1].msg, "pooled"));

    /* Background retries back off: about 100, 200 ms apart - not a busy loop, not idle. */
    uv_timer_init(&f->loop, &poll);
    poll.data = f;
    t0 = uv_hrtime();
    while (uv_hrtime() - t0 < 400 * 1000000ULL)
        uv_run(&f->loop, UV_RUN_ONCE);
    px_pool_get_stats(f->pool, &st);
    assert_false(st.up);
    assert_in_range(st.connect_failures, 2, 4); /* 1 would mean no retry */

    px_memory_set_down("pooled", false);
    t0 = uv_hrtime();
    uv_timer_start(&poll, on_poll, 5, 5);
    tu_run_until_count(&f->loop, &f->done, 1, 2000);
    assert_true(uv_hrtime() - t0 <= 800 * 1000000ULL); /* the pending backoff is <= 400 ms */
    uv_close((uv_handle_t *)&poll, NULL);
    px_pool_get_stats(f->pool, &st);
    assert_true(st.up);
    assert_int_equal(st.idle, 1); /* the probing connection was kept */

    assert_int_equal(acquire(f, 2), 0);
    tu_run_until_count(&f->loop, &f->w[2].calls, 1, 2000);
    assert_int_equal(f->w[2].cls, PX_OK);
    px_pool_release(f->pool, f->w[2].conn);
    close_pool(f);
}

/* A connect failure fails every waiter, including those queued behind the limit. */
static void test_connect_failure_fails_all_waiters(void **state)
{
    fx *f = *state;
    px_pool_stats st;

    resize(f, 2);
    px_memory_set_latency_ms("pooled", 20);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(f, i), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the connects start */
    px_memory_set_down("pooled", true);
    tu_run_until_count(&f->loop, &f->norder, 3, 2000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->w[i].calls, 1);
        assert_int_equal(f->w[i].cls, PX_RETRYABLE);
    }
    px_pool_get_stats(f->pool, &st);
    assert_false(st.up);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.waiting, 0);
    close_pool(f); /* stops the retry timer */
}

/* ---- close ---- */

static void test_close_with_lent_connections(void **state)
{
    fx *f = *state;
    px_pool_req late = {0};

    resize(f, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(f, i), 0);
    tu_run_until_count(&f->loop, &f->norder, 2, 2000);
    px_pool_close(f->pool, on_closed, f);
    assert_int_equal(f->w[2].calls, 0); /* failed on a later turn */
    assert_true(px_pool_acquire(f->pool, &late, on_acquire) < 0);
    tu_run_until_count(&f->loop, &f->w[2].calls, 1, 2000);
    assert_int_equal(f->w[2].cls, PX_RETRYABLE);
    assert_non_null(strstr(f->w[2].msg, "closing"));
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(f->closed);
    px_pool_release(f->pool, f->w[0].conn);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(f->closed);
    px_pool_discard(f->pool, f->w[1].conn);
    tu_run_until(&f->loop, &f->closed, 2000);
}

static void test_close_idle_pool(void **state)
{
    fx *f = *state;

    for (int i = 0; i < 3; i++)
        assert_int_equal(acquire(f, i), 0);
    tu_run_until_count(&f->loop, &f->norder, 3, 2000);
    for (int i = 0; i < 3; i++)
        px_pool_release(f->pool, f->w[i].conn);
    px_pool_close(f->pool, on_closed, f);
    assert_false(f->closed);
    tu_run_until(&f->loop, &f->closed, 2000);
}

/* Every returned connection is reset before anyone can borrow it again, and one whose reset
 * fails is discarded, never lent (docs/design.md: the session at the start of every transaction).
 */
static void test_release_resets_or_discards(void **state)
{
    fx *f = *state;
    px_pool_stats st;
    px_memory_stats ms;

    resize(f, 1);
    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    px_pool_release(f->pool, f->w[0].conn);
    assert_int_equal(acquire(f, 1), 0);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.idle, 0); /* still being reset */
    assert_int_equal(st.busy, 1);
    tu_run_until_count(&f->loop, &f->w[1].calls, 1, 2000);
    assert_ptr_equal(f->w[1].conn, f->w[0].conn);
    px_memory_stats_get("pooled", &ms);
    assert_int_equal(ms.resets, 1);

    px_memory_fail("pooled", PX_MEM_RESET, PX_FATAL, 1);
    px_pool_release(f->pool, f->w[1].conn);
    assert_int_equal(acquire(f, 2), 0);
    tu_run_until_count(&f->loop, &f->w[2].calls, 1, 2000);
    assert_non_null(f->w[2].conn);
    px_pool_get_stats(f->pool, &st);
    assert_int_equal(st.discards, 1);
    assert_int_equal(st.connects, 2); /* the unclean one was replaced */
    assert_int_equal(st.open, 1);
    px_pool_release(f->pool, f->w[2].conn);
    settle_resets(f);
    close_pool(f);
}

/* ---- handing a connection back twice is fatal (check.h), in a child process ---- */

/* How a child hands w[0]'s connection back a second time. */
typedef struct second_return {
    fx *f;
    bool settle_first; /* after the first one's reset completed */
    bool discard;      /* by px_pool_discard, else px_pool_release */
} second_return;

static void hand_back_twice(void *arg)
{
    const second_return *r = arg;
    px_pool_release(r->f->pool, r->f->w[0].conn);
    if (r->settle_first)
        settle_resets(r->f);
    if (r->discard)
        px_pool_discard(r->f->pool, r->f->w[0].conn);
    else
        px_pool_release(r->f->pool, r->f->w[0].conn);
}

static void release_to_other_pool(void *arg)
{
    fx *f = arg;
    px_pool *other = px_pool_new(&f->loop, &f->t, 1);
    px_pool_release(other, f->w[0].conn);
}

static void test_double_release_is_fatal(void **state)
{
    fx *f = *state;
    px_pool_stats st;

    assert_int_equal(acquire(f, 0), 0);
    tu_run_until_count(&f->loop, &f->w[0].calls, 1, 2000);
    tu_expect_abort(hand_back_twice, &(second_return){f, false, false},
                    "pool pooled: connection 0x", ": resetting -> released", NULL);
    tu_expect_abort(hand_back_twice, &(second_return){f, true, false}, ": idle -> released", NULL);
    tu_expect_abort(hand_back_twice, &(second_return){f, false, true}, ": resetting -> discarded",
                    NULL);
    tu_expect_abort(release_to_other_pool, f, "released but not lent by this pool", NULL);
    px_pool_get_stats(f->pool, &st); /* the children changed nothing here */
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.open, 1);
    px_pool_release(f->pool, f->w[0].conn); /* the first return is fine */
    close_pool(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_limit_under_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_and_release_hands_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_warm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_is_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard_frees_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_fail_fast_and_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_failure_fails_all_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_lent_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_idle_pool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_resets_or_discards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_release_is_fatal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
