/*
 * Marker upkeep: every branch leaves a marker row in its participant's database (written by the
 * driver's prepare, see participant.h), which phase 2 reads when a branch it must finish is gone.
 * A one-phase commit's marker also holds the client id: it answers for the id when the journal
 * does not know it (markers_find).
 * Markers are kept for outcome_retention_s after they were written - as long as the outcome
 * itself - and then deleted in batches, one DELETE per participant every MARKERS_PRUNE_MS.
 */
#ifndef XA_MARKERS_H
#define XA_MARKERS_H

#include "coord.h"

#define MARKERS_PRUNE_MS 60000

/* Called from the coordinator's periodic upkeep: starts a prune on each usable participant whose
 * last one is older than MARKERS_PRUNE_MS and none is in flight. */
void markers_tick(coord *c);

/* What the markers say about a client id (a one-phase commit's marker holds it, docs/design.md).
 * status: 200 committed (gtrid and participant name it), 404 no marker anywhere, 503 some
 * participant could not be asked (why says which and why). */
typedef void (*markers_found_cb)(void *arg, int status, const char *participant, const char *gtrid,
                                 const char *why);

/* Asks every participant that keeps markers, in parallel; cb runs exactly once, maybe at once. */
void markers_find(coord *c, const char *id, markers_found_cb cb, void *arg);

#endif
