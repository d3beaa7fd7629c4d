/*
 * Outcomes: what the coordinator remembers about each transaction, for idempotent replay
 * (docs/design.md section 3), for GET /v1/transactions/{id}, and for recovery's decisions.
 *
 * An outcome is indexed by its client id and by its gtrid: recovery commits a prepared branch
 * exactly when its gtrid has a committed outcome (presumed abort: everything else rolls back).
 * Outcomes are kept for the retention period after they are reached; a committed outcome is never
 * dropped while one of its branches is still unacknowledged.
 *
 * A request that arrives while its id is in flight waits on the outcome (outcome_wait) and is
 * answered when the outcome settles.
 */
#ifndef XA_OUTCOME_H
#define XA_OUTCOME_H

#include "compiler.h"

#include "list.h"
#include "request.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum outcome_state {
    OUTCOME_IN_PROGRESS = 0,
    OUTCOME_COMMITTED,
    OUTCOME_ABORTED,
} outcome_state;

typedef struct outcome outcome;
typedef void (*outcome_waiter_cb)(outcome *o, void *arg);

typedef struct outcome_waiter {
    outcome_waiter_cb cb;
    void *arg;
    list_node node; /* on its outcome's waiters */
} outcome_waiter;

struct outcome {
    char id[REQUEST_ID_MAX + 1];
    char gtrid[PX_XID_PART_MAX + 1];
    outcome_state state;
    uint8_t digest[REQUEST_DIGEST_LEN];
    int64_t time_ms; /* when the outcome was reached (wall clock) */
    /* The reply body without its closing brace, so that "pending" and "replayed" can be appended
     * cheaply: e.g. {"id":"a","xid":"xa2.c1.k3x7q2ma.1.5","outcome":"committed","branches":[...] */
    char *reply_head;
    int status;                /* HTTP status of the reply: 200 or 409 */
    uint32_t pending;          /* committed: bit i set = participant i not yet acknowledged; written
                                * only through outcome_set_pending */
    uint32_t heuristic;        /* bit i set = participant i finished against the decision */
    bool indexed;              /* reachable through outcome_find (by id) */
    bool replayed;             /* the reply is an earlier transaction's, found by its marker */
    void *live;                /* the in-flight transaction, or NULL */
    list_head waiters;         /* outcome_waiter, the latest first */
    list_node node;            /* in the table's retention order while indexed */
    list_node unfinished_node; /* on the table's unfinished list while indexed and pending */
};

typedef struct outcomes outcomes;

XA_MUST_CHECK outcomes *outcomes_new(int64_t retention_s);
void outcomes_free(outcomes *os);

/* Creates an in-progress outcome for id (which must not be indexed yet). NULL when out of memory.
 */
XA_MUST_CHECK outcome *outcome_create(outcomes *os, const char *id, const char *gtrid,
                                      const uint8_t *digest);
/* An outcome whose id already names another one (a journal that repeats an id): reachable by
 * its gtrid only, so that recovery still finishes its branches by its decision. */
XA_MUST_CHECK outcome *outcome_create_shadowed(outcomes *os, const char *id, const char *gtrid,
                                               const uint8_t *digest);
outcome *outcome_find(const outcomes *os, const char *id);
outcome *outcome_find_gtrid(const outcomes *os, const char *gtrid);
/* The committed outcome of gtrid, or NULL (recovery rolls back what has none). */
outcome *outcome_find_commit(const outcomes *os, const char *gtrid);

/* Marks o committed (recovery then commits its branches). */
void outcome_commit(outcomes *os, outcome *o, int64_t time_ms);
/* Records the final reply (takes ownership of reply_head; NULL keeps the one already set) and
 * answers every waiter. */
void outcome_settle(outcomes *os, outcome *o, outcome_state state, int status, char *reply_head,
                    int64_t time_ms);
/* Forgets id: a transient abort leaves nothing to replay, so the client may run it again.
 * The outcome stays valid (unindexed) until outcome_release. */
void outcome_unindex(outcomes *os, outcome *o);
/* Called by the owner of an unindexed outcome when done with it: frees it. */
void outcome_release(outcomes *os, outcome *o);

void outcome_wait(outcome *o, outcome_waiter_cb cb, void *arg);
/* Withdraws a waiter (its request is gone). */
void outcome_unwait(outcome *o, outcome_waiter_cb cb, void *arg);

/* Sets o's pending branches (a commit's participants not yet acknowledged), keeping the table's
 * list of unfinished outcomes, so that the walk below costs what is unfinished, not what is
 * retained. */
void outcome_set_pending(outcomes *os, outcome *o, uint32_t pending);

/* Calls fn for every committed outcome with acknowledgements pending and no live transaction.
 * fn may change the pending branches of the outcome it is given (outcome_set_pending). */
void outcomes_each_unfinished(outcomes *os, void (*fn)(outcome *o, void *arg), void *arg);

/* Drops settled outcomes older than the retention (at most `budget` per call). */
void outcomes_prune(outcomes *os, int64_t now_ms, int budget);
size_t outcomes_count(const outcomes *os);

#endif
