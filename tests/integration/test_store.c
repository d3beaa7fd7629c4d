/*
 * The decision store (decision_log = postgres, docs/design.md section 3 "Decision store") against
 * the real servers: the decision row is written before phase 2; any coordinator sharing the store
 * answers GET, replay and 422 for any id; a node whose epoch was raised decides nothing and
 * stops; the same id sent to two coordinators at once commits once and both answers agree; a
 * restart of a node waits for its lease only while the crashed process's lease lasts.
 */
#include "daemon.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *store_sql(const char *sql) { return tu_admin_sql("payment", "xatest", sql); }

/* The store's view of an id: "commit|<node>" or "abort|<node>", or "" when it has no row. */
static char *store_row_of(const char *id)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT outcome || '|' || node_id FROM xacoord_decisions WHERE client_id = '%s'", id);
    return store_sql(sql);
}

/* Polls (bounded) until the store holds a row for id starting with want. */
static void wait_row(const char *id, const char *want, unsigned timeout_ms)
{
    for (unsigned waited = 0;; waited += 100) {
        char *row = store_row_of(id);
        bool ok = row && strncmp(row, want, strlen(want)) == 0;
        if (ok || waited >= timeout_ms) {
            if (!ok)
                fail_msg("store row of %s is '%s', expected '%s...'", id, row ? row : "",
                         want);
            free(row);
            return;
        }
        free(row);
        usleep(100000);
    }
}

static void expect(int status, int want, char *resp, const char *needle)
{
    if (status != want || (needle && (!resp || !strstr(resp, needle))))
        fail_msg("got %d %s; expected %d with %s", status, resp ? resp : "", want,
                 needle ? needle : "-");
    free(resp);
}

/* POSTs body to d and checks the status and a piece of the answer. */
static void post(tu_daemon *d, const char *body, int want, const char *needle)
{
    char *resp = NULL;
    int status = tu_http(d->port, "POST", "/v1/transactions", body, NULL, &resp);
    expect(status, want, resp, needle);
}

static void get(tu_daemon *d, const char *id, int want, const char *needle)
{
    char path[128], *resp = NULL;
    int status;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = tu_http(d->port, "GET", path, NULL, NULL, &resp);
    expect(status, want, resp, needle);
}

/* Node a decides; node b, which never saw the id, answers for it from the store. */
static void test_any_node_answers(void **state)
{
    tu_daemon a, b;
    char *row;
    char *body = tu_checkout_json("st-1", 1001, 7, 100, "SKU-1", 1);
    char *other = tu_checkout_json("st-1", 1002, 7, 100, "SKU-1", 1);
    char *poor = tu_checkout_json("st-2", 1002, 7, 500, "SKU-1", 1);
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "sa", NULL);
    tu_daemon_init(&b, "sb", NULL);
    tu_daemon_start(&a, NULL);
    tu_daemon_start(&b, NULL);

    post(&a, body, 200, "\"outcome\":\"committed\"");
    /* written before phase 2, by a's node */
    row = store_row_of("st-1");
    assert_string_equal(row, "commit|sa");
    free(row);

    get(&b, "st-1", 200, "\"outcome\":\"committed\"");
    post(&b, body, 200, "\"replayed\":true");
    post(&b, other, 422, "different request");
    assert_int_equal(tu_balance(7), 100); /* once */

    /* a business abort is recorded (lazily) and replayed by the other node */
    post(&a, poor, 409, "insufficient balance");
    wait_row("st-2", "abort|sa", 5000);
    get(&b, "st-2", 200, "\"outcome\":\"aborted\"");
    post(&b, poor, 409, "\"replayed\":true");
    get(&b, "st-none", 404, NULL);

    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&a), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    /* a clean stop hands the node back: no holder, and a restart need not wait */
    row = store_sql("SELECT holder FROM xacoord_nodes WHERE node_id = 'sa'");
    assert_string_equal(row, "");
    free(row);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
    free(other);
    free(poor);
}

/* Another process raised the node's epoch (a takeover): the next decision inserts nothing, the
 * transaction aborts everywhere, and the daemon stops acting and exits by itself. */
static void test_fenced_node_decides_nothing(void **state)
{
    tu_daemon a;
    char *out;
    char *body = tu_checkout_json("fenced-1", 1001, 7, 100, "SKU-1", 1);
    int ws;
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "sf", NULL);
    tu_daemon_start(&a, NULL);
    out = store_sql("UPDATE xacoord_nodes SET epoch = epoch + 1 WHERE node_id = 'sf'");
    free(out);
    post(&a, body, 503, "\"outcome\":\"aborted\"");
    out = store_row_of("fenced-1");
    assert_string_equal(out, "");
    free(out);
    /* the next renew finds the epoch gone: it stops like SIGTERM stops it */
    ws = tu_daemon_wait_exit(&a, 10 * TU_STORE_LEASE_MS);
    assert_true(WIFEXITED(ws));
    assert_int_equal(tu_sh("grep -q 'was taken over' %s", a.log), 0);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_invariants(), 0);
    tu_daemon_cleanup(&a);
    free(body);
}

/* The same id sent to two coordinators at the same moment: one commit, and both answers say so
 * with the same xid (the loser answers from the winner's row). */
static void test_same_id_on_two_nodes(void **state)
{
    tu_daemon a, b;
    char *body = tu_checkout_json("twice-1", 1001, 7, 100, "SKU-1", 1);
    tu_poster pa = {&a, body, 0, NULL}, pb = {&b, body, 0, NULL};
    pthread_t ta, tb;
    const char *xa, *xb;
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "ta", NULL);
    tu_daemon_init(&b, "tb", NULL);
    tu_daemon_start(&a, NULL);
    tu_daemon_start(&b, NULL);
    assert_int_equal(pthread_create(&ta, NULL, tu_post_thread, &pa), 0);
    assert_int_equal(pthread_create(&tb, NULL, tu_post_thread, &pb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    if (pa.status != 200 || pb.status != 200)
        fail_msg("answers %d %s / %d %s", pa.status, pa.resp ? pa.resp : "", pb.status,
                 pb.resp ? pb.resp : "");
    assert_non_null(strstr(pa.resp, "\"outcome\":\"committed\""));
    assert_non_null(strstr(pb.resp, "\"outcome\":\"committed\""));
    xa = strstr(pa.resp, "\"xid\":\"");
    xb = strstr(pb.resp, "\"xid\":\"");
    assert_non_null(xa);
    assert_non_null(xb);
    assert_memory_equal(xa, xb, strcspn(xa + 7, "\"") + 7);
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&a), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(pa.resp);
    free(pb.resp);
    free(body);
}

/* Killed with -9 and started again at once: the new process waits for the dead one's lease to
 * lapse (at most lease_ms), raises the epoch and commits what the store decided. */
static void test_restart_waits_for_lease(void **state)
{
    tu_daemon a;
    const char *crash[] = {"XACOORD_CRASH_AT=after-commit-record", NULL};
    char *body = tu_checkout_json("lease-1", 1001, 7, 100, "SKU-1", 1), *resp = NULL, *epoch;
    struct timespec t0, t1;
    double took;
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "sl", NULL);
    tu_daemon_start(&a, crash);
    tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    tu_daemon_wait_exit(&a, 20000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tu_daemon_start(&a, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "restart took %.2f s (lease %u ms)\n", took, TU_STORE_LEASE_MS);
    assert_int_equal(tu_sh("grep -q 'waiting for the lease to lapse' %s", a.log), 0);
    epoch = store_sql("SELECT epoch FROM xacoord_nodes WHERE node_id = 'sl'");
    assert_string_equal(epoch, "2");
    free(epoch);
    for (int i = 0; i < 100 && tu_balance(7) != 100; i++)
        usleep(100000);
    assert_int_equal(tu_balance(7), 100);
    get(&a, "lease-1", 200, "\"outcome\":\"committed\"");
    assert_int_equal(tu_daemon_stop(&a), 0);
    assert_int_equal(tu_invariants(), 0);
    tu_daemon_cleanup(&a);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_node_answers),
        cmocka_unit_test(test_fenced_node_decides_nothing),
        cmocka_unit_test(test_same_id_on_two_nodes),
        cmocka_unit_test(test_restart_waits_for_lease),
    };
    setenv("XA_TEST_DECISION_LOG", "postgres", 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
