/*
 * The daemon's context: everything the loop-side modules share (configuration, journal, pools,
 * outcomes, metrics, the transaction lists). One per process; passed explicitly, never global.
 * lifecycle.h fills it at start-up and empties it at the stop. coord.c answers what any module may
 * ask of it and calls no module above it: whether a participant is owned, recovered or safe is
 * owner.h's, recovery.h's and preflight.h's to say (status.h puts the three together).
 */
#ifndef XA_COORD_H
#define XA_COORD_H

#include "compiler.h"

#include "config.h"
#include "heuristics.h"
#include "identity.h"
#include "journal.h"
#include "list.h"
#include "metrics.h"
#include "outcome.h"
#include "pool.h"
#include "strmap.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct txn txn;
typedef struct recovery recovery;
typedef struct owner owner;
typedef struct preflight preflight;
typedef struct store store;
struct failover;

/* Every live transaction is in exactly one of these lists (STYLE.md: "every state is a list"). */
typedef enum txn_state {
    TXN_WORKING = 0, /* phase 1: work and prepare on every branch */
    TXN_DECIDING,    /* all prepared; the commit record is being forced */
    TXN_COMMITTING,  /* decision durable; COMMIT sent, waiting for acknowledgements */
    TXN_ABORTING,    /* decided abort; rolling back the branches that did work */
    TXN_NSTATES
} txn_state;

typedef struct coord_part {
    struct coord *owner;
    const config_participant *cfg;
    int index;
    px_pool *pool;
    metric_counter *commit_retries;
    metric_counter *xid_not_found;
    metric_counter *heuristic;
    metric_counter *recovered_commit;
    metric_counter *recovered_rollback;
    px_pool_req marker_req; /* markers.c: the connection of a prune */
    bool marker_pruning;
    uint64_t markers_pruned_ms; /* loop time of the last prune started, 0: never */
    list_head in_doubt;         /* txn.c: its live branches prepared or finishing, oldest first */
} coord_part;

typedef struct coord {
    uv_loop_t *loop;
    const config *cfg;
    journal *journal; /* decisions (journal mode); identity and boot counter in either mode */
    store *store;     /* decision_log = postgres: the decisions (store.h); else NULL */
    struct failover *failover; /* with a store: taking over lapsed nodes (failover.h) */
    metrics *metrics;
    outcomes *outcomes;
    recovery *recovery;
    owner *owner;
    preflight *preflight;
    strmap *live; /* gtrid -> txn, for the recovery scans */
    uint64_t boot;
    uint64_t next_seq;
    dir_identity identity; /* of the data directory: in every gtrid (identity.h) */
    char prefix[32];       /* "xa2.<node_id>.<identity>." : the gtrids of new transactions */
    int nparts;
    coord_part parts[CONFIG_MAX_PARTICIPANTS];
    list_head lists[TXN_NSTATES]; /* struct txn by txn_state, through its node */
    bool draining;
    int abandoned_in_doubt; /* transactions the stop dropped with a branch that may be prepared */
    bool journal_failed;    /* a journal write or fdatasync failed: exiting (lifecycle.c) */
    uv_timer_t fatal_timer; /* ... once the waiting clients were answered */
    uint64_t journal_conflicts; /* ids the journal recorded twice (replay_create in replay.c) */
    heuristics heuristics;      /* the most recent heuristic outcomes, for GET /v1/heuristics */
    uv_timer_t prune_timer;

    metric_counter *txn_committed, *txn_aborted, *txn_rejected;
    metric_histogram *txn_latency;
    metric_histogram *fsync_latency;
    metric_histogram *group_size;
} coord;

int coord_inflight(const coord *c);
/* Finds a participant index by name (-1 when unknown). */
int coord_part_index(const coord *c, const char *name);
/* The gtrid of transaction (boot, seq) of this data directory (identity.h: xa1 for the boots of
 * a journal written before identities). */
void coord_gtrid(const coord *c, uint64_t boot, uint64_t seq, char *buf, size_t len);
/* A list of participant names ("payment,order", as a journal record or a decision row keeps it)
 * as a mask of this configuration's participants; a name not configured is logged as an error
 * naming gtrid and left out. */
uint32_t coord_names_mask(const coord *c, const char *names, const char *gtrid);

/* The journal payload of an outcome (outcome_codec.h), naming its pending participants. 0 with a
 * malloc'ed buffer, or -ENOMEM. */
XA_MUST_CHECK int coord_encode_outcome(const coord *c, const outcome *o, char **out, size_t *len);

/* A branch of o on participant p ended against the decision: counted, kept for GET
 * /v1/heuristics, named in o's replies and logged as an error under ctx. data_loss: work was
 * rolled back that the decision committed. */
void coord_heuristic(coord *c, outcome *o, const coord_part *p, bool data_loss, const char *what,
                     const char *ctx);

/* The outcome of a decision row (store.h), created settled and indexed by its client id, or
 * the one already indexed under that id. NULL when out of memory. ours: this process is to
 * finish the row's pending branches (its own node's, at start); otherwise it only answers for
 * the id, and another coordinator finishes them. */
struct store_row;
XA_MUST_CHECK outcome *coord_outcome_from_row(coord *c, const struct store_row *r, bool ours);
/* Wall clock in milliseconds (outcome times; retention). */
int64_t coord_now_ms(void);

#endif
