/*
 * Recovery scans (see recovery.h). One scan object per participant, driven by callbacks: acquire a
 * connection, list this node's branches (xa2 and xa1 names), then resolve those of this data
 * directory over a few connections and remember the rest as foreign.
 */
#include "recovery.h"

#include "crash.h"
#include "log.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECOVERY_WORKERS 32
/* Connections opened ahead of the first transactions once a participant is ready. */
#define POOL_WARM 8

struct scan;

/* What a scan did with a listed branch. */
typedef enum fate {
    FATE_OK = 0,  /* resolved, live in this process, or no name of xacoord's */
    FATE_LEFT,    /* this data directory's, but could not be resolved in this scan */
    FATE_FOREIGN, /* another identity's: never touched */
} fate;

/* Branches kept from one complete scan to the next, each with the time it was first seen. */
typedef struct branch_set {
    px_xid *xids;
    int64_t *since; /* wall clock, ms */
    size_t n;
} branch_set;

typedef struct worker {
    struct scan *s;
    px_pool_req preq;
    px_conn *conn;
    size_t idx; /* the listed branch it is resolving */
    bool busy;  /* a driver call or pool request is in flight */
} worker;

typedef struct scan {
    struct recovery *r;
    coord_part *part;
    char ctx[48];
    px_pool_req preq;
    px_conn *conn;
    px_xid *xids;
    uint8_t *fate; /* per listed xid (enum fate) */
    size_t n, next;
    int listed;         /* prefixes listed so far in this scan */
    unsigned attempts;  /* consecutive failed scans, for the backoff */
    branch_set left;    /* own branches the last complete scan could not resolve */
    branch_set foreign; /* other identities' branches the last complete scan listed */
    uv_timer_t timer;
    bool ready;   /* the first scan finished: the participant may take work (recovery_ready) */
    bool allowed; /* the ownership lock's session lives (recovery_allow): scans may run */
    bool running;
    bool busy; /* a driver call or pool request is in flight */
    worker workers[RECOVERY_WORKERS];
    int active;  /* workers still resolving */
    bool broken; /* a worker lost its connection: the scan must run again */
    /* Committed outcomes owing this participant a COMMIT whose branch the scan did not list:
     * their markers are read before they count as done (verify_next). */
    char (*verify)[PX_XID_PART_MAX + 1];
    size_t nverify, verified;
    void (*then)(struct scan *s); /* what the scan's connection is for, once it comes */
} scan;

struct recovery {
    coord *c;
    /* Every gtrid of this node: "xa2.<node_id>." (every identity) and "xa1.<node_id>.". */
    char prefixes[2][PX_XID_PART_MAX + 1];
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
    free(s->verify);
    s->verify = NULL;
    s->nverify = s->verified = 0;
    free(s->xids);
    free(s->fate);
    s->xids = NULL;
    s->fate = NULL;
    s->n = s->next = 0;
    s->listed = 0;
}

static void set_free(branch_set *set)
{
    free(set->xids);
    free(set->since);
    *set = (branch_set){0};
}

static void on_backoff(uv_timer_t *t)
{
    scan_run(t->data);
}

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
        if (s->fate[i] == FATE_LEFT && strcmp(s->xids[i].gtrid, gtrid) == 0)
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
    outcome_set_pending(c->outcomes, o, o->pending & ~bit);
    if (o->pending == 0) {
        gtrid_parts g;
        if (gtrid_parse(o->gtrid, &g) == 0) {
            journal_rec rec = {JOURNAL_DONE, g.boot, g.seq, coord_now_ms(), NULL, 0};
            if (journal_append(c->journal, &rec, NULL, NULL) != 0)
                log_warn(s->ctx, "the done record of %s could not be journaled", o->gtrid);
        }
        log_info(s->ctx, "transaction %s (id %s) is complete on every participant", o->gtrid,
                 o->id);
    }
}

/* A foreign branch is said once, when first seen: it stays until someone decides it. */
static void foreign_seen(const scan *s, const px_xid *x)
{
    gtrid_parts g;
    if (gtrid_parse(x->gtrid, &g) == 0)
        log_warn(s->ctx,
                 "branch %s belongs to identity %s, another data directory of node %s: "
                 "not touched (decide it with xactl resolve or xactl takeover; "
                 "docs/operations.md)",
                 x->gtrid, gtrid_identity(&g), g.node);
}

/* Keeps the branches of this scan that met fate f in set, each with the time it was first
 * seen there. */
static void remember(scan *s, branch_set *set, fate f)
{
    branch_set next = {0};
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->fate[i] == f;
    next.xids = calloc(n ? n : 1, sizeof *next.xids);
    next.since = calloc(n ? n : 1, sizeof *next.since);
    if (!next.xids || !next.since)
        abort();
    for (size_t i = 0; i < s->n; i++) {
        size_t j = 0;
        if (s->fate[i] != f)
            continue;
        while (j < set->n && strcmp(set->xids[j].gtrid, s->xids[i].gtrid) != 0)
            j++;
        if (j == set->n && f == FATE_FOREIGN)
            foreign_seen(s, &s->xids[i]);
        next.xids[next.n] = s->xids[i];
        next.since[next.n++] = j < set->n ? set->since[j] : coord_now_ms();
    }
    set_free(set);
    *set = next;
}

void recovery_each_left(const coord *c, recovery_left_fn fn, void *arg)
{
    if (!c->recovery)
        return;
    for (int i = 0; i < c->nparts; i++) {
        const scan *s = &c->recovery->scans[i];
        for (size_t j = 0; j < s->left.n; j++)
            fn(s->part, &s->left.xids[j], s->left.since[j], arg);
    }
}

void recovery_each_foreign(const coord *c, recovery_foreign_fn fn, void *arg)
{
    if (!c->recovery)
        return;
    for (int i = 0; i < c->nparts; i++) {
        const scan *s = &c->recovery->scans[i];
        for (size_t j = 0; j < s->foreign.n; j++) {
            gtrid_parts g;
            if (gtrid_parse(s->foreign.xids[j].gtrid, &g) == 0)
                fn(s->part, &s->foreign.xids[j], s->foreign.since[j], gtrid_identity(&g), arg);
        }
    }
}

size_t recovery_foreign_count(const coord *c, int participant)
{
    return c->recovery ? c->recovery->scans[participant].foreign.n : 0;
}

static void scan_complete(scan *s)
{
    coord *c = s->r->c;
    size_t left = 0, foreign;
    for (size_t i = 0; i < s->n; i++)
        left += s->fate[i] == FATE_LEFT;
    remember(s, &s->left, FATE_LEFT);
    remember(s, &s->foreign, FATE_FOREIGN);
    foreign = s->foreign.n;
    outcomes_each_unfinished(c->outcomes, acknowledge, s);
    if (!s->ready) {
        log_info(s->ctx,
                 "recovery scan finished: %zu prepared branches listed, %zu left, %zu "
                 "foreign; taking new work",
                 s->n, left, foreign);
        px_pool_warm(s->part->pool, POOL_WARM);
    } else if (s->n > foreign) /* foreign ones were said when first seen */
        log_info(s->ctx, "recovery scan: %zu prepared branches listed, %zu left, %zu foreign", s->n,
                 left, foreign);
    s->ready = true;
    s->running = false;
    s->attempts = 0;
    scan_reset(s);
}

static void worker_next(worker *w);

/* ---- markers of branches that are gone ---------------------------------------------------- */

static bool was_listed(const scan *s, const char *gtrid)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->xids[i].gtrid, gtrid) == 0)
            return true;
    return false;
}

static void collect_unlisted(outcome *o, void *arg)
{
    scan *s = arg;
    if (!(o->pending & (1u << s->part->index)) || was_listed(s, o->gtrid))
        return;
    if ((s->nverify & (s->nverify - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to twice the size */
        void *more = realloc(s->verify, (s->nverify ? 2 * s->nverify : 1) * sizeof *s->verify);
        if (!more)
            abort();
        s->verify = more;
    }
    snprintf(s->verify[s->nverify++], sizeof s->verify[0], "%s", o->gtrid);
}

static void verify_next(scan *s);

static void on_scan_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    scan *s = req->data;
    s->busy = false;
    if (!conn) {
        scan_failed(s, "connecting", err);
        return;
    }
    s->conn = conn;
    s->then(s);
}

/* Borrows the scan's connection, then runs then(s) with it. */
static void scan_acquire(scan *s, void (*then)(scan *s))
{
    s->then = then;
    s->preq.data = s;
    s->busy = true;
    if (px_pool_acquire(s->part->pool, &s->preq, on_scan_conn) != 0) {
        s->busy = false;
        scan_failed(s, "pool closing", NULL);
    }
}

/* A committed branch that is no longer prepared either committed (a COMMIT whose answer was lost,
 * before a crash) or was rolled back by someone else: its marker tells which. */
static void on_marker(px_conn *conn, const px_error *err, bool found, void *arg)
{
    scan *s = arg;
    outcome *o = outcome_find_commit(s->r->c->outcomes, s->verify[s->verified]);
    s->busy = false;
    if (err) {
        scan_failed(s, "reading a marker", err);
        return;
    }
    if (o && !found)
        coord_heuristic(s->r->c, o, s->part, true,
                        "the prepared branch was rolled back by someone else (its marker is gone)",
                        s->ctx);
    s->verified++;
    verify_next(s);
}

static void verify_next(scan *s)
{
    px_xid x;
    if (s->verified == s->nverify) {
        px_pool_release(s->part->pool, s->conn);
        s->conn = NULL;
        scan_complete(s);
        return;
    }
    if (px_xid_set(&x, s->verify[s->verified], s->part->cfg->name) != 0) {
        s->verified++;
        verify_next(s);
        return;
    }
    s->busy = true;
    if (px_pool_driver(s->part->pool)->marker_exists(s->conn, &x, on_marker, s) != 0) {
        s->busy = false;
        scan_failed(s, "reading a marker", NULL);
    }
}

/* Before the scan counts unlisted branches of committed outcomes as done (acknowledge). */
static void verify_unlisted(scan *s)
{
    s->nverify = s->verified = 0;
    outcomes_each_unfinished(s->r->c->outcomes, collect_unlisted, s);
    if (s->nverify == 0) {
        scan_complete(s);
        return;
    }
    scan_acquire(s, verify_next);
}

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
        verify_unlisted(s);
}

static void on_resolved(px_conn *conn, const px_error *err, void *arg)
{
    worker *w = arg;
    scan *s = w->s;
    const px_xid *x = &s->xids[w->idx];
    w->busy = false;
    if (err && err->cls != PX_XID_NOT_FOUND && !(err->cls == PX_BUSINESS && err->code == 1402)) {
        log_warn(s->ctx, "could not resolve %s: %s", x->gtrid, err->message);
        s->fate[w->idx] = FATE_LEFT;
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
        s->fate[w->idx] = FATE_LEFT;
    } else {
        log_info(s->ctx, "%s was read-only and is already finished", x->gtrid);
    }
    worker_next(w);
}

/* Whether listed branch i is this data directory's to resolve; another identity's is marked
 * foreign. The listing holds every identity of this node, and only the branch's name decides,
 * whether or not any other process holds a lock. */
static bool ours(scan *s, size_t i)
{
    const coord *c = s->r->c;
    gtrid_parts g;
    if (gtrid_parse(s->xids[i].gtrid, &g) != 0)
        return false; /* not a name any xacoord writes: not ours to show or touch */
    if (identity_owns(&c->identity, c->cfg->node_id, &g))
        return true;
    s->fate[i] = FATE_FOREIGN;
    return false;
}

/* Takes the next listed branch of this data directory that is not live in this process and
 * resolves it. */
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
        if (!ours(s, w->idx))
            continue;
        if (strmap_get(c->live, x->gtrid))
            continue; /* live in this process: its own engine finishes it */
        commit = outcome_find_commit(c->outcomes, x->gtrid) != NULL;
#ifdef XACOORD_PLANTED_BUG
        commit = false; /* the deliberately wrong rule that xacoord-drill must catch */
#endif
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
        s->fate[w->idx] = FATE_LEFT;
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

static void list_next(scan *s);

static void on_listed(px_conn *conn, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    scan *s = arg;
    px_xid *all;
    s->busy = false;
    if (err) {
        scan_failed(s, "listing prepared branches", err);
        return;
    }
    all = realloc(s->xids, sizeof *xids * (s->n + n > 0 ? s->n + n : 1));
    if (!all)
        abort();
    if (n > 0)
        memcpy(all + s->n, xids, sizeof *xids * n);
    s->xids = all;
    s->n += n;
    if (++s->listed < 2) {
        list_next(s);
        return;
    }
    s->fate = calloc(s->n ? s->n : 1, sizeof *s->fate);
    if (!s->fate)
        abort();
    s->next = 0;
    resolve_all(s);
}

static void list_next(scan *s)
{
    const px_driver *drv = px_pool_driver(s->part->pool);
    s->busy = true;
    if (drv->recover(s->conn, s->r->prefixes[s->listed], s->part->cfg->name, on_listed, s) != 0) {
        s->busy = false;
        scan_failed(s, "listing prepared branches", NULL);
    }
}

static void scan_run(scan *s)
{
    /* Without the ownership lock, another live process may share this node_id. Its branches are
     * fenced by their identity anyway; the lock still stops a copy of this data directory (the
     * same identity) from scanning beside it while both lock sessions live. */
    if (s->running || s->r->stopping || !s->allowed)
        return;
    /* decision_log = postgres: only while this node's lease holds (a peer may be taking over). */
    if (s->r->c->store && !store_holds_lease(s->r->c->store))
        return;
    s->running = true;
    scan_acquire(s, list_next);
}

void recovery_kick(coord *c)
{
    for (int i = 0; i < c->nparts; i++)
        scan_run(&c->recovery->scans[i]);
}

void recovery_allow(coord *c, int participant, bool allowed)
{
    scan *s = &c->recovery->scans[participant];
    s->allowed = allowed;
    if (allowed)
        scan_run(s);
}

bool recovery_ready(const coord *c, int participant)
{
    return c->recovery && c->recovery->scans[participant].ready;
}

static void on_periodic(uv_timer_t *t)
{
    recovery_kick(((struct recovery *)t->data)->c);
}

int recovery_start(coord *c)
{
    struct recovery *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->c = c;
    c->recovery = r;
    gtrid_prefix(2, c->cfg->node_id, NULL, r->prefixes[0], sizeof r->prefixes[0]);
    gtrid_prefix(1, c->cfg->node_id, NULL, r->prefixes[1], sizeof r->prefixes[1]);
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
        set_free(&s->left);
        set_free(&s->foreign);
        s->timer.data = r;
        uv_close((uv_handle_t *)&s->timer, on_closed);
    }
    r->periodic.data = r;
    uv_close((uv_handle_t *)&r->periodic, on_closed);
}
