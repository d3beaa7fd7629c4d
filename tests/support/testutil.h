/*
 * Shared helpers for the cmocka tests: running a loop until a condition, and the targets of the
 * local servers that `scripts/db start` runs (read from the environment `scripts/db env` prints).
 */
#ifndef XA_TESTUTIL_H
#define XA_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the headers above first. */
#include <cmocka.h>

#include "participant.h"

/* Runs the loop until *flag is true; fails the test after timeout_ms. */
void tu_run_until(uv_loop_t *loop, const volatile bool *flag, unsigned timeout_ms);
/* The same for a flag that another thread sets. */
void tu_run_until_atomic(uv_loop_t *loop, const atomic_bool *flag, unsigned timeout_ms);
/* Runs the loop until *count reaches want; fails the test after timeout_ms. */
void tu_run_until_count(uv_loop_t *loop, const volatile int *count, int want, unsigned timeout_ms);
/* Closes every handle still open on the loop and asserts that uv_loop_close succeeds. */
void tu_loop_close(uv_loop_t *loop);

/* Environment variable that the test needs; fails the test (never skips) when it is missing. */
const char *tu_env(const char *name);

/* Targets of the test database "xatest" on the local servers, user xacoord:
 * which = "payment" (PostgreSQL), "order" or "warehouse" (MariaDB). The strings live until exit. */
void tu_target(px_target *t, const char *which);

/* Runs one SQL string as an administrator through the server's command-line client
 * (psql / mariadb) against database db; returns its stdout (malloc'ed, trimmed), NULL on failure.
 */
char *tu_admin_sql(const char *which, const char *db, const char *sql);

/* Runs a shell command; returns its exit status. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs fn(arg) in a child process and fails the test unless the child aborts (SIGABRT) with a
 * message on stderr that contains each of the NULL-terminated strings: how a test shows that a
 * broken invariant is fatal (check.h) without ending the test program. */
void tu_expect_abort(void (*fn)(void *arg), void *arg, ...) __attribute__((sentinel));

#endif
