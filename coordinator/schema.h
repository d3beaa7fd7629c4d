/*
 * The xacoord schema in every participant database: the marker table that each branch writes a
 * row into, and a version table. Its DDL is sql/xacoord-postgres.sql and sql/xacoord-mysql.sql,
 * compiled into the binary at build time (CMake generates schema_sql.c from the files), so what
 * an administrator runs and what `xacoord --init-participants` runs are one text.
 *
 * PostgreSQL keeps the tables in a schema of their own (`xacoord.marker`); MySQL/MariaDB has no
 * schemas inside a database, so there the names carry a prefix (`xacoord_marker`). Either way
 * they cannot collide with an application's tables.
 */
#ifndef XA_SCHEMA_H
#define XA_SCHEMA_H

#include "compiler.h"

#include "participant.h"

/* The version this build writes and expects; the version table holds one row per version
 * applied, and the schema's version is the largest. */
#define SCHEMA_VERSION 2

typedef struct schema_dialect {
    const char *driver; /* "postgres" | "mysql" */
    const char *ddl;    /* the text of the file below */
    const char *file;   /* "sql/xacoord-postgres.sql" */
    const char *marker; /* the marker table's name as SQL spells it */
    const char *version_table;
    const char *version_sql; /* reads the schema's version (0 when the table is empty) */
    const char *marker_sql;  /* reads nothing from the marker table, but needs it and SELECT */
    /* One-phase commit (docs/design.md): claims the client id inside the branch, before the
     * client's statements - parameters gtrid, bqual, client id, digest (hex), the coordinator's
     * gtrid prefix. It affects one row, or none when a marker of this coordinator already holds
     * that client id (after waiting for the transaction that wrote it, if that one still runs). */
    const char *claim_sql;
    /* The marker holding a client id - parameters client id, bqual, the coordinator's gtrid
     * prefix; returns gtrid, digest. */
    const char *find_sql;
} schema_dialect;

/* The dialect of a driver; NULL for one that keeps no schema (memory). */
const schema_dialect *schema_for(const char *driver);

/* Splits DDL text into its statements: lines that start with "--" (after blanks) are comments,
 * and a statement ends with a ';' at the end of a line (the files are written that way; a ';'
 * inside a line does not end one). Returns the number of statements, with a malloc'ed array of
 * malloc'ed strings in *out, or -ENOMEM. */
XA_MUST_CHECK int schema_statements(const char *ddl, char ***out);
void schema_statements_free(char **stmts, int n);

/* How a failed query on the schema's tables reads. */
typedef enum schema_error {
    SCHEMA_ERR_OTHER = 0,
    SCHEMA_ERR_MISSING, /* the table (or PostgreSQL schema) does not exist */
    SCHEMA_ERR_DENIED,  /* the coordinator's role may not use it - on MySQL/MariaDB also what a
                           user without any grant on a missing table gets */
} schema_error;

schema_error schema_classify(const px_error *err);

#endif
