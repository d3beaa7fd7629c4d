/*
 * Test helpers for running the real daemon against the local servers of scripts/db: write a
 * configuration for the example shop, start build/xacoord as a child process, talk HTTP to it,
 * kill it with SIGKILL or stop it with SIGTERM, and check the shop's invariants.
 */
#ifndef XA_TEST_DAEMON_H
#define XA_TEST_DAEMON_H

#include "compiler.h"

#include <stdbool.h>
#include <sys/types.h>

typedef struct tu_daemon {
    pid_t pid;
    int port;
    char node[17];
    char dir[256]; /* data_dir and config live here */
    char config[320];
    char log[320];
    char token[64]; /* "" when the API has no token */
} tu_daemon;

/* Store mode (XA_TEST_DECISION_LOG=postgres in the environment): every daemon keeps its decisions
 * in the decision store (database xatest on the payment server) with this lease. */
#define TU_STORE_LEASE_MS 1500
bool tu_store_mode(void);
/* XA_TEST_DECISION_LOG=postgres-lr: store mode with the store in payment's database and payment
 * the last resource ([decision_store] participant = payment). */
bool tu_store_last_resource(void);
/* Creates the store's tables if missing (sql/xacoord-store.sql) and empties them; tu_shop_reset
 * does it in store mode. */
void tu_store_reset(void);
/* Prepares a daemon in a fresh temporary directory with the shop's three participants.
 * extra: more [coordinator] lines ("key = value\n..."), or NULL. */
void tu_daemon_init(tu_daemon *d, const char *node, const char *extra);
/* Sets pool_size of every participant in d's configuration (after tu_daemon_init, before the
 * daemon starts): pool_size = 1 makes each transaction reuse the previous one's connection. */
void tu_daemon_set_pool_size(tu_daemon *d, int pool_size);
/* Sets key = value in a section of d's configuration ("coordinator", "participant.order"), before
 * the daemon starts. "port" also rewrites a PostgreSQL conninfo's port, to point the participant
 * at a fault proxy. */
void tu_daemon_set_key(tu_daemon *d, const char *section, const char *key, const char *value);
/* Starts it (environment: the current one plus env, a NULL-terminated "K=V" list or NULL) and
 * waits until /readyz answers 200. */
void tu_daemon_start(tu_daemon *d, const char *const *env);
/* Starts it without waiting; returns the pid. */
pid_t tu_daemon_spawn(tu_daemon *d, const char *const *env);
/* Waits until /readyz answers 200 (fails the test after timeout_ms). */
void tu_daemon_wait_ready(tu_daemon *d, unsigned timeout_ms);
/* SIGKILL and reap. */
void tu_daemon_kill(tu_daemon *d);
/* Waits for the process to exit on its own (e.g. a crash point); returns the wait status (a value
 * for WIFSIGNALED and the like, not an error code: not exiting in time fails the test). Not
 * must-check: a test may only want the process gone. */
int tu_daemon_wait_exit(tu_daemon *d, unsigned timeout_ms);
/* SIGTERM, wait; returns the exit code (0..255), or a negative errno: -EINTR when a signal killed
 * it, -ESRCH when it was not running. */
XA_MUST_CHECK int tu_daemon_stop(tu_daemon *d);
/* Writes a secret file as the daemon wants it (mode 0600): text and a newline. */
void tu_write_secret(const char *path, const char *text);
/* Removes the temporary directory. */
void tu_daemon_cleanup(tu_daemon *d);
/* The identity of d's data directory (coordinator/identity.h), made at its first start, into
 * out (>= 9 bytes). */
void tu_daemon_identity(const tu_daemon *d, char *out);

/* One HTTP request (Connection: close). Returns the status, or httpc_request's negative errno
 * when no answer could be had (test `< 0`); *body gets the malloc'ed response body (may be NULL).
 * token may be NULL. Not must-check: a test may send a request for its effect alone. */
int tu_http(int port, const char *method, const char *path, const char *body, const char *token,
            char **resp);

/* A POST of body to d's /v1/transactions from another thread (pthread_create(..., tu_post_thread,
 * &poster)), for a test that acts while the request is in flight; status and resp as tu_http. */
typedef struct tu_poster {
    tu_daemon *d;
    const char *body;
    int status;
    char *resp;
} tu_poster;
void *tu_post_thread(void *arg);

/* Holds the warehouse's SKU-1 row for hold_s seconds from another session, in the background. */
void tu_hold_stock_row(double hold_s);

/* The JSON of a checkout of order `order` (user, amount, sku, qty) with client id `id` (NULL:
 * none). */
char *tu_checkout_json(const char *id, long order, long user, long amount, const char *sku,
                       long qty);
/* The JSON of shipping order `order`. */
char *tu_ship_json(const char *id, long order);

/* A free loopback port below the kernel's ephemeral range, for a server the test starts. A lookup
 * with no error result: finding none fails the test. */
int tu_free_port(void);

/* The source tree (for scripts/ and tests/invariants). */
const char *tu_source_dir(void);
/* Runs build/xactl against d with the given arguments (a shell fragment); returns its exit code
 * (-EINTR when a signal killed it) and, when out is not NULL, its stdout (malloc'ed). */
XA_MUST_CHECK int tu_xactl(const tu_daemon *d, const char *args, char **out);

/* scripts/db reset + baseline; then `tests/invariants check` must pass. */
void tu_shop_reset(void);
/* Runs `tests/invariants check`; returns its exit status (0 = all hold). */
int tu_invariants(void);
/* One value from an admin query on a shop database ("payment", "order", "warehouse"). */
long tu_shop_long(const char *which, const char *sql);
/* Prepared branches whose gtrid starts with prefix on a shop database ("payment", "order",
 * "warehouse"): pg_prepared_xacts of its database, or XA RECOVER of its server. */
long tu_prepared(const char *which, const char *prefix);
/* A user's balance, and an order's status letter (I, P or W). */
long tu_balance(long user);
char tu_order_status(long order);

#endif
