/*
 * `xacoord --init-participants CONFIG`: creates the xacoord schema (schema.h) in the database of
 * every participant of a configuration, connecting as the configuration does (same credentials,
 * same drivers, on a private loop), and prints what it did for each. A participant whose schema
 * is already there is left as it is, so the command can run at every deployment. Creating it
 * needs a role that may create schemas (PostgreSQL) or tables (MySQL/MariaDB) there; where the
 * coordinator's role may not - as it should not, in production - an administrator runs the file
 * in sql/ instead, and the command then only confirms it.
 */
#ifndef XA_INITPARTS_H
#define XA_INITPARTS_H

#include "config.h"

/* Returns the exit code: 0 when every participant has the schema, 1 when one has not (each
 * failure is on stderr, naming the participant and the server's error). */
int initparts_run(const config *cfg);

#endif
