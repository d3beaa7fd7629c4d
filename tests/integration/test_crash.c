/*
 * Crash and restart against the real servers (docs/design.md section 3, "Recovery"). The daemon is
 * killed at each named step of the protocol, restarted, and must then bring every branch to the
 * journal's outcome: no commit record -> aborted everywhere, a commit record -> committed
 * everywhere. Also: the daemon killed during its own recovery, a connection cut after PREPARE was
 * sent, a database server killed in phase 1 and between prepare and commit, and a second
 * coordinator whose branches are never touched. After each case I1-I5 hold and what the client was
 * told (if anything) is true.
 */
#include "daemon.h"
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Waits until recovery left no prepared branch behind and every invariant holds. */
static void wait_consistent(unsigned timeout_ms)
{
    for (unsigned waited = 0; waited < timeout_ms; waited += 250) {
        if (tu_sh("%s/tests/invariants check >/dev/null 2>&1", tu_source_dir()) == 0)
            return;
        usleep(250000);
    }
    tu_invariants(); /* print what fails */
    fail_msg("invariants do not hold %u ms after restart", timeout_ms);
}

/* 1 committed, 0 not committed (GET says 404), per the restarted daemon. */
static int daemon_outcome(tu_daemon *d, const char *id)
{
    char path[128], *resp = NULL;
    int status;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = tu_http(d->port, "GET", path, NULL, NULL, &resp);
    if (status == 200 && strstr(resp, "\"outcome\":\"committed\"")) {
        free(resp);
        return 1;
    }
    if (status != 404 && !(status == 200 && strstr(resp, "\"outcome\":\"aborted\"")))
        fail_msg("GET %s: %d %s", path, status, resp ? resp : "");
    free(resp);
    return 0;
}

/* The data must say the same as the daemon: committed <=> order 1001 paid, balance 100. */
static void assert_checkout_outcome(int committed)
{
    assert_int_equal(tu_balance(7), committed ? 100 : 200);
    assert_int_equal(tu_order_status(1001), committed ? 'P' : 'I');
}

typedef struct crash_case {
    const char *point;
    int expect; /* 1 committed, 0 aborted, -1 either (the record reached the OS, not the disk) */
} crash_case;

static void run_crash_point(const crash_case *cc)
{
    tu_daemon d;
    char env[96], *body, *resp = NULL;
    const char *envs[] = {env, NULL};
    int status, committed;

    tu_shop_reset();
    snprintf(env, sizeof env, "XACOORD_CRASH_AT=%s", cc->point);
    tu_daemon_init(&d, "cr", NULL);
    tu_daemon_start(&d, envs);
    body = tu_checkout_json("crash-1001", 1001, 7, 100, "SKU-1", 1);
    status = tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    (void)status; /* the client may or may not get an answer: both must be true */
    int ws = tu_daemon_wait_exit(&d, 20000);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("%s: the daemon did not die at the crash point (status %d)", cc->point, ws);
    tu_daemon_start(&d, NULL);
    wait_consistent(20000);
    committed = daemon_outcome(&d, "crash-1001");
    if (cc->expect >= 0 && committed != cc->expect)
        fail_msg("%s: outcome %d, expected %d", cc->point, committed, cc->expect);
    assert_checkout_outcome(committed);
    if (resp && strstr(resp, "\"outcome\":\"committed\""))
        assert_int_equal(committed, 1);
    free(resp);
    /* the retry with the same id tells the same truth and runs nothing twice */
    status = tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    assert_int_equal(status, 200);
    assert_non_null(strstr(resp, committed ? "\"replayed\":true" : "\"replayed\":false"));
    free(resp);
    free(body);
    assert_checkout_outcome(1);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

static void test_crash_matrix(void **state)
{
    static const crash_case cases[] = {
        {"after-work", 0},
        {"after-some-prepares", 0},
        {"before-commit-record", 0},
        {"journal-after-write", -1},
        {"journal-after-sync", 1},
        {"after-commit-record", 1},
        {"after-first-commit-sent", 1},
        {"after-first-commit-ack", 1},
        {"before-done-record", 1},
    };
    /* decision_log = postgres: the decision is the store's row, not a journal record. */
    static const crash_case store_cases[] = {
        {"after-work", 0},
        {"after-some-prepares", 0},
        {"before-commit-record", 0},
        {"store-after-decision-sent", -1},
        {"after-commit-record", 1},
        {"after-first-commit-sent", 1},
        {"after-first-commit-ack", 1},
        {"before-done-record", 1},
    };
    /* ... or the last resource's COMMIT, with the row inside it. */
    static const crash_case lr_cases[] = {
        {"after-work", 0},
        {"after-some-prepares", 0},
        {"before-commit-record", 0},
        {"before-last-resource-commit", 0},
        {"after-commit-record", 1},
        {"after-first-commit-sent", 1},
        {"after-first-commit-ack", 1},
        {"before-done-record", 1},
    };
    const crash_case *cc = tu_store_last_resource() ? lr_cases
                           : tu_store_mode()        ? store_cases
                                                    : cases;
    size_t n = tu_store_last_resource() ? sizeof lr_cases / sizeof lr_cases[0]
               : tu_store_mode()        ? sizeof store_cases / sizeof store_cases[0]
                                        : sizeof cases / sizeof cases[0];
    (void)state;
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "--- crash point %s%s\n", cc[i].point,
                tu_store_mode() ? " (decision store)" : "");
        run_crash_point(&cc[i]);
    }
}

/* Ships order 1001 with a read-only check of the customer's balance on payment: that branch ends
 * at prepare time and takes no part in phase 2 (docs/design.md). */
static char *ship_with_check_json(const char *id)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"id\":\"%s\",\"branches\":["
                 "{\"participant\":\"payment\",\"statements\":[{\"sql\":\"SELECT balance FROM "
                 "account WHERE user_id = $1\",\"params\":[7],\"expect_rows\":1}]},"
                 "{\"participant\":\"order\",\"statements\":[{\"sql\":\"UPDATE orders SET "
                 "status = 'W' WHERE id = ? AND status = 'P'\",\"params\":[1001],"
                 "\"expect_rows\":1}]},"
                 "{\"participant\":\"warehouse\",\"statements\":[{\"sql\":\"UPDATE shipment SET "
                 "status = 'S' WHERE order_id = ? AND status = 'R'\",\"params\":[1001],"
                 "\"expect_rows\":1}]}]}",
                 id) < 0)
        fail_msg("out of memory");
    return s;
}

/* The read-only path through every crash point: the restarted daemon, the data and a retry with
 * the same id agree, and no branch of the read-only participant is ever left prepared. */
static void run_read_only_crash(const crash_case *cc)
{
    tu_daemon d;
    char env[96], *ship = ship_with_check_json("ro-ship"), *resp = NULL;
    char *checkout = tu_checkout_json("ro-1001", 1001, 7, 100, "SKU-1", 1);
    const char *envs[] = {env, NULL};
    int ws, committed;

    tu_shop_reset();
    tu_daemon_init(&d, "ro", NULL);
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", checkout, NULL, &resp), 200);
    free(resp);
    assert_int_equal(tu_daemon_stop(&d), 0);
    snprintf(env, sizeof env, "XACOORD_CRASH_AT=%s", cc->point);
    tu_daemon_start(&d, envs);
    resp = NULL;
    (void)tu_http(d.port, "POST", "/v1/transactions", ship, NULL, &resp);
    ws = tu_daemon_wait_exit(&d, 20000);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("read-only, %s: the daemon did not die at the crash point (status %d)", cc->point,
                 ws);
    tu_daemon_start(&d, NULL);
    wait_consistent(20000);
    committed = daemon_outcome(&d, "ro-ship");
    if (cc->expect >= 0 && committed != cc->expect)
        fail_msg("read-only, %s: outcome %d, expected %d", cc->point, committed, cc->expect);
    assert_int_equal(tu_order_status(1001), committed ? 'W' : 'P');
    if (resp && strstr(resp, "\"outcome\":\"committed\""))
        assert_int_equal(committed, 1);
    free(resp);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", ship, NULL, &resp), 200);
    free(resp);
    assert_int_equal(tu_order_status(1001), 'W');
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    free(ship);
    free(checkout);
}

static void test_read_only_crash_matrix(void **state)
{
    static const crash_case cases[] = {
        {"after-work", 0},          {"after-some-prepares", 0},     {"before-commit-record", 0},
        {"after-commit-record", 1}, {"after-first-commit-sent", 1}, {"after-first-commit-ack", 1},
        {"before-done-record", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fprintf(stderr, "--- read-only, crash point %s\n", cases[i].point);
        run_read_only_crash(&cases[i]);
    }
}

/* Killed after the decision, then killed again while recovering: the second start finishes. */
static void test_crash_during_recovery(void **state)
{
    tu_daemon d;
    const char *crash[] = {"XACOORD_CRASH_AT=after-commit-record", NULL};
    const char *again[] = {"XACOORD_CRASH_AT=recovery-after-resolve", NULL};
    char *body = tu_checkout_json("rec-1001", 1001, 7, 100, "SKU-1", 1), *resp = NULL;
    int ws;

    tu_shop_reset();
    tu_daemon_init(&d, "rc", NULL);
    tu_daemon_start(&d, crash);
    tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    ws = tu_daemon_wait_exit(&d, 20000);
    assert_true(WIFSIGNALED(ws));
    tu_daemon_spawn(&d, again);
    ws = tu_daemon_wait_exit(&d, 30000);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    tu_daemon_start(&d, NULL);
    wait_consistent(20000);
    assert_int_equal(daemon_outcome(&d, "rec-1001"), 1);
    assert_checkout_outcome(1);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    free(body);
}

/* The lost payment reply: PREPARE reached the server, its answer never came back. */
static void test_connection_cut_after_prepare(void **state)
{
    tu_daemon d;
    const char *fault[] = {"XACOORD_FAULT_AT=cut-after-prepare", NULL};
    char *body = tu_checkout_json("cut-1001", 1001, 7, 100, "SKU-1", 1), *resp = NULL;
    int status;

    tu_shop_reset();
    tu_daemon_init(&d, "ct", NULL);
    tu_daemon_start(&d, fault);
    status = tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    assert_true(status == 503 || status == 409);
    assert_non_null(strstr(resp, "\"outcome\":\"aborted\""));
    free(resp);
    wait_consistent(20000); /* any branch prepared behind our back is rolled back */
    assert_checkout_outcome(0);
    /* and the client's retry with the same id commits exactly once */
    status = tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    assert_int_equal(status, 200);
    free(resp);
    assert_checkout_outcome(1);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    free(body);
}

/* ---- database servers killed mid-transaction ------------------------------------------- */

/* payment prepares at once; warehouse waits for the row lock; meanwhile `victim` dies. */
static void run_server_kill(const char *victim, int expect_committed)
{
    tu_daemon d;
    tu_poster p = {&d, NULL, 0, NULL};
    pthread_t th;
    char *body = tu_checkout_json(NULL, 1001, 7, 100, "SKU-1", 1);

    tu_shop_reset();
    tu_daemon_init(&d, "dk", NULL);
    tu_daemon_start(&d, NULL);
    p.body = body;
    tu_hold_stock_row(1.5);
    assert_int_equal(pthread_create(&th, NULL, tu_post_thread, &p), 0);
    usleep(400000);
    assert_int_equal(tu_sh("%s/scripts/db kill %s >/dev/null", tu_source_dir(), victim), 0);
    pthread_join(th, NULL);
    assert_int_equal(tu_sh("%s/scripts/db restart %s >/dev/null", tu_source_dir(), victim), 0);
    if (expect_committed) {
        /* the decision was durable: the answer is "committed", with the dead one pending */
        assert_int_equal(p.status, 200);
        assert_non_null(strstr(p.resp, "\"pending\":[\"payment\"]"));
    } else {
        assert_true(p.status == 503 || p.status == 409);
        assert_non_null(strstr(p.resp, "\"outcome\":\"aborted\""));
    }
    wait_consistent(30000);
    assert_checkout_outcome(expect_committed);
    free(p.resp);
    free(body);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

/* Phase 1: the warehouse dies while its statement waits: everything rolls back. */
static void test_server_killed_in_phase1(void **state)
{
    run_server_kill("warehouse", 0);
}

/* After payment prepared, before its COMMIT: phase 2 retries until the server is back. With a
 * decision store on that same server (store mode), the store dies with it before the decision:
 * nothing can be decided, and everything rolls back. */
static void test_server_killed_before_commit(void **state)
{
    run_server_kill("payment", !tu_store_mode());
}

/* ---- two coordinators on the same databases --------------------------------------------- */

static int prepared_with_prefix(const char *prefix)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE '%s%%'",
             prefix);
    return (int)tu_shop_long("payment", sql);
}

static void test_other_node_untouched(void **state)
{
    tu_daemon a, b;
    const char *crash[] = {"XACOORD_CRASH_AT=after-commit-record", NULL};
    char *body = tu_checkout_json("node-a", 1001, 7, 100, "SKU-1", 1), *resp = NULL;

    tu_shop_reset();
    tu_daemon_init(&a, "na", NULL);
    tu_daemon_start(&a, crash);
    tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    tu_daemon_wait_exit(&a, 20000);
    /* (the last resource, payment, committed as the decision: it was never prepared) */
    assert_int_equal(prepared_with_prefix("xa2.na."), tu_store_last_resource() ? 0 : 1);

    tu_daemon_init(&b, "nb", NULL);
    tu_daemon_start(&b, NULL);
    if (tu_store_mode()) {
        /* With a shared decision store, b takes a's node once its lease lapsed and commits
         * a's branches by a's decision row (failover.h); a need not come back. */
        wait_consistent(20000);
        assert_int_equal(prepared_with_prefix("xa2.na."), 0);
        assert_checkout_outcome(1);
        assert_int_equal(tu_daemon_stop(&b), 0);
        tu_daemon_cleanup(&b);
        tu_daemon_cleanup(&a);
        free(body);
        return;
    }
    /* node b runs its scans (every second) and work of its own; a's branches stay as they are */
    sleep(3);
    assert_int_equal(prepared_with_prefix("xa2.na."), 1);
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&b);

    tu_daemon_start(&a, NULL);
    wait_consistent(20000);
    assert_int_equal(prepared_with_prefix("xa2.na."), 0);
    assert_checkout_outcome(1);
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    free(body);
}

/* A second live coordinator with the same node_id would roll back the first one's branches: it
 * must refuse to use the participants, and say why. */
static void test_same_node_id_refused(void **state)
{
    tu_daemon a, b;
    char *resp = NULL, *body = tu_checkout_json("dup-1", 1001, 7, 100, "SKU-1", 1);
    tu_shop_reset();
    tu_daemon_init(&a, "dup", NULL);
    tu_daemon_start(&a, NULL);
    tu_daemon_init(&b, "dup", NULL);
    tu_daemon_spawn(&b, NULL);
    if (tu_store_mode()) {
        /* The node's lease in the store is live and renewed: b waits for it, then gives up. */
        int ws = tu_daemon_wait_exit(&b, 4 * TU_STORE_LEASE_MS + 10000);
        assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) != 0);
        assert_int_equal(tu_sh("grep -q 'another coordinator runs with this node_id' %s", b.log),
                         0);
        assert_int_equal(tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp), 200);
        free(resp);
        free(body);
        assert_int_equal(tu_daemon_stop(&a), 0);
        tu_daemon_cleanup(&a);
        tu_daemon_cleanup(&b);
        return;
    }
    sleep(3);
    assert_int_equal(tu_http(b.port, "GET", "/readyz", NULL, NULL, &resp), 503);
    assert_non_null(strstr(resp, "another coordinator"));
    free(resp);
    assert_int_equal(tu_http(b.port, "POST", "/v1/transactions", body, NULL, &resp), 503);
    free(resp);
    assert_int_equal(tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp), 200);
    free(resp);
    assert_int_equal(tu_daemon_stop(&b), 0);
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
    assert_int_equal(tu_invariants(), 0);
}

/* ---- in-doubt tooling ------------------------------------------------------------------- */

/* A branch recovery cannot finish (prepared by another role, so the coordinator may not touch
 * it) is listed with the journal's decision; resolving it against the journal is refused. */
static void test_in_doubt_listing_and_resolution(void **state)
{
    tu_daemon d;
    char *resp = NULL, *out, id[16], gtrid[64], sql[200], path[128];

    tu_shop_reset();
    tu_daemon_init(&d, "id", NULL);
    tu_daemon_start(&d, NULL); /* boot 1 makes the data directory's identity */
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_identity(&d, id);
    snprintf(gtrid, sizeof gtrid, "xa2.id.%s.1.2r", id); /* boot 1 is over: a dead branch */
    snprintf(sql, sizeof sql,
             "BEGIN; UPDATE account SET balance = balance WHERE user_id = 8; "
             "PREPARE TRANSACTION '%s.payment'",
             gtrid);
    out = tu_admin_sql("payment", "payment", sql);
    free(out);
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "GET", "/v1/in-doubt", NULL, NULL, &resp), 200);
    if (!strstr(resp, gtrid) || !strstr(resp, "\"decision\":\"abort\""))
        fail_msg("in-doubt list: %s", resp);
    free(resp);
    /* no commit record: commit contradicts the journal */
    snprintf(path, sizeof path, "/v1/in-doubt/%s/commit", gtrid);
    assert_int_equal(tu_http(d.port, "POST", path, "", NULL, &resp), 409);
    free(resp);
    /* rollback is allowed, and the answer says what each participant did: the superuser's
     * branch is refused to the coordinator's role, so the answer is no success */
    snprintf(path, sizeof path, "/v1/in-doubt/%s/rollback", gtrid);
    assert_int_equal(tu_http(d.port, "POST", path, "", NULL, &resp), 502);
    assert_non_null(strstr(resp, "\"payment\":\"error"));
    free(resp);
    assert_int_equal(
        tu_http(d.port, "POST", "/v1/in-doubt/xa1.other.1.1/rollback", "", NULL, &resp), 404);
    free(resp);
    /* the owner finishes it; the next scan (every second here) forgets it */
    snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s.payment'", gtrid);
    out = tu_admin_sql("payment", "payment", sql);
    free(out);
    sleep(3);
    assert_int_equal(tu_http(d.port, "GET", "/v1/in-doubt", NULL, NULL, &resp), 200);
    assert_non_null(strstr(resp, "\"branches\":[]"));
    free(resp);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_only_crash_matrix),
        cmocka_unit_test(test_crash_matrix),
        cmocka_unit_test(test_crash_during_recovery),
        cmocka_unit_test(test_connection_cut_after_prepare),
        cmocka_unit_test(test_server_killed_in_phase1),
        cmocka_unit_test(test_server_killed_before_commit),
        cmocka_unit_test(test_other_node_untouched),
        cmocka_unit_test(test_same_node_id_refused),
        cmocka_unit_test(test_in_doubt_listing_and_resolution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
