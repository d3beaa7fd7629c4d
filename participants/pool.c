/*
 * The bounded connection pool of one participant (see pool.h). Every acquire callback runs from
 * the pool's dispatcher (a uv_idle handle started on demand, so on a later loop turn than the call
 * that queued the request) or from a connect callback; release, discard and close only move
 * connections and wake the dispatcher, so no callback ever runs inside a call of the pool's API.
 *
 * Every connection the pool has is on exactly one list by its state (pooled_state), moved only by
 * pooled_move, which checks the move against the table there: a lent connection is on the lent
 * list, a double release is an impossible move (fatal, check.h), and the gauges are list counts,
 * so open == connecting + idle + lent + resetting holds by construction. open <= size, except
 * after px_pool_resize shrank the pool: then open may exceed size until enough lent connections
 * came back and were closed.
 */
#include "pool.h"

#include "list.h"

#include <stdio.h>
#include <stdlib.h>

#define POOL_BACKOFF_MIN_MS 100u
#define POOL_BACKOFF_MAX_MS 5000u

/* The states of a pooled connection; each but NEW and CLOSED has its list in the pool. */
typedef enum pooled_state {
    POOLED_NEW = 0,    /* allocated, on no list yet */
    POOLED_CONNECTING, /* the driver's connect runs: no px_conn yet */
    POOLED_IDLE,       /* ready to be lent */
    POOLED_LENT,       /* the borrower has it */
    POOLED_RESETTING,  /* returned; its session is being reset before anyone borrows it again */
    POOLED_CLOSED,     /* closed (or never connected): on no list, freed right after */
    POOLED_NSTATES
} pooled_state;

static const char *const pooled_names[POOLED_NSTATES] = {"new",  "connecting", "idle",
                                                         "lent", "resetting",  "closed"};

/* The moves pooled_move allows: forward, plus the two ways back to IDLE and closing from any
 * state that holds a connection (or a connect).
 *   NEW        -> CONNECTING            start_connect
 *   CONNECTING -> IDLE                  connected
 *   CONNECTING -> CLOSED                connect failed, or connected while the pool closes
 *   IDLE       -> LENT                  lend
 *   IDLE       -> CLOSED                flush, shrink, close
 *   LENT       -> RESETTING             release (the driver resets the session)
 *   LENT       -> IDLE                  release, when the driver has no reset
 *   LENT       -> CLOSED                discard, or release while the pool closes
 *   RESETTING  -> IDLE                  the reset succeeded
 *   RESETTING  -> CLOSED                it failed, the pool closes, or it shrank meanwhile */
#define POOLED_TO(s) (1u << (s))
static const unsigned pooled_moves[POOLED_NSTATES] = {
    [POOLED_NEW] = POOLED_TO(POOLED_CONNECTING),
    [POOLED_CONNECTING] = POOLED_TO(POOLED_IDLE) | POOLED_TO(POOLED_CLOSED),
    [POOLED_IDLE] = POOLED_TO(POOLED_LENT) | POOLED_TO(POOLED_CLOSED),
    [POOLED_LENT] = POOLED_TO(POOLED_RESETTING) | POOLED_TO(POOLED_IDLE) | POOLED_TO(POOLED_CLOSED),
    [POOLED_RESETTING] = POOLED_TO(POOLED_IDLE) | POOLED_TO(POOLED_CLOSED),
};

typedef struct pooled {
    list_node node; /* on pool->lists[state] */
    px_pool *pool;
    px_conn *conn; /* NULL while connecting */
    pooled_state state;
} pooled;

struct px_pool {
    uv_loop_t *loop;
    const px_target *target;
    const px_driver *drv;
    int size;
    list_head lists[POOLED_NSTATES]; /* IDLE is a stack: the most recently used is lent first */
    list_head waiters;               /* px_pool_req, FIFO */
    bool up, closing, finishing;
    uv_idle_t dispatch;
    uv_timer_t retry;
    int open_handles;
    unsigned backoff_ms;
    uint64_t rng;
    uint64_t connects, connect_failures, discards;
    char last_error[200];
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void on_dispatch(uv_idle_t *h);
static void on_connect(px_conn *c, const px_error *err, void *arg);

/* ---- connection states ---- */

/* The only place a pooled connection changes state. */
static void pooled_move(px_pool *p, pooled *pc, pooled_state to)
{
    XA_CHECK(pooled_moves[pc->state] & POOLED_TO(to), "pool %s: connection %p: %s -> %s",
             p->target->name, (void *)pc->conn, pooled_names[pc->state], pooled_names[to]);
    if (pc->state != POOLED_NEW)
        list_remove(&p->lists[pc->state], &pc->node);
    pc->state = to;
    if (to != POOLED_CLOSED)
        list_push_head(&p->lists[to], &pc->node);
}

static int count(const px_pool *p, pooled_state s)
{
    return (int)list_count(&p->lists[s]);
}

/* Connections that exist or are being made: what the limit counts. */
static int open_count(const px_pool *p)
{
    return count(p, POOLED_CONNECTING) + count(p, POOLED_IDLE) + count(p, POOLED_LENT) +
           count(p, POOLED_RESETTING);
}

static pooled *first_idle(const px_pool *p)
{
    return list_entry(list_first(&p->lists[POOLED_IDLE]), pooled, node);
}

/* The record of a connection a borrower hands back (how: "released", "discarded"): it must be
 * this pool's and lent, which catches a double release before any list is touched. */
static pooled *lent_one(px_pool *p, px_conn *conn, const char *how)
{
    pooled *pc = px_conn_base(conn)->user;
    XA_CHECK(pc && pc->pool == p && pc->conn == conn,
             "pool %s: connection %p %s but not lent by this pool", p->target->name, (void *)conn,
             how);
    XA_CHECK(pc->state == POOLED_LENT,
             "pool %s: connection %p: %s -> %s (only a lent connection can be handed back)",
             p->target->name, (void *)conn, pooled_names[pc->state], how);
    return pc;
}

/* Closes pc's connection (if it got one) and forgets it. */
static void pooled_close(px_pool *p, pooled *pc)
{
    pooled_move(p, pc, POOLED_CLOSED);
    if (pc->conn)
        p->drv->close(pc->conn);
    free(pc);
}

static void kick(px_pool *p)
{
    if (!p->finishing)
        uv_idle_start(&p->dispatch, on_dispatch);
}

static void on_handle_closed(uv_handle_t *h)
{
    px_pool *p = h->data;
    void (*cb)(void *) = p->close_cb;
    void *arg = p->close_arg;
    if (--p->open_handles > 0)
        return;
    free(p);
    if (cb)
        cb(arg);
}

/* The last step of px_pool_close: once no connection and no waiter is left. */
static void maybe_finish(px_pool *p)
{
    if (!p->closing || p->finishing || open_count(p) > 0 || !list_empty(&p->waiters))
        return;
    p->finishing = true;
    uv_close((uv_handle_t *)&p->dispatch, on_handle_closed);
    uv_close((uv_handle_t *)&p->retry, on_handle_closed);
}

/* Closes a connection whose slot becomes free; discarded: it broke or its state is unknown. */
static void drop(px_pool *p, pooled *pc, bool discarded)
{
    if (discarded)
        p->discards++;
    pooled_close(p, pc);
    if (!list_empty(&p->waiters))
        kick(p);
    maybe_finish(p);
}

/* ---- waiters ---- */

static px_pool_req *first_waiter(const px_pool *p)
{
    return list_entry(list_first(&p->waiters), px_pool_req, node);
}

static void lend(px_pool *p, px_pool_req *r, pooled *pc)
{
    list_remove(&p->waiters, &r->node);
    pooled_move(p, pc, POOLED_LENT);
    r->cb(r, pc->conn, NULL);
}

static void refuse(px_pool *p, px_pool_req *r)
{
    px_error err;
    list_remove(&p->waiters, &r->node);
    if (p->closing)
        px_error_set(&err, PX_RETRYABLE, false, 0, "", "participant %s: pool closing",
                     p->target->name);
    else
        px_error_set(&err, PX_RETRYABLE, false, 0, "", "participant %s is down: %s",
                     p->target->name, p->last_error);
    r->cb(r, NULL, &err);
}

/* ---- connecting and backoff ---- */

/* xorshift64: jitter needs no quality, only a per-pool source without global state. */
static unsigned jitter(px_pool *p, unsigned ms)
{
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return ms - (unsigned)(p->rng % (ms / 4 + 1)); /* 75% to 100%: retries of pools spread out */
}

static void start_connect(px_pool *p);

static void on_retry(uv_timer_t *t)
{
    px_pool *p = t->data;
    if (open_count(p) < p->size)
        start_connect(p);
    else /* every slot is lent or connecting: probe again later */
        uv_timer_start(&p->retry, on_retry, jitter(p, p->backoff_ms), 0);
}

static void connect_failed(px_pool *p, const px_error *err)
{
    p->up = false;
    p->connect_failures++;
    snprintf(p->last_error, sizeof p->last_error, "%.150s", err->message);
    if (!p->closing && !uv_is_active((uv_handle_t *)&p->retry)) {
        uv_timer_start(&p->retry, on_retry, jitter(p, p->backoff_ms), 0);
        p->backoff_ms *= 2;
        if (p->backoff_ms > POOL_BACKOFF_MAX_MS)
            p->backoff_ms = POOL_BACKOFF_MAX_MS;
    }
    kick(p); /* the dispatcher fails every waiter */
}

static void start_connect(px_pool *p)
{
    pooled *pc = calloc(1, sizeof *pc);
    px_error err;
    int rc;
    if (!pc) {
        px_error_set(&err, PX_RETRYABLE, false, 0, "", "connect could not start: out of memory");
        connect_failed(p, &err);
        return;
    }
    pc->pool = p;
    pooled_move(p, pc, POOLED_CONNECTING);
    rc = p->drv->connect(p->loop, p->target, on_connect, pc);
    if (rc < 0) {
        pooled_close(p, pc);
        px_error_set(&err, PX_RETRYABLE, false, 0, "", "connect could not start (%d)", rc);
        connect_failed(p, &err);
    }
}

static void on_connect(px_conn *c, const px_error *err, void *arg)
{
    pooled *pc = arg;
    px_pool *p = pc->pool;
    if (!c) {
        pooled_close(p, pc);
        connect_failed(p, err);
        maybe_finish(p);
        return;
    }
    pc->conn = c;
    px_conn_base(c)->user = pc;
    p->connects++;
    if (p->closing) {
        pooled_close(p, pc);
        maybe_finish(p);
        return;
    }
    p->up = true;
    p->backoff_ms = POOL_BACKOFF_MIN_MS;
    uv_timer_stop(&p->retry);
    pooled_move(p, pc, POOLED_IDLE);
    on_dispatch(&p->dispatch);
}

/* ---- the dispatcher ---- */

/* Serves the waiters that were queued when it started (a callback that acquires again waits for
 * the next turn, so a down pool cannot spin here), then starts connects for those still waiting. */
static void on_dispatch(uv_idle_t *h)
{
    px_pool *p = h->data;
    size_t budget = list_count(&p->waiters);
    uv_idle_stop(h);
    for (; budget > 0 && !list_empty(&p->waiters); budget--) {
        if (p->closing || !p->up)
            refuse(p, first_waiter(p));
        else if (!list_empty(&p->lists[POOLED_IDLE]))
            lend(p, first_waiter(p), first_idle(p));
        else
            break;
    }
    while (p->up && !p->closing && (int)list_count(&p->waiters) > count(p, POOLED_CONNECTING) &&
           open_count(p) < p->size)
        start_connect(p);
    maybe_finish(p);
}

/* ---- API ---- */

px_pool *px_pool_new(uv_loop_t *loop, const px_target *target, int size)
{
    const px_driver *drv = target ? px_driver_find(target->driver) : NULL;
    px_pool *p;
    if (!loop || !drv || !target->name || size < 1 || !(p = calloc(1, sizeof *p)))
        return NULL;
    p->loop = loop;
    p->target = target;
    p->drv = drv;
    p->size = size;
    p->up = true;
    p->backoff_ms = POOL_BACKOFF_MIN_MS;
    p->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)p) | 1;
    uv_idle_init(loop, &p->dispatch);
    uv_timer_init(loop, &p->retry);
    p->dispatch.data = p->retry.data = p;
    p->open_handles = 2;
    return p;
}

int px_pool_acquire(px_pool *pool, px_pool_req *req, px_acquire_cb cb)
{
    if (!pool || !req || !cb || pool->closing)
        return -EINVAL;
    if (list_linked(&req->node))
        return -EBUSY;
    req->cb = cb;
    req->pool = pool;
    list_push_tail(&pool->waiters, &req->node);
    kick(pool);
    return 0;
}

void px_pool_cancel(px_pool_req *req)
{
    if (!req || !list_linked(&req->node))
        return;
    list_remove(&req->pool->waiters, &req->node);
    maybe_finish(req->pool);
}

/* A returned connection is lent again only once its session is clean. */
static void reset_done(px_pool *pool, pooled *pc, const px_error *err)
{
    if (err || pool->closing || open_count(pool) > pool->size) { /* or the pool shrank */
        drop(pool, pc, err != NULL);
        return;
    }
    pooled_move(pool, pc, POOLED_IDLE);
    if (!list_empty(&pool->waiters))
        kick(pool);
}

static void on_reset(px_conn *conn, const px_error *err, void *arg)
{
    pooled *pc = arg;
    reset_done(pc->pool, pc, err);
}

/* Nothing one transaction did to its session may reach the next one: every returned connection
 * is reset by its driver before anyone else can borrow it (docs/design.md, session hygiene). */
void px_pool_release(px_pool *pool, px_conn *conn)
{
    pooled *pc = lent_one(pool, conn, "released");
    if (!pool->closing && pool->drv->reset) {
        pooled_move(pool, pc, POOLED_RESETTING);
        if (pool->drv->reset(conn, on_reset, pc) != 0)
            drop(pool, pc, true);
        return;
    }
    reset_done(pool, pc, NULL);
}

void px_pool_discard(px_pool *pool, px_conn *conn)
{
    drop(pool, lent_one(pool, conn, "discarded"), true);
}

int px_pool_resize(px_pool *pool, int size)
{
    if (size < 1)
        return -EINVAL;
    pool->size = size;
    while (open_count(pool) > size && !list_empty(&pool->lists[POOLED_IDLE]))
        pooled_close(pool, first_idle(pool));
    if (!list_empty(&pool->waiters))
        kick(pool); /* more room: waiters may connect now */
    return 0;
}

void px_pool_warm(px_pool *pool, int n)
{
    while (!pool->closing && open_count(pool) < pool->size && open_count(pool) < n)
        start_connect(pool);
}

void px_pool_flush_idle(px_pool *pool)
{
    while (!list_empty(&pool->lists[POOLED_IDLE])) {
        pool->discards++;
        pooled_close(pool, first_idle(pool));
    }
    if (!list_empty(&pool->waiters))
        kick(pool);
}

const px_driver *px_pool_driver(const px_pool *pool)
{
    return pool->drv;
}

const px_target *px_pool_target(const px_pool *pool)
{
    return pool->target;
}

void px_pool_get_stats(const px_pool *pool, px_pool_stats *out)
{
    out->size = pool->size;
    out->open = open_count(pool);
    out->idle = count(pool, POOLED_IDLE);
    out->busy = count(pool, POOLED_LENT) + count(pool, POOLED_RESETTING);
    out->waiting = (int)list_count(&pool->waiters);
    out->up = pool->up;
    out->connects = pool->connects;
    out->connect_failures = pool->connect_failures;
    out->discards = pool->discards;
}

void px_pool_close(px_pool *pool, void (*cb)(void *arg), void *arg)
{
    if (pool->closing)
        return;
    pool->closing = true;
    pool->close_cb = cb;
    pool->close_arg = arg;
    uv_timer_stop(&pool->retry);
    while (!list_empty(&pool->lists[POOLED_IDLE]))
        pooled_close(pool, first_idle(pool));
    kick(pool); /* fails the waiters and finishes on a later turn, never inside this call */
}
