/*
 * Recovery scans (docs/design.md section 3). For each participant: list the prepared branches of
 * this node (every gtrid "xa2.<node_id>." and "xa1.<node_id>.") with the participant's name, then,
 * of those this data directory made (identity.h), commit the ones whose transaction has a commit
 * record and roll back the rest (presumed abort) - skipping every branch of a transaction that is
 * live in this process. Branches of another identity are foreign: never touched, only remembered
 * (with the time first seen) for GET /v1/in-doubt, /metrics and an operator's takeover. The
 * first scan runs at start-up; a participant takes new work only after it finished. Scans repeat
 * every recovery_interval_ms, and an unreachable participant is retried with backoff without
 * holding up the others.
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
/* Whether the participant may be scanned: its ownership lock's session lives (owner.h). A scan
 * starts at once when allowed; one running finishes. No participant is allowed at the start. */
void recovery_allow(coord *c, int participant, bool allowed);
/* The participant's first scan finished: what the last process left there is resolved or known,
 * and it may take work. */
bool recovery_ready(const coord *c, int participant);
/* Calls fn for every branch the last complete scan of its participant could not resolve, with the
 * time it was first left behind. */
typedef void (*recovery_left_fn)(const coord_part *p, const px_xid *x, int64_t since_ms, void *arg);
void recovery_each_left(const coord *c, recovery_left_fn fn, void *arg);
/* Calls fn for every foreign branch the last complete scan of its participant listed, with the
 * time it was first seen and the identity its gtrid names (IDENTITY_LEGACY for xa1). */
typedef void (*recovery_foreign_fn)(const coord_part *p, const px_xid *x, int64_t since_ms,
                                    const char *identity, void *arg);
void recovery_each_foreign(const coord *c, recovery_foreign_fn fn, void *arg);
/* How many foreign branches the last complete scan of participant listed. */
size_t recovery_foreign_count(const coord *c, int participant);

/* Stops the timers and abandons scans in flight; cb runs when the handles are closed. */
void recovery_stop(coord *c, void (*cb)(void *arg), void *arg);

#endif
