/*
 * Recovery scans (docs/design.md section 3). For each participant: list the prepared branches that
 * carry this coordinator's prefix and the participant's name, then commit those whose transaction
 * has a commit record and roll back the rest (presumed abort) - skipping every branch of a
 * transaction that is live in this process. The first scan runs at start-up; a participant takes
 * new work only after it finished. Scans repeat every recovery_interval_ms, and an unreachable
 * participant is retried with backoff without holding up the others.
 *
 * When a scan finished cleanly, every committed transaction that was waiting for this participant
 * and whose branch was not left behind is acknowledged for it; once no participant is pending, the
 * DONE record is written.
 */
#ifndef XA_RECOVERY_H
#define XA_RECOVERY_H

#include "compiler.h"

#include "coord.h"

XA_MUST_CHECK int recovery_start(coord *c);
/* Runs a scan of every participant now (those not already scanning). */
void recovery_kick(coord *c);
/* Calls fn for every branch the last complete scan of its participant could not resolve, with the
 * time it was first left behind. */
typedef void (*recovery_left_fn)(const coord_part *p, const px_xid *x, int64_t since_ms, void *arg);
void recovery_each_left(const coord *c, recovery_left_fn fn, void *arg);

/* Stops the timers and abandons scans in flight; cb runs when the handles are closed. */
void recovery_stop(coord *c, void (*cb)(void *arg), void *arg);

#endif
