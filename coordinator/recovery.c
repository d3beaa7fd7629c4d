/*
 * Recovery scans (see recovery.h). One scan object per participant, driven by callbacks: acquire a
 * connection, list, then resolve the listed branches one after another on that connection.
 */
#include "recovery.h"

#include "crash.h"
#include "log.h"
#include "txn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECOVERY_WORKERS 32
/* Connections opened ahead of the first transactions once a participant is ready. */
#define POOL_WARM 8

struct scan;

typedef struct worker {
    struct scan *s;
    px_pool_req preq;
    px_conn *conn;
    size_t idx;          /* the listed branch it is resolving */
    bool busy;           /* a driver call or pool request is in flight */
} worker;

typedef struct scan {
    struct recovery *r;
    coord_part *part;
    char ctx[48];
    px_pool_req preq;
    px_conn *conn;
    px_xid *xids;
    bool *failed;        /* per listed xid: could not be resolved in this scan */
    size_t n, next;
    unsigned attempts;   /* consecutive failed scans, for the backoff */
    px_xid *left;        /* branches the last complete scan could not resolve */
    int64_t *left_since; /* when each was first left behind (wall clock, ms) */
    size_t nleft;
    uv_timer_t timer;
    bool running;
    bool busy;           /* a driver call or pool request is in flight */
    worker workers[RECOVERY_WORKERS];
    int active;          /* workers still resolving */
    bool broken;         /* a worker lost its connection: the scan must run again */
} scan;

struct recovery {
    coord *c;
    uv_timer_t periodic;
    int open_handles;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    bool stopping;
    scan scans[CONFIG_MAX_PARTICIPANTS];
};

static void scan_run(scan *s);

static void scan_reset(scan *s)
{
    free(s->xids);
    free(s->failed);
    s->xids = NULL;
    s->failed = NULL;
    s->n = s->next = 0;
}

static void on_backoff(uv_timer_t *t) { scan_run(t->data); }

/* A scan that could not finish: try again soon, with capped exponential backoff. */
static void scan_failed(scan *s, const char *what, const px_error *err)
{
    unsigned ms = 200u << (s->attempts < 5 ? s->attempts : 5);
    uint32_t cap = s->r->c->cfg->recovery_interval_ms;
    s->attempts++;
    if (ms > cap)
        ms = cap;
    if (s->conn) {
        px_pool_discard(s->part->pool, s->conn);
        px_pool_flush_idle(s->part->pool);
        s->conn = NULL;
    }
    log_warn(s->ctx, "recovery scan failed (%s: %s); retrying in %u ms", what,
             err ? err->message : "unknown error", ms);
    scan_reset(s);
    s->running = false;
    if (!s->r->stopping)
        uv_timer_start(&s->timer, on_backoff, ms, 0);
}

static bool was_left_behind(const scan *s, const char *gtrid)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->failed[i] && strcmp(s->xids[i].gtrid, gtrid) == 0)
            return true;
    return false;
}

static void acknowledge(outcome *o, void *arg)
{
    scan *s = arg;
    coord *c = s->r->c;
    uint32_t bit = 1u << s->part->index;
    if (!(o->pending & bit) || was_left_behind(s, o->gtrid))
        return;
    o->pending &= ~bit;
    if (o->pending == 0) {
        uint64_t boot, seq;
        if (sscanf(o->gtrid + strlen(c->prefix), "%" SCNu64 ".%" SCNu64, &boot, &seq) == 2) {
            journal_rec rec = {JOURNAL_DONE, boot, seq, coord_now_ms(), NULL, 0};
            if (journal_append(c->journal, &rec, NULL, NULL) != 0)
                log_warn(s->ctx, "the done record of %s could not be journaled", o->gtrid);
        }
        log_info(s->ctx, "transaction %s (id %s) is complete on every participant", o->gtrid,
                 o->id);
    }
}

/* Remembers what this scan left behind, keeping the first time each branch was seen stuck. */
static void remember_left(scan *s, size_t left)
{
    px_xid *xids = calloc(left ? left : 1, sizeof *xids);
    int64_t *since = calloc(left ? left : 1, sizeof *since);
    size_t k = 0;
    if (!xids || !since)
        abort();
    for (size_t i = 0; i < s->n; i++) {
        if (!s->failed[i])
            continue;
        xids[k] = s->xids[i];
        since[k] = coord_now_ms();
        for (size_t j = 0; j < s->nleft; j++)
            if (strcmp(s->left[j].gtrid, xids[k].gtrid) == 0)
                since[k] = s->left_since[j];
        k++;
    }
    free(s->left);
    free(s->left_since);
    s->left = xids;
    s->left_since = since;
    s->nleft = left;
}

void recovery_each_left(const coord *c, recovery_left_fn fn, void *arg)
{
    if (!c->recovery)
        return;
    for (int i = 0; i < c->nparts; i++) {
        const scan *s = &c->recovery->scans[i];
        for (size_t j = 0; j < s->nleft; j++)
            fn(s->part, &s->left[j], s->left_since[j], arg);
    }
}

static void scan_complete(scan *s)
{
    coord *c = s->r->c;
    size_t left = 0;
    for (size_t i = 0; i < s->n; i++)
        left += s->failed[i];
    remember_left(s, left);
    outcomes_each_unfinished(c->outcomes, acknowledge, s);
    if (!s->part->ready) {
        log_info(s->ctx, "recovery scan finished: %zu prepared branches listed, %zu left; "
                         "taking new work",
                 s->n, left);
        px_pool_warm(s->part->pool, POOL_WARM);
    }
    else if (s->n > 0)
        log_info(s->ctx, "recovery scan: %zu prepared branches listed, %zu left", s->n, left);
    s->part->ready = true;
    s->running = false;
    s->attempts = 0;
    scan_reset(s);
}

static void worker_next(worker *w);

/* A worker whose list is exhausted gives its connection back; the last one ends the scan. */
static void worker_done(worker *w)
{
    scan *s = w->s;
    if (w->conn) {
        px_pool_release(s->part->pool, w->conn);
        w->conn = NULL;
    }
    if (--s->active > 0)
        return;
    if (s->broken)
        scan_failed(s, "connection lost while resolving", NULL);
    else
        scan_complete(s);
}

static void on_resolved(px_conn *conn, const px_error *err, void *arg)
{
    worker *w = arg;
    scan *s = w->s;
    const px_xid *x = &s->xids[w->idx];
    w->busy = false;
    if (err && err->cls != PX_XID_NOT_FOUND && !(err->cls == PX_BUSINESS && err->code == 1402)) {
        log_warn(s->ctx, "could not resolve %s: %s", x->gtrid, err->message);
        s->failed[w->idx] = true;
        if (err->conn_broken) {
            px_pool_discard(s->part->pool, w->conn);
            w->conn = NULL;
            s->broken = true;
            worker_done(w);
            return;
        }
    } else if (!err) {
        crash_point("recovery-after-resolve");
    } else if (err->cls == PX_XID_NOT_FOUND) {
        /* Listed a moment ago, yet "not found": on MariaDB it is still attached to a session that
         * is going away (a crashed coordinator's). It stays in doubt until a scan no longer lists
         * it - never acknowledged on the strength of "not found" alone. */
        log_info(s->ctx, "%s is not available to this session yet; the next scan retries",
                 x->gtrid);
        s->failed[w->idx] = true;
    } else {
        log_info(s->ctx, "%s was read-only and is already finished", x->gtrid);
    }
    worker_next(w);
}

/* Takes the next listed branch that is not live in this process and resolves it. */
static void worker_next(worker *w)
{
    scan *s = w->s;
    coord *c = s->r->c;
    const px_driver *drv = px_pool_driver(s->part->pool);
    while (!s->broken && s->next < s->n) {
        const px_xid *x = &s->xids[s->next];
        bool commit;
        int rc;
        w->idx = s->next++;
        if (strmap_get(c->live, x->gtrid))
            continue; /* live in this process: its own engine finishes it */
        commit = outcome_find_commit(c->outcomes, x->gtrid) != NULL;
        log_info(s->ctx, "in-doubt branch %s: %s (%s)", x->gtrid,
                 commit ? "committing" : "rolling back",
                 commit ? "commit record found" : "no commit record: presumed abort");
        metric_counter_add(commit ? s->part->recovered_commit : s->part->recovered_rollback, 1);
        w->busy = true;
        rc = commit ? drv->commit_prepared(w->conn, x, on_resolved, w)
                    : drv->rollback_prepared(w->conn, x, on_resolved, w);
        if (rc == 0)
            return;
        w->busy = false;
        s->failed[w->idx] = true;
    }
    worker_done(w);
}

static void on_worker_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    worker *w = req->data;
    w->busy = false;
    w->conn = conn;
    if (conn)
        worker_next(w);
    else
        worker_done(w); /* the pool could not spare one: the other workers go on */
}

/* Resolves the listed branches over up to RECOVERY_WORKERS connections at once: after a long
 * outage thousands may be in doubt, each holding its locks until resolved. The listing's own
 * connection is the first worker; the others come from the pool as it can spare them. */
static void resolve_all(scan *s)
{
    size_t want = s->n < RECOVERY_WORKERS ? s->n : RECOVERY_WORKERS;
    int limit = s->part->cfg->pool_size;
    if (want == 0)
        want = 1;
    if ((int)want > limit)
        want = (size_t)limit;
    s->broken = false;
    s->active = (int)want;
    s->workers[0] = (worker){.s = s, .conn = s->conn};
    s->conn = NULL;
    for (size_t i = 1; i < want; i++) {
        worker *w = &s->workers[i];
        *w = (worker){.s = s, .busy = true};
        w->preq.data = w;
        if (px_pool_acquire(s->part->pool, &w->preq, on_worker_conn) != 0) {
            w->busy = false;
            s->active--;
        }
    }
    worker_next(&s->workers[0]);
}

static void on_listed(px_conn *conn, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    scan *s = arg;
    s->busy = false;
    if (err) {
        scan_failed(s, "listing prepared branches", err);
        return;
    }
    s->xids = malloc(sizeof *xids * (n ? n : 1));
    s->failed = calloc(n ? n : 1, sizeof *s->failed);
    if (!s->xids || !s->failed)
        abort();
    if (n > 0)
        memcpy(s->xids, xids, sizeof *xids * n);
    s->n = n;
    s->next = 0;
    resolve_all(s);
}

static void on_scan_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    scan *s = req->data;
    const px_driver *drv = px_pool_driver(s->part->pool);
    s->busy = false;
    if (!conn) {
        scan_failed(s, "connecting", err);
        return;
    }
    s->conn = conn;
    s->busy = true;
    if (drv->recover(conn, s->r->c->prefix, s->part->cfg->name, on_listed, s) != 0) {
        s->busy = false;
        scan_failed(s, "listing prepared branches", NULL);
    }
}

static void scan_run(scan *s)
{
    /* Without the ownership lock, the branches we see may be another live process's. */
    if (s->running || s->r->stopping || !s->part->lock_held)
        return;
    s->running = true;
    s->preq.data = s;
    s->busy = true;
    if (px_pool_acquire(s->part->pool, &s->preq, on_scan_conn) != 0) {
        s->busy = false;
        scan_failed(s, "pool closing", NULL);
    }
}

void recovery_kick(coord *c)
{
    for (int i = 0; i < c->nparts; i++)
        scan_run(&c->recovery->scans[i]);
}

static void on_periodic(uv_timer_t *t) { recovery_kick(((struct recovery *)t->data)->c); }

int recovery_start(coord *c)
{
    struct recovery *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->c = c;
    c->recovery = r;
    uv_timer_init(c->loop, &r->periodic);
    r->periodic.data = r;
    r->open_handles = 1;
    for (int i = 0; i < c->nparts; i++) {
        scan *s = &r->scans[i];
        s->r = r;
        s->part = &c->parts[i];
        snprintf(s->ctx, sizeof s->ctx, "participant %s", s->part->cfg->name);
        uv_timer_init(c->loop, &s->timer);
        s->timer.data = s;
        r->open_handles++;
    }
    uv_timer_start(&r->periodic, on_periodic, c->cfg->recovery_interval_ms,
                   c->cfg->recovery_interval_ms);
    recovery_kick(c);
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct recovery *r = h->data;
    if (--r->open_handles > 0)
        return;
    r->c->recovery = NULL;
    if (r->stop_cb)
        r->stop_cb(r->stop_arg);
    free(r);
}

void recovery_stop(coord *c, void (*cb)(void *arg), void *arg)
{
    struct recovery *r = c->recovery;
    r->stopping = true;
    r->stop_cb = cb;
    r->stop_arg = arg;
    for (int i = 0; i < c->nparts; i++) {
        scan *s = &r->scans[i];
        /* A scan in flight is abandoned: its connection is closed with the pool, and whatever it
         * did not resolve the next start-up resolves. */
        if (s->busy && s->conn) {
            px_pool_discard(s->part->pool, s->conn);
            s->conn = NULL;
        } else if (s->busy) {
            px_pool_cancel(&s->preq);
        }
        for (int k = 0; k < RECOVERY_WORKERS; k++) {
            worker *w = &s->workers[k];
            if (w->conn)
                px_pool_discard(s->part->pool, w->conn);
            else if (w->busy)
                px_pool_cancel(&w->preq);
            w->conn = NULL;
            w->busy = false;
        }
        scan_reset(s);
        free(s->left);
        free(s->left_since);
        s->timer.data = r;
        uv_close((uv_handle_t *)&s->timer, on_closed);
    }
    r->periodic.data = r;
    uv_close((uv_handle_t *)&r->periodic, on_closed);
}
