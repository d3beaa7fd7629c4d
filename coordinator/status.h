/*
 * GET /v1/status: one snapshot of what the operator page shows that no other endpoint has -
 * each participant's state, pool use and last connection error, and the transactions in flight
 * by state (docs/design.md section 4).
 */
#ifndef XA_STATUS_H
#define XA_STATUS_H

#include "coord.h"

#include <jansson.h>

/* The participant may take new work: this process owns it (owner.h), its first recovery scan
 * finished (recovery.h) and its last preflight found it safe (preflight.h). */
bool status_part_usable(const coord *c, const coord_part *p);
/* Every participant may take new work (/readyz). */
bool status_ready(const coord *c);
/* What /readyz says of a participant: its ownership, recovery or preflight state, "down" with
 * the last connection error, or "ready". The result may be buf (STATUS_STATE_MAX bytes). */
#define STATUS_STATE_MAX 400
const char *status_part_state(const coord *c, const coord_part *p, char *buf, size_t len);
/* The body of GET /v1/status (a new reference), or NULL when out of memory. */
XA_MUST_CHECK json_t *status_json(const coord *c);

#endif
