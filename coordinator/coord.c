/*
 * The daemon's context (see coord.h): start-up order, journal replay into the outcome table, the
 * metrics that read the context, and orderly close.
 */
#include "coord.h"

#include "failover.h"
#include "indoubt.h"
#include "log.h"
#include "markers.h"
#include "owner.h"
#include "preflight.h"
#include "recovery.h"
#include "store.h"
#include "txn.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int64_t coord_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int coord_part_index(const coord *c, const char *name)
{
    for (int i = 0; i < c->nparts; i++)
        if (strcmp(c->parts[i].cfg->name, name) == 0)
            return i;
    return -1;
}

bool coord_part_usable(const coord_part *p)
{
    return p->ready && p->owned && p->safe;
}

bool coord_ready(const coord *c)
{
    for (int i = 0; i < c->nparts; i++)
        if (!coord_part_usable(&c->parts[i]))
            return false;
    return true;
}

int coord_inflight(const coord *c)
{
    int n = 0;
    for (int s = 0; s < TXN_NSTATES; s++)
        n += c->lists[s].count;
    return n;
}

/* ---- outcome payloads -------------------------------------------------------------------- */

/* Format (text, one field per line; ids, digests and names never contain a newline):
 *   id \n digest-hex \n status \n participant,participant,... \n reply-head */
int coord_encode_outcome(const coord *c, const outcome *o, char **out, size_t *len)
{
    char digest[2 * REQUEST_DIGEST_LEN + 1], names[CONFIG_MAX_PARTICIPANTS * 34] = "";
    size_t pos = 0;
    const char *head = o->reply_head ? o->reply_head : "";
    int n;

    for (int i = 0; i < c->nparts; i++) {
        if (o->pending & (1u << i))
            pos += (size_t)snprintf(names + pos, sizeof names - pos, "%s%s", pos ? "," : "",
                                    c->parts[i].cfg->name);
    }
    request_digest_hex(o->digest, digest);
    n = asprintf(out, "%s\n%s\n%d\n%s\n%s", o->id, digest, o->status, names, head);
    if (n < 0)
        return -1;
    *len = (size_t)n;
    return 0;
}

typedef struct decoded {
    char id[REQUEST_ID_MAX + 1];
    uint8_t digest[REQUEST_DIGEST_LEN];
    int status;
    uint32_t participants;
    char *head;
} decoded;

/* Splits off the next line of a payload; NULL when there is none. */
static char *next_line(char **p)
{
    char *s = *p, *nl;
    if (!s)
        return NULL;
    nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = NULL;
    }
    return s;
}

static bool decode_participants(coord *c, char *list, uint32_t *mask, const char *gtrid)
{
    char *save = NULL;
    *mask = 0;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int i = coord_part_index(c, name);
        if (i < 0) {
            log_error("journal",
                      "transaction %s names participant '%s', which is not in the "
                      "configuration: its branch there cannot be resolved",
                      gtrid, name);
            continue;
        }
        *mask |= 1u << i;
    }
    return true;
}

static bool decode_outcome(coord *c, const journal_rec *rec, const char *gtrid, decoded *d)
{
    char *copy = strndup(rec->payload ? rec->payload : "", rec->payload_len), *p = copy;
    char *id = next_line(&p), *digest = next_line(&p), *status = next_line(&p);
    char *parts = next_line(&p);
    bool ok = id && digest && status && parts && request_id_valid(id) &&
              request_digest_parse(digest, d->digest);
    if (ok) {
        snprintf(d->id, sizeof d->id, "%s", id);
        d->status = atoi(status);
        if (d->status < 200 || d->status > 599) {
            /* The decision stands whatever the stored reply says; the reply gets a real status. */
            log_warn("journal", "outcome of %s has HTTP status '%s': answering with %d", gtrid,
                     status, rec->type == JOURNAL_COMMIT ? 200 : 409);
            d->status = rec->type == JOURNAL_COMMIT ? 200 : 409;
        }
        decode_participants(c, parts, &d->participants, gtrid);
        d->head = strdup(p ? p : "");
    }
    free(copy);
    return ok;
}

/* An older outcome that is past its retention and owes nothing: a client may reuse its id. */
static bool expired(const coord *c, const outcome *o, const journal_rec *rec)
{
    return o->state != OUTCOME_IN_PROGRESS && o->pending == 0 &&
           rec->time_ms - o->time_ms > (int64_t)c->cfg->outcome_retention_s * 1000;
}

/* Ids are unique (generated ones have a prefix clients may not use, and a repeated id replays
 * instead of running), so an id recorded twice within its retention means the journal is not what
 * this coordinator wrote. The first outcome keeps answering for the id; the later one stays
 * reachable by its gtrid, so that neither decision is lost for recovery. */
static outcome *replay_create(coord *c, const decoded *d, const char *gtrid, const journal_rec *rec)
{
    outcome *o = outcome_find(c->outcomes, d->id);
    if (!o)
        return outcome_create(c->outcomes, d->id, gtrid, d->digest);
    if (expired(c, o, rec)) {
        outcome_unindex(c->outcomes, o);
        outcome_release(c->outcomes, o);
        return outcome_create(c->outcomes, d->id, gtrid, d->digest);
    }
    c->journal_conflicts++;
    log_error("journal",
              "CORRUPTION: id '%s' is recorded for transaction %s and again for %s; "
              "the id keeps answering with %s, and both decisions are kept for "
              "recovery",
              d->id, o->gtrid, gtrid, o->gtrid);
    return outcome_create_shadowed(c->outcomes, d->id, gtrid, d->digest);
}

static void replay_outcome(coord *c, const journal_rec *rec)
{
    char gtrid[PX_XID_PART_MAX + 1];
    decoded d;
    outcome *o;

    txn_format_gtrid(c, rec->boot, rec->seq, gtrid, sizeof gtrid);
    if (!decode_outcome(c, rec, gtrid, &d)) {
        log_error("journal", "unreadable outcome payload for %s: ignored", gtrid);
        return;
    }
    o = replay_create(c, &d, gtrid, rec);
    if (!o)
        abort();
    if (rec->type == JOURNAL_COMMIT) {
        outcome_commit(c->outcomes, o, rec->time_ms);
        o->pending = d.participants;
    }
    outcome_settle(c->outcomes, o,
                   rec->type == JOURNAL_COMMIT ? OUTCOME_COMMITTED : OUTCOME_ABORTED, d.status,
                   d.head, rec->time_ms);
}

static void on_replay(const journal_rec *rec, void *arg)
{
    coord *c = arg;
    char gtrid[PX_XID_PART_MAX + 1];
    outcome *o;
    switch (rec->type) {
    case JOURNAL_BOOT:
        break;
    case JOURNAL_COMMIT:
    case JOURNAL_ABORT:
        replay_outcome(c, rec);
        break;
    case JOURNAL_DONE:
        txn_format_gtrid(c, rec->boot, rec->seq, gtrid, sizeof gtrid);
        o = outcome_find_commit(c->outcomes, gtrid);
        if (o)
            o->pending = 0;
        break;
    }
}

/* ---- heuristic outcomes ------------------------------------------------------------------ */

void coord_heuristic(coord *c, outcome *o, const coord_part *p, bool data_loss, const char *what,
                     const char *ctx)
{
    bool committed = o->state == OUTCOME_COMMITTED;
    heuristic e = {coord_now_ms(), "", "", "", committed, data_loss, ""};
    metric_counter_add(p->heuristic, 1);
    o->heuristic |= 1u << p->index;
    snprintf(e.gtrid, sizeof e.gtrid, "%s", o->gtrid);
    snprintf(e.id, sizeof e.id, "%s", o->id);
    snprintf(e.participant, sizeof e.participant, "%s", p->cfg->name);
    snprintf(e.what, sizeof e.what, "%s", what);
    heuristics_add(&c->heuristics, &e);
    log_error(ctx, "%s: %s: %s; the decision was %s (transaction %s, id %s)", p->cfg->name,
              data_loss ? "DATA LOSS" : "HEURISTIC HAZARD", what, committed ? "COMMIT" : "ROLLBACK",
              o->gtrid, o->id);
}

/* ---- metrics ----------------------------------------------------------------------------- */

static double g_inflight(void *arg)
{
    return coord_inflight(arg);
}

static double g_part_up(void *arg)
{
    coord_part *p = arg;
    px_pool_stats st;
    px_pool_get_stats(p->pool, &st);
    return st.up && p->ready;
}

static double in_doubt_stat(coord_part *p, bool age)
{
    int counts[CONFIG_MAX_PARTICIPANTS] = {0};
    double oldest[CONFIG_MAX_PARTICIPANTS] = {0};
    txn_in_doubt(p->owner, counts, oldest);
    return age ? oldest[p->index] : counts[p->index];
}

/* Everything GET /v1/in-doubt lists for p (0 when the walk runs out of memory: the scrape then
 * under-reports for one interval rather than failing). */
static double listed_stat(coord_part *p, bool age)
{
    indoubt_stats st;
    if (indoubt_get_stats(p->owner, &st) != 0)
        return 0;
    return age ? st.oldest_s[p->index] : st.count[p->index];
}

static double g_listed(void *arg)
{
    return listed_stat(arg, false);
}
static double g_listed_oldest(void *arg)
{
    return listed_stat(arg, true);
}

static double g_part_safe(void *arg)
{
    return ((coord_part *)arg)->safe;
}

static double g_in_doubt(void *arg)
{
    return in_doubt_stat(arg, false);
}

static double pool_stat(coord_part *p, int which)
{
    px_pool_stats st;
    px_pool_get_stats(p->pool, &st);
    return which == 0 ? st.busy : which == 1 ? st.idle : st.waiting;
}

static double g_pool_busy(void *arg)
{
    return pool_stat(arg, 0);
}
static double g_pool_idle(void *arg)
{
    return pool_stat(arg, 1);
}
static double g_pool_waiting(void *arg)
{
    return pool_stat(arg, 2);
}

static double g_oldest(void *arg)
{
    return in_doubt_stat(arg, true);
}

static double g_foreign(void *arg)
{
    const coord_part *p = arg;
    return (double)recovery_foreign_count(p->owner, p->index);
}

static double g_conflicts(void *arg)
{
    return (double)((coord *)arg)->journal_conflicts;
}

static double g_outcomes(void *arg)
{
    return (double)outcomes_count(((coord *)arg)->outcomes);
}

static void register_part_metrics(coord *c, coord_part *p)
{
    char labels[64];
    metrics *m = c->metrics;
    snprintf(labels, sizeof labels, "participant=\"%s\"", p->cfg->name);
    p->commit_retries = metrics_counter(m, "xacoord_phase2_retries_total", labels,
                                        "Phase-2 COMMIT/ROLLBACK PREPARED attempts retried");
    p->xid_not_found = metrics_counter(m, "xacoord_xid_not_found_total", labels,
                                       "Prepared branches found already finished (lost replies)");
    p->heuristic = metrics_counter(m, "xacoord_heuristic_total", labels,
                                   "Branches finished by someone else against the decision");
    p->recovered_commit = metrics_counter(m, "xacoord_recovery_commits_total", labels,
                                          "In-doubt branches committed by recovery");
    p->recovered_rollback = metrics_counter(m, "xacoord_recovery_rollbacks_total", labels,
                                            "In-doubt branches rolled back by recovery");
    metrics_gauge_fn(m, "xacoord_participant_up", labels,
                     "1 when the participant is reachable and recovered", g_part_up, p);
    metrics_gauge_fn(m, "xacoord_participant_safe", labels,
                     "1 when preflight found the server's settings safe (or allow_unsafe)",
                     g_part_safe, p);
    metrics_gauge_fn(m, "xacoord_in_doubt_branches", labels,
                     "Prepared branches of live transactions not yet finished", g_in_doubt, p);
    metrics_gauge_fn(m, "xacoord_oldest_prepared_age_seconds", labels,
                     "Age of the oldest prepared, unfinished branch", g_oldest, p);
    metrics_gauge_fn(m, "xacoord_unresolved_branches", labels,
                     "Prepared branches GET /v1/in-doubt lists: live, awaiting phase 2, left by "
                     "recovery, foreign",
                     g_listed, p);
    metrics_gauge_fn(m, "xacoord_oldest_unresolved_age_seconds", labels,
                     "Age of the oldest branch GET /v1/in-doubt lists", g_listed_oldest, p);
    metrics_gauge_fn(m, "xacoord_foreign_branches", labels,
                     "Prepared branches of this node_id made by another data directory (identity)",
                     g_foreign, p);
    metrics_gauge_fn(m, "xacoord_pool_busy_connections", labels, "Connections lent out",
                     g_pool_busy, p);
    metrics_gauge_fn(m, "xacoord_pool_idle_connections", labels, "Connections idle in the pool",
                     g_pool_idle, p);
    metrics_gauge_fn(m, "xacoord_pool_waiting_requests", labels,
                     "Transactions waiting for a connection (pool_size reached)", g_pool_waiting,
                     p);
}

static void register_metrics(coord *c)
{
    static const double group_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    metrics *m = c->metrics;
    const char *help = "Transactions by outcome";
    c->txn_committed =
        metrics_counter(m, "xacoord_transactions_total", "outcome=\"committed\"", help);
    c->txn_aborted = metrics_counter(m, "xacoord_transactions_total", "outcome=\"aborted\"", help);
    c->txn_rejected =
        metrics_counter(m, "xacoord_transactions_total", "outcome=\"rejected\"", help);
    c->txn_latency = metrics_histogram(m, "xacoord_transaction_duration_seconds", "",
                                       "Time from request to answer", metrics_latency_bounds,
                                       metrics_latency_nbounds);
    c->fsync_latency =
        metrics_histogram(m, "xacoord_journal_fsync_seconds", "", "Journal fdatasync latency",
                          metrics_latency_bounds, metrics_latency_nbounds);
    c->group_size = metrics_histogram(m, "xacoord_journal_group_size", "",
                                      "Records per journal batch (group commit)", group_bounds,
                                      sizeof group_bounds / sizeof group_bounds[0]);
    metrics_gauge_fn(m, "xacoord_inflight_transactions", "", "Transactions in flight", g_inflight,
                     c);
    metrics_gauge_fn(m, "xacoord_outcomes_retained", "", "Outcomes kept for idempotent replay",
                     g_outcomes, c);
    metrics_gauge_fn(m, "xacoord_journal_repeated_ids", "",
                     "Ids the journal recorded for two transactions (corruption; see the log)",
                     g_conflicts, c);
    for (int i = 0; i < c->nparts; i++)
        register_part_metrics(c, &c->parts[i]);
}

/* The journal keeps no copy of outcome payloads: at compaction it asks for them here. */
static int journal_payload(journal_type type, uint64_t boot, uint64_t seq, void **out, size_t *len,
                           void *arg)
{
    coord *c = arg;
    char gtrid[PX_XID_PART_MAX + 1];
    outcome *o;
    txn_format_gtrid(c, boot, seq, gtrid, sizeof gtrid);
    o = outcome_find_gtrid(c->outcomes, gtrid);
    /* A COMMIT record is asked for while its transaction still waits for the record's own
     * fsync (outcome in progress, reply already fixed): under sustained commits every batch holds
     * one, and refusing them would stop compaction for good. (A status other than 200 is the
     * shutdown's "unknown" answer to a commit whose record was still being written.) */
    if (!o || !o->reply_head || (type == JOURNAL_COMMIT && o->status != 200))
        return -1;
    if (type == JOURNAL_COMMIT ? o->state == OUTCOME_ABORTED : o->state != OUTCOME_ABORTED)
        return -1;
    return coord_encode_outcome(c, o, (char **)out, len);
}

static void on_sync(double seconds, unsigned records, void *arg)
{
    coord *c = arg;
    metric_histogram_observe(c->fsync_latency, seconds);
    metric_histogram_observe(c->group_size, records);
}

static void on_prune(uv_timer_t *t)
{
    coord *c = t->data;
    outcomes_prune(c->outcomes, coord_now_ms(), 100000);
    markers_tick(c);
    if (c->store)
        store_tick(c->store, c->cfg->outcome_retention_s);
}

/* ---- the decision store ------------------------------------------------------------------ */

/* A participant list of the store ("payment,order") as a mask of this configuration's. */
static uint32_t names_mask(coord *c, const char *names, const char *gtrid)
{
    char *copy = strdup(names);
    uint32_t mask = 0;
    if (!copy)
        abort(); /* start-up: nothing is lost by dying */
    decode_participants(c, copy, &mask, gtrid);
    free(copy);
    return mask;
}

outcome *coord_outcome_from_row(coord *c, const store_row *r, bool ours)
{
    outcome *o = outcome_find(c->outcomes, r->client_id);
    char *head = strdup(r->reply);
    if (o || !head || !(o = outcome_create(c->outcomes, r->client_id, r->gtrid, r->digest))) {
        free(head);
        return o;
    }
    if (r->commit) {
        outcome_commit(c->outcomes, o, r->time_ms);
        o->pending = ours ? names_mask(c, r->pending, r->gtrid) : 0;
    }
    outcome_settle(c->outcomes, o, r->commit ? OUTCOME_COMMITTED : OUTCOME_ABORTED, r->status, head,
                   r->time_ms);
    return o;
}

static void load_unfinished(const store_row *r, void *arg)
{
    if (!coord_outcome_from_row(arg, r, true))
        abort(); /* out of memory at start-up */
}

/* Another process took this node: this one can decide nothing any more, so it stops the way
 * SIGTERM stops it (what it already decided is finished; the rest was never decided). */
static void on_node_lost(void *arg)
{
    (void)arg;
    kill(getpid(), SIGTERM);
}

/* Takes this node in the store (its epoch moves on: whatever an earlier process of this node
 * still had in flight can no longer decide), then learns which of its commits are unfinished. */
static int open_store(coord *c, char *err, size_t errlen)
{
    char holder[64];
    int rc;
    snprintf(holder, sizeof holder, "%s%" PRIu64 " pid %ld", c->prefix, c->boot, (long)getpid());
    if (store_open(&c->store, c->loop, c->cfg, holder, err, errlen) != 0)
        return -1;
    store_on_lost(c->store, on_node_lost, c);
    rc = store_load_unfinished(c->store, load_unfinished, c, err, errlen);
    if (rc == 0)
        log_info(NULL, "decision store: epoch %" PRIu64 "; %zu outcomes to finish or replay",
                 store_epoch(c->store), outcomes_count(c->outcomes));
    return rc;
}

/* ---- open / close ------------------------------------------------------------------------ */

/* Read under the data directory's lock, before replay names the first gtrid. */
static int load_identity(const char *dir, void *arg, char *err, size_t errlen)
{
    return identity_load(dir, &((coord *)arg)->identity, err, errlen) < 0 ? -1 : 0;
}

/* No identity file: a new data directory, or one written before identities, whose last boot
 * is then the last one named xa1 (identity.h). Made durable before this start's boot record, so
 * no transaction is ever named by an identity that a crash could forget. */
static int settle_identity(coord *c, char *err, size_t errlen)
{
    uint64_t last = journal_last_boot(c->journal);
    if (!c->identity.id[0]) {
        if (identity_create(c->cfg->data_dir, last, &c->identity, err, errlen) != 0)
            return -1;
        if (last)
            log_warn(NULL,
                     "data directory %s predates identities: it is now identity %s, and "
                     "its transactions of boots <= %" PRIu64 " keep their xa1 names",
                     c->cfg->data_dir, c->identity.id, last);
        else
            log_info(NULL, "new data directory %s: identity %s", c->cfg->data_dir, c->identity.id);
    }
    gtrid_prefix(2, c->cfg->node_id, c->identity.id, c->prefix, sizeof c->prefix);
    return 0;
}

/* How long the 503 answers of a failed journal get to leave before the process exits. */
#define JOURNAL_FATAL_EXIT_MS 200

static void on_fatal_exit(uv_timer_t *t)
{
    exit(1);
}

/* A failed journal write or fdatasync (journal.h): nothing may be decided any more, and what was
 * being written is not provably durable - as PostgreSQL does on a failed fsync, the process
 * stops. Before it does, every client still waiting is told so (503: the outcome is what the next
 * start finds in the journal; never "committed"), new transactions are refused, and no COMMIT is
 * sent for a decision of the failed batch (its callbacks never run). The exit follows once those
 * answers had a moment to leave. */
static void on_journal_fatal(const char *msg, void *arg)
{
    coord *c = arg;
    int waiting = coord_inflight(c);
    log_error("journal",
              "%s; exiting: no decision is taken on a journal that cannot be made durable "
              "(restart once the disk works: recovery finishes every branch)",
              msg);
    if (waiting == 0 || c->journal_failed)
        exit(1);
    c->journal_failed = true;
    c->draining = true;
    txn_abandon_all(c, "the journal could not make decisions durable and the coordinator stops: "
                       "this transaction's outcome is what its next start finds; ask for it then");
    uv_timer_init(c->loop, &c->fatal_timer);
    uv_timer_start(&c->fatal_timer, on_fatal_exit, JOURNAL_FATAL_EXIT_MS, 0);
}

int coord_open(coord *c, uv_loop_t *loop, const config *cfg, char *err, size_t errlen)
{
    journal_opts jopts = {0};
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->cfg = cfg;
    c->nparts = cfg->nparticipants;
    for (int i = 0; i < c->nparts; i++) {
        c->parts[i].cfg = &cfg->participants[i];
        c->parts[i].index = i;
        c->parts[i].owner = c;
    }
    c->metrics = metrics_new();
    c->outcomes = outcomes_new(cfg->outcome_retention_s);
    c->live = strmap_new();
    if (!c->metrics || !c->outcomes || !c->live) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    register_metrics(c);

    jopts.retention_s = cfg->outcome_retention_s;
    jopts.segment_bytes = cfg->journal_segment_bytes;
    jopts.on_sync = on_sync;
    jopts.on_fatal = on_journal_fatal;
    jopts.payload = journal_payload;
    jopts.locked = load_identity;
    jopts.arg = c;
    jopts.accept_damaged_tail = cfg->accept_damaged_tail;
    if (journal_open(&c->journal, loop, cfg->data_dir, &jopts, on_replay, c, err, errlen) != 0 ||
        settle_identity(c, err, errlen) != 0)
        return -1;
    c->boot = journal_start_boot(c->journal, err, errlen);
    if (c->boot == 0)
        return -1;
    log_info(NULL, "journal replayed: %zu outcomes retained; identity %s; this is boot %" PRIu64,
             outcomes_count(c->outcomes), c->identity.id, c->boot);
    if (cfg->decision_log == DECISION_LOG_POSTGRES && open_store(c, err, errlen) != 0)
        return -1;

    for (int i = 0; i < c->nparts; i++) {
        c->parts[i].pool =
            px_pool_new(loop, &cfg->participants[i].target, cfg->participants[i].pool_size);
        if (!c->parts[i].pool) {
            snprintf(err, errlen, "participant %s: cannot create its pool (driver %s)",
                     cfg->participants[i].name, cfg->participants[i].driver);
            return -1;
        }
    }
    uv_timer_init(loop, &c->prune_timer);
    c->prune_timer.data = c;
    uv_timer_start(&c->prune_timer, on_prune, 10000, 10000);
    if (owner_start(c) != 0 || recovery_start(c) != 0 || preflight_start(c) != 0 ||
        failover_start(c) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

typedef struct close_state {
    coord *c;
    int pending;
    void (*cb)(void *arg);
    void *arg;
    char left[256]; /* what the stop leaves on the participants, "" when nothing (store_close) */
} close_state;

/* ---- what a stop leaves behind ----------------------------------------------------------- */

static void count_outcome(outcome *o, void *arg)
{
    (void)o;
    ++*(int *)arg;
}

static void count_left(const coord_part *p, const px_xid *x, int64_t since_ms, void *arg)
{
    (void)p, (void)x, (void)since_ms;
    ++*(int *)arg;
}

static void say(char *buf, size_t len, int n, const char *what)
{
    size_t used = strlen(buf);
    if (n > 0 && used < len)
        snprintf(buf + used, len - used, "%s%d %s", used ? ", " : "", n, what);
}

/* What this process knows to be left on the participants as it stops ("" when nothing): a
 * transaction dropped at the drain limit may have prepared branches with no decision row (or a
 * decision whose answer was lost), a commit may wait for a participant, a recovery scan may have
 * failed to resolve a branch, and a participant never scanned may hold older branches. */
static void describe_left(coord *c, char *buf, size_t len)
{
    int unfinished = 0, left = 0, unscanned = 0;
    outcomes_each_unfinished(c->outcomes, count_outcome, &unfinished);
    recovery_each_left(c, count_left, &left);
    for (int i = 0; i < c->nparts; i++)
        unscanned += !c->parts[i].ready;
    buf[0] = '\0';
    say(buf, len, c->abandoned_in_doubt, "transactions dropped with branches maybe prepared");
    say(buf, len, unfinished, "commits with branches unacknowledged");
    say(buf, len, left, "branches the recovery scans could not resolve");
    say(buf, len, unscanned, "participants never scanned");
}

static void close_step(void *arg)
{
    close_state *s = arg;
    if (--s->pending > 0)
        return;
    failover_free(s->c);
    outcomes_free(s->c->outcomes);
    strmap_free(s->c->live);
    metrics_free(s->c->metrics);
    s->cb(s->arg);
    free(s);
}

static void on_journal_closed(void *arg)
{
    close_step(arg);
}

static void close_journal(void *arg)
{
    close_state *s = arg;
    journal_close(s->c->journal, on_journal_closed, s);
}

static void on_pools_closed(void *arg)
{
    close_state *s = arg;
    if (--s->pending > 1)
        return;
    if (s->c->store)
        store_close(s->c->store, s->left, close_journal, s);
    else
        close_journal(s);
}

static void on_recovery_stopped(void *arg)
{
    close_state *s = arg;
    coord *c = s->c;
    s->pending = c->nparts + 1; /* + the journal */
    if (c->nparts == 0) {
        s->pending = 2;
        on_pools_closed(s);
        return;
    }
    for (int i = 0; i < c->nparts; i++)
        px_pool_close(c->parts[i].pool, on_pools_closed, s);
}

static void on_owner_stopped(void *arg)
{
    close_state *s = arg;
    if (s->c->recovery)
        recovery_stop(s->c, on_recovery_stopped, s);
    else
        on_recovery_stopped(s);
}

static void on_preflight_stopped(void *arg)
{
    close_state *s = arg;
    if (s->c->owner)
        owner_stop(s->c, on_owner_stopped, s);
    else
        on_owner_stopped(s);
}

static void on_prune_closed(uv_handle_t *h)
{
    close_state *s = h->data;
    if (s->c->preflight)
        preflight_stop(s->c, on_preflight_stopped, s);
    else
        on_preflight_stopped(s);
}

void coord_close(coord *c, void (*cb)(void *arg), void *arg)
{
    close_state *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->c = c;
    s->cb = cb;
    s->arg = arg;
    if (c->store)
        describe_left(c, s->left, sizeof s->left);
    failover_stop(c);
    c->prune_timer.data = s;
    uv_close((uv_handle_t *)&c->prune_timer, on_prune_closed);
}
