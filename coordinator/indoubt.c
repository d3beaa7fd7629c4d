/*
 * In-doubt listing, manual resolution and takeover (see indoubt.h). The list is assembled from
 * what the process knows: branches of live transactions, committed transactions still waiting for
 * a participant, branches the recovery scans could not resolve, and the foreign branches they saw.
 */
#include "indoubt.h"

#include "log.h"
#include "recovery.h"
#include "strmap.h"
#include "txn.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- listing ----------------------------------------------------------------------------- */

/* The sources below overlap (a live transaction's branch may also be left by a scan): each branch
 * is reported once, keyed by "gtrid/participant" in a map that owns its keys. */
typedef struct each_ctx {
    coord *c;
    strmap *seen;
    indoubt_fn fn;
    void *arg;
    int err;
} each_ctx;

static void emit(each_ctx *e, const coord_part *p, const char *gtrid, double age,
                 const char *decision, const char *identity)
{
    char *key;
    indoubt_branch b = {p, gtrid, age, decision, identity};
    if (e->err || asprintf(&key, "%s/%s", gtrid, p->cfg->name) < 0) {
        e->err = -ENOMEM;
        return;
    }
    if (strmap_get(e->seen, key)) {
        free(key);
        return;
    }
    if (strmap_put(e->seen, key, key) != 0) {
        free(key);
        e->err = -ENOMEM;
        return;
    }
    e->fn(&b, e->arg);
}

static void add_live(const coord_part *p, const char *gtrid, double age, const char *decision,
                     void *arg)
{
    emit(arg, p, gtrid, age, decision, NULL);
}

static double age_since(int64_t since_ms)
{
    return (double)(coord_now_ms() - since_ms) / 1000.0;
}

static void add_foreign(const coord_part *p, const px_xid *x, int64_t since, const char *identity,
                        void *arg)
{
    emit(arg, p, x->gtrid, age_since(since), "foreign", identity);
}

static void add_left(const coord_part *p, const px_xid *x, int64_t since, void *arg)
{
    each_ctx *e = arg;
    bool commit = outcome_find_commit(e->c->outcomes, x->gtrid) != NULL;
    emit(e, p, x->gtrid, age_since(since), commit ? "commit" : "abort", NULL);
}

static void add_unfinished(outcome *o, void *arg)
{
    each_ctx *e = arg;
    for (int i = 0; i < e->c->nparts; i++)
        if (o->pending & (1u << i))
            emit(e, &e->c->parts[i], o->gtrid, age_since(o->time_ms), "commit", NULL);
}

static void free_key(const char *key, void *value, void *arg)
{
    free(value);
}

int indoubt_each(coord *c, indoubt_fn fn, void *arg)
{
    each_ctx e = {c, strmap_new(), fn, arg, 0};
    if (!e.seen)
        return -ENOMEM;
    txn_each_prepared(c, add_live, &e);
    outcomes_each_unfinished(c->outcomes, add_unfinished, &e);
    recovery_each_left(c, add_left, &e);
    recovery_each_foreign(c, add_foreign, &e);
    strmap_each(e.seen, free_key, NULL);
    strmap_free(e.seen);
    return e.err;
}

static void count_branch(const indoubt_branch *b, void *arg)
{
    indoubt_stats *st = arg;
    st->count[b->part->index]++;
    if (b->age_s > st->oldest_s[b->part->index])
        st->oldest_s[b->part->index] = b->age_s;
}

int indoubt_get_stats(coord *c, indoubt_stats *st)
{
    memset(st, 0, sizeof *st);
    return indoubt_each(c, count_branch, st);
}

static void list_branch(const indoubt_branch *b, void *arg)
{
    json_t *v = json_pack("{s:s, s:s, s:f, s:s}", "xid", b->gtrid, "participant",
                          b->part->cfg->name, "age_s", b->age_s, "decision", b->decision);
    if (v && b->identity)
        json_object_set_new(v, "identity", json_string(b->identity));
    json_array_append_new(arg, v);
}

void indoubt_list(coord *c, http_request *req)
{
    json_t *arr = json_array(), *obj;
    char *s;
    if (!arr || indoubt_each(c, list_branch, arr) != 0) {
        json_decref(arr);
        http_respond_error(req, 500, "out of memory");
        return;
    }
    obj = json_pack("{s:o}", "branches", arr);
    s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
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
    const char *foreign; /* the identity of a foreign branch, NULL for this directory's own */
    char foreign_buf[IDENTITY_LEN + 1];
    int left;
    int n;
    res_branch b[CONFIG_MAX_PARTICIPANTS];
};

/* 200 when every branch was finished (or was not there); 502 when a participant refused or failed
 * one, e.g. a branch prepared by another database role: the operator must not read "done". */
static void finish(resolution *r)
{
    json_t *parts = json_object();
    char *s;
    int status = 200;
    /* The next recovery scan confirms what is gone and writes the DONE record. */
    for (int i = 0; i < r->n; i++) {
        res_branch *b = &r->b[i];
        json_object_set_new(parts, b->part->cfg->name,
                            b->message[0] ? json_string(b->message) : json_string(b->result));
        if (b->message[0])
            status = 502;
    }
    recovery_kick(r->c);
    json_t *obj = json_pack("{s:s, s:s, s:o}", "xid", r->b[0].xid.gtrid, "action",
                            r->commit ? "commit" : "rollback", "participants", parts);
    if (r->foreign)
        json_object_set_new(obj, "identity", json_string(r->foreign));
    if (status != 200)
        json_object_set_new(
            obj, "error", json_string("a participant did not finish its branch: see participants"));
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    http_respond(r->req, status, NULL, s, strlen(s));
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
    if (!err && b->r->foreign) {
        b->result = b->r->commit ? "committed" : "rolled back";
        log_warn("in-doubt",
                 "FOREIGN branch %s.%s of identity %s (another data directory) %s "
                 "by an operator: no journal of this coordinator knew its decision",
                 b->xid.gtrid, b->xid.bqual, b->r->foreign, b->result);
    } else if (!err) {
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
    bool commit = strcmp(action, "commit") == 0, foreign;
    const char *why;
    resolution *r;
    gtrid_parts g;

    if (!commit && strcmp(action, "rollback") != 0) {
        http_respond_error(req, 404, "no such action: use commit or rollback");
        return;
    }
    if (gtrid_parse(gtrid, &g) != 0 || strcmp(g.node, c->cfg->node_id) != 0) {
        http_respond_error(req, 404, "not an XID of this coordinator's node_id");
        return;
    }
    /* Another identity's branch: no journal here can contradict the operator. */
    foreign = !identity_owns(&c->identity, c->cfg->node_id, &g);
    why = foreign ? NULL : contradiction(c, gtrid, commit);
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
    if (foreign) {
        snprintf(r->foreign_buf, sizeof r->foreign_buf, "%s", gtrid_identity(&g));
        r->foreign = r->foreign_buf;
    }
    for (int i = 0; i < c->nparts; i++) {
        coord_part *p = &c->parts[i];
        res_branch *b = &r->b[r->n];
        if (participant && strcmp(participant, p->cfg->name) != 0)
            continue;
        if (px_xid_set(&b->xid, gtrid, p->cfg->name) != 0) {
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

/* ---- takeover of a foreign identity ------------------------------------------------------ */

typedef struct tk_item {
    coord_part *part;
    px_xid xid;
} tk_item;

typedef struct takeover {
    coord *c;
    http_request *req;
    bool commit;
    char identity[IDENTITY_LEN + 1];
    tk_item *items; /* in participant order, so one connection serves a run of them */
    size_t n, cap, next;
    px_pool_req preq;
    px_conn *conn; /* lent by conn_part's pool */
    coord_part *conn_part;
    json_t *resolved, *failed;
} takeover;

static void collect(const coord_part *p, const px_xid *x, int64_t since, const char *identity,
                    void *arg)
{
    takeover *t = arg;
    if (strcmp(identity, t->identity) != 0)
        return;
    if (t->n == t->cap) {
        tk_item *grown = realloc(t->items, (t->cap = t->cap ? 2 * t->cap : 16) * sizeof *grown);
        if (!grown)
            abort();
        t->items = grown;
    }
    t->items[t->n++] = (tk_item){&t->c->parts[p->index], *x};
}

static void tk_finish(takeover *t)
{
    json_t *obj =
        json_pack("{s:s, s:s, s:o, s:o}", "identity", t->identity, "decision",
                  t->commit ? "commit" : "rollback", "resolved", t->resolved, "failed", t->failed);
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (t->conn)
        px_pool_release(t->conn_part->pool, t->conn);
    log_warn("takeover", "TAKEOVER of identity %s done: %zu of %zu branches %s", t->identity,
             t->n - json_array_size(t->failed), t->n, t->commit ? "committed" : "rolled back");
    recovery_kick(t->c); /* the next scans forget what is gone */
    if (s)
        http_respond(t->req, 200, NULL, s, strlen(s));
    else
        http_respond_error(t->req, 500, "out of memory");
    free(s);
    free(t->items);
    free(t);
}

/* Records the current item's result (error NULL: resolved) and moves to the next. */
static void tk_record(takeover *t, const char *error)
{
    const tk_item *it = &t->items[t->next++];
    json_t *e = json_pack("{s:s, s:s}", "xid", it->xid.gtrid, "participant", it->part->cfg->name);
    if (error)
        json_object_set_new(e, "error", json_string(error));
    json_array_append_new(error ? t->failed : t->resolved, e);
}

static void tk_step(takeover *t);

static void tk_on_done(px_conn *conn, const px_error *err, void *arg)
{
    takeover *t = arg;
    const tk_item *it = &t->items[t->next];
    if (!err)
        log_warn("takeover", "FOREIGN branch %s.%s of identity %s %s by an operator's takeover",
                 it->xid.gtrid, it->xid.bqual, t->identity,
                 t->commit ? "committed" : "rolled back");
    else if (err->conn_broken) {
        px_pool_discard(t->conn_part->pool, t->conn);
        t->conn = NULL;
    }
    tk_record(t, !err ? NULL
                 : err->cls == PX_XID_NOT_FOUND
                     ? "not found: finished already, or still attached to a live session of "
                       "the coordinator that prepared it"
                     : err->message);
    tk_step(t);
}

static int tk_send(takeover *t)
{
    const px_driver *drv = px_pool_driver(t->conn_part->pool);
    const px_xid *x = &t->items[t->next].xid;
    return t->commit ? drv->commit_prepared(t->conn, x, tk_on_done, t)
                     : drv->rollback_prepared(t->conn, x, tk_on_done, t);
}

static void tk_on_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    takeover *t = req->data;
    t->conn = conn;
    if (!conn)
        tk_record(t, err ? err->message : "no connection");
    else if (tk_send(t) != 0)
        tk_record(t, "the driver refused the request");
    else
        return;
    tk_step(t);
}

/* Resolves the items one after another, on one connection per run of a participant. */
static void tk_step(takeover *t)
{
    while (t->next < t->n) {
        coord_part *p = t->items[t->next].part;
        if (t->conn && t->conn_part != p) {
            px_pool_release(t->conn_part->pool, t->conn);
            t->conn = NULL;
        }
        if (t->conn) {
            if (tk_send(t) == 0)
                return;
            tk_record(t, "the driver refused the request");
            continue;
        }
        t->conn_part = p;
        t->preq.data = t;
        if (px_pool_acquire(p->pool, &t->preq, tk_on_conn) == 0)
            return;
        tk_record(t, "the participant's pool is closing");
    }
    tk_finish(t);
}

/* ?decision=commit|rollback, required: a takeover cannot be undone, so it has no default. 1
 * (commit), 0 (rollback), or -EINVAL. */
static int takeover_decision(const char *query)
{
    if (strcmp(query, "decision=rollback") == 0)
        return 0;
    if (strcmp(query, "decision=commit") == 0)
        return 1;
    return -EINVAL;
}

void indoubt_takeover(coord *c, http_request *req, const char *identity, const char *query)
{
    int commit = takeover_decision(query ? query : "");
    takeover *t;
    if (commit < 0) {
        http_respond_error(req, 400,
                           "say what to do: ?decision=rollback (presumed abort) or "
                           "?decision=commit; a takeover has no default");
        return;
    }
    if (!identity_valid(identity, true)) {
        http_respond_error(req, 400, "not an identity: 8 characters of [a-z2-7], or \"legacy\"");
        return;
    }
    if (strcmp(identity, c->identity.id) == 0) {
        http_respond_error(req, 409,
                           "refused: that is this coordinator's own identity, whose "
                           "branches follow its journal");
        return;
    }
    t = calloc(1, sizeof *t);
    if (!t || !(t->resolved = json_array()) || !(t->failed = json_array()))
        abort();
    t->c = c;
    t->req = req;
    t->commit = commit == 1;
    snprintf(t->identity, sizeof t->identity, "%s", identity);
    recovery_each_foreign(c, collect, t);
    if (t->n == 0) {
        json_decref(t->resolved);
        json_decref(t->failed);
        free(t);
        http_respond_error(req, 404,
                           "no foreign branch of that identity is listed (GET "
                           "/v1/in-doubt shows what the last scans found)");
        return;
    }
    log_warn("takeover", "TAKEOVER of identity %s by an operator: %s %zu prepared branches",
             identity, t->commit ? "committing" : "rolling back", t->n);
    tk_step(t);
}
