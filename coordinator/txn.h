/*
 * The global-transaction state machine (docs/design.md section 3).
 *
 * Phase 1 runs on every branch in parallel: connections are acquired in participant order (one
 * global order, so bounded pools cannot deadlock), then each branch begins, runs its statements
 * and prepares. Any failure, expect_rows mismatch or the phase-1 timeout aborts the whole
 * transaction: the outcome is answered at once (presumed abort: nothing needs to be durable) and
 * the branches are rolled back in the background. When every branch is prepared, the commit
 * record is forced to the journal; only then are the COMMITs sent, in parallel, and retried with
 * capped exponential backoff until each participant acknowledges. The client is answered when
 * all acknowledged or after commit_wait_ms, with the unacknowledged participants as "pending".
 */
#ifndef XA_TXN_H
#define XA_TXN_H

#include "compiler.h"

#include "coord.h"
#include "request.h"

/* Takes the next sequence number of this boot and writes its gtrid into buf. */
uint64_t txn_assign(coord *c, char *buf, size_t len);

/* Starts req (ownership passes to the engine) as transaction seq (from txn_assign) under the
 * in-progress outcome o, whose gtrid is that of seq. The outcome is settled - and its waiters
 * answered - once the result is known. Returns 0, or -1 when nothing could be started (out of
 * memory); req is freed either way. */
XA_MUST_CHECK int txn_start(coord *c, txn_request *req, outcome *o, uint64_t seq);

/* Drops every live transaction (shutdown after the drain limit, or a failed journal): connections
 * are closed, waiting clients get 503 saying why, and the journal keeps what the next start
 * needs. */
#define TXN_ASK_LATER "the coordinator is shutting down; ask for this transaction's outcome later"
void txn_abandon_all(coord *c, const char *why);
/* How many live transactions have a branch that may be prepared (its PREPARE sent, prepared, or
 * being finished): what dropping them now would leave on the participants. */
int txn_count_maybe_prepared(const coord *c);

/* Calls fn for every prepared, unfinished branch of a live transaction; decision is "commit",
 * "abort" or "unknown" (not decided yet). */
typedef void (*txn_prepared_fn)(const coord_part *p, const char *gtrid, double age_s,
                                const char *decision, void *arg);
void txn_each_prepared(const coord *c, txn_prepared_fn fn, void *arg);
bool txn_is_live(const coord *c, const char *gtrid);

/* The participants that own a prepared branch of a live transaction, with the age of the oldest
 * one in seconds (for /metrics): fills counts[i] and oldest_s[i] per participant index. */
void txn_in_doubt(const coord *c, int *counts, double *oldest_s);

#endif
