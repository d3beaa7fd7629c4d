/*
 * Markers (docs/design.md section 3, "Markers"): every branch writes a marker row inside itself,
 * so when a branch the coordinator must commit is gone ("not found" and no longer listed), the
 * marker tells a lost reply (marker present: it committed) from a branch someone rolled back
 * against the decision (marker absent: lost work). The second is a data-loss alarm: logged,
 * counted in /metrics, named "heuristic" in GET and listed by GET /v1/heuristics; the first is
 * no alarm at all. Both are driven through a crash right after the commit decision, against the
 * real servers.
 */
#include "daemon.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Starts a daemon that dies right after its commit decision is durable, and sends a checkout. */
static void commit_then_crash(tu_daemon *d, const char *id, const char *point)
{
    char env[96], *body, *resp = NULL;
    const char *envs[] = {env, NULL};
    int ws;
    tu_shop_reset();
    snprintf(env, sizeof env, "XACOORD_CRASH_AT=%s", point);
    tu_daemon_init(d, "mk", NULL);
    tu_daemon_start(d, envs);
    body = tu_checkout_json(id, 1001, 7, 100, "SKU-1", 1);
    (void)tu_http(d->port, "POST", "/v1/transactions", body, NULL, &resp);
    free(body);
    free(resp);
    ws = tu_daemon_wait_exit(d, 20000);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("the daemon did not die at %s (status %d)", point, ws);
}

/* The GET answer of id once recovery finished it (no participant pending any more). */
static char *settled_answer(tu_daemon *d, const char *id)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    for (int i = 0; i < 120; i++) {
        free(resp);
        resp = NULL;
        if (tu_http(d->port, "GET", path, NULL, NULL, &resp) == 200 &&
            strstr(resp, "\"pending\":[]"))
            return resp;
        usleep(250000);
    }
    fail_msg("%s is still pending: %s", id, resp ? resp : "(no answer)");
    return NULL;
}

static long heuristic_count(tu_daemon *d, const char *participant)
{
    char *resp = NULL, key[128], *p;
    long n = 0;
    assert_int_equal(tu_http(d->port, "GET", "/metrics", NULL, NULL, &resp), 200);
    snprintf(key, sizeof key, "xacoord_heuristic_total{participant=\"%s\"} ", participant);
    if ((p = strstr(resp, key)))
        n = strtol(p + strlen(key), NULL, 10);
    free(resp);
    return n;
}

/* A DBA rolls back the payment branch of a transaction the coordinator decided to commit: the
 * money stays with the customer while the order is paid. The coordinator cannot undo that, but
 * it must never call it success. */
static void test_rollback_against_commit_raises_data_loss(void **state)
{
    tu_daemon d;
    char *resp = NULL, *prepared;
    commit_then_crash(&d, "mk-loss", "after-commit-record");
    prepared = tu_admin_sql("payment", "payment",
                            "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'xa%.mk.%'");
    assert_non_null(prepared);
    assert_true(strlen(prepared) > 0);
    {
        char sql[300];
        snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s'", prepared);
        free(tu_admin_sql("payment", "payment", sql));
    }
    free(prepared);
    tu_daemon_start(&d, NULL);
    resp = settled_answer(&d, "mk-loss");
    assert_non_null(strstr(resp, "\"heuristic\":[\"payment\"]"));
    free(resp);
    assert_int_equal(heuristic_count(&d, "payment"), 1);
    assert_int_equal(tu_http(d.port, "GET", "/v1/heuristics", NULL, NULL, &resp), 200);
    assert_non_null(strstr(resp, "\"id\":\"mk-loss\""));
    assert_non_null(strstr(resp, "\"data_loss\":true"));
    free(resp);
    assert_int_equal(tu_sh("grep -q 'DATA LOSS' %s", d.log), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    tu_shop_reset(); /* the shop's invariants cannot hold after a heuristic rollback */
}

/* The first COMMIT PREPARED landed and the daemon died before it heard so: after the restart
 * that branch is gone, and its marker says it committed - no alarm, the answer is "committed". */
static void test_lost_commit_reply_is_recognised(void **state)
{
    tu_daemon d;
    char *resp;
    commit_then_crash(&d, "mk-lost", "after-first-commit-ack");
    tu_daemon_start(&d, NULL);
    resp = settled_answer(&d, "mk-lost");
    assert_non_null(strstr(resp, "\"outcome\":\"committed\""));
    assert_null(strstr(resp, "\"heuristic\""));
    free(resp);
    assert_int_equal(heuristic_count(&d, "payment") + heuristic_count(&d, "order") +
                         heuristic_count(&d, "warehouse"),
                     0);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollback_against_commit_raises_data_loss),
        cmocka_unit_test(test_lost_commit_reply_is_recognised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
