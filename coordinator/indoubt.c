/*
 * In-doubt listing and manual resolution (see indoubt.h). The list is assembled from what the
 * process knows: branches of live transactions, committed transactions still waiting for a
 * participant, and branches the recovery scans could not resolve.
 */
#include "indoubt.h"

#include "log.h"
#include "recovery.h"
#include "txn.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- listing ----------------------------------------------------------------------------- */

static bool listed(json_t *arr, const char *gtrid, const char *participant)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "xid")), gtrid) == 0 &&
            strcmp(json_string_value(json_object_get(v, "participant")), participant) == 0)
            return true;
    }
    return false;
}

static void add(json_t *arr, const char *gtrid, const char *participant, double age,
                const char *decision)
{
    if (!listed(arr, gtrid, participant))
        json_array_append_new(arr, json_pack("{s:s, s:s, s:f, s:s}", "xid", gtrid, "participant",
                                             participant, "age_s", age, "decision", decision));
}

static void add_live(const coord_part *p, const char *gtrid, double age, const char *decision,
                     void *arg)
{
    add(arg, gtrid, p->cfg->name, age, decision);
}

typedef struct list_ctx {
    coord *c;
    json_t *arr;
} list_ctx;

static void add_left(const coord_part *p, const px_xid *x, int64_t since, void *arg)
{
    list_ctx *l = arg;
    bool commit = outcome_find_commit(l->c->outcomes, x->gtrid) != NULL;
    add(l->arr, x->gtrid, p->cfg->name, (double)(coord_now_ms() - since) / 1000.0,
        commit ? "commit" : "abort");
}

static void add_unfinished(outcome *o, void *arg)
{
    list_ctx *l = arg;
    for (int i = 0; i < l->c->nparts; i++)
        if (o->pending & (1u << i))
            add(l->arr, o->gtrid, l->c->parts[i].cfg->name,
                (double)(coord_now_ms() - o->time_ms) / 1000.0, "commit");
}

void indoubt_list(coord *c, http_request *req)
{
    list_ctx l = {c, json_array()};
    json_t *obj;
    char *s;
    txn_each_prepared(c, add_live, l.arr);
    outcomes_each_unfinished(c->outcomes, add_unfinished, &l);
    recovery_each_left(c, add_left, &l);
    obj = json_pack("{s:o}", "branches", l.arr);
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    http_respond(req, 200, NULL, s, strlen(s));
    free(s);
}

/* ---- manual resolution ------------------------------------------------------------------- */

typedef struct resolution resolution;

typedef struct res_branch {
    resolution *r;
    coord_part *part;
    px_xid xid;
    px_pool_req preq;
    px_conn *conn;
    const char *result;
    char message[300];
} res_branch;

struct resolution {
    coord *c;
    http_request *req;
    bool commit;
    int left;
    int n;
    res_branch b[CONFIG_MAX_PARTICIPANTS];
};

static void finish(resolution *r)
{
    json_t *parts = json_object();
    char *s;
    /* The next recovery scan confirms what is gone and writes the DONE record. */
    for (int i = 0; i < r->n; i++) {
        res_branch *b = &r->b[i];
        json_object_set_new(parts, b->part->cfg->name,
                            b->message[0] ? json_string(b->message) : json_string(b->result));
    }
    recovery_kick(r->c);
    json_t *obj = json_pack("{s:s, s:s, s:o}", "xid", r->b[0].xid.gtrid, "action",
                            r->commit ? "commit" : "rollback", "participants", parts);
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    http_respond(r->req, 200, NULL, s, strlen(s));
    free(s);
    free(r);
}

static void branch_settled(res_branch *b)
{
    if (b->conn) {
        px_pool_release(b->part->pool, b->conn);
        b->conn = NULL;
    }
    if (--b->r->left == 0)
        finish(b->r);
}

static void on_resolved(px_conn *conn, const px_error *err, void *arg)
{
    res_branch *b = arg;
    if (!err) {
        b->result = b->r->commit ? "committed" : "rolled back";
        log_warn("in-doubt", "%s.%s %s by an operator", b->xid.gtrid, b->xid.bqual, b->result);
    } else if (err->cls == PX_XID_NOT_FOUND) {
        b->result = "not found there (already finished, or still attached to a live session)";
    } else {
        snprintf(b->message, sizeof b->message, "error: %s", err->message);
        if (err->conn_broken) {
            px_pool_discard(b->part->pool, b->conn);
            b->conn = NULL;
        }
    }
    branch_settled(b);
}

static void on_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    res_branch *b = req->data;
    const px_driver *drv = px_pool_driver(b->part->pool);
    int rc;
    if (!conn) {
        snprintf(b->message, sizeof b->message, "error: %s", err->message);
        branch_settled(b);
        return;
    }
    b->conn = conn;
    rc = b->r->commit ? drv->commit_prepared(conn, &b->xid, on_resolved, b)
                      : drv->rollback_prepared(conn, &b->xid, on_resolved, b);
    if (rc != 0) {
        snprintf(b->message, sizeof b->message, "error: the driver refused the request");
        branch_settled(b);
    }
}

/* Why the journal forbids this action, or NULL when it allows it. */
static const char *contradiction(coord *c, const char *gtrid, bool commit)
{
    bool committed = outcome_find_commit(c->outcomes, gtrid) != NULL;
    if (txn_is_live(c, gtrid))
        return "the transaction is live in this process: the coordinator is finishing it";
    if (commit && !committed)
        return "refused: the journal has no commit record for it (presumed abort): only rollback "
               "is allowed";
    if (!commit && committed)
        return "refused: the journal says COMMIT: only commit is allowed";
    return NULL;
}

void indoubt_resolve(coord *c, http_request *req, const char *gtrid, const char *action,
                     const char *participant)
{
    bool commit = strcmp(action, "commit") == 0;
    const char *why;
    resolution *r;

    if (!commit && strcmp(action, "rollback") != 0) {
        http_respond_error(req, 404, "no such action: use commit or rollback");
        return;
    }
    if (strncmp(gtrid, c->prefix, strlen(c->prefix)) != 0 || strlen(gtrid) > PX_XID_PART_MAX) {
        http_respond_error(req, 404, "not an XID of this coordinator (wrong node prefix)");
        return;
    }
    why = contradiction(c, gtrid, commit);
    if (why) {
        http_respond_error(req, 409, why);
        return;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    r->c = c;
    r->req = req;
    r->commit = commit;
    for (int i = 0; i < c->nparts; i++) {
        coord_part *p = &c->parts[i];
        res_branch *b = &r->b[r->n];
        if (participant && strcmp(participant, p->cfg->name) != 0)
            continue;
        if (!px_xid_set(&b->xid, gtrid, p->cfg->name)) {
            free(r);
            http_respond_error(req, 404, "malformed XID");
            return;
        }
        b->r = r;
        b->part = p;
        r->n++;
    }
    if (r->n == 0) {
        free(r);
        http_respond_error(req, 404, "unknown participant");
        return;
    }
    r->left = r->n;
    for (int i = 0, n = r->n; i < n; i++) {
        res_branch *b = &r->b[i];
        b->preq.data = b;
        if (px_pool_acquire(b->part->pool, &b->preq, on_conn) != 0) {
            snprintf(b->message, sizeof b->message, "error: participant pool is closing");
            branch_settled(b);
        }
    }
}
