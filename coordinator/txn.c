/*
 * The global-transaction state machine (see txn.h).
 *
 * A transaction owns one `branch` per participant. Branch states are ordered and move forward,
 * with two exceptions before PREPARE succeeded: a failed PREPARE returns the branch to WORKING (to
 * be rolled back), and a dead pooled connection sends it back to ACQUIRING once. The transaction
 * itself sits in exactly one of the coordinator's state lists; /metrics and shutdown read them.
 *
 * Who may act on a branch: while a driver call is in flight (`busy`), only its callback does.
 * An abort that finds a branch busy either waits for that callback (which then rolls back), or -
 * for a timeout, where the call may hang - discards the connection. Closing a connection rolls back
 * an unprepared branch on both servers; a PREPARE that was in flight may still have landed, so that
 * branch is then rolled back by XID through another connection, and the periodic recovery scan is
 * the safety net behind that.
 */
#include "txn.h"

#include "coord.h"
#include "crash.h"
#include "log.h"
#include "results.h"
#include "schema.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum branch_state {
    BR_IDLE = 0,  /* no connection asked for yet */
    BR_ACQUIRING, /* waiting for the pool */
    BR_WORKING,   /* begin / statements */
    BR_PREPARING, /* PREPARE sent */
    BR_PREPARED,
    BR_FINISHING, /* COMMIT/ROLLBACK PREPARED sent or scheduled for retry; or one-phase COMMIT */
    BR_DONE,
} branch_state;
#define BR_NSTATES (BR_DONE + 1)

/* What a one-phase branch claims its client id with (claimed_stmts), in one allocation: the
 * claim, then the request's statements; and, when the claim found the id taken, the look-up of
 * the marker that holds it. */
struct claim {
    px_param claim[5]; /* gtrid, bqual, client id, digest, coordinator */
    px_param find[3];  /* client id, bqual, coordinator */
    px_stmt find_stmt;
    char digest_hex[2 * REQUEST_DIGEST_LEN + 1];
    px_stmt stmts[]; /* the claim, then the request's statements */
};

typedef struct branch {
    struct txn *t;
    int index;
    coord_part *part;
    const req_branch *req;
    px_xid xid;
    branch_state state;
    px_pool_req preq;
    px_conn *conn;
    bool busy;           /* a driver call is in flight on conn */
    bool begun;          /* the branch exists on the server */
    bool maybe_prepared; /* PREPARE was sent and its answer lost */
    bool reconnected;    /* already retried once on a fresh connection */
    bool uncertain;      /* an earlier COMMIT/ROLLBACK PREPARED may have run: its answer was lost */
    bool wrote;          /* a statement changed rows (not a query): see 1402 in on_finished */
    bool read_only;      /* only read: ended at prepare time, no part in phase 2 */
    bool probing;        /* one-phase COMMIT's answer was lost: the marker settles it */
    bool probe_found;    /* ... and the probe found the marker: it committed */
    bool last_resource;  /* on the store's participant: not prepared; the decision row is
                            written inside it and its one-phase COMMIT is the decision */
    bool lr_settling;    /* ... and that COMMIT's answer was lost: pg_xact_status settles it */
    bool lr_written;     /* ... its decision row is inserted (not committed): COMMIT may go */
    store_decision *lr_dec;
    char lr_xact[32];    /* the branch's transaction id, read before its COMMIT */
    struct claim *claim; /* one-phase only (claimed_stmts): most branches never need it */
    char *results;       /* JSON text: [{"rows_affected":..,"rows":[..]}] */
    uv_timer_t *retry;   /* phase 2's backoff, made at the first retry (most never need it) */
    unsigned attempts;
    uint64_t prepared_ns; /* when PREPARE was sent, then when it answered (the listing's age) */
    uint64_t doubt_ns;    /* when it joined its participant's in_doubt list */
    list_node doubt_node; /* on part->in_doubt while prepared or finishing */
} branch;

struct txn {
    coord *c;
    txn_state state;
    list_node node; /* on c->lists[state] */
    txn_request *req;
    outcome *o;
    uint64_t seq;
    char gtrid[PX_XID_PART_MAX + 1];
    uint64_t started_ns;
    uv_timer_t timer; /* phase-1 timeout, then commit_wait */
    int open_handles;
    int next_acquire;
    int nprepared;
    int nworked; /* branches whose statements all ran */
    int ndone;
    int acks; /* phase-2 acknowledgements (the crash point after the first) */
    bool committed;
    bool replied;
    bool freeing;
    bool abandoned; /* dropped by shutdown while its commit record was being written */
    bool one_phase; /* one branch that writes: its COMMIT is the decision (no PREPARE) */
    char ctx[PX_XID_PART_MAX + 8]; /* log prefix */
    int nbranches;
    branch b[];
};

static void branch_finish(branch *b);
static void on_acquired(px_pool_req *req, px_conn *conn, const px_error *err);
static void branch_abort(branch *b, bool hard);
static void maybe_free(struct txn *t);
static void txn_release(struct txn *t);
static void txn_abandon(struct txn *t, const char *why);
static void discard_conn(branch *b);

/* ---- state lists ------------------------------------------------------------------------- */

static const char *const state_names[TXN_NSTATES] = {"working", "deciding", "committing",
                                                     "aborting"};

/* ---- checked moves ----------------------------------------------------------------------- */

#define TO(s) (1u << (s))

/* Where a transaction may go from each state. DECIDING -> ABORTING is the decision that was not
 * taken: the journal refused the commit record, or the store did not take the decision row. */
static const unsigned txn_moves[TXN_NSTATES] = {
    [TXN_WORKING] = TO(TXN_DECIDING) | TO(TXN_COMMITTING) /* one-phase */ | TO(TXN_ABORTING),
    [TXN_DECIDING] = TO(TXN_COMMITTING) | TO(TXN_ABORTING),
};

/* Where a branch may go from each state: forward, plus one documented step back.
 * - WORKING -> ACQUIRING: its idle connection had died before any work was kept, and it starts
 *   over once on a fresh one (retry_on_fresh_conn).
 * - FINISHING -> FINISHING: phase 2 retried after a backoff.
 * - any -> DONE: ended, including by shutdown's abandon; never twice (it is counted).
 * A PREPARE that failed or lost its answer leaves the branch PREPARING (maybe_prepared says
 * which), and a one-phase COMMIT that failed ends the branch before the transaction aborts. */
static const unsigned branch_moves[BR_NSTATES] = {
    [BR_IDLE] = TO(BR_ACQUIRING) | TO(BR_DONE),
    [BR_ACQUIRING] = TO(BR_WORKING) | TO(BR_DONE),
    [BR_WORKING] = TO(BR_ACQUIRING) | TO(BR_PREPARING) | TO(BR_FINISHING) | TO(BR_DONE),
    [BR_PREPARING] = TO(BR_PREPARED) | TO(BR_FINISHING) | TO(BR_DONE),
    [BR_PREPARED] = TO(BR_FINISHING) | TO(BR_DONE),
    [BR_FINISHING] = TO(BR_FINISHING) | TO(BR_DONE),
};

static const char *const branch_names[BR_NSTATES] = {
    "idle", "acquiring", "working", "preparing", "prepared", "finishing", "done"};

/* A move no table allows is a bug here: the process stops rather than act from a state it cannot
 * be in. Every decision is durable before it is acted on, so the next start loses nothing. */
static void check_move(const unsigned *moves, int from, int to, const char *const *names,
                       const char *ctx)
{
    XA_CHECK(moves[from] & TO(to), "%s: impossible state change %s -> %s", ctx, names[from],
             names[to]);
}

static bool in_doubt(branch_state s)
{
    return s == BR_PREPARED || s == BR_FINISHING;
}

/* The only place a branch changes state. It also keeps the participant's in_doubt list, so that
 * the gauges read a count and the list's first branch instead of walking every transaction. */
static void branch_set_state(branch *b, branch_state s)
{
    check_move(branch_moves, b->state, s, branch_names, b->t->ctx);
    if (!in_doubt(b->state) && in_doubt(s)) {
        b->doubt_ns = uv_hrtime();
        list_push_tail(&b->part->in_doubt, &b->doubt_node);
    } else if (in_doubt(b->state) && !in_doubt(s)) {
        list_remove(&b->part->in_doubt, &b->doubt_node);
    }
    if (s == BR_PREPARING || s == BR_PREPARED)
        b->prepared_ns = uv_hrtime();
    b->state = s;
}

/* The only place a transaction changes state. */
static void set_state(struct txn *t, txn_state s)
{
    check_move(txn_moves, t->state, s, state_names, t->ctx);
    list_remove(&t->c->lists[t->state], &t->node);
    t->state = s;
    list_push_head(&t->c->lists[s], &t->node);
    log_debug(t->ctx, "-> %s", state_names[s]);
}

/* ---- replies ----------------------------------------------------------------------------- */

/* Dumps obj without its closing brace (see outcome.reply_head). */
static char *dump_head(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    size_t n;
    json_decref(obj);
    if (!s)
        abort();
    n = strlen(s);
    s[n - 1] = '\0';
    return s;
}

static json_t *base_reply(struct txn *t, const char *outcome_name)
{
    return json_pack("{s:s, s:s, s:s}", "id", t->o->id, "xid", t->gtrid, "outcome", outcome_name);
}

/* Every commit builds this, so it is written directly rather than through a JSON tree. Nothing
 * here needs escaping: ids, gtrids and participant names have strict charsets (request.h,
 * participant.h, config.h), and the results are JSON text already. */
static char *commit_head(struct txn *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        abort();
    fprintf(f, "{\"id\":\"%s\",\"xid\":\"%s\",\"outcome\":\"committed\",\"branches\":[", t->o->id,
            t->gtrid);
    for (int i = 0; i < t->nbranches; i++)
        fprintf(f, "%s{\"participant\":\"%s\",\"results\":%s}", i ? "," : "",
                t->b[i].part->cfg->name, t->b[i].results ? t->b[i].results : "[]");
    fputc(']', f);
    if (fclose(f) != 0)
        abort();
    return buf;
}

static void settle(struct txn *t, outcome_state st, int status, char *head)
{
    double secs = (double)(uv_hrtime() - t->started_ns) / 1e9;
    t->replied = true;
    metric_histogram_observe(t->c->txn_latency, secs);
    outcome_settle(t->c->outcomes, t->o, st, status, head, coord_now_ms());
}

/* ---- abort ------------------------------------------------------------------------------- */

typedef struct abort_info {
    int status;     /* 409, or 503 when a participant was unavailable */
    bool retryable; /* transient: the id is forgotten so the client may run it again */
    bool hard;      /* timeout: discard busy connections instead of waiting for them */
    const char *reason;
    const branch *failed;    /* may be NULL */
    int statement;           /* -1 when the failure was not in a statement */
    const px_error *err;     /* may be NULL */
    const store_row *winner; /* the store holds this client id for another transaction: the
                                id's answer is that one's (never a second commit) */
} abort_info;

static void log_abort(struct txn *t, const abort_info *a)
{
    if (a->failed && a->err)
        log_info(t->ctx, "aborted: %s (participant %s, statement %d, %s %s: %s)", a->reason,
                 a->failed->part->cfg->name, a->statement, px_errclass_name(a->err->cls),
                 a->err->sqlstate, a->err->message);
    else
        log_info(t->ctx, "aborted: %s", a->reason);
}

static char *abort_head(struct txn *t, const abort_info *a)
{
    json_t *obj = base_reply(t, "aborted");
    json_object_set_new(obj, "reason", json_string(a->reason));
    json_object_set_new(obj, "retryable", json_boolean(a->retryable));
    if (a->failed) {
        json_t *f = json_pack("{s:s}", "participant", a->failed->part->cfg->name);
        if (a->statement >= 0)
            json_object_set_new(f, "statement", json_integer(a->statement));
        if (a->err && a->err->sqlstate[0])
            json_object_set_new(f, "sqlstate", json_string(a->err->sqlstate));
        if (a->err)
            json_object_set_new(f, "message", json_string(a->err->message));
        json_object_set_new(obj, "failed", f);
    }
    return dump_head(obj);
}

/* The client id belongs to another transaction in the decision store (the same id sent to two
 * coordinators at once): the client hears that one's reply, or 422 when the requests differ.
 * This outcome stays an abort under this gtrid, so recovery never commits its branches. */
static void settle_from_winner(struct txn *t, const store_row *w)
{
    char *head = NULL;
    bool same = memcmp(w->digest, t->o->digest, REQUEST_DIGEST_LEN) == 0;
    int n = same ? asprintf(&head, "%s", w->reply)
                 : asprintf(&head,
                            "{\"error\":\"id '%s' was already used with a different "
                            "request\"",
                            t->o->id);
    if (n < 0)
        abort(); /* nothing decided here: dying loses nothing */
    t->o->replayed = true;
    settle(t, OUTCOME_ABORTED, same ? w->status : 422, head);
}

/* A business abort, kept in the store (lazily) so that any coordinator replays it. */
static void record_abort(coord *c, const outcome *o)
{
    store_row r = {.gtrid = o->gtrid,
                   .client_id = o->id,
                   .status = o->status,
                   .reply = o->reply_head,
                   .pending = "",
                   .time_ms = o->time_ms};
    memcpy(r.digest, o->digest, REQUEST_DIGEST_LEN);
    store_record_abort(c->store, &r);
}

/* A business abort of a client's id waits for the answer (held in head) until the store says
 * whether another coordinator decided the same id meanwhile: this attempt may have failed only
 * because that one's work was there first ("order is not awaiting payment"), and then the id's
 * answer is that one's. The outcome outlives the transaction (it stays indexed). */
typedef struct abort_check {
    coord *c;
    outcome *o;
    int status;
    char *head;
} abort_check;

static void on_abort_checked(void *arg, int status, const store_row *w, const char *why)
{
    abort_check *k = arg;
    char *head = NULL;
    (void)why;
    if (status == 200 && strcmp(w->gtrid, k->o->gtrid) != 0) {
        bool same = memcmp(w->digest, k->o->digest, REQUEST_DIGEST_LEN) == 0;
        if ((same ? asprintf(&head, "%s", w->reply)
                  : asprintf(&head,
                             "{\"error\":\"id '%s' was already used with a different "
                             "request\"",
                             k->o->id)) < 0)
            abort();
        free(k->head);
        k->o->replayed = true;
        outcome_settle(k->c->outcomes, k->o, OUTCOME_ABORTED, same ? w->status : 422, head,
                       coord_now_ms());
    } else {
        outcome_settle(k->c->outcomes, k->o, OUTCOME_ABORTED, k->status, k->head, coord_now_ms());
        record_abort(k->c, k->o);
    }
    free(k);
}

static void settle_abort_via_store(struct txn *t, int status, char *head)
{
    abort_check *k = malloc(sizeof *k);
    if (!k)
        abort(); /* nothing decided: dying loses nothing */
    *k = (abort_check){t->c, t->o, status, head};
    t->replied = true;
    metric_histogram_observe(t->c->txn_latency, (double)(uv_hrtime() - t->started_ns) / 1e9);
    store_find(t->c->store, t->o->id, on_abort_checked, k);
}

/* Presumed abort: nothing here needs to be durable before the answer. A business abort is logged
 * lazily so that a repeated id replays it after a restart; a transient one is forgotten. */
static void abort_now(struct txn *t, const abort_info *a)
{
    set_state(t, TXN_ABORTING);
    uv_timer_stop(&t->timer);
    log_abort(t, a);
    metric_counter_add(t->c->txn_aborted, 1);
    if (a->winner)
        settle_from_winner(t, a->winner);
    else if (t->c->store && !a->retryable && t->req->id_given)
        settle_abort_via_store(t, a->status, abort_head(t, a));
    else
        settle(t, OUTCOME_ABORTED, a->status, abort_head(t, a));
    if (a->retryable) {
        outcome_unindex(t->c->outcomes, t->o);
    } else if (t->c->store) {
        if (!t->req->id_given)
            record_abort(t->c, t->o);
    } else {
        journal_rec rec = {JOURNAL_ABORT, t->c->boot, t->seq, t->o->time_ms, NULL, 0};
        char *payload = NULL;
        size_t len = 0;
        rec.payload_len = coord_encode_outcome(t->c, t->o, &payload, &len) == 0 ? len : 0;
        rec.payload = payload;
        /* Lazily logged: without the record, only a replay after a restart is lost (the id
         * would run again), never a decision. */
        if (!payload || journal_append(t->c->journal, &rec, NULL, NULL) != 0)
            log_warn(t->ctx, "the abort could not be journaled: after a restart the id is "
                             "forgotten");
        free(payload);
    }
    for (int i = 0; i < t->nbranches; i++)
        branch_abort(&t->b[i], a->hard);
    maybe_free(t);
}

/* Phase 1 failed. Once the transaction is deciding or decided, a late failure changes nothing:
 * the decision (or its failure, decision_failed) says what happens to every branch. */
static void txn_abort(struct txn *t, const abort_info *a)
{
    if (t->state == TXN_WORKING)
        abort_now(t, a);
}

/* The commit decision was not taken (the journal refused its record, or the store did not take
 * the row): nothing is committed anywhere, and t aborts from DECIDING. */
static void decision_failed(struct txn *t, const abort_info *a)
{
    abort_now(t, a);
}

/* The connection failed, not the request. A business error may also leave the connection unfit
 * (a COPY, a statement that ended the branch's transaction): that is the request's fault. */
static bool conn_lost(const px_error *err)
{
    return err->conn_broken && err->cls != PX_BUSINESS;
}

/* Deadlocks, lock timeouts and lost connections say nothing about the request itself: whatever
 * the class, an error that took the connection with it is never recorded for replay. */
static bool is_transient(const px_error *err)
{
    return err->cls == PX_RETRYABLE || conn_lost(err);
}

/* An idle pooled connection may have died since its last use (a server restart, an idle
 * timeout): the session is gone, and with it any work of this branch. Before PREPARE that loses
 * nothing, so the branch starts over once on a fresh connection instead of failing the
 * transaction. (This acquire happens out of participant order; a pool cycle it could form is
 * broken by the phase-1 timeout.) */
static bool retry_on_fresh_conn(branch *b, const px_error *err)
{
    if (!conn_lost(err) || b->reconnected || b->state != BR_WORKING || !b->conn)
        return false;
    log_info(b->t->ctx,
             "%s: connection lost before any work was kept (%s); retrying on a new "
             "connection",
             b->part->cfg->name, err->message);
    b->reconnected = true;
    b->begun = false;
    px_pool_discard(b->part->pool, b->conn);
    px_pool_flush_idle(b->part->pool);
    b->conn = NULL;
    branch_set_state(b, BR_ACQUIRING);
    b->preq.data = b;
    return px_pool_acquire(b->part->pool, &b->preq, on_acquired) == 0;
}

/* A branch failed in phase 1: turn the driver's error into the client's answer. */
static void branch_failed(branch *b, const px_error *err, int statement)
{
    struct txn *t = b->t;
    /* A lost connection means the participant is unavailable: like a failed connect, 503. */
    abort_info a = {
        conn_lost(err) ? 503 : 409, is_transient(err), false, "", b, statement, err, NULL};
    char reason[1024];
    const char *given = NULL;

    if (err->conn_broken) {
        discard_conn(b);
        b->begun = false; /* the server rolls back an unprepared branch when its session ends */
    }
    if (conn_lost(err))
        statement = -1; /* the connection failed, not a statement: no index would be true */
    if (statement >= 0 && b->req->abort_reasons)
        given = b->req->abort_reasons[statement];
    if (given && err->rows_mismatch)
        snprintf(reason, sizeof reason, "%s", given);
    else if (statement >= 0)
        snprintf(reason, sizeof reason, "%s%sstatement %d on %s failed: %s", given ? given : "",
                 given ? ": " : "", statement, b->part->cfg->name, err->message);
    else
        snprintf(reason, sizeof reason, "participant %s failed: %s", b->part->cfg->name,
                 err->message);
    a.reason = reason;
    a.statement = statement;
    txn_abort(t, &a);
}

static void on_timeout(uv_timer_t *timer)
{
    struct txn *t = timer->data;
    char reason[256];
    const branch *slow = NULL;
    for (int i = 0; i < t->nbranches && !slow; i++)
        if (t->b[i].state < BR_PREPARED)
            slow = &t->b[i];
    snprintf(reason, sizeof reason, "timeout: %s did not prepare within %u ms",
             slow ? slow->part->cfg->name : "a participant", t->req->timeout_ms);
    abort_info a = {409, true, true, reason, slow, -1, NULL, NULL};
    txn_abort(t, &a);
}

/* ---- phase 2 ----------------------------------------------------------------------------- */

static unsigned backoff_ms(unsigned attempts)
{
    unsigned ms = 50u << (attempts < 7 ? attempts : 7);
    return ms > 5000 ? 5000 : ms;
}

static void probe_one_phase(branch *b);

static void lr_settle(branch *b);

static void on_retry_timer(uv_timer_t *timer)
{
    branch *b = timer->data;
    if (b->lr_settling)
        lr_settle(b);
    else if (b->probing)
        probe_one_phase(b);
    else
        branch_finish(b);
}

static void schedule_retry(branch *b)
{
    struct txn *t = b->t;
    if (!b->retry) {
        /* Out of memory here, dying loses nothing: a commit's decision is durable and the next
         * start finishes it, and presumed abort rolls back whatever has no commit record. */
        if (!(b->retry = malloc(sizeof *b->retry)))
            abort();
        uv_timer_init(t->c->loop, b->retry);
        b->retry->data = b;
        t->open_handles++;
    }
    metric_counter_add(b->part->commit_retries, 1);
    uv_timer_start(b->retry, on_retry_timer, backoff_ms(b->attempts++), 0);
}

static void release_conn(branch *b)
{
    if (b->conn)
        px_pool_release(b->part->pool, b->conn);
    b->conn = NULL;
}

static void discard_conn(branch *b)
{
    if (b->conn)
        px_pool_discard(b->part->pool, b->conn);
    b->conn = NULL;
}

static void branch_done(branch *b)
{
    struct txn *t = b->t;
    branch_set_state(b, BR_DONE);
    release_conn(b);
    t->ndone++;
    if (t->committed) {
        outcome_set_pending(t->c->outcomes, t->o, t->o->pending & ~(1u << b->part->index));
        if (t->o->pending != 0 && ++t->acks == 1)
            crash_point("after-first-commit-ack");
    }
    maybe_free(t);
}

/* The branch may have ended against the decision: counted, logged and named in the reply. */
static void report_heuristic(branch *b, const char *what, bool data_loss)
{
    coord_heuristic(b->t->c, b->t->o, b->part, data_loss, what, b->t->ctx);
}

/* A lookup of phase 2 failed: try again later, on another connection if this one broke. */
static bool retry_on_error(branch *b, const px_error *err)
{
    if (!err)
        return false;
    if (err->conn_broken)
        discard_conn(b);
    schedule_retry(b);
    return true;
}

/* The marker row commits with the branch's work: it tells what became of a branch that is no
 * longer there. Agreeing with the decision, a lost reply or someone else's consistent action;
 * against it, a heuristic outcome - lost work when the decision was commit. */
static void on_marker(px_conn *conn, const px_error *err, bool found, void *arg)
{
    branch *b = arg;
    b->busy = false;
    if (retry_on_error(b, err))
        return;
    if (found == b->t->committed) {
        metric_counter_add(b->part->xid_not_found, 1);
        log_warn(b->t->ctx, "%s: branch not found and not listed; its marker shows it %s (%s)",
                 b->part->cfg->name, found ? "committed" : "rolled back",
                 b->uncertain ? "a lost reply" : "finished by someone else, as decided");
    } else if (b->t->committed) {
        report_heuristic(b,
                         "the prepared branch was rolled back by someone else (its marker is "
                         "gone)",
                         true);
    } else {
        report_heuristic(b,
                         "the prepared branch was committed by someone else (its marker "
                         "exists)",
                         false);
    }
    branch_done(b);
}

/* "XID not found" means finished only when the branch is no longer listed: on MariaDB a branch
 * stays attached to its preparing session and is invisible to others while that session lives. */
static void on_verified(px_conn *conn, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    branch *b = arg;
    b->busy = false;
    if (retry_on_error(b, err))
        return;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(xids[i].gtrid, b->xid.gtrid) == 0) {
            log_warn(b->t->ctx, "%s: branch still listed although not found: retrying later",
                     b->part->cfg->name);
            schedule_retry(b);
            return;
        }
    }
    b->busy = true;
    if (px_pool_driver(b->part->pool)->marker_exists(b->conn, &b->xid, on_marker, b) != 0) {
        b->busy = false;
        discard_conn(b);
        schedule_retry(b);
    }
}

static void on_finished(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    const px_driver *drv = px_pool_driver(b->part->pool);
    b->busy = false;
    if (!err) {
        branch_done(b);
        return;
    }
    if (err->cls == PX_XID_NOT_FOUND && !err->conn_broken) {
        b->busy = true;
        if (drv->recover(b->conn, b->xid.gtrid, b->xid.bqual, on_verified, b) == 0)
            return;
        b->busy = false;
    }
    if (err->cls == PX_BUSINESS && err->code == 1402) {
        /* MariaDB: a prepared branch that wrote nothing is rolled back by the server, which
         * agrees with any decision. One that wrote was rolled back against a commit. */
        if (b->t->committed && b->wrote)
            report_heuristic(b, "the server rolled back (1402) a branch that wrote", true);
        else
            log_warn(b->t->ctx, "%s: read-only branch finished by the server (1402)",
                     b->part->cfg->name);
        branch_done(b);
        return;
    }
    if (err->conn_broken)
        b->uncertain = true;
    log_warn(b->t->ctx, "%s: %s failed (%s: %s); retrying", b->part->cfg->name,
             b->t->committed ? "COMMIT" : "ROLLBACK", px_errclass_name(err->cls), err->message);
    if (err->conn_broken || err->cls == PX_FATAL)
        discard_conn(b);
    schedule_retry(b);
}

static void send_finish(branch *b)
{
    const px_driver *drv = px_pool_driver(b->part->pool);
    int rc;
    b->busy = true;
    rc = b->t->committed ? drv->commit_prepared(b->conn, &b->xid, on_finished, b)
                         : drv->rollback_prepared(b->conn, &b->xid, on_finished, b);
    if (rc != 0) {
        b->busy = false;
        discard_conn(b);
        schedule_retry(b);
    }
}

static void on_finish_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    branch *b = req->data;
    if (!conn) {
        schedule_retry(b);
        return;
    }
    b->conn = conn;
    send_finish(b);
}

/* Drives a prepared (or maybe prepared) branch to the transaction's outcome; never gives up. */
static void branch_finish(branch *b)
{
    branch_set_state(b, BR_FINISHING);
    if (b->conn) {
        send_finish(b);
        return;
    }
    b->preq.data = b;
    if (px_pool_acquire(b->part->pool, &b->preq, on_finish_conn) != 0)
        schedule_retry(b);
}

/* ---- abort of one branch ----------------------------------------------------------------- */

static void on_rolled_back(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    b->busy = false;
    if (err)
        discard_conn(b); /* ending the session rolls the branch back */
    branch_done(b);
}

static void branch_abort(branch *b, bool hard)
{
    const px_driver *drv = px_pool_driver(b->part->pool);
    switch (b->state) {
    case BR_IDLE:
        branch_done(b);
        return;
    case BR_ACQUIRING:
        px_pool_cancel(&b->preq);
        branch_done(b);
        return;
    case BR_FINISHING:
    case BR_DONE:
        return;
    case BR_PREPARED:
        if (!b->busy)
            branch_finish(b);
        return;
    case BR_WORKING:
    case BR_PREPARING:
        break;
    }
    if (b->maybe_prepared && !b->busy) {
        discard_conn(b);
        branch_finish(b);
        return;
    }
    if (b->busy) {
        if (!hard)
            return; /* the callback in flight sees the abort and continues here */
        b->busy = false;
        b->maybe_prepared = b->state == BR_PREPARING;
        b->uncertain = b->maybe_prepared; /* "not found" is then the likely answer, not a hazard */
        discard_conn(b);
        if (b->maybe_prepared)
            branch_finish(b);
        else
            branch_done(b);
        return;
    }
    if (!b->conn || !b->begun) {
        branch_done(b);
        return;
    }
    b->busy = true;
    if (drv->rollback(b->conn, &b->xid, on_rolled_back, b) != 0) {
        b->busy = false;
        discard_conn(b);
        branch_done(b);
    }
}

/* ---- commit decision --------------------------------------------------------------------- */

static void on_commit_wait(uv_timer_t *timer)
{
    struct txn *t = timer->data;
    if (!t->replied)
        settle(t, OUTCOME_COMMITTED, 200, NULL);
}

static void on_commit_durable(void *arg)
{
    struct txn *t = arg;
    if (t->abandoned) {
        /* Durable now, so the next start commits it; this process only lets go of it. */
        txn_release(t);
        return;
    }
    crash_point("after-commit-record");
    t->committed = true;
    set_state(t, TXN_COMMITTING);
    outcome_commit(t->c->outcomes, t->o, coord_now_ms());
    metric_counter_add(t->c->txn_committed, 1);
    uv_timer_start(&t->timer, on_commit_wait, t->c->cfg->commit_wait_ms, 0);
    for (int i = 0, sent = 0; i < t->nbranches; i++) {
        if (t->b[i].read_only || t->b[i].last_resource)
            continue; /* ended at prepare time, or committed as the decision */
        branch_finish(&t->b[i]);
        if (++sent == 1 && t->o->pending & ~(1u << t->b[i].part->index))
            crash_point("after-first-commit-sent"); /* and another branch still to send */
    }
    maybe_free(t); /* every branch only read: nothing to wait for */
}

/* The participants that take part in phase 2: every branch that wrote and was prepared. */
static uint32_t phase2_mask(const struct txn *t)
{
    uint32_t mask = 0;
    for (int i = 0; i < t->nbranches; i++)
        if (!t->b[i].req->read_only && !t->b[i].last_resource)
            mask |= 1u << t->b[i].part->index;
    return mask;
}

/* The participant names of a mask, comma-separated (the store's "pending"). */
static void pending_names(const coord *c, uint32_t mask, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->nparts && pos < len; i++)
        if (mask & (1u << i))
            pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", pos ? "," : "",
                                    c->parts[i].cfg->name);
}

/* The store took no decision for t (fenced, failed, or the id taken by another transaction): t
 * aborts, answering with the winner's reply when there is one. */
static void store_undecided(struct txn *t, store_verdict v, const store_row *winner,
                            const char *why)
{
    abort_info a = {503, true, false, NULL, NULL, -1, NULL, NULL};
    char reason[400];
    snprintf(reason, sizeof reason, "the decision store did not take the decision: %s", why);
    a.reason = reason;
    if (v == STORE_TAKEN)
        a.winner = winner;
    else
        log_error(t->ctx, "%s", reason);
    decision_failed(t, &a);
}

static void on_store_decided(void *arg, store_verdict v, const store_row *winner, const char *why)
{
    struct txn *t = arg;
    if (v == STORE_DECIDED) {
        on_commit_durable(t);
        return;
    }
    if (t->abandoned || v == STORE_UNKNOWN) {
        /* Shutting down: the prepared branches stay for the next start's recovery, which
         * finds the row (commit) or its absence (roll back); nothing here may touch them. */
        if (!t->abandoned)
            txn_abandon(t, TXN_ASK_LATER); /* connections closed, the client told to ask later */
        txn_release(t);
        return;
    }
    store_undecided(t, v, winner, why);
}

/* The decision row of t; pending must hold CONFIG_MAX_PARTICIPANTS * 34 bytes. */
static store_row decision_row(struct txn *t, char *pending)
{
    store_row r = {.gtrid = t->gtrid,
                   .client_id = t->o->id,
                   .commit = true,
                   .status = 200,
                   .reply = t->o->reply_head,
                   .pending = pending,
                   .time_ms = coord_now_ms()};
    memcpy(r.digest, t->o->digest, REQUEST_DIGEST_LEN);
    pending_names(t->c, phase2_mask(t), pending, CONFIG_MAX_PARTICIPANTS * 34);
    return r;
}

/* decision_log = postgres: the row in the store is the decision. */
static void decide_in_store(struct txn *t)
{
    char pending[CONFIG_MAX_PARTICIPANTS * 34];
    store_row r = decision_row(t, pending);
    store_decide(t->c->store, &r, on_store_decided, t);
}

/* ---- last-resource commit ---------------------------------------------------------------- */

/* The branch on the store's participant that writes: it commits last, in one phase. */
static branch *last_resource_of(struct txn *t)
{
    for (int i = 0; i < t->nbranches; i++)
        if (t->b[i].last_resource)
            return &t->b[i];
    return NULL;
}

static void lr_undecided(branch *b, store_verdict v, const store_row *winner, const char *why)
{
    store_undecided(b->t, v, winner, why);
}

/* The COMMIT that carried the decision row is known to have committed. */
static void lr_committed(branch *b)
{
    struct txn *t = b->t;
    b->lr_settling = false;
    on_commit_durable(t); /* the other branches commit now */
    branch_done(b);
}

static void on_lr_status(void *arg, int committed, const char *why)
{
    branch *b = arg;
    if (committed == 1) {
        log_info(b->t->ctx, "the lost COMMIT answer of %s: committed (pg_xact_status)",
                 b->part->cfg->name);
        lr_committed(b);
    } else if (committed == 0) {
        log_info(b->t->ctx, "the lost COMMIT answer of %s: aborted (pg_xact_status)",
                 b->part->cfg->name);
        lr_undecided(b, STORE_FAILED, NULL, "the last-resource COMMIT did not commit");
    } else {
        log_warn(b->t->ctx, "the lost COMMIT answer of %s is not settled yet: %s",
                 b->part->cfg->name, why);
        schedule_retry(b);
    }
}

/* The client waits until the store can say what became of the COMMIT: never "unknown". */
static void lr_settle(branch *b)
{
    store_xact_status(b->t->c->store, b->lr_xact, on_lr_status, b);
}

static void on_lr_committed(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    (void)conn;
    b->busy = false;
    if (!err) {
        lr_committed(b);
        return;
    }
    if (err->conn_broken) {
        discard_conn(b);
        b->lr_settling = true;
        lr_settle(b);
        return;
    }
    /* A definite failure: the transaction and its decision row rolled back together. */
    lr_undecided(b, STORE_FAILED, NULL, err->message);
}

/* Every branch is prepared and the decision row is in the last resource's transaction: its
 * COMMIT is the decision. */
static void lr_commit(branch *b)
{
    const px_driver *drv = px_pool_driver(b->part->pool);
    crash_point("before-last-resource-commit");
    b->busy = true;
    if (drv->commit_one_phase(b->conn, &b->xid, on_lr_committed, b) != 0) {
        b->busy = false;
        lr_undecided(b, STORE_FAILED, NULL, "the driver refused COMMIT");
        return;
    }
    if (fault_point("cut-after-lr-commit")) {
        /* Test only: the connection dies after COMMIT went out, before its answer came. */
        px_error e;
        px_error_set(&e, PX_RETRYABLE, true, 0, "08006", "connection cut after COMMIT was sent");
        b->busy = false;
        on_lr_committed(NULL, &e, b);
    }
}

static void on_lr_written(px_conn *conn, const px_error *err, int failed_index,
                          const px_result *results, int nresults, void *arg)
{
    branch *b = arg;
    struct txn *t = b->t;
    store_row winner;
    store_verdict v;
    const char *why;
    (void)conn, (void)failed_index;
    b->busy = false;
    if (t->state == TXN_ABORTING) {
        branch_abort(b,
                     false); /* another branch failed meanwhile: the row goes with the rollback */
        return;
    }
    if (err) {
        if (err->conn_broken)
            discard_conn(b); /* the server rolls the open transaction back */
        lr_undecided(b, STORE_FAILED, NULL, err->message);
        return;
    }
    v = store_decision_verdict(b->lr_dec, results, nresults, &winner, &why);
    if (v != STORE_DECIDED || nresults < 3 || results[2].nrows != 1 || !results[2].cells[0]) {
        lr_undecided(b, v == STORE_DECIDED ? STORE_FAILED : v, v == STORE_FENCED ? NULL : &winner,
                     why ? why : "no transaction id");
        return;
    }
    snprintf(b->lr_xact, sizeof b->lr_xact, "%s", results[2].cells[0]);
    b->lr_written = true;
    if (t->state == TXN_DECIDING)
        lr_commit(b); /* the last PREPARE came back first */
}

/* As soon as every branch's statements ran, while the other branches still prepare, the decision
 * row goes into the last resource's own transaction (under this node's epoch, as in the store):
 * then only its COMMIT waits for the last PREPARE. Written early, the row decides nothing - it
 * commits or vanishes with that transaction. */
static void write_lr_decision(branch *b)
{
    struct txn *t = b->t;
    const px_driver *drv = px_pool_driver(b->part->pool);
    char pending[CONFIG_MAX_PARTICIPANTS * 34];
    char *head = commit_head(t);
    store_row r = decision_row(t, pending);
    const px_stmt *stmts;
    int n;
    r.reply = head;
    if (!store_holds_lease(t->c->store)) {
        free(head);
        lr_undecided(b, STORE_FAILED, NULL, "this coordinator does not hold its node's lease");
        return;
    }
    if (!(b->lr_dec = store_decision_new(t->c->store, &r)))
        abort(); /* nothing decided: dying loses nothing */
    free(head);
    stmts = store_decision_stmts(b->lr_dec, true, &n);
    b->busy = true;
    if (drv->exec(b->conn, stmts, n, on_lr_written, b) != 0) {
        b->busy = false;
        lr_undecided(b, STORE_FAILED, NULL, "the driver refused the decision statements");
    }
}

static void decide_commit(struct txn *t)
{
    journal_rec rec = {JOURNAL_COMMIT, t->c->boot, t->seq, coord_now_ms(), NULL, 0};
    char *payload = NULL;
    size_t len = 0;

    set_state(t, TXN_DECIDING);
    uv_timer_stop(&t->timer);
    outcome_set_pending(t->c->outcomes, t->o, phase2_mask(t));
    /* The reply is fixed now (only "pending" changes later), and it goes into the commit record so
     * that a repeated id can be answered after a restart. */
    t->o->reply_head = commit_head(t);
    t->o->status = 200;
    crash_point("before-commit-record");
    if (t->c->store) {
        branch *lr = last_resource_of(t);
        if (lr && lr->lr_written)
            lr_commit(lr);
        else if (!lr)
            decide_in_store(t);
        return;
    }
    if (coord_encode_outcome(t->c, t->o, &payload, &len) != 0)
        abort(); /* out of memory before the decision: nothing is lost by dying */
    rec.payload = payload;
    rec.payload_len = len;
    if (journal_append(t->c->journal, &rec, on_commit_durable, t) != 0) {
        /* The journal is closing or failed: the decision was never durable, so abort. */
        abort_info a = {503,  true, false, "the journal is not accepting decisions",
                        NULL, -1,   NULL,  NULL};
        free(payload);
        decision_failed(t, &a);
        return;
    }
    free(payload);
}

/* ---- phase 1 ----------------------------------------------------------------------------- */

static void on_prepared(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    struct txn *t = b->t;
    b->busy = false;
    if (err && err->conn_broken) {
        /* The answer was lost, not necessarily the PREPARE: the branch may be prepared and
         * detached from the dead session. It is rolled back by XID. */
        b->maybe_prepared = true;
        b->uncertain = true;
    }
    if (err) {
        /* Not prepared (or maybe, when the answer was lost): it stays PREPARING, and the abort
         * rolls it back by XID or ends its session. */
        if (t->state == TXN_WORKING)
            branch_failed(b, err, -1);
        else
            branch_abort(b, false);
        return;
    }
    branch_set_state(b, BR_PREPARED);
    t->nprepared++;
    if (t->state != TXN_WORKING) {
        branch_abort(b, false);
        return;
    }
    if (t->nprepared < t->nbranches) {
        crash_point("after-some-prepares");
        return;
    }
    decide_commit(t);
}

/* A branch whose statements only read (guard_read_only) has nothing to decide: it ends at once -
 * a one-phase commit that commits nothing, the classic read-only vote - and takes no part in
 * phase 2. Its locks are gone before the decision, which is why a statement with FOR UPDATE or
 * FOR SHARE never makes a branch read-only. */
static void on_read_only_ended(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    struct txn *t = b->t;
    bool working = t->state == TXN_WORKING, all;
    b->busy = false;
    if (err) {
        if (err->conn_broken)
            discard_conn(b);
        if (working)
            branch_failed(b, err, -1);
        else
            branch_abort(b, false);
        return;
    }
    b->read_only = true;
    all = ++t->nprepared == t->nbranches;
    branch_done(b); /* may free t unless it is still working */
    if (working && all)
        decide_commit(t);
}

static void end_read_only(branch *b)
{
    const px_driver *drv = px_pool_driver(b->part->pool);
    if (drv->commit_one_phase(b->conn, &b->xid, on_read_only_ended, b) != 0) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, false, 0, "", "driver refused to end a read-only branch");
        branch_failed(b, &e, -1);
    }
}

/* ---- one-phase commit -------------------------------------------------------------------- */

/* A transaction with a single branch that writes needs no vote: that branch's COMMIT is the
 * decision, with no PREPARE and no commit record (docs/design.md, "One-phase commit"). What the
 * journal would have remembered lives in the branch's marker instead, written first in the branch
 * and committed with its work: it claims the client id (unique per participant), so that a retry
 * of the id after a crash finds it instead of running twice, and GET finds the outcome there. */
static bool one_phase_eligible(const struct txn *t)
{
    /* With a decision store the marker would answer only on this coordinator: the branch is
     * prepared and the store decides, so that every coordinator can answer for the id. */
    return !t->c->store && t->nbranches == 1 && !t->b[0].req->read_only &&
           schema_for(t->b[0].part->cfg->driver) != NULL;
}

static void text_param(px_param *p, const char *s)
{
    *p = (px_param){.type = PX_P_TEXT, .text = s, .len = strlen(s)};
}

/* The claim (statement 0), then the request's statements; built once, also for a retry on a
 * fresh connection. */
static const px_stmt *claimed_stmts(branch *b)
{
    const schema_dialect *d = schema_for(b->part->cfg->driver);
    struct claim *k = b->claim;
    if (!k) {
        k = b->claim = calloc(1, sizeof *k + ((size_t)b->req->nstmts + 1) * sizeof(px_stmt));
        if (!k)
            abort(); /* before any work: nothing is lost by dying */
        request_digest_hex(b->t->o->digest, k->digest_hex);
        text_param(&k->claim[0], b->xid.gtrid);
        text_param(&k->claim[1], b->xid.bqual);
        text_param(&k->claim[2], b->t->o->id);
        text_param(&k->claim[3], k->digest_hex);
        text_param(&k->claim[4], b->t->c->prefix);
        k->stmts[0] = (px_stmt){d->claim_sql, k->claim, 5, -1, true};
        memcpy(k->stmts + 1, b->req->stmts, (size_t)b->req->nstmts * sizeof(px_stmt));
    }
    return k->stmts;
}

/* The COMMIT is acknowledged: the outcome is final. It is journaled lazily, with nothing pending,
 * so that a restart answers the id from the journal; without the record, the marker answers. */
static void one_phase_committed(branch *b)
{
    struct txn *t = b->t;
    journal_rec rec = {JOURNAL_COMMIT, t->c->boot, t->seq, coord_now_ms(), NULL, 0};
    char *payload = NULL;
    size_t len = 0;
    crash_point("after-one-phase-commit");
    t->committed = true;
    set_state(t, TXN_COMMITTING);
    outcome_set_pending(t->c->outcomes, t->o, 0);
    t->o->status = 200;
    outcome_commit(t->c->outcomes, t->o, coord_now_ms());
    metric_counter_add(t->c->txn_committed, 1);
    if (coord_encode_outcome(t->c, t->o, &payload, &len) == 0) {
        rec.payload = payload;
        rec.payload_len = len;
        if (journal_append(t->c->journal, &rec, NULL, NULL) != 0)
            log_warn(t->ctx, "the one-phase commit could not be journaled: its marker answers "
                             "for it");
    }
    free(payload);
    settle(t, OUTCOME_COMMITTED, 200, NULL);
    branch_done(b); /* no done record: nothing is pending */
}

static void one_phase_failed(branch *b)
{
    px_error e;
    px_error_set(&e, PX_RETRYABLE, false, 0, "",
                 "the connection was lost during COMMIT, and the transaction did not commit");
    branch_done(b); /* nothing left to roll back: the server ended it */
    branch_failed(b, &e, -1);
}

/* The probe's connection failed or the marker could not be read yet: again later. */
static void probe_retry(branch *b, bool broken)
{
    b->busy = false;
    if (broken)
        discard_conn(b);
    else
        release_conn(b);
    schedule_retry(b);
}

static void on_probe_rolled_back(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    b->busy = false;
    if (err)
        discard_conn(b); /* ending the session rolls the probe back */
    else
        release_conn(b);
    b->probing = false;
    if (b->probe_found)
        one_phase_committed(b);
    else
        one_phase_failed(b);
}

/* The probe inserts the same marker again in a transaction of its own. The unique keys make it
 * wait for the lost COMMIT's transaction if that one still runs, and then find its row exactly
 * when it committed. The probe itself is always rolled back. */
static void on_probe_claimed(px_conn *conn, const px_error *err, int failed_index,
                             const px_result *results, int nresults, void *arg)
{
    branch *b = arg;
    const px_driver *drv = px_pool_driver(b->part->pool);
    if (err || nresults != 1) {
        log_warn(b->t->ctx, "%s: cannot read the marker yet (%s); retrying", b->part->cfg->name,
                 err ? err->message : "no result");
        probe_retry(b, !err || err->conn_broken);
        return;
    }
    b->probe_found = results[0].rows_affected == 0; /* the row was there: committed */
    if (drv->rollback(b->conn, &b->xid, on_probe_rolled_back, b) != 0)
        probe_retry(b, true);
}

static void on_probe_begun(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    const px_driver *drv = px_pool_driver(b->part->pool);
    if (err) {
        probe_retry(b, err->conn_broken);
        return;
    }
    if (drv->exec(b->conn, b->claim->stmts, 1, on_probe_claimed, b) != 0)
        probe_retry(b, true);
}

static void on_probe_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    branch *b = req->data;
    const px_driver *drv = px_pool_driver(b->part->pool);
    if (!conn) {
        schedule_retry(b);
        return;
    }
    b->conn = conn;
    b->busy = true;
    if (drv->begin(conn, &b->xid, on_probe_begun, b) != 0)
        probe_retry(b, true);
}

/* Never gives up: the client waits (GET says in progress) until the database answers. */
static void probe_one_phase(branch *b)
{
    b->preq.data = b;
    if (px_pool_acquire(b->part->pool, &b->preq, on_probe_conn) != 0)
        schedule_retry(b);
}

static void on_one_phase_done(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    b->busy = false;
    if (!err) {
        one_phase_committed(b);
        return;
    }
    if (!err->conn_broken) {
        /* The server answered: the transaction did not commit, and nothing is left of it. */
        branch_done(b);
        branch_failed(b, err, -1);
        return;
    }
    log_warn(b->t->ctx, "%s: the answer to COMMIT was lost (%s); its marker will tell",
             b->part->cfg->name, err->message);
    discard_conn(b);
    b->probing = true;
    probe_one_phase(b);
}

static void commit_one_phase(branch *b)
{
    struct txn *t = b->t;
    const px_driver *drv = px_pool_driver(b->part->pool);
    /* From here on only the database decides: no timeout may abandon the COMMIT in flight. */
    uv_timer_stop(&t->timer);
    t->o->reply_head = commit_head(t);
    if (drv->commit_one_phase(b->conn, &b->xid, on_one_phase_done, b) != 0) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, false, 0, "", "driver refused COMMIT");
        branch_failed(b, &e, -1);
        return;
    }
    branch_set_state(b, BR_FINISHING); /* the answer comes from the loop, never from the call */
    if (fault_point("cut-after-one-phase-commit")) {
        /* Test only: the connection dies after COMMIT went out, before its answer came. */
        px_error e;
        px_error_set(&e, PX_RETRYABLE, true, 0, "08006", "connection cut after COMMIT was sent");
        discard_conn(b);
        on_one_phase_done(NULL, &e, b);
    }
}

/* The id is held by an earlier transaction's marker: that one committed (the claim waited for
 * it if it was still running). This one has done nothing and rolls back; the client hears the
 * earlier outcome - without its results, which only its own reply carried. */
static void answer_from_marker(branch *b, const char *gtrid, const char *digest)
{
    struct txn *t = b->t;
    char *head = NULL;
    int status = 200;
    if (!digest || strcmp(digest, b->claim->digest_hex) != 0) {
        status = 422;
        if (asprintf(&head, "{\"error\":\"id '%s' was already used with a different request\"",
                     t->o->id) < 0)
            abort();
    } else if (asprintf(&head,
                        "{\"id\":\"%s\",\"xid\":\"%s\",\"outcome\":\"committed\",\"branches\":"
                        "[{\"participant\":\"%s\",\"results\":null}]",
                        t->o->id, gtrid, b->part->cfg->name) < 0) {
        abort();
    }
    log_info(t->ctx, "id %s was committed earlier as %s (its marker on %s)%s", t->o->id, gtrid,
             b->part->cfg->name, status == 200 ? "" : ", with another request");
    set_state(t, TXN_ABORTING);
    uv_timer_stop(&t->timer);
    t->o->replayed = status == 200;
    settle(t, status == 200 ? OUTCOME_COMMITTED : OUTCOME_ABORTED, status, head);
    outcome_unindex(t->c->outcomes, t->o); /* the marker keeps answering for the id */
    branch_abort(b, false);
    maybe_free(t);
}

static void on_marker_found(px_conn *conn, const px_error *err, int failed_index,
                            const px_result *results, int nresults, void *arg)
{
    branch *b = arg;
    const px_result *r = nresults == 1 ? &results[0] : NULL;
    b->busy = false;
    if (b->t->state != TXN_WORKING) {
        branch_abort(b, false);
        return;
    }
    if (err) {
        branch_failed(b, err, -1);
        return;
    }
    if (!r || r->nrows != 1 || r->ncols != 2 || !r->cells[0]) {
        px_error e;
        px_error_set(&e, PX_RETRYABLE, false, 0, "",
                     "the id is held by another transaction's marker, which could not be read");
        branch_failed(b, &e, -1);
        return;
    }
    answer_from_marker(b, r->cells[0], r->cells[1]);
}

static void on_claim_rolled_back(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    const px_driver *drv = px_pool_driver(b->part->pool);
    const schema_dialect *d = schema_for(b->part->cfg->driver);
    px_error e;
    b->busy = false;
    b->begun = false;
    if (b->t->state != TXN_WORKING) {
        branch_abort(b, false);
        return;
    }
    if (!err) {
        struct claim *k = b->claim;
        k->find[0] = k->claim[2];
        k->find[1] = k->claim[1];
        k->find[2] = k->claim[4];
        k->find_stmt = (px_stmt){d->find_sql, k->find, 3, -1, true};
        b->busy = true;
        if (drv->exec(b->conn, &k->find_stmt, 1, on_marker_found, b) == 0)
            return;
        b->busy = false;
    }
    px_error_set(&e, PX_RETRYABLE, true, 0, "",
                 "the id is held by another transaction's marker, "
                 "which could not be read");
    branch_failed(b, &e, -1);
}

/* The branch is rolled back first: its statements may have failed (PostgreSQL then refuses any
 * further statement in it), and the marker is read outside any branch. */
static void find_marker(branch *b)
{
    const px_driver *drv = px_pool_driver(b->part->pool);
    b->busy = true;
    if (drv->rollback(b->conn, &b->xid, on_claim_rolled_back, b) != 0) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, true, 0, "", "driver refused ROLLBACK");
        branch_failed(b, &e, -1);
    }
}

/* The reply must carry every value exactly; one that cannot travel fails the branch before
 * PREPARE, so the client hears why instead of getting a reply with a value missing. */
static int render_results(branch *b, const px_result *results, int nresults)
{
    char why[300];
    int stmt = 0;
    px_error e;
    b->results = results_render(results, nresults, &stmt, why, sizeof why);
    if (b->results)
        return 0;
    px_error_set(&e, PX_BUSINESS, false, 0, "", "the result cannot be carried exactly: %s", why);
    branch_failed(b, &e, stmt);
    return -EINVAL;
}

static void on_executed(px_conn *conn, const px_error *err, int failed_index,
                        const px_result *results, int nresults, void *arg)
{
    branch *b = arg;
    struct txn *t = b->t;
    const px_driver *drv = px_pool_driver(b->part->pool);
    int first = t->one_phase ? 1 : 0;
    branch *lr;
    b->busy = false;
    if (t->state != TXN_WORKING) {
        branch_abort(b, false);
        return;
    }
    /* One-phase: statement 0 is the claim. When the id was taken, the statements after it ran
     * against the earlier transaction's work, and whatever they did is rolled back unseen. */
    if (t->one_phase && nresults >= 1 && results[0].rows_affected == 0 &&
        !(err && err->conn_broken)) {
        find_marker(b);
        return;
    }
    if (err) {
        /* a failed claim is the participant's failure, not a statement's */
        if (!retry_on_fresh_conn(b, err))
            branch_failed(b, err, failed_index >= first ? failed_index - first : -1);
        return;
    }
    if (render_results(b, results + first, nresults - first) != 0)
        return;
    for (int i = first; i < nresults; i++)
        b->wrote |= results[i].ncols == 0 && results[i].rows_affected > 0;
    crash_point("after-work");
    if (++t->nworked == t->nbranches && t->c->store && (lr = last_resource_of(t))) {
        write_lr_decision(lr);
        if (t->state != TXN_WORKING)
            return; /* the row could not be written: t aborted, b with it */
    }
    if (b->last_resource) {
        /* Holds its transaction open until every other branch prepared (decide_commit). */
        if (++t->nprepared == t->nbranches)
            decide_commit(t);
        return;
    }
    if (t->one_phase) {
        b->busy = true;
        commit_one_phase(b);
        return;
    }
    branch_set_state(b, BR_PREPARING);
    b->busy = true;
    if (b->req->read_only) {
        end_read_only(b);
        return;
    }
    if (drv->prepare(b->conn, &b->xid, on_prepared, b) != 0) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, false, 0, "", "driver refused PREPARE");
        branch_failed(b, &e, -1);
        return;
    }
    if (fault_point("cut-after-prepare")) {
        /* Test only: the connection dies after PREPARE went out, before its answer came. */
        px_error e;
        px_error_set(&e, PX_RETRYABLE, true, 0, "08006", "connection cut after PREPARE was sent");
        b->busy = false;
        discard_conn(b);
        on_prepared(NULL, &e, b);
    }
}

static void on_begun(px_conn *conn, const px_error *err, void *arg)
{
    branch *b = arg;
    struct txn *t = b->t;
    const px_driver *drv = px_pool_driver(b->part->pool);
    b->busy = false;
    if (!err)
        b->begun = true;
    if (t->state != TXN_WORKING) {
        branch_abort(b, false);
        return;
    }
    if (err) {
        if (!retry_on_fresh_conn(b, err))
            branch_failed(b, err, -1);
        return;
    }
    b->busy = true;
    if (t->one_phase ? drv->exec(b->conn, claimed_stmts(b), b->req->nstmts + 1, on_executed, b)
                     : drv->exec(b->conn, b->req->stmts, b->req->nstmts, on_executed, b)) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, false, 0, "", "driver refused the statements");
        branch_failed(b, &e, -1);
    }
}

static void acquire_next(struct txn *t);

static void on_acquired(px_pool_req *req, px_conn *conn, const px_error *err)
{
    branch *b = req->data;
    struct txn *t = b->t;
    const px_driver *drv = px_pool_driver(b->part->pool);
    if (conn && t->state != TXN_WORKING) {
        px_pool_release(b->part->pool, conn);
        branch_done(b);
        return;
    }
    if (!conn) {
        abort_info a = {503, true, false, "", b, -1, err, NULL};
        char reason[320];
        snprintf(reason, sizeof reason, "participant unavailable: %s", err->message);
        a.reason = reason;
        branch_done(b); /* nothing was begun */
        txn_abort(t, &a);
        return;
    }
    b->conn = conn;
    branch_set_state(b, BR_WORKING);
    b->busy = true;
    if (drv->begin(conn, &b->xid, on_begun, b) != 0) {
        px_error e;
        b->busy = false;
        px_error_set(&e, PX_FATAL, false, 0, "", "driver refused BEGIN");
        branch_failed(b, &e, -1);
        return;
    }
    if (!b->reconnected)
        acquire_next(t);
}

/* One connection at a time, in participant order: see txn.h. */
static void acquire_next(struct txn *t)
{
    branch *b;
    if (t->state != TXN_WORKING || t->next_acquire >= t->nbranches)
        return;
    b = &t->b[t->next_acquire++];
    branch_set_state(b, BR_ACQUIRING);
    b->preq.data = b;
    if (px_pool_acquire(b->part->pool, &b->preq, on_acquired) != 0) {
        abort_info a = {503, true, false, "participant pool is closing", b, -1, NULL, NULL};
        branch_done(b); /* nothing was begun */
        txn_abort(t, &a);
    }
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static void release_handle(struct txn *t)
{
    if (--t->open_handles > 0)
        return;
    for (int i = 0; i < t->nbranches; i++)
        XA_CHECK(!list_linked(&t->b[i].doubt_node), "%s: branch %d freed while in doubt", t->ctx,
                 i);
    request_free(t->req);
    free(t);
}

static void on_handle_closed(uv_handle_t *h)
{
    release_handle(h->data);
}

/* A branch's retry timer is an allocation of its own. */
static void on_retry_closed(uv_handle_t *h)
{
    struct txn *t = h->data;
    free(h);
    release_handle(t);
}

static void close_handle(struct txn *t, uv_handle_t *h, uv_close_cb cb)
{
    h->data = t;
    uv_close(h, cb);
}

/* Frees the transaction once every branch is done and the client has its answer. */
static void maybe_free(struct txn *t)
{
    coord *c = t->c;
    if (t->freeing || t->ndone < t->nbranches || t->state == TXN_WORKING ||
        t->state == TXN_DECIDING)
        return;
    if (t->committed) {
        journal_rec rec = {JOURNAL_DONE, c->boot, t->seq, coord_now_ms(), NULL, 0};
        crash_point("before-done-record");
        /* Without it the next start only asks the participants again: they answer "not found"
         * and the branches count as finished. */
        if (c->store)
            store_done(c->store, t->gtrid);
        else if (journal_append(c->journal, &rec, NULL, NULL) != 0)
            log_warn(t->ctx, "the done record could not be journaled");
        if (!t->replied)
            settle(t, OUTCOME_COMMITTED, 200, NULL);
    }
    txn_release(t);
}

/* Takes t out of every index and frees it once its handles are closed. */
static void txn_release(struct txn *t)
{
    coord *c = t->c;
    t->freeing = true;
    if (!t->abandoned)
        list_remove(&c->lists[t->state], &t->node);
    strmap_del(c->live, t->gtrid);
    t->o->live = NULL;
    outcome_release(c->outcomes, t->o);
    for (int i = 0; i < t->nbranches; i++) {
        free(t->b[i].results);
        free(t->b[i].claim);
        store_decision_free(t->b[i].lr_dec);
        if (t->b[i].retry)
            close_handle(t, (uv_handle_t *)t->b[i].retry, on_retry_closed);
    }
    close_handle(t, (uv_handle_t *)&t->timer, on_handle_closed);
}

uint64_t txn_assign(coord *c, char *buf, size_t len)
{
    uint64_t seq = ++c->next_seq;
    coord_gtrid(c, c->boot, seq, buf, len);
    return seq;
}

/* With [decision_store] participant, that participant's first writing branch is the last
 * resource (docs/design.md, "Last-resource commit"). */
static void mark_last_resource(struct txn *t)
{
    int lr = t->c->store ? t->c->cfg->store.participant_index : -1;
    for (int i = 0; lr >= 0 && i < t->nbranches; i++) {
        if (t->b[i].part->index == lr && !t->b[i].req->read_only) {
            t->b[i].last_resource = true;
            return;
        }
    }
}

int txn_start(coord *c, txn_request *req, outcome *o, uint64_t seq)
{
    struct txn *t = calloc(1, sizeof *t + sizeof(branch) * (size_t)req->nbranches);
    if (!t) {
        request_free(req);
        return -ENOMEM;
    }
    t->c = c;
    t->req = req;
    t->o = o;
    t->seq = seq;
    t->started_ns = uv_hrtime();
    t->nbranches = req->nbranches;
    snprintf(t->gtrid, sizeof t->gtrid, "%s", o->gtrid);
    snprintf(t->ctx, sizeof t->ctx, "txn %s", t->gtrid);
    for (int i = 0; i < req->nbranches; i++) {
        branch *b = &t->b[i];
        b->t = t;
        b->index = i;
        b->req = &req->branches[i];
        b->part = &c->parts[b->req->participant];
        if (px_xid_set(&b->xid, t->gtrid, b->part->cfg->name) != 0)
            abort(); /* config validation guarantees the lengths */
    }
    /* Recovery's liveness check reads this index: a transaction missing from it could have its
     * branches rolled back under it, so it must not start. */
    if (strmap_put(c->live, t->gtrid, t) != 0) {
        request_free(req);
        free(t);
        return -ENOMEM;
    }
    o->live = t;
    t->one_phase = one_phase_eligible(t);
    mark_last_resource(t);
    t->state = TXN_WORKING;
    list_push_head(&c->lists[TXN_WORKING], &t->node);
    uv_timer_init(c->loop, &t->timer);
    t->timer.data = t;
    t->open_handles = 1;
    uv_timer_start(&t->timer, on_timeout, req->timeout_ms, 0);
    log_debug(t->ctx, "started: id %s, %d branches", o->id, t->nbranches);
    acquire_next(t);
    return 0;
}

/* Shutdown after the drain limit: every decision is durable or presumed abort, so dropping the
 * process state loses nothing - the next start finishes what is left. Closing the connections ends
 * the operations in flight. A client still waiting is told the outcome is not known here. */
static void txn_abandon(struct txn *t, const char *why)
{
    for (int i = 0; i < t->nbranches; i++) {
        branch *b = &t->b[i];
        if (b->state == BR_ACQUIRING || b->state == BR_FINISHING)
            px_pool_cancel(&b->preq);
        discard_conn(b);
        if (b->state != BR_DONE)
            branch_set_state(b, BR_DONE); /* not counted: t is dropped whole */
    }
    if (!t->replied) {
        json_t *head = base_reply(t, "unknown");
        json_object_set_new(head, "error", json_string(why));
        settle(t, OUTCOME_IN_PROGRESS, 503, dump_head(head));
    }
    if (t->state == TXN_DECIDING) {
        /* The journal still holds t for the completion of its commit record, which runs
         * before the journal finishes closing: t leaves the lists now and is freed then. */
        list_remove(&t->c->lists[t->state], &t->node);
        t->abandoned = true;
        return;
    }
    txn_release(t);
}

void txn_abandon_all(coord *c, const char *why)
{
    for (int s = 0; s < TXN_NSTATES; s++)
        while (!list_empty(&c->lists[s]))
            txn_abandon(list_entry(list_first(&c->lists[s]), struct txn, node), why);
}

int txn_count_maybe_prepared(const coord *c)
{
    int n = 0;
    for (int s = 0; s < TXN_NSTATES; s++) {
        list_each(node, &c->lists[s]) {
            const struct txn *t = list_entry(node, struct txn, node);
            for (int i = 0; i < t->nbranches; i++) {
                if (t->b[i].state >= BR_PREPARING && t->b[i].state != BR_DONE) {
                    n++;
                    break;
                }
            }
        }
    }
    return n;
}

void txn_each_prepared(const coord *c, txn_prepared_fn fn, void *arg)
{
    uint64_t now = uv_hrtime();
    for (int s = 0; s < TXN_NSTATES; s++) {
        list_each(n, &c->lists[s]) {
            const struct txn *t = list_entry(n, struct txn, node);
            const char *decision = t->committed               ? "commit"
                                   : t->state == TXN_ABORTING ? "abort"
                                                              : "unknown";
            for (int i = 0; i < t->nbranches; i++) {
                const branch *b = &t->b[i];
                if ((b->state >= BR_PREPARED || b->maybe_prepared) && b->state != BR_DONE)
                    fn(b->part, t->gtrid, (double)(now - b->prepared_ns) / 1e9, decision, arg);
            }
        }
    }
}

bool txn_is_live(const coord *c, const char *gtrid)
{
    return strmap_get(c->live, gtrid) != NULL;
}

void txn_in_doubt(const coord *c, int *counts, double *oldest_s)
{
    uint64_t now = uv_hrtime();
    for (int i = 0; i < c->nparts; i++) {
        const list_head *l = &c->parts[i].in_doubt;
        double age;
        if (list_empty(l))
            continue;
        counts[i] += (int)list_count(l);
        age = (double)(now - list_entry(list_first(l), branch, doubt_node)->doubt_ns) / 1e9;
        if (age > oldest_s[i])
            oldest_s[i] = age;
    }
}
