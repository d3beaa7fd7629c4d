/*
 * The driver contract (participants/participant.h), written once and run against every driver:
 * connect, statements with parameters and results, a branch's begin/exec/prepare, COMMIT and
 * ROLLBACK PREPARED by XID from another connection, one-phase commit and rollback, the recovery
 * listing and its filters, the error classes, the asynchronous rules (one operation at a time,
 * no callback from inside a call, close in a callback or with an operation in flight), session
 * reset, and 200 branches over 8 connections.
 *
 * A contract_driver describes a driver - how to connect, the few statements whose SQL differs,
 * and an oracle that tells which branches committed without going through the driver
 * (contract_drivers.c holds the three); each driver's test program runs contract_run() next to
 * its own driver-specific tests.
 */
#ifndef XA_CONTRACT_H
#define XA_CONTRACT_H

#include "testutil.h"

typedef struct contract_driver {
    const char *name; /* cmocka group name: "contract/<name>" */
    const px_driver *d;
    const char *bqual;       /* the participant's name: bqual of the branches */
    const char *bqual_other; /* another participant's name on the same server */
    /* Fills the target of a reachable server (strings must live until exit). */
    void (*target)(px_target *t);
    /* Makes t a target where no server answers: its connect fails, retryable. */
    void (*unreachable)(px_target *t);
    /* Once before the tests: an empty table ct_item (id, v) for `write` (NULL: none). */
    void (*setup)(void);
    /* Which branches committed is asked of the server on another path than the driver: an SQL
     * server's ct_item through its administrator's client (adm_sql(admin, ...)), or else
     * count_committed: how many of the n branches xs[i] committed their write of row ids[i]. */
    const char *admin;
    int (*count_committed)(const px_xid *xs, const int64_t *ids, int n);
    /* Statements in the driver's dialect. */
    const char *write;     /* one row of ct_item written; parameter 1: its id, 2: a text */
    const char *touch;     /* changes nothing in row id (parameter 1) but matches it: 1 row */
    const char *no_rows;   /* matches no row */
    const char *two_rows;  /* returns two rows */
    const char *echo_text; /* one row whose first cell is parameter 1 (a text) */
    /* Reading row id (parameter 1) back: v and its length in bytes as the server counts it; and
     * the administrator's query for v of rows 700 to 799 in id order, each in upper-case hex
     * followed by '=', all in one cell. NULL: the server keeps no rows. */
    const char *read_text;
    const char *stored_hex;
    const char *business;           /* fails as PX_BUSINESS, the connection stays usable */
    const char *fatal;              /* fails as PX_FATAL (a missing privilege) */
    const char *slow;               /* takes 2 s, returns one row */
    const char *not_found_sqlstate; /* of COMMIT/ROLLBACK PREPARED of an unknown XID */
    /* Session reset: a statement that changes the session and a probe whose first cell shows
     * the session's clean value (NULL: the driver has no session state). */
    const char *dirty;
    const char *probe;
    const char *probe_clean;
    /* A branch's XID is known to the server only after the preparing connection's close has
     * been processed: another connection retries "not found" for a bounded time (MariaDB). */
    bool detach_after_close;
} contract_driver;

/* A loopback TCP port where nothing listens (bound once, then closed). */
int contract_free_port(void);

/* Runs the contract tests against drv; returns cmocka's count of failed tests. */
int contract_run(const contract_driver *drv);

/* The drivers (contract_drivers.c). */
extern const contract_driver contract_postgres;
extern const contract_driver contract_mysql;
extern const contract_driver contract_memory;

#endif
