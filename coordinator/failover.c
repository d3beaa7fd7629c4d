/*
 * Taking over lapsed nodes (see failover.h). One takeover at a time; the participants one after
 * another, each over one connection: a dead node's branches are few, and a takeover must not
 * take connections from the live work.
 */
#include "failover.h"

#include "log.h"
#include "store.h"
#include "strmap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct failover {
    coord *c;
    uv_timer_t timer;
    bool busy; /* a takeover is in flight */
    bool stopping;
    bool orphan; /* failover_free came while busy: the takeover frees this when it ends */
};

static void set_idle(struct failover *f)
{
    f->busy = false;
    if (f->orphan)
        free(f);
}

/* One takeover: node, its new epoch, its committed gtrids, and where the scan is. */
typedef struct job {
    struct failover *f;
    char node[17];
    uint64_t epoch;
    char prefix[PX_XID_PART_MAX + 1]; /* "xa2.<node>." */
    strmap *commits;                  /* gtrid -> non-NULL (keys in gtrids) */
    char **gtrids;
    int ngtrids;
    int part; /* participant being scanned */
    px_pool_req req;
    px_conn *conn;
    px_xid *xids;
    size_t nxids, next;
    int committed, rolled_back, failures;
} job;

static void part_next(job *j);
static void resolve_next(job *j);

static void job_end(job *j)
{
    struct failover *f = j->f;
    coord *c = f->c;
    if (!f->stopping && j->failures == 0) {
        log_info("failover",
                 "node %s (epoch %" PRIu64 "): %d branches committed, %d rolled "
                 "back; handed back",
                 j->node, j->epoch, j->committed, j->rolled_back);
        store_release(c->store, j->node, j->epoch); /* also: nothing of it is pending */
    } else if (!f->stopping) {
        log_warn("failover",
                 "node %s (epoch %" PRIu64 "): %d branches could not be resolved "
                 "yet; taken again once its lease lapses",
                 j->node, j->epoch, j->failures);
    }
    strmap_free(j->commits);
    for (int i = 0; i < j->ngtrids; i++)
        free(j->gtrids[i]);
    free(j->gtrids);
    free(j->xids);
    free(j);
    set_idle(f);
}

static void part_done(job *j, bool broken)
{
    coord_part *p = &j->f->c->parts[j->part];
    if (j->conn) {
        if (broken)
            px_pool_discard(p->pool, j->conn);
        else
            px_pool_release(p->pool, j->conn);
    }
    j->conn = NULL;
    free(j->xids);
    j->xids = NULL;
    j->part++;
    part_next(j);
}

static void on_resolved(px_conn *conn, const px_error *err, void *arg)
{
    job *j = arg;
    const px_xid *x = &j->xids[j->next - 1];
    (void)conn;
    if (err) {
        /* Retried by the next takeover (MariaDB answers "not found" while the dead node's
         * session still holds the branch, until the server notices the session is gone). */
        log_warn("failover", "node %s: %s on %s: %s", j->node, x->gtrid, x->bqual, err->message);
        j->failures++;
        if (err->conn_broken) {
            part_done(j, true);
            return;
        }
    } else if (strmap_get(j->commits, x->gtrid)) {
        j->committed++;
    } else {
        j->rolled_back++;
    }
    resolve_next(j);
}

static void resolve_next(job *j)
{
    const px_driver *drv = px_conn_base(j->conn)->driver;
    const px_xid *x;
    bool commit;
    int rc;
    if (j->f->stopping || j->next == j->nxids) {
        part_done(j, false);
        return;
    }
    x = &j->xids[j->next++];
    commit = strmap_get(j->commits, x->gtrid) != NULL;
    log_info("failover", "node %s: %s branch %s on %s (%s)", j->node,
             commit ? "committing" : "rolling back", x->gtrid, x->bqual,
             commit ? "its decision row says commit" : "no decision row: presumed abort");
    rc = commit ? drv->commit_prepared(j->conn, x, on_resolved, j)
                : drv->rollback_prepared(j->conn, x, on_resolved, j);
    if (rc != 0) {
        j->failures++;
        part_done(j, true);
    }
}

static void on_listed(px_conn *conn, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    job *j = arg;
    (void)conn;
    if (err) {
        log_warn("failover", "node %s: listing prepared branches on %s: %s", j->node,
                 j->f->c->parts[j->part].cfg->name, err->message);
        j->failures++;
        part_done(j, err->conn_broken);
        return;
    }
    j->xids = n ? malloc(n * sizeof *xids) : NULL;
    if (n && !j->xids)
        abort();
    if (n)
        memcpy(j->xids, xids, n * sizeof *xids);
    j->nxids = n;
    j->next = 0;
    resolve_next(j);
}

static void on_part_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    job *j = req->data;
    coord_part *p = &j->f->c->parts[j->part];
    j->conn = conn;
    if (!conn || j->f->stopping) {
        if (!j->f->stopping)
            log_warn("failover", "node %s: no connection to %s: %s", j->node, p->cfg->name,
                     err ? err->message : "pool closing");
        j->failures += !j->f->stopping;
        part_done(j, false);
        return;
    }
    if (px_conn_base(conn)->driver->recover(conn, j->prefix, p->cfg->name, on_listed, j) != 0) {
        j->failures++;
        part_done(j, true);
    }
}

static void part_next(job *j)
{
    coord *c = j->f->c;
    if (j->f->stopping || j->part == c->nparts) {
        job_end(j);
        return;
    }
    j->req.data = j;
    if (px_pool_acquire(c->parts[j->part].pool, &j->req, on_part_conn) != 0) {
        j->failures++;
        j->part++;
        part_next(j);
    }
}

static void on_taken(void *arg, int status, const store_taken *t, const char *why)
{
    struct failover *f = arg;
    job *j;
    if (status != 200 || f->stopping) {
        if (status == 503)
            log_warn("failover", "looking for lapsed nodes: %s", why);
        set_idle(f);
        return;
    }
    j = calloc(1, sizeof *j);
    if (!j || !(j->commits = strmap_new()))
        abort(); /* the node is taken and must be resolved: nothing is lost by dying */
    j->f = f;
    snprintf(j->node, sizeof j->node, "%s", t->node_id);
    j->epoch = t->epoch;
    gtrid_prefix(2, j->node, NULL, j->prefix, sizeof j->prefix);
    j->gtrids = calloc((size_t)t->ncommits + 1, sizeof *j->gtrids);
    if (!j->gtrids)
        abort();
    for (int i = 0; i < t->ncommits; i++) {
        if (!t->commits[i])
            continue;
        /* the map keeps the key's pointer: the copy lives as long as the job */
        if (!(j->gtrids[j->ngtrids] = strdup(t->commits[i])) ||
            strmap_put(j->commits, j->gtrids[j->ngtrids], j) != 0)
            abort();
        j->ngtrids++;
    }
    log_warn("failover",
             "node %s (%s%s%s): taken at epoch %" PRIu64 ", %d committed decisions with "
             "branches pending; resolving its prepared branches",
             j->node, *t->holder ? "lease lapsed, held by \"" : "released with work left",
             t->holder, *t->holder ? "\"" : "", j->epoch, t->ncommits);
    part_next(j);
}

static void on_tick(uv_timer_t *timer)
{
    struct failover *f = timer->data;
    coord *c = f->c;
    if (f->busy || f->stopping || c->draining || !store_holds_lease(c->store))
        return;
    f->busy = true;
    store_take_lapsed(c->store, on_taken, f);
}

int failover_start(coord *c)
{
    struct failover *f;
    uint64_t every;
    if (!c->store)
        return 0;
    f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->c = c;
    c->failover = f;
    every = c->cfg->store.lease_ms / 2;
    uv_timer_init(c->loop, &f->timer);
    f->timer.data = f;
    uv_timer_start(&f->timer, on_tick, every, every);
    return 0;
}

void failover_stop(coord *c)
{
    if (!c->failover)
        return;
    c->failover->stopping = true;
    uv_close((uv_handle_t *)&c->failover->timer, NULL);
}

void failover_free(coord *c)
{
    if (c->failover && c->failover->busy)
        c->failover->orphan = true;
    else
        free(c->failover);
    c->failover = NULL;
}
