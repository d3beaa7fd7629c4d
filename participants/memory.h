/*
 * The in-memory participant driver ("memory"): a fake XA resource manager inside the process, for
 * unit tests of the engine above the driver layer and for the benchmark's coordinator-only mode.
 *
 * Each participant name (px_target.name) is one "server". Servers live in a process-wide registry,
 * the only global state of the driver: a server is created on first use by name and lives until
 * px_memory_reset(). Like a real database it keeps prepared branches by XID across connection
 * close, counts what it did, and remembers the outcome of the last PX_MEMORY_OUTCOMES_MAX
 * finished branches. The registry is not thread-safe: use it from the loop thread only.
 *
 * Statements are a tiny language (leading word, case-insensitive):
 *   rows N                          succeeds with rows_affected N
 *   error business|retryable|fatal  fails with that class, sqlstate "XX000"
 *   sleep MS                        completes after MS milliseconds, rows_affected 1
 *   echo                            one row, one column "value" per parameter, typed
 *                                   (PX_COL_INT, PX_COL_REAL, PX_COL_BOOL as "t"/"f", PX_COL_TEXT;
 *                                   SQL NULL for PX_P_NULL), rows_affected 1
 *   anything else                   succeeds with rows_affected 1
 *
 * Branch rules (as on a real server): exec, prepare and commit_one_phase need a branch begun on the
 * connection, else PX_FATAL; begin while a branch is open, or with the XID of a prepared branch, is
 * PX_FATAL; commit_prepared / rollback_prepared of an XID that is not prepared is PX_XID_NOT_FOUND
 * (from any connection); rollback with no branch open succeeds and does nothing. A branch open but
 * not prepared is rolled back when its connection closes or breaks, and when prepare or
 * commit_one_phase fails. Statements run by exec are evaluated when exec is called, so the stmts
 * array need not outlive the call; every other effect happens when the operation completes, so a
 * connection closed with an operation in flight leaves the server as if the request never arrived.
 */
#ifndef XA_MEMORY_H
#define XA_MEMORY_H

#include "participant.h"

/* How many finished branches per server keep an answer for px_memory_outcome(). */
#define PX_MEMORY_OUTCOMES_MAX 65536

/* The operations that faults can target. */
typedef enum px_memory_op {
    PX_MEM_CONNECT = 0,
    PX_MEM_BEGIN,
    PX_MEM_EXEC,
    PX_MEM_PREPARE,
    PX_MEM_COMMIT_PREPARED,
    PX_MEM_ROLLBACK_PREPARED,
    PX_MEM_COMMIT_ONE_PHASE,
    PX_MEM_ROLLBACK,
    PX_MEM_RECOVER,
    PX_MEM_RESET,  /* the pool returning a connection: nothing to undo, but counted and failable */
    PX_MEM_MARKER, /* marker_exists: a branch's marker exists once it committed */
    PX_MEM_PRUNE,  /* markers_prune: nothing to delete, but counted and failable */
    PX_MEM_NOPS
} px_memory_op;

/* What a server knows about one XID. */
typedef enum px_memory_state {
    PX_MEM_NONE = 0, /* never seen, still open (not prepared), or forgotten */
    PX_MEM_PREPARED,
    PX_MEM_COMMITTED,   /* two-phase or one-phase */
    PX_MEM_ROLLED_BACK, /* before or after prepare */
} px_memory_state;

typedef struct px_memory_stats {
    uint64_t connects; /* successful connects */
    uint64_t connect_failures;
    uint64_t begun;
    uint64_t executed; /* statements run, including one that failed */
    uint64_t prepared;
    uint64_t committed; /* commit_prepared */
    uint64_t committed_one_phase;
    uint64_t rolled_back; /* before prepare: rollback, close, break, failed prepare */
    uint64_t rolled_back_prepared;
    uint64_t resets;
    size_t prepared_now; /* prepared branches held now */
    size_t connections;  /* connections open now */
} px_memory_stats;

/* Drops every server with its branches, outcomes and settings. Connections still open keep their
 * (now detached) server alive until they close; new connections get a fresh server. */
void px_memory_reset(void);

/* Zeroes *out when the server does not exist. */
void px_memory_stats_get(const char *name, px_memory_stats *out);

/* The next `times` calls of op fail with cls (message "injected <op> failure"), without effect
 * (a failed prepare or commit_one_phase rolls the open branch back, as real servers do). */
void px_memory_fail(const char *name, px_memory_op op, px_errclass cls, int times);
/* The same, with a database error code in the errors (e.g. MariaDB's 1402 XA_RBROLLBACK). */
void px_memory_fail_code(const char *name, px_memory_op op, px_errclass cls, int code, int times);

/* The next `times` calls of op take effect on the server, but the reply is lost: the caller gets
 * PX_RETRYABLE with conn_broken, as when a connection dies right after the server acted. */
void px_memory_lose_reply(const char *name, px_memory_op op, int times);

/* While down, connect fails with PX_RETRYABLE; every operation on an existing connection fails
 * with PX_RETRYABLE and conn_broken, and that connection stays broken. */
void px_memory_set_down(const char *name, bool down);

/* Every operation started from now on completes after ms milliseconds (0: next loop turn). */
void px_memory_set_latency_ms(const char *name, unsigned ms);

size_t px_memory_prepared_count(const char *name);

/* Plants a prepared branch, as a crashed coordinator would leave it: 0, -EEXIST when it already
 * is prepared, or -ENOMEM. */
XA_MUST_CHECK int px_memory_add_prepared(const char *name, const px_xid *x);

/* Finishes a prepared branch behind the coordinator's back, as a DBA would by hand (a heuristic
 * decision): 0, or -ENOENT when it is not prepared. */
XA_MUST_CHECK int px_memory_finish_prepared(const char *name, const px_xid *x, bool commit);

bool px_memory_is_prepared(const char *name, const px_xid *x);

px_memory_state px_memory_outcome(const char *name, const px_xid *x);

#endif
