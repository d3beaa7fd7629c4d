/*
 * The benchmark's shared pieces: a closed-loop runner that keeps N clients busy on one libuv loop
 * for a bounded time and count, the client kinds it can drive (HTTP against the daemon, and the
 * two coordinator-less baselines B0 and B1 on the participant drivers), the shop workload every
 * kind runs, and the result of one run. The subcommands in main.c combine these.
 */
#ifndef XA_BENCH_H
#define XA_BENCH_H

#include "participant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct bench_run bench_run;
typedef struct bench_client bench_client;

typedef enum bench_outcome { BENCH_COMMITTED, BENCH_ABORTED, BENCH_ERROR } bench_outcome;

/* What the HTTP clients send. */
typedef enum bench_body {
    BENCH_BODY_SHOP,   /* the checkout of docs/design.md section 5 on the real shop */
    BENCH_BODY_MEMORY, /* the same shape (3 branches, 2+1+2 statements) on memory participants */
} bench_body;

/* One kind of client. open() starts connecting and later calls bench_client_ready (or
 * bench_client_failed); start() begins one checkout and later calls bench_client_done;
 * close() releases everything (handles may close after it returns). */
typedef struct bench_kind {
    const char *name;
    void (*open)(bench_client *cl);
    void (*start)(bench_client *cl);
    void (*close)(bench_client *cl);
} bench_kind;

extern const bench_kind bench_http_kind;
/* The same requests to a second daemon that keeps its decisions in a store with payment as the
 * last resource (scripts/bench: "xacoord (store, last resource)"). */
extern const bench_kind bench_http_store_kind;
extern const bench_kind bench_b0_kind;
extern const bench_kind bench_b1_kind;

/* Where the three shop databases are, for the baselines and the recovery measurement. */
typedef struct bench_targets {
    px_target payment, order, warehouse;
    char pg_conninfo[256];
    char pw[3][128];
} bench_targets;

struct bench_client {
    bench_run *run;
    int index;
    int64_t order;     /* next order to check out */
    int64_t order_end; /* one past the client's last order */
    int64_t user;      /* the client's own account, and SKU "B<user>" */
    uint64_t t0;       /* start of the transaction in flight (uv_hrtime) */
    bool busy, ready, dead;
    void *impl;
};

typedef struct bench_result {
    int conc;
    double seconds;
    uint64_t committed, aborted, errors;
    double tps;                     /* committed per second */
    double p50_ms, p99_ms, p999_ms; /* over every finished transaction */
} bench_result;

struct bench_run {
    uv_loop_t *loop;
    const bench_kind *kind;
    int conc;
    bench_client *clients;
    /* settings the kinds read */
    int http_port;
    int store_port; /* bench_http_store_kind's daemon; 0: none */
    bench_body body;
    bool single;          /* only the checkout's payment branch (one-phase commit) */
    const char *mem_stmt; /* the statement of every memory branch */
    const bench_targets *targets;
    uint64_t gtrid_seq; /* B1: the next branch id */
    /* progress */
    int nready, nfailed, nidle;
    uint64_t deadline; /* uv_hrtime; 0 while connecting */
    uint64_t t_start, t_end;
    uint64_t committed, aborted, errors;
    uint64_t *lat; /* microseconds, one per finished transaction */
    size_t nlat, caplat;
    char first_error[256];
};

/* Runs `kind` with conc clients for at most `seconds` (after every client connected) or until
 * each client used its orders: client k checks out orders first_order + k*per_client ... of
 * user k+1 (disjoint rows: throughput, not lock contention). Returns 0, or -1 when the clients
 * could not connect (message in run->first_error). */
int bench_run_execute(bench_run *run, const bench_kind *kind, int conc, double seconds,
                      int64_t per_client, bench_result *out);
void bench_run_free(bench_run *run);

void bench_client_ready(bench_client *cl);
void bench_client_failed(bench_client *cl, const char *why);
void bench_client_done(bench_client *cl, bench_outcome outcome, const char *why);

/* The HTTP request of one checkout (malloc'ed, NUL-terminated; *len set). */
char *bench_http_request(const bench_run *run, const bench_client *cl, size_t *len);

/* One blocking GET to the daemon on 127.0.0.1. Returns the status and a malloc'ed body (may be
 * NULL), or httpc_request's negative errno when there was no answer. */
XA_MUST_CHECK int bench_http_get(int port, const char *path, char **body);

/* Reads a password file (first line): 0, or -EIO when unreadable. */
XA_MUST_CHECK int bench_read_secret(const char *path, char *buf, size_t len);

double bench_now_s(void);

/* Plants n prepared branches per shop database with gtrids xa1.<node>.1.<seq> (rows 1..n of the
 * setup), starts the daemon (xacoord --config config, output to log, HTTP on port) and prints how
 * long it took until /readyz answered 200 and until no branch of its prefix was listed. */
int bench_recovery(const bench_targets *t, int n, const char *node, const char *identity,
                   const char *xacoord, const char *config, const char *log, int port);

#endif
