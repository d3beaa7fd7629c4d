/*
 * Fail-over between coordinators that share a decision store (decision_log = postgres;
 * docs/design.md section 3, "Decision store"). Every lease_ms / 2, while this process holds its
 * own lease, it looks for another node whose lease lapsed without a clean stop, takes it (the
 * node's epoch + 1: every decision of the old epoch in flight has ended, and no later one can be
 * written), and resolves that node's prepared branches on every participant by the decision
 * rows: a commit row - commit; none - roll back. When every branch was resolved it hands the
 * node back (a restart of that node then starts at once); otherwise the node's lease lapses
 * again and the next look takes it once more.
 */
#ifndef XA_FAILOVER_H
#define XA_FAILOVER_H
#include "compiler.h"
#include "coord.h"

/* Starts looking (no-op without a decision store). Returns 0, or -ENOMEM. */
XA_MUST_CHECK int failover_start(coord *c);
/* Stops looking; a takeover in flight ends without touching the pools again. */
void failover_stop(coord *c);
/* Frees what failover_start made (after the pools are closed). */
void failover_free(coord *c);
#endif
