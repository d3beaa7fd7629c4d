/*
 * Marker upkeep (see markers.h). A prune borrows a pooled connection like any transaction; a
 * failure is logged and the next tick tries again - a marker kept too long costs a row, never
 * a decision.
 */
#include "markers.h"

#include "log.h"
#include "schema.h"
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inttypes.h>

static void on_pruned(px_conn *conn, const px_error *err, void *arg)
{
    coord_part *p = arg;
    p->marker_pruning = false;
    if (err) {
        log_warn("markers", "%s: deleting old markers failed: %s", p->cfg->name, err->message);
        if (err->conn_broken) {
            px_pool_discard(p->pool, conn);
            return;
        }
    }
    px_pool_release(p->pool, conn);
}

static void on_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    coord_part *p = req->data;
    const coord *c = p->owner;
    uint32_t older = c->cfg->outcome_retention_s > UINT32_MAX
                         ? UINT32_MAX
                         : (uint32_t)c->cfg->outcome_retention_s;
    if (!conn) {
        p->marker_pruning = false;
        return;
    }
    if (px_pool_driver(p->pool)->markers_prune(conn, c->prefix, older, on_pruned, p) != 0) {
        p->marker_pruning = false;
        px_pool_release(p->pool, conn);
    }
}

void markers_tick(coord *c)
{
    uint64_t now = uv_now(c->loop);
    if (c->draining)
        return;
    for (int i = 0; i < c->nparts; i++) {
        coord_part *p = &c->parts[i];
        if (p->marker_pruning || !status_part_usable(c, p) ||
            (p->markers_pruned_ms && now - p->markers_pruned_ms < MARKERS_PRUNE_MS))
            continue;
        p->marker_pruning = true;
        p->markers_pruned_ms = now;
        p->marker_req.data = p;
        if (px_pool_acquire(p->pool, &p->marker_req, on_conn) != 0)
            p->marker_pruning = false;
    }
}

/* ---- finding a client id ----------------------------------------------------------------- */

typedef struct lookup lookup;

typedef struct asking {
    lookup *l;
    coord_part *part;
    px_pool_req req;
    px_param params[3]; /* client id, bqual, the coordinator's gtrid prefix */
    px_stmt stmt;
    int retries; /* connections found broken so far */
} asking;

/* An idle pooled connection may have died since its last use (a server restart, an
 * administrator's pg_terminate_backend): the read is asked again on a fresh one, a few times,
 * before the lookup says "cannot tell". */
#define ASK_RETRIES 2

struct lookup {
    const coord *c;
    char id[REQUEST_ID_MAX + 1];
    markers_found_cb cb;
    void *arg;
    int pending;
    int status; /* 404 until a marker or a failure is seen */
    char participant[33];
    char gtrid[PX_XID_PART_MAX + 1];
    char why[320];
    int nasking;
    asking asking[];
};

static void lookup_done(lookup *l)
{
    if (--l->pending > 0)
        return;
    l->cb(l->arg, l->status, l->participant, l->gtrid, l->why);
    free(l);
}

static void ask_failed(asking *a, const char *why)
{
    lookup *l = a->l;
    if (l->status != 200) {
        l->status = 503;
        snprintf(l->why, sizeof l->why, "participant %s: %s", a->part->cfg->name, why);
    }
    lookup_done(l);
}

static void ask(asking *a);

static void on_found(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                     int nresults, void *arg)
{
    asking *a = arg;
    lookup *l = a->l;
    if (err && err->conn_broken)
        px_pool_discard(a->part->pool, conn);
    else
        px_pool_release(a->part->pool, conn);
    if (err && err->conn_broken && a->retries++ < ASK_RETRIES) {
        ask(a); /* a read: asking again cannot change anything */
        return;
    }
    if (err) {
        ask_failed(a, err->message);
        return;
    }
    if (nresults == 1 && results[0].nrows >= 1 && results[0].ncols >= 1 && results[0].cells[0]) {
        l->status = 200;
        snprintf(l->participant, sizeof l->participant, "%s", a->part->cfg->name);
        snprintf(l->gtrid, sizeof l->gtrid, "%s", results[0].cells[0]);
    }
    lookup_done(l);
}

static void on_ask_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    asking *a = req->data;
    if (!conn) {
        ask_failed(a, err ? err->message : "no connection");
        return;
    }
    if (px_pool_driver(a->part->pool)->exec(conn, &a->stmt, 1, on_found, a) != 0) {
        px_pool_release(a->part->pool, conn);
        ask_failed(a, "the driver refused the query");
    }
}

static void ask(asking *a)
{
    const schema_dialect *d = schema_for(a->part->cfg->driver);
    a->params[0] = (px_param){.type = PX_P_TEXT, .text = a->l->id, .len = strlen(a->l->id)};
    a->params[1] = (px_param){
        .type = PX_P_TEXT, .text = a->part->cfg->name, .len = strlen(a->part->cfg->name)};
    a->params[2] =
        (px_param){.type = PX_P_TEXT, .text = a->l->c->prefix, .len = strlen(a->l->c->prefix)};
    a->stmt = (px_stmt){d->find_sql, a->params, 3, -1, true};
    a->req.data = a;
    if (!status_part_usable(a->part->owner, a->part)) {
        ask_failed(a, "not available");
        return;
    }
    if (px_pool_acquire(a->part->pool, &a->req, on_ask_conn) != 0)
        ask_failed(a, "its pool is closing");
}

void markers_find(coord *c, const char *id, markers_found_cb cb, void *arg)
{
    lookup *l = calloc(1, sizeof *l + (size_t)c->nparts * sizeof(asking));
    if (!l) {
        cb(arg, 503, "", "", "out of memory");
        return;
    }
    snprintf(l->id, sizeof l->id, "%s", id);
    l->c = c;
    l->cb = cb;
    l->arg = arg;
    l->status = 404;
    l->pending = 1; /* held until every question is out */
    for (int i = 0; i < c->nparts; i++) {
        if (!schema_for(c->parts[i].cfg->driver))
            continue;
        asking *a = &l->asking[l->nasking++];
        a->l = l;
        a->part = &c->parts[i];
        l->pending++;
        ask(a);
    }
    lookup_done(l);
}
