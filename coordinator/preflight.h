/*
 * Participant preflight: whether a participant's server keeps what the coordinator's guarantees
 * rest on. A commit the coordinator reports must survive a crash of the database, a prepared
 * branch must be able to exist, and the coordinator must be able to list and mark its branches.
 * A server that cannot promise that is unsafe, and an unsafe participant takes no new work
 * (status_part_usable) unless its configuration says allow_unsafe = true.
 *
 * For every participant, at start and again every recovery_interval_ms, a few read-only queries
 * run on a pooled connection, outside any branch: the settings that make commits durable, whether
 * the server can take writes and prepared transactions, the privilege XA RECOVER needs, and the
 * xacoord schema (schema.h). Judging what was read is a pure function (preflight_judge), so every
 * rule can be tested without a server. A participant that cannot be reached keeps its last
 * verdict and is asked again at the next interval; the pool's own down handling applies.
 *
 * Each change of verdict is logged once: unsafe at ERROR, warnings at WARN, the values read at
 * INFO. An unsafe participant that allow_unsafe lets in is logged at ERROR at every start and
 * whenever the findings change. /readyz shows the state (preflight_state).
 */
#ifndef XA_PREFLIGHT_H
#define XA_PREFLIGHT_H

#include "compiler.h"

#include "coord.h"

#include <stdbool.h>
#include <stddef.h>

#define PREFLIGHT_VALUE_MAX 24
#define PREFLIGHT_TEXT_MAX 256
#define PREFLIGHT_MAX_FINDINGS 16

/* What the queries read from one participant. Settings are kept as the server prints them. */
typedef struct preflight_facts {
    bool postgres; /* else MySQL/MariaDB */
    /* The xacoord schema (both dialects). */
    char schema_missing[48]; /* the first of its tables found missing, or "" */
    char schema_denied[48];  /* privileges on the marker table the coordinator lacks ("INSERT,
                                DELETE"), or "" */
    int schema_version;      /* the largest version applied; 0 when none (or not read) */
    /* PostgreSQL */
    char fsync[PREFLIGHT_VALUE_MAX];
    char synchronous_commit[PREFLIGHT_VALUE_MAX];
    char full_page_writes[PREFLIGHT_VALUE_MAX];
    long max_prepared_transactions;
    bool in_recovery; /* pg_is_in_recovery(): a standby */
    /* MySQL/MariaDB; "" for a variable the server does not have */
    char flush_log_at_trx_commit[PREFLIGHT_VALUE_MAX];
    char sync_binlog[PREFLIGHT_VALUE_MAX];
    char log_bin[PREFLIGHT_VALUE_MAX];
    char read_only[PREFLIGHT_VALUE_MAX];
    char super_read_only[PREFLIGHT_VALUE_MAX];      /* MySQL only */
    char xa_detach_on_prepare[PREFLIGHT_VALUE_MAX]; /* MySQL 8.0.29 and later */
    bool xa_recover_denied; /* XA RECOVER refused (MySQL 8 without XA_RECOVER_ADMIN) */
} preflight_facts;

/* What the configuration asks of the participant. */
typedef struct preflight_need {
    int pool_size;    /* the participant's */
    int max_inflight; /* the coordinator's */
} preflight_need;

typedef struct preflight_finding {
    bool unsafe;                   /* false: a warning, the participant stays usable */
    char text[PREFLIGHT_TEXT_MAX]; /* "innodb_flush_log_at_trx_commit = 2 (set it to 1)" */
} preflight_finding;

/* Judges the facts: fills out[0..n-1] (unsafe findings first) and returns n (at most max). */
int preflight_judge(const preflight_facts *f, const preflight_need *need, preflight_finding *out,
                    int max);
/* One line of the values read, for the log ("fsync=on, synchronous_commit=on, ..."). */
void preflight_describe(const preflight_facts *f, char *buf, size_t len);
/* Whether a setting's text means on ("1", "ON", "on", "true", "yes"). */
bool preflight_on(const char *value);

/* Starts the checks of every participant. Returns 0, or -1 when out of memory. */
XA_MUST_CHECK int preflight_start(coord *c);
/* The last verdict found the participant's settings safe, or allow_unsafe lets it in. */
bool preflight_safe(const coord *c, int participant);
/* The participant's state for /readyz: "ready", "checking the server's settings" (no verdict
 * yet), "unsafe: <findings>", or "ready, UNSAFE allowed by allow_unsafe: <findings>". */
const char *preflight_state(const coord *c, int participant);
/* Stops the timers and abandons a check in flight; cb runs when the handles are closed. */
void preflight_stop(coord *c, void (*cb)(void *arg), void *arg);

#endif
