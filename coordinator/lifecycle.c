/*
 * The daemon's start and stop (see lifecycle.h): the order in which the modules open and close
 * around the context, the journal's fatal failure, and the periodic prune.
 */
#include "lifecycle.h"

#include "failover.h"
#include "gauges.h"
#include "log.h"
#include "markers.h"
#include "owner.h"
#include "preflight.h"
#include "recovery.h"
#include "replay.h"
#include "store.h"
#include "txn.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    rc = store_open(&c->store, c->loop, c->cfg, holder, err, errlen);
    if (rc != 0)
        return rc;
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
    int rc = identity_load(dir, &((coord *)arg)->identity, err, errlen);
    return rc < 0 ? rc : 0;
}

/* No identity file: a new data directory, or one written before identities, whose last boot
 * is then the last one named xa1 (identity.h). Made durable before this start's boot record, so
 * no transaction is ever named by an identity that a crash could forget. */
static int settle_identity(coord *c, char *err, size_t errlen)
{
    uint64_t last = journal_last_boot(c->journal);
    if (!c->identity.id[0]) {
        int rc = identity_create(c->cfg->data_dir, last, &c->identity, err, errlen);
        if (rc != 0)
            return rc;
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

/* The context's own parts: participants, metrics, the outcome table, the live index. */
static int open_context(coord *c, uv_loop_t *loop, const config *cfg, char *err, size_t errlen)
{
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
        return -ENOMEM;
    }
    if (gauges_register(c) != 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Replays the journal into the outcome table, settles the identity and starts this boot. */
static int open_journal(coord *c, char *err, size_t errlen)
{
    journal_opts jopts = {0};
    int rc;
    jopts.retention_s = c->cfg->outcome_retention_s;
    jopts.segment_bytes = c->cfg->journal_segment_bytes;
    jopts.on_sync = on_sync;
    jopts.on_fatal = on_journal_fatal;
    jopts.payload = replay_payload;
    jopts.locked = load_identity;
    jopts.arg = c;
    jopts.accept_damaged_tail = c->cfg->accept_damaged_tail;
    rc =
        journal_open(&c->journal, c->loop, c->cfg->data_dir, &jopts, replay_record, c, err, errlen);
    if (rc == 0)
        rc = settle_identity(c, err, errlen);
    if (rc == 0)
        rc = journal_start_boot(c->journal, &c->boot, err, errlen);
    if (rc == 0)
        log_info(NULL,
                 "journal replayed: %zu outcomes retained; identity %s; this is boot %" PRIu64,
                 outcomes_count(c->outcomes), c->identity.id, c->boot);
    return rc;
}

static int open_pools(coord *c, char *err, size_t errlen)
{
    for (int i = 0; i < c->nparts; i++) {
        const config_participant *p = &c->cfg->participants[i];
        c->parts[i].pool = px_pool_new(c->loop, &p->target, p->pool_size);
        if (!c->parts[i].pool) {
            snprintf(err, errlen, "participant %s: cannot create its pool (driver %s)", p->name,
                     p->driver);
            return -ENOMEM;
        }
    }
    return 0;
}

/* The modules that work on the participants. Recovery first: the owner tells it which
 * participants it may scan (recovery_allow). */
static int start_modules(coord *c, char *err, size_t errlen)
{
    int rc = recovery_start(c);
    if (rc == 0)
        rc = owner_start(c);
    if (rc == 0)
        rc = preflight_start(c);
    if (rc == 0)
        rc = failover_start(c);
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int lifecycle_open(coord *c, uv_loop_t *loop, const config *cfg, char *err, size_t errlen)
{
    int rc = open_context(c, loop, cfg, err, errlen);
    if (rc == 0)
        rc = open_journal(c, err, errlen);
    if (rc == 0 && cfg->decision_log == DECISION_LOG_POSTGRES)
        rc = open_store(c, err, errlen);
    if (rc == 0)
        rc = open_pools(c, err, errlen);
    if (rc != 0)
        return rc;
    uv_timer_init(loop, &c->prune_timer);
    c->prune_timer.data = c;
    uv_timer_start(&c->prune_timer, on_prune, 10000, 10000);
    return start_modules(c, err, errlen);
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
        unscanned += !recovery_ready(c, i);
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

void lifecycle_close(coord *c, void (*cb)(void *arg), void *arg)
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
