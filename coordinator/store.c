/*
 * The decision store (see store.h): blocking libpq at start, the participant pool's PostgreSQL
 * driver on the loop afterwards.
 */
#include "store.h"

#include "crash.h"
#include "log.h"
#include "pool.h"
#include "schema.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_BATCH 64         /* lazy records per round trip */
#define STORE_PRUNE_BATCH 1000 /* rows deleted per prune */
#define STORE_RETRY_MS 200     /* first wait before asking again after a lost answer */
#define STORE_RETRY_MAX_MS 5000
/* The holder stops acting lease_ms / 4 before its lease can lapse on the store: the margin covers
 * the time a renew spends in flight before the store stamps it, and clock rate differences. */
#define STORE_LEASE_MARGIN_DIV 4

extern const char schema_ddl_store[];

/* Inserts the decision only under this node's current epoch (the node row locked FOR KEY SHARE:
 * a takeover's FOR UPDATE waits for it, and once the epoch moved the row no longer matches, so
 * nothing is inserted). ON CONFLICT: the same gtrid (an earlier attempt whose answer was lost)
 * or the same client id (another coordinator's transaction) inserts nothing. */
static const char decide_sql[] =
    "INSERT INTO xacoord_decisions (gtrid, client_id, digest, outcome, status, reply, pending, "
    "node_id, epoch) SELECT $1, $2, $3, 'commit', $4, $5, $6, node_id, epoch FROM xacoord_nodes "
    "WHERE node_id = $7 AND epoch = $8 FOR KEY SHARE ON CONFLICT DO NOTHING";
/* Run after decide_sql in the same round trip, with a snapshot of its own: what holds the gtrid
 * or the client id now. */
static const char decided_sql[] =
    "SELECT gtrid, client_id, digest, outcome, status, reply, pending, "
    "(extract(epoch FROM created_at) * 1000)::bigint FROM xacoord_decisions "
    "WHERE gtrid = $1 OR client_id = $2 ORDER BY gtrid = $1 DESC LIMIT 1";
static const char find_sql[] =
    "SELECT gtrid, client_id, digest, outcome, status, reply, pending, "
    "(extract(epoch FROM created_at) * 1000)::bigint FROM xacoord_decisions "
    "WHERE client_id = $1";
static const char unfinished_sql[] =
    "SELECT gtrid, client_id, digest, outcome, status, reply, pending, "
    "(extract(epoch FROM created_at) * 1000)::bigint FROM xacoord_decisions "
    "WHERE node_id = $1 AND outcome = 'commit' AND pending <> ''";
static const char abort_sql[] =
    "INSERT INTO xacoord_decisions (gtrid, client_id, digest, outcome, status, reply, pending, "
    "node_id, epoch) VALUES ($1, $2, $3, 'abort', $4, $5, '', $6, $7) ON CONFLICT DO NOTHING";
static const char done_sql[] = "UPDATE xacoord_decisions SET pending = '' WHERE gtrid = $1";
static const char prune_sql[] =
    "DELETE FROM xacoord_decisions WHERE gtrid IN (SELECT gtrid FROM xacoord_decisions WHERE "
    "created_at < now() - $1 * interval '1 second' AND pending = '' LIMIT 1000)";
/* The holder renews its lease while its epoch stands; 0 rows: the node was taken. */
static const char renew_sql[] =
    "UPDATE xacoord_nodes SET expires_at = now() + $3 * interval '1 millisecond' "
    "WHERE node_id = $1 AND epoch = $2";
static const char lease_sql[] =
    "SELECT holder, greatest(0, (extract(epoch FROM expires_at - now()) * 1000)::bigint) "
    "FROM xacoord_nodes WHERE node_id = $1";
static const char bump_sql[] =
    "UPDATE xacoord_nodes SET epoch = epoch + 1, holder = $2, "
    "expires_at = now() + $3 * interval '1 millisecond' WHERE node_id = $1 RETURNING epoch";

/* A row's text fields, owned. */
typedef struct row_copy {
    char *gtrid, *client_id, *reply, *pending;
    char digest_hex[2 * REQUEST_DIGEST_LEN + 1];
    char status[12];
} row_copy;

/* A lazily written record (abort or done), queued until the next flush. */
typedef struct lazy {
    bool done; /* else an abort row */
    row_copy r;
    struct lazy *next;
} lazy;

struct store {
    uv_loop_t *loop;
    const config *cfg;
    px_pool *pool;
    char node_id[17];
    uint64_t epoch;
    char epoch_text[24];
    lazy *queue, **queue_tail;
    struct decide_op *decides; /* decisions in flight (store_close settles the waiting ones) */
    int queued;
    bool flushing, closing, pruning;
    uv_timer_t flush_timer;
    px_pool_req flush_req;
    px_stmt flush_stmts[STORE_BATCH];
    px_param flush_params[STORE_BATCH][7];
    lazy *flush_batch;
    uv_timer_t renew_timer;
    px_pool_req renew_req;
    px_param renew_params[3];
    px_stmt renew_stmt;
    char lease_text[16];
    bool renewing;
    bool lost; /* the epoch was raised by another process */
    /* Test only (fault point store-ignore-lease): the lease never stops this process, so that
     * a test sees the epoch's row lock fence it alone. */
    bool lease_ignored;
    void (*on_lost)(void *arg);
    void *on_lost_arg;
    uint64_t renew_sent_ms; /* loop time (monotonic) the renew in flight was sent */
    uint64_t renewed_ms;    /* loop time the last successful renew was sent: the lease holds
                               until renewed_ms + lease_ms on the store, so this process acts
                               only until renewed_ms + lease_ms - margin */
    px_pool_req prune_req;
    px_param prune_param;
    px_stmt prune_stmt;
    char prune_text[24];
};

uint64_t store_epoch(const store *s)
{
    return s->epoch;
}

static void text_param(px_param *p, const char *s)
{
    *p = (px_param){.type = PX_P_TEXT, .text = s, .len = strlen(s)};
}

/* Every statement of the store touches no session state, and its row count is read, not
 * expected. */
static px_stmt store_stmt(const char *sql, const px_param *params, int nparams)
{
    return (px_stmt){.sql = sql,
                     .params = params,
                     .nparams = nparams,
                     .expect_rows = -1,
                     .session_neutral = true};
}

static void row_copy_free(row_copy *r)
{
    free(r->gtrid);
    free(r->client_id);
    free(r->reply);
    free(r->pending);
}

static bool row_copy_set(row_copy *c, const store_row *r)
{
    c->gtrid = strdup(r->gtrid);
    c->client_id = strdup(r->client_id);
    c->reply = strdup(r->reply ? r->reply : "");
    c->pending = strdup(r->pending ? r->pending : "");
    request_digest_hex(r->digest, c->digest_hex);
    snprintf(c->status, sizeof c->status, "%d", r->status);
    if (c->gtrid && c->client_id && c->reply && c->pending)
        return true;
    row_copy_free(c);
    return false;
}

/* Reads the 8 columns of the SELECTs above; false when a cell is not what the schema promises
 * (a row written by something else: it is refused, never guessed at). */
static bool row_from_cells(char *const *cells, store_row *r)
{
    char *end;
    long status;
    memset(r, 0, sizeof *r);
    for (int i = 0; i < 8; i++)
        if (!cells[i])
            return false;
    r->gtrid = cells[0];
    r->client_id = cells[1];
    r->commit = strcmp(cells[3], "commit") == 0;
    status = strtol(cells[4], &end, 10);
    r->status = (*end || status < 200 || status > 599) ? (r->commit ? 200 : 409) : (int)status;
    r->reply = cells[5];
    r->pending = cells[6];
    r->time_ms = strtoll(cells[7], NULL, 10);
    return request_digest_parse(cells[2], r->digest) == 0 && request_id_valid(r->client_id) &&
           strlen(r->gtrid) <= PX_XID_PART_MAX;
}

/* ---- start-up (blocking) ----------------------------------------------------------------- */

/* Server notices ("relation already exists, skipping") are not the operator's business. */
static void quiet_notice(void *arg, const char *message)
{
    (void)arg, (void)message;
}

static PGconn *connect_blocking(const config_store *st, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "password", "connect_timeout", NULL};
    char timeout[16];
    const char *vals[4];
    PGconn *pg;
    snprintf(timeout, sizeof timeout, "%" PRIu32, (st->connect_timeout_ms + 999) / 1000);
    vals[0] = st->conninfo;
    vals[1] = st->password;
    vals[2] = timeout;
    vals[3] = NULL;
    if (!st->password) {
        keys[1] = "connect_timeout";
        vals[1] = timeout;
        keys[2] = NULL;
    }
    pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "decision store: cannot connect: %s",
                 pg ? PQerrorMessage(pg) : "out of memory");
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, quiet_notice, NULL);
    return pg;
}

/* Runs one statement with text parameters; the result on success, NULL with err set. */
static PGresult *run(PGconn *pg, const char *what, const char *sql, int n, const char *const *p,
                     char *err, size_t errlen)
{
    PGresult *res = n ? PQexecParams(pg, sql, n, NULL, p, NULL, NULL, 0) : PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    snprintf(err, errlen, "decision store: %s: %s", what,
             res ? PQresultErrorMessage(res) : PQerrorMessage(pg));
    PQclear(res);
    return NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Another process's lease on this node must lapse before the node is taken: a crashed holder's
 * lapses by itself (a restart waits at most lease_ms), a live one keeps renewing it, and then
 * this start is refused - two daemons with one node_id would fence each other in turns. */
static int wait_for_lease(store *s, PGconn *pg, char *err, size_t errlen)
{
    const char *p[1] = {s->node_id};
    uint64_t waited = 0, limit = 2 * (uint64_t)s->cfg->store.lease_ms + 1000;
    for (;;) {
        PGresult *res = run(pg, "reading the node's lease", lease_sql, 1, p, err, errlen);
        long long left;
        if (!res)
            return -EIO;
        if (PQntuples(res) == 0 || !*PQgetvalue(res, 0, 0) ||
            (left = strtoll(PQgetvalue(res, 0, 1), NULL, 10)) <= 0) {
            PQclear(res);
            return 0;
        }
        if (waited >= limit) {
            snprintf(err, errlen,
                     "decision store: node %s is held by \"%s\", whose lease keeps being "
                     "renewed: another coordinator runs with this node_id",
                     s->node_id, PQgetvalue(res, 0, 0));
            PQclear(res);
            return -EBUSY;
        }
        if (waited == 0)
            log_warn("store",
                     "node %s is held by \"%s\" for %lld ms more: waiting for the "
                     "lease to lapse",
                     s->node_id, PQgetvalue(res, 0, 0), left);
        PQclear(res);
        left = left > 200 ? 200 : left + 1;
        sleep_ms((unsigned)left);
        waited += (uint64_t)left;
    }
}

static int take_node(store *s, PGconn *pg, const char *holder, char *err, size_t errlen)
{
    char lease[16];
    const char *p[3] = {s->node_id, holder, lease};
    PGresult *res;
    int rc;
    snprintf(lease, sizeof lease, "%" PRIu32, s->cfg->store.lease_ms);
    if ((rc = wait_for_lease(s, pg, err, errlen)) != 0)
        return rc;
    /* The lease runs from before the take was sent (the store stamps it later). */
    uv_update_time(s->loop);
    s->renewed_ms = uv_now(s->loop);
    if (!(res = run(pg, "BEGIN", "BEGIN", 0, NULL, err, errlen)))
        return -EIO;
    PQclear(res);
    /* take_sql holds three statements; PQexecParams takes one, so they go one by one. */
    if (!(res = run(pg, "creating the node row",
                    "INSERT INTO xacoord_nodes (node_id, epoch, holder, expires_at) "
                    "VALUES ($1, 0, '', now()) ON CONFLICT DO NOTHING",
                    1, p, err, errlen)))
        goto fail;
    PQclear(res);
    if (!(res = run(pg, "locking the node row",
                    "SELECT epoch FROM xacoord_nodes WHERE node_id = $1 FOR UPDATE", 1, p, err,
                    errlen)))
        goto fail;
    PQclear(res);
    if (!(res = run(pg, "raising the epoch", bump_sql, 3, p, err, errlen)))
        goto fail;
    s->epoch = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (!(res = run(pg, "COMMIT", "COMMIT", 0, NULL, err, errlen)))
        return -EIO;
    PQclear(res);
    snprintf(s->epoch_text, sizeof s->epoch_text, "%" PRIu64, s->epoch);
    return 0;
fail:
    PQclear(PQexec(pg, "ROLLBACK"));
    return -EIO;
}

/* ---- the lease --------------------------------------------------------------------------- */

bool store_holds_lease(const store *s)
{
    uint32_t lease = s->cfg->store.lease_ms;
    return s->lease_ignored ||
           uv_now(s->loop) < s->renewed_ms + lease - lease / STORE_LEASE_MARGIN_DIV;
}

static void on_renewed(px_conn *conn, const px_error *err, int failed_index,
                       const px_result *results, int nresults, void *arg)
{
    store *s = arg;
    (void)failed_index;
    s->renewing = false;
    if (err) {
        px_pool_discard(s->pool, conn);
        log_warn("store", "renewing the lease of node %s: %s", s->node_id, err->message);
        return;
    }
    px_pool_release(s->pool, conn);
    if ((nresults < 1 || results[0].rows_affected != 1) && !s->lease_ignored) {
        /* A peer (or a newer process of this node) raised the epoch: nothing this process
         * decides can be written any more, and its recovery must not act for the node. */
        log_error("store",
                  "node %s was taken over (its epoch is no longer %" PRIu64 "): "
                  "stopping",
                  s->node_id, s->epoch);
        s->lost = true;
        if (s->on_lost)
            s->on_lost(s->on_lost_arg);
        return;
    }
    s->renewed_ms = s->renew_sent_ms;
}

static void on_renew_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    store *s = req->data;
    if (!conn || px_conn_base(conn)->driver->exec(conn, &s->renew_stmt, 1, on_renewed, s) != 0) {
        if (conn)
            px_pool_discard(s->pool, conn);
        log_warn("store", "renewing the lease of node %s: %s", s->node_id,
                 err ? err->message : "no connection");
        s->renewing = false;
    }
}

static void on_renew_timer(uv_timer_t *t)
{
    store *s = t->data;
    if (s->renewing || s->closing || s->lost)
        return;
    if (!store_holds_lease(s))
        log_warn("store",
                 "the lease of node %s was not renewed in time: taking no decisions "
                 "and resolving nothing until it is",
                 s->node_id);
    s->renewing = true;
    s->renew_sent_ms = uv_now(s->loop);
    s->renew_req.data = s;
    if (px_pool_acquire(s->pool, &s->renew_req, on_renew_conn) != 0)
        s->renewing = false;
}

static void start_renewing(store *s)
{
    snprintf(s->lease_text, sizeof s->lease_text, "%" PRIu32, s->cfg->store.lease_ms);
    text_param(&s->renew_params[0], s->node_id);
    text_param(&s->renew_params[1], s->epoch_text);
    text_param(&s->renew_params[2], s->lease_text);
    s->renew_stmt = store_stmt(renew_sql, s->renew_params, 3);
    uv_timer_init(s->loop, &s->renew_timer);
    s->renew_timer.data = s;
    uv_timer_start(&s->renew_timer, on_renew_timer, s->cfg->store.renew_ms, s->cfg->store.renew_ms);
}

void store_on_lost(store *s, void (*cb)(void *arg), void *arg)
{
    s->on_lost = cb;
    s->on_lost_arg = arg;
}

int store_open(store **out, uv_loop_t *loop, const config *cfg, const char *holder, char *err,
               size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    PGconn *pg;
    PGresult *res;
    int rc;
    *out = NULL;
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->loop = loop;
    s->cfg = cfg;
    s->queue_tail = &s->queue;
    snprintf(s->node_id, sizeof s->node_id, "%s", cfg->node_id);
    if (!(pg = connect_blocking(&cfg->store, err, errlen))) {
        free(s);
        return -EIO;
    }
    res = run(pg,
              "the tables are missing or not granted (run sql/xacoord-store.sql, or xacoord "
              "--init-participants)",
              "SELECT 1 FROM xacoord_decisions, xacoord_nodes LIMIT 0", 0, NULL, err, errlen);
    rc = res ? take_node(s, pg, holder, err, errlen) : -EIO;
    if (rc != 0) {
        PQclear(res);
        PQfinish(pg);
        free(s);
        return rc;
    }
    PQclear(res);
    PQfinish(pg);
    s->pool = px_pool_new(loop, &cfg->store.target, cfg->store.pool_size);
    if (!s->pool) {
        snprintf(err, errlen, "decision store: cannot create its pool");
        free(s);
        return -ENOMEM;
    }
    uv_timer_init(loop, &s->flush_timer);
    s->flush_timer.data = s;
    px_pool_warm(s->pool, 1);
    s->lease_ignored = fault_point("store-ignore-lease");
    start_renewing(s);
    log_info("store", "node %s taken at epoch %" PRIu64 " (lease %" PRIu32 " ms)", s->node_id,
             s->epoch, cfg->store.lease_ms);
    *out = s;
    return 0;
}

int store_load_unfinished(store *s, void (*fn)(const store_row *r, void *arg), void *arg, char *err,
                          size_t errlen)
{
    const char *p[1] = {s->node_id};
    PGconn *pg = connect_blocking(&s->cfg->store, err, errlen);
    PGresult *res;
    if (!pg)
        return -EIO;
    res = run(pg, "reading the unfinished decisions", unfinished_sql, 1, p, err, errlen);
    if (!res) {
        PQfinish(pg);
        return -EIO;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        char *cells[8];
        store_row r;
        for (int c = 0; c < 8; c++)
            cells[c] = PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
        if (row_from_cells(cells, &r))
            fn(&r, arg);
        else
            log_error("store", "decision row %d of node %s is malformed: ignored", i, s->node_id);
    }
    PQclear(res);
    PQfinish(pg);
    return 0;
}

int store_init_schema(const config *cfg, char *err, size_t errlen)
{
    char **stmts = NULL;
    int n = schema_statements(schema_ddl_store, &stmts);
    PGconn *pg;
    int rc = 0;
    if (n < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (!(pg = connect_blocking(&cfg->store, err, errlen))) {
        schema_statements_free(stmts, n);
        return -EIO;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        PGresult *res =
            run(pg, "creating the tables (sql/xacoord-store.sql)", stmts[i], 0, NULL, err, errlen);
        rc = res ? 0 : -EIO;
        PQclear(res);
    }
    schema_statements_free(stmts, n);
    PQfinish(pg);
    return rc;
}

/* ---- the decision ------------------------------------------------------------------------ */

struct store_decision {
    row_copy r;
    px_param params[8];
    px_stmt stmts[3];
};

static const char xact_id_sql[] = "SELECT pg_current_xact_id()::text";

store_decision *store_decision_new(store *s, const store_row *r)
{
    store_decision *d = calloc(1, sizeof *d);
    if (!d || !row_copy_set(&d->r, r)) {
        free(d);
        return NULL;
    }
    text_param(&d->params[0], d->r.gtrid);
    text_param(&d->params[1], d->r.client_id);
    text_param(&d->params[2], d->r.digest_hex);
    text_param(&d->params[3], d->r.status);
    text_param(&d->params[4], d->r.reply);
    text_param(&d->params[5], d->r.pending);
    text_param(&d->params[6], s->node_id);
    text_param(&d->params[7], s->epoch_text);
    d->stmts[0] = store_stmt(decide_sql, d->params, 8);
    d->stmts[1] = store_stmt(decided_sql, d->params, 2);
    d->stmts[2] = store_stmt(xact_id_sql, NULL, 0);
    return d;
}

const px_stmt *store_decision_stmts(const store_decision *d, bool with_xact_id, int *n)
{
    *n = with_xact_id ? 3 : 2;
    return d->stmts;
}

void store_decision_free(store_decision *d)
{
    if (!d)
        return;
    row_copy_free(&d->r);
    free(d);
}

store_verdict store_decision_verdict(const store_decision *d, const px_result *results,
                                     int nresults, store_row *winner, const char **why)
{
    *why = NULL;
    if (nresults < 2 || results[1].nrows == 0) {
        *why = "this node's epoch was raised by another process";
        return STORE_FENCED;
    }
    if (results[1].ncols != 8 || !row_from_cells(results[1].cells, winner)) {
        *why = "the decision row read back is malformed";
        return STORE_FAILED;
    }
    if (strcmp(winner->gtrid, d->r.gtrid) == 0 && winner->commit)
        return STORE_DECIDED;
    if (strcmp(winner->gtrid, d->r.gtrid) == 0) {
        *why = "an abort is recorded for this transaction";
        return STORE_FAILED;
    }
    *why = "another transaction holds this id";
    return STORE_TAKEN;
}

typedef struct decide_op {
    store *s;
    store_decision *dec;
    store_decide_cb cb;
    void *arg;
    px_pool_req req;
    unsigned attempts;
    uv_timer_t timer;
    struct decide_op *prev, *next; /* the store's decisions in flight */
} decide_op;

static void decide_send(decide_op *d);

static void on_decide_timer_closed(uv_handle_t *h)
{
    decide_op *d = h->data;
    store_decision_free(d->dec);
    free(d);
}

static void decide_finish(decide_op *d, store_verdict v, const store_row *winner, const char *why)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        d->s->decides = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->cb(d->arg, v, winner, why);
    uv_close((uv_handle_t *)&d->timer, on_decide_timer_closed);
}

static void on_decide_timer(uv_timer_t *t)
{
    decide_send(t->data);
}

/* The answer was lost: the row may or may not be there, so the same statement goes again on a
 * new connection (it inserts nothing the second time and reads what is there). */
static void decide_retry(decide_op *d, const char *why)
{
    if (d->s->closing) {
        /* Shutting down with an answer lost: the next start reads the row (or its absence). */
        decide_finish(d, STORE_UNKNOWN, NULL, "the store is closing");
        return;
    }
    unsigned ms = STORE_RETRY_MS << (d->attempts < 5 ? d->attempts : 5);
    if (ms > STORE_RETRY_MAX_MS)
        ms = STORE_RETRY_MAX_MS;
    d->attempts++;
    log_warn("store", "decision of %s: the answer was lost (%s); asking again in %u ms",
             d->dec->r.gtrid, why, ms);
    uv_timer_start(&d->timer, on_decide_timer, ms, 0);
}

static void on_decided(px_conn *conn, const px_error *err, int failed_index,
                       const px_result *results, int nresults, void *arg)
{
    decide_op *d = arg;
    store_row row;
    store_verdict v;
    const char *why;
    (void)failed_index;
    if (err && err->conn_broken) {
        px_pool_discard(d->s->pool, conn);
        decide_retry(d, err->message);
        return;
    }
    px_pool_release(d->s->pool, conn);
    if (err) {
        /* A definite error: the statement's transaction rolled back, so nothing was decided. */
        decide_finish(d, STORE_FAILED, NULL, err->message);
        return;
    }
    v = store_decision_verdict(d->dec, results, nresults, &row, &why);
    decide_finish(d, v, v == STORE_FENCED ? NULL : &row, why);
}

static void on_decide_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    decide_op *d = req->data;
    const px_driver *drv;
    if (!conn) {
        /* Nothing was sent on this attempt; an earlier one whose answer was lost must be settled
         * before anything is said, so only the first attempt may give up. */
        if (d->attempts == 0)
            decide_finish(d, STORE_FAILED, NULL, err ? err->message : "no connection");
        else
            decide_retry(d, err ? err->message : "no connection");
        return;
    }
    drv = px_conn_base(conn)->driver;
    if (drv->exec(conn, d->dec->stmts, 2, on_decided, d) == 0) {
        crash_point("store-after-decision-sent"); /* committed or not: the next start knows */
    } else {
        px_pool_discard(d->s->pool, conn);
        if (d->attempts == 0)
            decide_finish(d, STORE_FAILED, NULL, "the driver refused the statement");
        else
            decide_retry(d, "the driver refused the statement");
    }
}

static void decide_send(decide_op *d)
{
    d->req.data = d;
    if (px_pool_acquire(d->s->pool, &d->req, on_decide_conn) != 0) {
        if (d->attempts == 0)
            decide_finish(d, STORE_FAILED, NULL, "the store's pool is closing");
        else
            decide_retry(d, "the store's pool is closing");
    }
}

void store_decide(store *s, const store_row *r, store_decide_cb cb, void *arg)
{
    decide_op *d;
    if (s->lost || !store_holds_lease(s)) {
        /* The row lock would refuse it anyway once the node is taken; before that, a process
         * that cannot renew its lease stops deciding so that a peer can take over cleanly. */
        cb(arg, STORE_FAILED, NULL, "this coordinator does not hold its node's lease");
        return;
    }
    d = calloc(1, sizeof *d);
    if (!d || !(d->dec = store_decision_new(s, r))) {
        free(d);
        cb(arg, STORE_FAILED, NULL, "out of memory");
        return;
    }
    d->s = s;
    d->cb = cb;
    d->arg = arg;
    d->next = s->decides;
    if (d->next)
        d->next->prev = d;
    s->decides = d;
    uv_timer_init(s->loop, &d->timer);
    d->timer.data = d;
    decide_send(d);
}

/* ---- a lost COMMIT answer ---------------------------------------------------------------- */

typedef struct status_op {
    store *s;
    char xid[32];
    store_status_cb cb;
    void *arg;
    px_pool_req req;
    px_param param;
    px_stmt stmt;
} status_op;

static void on_status(px_conn *conn, const px_error *err, int failed_index,
                      const px_result *results, int nresults, void *arg)
{
    status_op *o = arg;
    const char *st;
    (void)failed_index;
    if (err) {
        if (err->conn_broken)
            px_pool_discard(o->s->pool, conn);
        else
            px_pool_release(o->s->pool, conn);
        o->cb(o->arg, -1, err->message);
        free(o);
        return;
    }
    px_pool_release(o->s->pool, conn);
    st =
        nresults > 0 && results[0].nrows == 1 && results[0].ncols == 1 ? results[0].cells[0] : NULL;
    if (st && strcmp(st, "committed") == 0)
        o->cb(o->arg, 1, NULL);
    else if (st && strcmp(st, "aborted") == 0)
        o->cb(o->arg, 0, NULL);
    else
        o->cb(o->arg, -1, st ? "still in progress" : "the transaction is unknown to the store");
    free(o);
}

static void on_status_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    status_op *o = req->data;
    if (!conn || px_conn_base(conn)->driver->exec(conn, &o->stmt, 1, on_status, o) != 0) {
        if (conn)
            px_pool_discard(o->s->pool, conn);
        o->cb(o->arg, -1, err ? err->message : "no connection");
        free(o);
    }
}

void store_xact_status(store *s, const char *xact_id, store_status_cb cb, void *arg)
{
    status_op *o = calloc(1, sizeof *o);
    if (!o) {
        cb(arg, -1, "out of memory");
        return;
    }
    *o = (status_op){.s = s, .cb = cb, .arg = arg};
    snprintf(o->xid, sizeof o->xid, "%s", xact_id);
    text_param(&o->param, o->xid);
    o->stmt = store_stmt("SELECT pg_xact_status($1::xid8)", &o->param, 1);
    o->req.data = o;
    if (px_pool_acquire(s->pool, &o->req, on_status_conn) != 0) {
        free(o);
        cb(arg, -1, "the store's pool is closing");
    }
}

/* ---- lazy records ------------------------------------------------------------------------ */

static void flush_start(store *s);
static void on_flush_timer(uv_timer_t *t)
{
    flush_start(t->data);
}

static void lazy_free_list(lazy *l)
{
    while (l) {
        lazy *next = l->next;
        row_copy_free(&l->r);
        free(l);
        l = next;
    }
}

static void flush_again(store *s)
{
    s->flushing = false;
    lazy_free_list(s->flush_batch);
    s->flush_batch = NULL;
    if (s->queue && !s->closing)
        uv_timer_start(&s->flush_timer, on_flush_timer, 0, 0);
}

static void on_flushed(px_conn *conn, const px_error *err, int failed_index,
                       const px_result *results, int nresults, void *arg)
{
    store *s = arg;
    (void)failed_index, (void)results, (void)nresults;
    if (err) {
        log_warn("store",
                 "lazy decision records not written (%s): a replay of an aborted id "
                 "runs it again, an unfinished commit is resolved again at start",
                 err->message);
        px_pool_discard(s->pool, conn);
    } else {
        px_pool_release(s->pool, conn);
    }
    flush_again(s);
}

static int batch_stmts(store *s)
{
    int n = 0;
    for (lazy *l = s->flush_batch; l; l = l->next, n++) {
        px_param *p = s->flush_params[n];
        text_param(&p[0], l->r.gtrid);
        if (l->done) {
            s->flush_stmts[n] = store_stmt(done_sql, p, 1);
            continue;
        }
        text_param(&p[1], l->r.client_id);
        text_param(&p[2], l->r.digest_hex);
        text_param(&p[3], l->r.status);
        text_param(&p[4], l->r.reply);
        text_param(&p[5], s->node_id);
        text_param(&p[6], s->epoch_text);
        s->flush_stmts[n] = store_stmt(abort_sql, p, 7);
    }
    return n;
}

/* A batch that was never sent goes back to the head of the queue while closing: the clean stop
 * writes it (running, it is dropped as before - a dead store must not make the loop spin). */
static void requeue_batch(store *s)
{
    lazy **tail = &s->flush_batch;
    while (*tail) {
        tail = &(*tail)->next;
        s->queued++;
    }
    *tail = s->queue;
    if (!s->queue)
        s->queue_tail = tail;
    s->queue = s->flush_batch;
    s->flush_batch = NULL;
}

static void on_flush_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    store *s = req->data;
    int n = batch_stmts(s);
    if (!conn && s->closing) {
        requeue_batch(s);
        flush_again(s);
        return;
    }
    if (!conn || px_conn_base(conn)->driver->exec(conn, s->flush_stmts, n, on_flushed, s) != 0) {
        log_warn("store", "lazy decision records not written: %s",
                 conn  ? "the driver refused them"
                 : err ? err->message
                       : "no connection");
        if (conn)
            px_pool_discard(s->pool, conn);
        flush_again(s);
    }
}

/* Takes up to STORE_BATCH queued records and writes them in one round trip (one transaction). */
static void flush_start(store *s)
{
    lazy **tail = &s->flush_batch;
    if (s->flushing || !s->queue)
        return;
    s->flushing = true;
    for (int n = 0; n < STORE_BATCH && s->queue; n++) {
        lazy *l = s->queue;
        s->queue = l->next;
        l->next = NULL;
        *tail = l;
        tail = &l->next;
        s->queued--;
    }
    if (!s->queue)
        s->queue_tail = &s->queue;
    s->flush_req.data = s;
    if (px_pool_acquire(s->pool, &s->flush_req, on_flush_conn) != 0)
        flush_again(s);
}

static void enqueue(store *s, lazy *l)
{
    *s->queue_tail = l;
    s->queue_tail = &l->next;
    s->queued++;
    if (!s->flushing && !s->closing && !uv_is_active((uv_handle_t *)&s->flush_timer))
        uv_timer_start(&s->flush_timer, on_flush_timer, 0, 0);
}

void store_record_abort(store *s, const store_row *r)
{
    lazy *l = calloc(1, sizeof *l);
    if (!l || !row_copy_set(&l->r, r)) {
        free(l);
        log_warn("store", "out of memory: the abort of %s is not recorded", r->gtrid);
        return;
    }
    enqueue(s, l);
}

void store_done(store *s, const char *gtrid)
{
    lazy *l = calloc(1, sizeof *l);
    if (!l || !(l->r.gtrid = strdup(gtrid))) {
        free(l);
        return; /* the next start resolves the transaction again: harmless */
    }
    l->done = true;
    enqueue(s, l);
}

/* ---- taking over lapsed nodes ------------------------------------------------------------ */

/* A node is left with work when its lease lapsed while held (a crash, or a clean stop that
 * handed it over), or when it was released free while commit rows of it still have branches
 * pending (a stop of an older version, which released it whatever was left; the partial index
 * xacoord_decisions_unfinished answers that). The FOR UPDATE waits for every decision
 * transaction of the node still in flight (they hold its row FOR KEY SHARE), and re-checks the
 * lapse on the newest row version: a holder that renewed meanwhile keeps its node. Then the
 * epoch moves on. */
static const char take_lapsed_sql[] =
    "WITH lapsed AS (SELECT node_id, holder FROM xacoord_nodes l WHERE node_id <> $1 "
    "AND expires_at < now() AND (holder <> '' OR EXISTS (SELECT 1 FROM xacoord_decisions d "
    "WHERE d.node_id = l.node_id AND d.pending <> '' AND d.outcome = 'commit')) "
    "ORDER BY expires_at LIMIT 1 FOR UPDATE OF l) "
    "UPDATE xacoord_nodes n SET epoch = n.epoch + 1, holder = $2, "
    "expires_at = now() + $3 * interval '1 millisecond' FROM lapsed "
    "WHERE n.node_id = lapsed.node_id RETURNING n.node_id, n.epoch, lapsed.holder";
/* In the same transaction, with a snapshot taken after the lock: final for the old epoch. */
static const char taken_commits_sql[] =
    "SELECT d.gtrid FROM xacoord_decisions d JOIN xacoord_nodes n ON n.node_id = d.node_id "
    "WHERE n.holder = $2 AND n.node_id <> $1 AND d.outcome = 'commit' AND d.pending <> ''";
static const char release_sql[] =
    "UPDATE xacoord_nodes SET holder = '', expires_at = now() WHERE node_id = $1 AND epoch = $2";
/* A takeover that resolved every branch of the node also finished every commit row it listed,
 * and no row of the node can be added under the epoch it holds: nothing of the node is pending
 * any more. Cleared in the release's transaction, so that a node released free never looks
 * unfinished (which would make it taken again); only while the epoch is still the taker's. */
static const char release_done_sql[] =
    "UPDATE xacoord_decisions SET pending = '' WHERE node_id = $1 AND pending <> '' "
    "AND EXISTS (SELECT 1 FROM xacoord_nodes WHERE node_id = $1 AND epoch = $2)";

typedef struct take_op {
    store *s;
    store_take_cb cb;
    void *arg;
    px_pool_req req;
    char holder[64];
    px_param params[3];
    px_stmt stmts[2];
} take_op;

static void on_taken(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                     int nresults, void *arg)
{
    take_op *k = arg;
    store_taken t = {0};
    (void)failed_index;
    if (err) {
        if (err->conn_broken)
            px_pool_discard(k->s->pool, conn);
        else
            px_pool_release(k->s->pool, conn);
        k->cb(k->arg, 503, NULL, err->message);
    } else if (nresults < 2 || results[0].nrows == 0 || results[0].ncols != 3) {
        px_pool_release(k->s->pool, conn);
        k->cb(k->arg, 404, NULL, NULL);
    } else {
        px_pool_release(k->s->pool, conn);
        t.node_id = results[0].cells[0];
        t.epoch = strtoull(results[0].cells[1], NULL, 10);
        t.holder = results[0].cells[2] ? results[0].cells[2] : "";
        t.commits = results[1].cells;
        t.ncommits = results[1].ncols == 1 ? results[1].nrows : 0;
        k->cb(k->arg, 200, &t, NULL);
    }
    free(k);
}

static void on_take_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    take_op *k = req->data;
    if (!conn || px_conn_base(conn)->driver->exec(conn, k->stmts, 2, on_taken, k) != 0) {
        if (conn)
            px_pool_discard(k->s->pool, conn);
        k->cb(k->arg, 503, NULL, err ? err->message : "no connection");
        free(k);
    }
}

void store_take_lapsed(store *s, store_take_cb cb, void *arg)
{
    static uint64_t attempts;
    take_op *k = calloc(1, sizeof *k);
    if (!k) {
        cb(arg, 503, NULL, "out of memory");
        return;
    }
    *k = (take_op){.s = s, .cb = cb, .arg = arg};
    /* Unique per attempt: the second statement finds the node by it. */
    snprintf(k->holder, sizeof k->holder, "takeover by %s.%s #%" PRIu64, s->node_id, s->epoch_text,
             ++attempts);
    text_param(&k->params[0], s->node_id);
    text_param(&k->params[1], k->holder);
    text_param(&k->params[2], s->lease_text);
    k->stmts[0] = store_stmt(take_lapsed_sql, k->params, 3);
    k->stmts[1] = store_stmt(taken_commits_sql, k->params, 2);
    k->req.data = k;
    if (px_pool_acquire(s->pool, &k->req, on_take_conn) != 0) {
        free(k);
        cb(arg, 503, NULL, "the store's pool is closing");
    }
}

typedef struct release_op {
    store *s;
    px_pool_req req;
    char node[17], epoch[24];
    px_param params[2];
    px_stmt stmts[2];
} release_op;

static void on_released(px_conn *conn, const px_error *err, int failed_index,
                        const px_result *results, int nresults, void *arg)
{
    release_op *r = arg;
    (void)failed_index, (void)results, (void)nresults;
    if (err) {
        log_warn("store", "handing node %s back: %s (its lease lapses by itself)", r->node,
                 err->message);
        px_pool_discard(r->s->pool, conn);
    } else {
        px_pool_release(r->s->pool, conn);
    }
    free(r);
}

static void on_release_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    release_op *r = req->data;
    (void)err;
    if (!conn || px_conn_base(conn)->driver->exec(conn, r->stmts, 2, on_released, r) != 0) {
        if (conn)
            px_pool_discard(r->s->pool, conn);
        free(r);
    }
}

void store_release(store *s, const char *node_id, uint64_t epoch)
{
    release_op *r = calloc(1, sizeof *r);
    if (!r)
        return; /* the lease lapses by itself */
    r->s = s;
    snprintf(r->node, sizeof r->node, "%s", node_id);
    snprintf(r->epoch, sizeof r->epoch, "%" PRIu64, epoch);
    text_param(&r->params[0], r->node);
    text_param(&r->params[1], r->epoch);
    for (int i = 0; i < 2; i++)
        r->stmts[i] = store_stmt(i ? release_sql : release_done_sql, r->params, 2);
    r->req.data = r;
    if (px_pool_acquire(s->pool, &r->req, on_release_conn) != 0)
        free(r);
}

/* ---- lookups and upkeep ------------------------------------------------------------------ */

typedef struct find_op {
    store *s;
    char id[REQUEST_ID_MAX + 1];
    store_found_cb cb;
    void *arg;
    px_pool_req req;
    px_param param;
    px_stmt stmt;
} find_op;

static void on_found(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                     int nresults, void *arg)
{
    find_op *f = arg;
    store_row row;
    (void)failed_index;
    if (err) {
        if (err->conn_broken)
            px_pool_discard(f->s->pool, conn);
        else
            px_pool_release(f->s->pool, conn);
        f->cb(f->arg, 503, NULL, err->message);
    } else {
        px_pool_release(f->s->pool, conn);
        if (nresults < 1 || results[0].nrows == 0)
            f->cb(f->arg, 404, NULL, NULL);
        else if (results[0].ncols != 8 || !row_from_cells(results[0].cells, &row))
            f->cb(f->arg, 503, NULL, "the decision row is malformed");
        else
            f->cb(f->arg, 200, &row, NULL);
    }
    free(f);
}

static void on_find_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    find_op *f = req->data;
    if (!conn || px_conn_base(conn)->driver->exec(conn, &f->stmt, 1, on_found, f) != 0) {
        if (conn)
            px_pool_discard(f->s->pool, conn);
        f->cb(f->arg, 503, NULL,
              conn  ? "the driver refused the lookup"
              : err ? err->message
                    : "no connection");
        free(f);
    }
}

void store_find(store *s, const char *client_id, store_found_cb cb, void *arg)
{
    find_op *f = calloc(1, sizeof *f);
    if (!f) {
        cb(arg, 503, NULL, "out of memory");
        return;
    }
    f->s = s;
    f->cb = cb;
    f->arg = arg;
    snprintf(f->id, sizeof f->id, "%s", client_id);
    text_param(&f->param, f->id);
    f->stmt = store_stmt(find_sql, &f->param, 1);
    f->req.data = f;
    if (px_pool_acquire(s->pool, &f->req, on_find_conn) != 0) {
        free(f);
        cb(arg, 503, NULL, "the store's pool is closing");
    }
}

static void on_pruned(px_conn *conn, const px_error *err, int failed_index,
                      const px_result *results, int nresults, void *arg)
{
    store *s = arg;
    (void)failed_index;
    s->pruning = false;
    if (err) {
        log_warn("store", "pruning old decisions: %s", err->message);
        px_pool_discard(s->pool, conn);
        return;
    }
    px_pool_release(s->pool, conn);
    if (nresults > 0 && results[0].rows_affected > 0)
        log_debug("store", "%" PRId64 " decisions past their retention deleted",
                  results[0].rows_affected);
}

static void on_prune_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    store *s = req->data;
    (void)err;
    if (!conn || px_conn_base(conn)->driver->exec(conn, &s->prune_stmt, 1, on_pruned, s) != 0) {
        if (conn)
            px_pool_discard(s->pool, conn);
        s->pruning = false;
    }
}

void store_tick(store *s, int64_t retention_s)
{
    if (s->pruning || s->closing)
        return;
    s->pruning = true;
    snprintf(s->prune_text, sizeof s->prune_text, "%" PRId64, retention_s);
    text_param(&s->prune_param, s->prune_text);
    s->prune_stmt = store_stmt(prune_sql, &s->prune_param, 1);
    s->prune_req.data = s;
    if (px_pool_acquire(s->pool, &s->prune_req, on_prune_conn) != 0)
        s->pruning = false;
}

typedef struct close_op {
    store *s;
    char left[256];
    void (*cb)(void *arg);
    void *arg;
} close_op;

/* The lazy records still queued at a clean stop are written before the node is handed on: a
 * "done" lost here would leave the node looking unfinished. One statement each, autocommit. */
static void write_queued(store *s, PGconn *pg)
{
    char err[256];
    int failed = 0;
    for (lazy *l = s->queue; l; l = l->next) {
        const char *p[7] = {l->r.gtrid, l->r.client_id, l->r.digest_hex, l->r.status,
                            l->r.reply, s->node_id,     s->epoch_text};
        PGresult *res = l->done ? run(pg, "done record", done_sql, 1, p, err, sizeof err)
                                : run(pg, "abort record", abort_sql, 7, p, err, sizeof err);
        failed += !res;
        PQclear(res);
    }
    if (failed)
        log_warn("store", "%d of %d lazy decision records not written at shutdown (last: %s)",
                 failed, s->queued, err);
}

/* This node's commit rows with branches pending, or -1 when the store cannot say. */
static long count_unfinished(store *s, PGconn *pg)
{
    char err[256];
    const char *p[1] = {s->node_id};
    PGresult *res = run(pg, "counting unfinished decisions",
                        "SELECT count(*) FROM xacoord_decisions WHERE node_id = $1 "
                        "AND pending <> '' AND outcome = 'commit'",
                        1, p, err, sizeof err);
    long n = res && PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    if (!res)
        log_warn("store", "%s", err);
    PQclear(res);
    return n;
}

/* A clean stop hands the node on at once, so that nobody waits for its lease: back free when
 * nothing is left - the next start of this node, whenever it comes, has nothing to finish - or,
 * when something is, over to a peer: the holder stays and the lease lapses now, so that a live
 * peer's next look takes the node and resolves its branches as after a crash (the node may never
 * start again). Only while this process still holds the epoch. */
static void hand_on(store *s, PGconn *pg, const char *left)
{
    char err[256], count[24] = "an unknown number of";
    const char *p[2] = {s->node_id, s->epoch_text};
    long unfinished = count_unfinished(s, pg);
    bool free_node = !*left && unfinished == 0;
    if (unfinished >= 0)
        snprintf(count, sizeof count, "%ld", unfinished);
    PGresult *res = run(pg, "handing the node on",
                        free_node ? "UPDATE xacoord_nodes SET holder = '', expires_at = now() "
                                    "WHERE node_id = $1 AND epoch = $2"
                                  : "UPDATE xacoord_nodes SET expires_at = now() "
                                    "WHERE node_id = $1 AND epoch = $2",
                        2, p, err, sizeof err);
    if (!res)
        log_warn("store", "%s: node %s is taken over once its lease lapses", err, s->node_id);
    else if (strcmp(PQcmdTuples(res), "1") != 0)
        log_warn("store", "node %s was taken by another process meanwhile", s->node_id);
    else if (free_node)
        log_info("store", "node %s handed back: nothing is left on the participants", s->node_id);
    else
        log_warn("store",
                 "node %s handed over to a peer's takeover (its lease lapses now): %s%s%s "
                 "decisions with branches pending in the store",
                 s->node_id, left, *left ? "; " : "", count);
    PQclear(res);
}

static void hand_on_node(store *s, const char *left)
{
    char err[256];
    PGconn *pg = connect_blocking(&s->cfg->store, err, sizeof err);
    if (!pg) {
        log_warn("store", "%s: node %s is taken over once its lease lapses", err, s->node_id);
        return;
    }
    write_queued(s, pg);
    if (!s->lost)
        hand_on(s, pg, left);
    PQfinish(pg);
}

static void on_store_pool_closed(void *arg)
{
    close_op *c = arg;
    hand_on_node(c->s, c->left);
    lazy_free_list(c->s->queue);
    free(c->s);
    c->cb(c->arg);
    free(c);
}

static void on_store_timer_closed(uv_handle_t *h)
{
    close_op *c = h->data;
    if (h == (uv_handle_t *)&c->s->flush_timer)
        return; /* the renew timer closes last */
    /* waits for what is in flight: a lazy flush, a renew, a decision */
    px_pool_close(c->s->pool, on_store_pool_closed, c);
}

void store_close(store *s, const char *left, void (*cb)(void *arg), void *arg)
{
    close_op *c = malloc(sizeof *c);
    if (!c)
        abort();
    *c = (close_op){.s = s, .cb = cb, .arg = arg};
    snprintf(c->left, sizeof c->left, "%s", left ? left : "");
    s->closing = true;
    /* A decision waiting to ask again after a lost answer is not asked any more. */
    for (decide_op *d = s->decides, *next; d; d = next) {
        next = d->next;
        if (uv_is_active((uv_handle_t *)&d->timer)) {
            uv_timer_stop(&d->timer);
            decide_finish(d, STORE_UNKNOWN, NULL, "the store is closing");
        }
    }
    s->flush_timer.data = c;
    s->renew_timer.data = c;
    uv_close((uv_handle_t *)&s->flush_timer, on_store_timer_closed);
    uv_close((uv_handle_t *)&s->renew_timer, on_store_timer_closed);
}
