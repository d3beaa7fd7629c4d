/*
 * HTTP API handlers (see api.h). Every reply is JSON except /metrics. The client's answer for a
 * transaction always comes from its outcome: first-time answers and replays are built the same
 * way, so they cannot disagree.
 */
#include "api.h"

#include "indoubt.h"
#include "log.h"
#include "markers.h"
#include "owner.h"
#include "preflight.h"
#include "recovery.h"
#include "status.h"
#include "store.h"
#include "txn.h"
#include "ui.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TXN_PATH "/v1/transactions"
#define INDOUBT_PATH "/v1/in-doubt"
#define TAKEOVER_PATH "/v1/takeover"

/* ---- replies ----------------------------------------------------------------------------- */

static void respond_json(http_request *req, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    http_respond(req, status, NULL, s, strlen(s));
    free(s);
}

/* A JSON array of participant names (their charset needs no escaping) into buf. */
static void names_json(const coord *c, uint32_t mask, char *buf, size_t len)
{
    size_t pos = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < c->nparts && pos < len; i++)
        if (mask & (1u << i))
            pos += (size_t)snprintf(buf + pos, len - pos, "%s\"%s\"", pos > 1 ? "," : "",
                                    c->parts[i].cfg->name);
    if (pos < len)
        snprintf(buf + pos, len - pos, "]");
}

/* The stored head plus the parts that change over time. */
static void respond_outcome(coord *c, http_request *req, const outcome *o, int status,
                            bool replayed)
{
    char list[CONFIG_MAX_PARTICIPANTS * 36 + 3], hlist[sizeof list];
    char *body = NULL;
    int n;
    names_json(c, o->state == OUTCOME_COMMITTED ? o->pending : 0, list, sizeof list);
    names_json(c, o->heuristic, hlist, sizeof hlist);
    /* "heuristic" names participants whose branch someone else finished: the outcome there is
     * not guaranteed to match, and the client must hear it. */
    n = asprintf(&body, "%s,\"pending\":%s,%s%s%s\"replayed\":%s}", o->reply_head, list,
                 o->heuristic ? "\"heuristic\":" : "", o->heuristic ? hlist : "",
                 o->heuristic ? "," : "", replayed || o->replayed ? "true" : "false");
    if (n < 0) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    http_respond(req, status, NULL, body, (size_t)n);
    free(body);
}

typedef struct waiting {
    coord *c;
    http_request *req;
    bool replayed;
} waiting;

static void on_settled(outcome *o, void *arg)
{
    waiting *w = arg;
    respond_outcome(w->c, w->req, o, o->status, w->replayed);
    free(w);
}

static void wait_for(coord *c, http_request *req, outcome *o, bool replayed)
{
    waiting *w = malloc(sizeof *w);
    if (!w) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    *w = (waiting){c, req, replayed};
    outcome_wait(o, on_settled, w);
}

/* ---- POST /v1/transactions --------------------------------------------------------------- */

static bool lookup_part(const char *name, void *arg, request_participant *out)
{
    const coord *c = arg;
    out->index = coord_part_index(c, name);
    return out->index >= 0 &&
           guard_dialect_of(c->parts[out->index].cfg->driver, &out->dialect) == 0;
}

static const coord_part *unready_part(const coord *c, const txn_request *req)
{
    for (int i = 0; i < req->nbranches; i++)
        if (!status_part_usable(c, &c->parts[req->branches[i].participant]))
            return &c->parts[req->branches[i].participant];
    return NULL;
}

/* A repeated id: replay, conflict, or wait for the one in flight (docs/design.md section 3). */
static void submit_repeated(coord *c, http_request *req, txn_request *treq, outcome *o)
{
    bool same = memcmp(o->digest, treq->digest, REQUEST_DIGEST_LEN) == 0;
    char msg[160];
    request_free(treq);
    if (!same) {
        snprintf(msg, sizeof msg, "id '%s' was already used with a different request", o->id);
        http_respond_error(req, 422, msg);
        return;
    }
    if (o->state == OUTCOME_IN_PROGRESS)
        wait_for(c, req, o, true);
    else
        respond_outcome(c, req, o, o->status, true);
}

static bool admit(coord *c, http_request *req, const txn_request *treq)
{
    char msg[400];
    const coord_part *p;
    if (c->draining) {
        http_respond_error(req, 503, "shutting down: not accepting new transactions");
        return false;
    }
    if (coord_inflight(c) >= c->cfg->max_inflight) {
        snprintf(msg, sizeof msg, "overloaded: %d transactions in flight (max_inflight)",
                 coord_inflight(c));
        http_respond_error(req, 503, msg);
        return false;
    }
    p = unready_part(c, treq);
    if (p) {
        snprintf(msg, sizeof msg, "participant %s is not available yet (%s)", p->cfg->name,
                 !owner_owns(c, p->index)       ? owner_state(c, p->index)
                 : !recovery_ready(c, p->index) ? "recovery running"
                                                : preflight_state(c, p->index));
        http_respond_error(req, 503, msg);
        return false;
    }
    return true;
}

static void start_new(coord *c, http_request *req, txn_request *treq);

typedef struct submitting {
    coord *c;
    http_request *req;
    txn_request *treq;
} submitting;

/* The decision store answered for an id this process does not know (store.h). */
static void on_store_found(void *arg, int status, const store_row *r, const char *why)
{
    submitting *s = arg;
    outcome *o = outcome_find(s->c->outcomes, s->treq->id);
    char msg[400];
    if (!o && status == 200 && !(o = coord_outcome_from_row(s->c, r, false))) {
        request_free(s->treq);
        http_respond_error(s->req, 500, "out of memory");
    } else if (o) {
        submit_repeated(s->c, s->req, s->treq, o); /* found, or started here meanwhile */
    } else if (status == 404) {
        start_new(s->c, s->req, s->treq);
    } else {
        request_free(s->treq);
        snprintf(msg, sizeof msg, "cannot tell whether id was used before: decision store: %s",
                 why);
        http_respond_error(s->req, 503, msg);
    }
    free(s);
}

static void submit(coord *c, http_request *req)
{
    const config *cfg = c->cfg;
    request_limits lim = {cfg->max_branches,       cfg->max_statements, 256, 65536,
                          cfg->default_timeout_ms, cfg->max_timeout_ms};
    char err[256];
    txn_request *treq;
    submitting *s;
    outcome *o;

    treq = request_parse(req->body, req->body_len, &lim, lookup_part, c, err, sizeof err);
    if (!treq) {
        metric_counter_add(c->txn_rejected, 1);
        http_respond_error(req, 400, err);
        return;
    }
    o = treq->id_given ? outcome_find(c->outcomes, treq->id) : NULL;
    if (o) {
        submit_repeated(c, req, treq, o);
        return;
    }
    /* Any coordinator sharing the store may have run this id: it must replay, not run again. */
    if (c->store && treq->id_given) {
        if (!(s = malloc(sizeof *s))) {
            request_free(treq);
            http_respond_error(req, 500, "out of memory");
            return;
        }
        *s = (submitting){c, req, treq};
        store_find(c->store, treq->id, on_store_found, s);
        return;
    }
    start_new(c, req, treq);
}

static void start_new(coord *c, http_request *req, txn_request *treq)
{
    char gtrid[PX_XID_PART_MAX + 1];
    outcome *o;
    uint64_t seq;

    if (!admit(c, req, treq)) {
        metric_counter_add(c->txn_rejected, 1);
        request_free(treq);
        return;
    }
    seq = txn_assign(c, gtrid, sizeof gtrid);
    o = outcome_create(c->outcomes, treq->id_given ? treq->id : gtrid, gtrid, treq->digest);
    if (!o) {
        request_free(treq);
        http_respond_error(req, 500, "out of memory");
        return;
    }
    wait_for(c, req, o, false);
    if (txn_start(c, treq, o, seq) != 0) {
        outcome_settle(c->outcomes, o, OUTCOME_ABORTED, 500,
                       strdup("{\"error\":\"out of memory\",\"outcome\":\"aborted\""),
                       coord_now_ms());
        outcome_unindex(c->outcomes, o);
        outcome_release(c->outcomes, o);
    }
}

/* ---- GET endpoints ----------------------------------------------------------------------- */

typedef struct asked {
    coord *c;
    http_request *req;
    char id[REQUEST_ID_MAX + 1];
} asked;

/* Nobody here knows the id: 503 when the place asked could not say (why names it and the
 * reason), 404 when it said there is no such id. */
static void respond_unknown(asked *a, int status, const char *why)
{
    char msg[REQUEST_ID_MAX + 512];
    if (status == 503) {
        snprintf(msg, sizeof msg, "cannot tell whether id '%s' committed: %s", a->id, why);
        http_respond_error(a->req, 503, msg);
    } else {
        http_respond_error(a->req, 404,
                           "unknown transaction id: not committed, or older than the retention");
    }
}

/* The journal does not know the id; the markers did answer (markers_find). */
static void on_markers(void *arg, int status, const char *participant, const char *gtrid,
                       const char *why)
{
    asked *a = arg;
    char *body = NULL;
    int n;
    if (status == 200) {
        /* A one-phase commit whose record the journal lost in a crash: the marker is its proof;
         * the results went only to the original reply. */
        n = asprintf(&body,
                     "{\"id\":\"%s\",\"xid\":\"%s\",\"outcome\":\"committed\",\"branches\":"
                     "[{\"participant\":\"%s\",\"results\":null}],\"pending\":[],"
                     "\"replayed\":false}",
                     a->id, gtrid, participant);
        if (n < 0)
            http_respond_error(a->req, 500, "out of memory");
        else
            http_respond(a->req, 200, NULL, body, (size_t)n);
        free(body);
    } else {
        respond_unknown(a, status == 503 ? 503 : 404, why);
    }
    free(a);
}

/* The decision store answered for an id this process does not know. */
static void on_store_shown(void *arg, int status, const store_row *r, const char *why)
{
    asked *a = arg;
    char reason[400];
    outcome *o = status == 200 ? coord_outcome_from_row(a->c, r, false) : NULL;
    if (o && o->state != OUTCOME_IN_PROGRESS) {
        respond_outcome(a->c, a->req, o, 200, false);
    } else {
        /* A row that does not decode (200 without an outcome) cannot tell either. */
        snprintf(reason, sizeof reason, "decision store: %s", why ? why : "out of memory");
        respond_unknown(a, status == 200 || status == 503 ? 503 : 404, reason);
    }
    free(a);
}

static void show_transaction(coord *c, http_request *req, const char *id)
{
    outcome *o = request_id_valid(id) ? outcome_find(c->outcomes, id) : NULL;
    asked *a;
    if (!o) {
        if (!request_id_valid(id) || !(a = malloc(sizeof *a))) {
            http_respond_error(req, 404,
                               "unknown transaction id: not committed, or older than "
                               "the retention");
            return;
        }
        a->req = req;
        a->c = c;
        snprintf(a->id, sizeof a->id, "%s", id);
        if (c->store)
            store_find(c->store, id, on_store_shown, a);
        else
            markers_find(c, id, on_markers, a);
        return;
    }
    if (o->state == OUTCOME_IN_PROGRESS) {
        respond_json(req, 200,
                     json_pack("{s:s, s:s, s:s, s:[]}", "id", o->id, "xid", o->gtrid, "outcome",
                               "in_progress", "pending"));
        return;
    }
    /* A lookup succeeds (200) whatever the outcome; the body is the stored reply. */
    respond_outcome(c, req, o, 200, false);
}

static void readyz(coord *c, http_request *req)
{
    json_t *parts = json_object();
    bool ready = status_ready(c) && !c->draining;
    char state[STATUS_STATE_MAX];
    for (int i = 0; i < c->nparts; i++)
        json_object_set_new(parts, c->parts[i].cfg->name,
                            json_string(status_part_state(c, &c->parts[i], state, sizeof state)));
    respond_json(req, ready ? 200 : 503,
                 json_pack("{s:b, s:o}", "ready", ready, "participants", parts));
}

static void status_page(coord *c, http_request *req)
{
    json_t *obj = status_json(c);
    if (!obj) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    respond_json(req, 200, obj);
}

static void heuristics_page(coord *c, http_request *req)
{
    char *text = heuristics_json(&c->heuristics);
    if (!text) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    http_respond(req, 200, NULL, text, strlen(text));
    free(text);
}

static void metrics_page(coord *c, http_request *req)
{
    size_t len = 0;
    char *text = metrics_render(c->metrics, &len);
    if (!text) {
        http_respond_error(req, 500, "out of memory");
        return;
    }
    http_respond(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}

/* POST /v1/in-doubt/{xid}/{commit|rollback}[?participant=name] */
static void resolve(coord *c, http_request *req, const char *rest)
{
    char gtrid[PX_XID_PART_MAX + 1], participant[40] = "";
    const char *slash = strchr(rest, '/');
    if (!slash || (size_t)(slash - rest) > PX_XID_PART_MAX) {
        http_respond_error(req, 404,
                           "use /v1/in-doubt/{xid}/commit or /v1/in-doubt/{xid}/rollback");
        return;
    }
    snprintf(gtrid, sizeof gtrid, "%.*s", (int)(slash - rest), rest);
    if (strncmp(req->query, "participant=", 12) == 0)
        snprintf(participant, sizeof participant, "%s", req->query + 12);
    indoubt_resolve(c, req, gtrid, slash + 1, participant[0] ? participant : NULL);
}

/* ---- routing ----------------------------------------------------------------------------- */

/* Constant time in the token's length, so a wrong guess leaks nothing about the right one. */
static bool token_ok(const coord *c, const http_request *req)
{
    const char *want = c->cfg->api_token, *got = req->authorization;
    size_t wlen, glen;
    unsigned char diff = 0;
    if (!want)
        return true;
    if (!got || strncmp(got, "Bearer ", 7) != 0)
        return false;
    got += 7;
    wlen = strlen(want);
    glen = strlen(got);
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < glen ? got[i] : 0);
    return diff == 0 && glen == wlen;
}

static void handle(http_request *req, void *arg)
{
    coord *c = arg;
    bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
    const char *path = req->path;

    if (get && strcmp(path, "/healthz") == 0) {
        respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (get && strcmp(path, "/readyz") == 0) {
        readyz(c, req);
        return;
    }
    if (get && ui_is_asset(path)) {
        ui_serve(req, path);
        return;
    }
    if (!token_ok(c, req)) {
        http_respond_error(req, 401, "missing or invalid bearer token");
        return;
    }
    if (get && strcmp(path, "/metrics") == 0)
        metrics_page(c, req);
    else if (get && strcmp(path, INDOUBT_PATH) == 0)
        indoubt_list(c, req);
    else if (get && strcmp(path, "/v1/heuristics") == 0)
        heuristics_page(c, req);
    else if (get && strcmp(path, "/v1/status") == 0)
        status_page(c, req);
    else if (post && strncmp(path, INDOUBT_PATH "/", sizeof INDOUBT_PATH) == 0)
        resolve(c, req, path + sizeof INDOUBT_PATH);
    else if (post && strncmp(path, TAKEOVER_PATH "/", sizeof TAKEOVER_PATH) == 0)
        indoubt_takeover(c, req, path + sizeof TAKEOVER_PATH, req->query);
    else if (post && strcmp(path, TXN_PATH) == 0)
        submit(c, req);
    else if (get && strncmp(path, TXN_PATH "/", sizeof TXN_PATH) == 0)
        show_transaction(c, req, path + sizeof TXN_PATH);
    else if (strcmp(path, TXN_PATH) == 0 || strncmp(path, TXN_PATH "/", sizeof TXN_PATH) == 0)
        http_respond_error(req, 405, "method not allowed");
    else
        http_respond_error(req, 404, "no such endpoint");
}

/* Before a body is read: the endpoints that need the token refuse a request without it. */
static bool authorize_head(const http_request *head, void *arg)
{
    bool public_path = strcmp(head->method, "GET") == 0 &&
                       (strcmp(head->path, "/healthz") == 0 || strcmp(head->path, "/readyz") == 0 ||
                        ui_is_asset(head->path));
    return public_path || token_ok(arg, head);
}

int api_start(coord *c, http_server **out, char *err, size_t errlen)
{
    const config *cfg = c->cfg;
    http_limits lim = {
        .max_header_bytes = 16384,
        .max_body_bytes = cfg->max_body_bytes,
        .max_connections = cfg->http_max_connections,
        .idle_timeout_ms = cfg->http_idle_timeout_ms,
        .header_timeout_ms = cfg->http_header_timeout_ms,
        .body_timeout_ms = cfg->http_body_timeout_ms,
        .max_buffered_bytes = cfg->http_max_buffered_bytes,
        .authorize = authorize_head,
    };
    int rc =
        http_server_start(out, c->loop, c->cfg->listen_host, c->cfg->listen_port, &lim, handle, c);
    if (rc != 0)
        snprintf(err, errlen, "cannot listen on %s:%d: %s", c->cfg->listen_host,
                 c->cfg->listen_port, uv_strerror(rc));
    return rc;
}
