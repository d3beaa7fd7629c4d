/*
 * Marker upkeep: every branch leaves a marker row in its participant's database (written by the
 * driver's prepare, see participant.h), which phase 2 reads when a branch it must finish is gone.
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

#endif
