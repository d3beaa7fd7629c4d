/*
 * The decision store (decision_log = postgres; docs/design.md section 3, "Decision store"): commit
 * decisions as rows of xacoord_decisions in one PostgreSQL database that every coordinator shares,
 * and one row per node in xacoord_nodes whose epoch fences them.
 *
 * A commit decision is one statement in a transaction of its own that inserts the row only while
 * this node's row still has the epoch this process took at start (it locks that row FOR KEY SHARE,
 * and a takeover's SELECT ... FOR UPDATE waits for it). So a decision either is a committed row
 * written under the current epoch, or does not exist; once a peer (or this node's next start)
 * raised the epoch, no process of the old epoch can add one. Abort outcomes and "every branch
 * acknowledged" are written lazily, batched per loop turn. Rows older than the outcome retention
 * with nothing pending are deleted in batches.
 *
 * Start-up (store_open, store_load_unfinished) blocks: it runs before the loop serves anything,
 * as the journal's replay does. Everything after runs on the loop through a connection pool.
 */
#ifndef XA_STORE_H
#define XA_STORE_H
#include "compiler.h"
#include "config.h"
#include "participant.h"
#include "request.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct store store;

/* One decision row, as written or read. Strings are the caller's (valid during a callback). */
typedef struct store_row {
    const char *gtrid;
    const char *client_id;
    uint8_t digest[REQUEST_DIGEST_LEN];
    bool commit;         /* outcome 'commit' (else 'abort') */
    int status;          /* the reply's HTTP status */
    const char *reply;   /* the reply head (outcome.h) */
    const char *pending; /* participant names, comma-separated; "" when none */
    int64_t time_ms;     /* when it was decided (read rows: the store's clock) */
} store_row;

/* Connects, checks that the tables exist, and takes this node's row: epoch + 1 (after every
 * decision transaction of the previous epoch has ended), holder and lease. holder names this
 * process in the row (for operators). Returns 0, or with a message in err -EBUSY (another
 * process keeps renewing the node's lease), -EIO (the store failed) or -ENOMEM. */
XA_MUST_CHECK int store_open(store **out, uv_loop_t *loop, const config *cfg, const char *holder,
                             char *err, size_t errlen);
/* The epoch this process took at start: every decision it writes carries it. */
uint64_t store_epoch(const store *s);
/* Calls fn for every committed row of this node with branches still pending (blocking; at start,
 * before recovery: their branches are to be committed). Returns 0, or -EIO with err set. */
XA_MUST_CHECK int store_load_unfinished(store *s, void (*fn)(const store_row *r, void *arg),
                                        void *arg, char *err, size_t errlen);

typedef enum store_verdict {
    STORE_DECIDED, /* the row is committed: the decision is durable */
    STORE_TAKEN,   /* another transaction's row holds this client id: winner says what it was */
    STORE_FENCED,  /* this node's epoch was raised: no decision, and none can be made */
    STORE_FAILED,  /* nothing was decided (the store refused or could not be reached) */
    STORE_UNKNOWN, /* shutting down while an answer was lost: the next start finds out */
} store_verdict;
typedef void (*store_decide_cb)(void *arg, store_verdict v, const store_row *winner,
                                const char *why);
/* Writes the commit decision r (r->commit must be set). A COMMIT whose answer is lost is asked
 * again on a new connection until the store answers: the statement is idempotent, so the answer
 * is always the truth. cb runs exactly once, on a later loop turn. */
void store_decide(store *s, const store_row *r, store_decide_cb cb, void *arg);
/* Last-resource commit ([decision_store] participant): the decision statements run inside
 * that participant's branch, whose one-phase COMMIT then is the decision. A store_decision
 * holds a row's statements: the conditional insert, the read-back of what holds the gtrid or
 * the client id, and (with_xact_id) the branch's transaction id, taken before COMMIT so that a
 * lost COMMIT answer can be settled by store_xact_status. */
typedef struct store_decision store_decision;
XA_MUST_CHECK store_decision *store_decision_new(store *s,
                                                 const store_row *r); /* NULL: out of memory */
const px_stmt *store_decision_stmts(const store_decision *d, bool with_xact_id, int *n);
/* What the statements' results say (winner filled unless FENCED; why set unless DECIDED). */
store_verdict store_decision_verdict(const store_decision *d, const px_result *results,
                                     int nresults, store_row *winner, const char **why);
void store_decision_free(store_decision *d);
/* pg_xact_status of a transaction id on the store: cb gets 1 committed, 0 aborted, -1 not known
 * yet (still running, or the store could not be asked: why). */
typedef void (*store_status_cb)(void *arg, int committed, const char *why);
void store_xact_status(store *s, const char *xact_id, store_status_cb cb, void *arg);

/* Lazily records an abort outcome for replay (a failure is logged, nothing else). */
void store_record_abort(store *s, const store_row *r);
/* Lazily records that every branch of committed gtrid was acknowledged. */
void store_done(store *s, const char *gtrid);

/* What the store says about a client id: status 200 (row), 404 (none), 503 (cannot ask; why). */
typedef void (*store_found_cb)(void *arg, int status, const store_row *r, const char *why);
void store_find(store *s, const char *client_id, store_found_cb cb, void *arg);

/* Whether this process may act for its node now: the epoch is still its own, as far as it knows,
 * and the last successful renew was sent less than lease_ms - margin ago (monotonic clock). */
bool store_holds_lease(const store *s);
/* cb runs once if a renew finds the epoch raised by another process (the node was taken). */
void store_on_lost(store *s, void (*cb)(void *arg), void *arg);

/* A node left with work, taken by this process (failover.h): one whose lease lapsed (a crash, or
 * a clean stop that handed it over), or one released free while commit rows of it still have
 * branches pending (an older version's stop). Its epoch raised (after every decision of the old
 * one ended), and the gtrids of its committed decisions with branches pending. status 200
 * taken, 404 none, 503 the store failed (why). */
typedef struct store_taken {
    const char *node_id;
    const char *holder; /* who held it before: "" when it had been released */
    uint64_t epoch;
    char **commits; /* gtrids */
    int ncommits;
} store_taken;
typedef void (*store_take_cb)(void *arg, int status, const store_taken *t, const char *why);
void store_take_lapsed(store *s, store_take_cb cb, void *arg);
/* Hands node_id back after its branches were resolved (holder '', lease expired, and nothing
 * pending in its commit rows: they were all resolved), if it is still at epoch; lazily, a
 * failure is logged. */
void store_release(store *s, const char *node_id, uint64_t epoch);

/* Periodic upkeep: deletes up to a batch of rows past retention_s with nothing pending. */
void store_tick(store *s, int64_t retention_s);
/* A clean stop: closes the pool (waiting for what is in flight), writes the lazy records still
 * queued, and then - while this process holds the epoch - hands the node back free (holder '')
 * when left is "" and the store holds no commit row of the node with branches pending, or else
 * over to a peer's takeover (holder kept, lease lapsed now). left says what the process knows
 * to be left on the participants. Blocking at the end; cb runs when done. */
void store_close(store *s, const char *left, void (*cb)(void *arg), void *arg);

/* Creates the store's tables (sql/xacoord-store.sql) in the configured database (blocking; for
 * --init-participants). Returns 0, or -EIO (-ENOMEM) with a message in err. */
XA_MUST_CHECK int store_init_schema(const config *cfg, char *err, size_t errlen);
#endif
