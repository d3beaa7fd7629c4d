/*
 * The bounded connection pool of one participant (see pool.h). Every acquire callback runs from
 * the pool's dispatcher (a uv_idle handle started on demand, so on a later loop turn than the call
 * that queued the request) or from a connect callback; release, discard and close only change
 * counts and wake the dispatcher, so no callback ever runs inside a call of the pool's API.
 * Invariant: open == idle + busy + connecting <= size, where busy counts lent connections and
 * returned ones whose session is being reset - except after px_pool_resize shrank the pool: then
 * open may exceed size until enough lent connections came back and were closed.
 */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>

#define POOL_BACKOFF_MIN_MS 100u
#define POOL_BACKOFF_MAX_MS 5000u

struct px_pool {
    uv_loop_t *loop;
    const px_target *target;
    const px_driver *drv;
    int size;
    int cap; /* of idle[] */
    int open, nidle, busy, connecting, waiting;
    px_conn **idle;           /* a stack: the most recently used connection is lent first */
    px_pool_req *head, *tail; /* waiters, FIFO */
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
    free(p->idle);
    free(p);
    if (cb)
        cb(arg);
}

/* The last step of px_pool_close: once no connection and no waiter is left. */
static void maybe_finish(px_pool *p)
{
    if (!p->closing || p->finishing || p->open > 0 || p->head)
        return;
    p->finishing = true;
    uv_close((uv_handle_t *)&p->dispatch, on_handle_closed);
    uv_close((uv_handle_t *)&p->retry, on_handle_closed);
}

/* ---- waiters ---- */

static void enqueue(px_pool *p, px_pool_req *r)
{
    r->next = NULL;
    r->prev = p->tail;
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    r->queued = true;
    p->waiting++;
}

static void dequeue(px_pool *p, px_pool_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        p->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        p->tail = r->prev;
    r->next = r->prev = NULL;
    r->queued = false;
    p->waiting--;
}

static void lend(px_pool *p, px_pool_req *r, px_conn *c)
{
    dequeue(p, r);
    p->busy++;
    r->cb(r, c, NULL);
}

static void refuse(px_pool *p, px_pool_req *r)
{
    px_error err;
    dequeue(p, r);
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
    if (p->open < p->size)
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
    int rc;
    p->open++;
    p->connecting++;
    rc = p->drv->connect(p->loop, p->target, on_connect, p);
    if (rc < 0) {
        px_error err;
        p->open--;
        p->connecting--;
        px_error_set(&err, PX_RETRYABLE, false, 0, "", "connect could not start (%d)", rc);
        connect_failed(p, &err);
    }
}

static void on_connect(px_conn *c, const px_error *err, void *arg)
{
    px_pool *p = arg;
    p->connecting--;
    if (!c) {
        p->open--;
        connect_failed(p, err);
        maybe_finish(p);
        return;
    }
    px_conn_base(c)->user = p;
    p->connects++;
    if (p->closing) {
        p->open--;
        p->drv->close(c);
        maybe_finish(p);
        return;
    }
    p->up = true;
    p->backoff_ms = POOL_BACKOFF_MIN_MS;
    uv_timer_stop(&p->retry);
    p->idle[p->nidle++] = c;
    on_dispatch(&p->dispatch);
}

/* ---- the dispatcher ---- */

/* Serves the waiters that were queued when it started (a callback that acquires again waits for
 * the next turn, so a down pool cannot spin here), then starts connects for those still waiting. */
static void on_dispatch(uv_idle_t *h)
{
    px_pool *p = h->data;
    int budget = p->waiting;
    uv_idle_stop(h);
    for (; budget > 0 && p->head; budget--) {
        if (p->closing || !p->up)
            refuse(p, p->head);
        else if (p->nidle > 0)
            lend(p, p->head, p->idle[--p->nidle]);
        else
            break;
    }
    while (p->up && !p->closing && p->waiting > p->connecting && p->open < p->size)
        start_connect(p);
    maybe_finish(p);
}

/* ---- API ---- */

px_pool *px_pool_new(uv_loop_t *loop, const px_target *target, int size)
{
    const px_driver *drv = target ? px_driver_find(target->driver) : NULL;
    px_pool *p;
    if (!loop || !drv || !target->name || size < 1)
        return NULL;
    if (!(p = calloc(1, sizeof *p)) || !(p->idle = calloc((size_t)size, sizeof *p->idle))) {
        free(p);
        return NULL;
    }
    p->loop = loop;
    p->target = target;
    p->drv = drv;
    p->size = size;
    p->cap = size;
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
        return PX_EINVAL;
    if (req->queued)
        return PX_EBUSY;
    req->cb = cb;
    req->pool = pool;
    enqueue(pool, req);
    kick(pool);
    return 0;
}

void px_pool_cancel(px_pool_req *req)
{
    if (!req || !req->queued)
        return;
    dequeue(req->pool, req);
    maybe_finish(req->pool);
}

/* A returned connection stays counted as busy until its session is clean again. */
static void on_reset(px_conn *conn, const px_error *err, void *arg)
{
    px_pool *pool = arg;
    pool->busy--;
    if (err || pool->closing) {
        pool->open--;
        if (err)
            pool->discards++;
        pool->drv->close(conn);
        if (pool->head)
            kick(pool);
        maybe_finish(pool);
        return;
    }
    if (pool->open > pool->size) { /* the pool shrank meanwhile */
        pool->open--;
        pool->drv->close(conn);
        return;
    }
    pool->idle[pool->nidle++] = conn;
    if (pool->head)
        kick(pool);
}

/* Nothing one transaction did to its session may reach the next one: every returned connection
 * is reset by its driver before anyone else can borrow it (docs/design.md, session hygiene). */
void px_pool_release(px_pool *pool, px_conn *conn)
{
    if (!pool->closing && pool->drv->reset) {
        if (pool->drv->reset(conn, on_reset, pool) == 0)
            return;
        px_pool_discard(pool, conn);
        return;
    }
    on_reset(conn, NULL, pool);
}

void px_pool_discard(px_pool *pool, px_conn *conn)
{
    pool->busy--;
    pool->open--;
    pool->discards++;
    pool->drv->close(conn);
    if (pool->head)
        kick(pool);
    maybe_finish(pool);
}

int px_pool_resize(px_pool *pool, int size)
{
    if (size < 1)
        return -1;
    if (size > pool->cap) {
        px_conn **grown = realloc(pool->idle, (size_t)size * sizeof *grown);
        if (!grown)
            return -1;
        pool->idle = grown;
        pool->cap = size;
    }
    pool->size = size;
    while (pool->open > size && pool->nidle > 0) {
        pool->open--;
        pool->drv->close(pool->idle[--pool->nidle]);
    }
    if (pool->head)
        kick(pool); /* more room: waiters may connect now */
    return 0;
}

void px_pool_warm(px_pool *pool, int n)
{
    while (!pool->closing && pool->open < pool->size && pool->open < n)
        start_connect(pool);
}

void px_pool_flush_idle(px_pool *pool)
{
    while (pool->nidle > 0) {
        pool->open--;
        pool->discards++;
        pool->drv->close(pool->idle[--pool->nidle]);
    }
    if (pool->head)
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
    out->open = pool->open;
    out->idle = pool->nidle;
    out->busy = pool->busy;
    out->waiting = pool->waiting;
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
    while (pool->nidle > 0) {
        pool->open--;
        pool->drv->close(pool->idle[--pool->nidle]);
    }
    kick(pool); /* fails the waiters and finishes on a later turn, never inside this call */
}
