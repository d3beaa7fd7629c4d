/*
 * A bounded connection pool per participant, on the loop.
 *
 * At most `size` connections exist at once (idle, lent out, or connecting). Acquirers wait in
 * FIFO order for a free connection. A failed connect marks the participant down and schedules
 * reconnects with capped exponential backoff; while it is down, acquire fails at once with a
 * PX_RETRYABLE error instead of queueing, so callers learn "server down" quickly. A connection
 * that the owner saw break is discarded, never reused.
 */
#ifndef XA_POOL_H
#define XA_POOL_H

#include "compiler.h"

#include "list.h"
#include "participant.h"

typedef struct px_pool px_pool;
typedef struct px_pool_req px_pool_req;

/* conn is NULL on failure (err says why). Called exactly once per successful acquire call, unless
 * the request is cancelled first. */
typedef void (*px_acquire_cb)(px_pool_req *req, px_conn *conn, const px_error *err);

/* Embedded in the caller's object; must stay valid until its callback ran or it was cancelled. */
struct px_pool_req {
    px_acquire_cb cb;
    void *data; /* free for the caller */
    /* private */
    px_pool *pool;
    list_node node; /* on the pool's waiters while queued (zeroed: not queued) */
};

typedef struct px_pool_stats {
    int size; /* the configured limit */
    int open; /* connections that exist or are being made (idle + busy + connecting) */
    int idle;
    int busy;    /* lent, or returned and having their session reset */
    int waiting; /* queued acquire requests */
    bool up;     /* false after a failed connect, until a connect succeeds */
    uint64_t connects, connect_failures, discards;
} px_pool_stats;

/* The target must outlive the pool. Returns NULL when the driver is unknown or out of memory. */
XA_MUST_CHECK px_pool *px_pool_new(uv_loop_t *loop, const px_target *target, int size);

/* Lends a connection: immediately (on a later loop turn) when one is idle, after a connect when
 * below the limit, else when one is released. Fails fast with PX_RETRYABLE while the participant
 * is down. Returns 0, or a negative code (callback not called) when the pool is closing. */
XA_MUST_CHECK int px_pool_acquire(px_pool *pool, px_pool_req *req, px_acquire_cb cb);

/* Withdraws a request still waiting; its callback will not be called. No-op once it ran. */
void px_pool_cancel(px_pool_req *req);

/* Returns a healthy connection with no branch open on it. Handing back (release or discard) a
 * connection this pool has but has not lent - a second release while the first one's reset runs
 * or after it - is fatal (check.h); one the pool already closed is gone, and touching it is a
 * use after free that only the sanitizers see. */
void px_pool_release(px_pool *pool, px_conn *conn);

/* Closes a lent connection that broke or whose state is unknown; its slot becomes free. */
void px_pool_discard(px_pool *pool, px_conn *conn);

/* Changes the limit (a configuration reload). Growing lets waiters connect at once; shrinking
 * closes idle connections beyond the new limit now and lent ones when they come back. Returns 0,
 * or -EINVAL (size < 1) with nothing changed. */
XA_MUST_CHECK int px_pool_resize(px_pool *pool, int size);

/* Opens connections in the background until n exist (at most the limit), so that the first
 * transactions after a start do not wait for connects. */
void px_pool_warm(px_pool *pool, int n);

/* Closes every idle connection. Called when one connection was found dead: its idle siblings
 * talked to the same server and are most likely dead too (a server restart), so the next acquire
 * should connect afresh rather than hand out another corpse. */
void px_pool_flush_idle(px_pool *pool);

/* The driver the pool connects with. */
const px_driver *px_pool_driver(const px_pool *pool);
const px_target *px_pool_target(const px_pool *pool);
void px_pool_get_stats(const px_pool *pool, px_pool_stats *out);

/* Fails every waiter (PX_RETRYABLE, "pool closing"), closes idle connections, and closes lent
 * ones as they come back; cb runs once every connection and handle is closed, then the pool is
 * freed. */
void px_pool_close(px_pool *pool, void (*cb)(void *arg), void *arg);

#endif
