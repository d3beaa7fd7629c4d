/*
 * The driver interface: one asynchronous API over every kind of participant database.
 *
 * Every operation starts non-blocking work on a libuv loop and reports exactly once through
 * its callback, on the loop thread. Following libuv's rule, a call that returns an error
 * (negative) never calls its callback. One operation at a time per connection: a second call
 * while one is in flight returns -EBUSY.
 *
 * The engine (coordinator/) includes only this header and pool.h; drivers never include the
 * engine's headers.
 */
#ifndef XA_PARTICIPANT_H
#define XA_PARTICIPANT_H

#include "compiler.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The starting calls return 0 or a negative errno code (callbacks carry a px_error instead):
 * -EBUSY, an operation is already in flight on this connection; -EINVAL, a bad argument (e.g. an
 * XID that is too long); -ENOMEM. */

/* What the engine should do about a failure. */
typedef enum px_errclass {
    PX_OK = 0,
    PX_BUSINESS,      /* the request is wrong: constraint/check violation, bad data, SQL error,
                         expect_rows mismatch. Abort, never retry. */
    PX_RETRYABLE,     /* transient: connection lost, server down or starting, deadlock,
                         serialization failure, lock wait timeout, too many connections. */
    PX_XID_NOT_FOUND, /* COMMIT/ROLLBACK of a prepared branch that the server does not know
                         (PostgreSQL 42704, MySQL 1397). */
    PX_FATAL,         /* anything else: permissions, 2PC disabled, protocol state broken. */
} px_errclass;

typedef struct px_error {
    px_errclass cls;
    bool conn_broken;   /* the connection is unusable now: discard it, never reuse it */
    bool rows_mismatch; /* PX_BUSINESS: the statement ran, but not on expect_rows rows */
    int code;           /* MySQL error number; 0 for PostgreSQL */
    char sqlstate[6];   /* "" when unknown (e.g. a connection failure) */
    char message[256];  /* the server's or library's message; never holds a password */
} px_error;

/* A bound statement parameter. Text need not be NUL-terminated: len counts its bytes. */
typedef enum px_ptype { PX_P_NULL = 0, PX_P_BOOL, PX_P_INT, PX_P_REAL, PX_P_TEXT } px_ptype;

typedef struct px_param {
    px_ptype type;
    bool b;
    int64_t i;
    double r;
    const char *text;
    size_t len;
} px_param;

/* One statement of a branch. Parameters are always bound, never spliced into the SQL text.
 * Placeholders are the driver's own: $1.. for PostgreSQL, ? for MySQL. */
typedef struct px_stmt {
    const char *sql;
    const px_param *params;
    int nparams;
    int64_t expect_rows; /* exact matched/returned row count required, or -1 for any */
    /* The caller proved that the statement cannot change the session (guard_session_neutral):
     * a connection that ran only such statements needs no session reset. false: it may. */
    bool session_neutral;
} px_stmt;

/* Column types of result rows, so that callers can render every value exactly. A cell is always
 * NUL-terminated text in the form its type names:
 *   PX_COL_TEXT     valid UTF-8 is not guaranteed (the renderer checks and refuses otherwise)
 *   PX_COL_INT      decimal digits with an optional '-'; may exceed int64 (MySQL BIGINT UNSIGNED)
 *   PX_COL_REAL     a binary float: the shortest text that reads back as the same value, or
 *                   "NaN", "Infinity", "-Infinity"
 *   PX_COL_BOOL     "true" / "false"
 *   PX_COL_DECIMAL  an exact decimal as the database prints it ("12345678901234567.89", "NaN")
 *   PX_COL_BINARY   the bytes of a binary value (bytea, BINARY/VARBINARY/BLOB, UNHEX()), base64
 *                   encoded (px_base64) */
typedef enum px_coltype {
    PX_COL_TEXT = 0,
    PX_COL_INT,
    PX_COL_REAL,
    PX_COL_BOOL,
    PX_COL_DECIMAL,
    PX_COL_BINARY,
} px_coltype;

/* The outcome of one statement. rows_affected: matched rows for UPDATE/DELETE (MySQL uses
 * CLIENT_FOUND_ROWS so a no-op UPDATE still counts), inserted rows, or returned rows for a
 * query. A statement that returns rows (SELECT, ... RETURNING) fills ncols/nrows. */
typedef struct px_result {
    int64_t rows_affected;
    int ncols;
    int nrows;
    char **colnames;      /* ncols strings */
    px_coltype *coltypes; /* ncols */
    char **cells;         /* nrows * ncols, row-major; NULL for SQL NULL; text form */
} px_result;

void px_result_free(px_result *r); /* frees the contents, not r itself */

/* Branch identity. gtrid and bqual use only [a-z0-9._]; both are at most 64 bytes
 * (the MySQL limits). PostgreSQL's gid is "<gtrid>.<bqual>" (<= 199 bytes). */
#define PX_XID_PART_MAX 64
typedef struct px_xid {
    char gtrid[PX_XID_PART_MAX + 1];
    char bqual[PX_XID_PART_MAX + 1];
} px_xid;

/* Builds an XID, checking charset and lengths: 0, or -EINVAL when either part is invalid. */
XA_MUST_CHECK int px_xid_set(px_xid *x, const char *gtrid, const char *bqual);
/* Whether x is what px_xid_set builds (both parts terminated, of the charset and lengths): 0, or
 * -EINVAL. Every driver checks each XID it is handed, SQL or not, so that they refuse alike. */
XA_MUST_CHECK int px_xid_check(const px_xid *x);
/* Formats the PostgreSQL gid into buf (>= 2*PX_XID_PART_MAX+2 bytes). */
void px_xid_gid(const px_xid *x, char *buf, size_t len);
/* Parses a PostgreSQL gid "<gtrid>.<bqual>" (bqual is after the last dot): 0, or -EINVAL. */
XA_MUST_CHECK int px_xid_parse_gid(px_xid *x, const char *gid);

/* Where and how to connect. Strings are owned by the caller and must outlive every connection
 * made from the target. */
typedef struct px_target {
    const char *name;   /* participant name (the bqual of its branches) */
    const char *driver; /* "postgres" | "mysql" | "memory" */
    /* postgres */
    const char *conninfo; /* libpq conninfo; the password comes from `password`, not from here */
    /* mysql */
    const char *host; /* numeric address: name lookup would block the loop */
    int port;
    const char *database;
    const char *user;
    const char *ssl_ca;   /* CA file: enables TLS */
    const char *ssl_cert; /* client certificate (optional) */
    const char *ssl_key;
    bool ssl_verify_server_cert;
    /* both */
    const char *password; /* NULL: none */
    uint32_t connect_timeout_ms;
    uint32_t lock_timeout_ms; /* per-session lock wait limit, applied at connect; 0: server default.
                                 MySQL's innodb_lock_wait_timeout has whole seconds (rounded up). */
    bool without_markers;     /* prepare writes no marker row: only for the benchmark's baseline of
                                 plain XA without a coordinator */
} px_target;

typedef struct px_conn px_conn;
typedef struct px_driver px_driver;

typedef void (*px_connect_cb)(px_conn *c, const px_error *err, void *arg);
typedef void (*px_done_cb)(px_conn *c, const px_error *err, void *arg);
/* results[0..nresults-1] belong to the callee and are valid only during the callback.
 * On failure, failed_index is the 0-based index of the failing statement (nresults == it). */
typedef void (*px_exec_cb)(px_conn *c, const px_error *err, int failed_index,
                           const px_result *results, int nresults, void *arg);
/* found: the branch's marker row exists (it committed with the branch's work). */
typedef void (*px_marker_cb)(px_conn *c, const px_error *err, bool found, void *arg);
typedef void (*px_recover_cb)(px_conn *c, const px_error *err, const px_xid *xids, size_t n,
                              void *arg);

/*
 * Driver operations. All take a connection made by the same driver's connect.
 *
 * Branch life on one connection: begin -> exec* -> prepare, then commit_prepared or
 * rollback_prepared (MySQL/MariaDB: on this same connection while it lives; PostgreSQL: from any
 * connection). Before prepare, rollback ends the branch; commit_one_phase commits it without a
 * prepare (for a transaction with a single branch).
 */
struct px_driver {
    const char *name;
    /* Opens a connection. On success cb gets the connection; on failure cb gets NULL and err. */
    XA_MUST_CHECK int (*connect)(uv_loop_t *loop, const px_target *t, px_connect_cb cb, void *arg);
    /* Runs statements in order inside the current branch, stopping at the first failure
     * (error or expect_rows mismatch, which is PX_BUSINESS with message "expected N rows, got M").
     */
    XA_MUST_CHECK int (*exec)(px_conn *c, const px_stmt *stmts, int n, px_exec_cb cb, void *arg);
    XA_MUST_CHECK int (*begin)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    /* Writes the branch's marker row (xacoord.marker / xacoord_marker), ends the branch's work
     * and prepares it, in one round trip. PostgreSQL: a PREPARE TRANSACTION answered with the
     * tag ROLLBACK (the transaction had failed) is reported as PX_BUSINESS. */
    XA_MUST_CHECK int (*prepare)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    /* Abandons the unprepared branch open on this connection. */
    XA_MUST_CHECK int (*rollback)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    XA_MUST_CHECK int (*commit_one_phase)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    XA_MUST_CHECK int (*commit_prepared)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    XA_MUST_CHECK int (*rollback_prepared)(px_conn *c, const px_xid *x, px_done_cb cb, void *arg);
    /* Lists the prepared branches whose gtrid starts with gtrid_prefix and whose bqual equals
     * bqual (PostgreSQL: only those of current_database()). */
    XA_MUST_CHECK int (*recover)(px_conn *c, const char *gtrid_prefix, const char *bqual,
                                 px_recover_cb cb, void *arg);
    /* Whether the marker row of branch x exists. prepare writes it inside the branch (in the
     * same round trip), so it commits or rolls back with the branch's work: after COMMIT/ROLLBACK
     * PREPARED answered "not found" and the branch is no longer listed, it tells which one
     * happened. No branch may be open on c. */
    XA_MUST_CHECK int (*marker_exists)(px_conn *c, const px_xid *x, px_marker_cb cb, void *arg);
    /* Deletes the markers of this coordinator (gtrid_prefix) older than older_than_s seconds. */
    XA_MUST_CHECK int (*markers_prune)(px_conn *c, const char *gtrid_prefix, uint32_t older_than_s,
                                       px_done_cb cb, void *arg);
    /* Returns the session, with no branch open on it, to the state it had right after connect:
     * whatever a branch's statements changed (settings, temporary objects, advisory/user locks,
     * variables, prepared statements, LISTEN) is undone and the lock wait limit applied again.
     * The pool calls it for every connection that comes back. A driver may report success at once
     * and do the work in front of the next branch (PostgreSQL pipelines DISCARD ALL before
     * BEGIN); on failure the connection must be discarded. NULL: nothing to reset. */
    XA_MUST_CHECK int (*reset)(px_conn *c, px_done_cb cb, void *arg);
    /* Closes the connection and frees it once its handles are closed. An operation in flight is
     * abandoned: its callback is never called. Safe to call from inside any callback. */
    void (*close)(px_conn *c);
};

/* Every driver's connection starts with this header, so generic code can find the driver. */
struct px_conn_base {
    const px_driver *driver;
    const px_target *target;
    void *user; /* free for the owner (the pool uses it) */
};

/* Looks a driver up by name ("postgres", "mysql", "memory"); NULL when unknown. */
const px_driver *px_driver_find(const char *name);

extern const px_driver px_postgres_driver;
extern const px_driver px_mysql_driver;
extern const px_driver px_memory_driver;

/* Base64 (RFC 4648, with padding) of len bytes, NUL-terminated; NULL when out of memory. */
XA_MUST_CHECK char *px_base64(const void *data, size_t len);

/* Fills err (cls, code, sqlstate, message) in one call; message is printf-style. */
void px_error_set(px_error *err, px_errclass cls, bool conn_broken, int code, const char *sqlstate,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
const char *px_errclass_name(px_errclass cls);
/* Why a connect failed, in the words an operator looks for: "TLS verification failed",
 * "authentication failed", "unknown database", "connection refused", "unknown host", "timed out",
 * or "cannot connect". From the SQLSTATE (PostgreSQL), the error number (MySQL) or the text. */
const char *px_connect_cause(const px_error *err);

/* The base header of any connection. */
static inline struct px_conn_base *px_conn_base(px_conn *c)
{
    return (struct px_conn_base *)c;
}

#endif
