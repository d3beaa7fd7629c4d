/*
 * The daemon's /metrics: its counters and histograms, made once at start-up and kept in the
 * context (coord.h) for the modules that count, and the gauges, which read the modules' own
 * state at each scrape (list counts, pool statistics: no walk over every transaction).
 */
#include "gauges.h"

#include "indoubt.h"
#include "preflight.h"
#include "recovery.h"
#include "txn.h"

#include <errno.h>
#include <stdio.h>

static double g_inflight(void *arg)
{
    return coord_inflight(arg);
}

static double g_part_up(void *arg)
{
    coord_part *p = arg;
    px_pool_stats st;
    px_pool_get_stats(p->pool, &st);
    return st.up && recovery_ready(p->owner, p->index);
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
    const coord_part *p = arg;
    return preflight_safe(p->owner, p->index);
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

typedef struct gauge_def {
    const char *name, *help;
    double (*fn)(void *arg);
} gauge_def;

static const gauge_def part_gauges[] = {
    {"xacoord_participant_up", "1 when the participant is reachable and recovered", g_part_up},
    {"xacoord_participant_safe",
     "1 when preflight found the server's settings safe (or allow_unsafe)", g_part_safe},
    {"xacoord_in_doubt_branches", "Prepared branches of live transactions not yet finished",
     g_in_doubt},
    {"xacoord_oldest_prepared_age_seconds", "Age of the oldest prepared, unfinished branch",
     g_oldest},
    {"xacoord_unresolved_branches",
     "Prepared branches GET /v1/in-doubt lists: live, awaiting phase 2, left by recovery, foreign",
     g_listed},
    {"xacoord_oldest_unresolved_age_seconds", "Age of the oldest branch GET /v1/in-doubt lists",
     g_listed_oldest},
    {"xacoord_foreign_branches",
     "Prepared branches of this node_id made by another data directory (identity)", g_foreign},
    {"xacoord_pool_busy_connections", "Connections lent out", g_pool_busy},
    {"xacoord_pool_idle_connections", "Connections idle in the pool", g_pool_idle},
    {"xacoord_pool_waiting_requests", "Transactions waiting for a connection (pool_size reached)",
     g_pool_waiting},
};

static const gauge_def coord_gauges[] = {
    {"xacoord_inflight_transactions", "Transactions in flight", g_inflight},
    {"xacoord_outcomes_retained", "Outcomes kept for idempotent replay", g_outcomes},
    {"xacoord_journal_repeated_ids",
     "Ids the journal recorded for two transactions (corruption; see the log)", g_conflicts},
};

static int add_gauges(metrics *m, const char *labels, const gauge_def *g, size_t n, void *arg)
{
    for (size_t i = 0; i < n; i++)
        if (!metrics_gauge_fn(m, g[i].name, labels, g[i].help, g[i].fn, arg))
            return -ENOMEM;
    return 0;
}

static int register_part_metrics(coord *c, coord_part *p)
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
    if (!p->commit_retries || !p->xid_not_found || !p->heuristic || !p->recovered_commit ||
        !p->recovered_rollback)
        return -ENOMEM;
    return add_gauges(m, labels, part_gauges, sizeof part_gauges / sizeof part_gauges[0], p);
}

int gauges_register(coord *c)
{
    static const double group_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    metrics *m = c->metrics;
    const char *help = "Transactions by outcome";
    int rc;
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
    if (!c->txn_committed || !c->txn_aborted || !c->txn_rejected || !c->txn_latency ||
        !c->fsync_latency || !c->group_size)
        return -ENOMEM;
    rc = add_gauges(m, "", coord_gauges, sizeof coord_gauges / sizeof coord_gauges[0], c);
    for (int i = 0; rc == 0 && i < c->nparts; i++)
        rc = register_part_metrics(c, &c->parts[i]);
    return rc;
}
