/*
 * One coordinator per node_id on each participant. Two live coordinators configured with the same
 * node_id would each take the other's prepared branches for its own crashed past and roll them
 * back - a silent atomicity failure that no data directory lock can prevent, since their data
 * directories differ. So before a participant is scanned or given work, this process takes an
 * ownership lock there: a session-level advisory lock named after the node and the participant
 * (PostgreSQL pg_try_advisory_lock, MySQL/MariaDB GET_LOCK), held on a dedicated connection for
 * the life of the process and checked every second.
 *
 * Held by another process: the participant is not used (it stays unready, /readyz says why) and
 * the lock is retried. Lost while running (the server restarted) and retaken: work goes on. Lost
 * and taken by another process meanwhile: this process stops at once (exit 1), because from then on
 * the two would undo each other's work.
 */
#ifndef XA_OWNER_H
#define XA_OWNER_H

#include "compiler.h"

#include "coord.h"

/* Starts taking the locks; recovery (recovery_allow) learns of each lock taken or lost, so it
 * must be started first. */
XA_MUST_CHECK int owner_start(coord *c);
/* This process took the participant's lock and nobody else has it: it may take work. */
bool owner_owns(const coord *c, int participant);
/* Why a participant is not owned ("" when it is). */
const char *owner_state(const coord *c, int participant);
/* Why the last connect to a participant failed ("<cause>: <message>", px_connect_cause), or "" once
 * a connect succeeded again. */
const char *owner_failure(const coord *c, int participant);
void owner_stop(coord *c, void (*cb)(void *arg), void *arg);

#endif
