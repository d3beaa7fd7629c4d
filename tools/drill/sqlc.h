/*
 * Blocking SQL on the participants, as the coordinator's own user (its configuration names the
 * servers and the password files): the setup statements, the invariants, the sums, the per
 * transaction checks and the listing of prepared branches. One connection per participant,
 * opened on first use and opened again once when it turns out dead (a database restarted by a
 * fault). Used from one thread.
 */
#ifndef XA_DRILL_SQLC_H
#define XA_DRILL_SQLC_H

#include "compiler.h"
#include "config.h"

#include <stddef.h>

typedef struct drill_db drill_db;

/* The result of one query: how many rows, the first cell of the first row, and the first few
 * rows as text ("a | b; c | d"). */
typedef struct drill_rows {
    long nrows;
    char first[64];
    char sample[512];
} drill_rows;

XA_MUST_CHECK drill_db *drill_db_new(const config *cfg);
void drill_db_free(drill_db *db);

/* Runs sql on the named participant. Returns 0, or a negative errno with the database's message
 * in err: -ENOENT no such participant, -EINVAL its driver speaks no SQL, -EIO no connection or
 * the query failed. */
XA_MUST_CHECK int drill_db_query(drill_db *db, const char *participant, const char *sql,
                                 drill_rows *out, char *err, size_t errlen);
/* A query that must return one number (one row, one column, an integer or decimal): 0, an error
 * of drill_db_query, or -EINVAL when the answer is no one number. */
XA_MUST_CHECK int drill_db_number(drill_db *db, const char *participant, const char *sql,
                                  double *out, char *err, size_t errlen);
/* Prepared branches on the participant whose gtrid starts with prefix (and, on MySQL, whose
 * bqual is the participant's name); their names go into sample. */
XA_MUST_CHECK int drill_db_prepared(drill_db *db, const char *participant, const char *prefix,
                                    drill_rows *out, char *err, size_t errlen);

#endif
