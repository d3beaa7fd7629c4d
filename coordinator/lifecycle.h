/*
 * The daemon's start and stop around its context (coord.h).
 *
 * Start-up order (lifecycle_open): data directory lock -> identity read (identity.h) -> journal
 * replay (replay.h) -> identity made if new -> boot bump -> the decision store (store.h) ->
 * pools -> recovery scans (recovery.h), which wait for -> the ownership locks (owner.h) ->
 * preflight (preflight.h) -> fail-over (failover.h); a participant takes new work only once it
 * is owned, its first scan finished and its last preflight found it safe (status_part_usable).
 * The stop runs the other way round once no transaction is live.
 */
#ifndef XA_LIFECYCLE_H
#define XA_LIFECYCLE_H

#include "coord.h"

/* Opens the journal (replaying it), bumps the boot, creates the pools and metrics, and starts the
 * recovery scans. Returns 0, or a negative errno with a message in err. */
XA_MUST_CHECK int lifecycle_open(coord *c, uv_loop_t *loop, const config *cfg, char *err,
                                 size_t errlen);
/* Closes pools, recovery and journal; cb runs when all is closed. Live transactions must be gone.
 * With a decision store, the node is handed back free when this process knows of nothing left
 * on the participants, and handed over to a peer's takeover otherwise (store_close). */
void lifecycle_close(coord *c, void (*cb)(void *arg), void *arg);

#endif
