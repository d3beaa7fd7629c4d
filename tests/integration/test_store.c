/*
 * The decision store (decision_log = postgres, docs/design.md section 3 "Decision store") against
 * the real servers: the decision row is written before phase 2; any coordinator sharing the store
 * answers GET, replay and 422 for any id; a node whose epoch was raised decides nothing and
 * stops; the same id sent to two coordinators at once commits once and both answers agree; a
 * restart of a node waits for its lease only while the crashed process's lease lasts; a node
 * stopped cleanly with work left is handed over to a peer at once, and one with nothing left is
 * not.
 */
#include "daemon.h"
#include "faultproxy.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *store_sql(const char *sql)
{
    return tu_admin_sql("payment", "xatest", sql);
}

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
                fail_msg("store row of %s is '%s', expected '%s...'", id, row ? row : "", want);
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

/* The epoch's row lock alone fences: with the lease checks switched off (a test-only fault
 * point), a decision after another process raised the epoch inserts nothing and the
 * transaction aborts everywhere. */
static void test_epoch_alone_fences(void **state)
{
    tu_daemon a;
    const char *fault[] = {"XACOORD_FAULT_AT=store-ignore-lease", NULL};
    char *body = tu_checkout_json("fenced-0", 1001, 7, 100, "SKU-1", 1), *out;
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "se", NULL);
    tu_daemon_start(&a, fault);
    out = store_sql("UPDATE xacoord_nodes SET epoch = epoch + 1 WHERE node_id = 'se'");
    free(out);
    post(&a, body, 503, "epoch was raised");
    out = store_row_of("fenced-0");
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    free(body);
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
    /* 503 either way: the decision found the epoch moved, or the renew did first and the
     * daemon is already stopping */
    post(&a, body, 503, NULL);
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

static void retry_transient(tu_poster *p)
{
    if (p->status == 200 || !p->resp || !strstr(p->resp, "\"retryable\":true"))
        return;
    free(p->resp);
    p->resp = NULL;
    p->status = tu_http(p->d->port, "POST", "/v1/transactions", p->body, NULL, &p->resp);
    assert_non_null(strstr(p->resp, "\"replayed\":true"));
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
    /* The loser may time out on the winner's locks: a transient abort, which says "retry". The
     * retry must then get the winner's answer. */
    retry_transient(&pa);
    retry_transient(&pb);
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

static long prepared_anywhere(const char *prefix)
{
    return tu_prepared("payment", prefix) + tu_prepared("order", prefix) +
           tu_prepared("warehouse", prefix);
}

/* Polls (bounded) until no prepared branch of prefix is left anywhere and I1-I5 hold. */
static void wait_resolved(const char *prefix, unsigned timeout_ms)
{
    for (unsigned waited = 0;; waited += 250) {
        long left = prepared_anywhere(prefix);
        if (left == 0 && tu_sh("%s/tests/invariants check >/dev/null 2>&1", tu_source_dir()) == 0)
            return;
        if (waited >= timeout_ms)
            fail_msg("%ld branches of %s still prepared after %u ms", left, prefix, timeout_ms);
        usleep(250000);
    }
}

/* Node fa dies (kill -9 at a crash point) and never comes back; fb, serving checkouts of its
 * own meanwhile, takes fa's node once its lease lapsed and resolves fa's branches by the store:
 * after the decision row (mid-phase 2) they commit, before it (mid-phase 1) they roll back. A
 * client retrying the same id against fb gets the truth. */
static void run_takeover(const char *point, bool committed)
{
    tu_daemon a, b;
    char env[96], *resp = NULL, *row;
    const char *crash[] = {env, NULL};
    char *body = tu_checkout_json("fo-1", 1001, 7, 100, "SKU-1", 1);
    char *own = tu_checkout_json(NULL, 1004, 8, 100, "SKU-3", 2);
    struct timespec t0, t1;

    tu_shop_reset();
    snprintf(env, sizeof env, "XACOORD_CRASH_AT=%s", point);
    tu_daemon_init(&a, "fa", NULL);
    tu_daemon_init(&b, "fb", NULL);
    tu_daemon_start(&a, crash);
    tu_daemon_start(&b, NULL);
    tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    assert_true(WIFSIGNALED(tu_daemon_wait_exit(&a, 20000)));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_true(prepared_anywhere("xa2.fa.") > 0);
    post(&b, own, 200, "\"outcome\":\"committed\""); /* b's own work goes on */
    wait_resolved("xa2.fa.", 10 * TU_STORE_LEASE_MS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "%s: fa's branches resolved %.2f s after its death (lease %u ms)\n", point,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            TU_STORE_LEASE_MS);
    assert_int_equal(tu_balance(7), committed ? 100 : 200);
    assert_int_equal(tu_order_status(1001), committed ? 'P' : 'I');
    if (committed) {
        get(&b, "fo-1", 200, "\"outcome\":\"committed\"");
        post(&b, body, 200, "\"replayed\":true");
    } else {
        get(&b, "fo-1", 404, NULL);
        post(&b, body, 200, "\"replayed\":false"); /* never decided: runs now, once */
    }
    assert_int_equal(tu_balance(7), 100);
    /* handed back once resolved */
    row = store_sql("SELECT holder FROM xacoord_nodes WHERE node_id = 'fa'");
    assert_string_equal(row, "");
    free(row);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
    free(own);
}

static void test_takeover_mid_phase2(void **state)
{
    (void)state;
    run_takeover("after-commit-record", true);
}

static void test_takeover_mid_phase1(void **state)
{
    (void)state;
    run_takeover("after-some-prepares", false);
}

/* Node pa is paused (SIGSTOP) in phase 1 past its lease; pb takes its node over and rolls back
 * what pa prepared. Resumed (SIGCONT), pa decides nothing for the node it lost: its checkout is
 * not committed, it stops by itself, and the data stay consistent. */
static void test_paused_node_does_not_act(void **state)
{
    tu_daemon a, b;
    char *body = tu_checkout_json("paused-1", 1001, 7, 100, "SKU-1", 1);
    tu_poster p = {&a, body, 0, NULL};
    pthread_t th;
    int ws;
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "pa", NULL);
    tu_daemon_init(&b, "pb", NULL);
    tu_daemon_start(&a, NULL);
    tu_daemon_start(&b, NULL);
    tu_hold_stock_row(2.0); /* the warehouse branch waits; payment and order prepare */
    assert_int_equal(pthread_create(&th, NULL, tu_post_thread, &p), 0);
    for (int i = 0; i < 50 && tu_prepared("payment", "xa2.pa.") == 0; i++)
        usleep(50000);
    assert_int_equal(tu_prepared("payment", "xa2.pa."), 1);
    kill(a.pid, SIGSTOP);
    /* pb takes pa's node after the lease and rolls back the payment branch (PostgreSQL lets any
     * session do that; MariaDB refuses while pa's session holds its branch) */
    for (int i = 0; i < 8 * TU_STORE_LEASE_MS / 100 && tu_prepared("payment", "xa2.pa.") != 0; i++)
        usleep(100000);
    assert_int_equal(tu_prepared("payment", "xa2.pa."), 0);
    kill(a.pid, SIGCONT);
    pthread_join(th, NULL);
    if (p.status == 200)
        fail_msg("the paused node committed after losing its node: %s", p.resp);
    ws = tu_daemon_wait_exit(&a, 20000);
    assert_true(WIFEXITED(ws));
    assert_int_equal(tu_sh("grep -q 'was taken over' %s", a.log), 0);
    wait_resolved("xa2.pa.", 10 * TU_STORE_LEASE_MS);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_order_status(1001), 'I');
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(p.resp);
    free(body);
}

/* Last-resource commit ([decision_store] participant = payment, the store in payment's database):
 * payment is never prepared; its COMMIT, with the decision row inside, is the decision. */
static void test_last_resource(void **state)
{
    tu_daemon a, b;
    const char *crash[] = {"XACOORD_CRASH_AT=after-commit-record", NULL};
    char *body = tu_checkout_json("lr-1", 1001, 7, 100, "SKU-1", 1), *resp = NULL, *row;
    (void)state;

    setenv("XA_TEST_DECISION_LOG", "postgres-lr", 1);
    tu_shop_reset();
    tu_daemon_init(&a, "la", NULL);
    tu_daemon_init(&b, "lb", NULL);
    tu_daemon_start(&a, crash);
    tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    assert_true(WIFSIGNALED(tu_daemon_wait_exit(&a, 20000)));
    /* the decision is payment's own commit: debited, never prepared, the row beside it; the
     * other two wait prepared */
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_prepared("payment", "xa2.la."), 0);
    assert_int_equal(tu_prepared("order", "xa2.la.") + tu_prepared("warehouse", "xa2.la."), 2);
    row = tu_admin_sql("payment", "payment",
                       "SELECT outcome || '|' || pending FROM xacoord_decisions "
                       "WHERE client_id = 'lr-1'");
    assert_string_equal(row, "commit|order,warehouse");
    free(row);
    /* b takes la's node and commits the rest; the retry gets the truth */
    tu_daemon_start(&b, NULL);
    wait_resolved("xa2.la.", 10 * TU_STORE_LEASE_MS);
    assert_int_equal(tu_order_status(1001), 'P');
    post(&b, body, 200, "\"replayed\":true");
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
    setenv("XA_TEST_DECISION_LOG", "postgres", 1);
}

/* The last resource's COMMIT answer is lost (the connection cut right after it went out): the
 * transaction id read before it settles what happened; the client hears the truth. */
static void test_last_resource_lost_commit_answer(void **state)
{
    tu_daemon a;
    const char *fault[] = {"XACOORD_FAULT_AT=cut-after-lr-commit", NULL};
    char *body = tu_checkout_json("lr-2", 1001, 7, 100, "SKU-1", 1), *resp = NULL;
    int status;
    (void)state;

    setenv("XA_TEST_DECISION_LOG", "postgres-lr", 1);
    tu_shop_reset();
    tu_daemon_init(&a, "lc", NULL);
    tu_daemon_start(&a, fault);
    status = tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    fprintf(stderr, "answer after the lost COMMIT answer: %d %.120s\n", status, resp ? resp : "");
    assert_true(status == 200 || status == 503);
    wait_resolved("xa2.lc.", 10000);
    if (status == 200) {
        assert_non_null(strstr(resp, "\"outcome\":\"committed\""));
        assert_int_equal(tu_balance(7), 100);
        assert_int_equal(tu_order_status(1001), 'P');
    } else {
        assert_non_null(strstr(resp, "\"outcome\":\"aborted\""));
        assert_int_equal(tu_balance(7), 200);
        assert_int_equal(tu_order_status(1001), 'I');
    }
    assert_int_equal(tu_sh("grep -q 'lost COMMIT answer of payment' %s", a.log), 0);
    free(resp);
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    free(body);
    setenv("XA_TEST_DECISION_LOG", "postgres", 1);
}

/* ---- clean stop: handed back or handed over ---------------------------------------------- */

/* Fault proxies in front of payment and the warehouse, on XA_FAULT_PROXY_PORT and the port two
 * above it (default 28401), for the node that is to leave work behind. */
static fp_proxy *pay_proxy, *wh_proxy;

static void proxies_start(void)
{
    const char *base = getenv("XA_FAULT_PROXY_PORT");
    int port = base ? atoi(base) : 28401;
    pay_proxy = fp_start(FP_POSTGRES, port, atoi(tu_env("XA_PG_PORT")));
    wh_proxy = fp_start(FP_MYSQL, port + 2, atoi(tu_env("XA_WAREHOUSE_PORT")));
    assert_non_null(pay_proxy);
    assert_non_null(wh_proxy);
}

static void proxies_stop(void)
{
    fp_stop(pay_proxy);
    fp_stop(wh_proxy);
    pay_proxy = wh_proxy = NULL;
}

/* A node whose payment and warehouse go through the proxies, answering a commit 1 s after its
 * decision with what is still pending, and with a drain limit of 1 s. */
static void init_proxied(tu_daemon *d, const char *node)
{
    char port[16];
    const char *base = getenv("XA_FAULT_PROXY_PORT");
    int first = base ? atoi(base) : 28401;
    tu_daemon_init(d, node, NULL);
    tu_daemon_set_key(d, "coordinator", "commit_wait_ms", "1000");
    tu_daemon_set_key(d, "coordinator", "drain_limit_ms", "1000");
    /* phase 1 must outlive the drain: the stop, not a timeout, drops the transaction */
    tu_daemon_set_key(d, "coordinator", "default_timeout_ms", "60000");
    snprintf(port, sizeof port, "%d", first);
    tu_daemon_set_key(d, "participant.payment", "port", port);
    snprintf(port, sizeof port, "%d", first + 2);
    tu_daemon_set_key(d, "participant.warehouse", "port", port);
}

static double since_s(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void expect_node_row(const char *node, const char *want)
{
    char sql[160], *row;
    snprintf(sql, sizeof sql,
             "SELECT epoch || '|' || holder FROM xacoord_nodes WHERE node_id = '%s'", node);
    row = store_sql(sql);
    if (!row || strcmp(row, want) != 0)
        fail_msg("node %s's row is '%s', expected '%s'", node, row ? row : "", want);
    free(row);
}

/* On a fresh shop, node an (through the proxies; env for its start) and node bn; an's COMMIT
 * PREPARED on payment hangs, and body (unless NULL) commits on an with payment left pending. */
static void start_commit_pending(tu_daemon *a, const char *an, const char *const *env, tu_daemon *b,
                                 const char *bn, const char *body)
{
    fp_rule hang_commit = {.action = FP_HANG, .match = "COMMIT PREPARED"};
    tu_shop_reset();
    proxies_start();
    init_proxied(a, an);
    tu_daemon_init(b, bn, NULL);
    tu_daemon_start(a, env);
    tu_daemon_start(b, NULL);
    fp_set(pay_proxy, &hang_commit);
    if (body)
        post(a, body, 200, "\"pending\":[\"payment\"]");
}

/* Node an stops cleanly with work left, and never starts again: a checkout held in phase 1 at
 * the warehouse's XA PREPARE, with payment and order prepared and no decision row, and (with
 * commit) a commit whose COMMIT PREPARED on payment hangs (the client was answered "committed",
 * payment pending). After the drain limit both are dropped. Peer bn takes an's node at its next
 * look and finishes them by the store: the commit commits, the other rolls back. */
static void run_clean_stop(const char *an, const char *bn, bool commit)
{
    tu_daemon a, b;
    char *done = tu_checkout_json("ho-1", 1004, 8, 100, "SKU-3", 2);
    char *held = tu_checkout_json("ho-2", 1001, 7, 100, "SKU-1", 1);
    fp_rule hang_prepare = {.action = FP_HANG, .match = "XA PREPARE"};
    tu_poster p = {&a, held, 0, NULL};
    char prefix[16], sql[128], *row;
    pthread_t th;
    struct timespec t0;

    snprintf(prefix, sizeof prefix, "xa2.%s.", an);
    start_commit_pending(&a, an, NULL, &b, bn, commit ? done : NULL);
    fp_set(wh_proxy, &hang_prepare);
    assert_int_equal(pthread_create(&th, NULL, tu_post_thread, &p), 0);
    assert_int_equal(fp_wait_hits(wh_proxy, 1, 15000), 0);
    for (int i = 0; i < 150 && (tu_prepared("order", prefix) == 0 ||
                                tu_prepared("payment", prefix) < 1 + commit);
         i++)
        usleep(100000);
    assert_int_equal(tu_prepared("payment", prefix), 1 + commit); /* ho-2 (and ho-1) */
    assert_int_equal(tu_prepared("order", prefix), 1);            /* ho-2 */

    assert_int_equal(tu_daemon_stop(&a), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_join(th, NULL);
    if (p.status == 200)
        fail_msg("the held checkout was answered 200: %s", p.resp ? p.resp : "");
    fp_heal(pay_proxy);
    fp_heal(wh_proxy);
    wait_resolved(prefix, 10 * TU_STORE_LEASE_MS);
    fprintf(stderr, "%s's branches resolved by %s %.2f s after it stopped (lease %u ms)\n", an, bn,
            since_s(&t0), TU_STORE_LEASE_MS);
    assert_int_equal(tu_sh("grep -q 'handed over' %s", a.log), 0);
    assert_int_equal(tu_sh("grep -q 'node %s.*taken at epoch 2' %s", an, b.log), 0);
    /* every answer holds: ho-1 committed, ho-2 never decided */
    assert_int_equal(tu_balance(8), commit ? 400 : 500);
    assert_int_equal(tu_order_status(1004), commit ? 'P' : 'I');
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_order_status(1001), 'I');
    if (commit) {
        get(&b, "ho-1", 200, "\"outcome\":\"committed\"");
        post(&b, done, 200, "\"replayed\":true");
    }
    get(&b, "ho-2", 404, NULL);
    snprintf(sql, sizeof sql, "SELECT holder FROM xacoord_nodes WHERE node_id = '%s'", an);
    for (int i = 0; i < 50; i++) { /* handed back once resolved */
        bool back = (row = store_sql(sql)) && !*row;
        free(row);
        if (back)
            break;
        usleep(100000);
    }
    expect_node_row(an, "2|");
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    proxies_stop();
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(p.resp);
    free(done);
    free(held);
}

static void test_clean_stop_hands_over(void **state)
{
    (void)state;
    run_clean_stop("ha", "hb", true);
}

/* Only the transaction dropped in phase 1 is left: no decision row names it, and the process's
 * own count of what it dropped is what hands the node over. */
static void test_clean_stop_hands_over_phase1(void **state)
{
    (void)state;
    run_clean_stop("hc", "hd", false);
}

/* Nothing left: the node is handed back (holder ''), and a peer that looks several times does
 * not take it. */
static void test_clean_stop_releases(void **state)
{
    tu_daemon a, b;
    char *body = tu_checkout_json("hp-1", 1001, 7, 100, "SKU-1", 1);
    (void)state;

    tu_shop_reset();
    tu_daemon_init(&a, "hp", "drain_limit_ms = 1000\n");
    tu_daemon_init(&b, "hq", NULL);
    tu_daemon_start(&a, NULL);
    tu_daemon_start(&b, NULL);
    post(&a, body, 200, "\"outcome\":\"committed\"");
    assert_int_equal(tu_daemon_stop(&a), 0);
    expect_node_row("hp", "1|");
    assert_int_equal(tu_sh("grep -q 'handed back' %s", a.log), 0);
    /* hb looks every lease_ms / 2: four looks */
    usleep(2 * TU_STORE_LEASE_MS * 1000);
    expect_node_row("hp", "1|");
    assert_int_equal(tu_sh("grep -q 'node hp' %s", b.log), 1);
    get(&b, "hp-1", 200, "\"outcome\":\"committed\"");
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
}

/* A node released (holder '') with a commit still pending - as an older version's clean stop
 * left it, or a crash in the middle of the stop - is taken too, and its branch committed. */
static void test_released_with_unfinished_is_taken(void **state)
{
    tu_daemon a, b;
    char *body = tu_checkout_json("hr-1", 1004, 8, 100, "SKU-3", 2), *out;
    (void)state;

    start_commit_pending(&a, "hr", NULL, &b, "hs", body);
    tu_daemon_kill(&a);
    out = store_sql("UPDATE xacoord_nodes SET holder = '', expires_at = now() "
                    "WHERE node_id = 'hr'");
    free(out);
    fp_heal(pay_proxy);
    assert_int_equal(tu_prepared("payment", "xa2.hr."), 1);
    wait_resolved("xa2.hr.", 10 * TU_STORE_LEASE_MS);
    assert_int_equal(tu_balance(8), 400);
    get(&b, "hr-1", 200, "\"outcome\":\"committed\"");
    assert_int_equal(tu_sh("grep -q 'node hr.*taken at epoch 2' %s", b.log), 0);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(&b), 0);
    proxies_stop();
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_node_answers),
        cmocka_unit_test(test_epoch_alone_fences),
        cmocka_unit_test(test_fenced_node_decides_nothing),
        cmocka_unit_test(test_same_id_on_two_nodes),
        cmocka_unit_test(test_restart_waits_for_lease),
        cmocka_unit_test(test_takeover_mid_phase2),
        cmocka_unit_test(test_takeover_mid_phase1),
        cmocka_unit_test(test_paused_node_does_not_act),
        cmocka_unit_test(test_last_resource),
        cmocka_unit_test(test_last_resource_lost_commit_answer),
        cmocka_unit_test(test_clean_stop_hands_over),
        cmocka_unit_test(test_clean_stop_hands_over_phase1),
        cmocka_unit_test(test_clean_stop_releases),
        cmocka_unit_test(test_released_with_unfinished_is_taken),
    };
    setenv("XA_TEST_DECISION_LOG", "postgres", 1);
    if (getenv("XA_TEST_FILTER")) /* a cmocka name pattern: runs a subset */
        cmocka_set_test_filter(getenv("XA_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
