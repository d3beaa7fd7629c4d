/*
 * Marker upkeep (see markers.h). A prune borrows a pooled connection like any transaction; a
 * failure is logged and the next tick tries again - a marker kept too long costs a row, never
 * a decision.
 */
#include "markers.h"

#include "log.h"

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
        if (p->marker_pruning || !coord_part_usable(p) ||
            (p->markers_pruned_ms && now - p->markers_pruned_ms < MARKERS_PRUNE_MS))
            continue;
        p->marker_pruning = true;
        p->markers_pruned_ms = now;
        p->marker_req.data = p;
        if (px_pool_acquire(p->pool, &p->marker_req, on_conn) != 0)
            p->marker_pruning = false;
    }
}
