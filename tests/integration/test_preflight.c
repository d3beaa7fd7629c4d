/*
 * Participant preflight and the xacoord schema against the real servers, through the daemon
 * (coordinator/preflight.h, docs/operations.md section 4a): a sound setup is ready; a server
 * made unsafe while the daemon runs - MariaDB's innodb_flush_log_at_trx_commit = 2, PostgreSQL's
 * max_prepared_transactions below pool_size, the marker table dropped or a privilege revoked - is
 * named in /readyz, `xactl health` and the log, and takes no new work until it is put right;
 * allow_unsafe lets it work anyway, loudly. `xacoord --init-participants` creates the schema where
 * the coordinator's role may (the xatest databases) and says what to do where it may not (the
 * shop's). Every test puts the servers back as it found them, also when it fails.
 */
#include "daemon.h"
#include "testutil.h"

#ifndef XACOORD_BIN
#error "XACOORD_BIN must name the daemon binary"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

static int reset(void **state)
{
    tu_shop_reset();
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls /readyz until it answers want_status with every fragment in its body (a NULL-terminated
 * list); returns the body. Preflight runs every recovery_interval_ms (1 s in tests). */
static char *wait_readyz(const tu_daemon *d, int want_status, const char *const *fragments)
{
    char *body = NULL;
    int status = -1;
    for (int waited = 0; waited < 15000; waited += 50) {
        bool all = true;
        free(body);
        body = NULL;
        status = tu_http(d->port, "GET", "/readyz", NULL, NULL, &body);
        for (const char *const *f = fragments; f && *f && all; f++)
            all = body && strstr(body, *f);
        if (status == want_status && all)
            return body;
        sleep_ms(50);
    }
    tu_sh("tail -n 20 %s >&2", d->log);
    fail_msg("/readyz did not answer %d with the expected text; last: %d %s", want_status, status,
             body ? body : "(none)");
    return NULL;
}

static bool log_has(const tu_daemon *d, const char *text)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "grep -qF -- '%s' %s", text, d->log);
    return tu_sh("%s", cmd) == 0;
}

/* Adds a key to one participant's section of d's configuration (before the daemon starts). */
static void set_participant_key(tu_daemon *d, const char *participant, const char *line)
{
    assert_int_equal(
        tu_sh("sed -i 's/^\\[participant\\.%s\\]$/&\\n%s/' %s", participant, line, d->config), 0);
    assert_int_equal(tu_sh("grep -qx '%s' %s", line, d->config), 0);
}

static int post_checkout(const tu_daemon *d, long order, char **resp)
{
    char *body = tu_checkout_json(NULL, order, 7, 100, "SKU-1", 1);
    int status = tu_http(d->port, "POST", "/v1/transactions", body, NULL, resp);
    free(body);
    return status;
}

/* (a) The servers of scripts/db are sound: ready, every participant "ready". */
static void test_sound_setup_is_ready(void **state)
{
    static const char *const want[] = {"\"payment\":\"ready\"", "\"order\":\"ready\"",
                                       "\"warehouse\":\"ready\"", NULL};
    tu_daemon d;
    char *out = NULL;
    tu_daemon_init(&d, "pfa", NULL);
    tu_daemon_start(&d, NULL);
    free(wait_readyz(&d, 200, want));
    assert_int_equal(tu_xactl(&d, "health", &out), 0);
    free(out);
    assert_true(log_has(&d, "preflight: fsync=on synchronous_commit=on"));
    assert_true(log_has(&d, "preflight: innodb_flush_log_at_trx_commit=1"));
    assert_false(log_has(&d, "unsafe"));
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

static void set_flush(const char *value)
{
    char sql[96], *out;
    snprintf(sql, sizeof sql, "SET GLOBAL innodb_flush_log_at_trx_commit = %s", value);
    out = tu_admin_sql("order", "shop_order", sql);
    assert_non_null(out);
    free(out);
}

static int restore_flush(void **state)
{
    set_flush("1");
    return 0;
}

/* (b) innodb_flush_log_at_trx_commit = 2 on the order server while the daemon runs: not ready,
 * named in /readyz, xactl health and the log; a transaction using order gets 503; back to 1,
 * ready again and the checkout commits. */
static void test_flush_log_unsafe(void **state)
{
    static const char *const unsafe[] = {
        "\"order\":\"unsafe: innodb_flush_log_at_trx_commit = 2 (set it to 1)\"", NULL};
    static const char *const ready[] = {"\"order\":\"ready\"", NULL};
    tu_daemon d;
    char *out = NULL, *resp = NULL;
    tu_daemon_init(&d, "pfb", NULL);
    tu_daemon_start(&d, NULL);

    set_flush("2");
    free(wait_readyz(&d, 503, unsafe));
    assert_int_equal(tu_xactl(&d, "health", &out), 4);
    assert_non_null(strstr(out, "innodb_flush_log_at_trx_commit = 2"));
    free(out);
    assert_true(log_has(&d, "[participant order] unsafe: innodb_flush_log_at_trx_commit = 2"));
    assert_int_equal(post_checkout(&d, 1001, &resp), 503);
    assert_non_null(strstr(resp, "participant order is not available"));
    free(resp);
    assert_int_equal(tu_order_status(1001), 'I');

    set_flush("1");
    free(wait_readyz(&d, 200, ready));
    assert_true(log_has(&d, "[participant order] preflight passed: taking new work again"));
    assert_int_equal(post_checkout(&d, 1001, &resp), 200);
    free(resp);
    assert_int_equal(tu_order_status(1001), 'P');
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

/* max_prepared_transactions needs a server restart. No prepared transaction may exist when it
 * goes below their number (the server would refuse to start): reset rolled them all back. */
static void set_max_prepared(const char *sql)
{
    char *out = tu_admin_sql("payment", "postgres", sql);
    assert_non_null(out);
    free(out);
    assert_int_equal(tu_sh("%s/scripts/db restart payment >/dev/null", tu_source_dir()), 0);
}

static int lower_max_prepared(void **state)
{
    tu_shop_reset();
    set_max_prepared("ALTER SYSTEM SET max_prepared_transactions = 4");
    return 0;
}

static int restore_max_prepared(void **state)
{
    set_max_prepared("ALTER SYSTEM RESET max_prepared_transactions");
    return 0;
}

/* (c) PostgreSQL with max_prepared_transactions (4) below payment's pool_size (8): not ready,
 * the reason named. (d) The same with allow_unsafe = true: ready, the findings in /readyz, the
 * log loud about it, and a checkout commits. */
static void test_max_prepared_too_small(void **state)
{
    static const char *const unsafe[] = {
        "\"payment\":\"unsafe: max_prepared_transactions = 4 is below pool_size", NULL};
    static const char *const allowed[] = {
        "\"payment\":\"ready, UNSAFE allowed by allow_unsafe: max_prepared_transactions = 4", NULL};
    tu_daemon d;
    char *resp = NULL;

    tu_daemon_init(&d, "pfc", NULL);
    tu_daemon_spawn(&d, NULL);
    free(wait_readyz(&d, 503, unsafe));
    assert_true(log_has(&d, "[participant payment] unsafe: max_prepared_transactions = 4"));
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);

    tu_daemon_init(&d, "pfd", NULL);
    set_participant_key(&d, "payment", "allow_unsafe = true");
    tu_daemon_start(&d, NULL);
    free(wait_readyz(&d, 200, allowed));
    assert_true(log_has(&d, "[participant payment] allow_unsafe = true"));
    assert_true(log_has(&d, "[participant payment] UNSAFE: max_prepared_transactions = 4"));
    assert_true(log_has(&d, "allowed by allow_unsafe"));
    assert_int_equal(post_checkout(&d, 1001, &resp), 200);
    free(resp);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

static void admin(const char *which, const char *db, const char *sql)
{
    char *out = tu_admin_sql(which, db, sql);
    if (!out)
        fail_msg("admin SQL failed on %s/%s: %s", which, db, sql);
    free(out);
}

/* scripts/db start loads the xacoord schema and its grants again (idempotent). */
static int restore_schema(void **state)
{
    assert_int_equal(tu_sh("%s/scripts/db start >/dev/null 2>&1", tu_source_dir()), 0);
    return 0;
}

/* Runs xacoord --init-participants on config; returns its exit code, its stdout and stderr in
 * *out. */
static int init_participants(const char *config, char **out)
{
    char cmd[1024], buf[8192];
    size_t len;
    FILE *p;
    int rc;
    snprintf(cmd, sizeof cmd, "%s --init-participants %s 2>&1", XACOORD_BIN, config);
    p = popen(cmd, "r");
    assert_non_null(p);
    len = fread(buf, 1, sizeof buf - 1, p);
    buf[len] = '\0';
    rc = pclose(p);
    *out = strdup(buf);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* (e) The marker table dropped, then a privilege revoked, under a running daemon: /readyz says
 * what is missing. --init-participants cannot create it with the coordinator's role in the shop's
 * database and says to run the file as an administrator; the administrator's file (scripts/db)
 * makes it ready again. */
static void test_schema_missing(void **state)
{
    static const char *const missing[] = {
        "\"payment\":\"unsafe: table xacoord.marker is missing: run `xacoord "
        "--init-participants CONFIG` or sql/xacoord-postgres.sql\"",
        "\"order\":\"unsafe: table xacoord_marker is missing", NULL};
    static const char *const denied[] = {
        "\"payment\":\"unsafe: the coordinator's role lacks INSERT on xacoord.marker", NULL};
    static const char *const ready[] = {"\"payment\":\"ready\"", "\"order\":\"ready\"", NULL};
    tu_daemon d;
    char *out = NULL;

    tu_daemon_init(&d, "pfe", NULL);
    tu_daemon_start(&d, NULL);
    admin("payment", "payment", "DROP TABLE xacoord.marker");
    admin("order", "shop_order", "DROP TABLE xacoord_marker");
    free(wait_readyz(&d, 503, missing));

    assert_int_equal(init_participants(d.config, &out), 1);
    assert_non_null(strstr(out, "participant payment: cannot create the xacoord schema"));
    assert_non_null(strstr(out, "permission denied for database payment"));
    assert_non_null(strstr(out, "run sql/xacoord-postgres.sql in that database as an "
                                "administrator"));
    assert_non_null(strstr(out, "participant order: cannot create the xacoord schema"));
    assert_non_null(strstr(out, "CREATE command denied"));
    assert_non_null(strstr(out, "participant warehouse (mysql): already has the xacoord schema"));
    free(out);

    restore_schema(state);
    free(wait_readyz(&d, 200, ready));
    admin("payment", "payment", "REVOKE INSERT ON xacoord.marker FROM xacoord");
    free(wait_readyz(&d, 503, denied));
    restore_schema(state);
    free(wait_readyz(&d, 200, ready));
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

/* A configuration of the same servers with the xatest databases, where the coordinator's role
 * may create the schema (it owns xatest on PostgreSQL and has ALL on it on MariaDB). */
static void xatest_config(tu_daemon *d)
{
    tu_daemon_init(d, "pff", NULL);
    assert_int_equal(tu_sh("sed -i -e 's/dbname=payment/dbname=xatest/' "
                           "-e 's/^database = .*/database = xatest/' %s",
                           d->config),
                     0);
}

/* (e, continued) Where the role may, --init-participants creates what is missing, says so, and
 * a second run finds everything in place; a daemon on those databases is then ready. */
static void test_init_creates_schema(void **state)
{
    static const char *const ready[] = {"\"payment\":\"ready\"", "\"order\":\"ready\"",
                                        "\"warehouse\":\"ready\"", NULL};
    tu_daemon d;
    char *out = NULL, *n;
    xatest_config(&d);
    admin("payment", "xatest", "SET client_min_messages = warning; DROP SCHEMA xacoord CASCADE");
    admin("order", "xatest", "DROP TABLE xacoord_marker, xacoord_schema_version");

    assert_int_equal(init_participants(d.config, &out), 0);
    assert_non_null(strstr(out, "participant payment (postgres): created the xacoord schema, "
                                "version 2"));
    assert_non_null(strstr(out, "participant order (mysql): created the xacoord schema"));
    assert_non_null(strstr(out, "participant warehouse (mysql): already has the xacoord schema"));
    free(out);
    n = tu_admin_sql("payment", "xatest", "SELECT count(*) FROM xacoord.marker");
    assert_string_equal(n, "0");
    free(n);
    n = tu_admin_sql("order", "xatest", "SELECT MAX(version) FROM xacoord_schema_version");
    assert_string_equal(n, "2");
    free(n);

    assert_int_equal(init_participants(d.config, &out), 0);
    assert_null(strstr(out, "created"));
    free(out);

    tu_daemon_start(&d, NULL);
    free(wait_readyz(&d, 200, ready));
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_sound_setup_is_ready, reset),
        cmocka_unit_test_setup_teardown(test_flush_log_unsafe, reset, restore_flush),
        cmocka_unit_test_setup_teardown(test_max_prepared_too_small, lower_max_prepared,
                                        restore_max_prepared),
        cmocka_unit_test_setup_teardown(test_schema_missing, reset, restore_schema),
        cmocka_unit_test_teardown(test_init_creates_schema, restore_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
