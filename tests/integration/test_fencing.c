/*
 * Fencing by data directory identity (docs/design.md section 3, "XIDs" and "Fencing"), against the
 * real servers: a second daemon with the same node_id and another data directory never resolves
 * the first one's branches - not when the first is dead with a commit decision in its journal, not
 * when the first one's lock sessions were killed by a client statement and by a server restart
 * while it owed a commit. Foreign branches are listed and counted, resolved by hand, and taken over
 * by identity; a damaged identity file stops start-up.
 */
#include "daemon.h"
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const shop[] = {"payment", "order", "warehouse"};

/* Waits until no prepared branch is left and every invariant holds. */
static void wait_consistent(unsigned timeout_ms)
{
    for (unsigned waited = 0; waited < timeout_ms; waited += 250) {
        if (tu_sh("%s/tests/invariants check >/dev/null 2>&1", tu_source_dir()) == 0)
            return;
        usleep(250000);
    }
    tu_invariants(); /* print what fails */
    fail_msg("invariants do not hold after %u ms", timeout_ms);
}

static void assert_prepared(const char *prefix, long want)
{
    for (int i = 0; i < 3; i++)
        if (tu_prepared(shop[i], prefix) != want)
            fail_msg("%s: %ld prepared branches %s*, want %ld", shop[i],
                     tu_prepared(shop[i], prefix), prefix, want);
}

/* The gtrid prefix of a daemon's data directory. */
static void prefix_of(const tu_daemon *d, char *out, size_t len)
{
    char id[16];
    tu_daemon_identity(d, id);
    snprintf(out, len, "xa2.%s.%s.", d->node, id);
}

/* How many entries of d's GET /v1/in-doubt are foreign branches of identity on participant. */
static int foreign_listed(const tu_daemon *d, const char *identity, const char *participant)
{
    char *resp = NULL;
    json_t *j, *b;
    size_t i;
    int n = 0;
    assert_int_equal(tu_http(d->port, "GET", "/v1/in-doubt", NULL, NULL, &resp), 200);
    j = json_loads(resp, 0, NULL);
    assert_non_null(j);
    json_array_foreach(json_object_get(j, "branches"), i, b)
    {
        const char *dec = json_string_value(json_object_get(b, "decision"));
        const char *id = json_string_value(json_object_get(b, "identity"));
        const char *part = json_string_value(json_object_get(b, "participant"));
        n += dec && strcmp(dec, "foreign") == 0 && id && strcmp(id, identity) == 0 && part &&
             strcmp(part, participant) == 0;
    }
    json_decref(j);
    free(resp);
    return n;
}

/* Polls until d lists a foreign branch of identity on participant. */
static void wait_foreign_listed(const tu_daemon *d, const char *identity, const char *participant)
{
    for (int waited = 0; waited < 20000; waited += 250) {
        if (foreign_listed(d, identity, participant) > 0)
            return;
        usleep(250000);
    }
    fail_msg("no foreign branch of %s on %s in the in-doubt list", identity, participant);
}

/* Runs sql on the payment database as its superuser. */
static void payment_admin(const char *sql)
{
    char *out = tu_admin_sql("payment", "payment", sql);
    if (!out)
        fail_msg("payment: %s failed", sql);
    free(out);
}

static bool metrics_have(const tu_daemon *d, const char *line)
{
    char *resp = NULL;
    bool found;
    assert_int_equal(tu_http(d->port, "GET", "/metrics", NULL, NULL, &resp), 200);
    found = strstr(resp, line) != NULL;
    free(resp);
    return found;
}

static void post_expect(const tu_daemon *d, const char *body, int status, const char *want)
{
    char *resp = NULL;
    int got = tu_http(d->port, "POST", "/v1/transactions", body, NULL, &resp);
    if (got != status || (want && !strstr(resp, want)))
        fail_msg("POST: %d %s (want %d with %s)", got, resp ? resp : "", status,
                 want ? want : "anything");
    free(resp);
}

/* ---- a dead first daemon with a commit decision ------------------------------------------ */

/* A dies right after its commit record: its three branches stay prepared, and only its journal
 * knows they must commit. B - same node_id, another data directory - takes every lock, works,
 * scans every second, and never touches them; it lists them as foreign. A then commits them. */
static void test_second_directory_never_resolves_the_first(void **state)
{
    tu_daemon a, b;
    const char *crash[] = {"XACOORD_CRASH_AT=after-commit-record", NULL};
    char *body = tu_checkout_json("fence-1001", 1001, 7, 100, "SKU-1", 1), *resp = NULL;
    char *mine = tu_checkout_json("b-1004", 1004, 8, 100, "SKU-3", 2);
    char *ship = tu_ship_json(NULL, 1004);
    char pa[48], pb[48], ida[16], line[96];
    int ws;

    tu_shop_reset();
    tu_daemon_init(&a, "n1", NULL);
    tu_daemon_start(&a, crash);
    tu_http(a.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    ws = tu_daemon_wait_exit(&a, 20000);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    prefix_of(&a, pa, sizeof pa);
    tu_daemon_identity(&a, ida);
    assert_prepared(pa, 1);

    tu_daemon_init(&b, "n1", NULL);
    tu_daemon_start(&b, NULL);
    prefix_of(&b, pb, sizeof pb);
    assert_string_not_equal(pa, pb);
    post_expect(&b, mine, 200, "\"outcome\":\"committed\"");
    post_expect(&b, ship, 200, "\"outcome\":\"committed\"");
    sleep(3); /* three scans */
    assert_prepared(pa, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(foreign_listed(&b, ida, shop[i]), 1);
        snprintf(line, sizeof line, "xacoord_foreign_branches{participant=\"%s\"} 1", shop[i]);
        assert_true(metrics_have(&b, line));
    }
    assert_int_equal(tu_order_status(1004), 'W');
    assert_int_equal(tu_daemon_stop(&b), 0);

    tu_daemon_start(&a, NULL);
    wait_consistent(20000);
    assert_prepared("xa2.n1.", 0);
    assert_int_equal(tu_order_status(1001), 'P');
    assert_int_equal(tu_balance(7), 100);
    post_expect(&a, body, 200, "\"replayed\":true");
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
    free(body);
    free(mine);
    free(ship);
}

/* ---- a live first daemon that owes a commit, its lock sessions killed ---------------------- */

/* A commits a checkout whose order branch is prepared when the order server dies: the reply is
 * "committed", order pending, and A's lock session on order is gone with the server. */
static void commit_with_order_pending(tu_daemon *a)
{
    tu_poster p = {a, NULL, 0, NULL};
    pthread_t th;
    char *body = tu_checkout_json("owed-1001", 1001, 7, 100, "SKU-1", 1);
    p.body = body;
    tu_hold_stock_row(1.5); /* the warehouse branch waits; payment and order prepare at once */
    assert_int_equal(pthread_create(&th, NULL, tu_post_thread, &p), 0);
    usleep(500000);
    assert_int_equal(tu_sh("%s/scripts/db kill order >/dev/null", tu_source_dir()), 0);
    pthread_join(th, NULL);
    if (p.status != 200 || !strstr(p.resp, "\"pending\":[\"order\"]"))
        fail_msg("checkout with the order server killed: %d %s", p.status, p.resp ? p.resp : "");
    free(p.resp);
    free(body);
}

/* A's own API runs a client's statement that ends every other session of the coordinator's role
 * on payment - A's lock session among them (the guard admits a SELECT). */
static void kill_lock_sessions_through_api(tu_daemon *a)
{
    post_expect(a,
                "{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":"
                "\"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                "usename = current_user AND pid <> pg_backend_pid()\"}]}]}",
                200, "\"outcome\":\"committed\"");
}

/* Whether d still runs (a stopped one does); reaps it when it exited. */
static bool alive(tu_daemon *d)
{
    if (d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == d->pid)
        d->pid = 0;
    return d->pid > 0;
}

/* A owes order a COMMIT; its order lock session dies with the server, its payment lock session
 * is killed by a client statement; B, same node_id, runs meanwhile and takes the locks. Nothing
 * of A's is rolled back: B lists A's order branch as foreign, and A - or A restarted, once B is
 * gone - commits it. */
static void test_lost_lock_sessions_never_unfence(void **state)
{
    tu_daemon a, b;
    char pa[48], ida[16];
    bool frozen = false;

    tu_shop_reset();
    tu_daemon_init(&a, "n2", NULL);
    tu_daemon_start(&a, NULL);
    prefix_of(&a, pa, sizeof pa);
    tu_daemon_identity(&a, ida);
    commit_with_order_pending(&a);
    assert_int_equal(tu_balance(7), 100); /* payment committed; order owed */

    tu_daemon_init(&b, "n2", NULL);
    tu_daemon_spawn(&b, NULL);
    /* A is frozen right after its lock session is killed, so that B - not A - takes payment's
     * lock, and order's once its server is back, while A lives and owes order its COMMIT. */
    kill_lock_sessions_through_api(&a);
    if (alive(&a)) {
        assert_int_equal(kill(a.pid, SIGSTOP), 0);
        frozen = true;
    }
    sleep(3);
    assert_int_equal(tu_sh("%s/scripts/db restart order >/dev/null", tu_source_dir()), 0);
    wait_foreign_listed(&b, ida, "order");
    sleep(2); /* two more scans of B */
    assert_int_equal(tu_prepared("order", pa), 1);
    assert_int_equal(tu_order_status(1001), 'I'); /* not committed, and not rolled back either */

    /* A wakes up: it commits its own branch, or stops on finding its lock taken. Never a
     * rollback. */
    if (frozen)
        assert_int_equal(kill(a.pid, SIGCONT), 0);
    sleep(3);
    assert_true(tu_prepared("order", pa) == 1 || tu_order_status(1001) == 'P');
    assert_int_equal(tu_daemon_stop(&b), 0);
    if (alive(&a))
        assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_start(&a, NULL);
    wait_consistent(30000);
    assert_prepared("xa2.n2.", 0);
    assert_int_equal(tu_order_status(1001), 'P');
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_daemon_stop(&a), 0);
    tu_daemon_cleanup(&a);
    tu_daemon_cleanup(&b);
}

/* ---- operators: resolve, takeover, a damaged identity ---------------------------------- */

static int post_status(const tu_daemon *d, const char *path, char **resp)
{
    return tu_http(d->port, "POST", path, "", NULL, resp);
}

/* C dies with its branches prepared and no decision, and its data directory is lost. D, the
 * node's new data directory, shows them as foreign and rolls them back when told to take C's
 * identity over; a foreign branch of a third identity is committed by hand. */
static void test_takeover_of_a_lost_directory(void **state)
{
    tu_daemon c, d;
    const char *crash[] = {"XACOORD_CRASH_AT=before-commit-record", NULL};
    char *body = tu_checkout_json("lost-1001", 1001, 7, 100, "SKU-1", 1), *resp = NULL, *out;
    char pc[48], idc[16], idd[16], path[128], args[96];

    tu_shop_reset();
    tu_daemon_init(&c, "tk", NULL);
    tu_daemon_start(&c, crash);
    tu_http(c.port, "POST", "/v1/transactions", body, NULL, &resp);
    free(resp);
    tu_daemon_wait_exit(&c, 20000);
    prefix_of(&c, pc, sizeof pc);
    tu_daemon_identity(&c, idc);
    assert_prepared(pc, 1);
    assert_int_equal(tu_sh("rm -rf '%s/data'", c.dir), 0); /* the disk is gone */
    payment_admin("SET ROLE xacoord; BEGIN; UPDATE account SET balance = balance "
                  "WHERE user_id = 9; PREPARE TRANSACTION 'xa2.tk.zzzzzzzz.1.1.payment'");

    tu_daemon_init(&d, "tk", NULL);
    tu_daemon_start(&d, NULL);
    tu_daemon_identity(&d, idd);
    for (int i = 0; i < 3; i++)
        assert_int_equal(foreign_listed(&d, idc, shop[i]), 1);
    assert_int_equal(foreign_listed(&d, "zzzzzzzz", "payment"), 1);
    assert_true(metrics_have(&d, "xacoord_foreign_branches{participant=\"payment\"} 2"));
    /* what the in-doubt list shows, the unresolved gauge counts */
    assert_true(metrics_have(&d, "xacoord_unresolved_branches{participant=\"payment\"} 2"));
    assert_true(metrics_have(&d, "xacoord_unresolved_branches{participant=\"order\"} 1"));

    /* one foreign branch by hand: no journal here contradicts either decision */
    assert_int_equal(post_status(&d, "/v1/in-doubt/xa2.tk.zzzzzzzz.1.1/commit", &resp), 200);
    if (!strstr(resp, "\"identity\":\"zzzzzzzz\"") || !strstr(resp, "\"payment\":\"committed\""))
        fail_msg("resolve: %s", resp);
    free(resp);

    /* a takeover says its decision, names a foreign identity, and finds branches of it */
    snprintf(path, sizeof path, "/v1/takeover/%s", idc);
    assert_int_equal(post_status(&d, path, &resp), 400);
    free(resp);
    snprintf(args, sizeof args, "takeover %s", idc);
    assert_int_equal(tu_xactl(&d, args, NULL), 2);
    snprintf(path, sizeof path, "/v1/takeover/%s?decision=rollback", idd);
    assert_int_equal(post_status(&d, path, &resp), 409);
    free(resp);
    assert_int_equal(post_status(&d, "/v1/takeover/abcdefgh?decision=rollback", &resp), 404);
    free(resp);
    assert_int_equal(post_status(&d, "/v1/takeover/ABCDEFGH?decision=rollback", &resp), 400);
    free(resp);

    snprintf(args, sizeof args, "takeover %s --rollback", idc);
    assert_int_equal(tu_xactl(&d, args, &out), 0);
    for (int i = 0; i < 3; i++) {
        char want[96];
        snprintf(want, sizeof want, "rolled back %s1.1 %s", pc, shop[i]);
        if (!strstr(out, want))
            fail_msg("xactl takeover printed:\n%s", out);
    }
    free(out);
    for (int waited = 0; foreign_listed(&d, idc, "payment") > 0; waited += 250) {
        assert_true(waited < 10000);
        usleep(250000);
    }
    assert_prepared("xa2.tk.", 0);
    assert_true(metrics_have(&d, "xacoord_unresolved_branches{participant=\"payment\"} 0"));
    assert_int_equal(tu_order_status(1001), 'I');
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_sh("grep -q 'TAKEOVER of identity %s' '%s'", idc, d.log), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&c);
    tu_daemon_cleanup(&d);
    free(body);
}

/* A branch the coordinator's database role may not finish (prepared by a superuser): the manual
 * resolution answers 502 with the participant's refusal, never a 200 that reads "done". */
static void test_refused_resolution_is_not_success(void **state)
{
    tu_daemon d;
    const char *gtrid = "xa2.rf.yyyyyyyy.1.1";
    char *resp = NULL, path[96];

    tu_shop_reset();
    payment_admin("BEGIN; UPDATE account SET balance = balance WHERE user_id = 9; "
                  "PREPARE TRANSACTION 'xa2.rf.yyyyyyyy.1.1.payment'");
    tu_daemon_init(&d, "rf", NULL);
    tu_daemon_start(&d, NULL);
    wait_foreign_listed(&d, "yyyyyyyy", "payment");
    snprintf(path, sizeof path, "/v1/in-doubt/%s/rollback?participant=payment", gtrid);
    assert_int_equal(post_status(&d, path, &resp), 502);
    if (!strstr(resp, "\"payment\":\"error: ") || !strstr(resp, "\"error\":"))
        fail_msg("refused resolution answered: %s", resp);
    free(resp);
    assert_int_equal(tu_prepared("payment", gtrid), 1);
    payment_admin("ROLLBACK PREPARED 'xa2.rf.yyyyyyyy.1.1.payment'");
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

/* Guessing an identity would rename every branch of the directory: start-up stops instead. */
static void test_damaged_identity_stops_start(void **state)
{
    tu_daemon e;
    char path[320];
    FILE *f;
    int ws;
    tu_daemon_init(&e, "ci", NULL);
    snprintf(path, sizeof path, "%s/data", e.dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/data/identity", e.dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("not-an-identity\n", f);
    fclose(f);
    tu_daemon_spawn(&e, NULL);
    ws = tu_daemon_wait_exit(&e, 10000);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 1);
    assert_int_equal(tu_sh("grep -q 'cannot start: .*identity is corrupt' '%s'", e.log), 0);
    tu_daemon_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_directory_never_resolves_the_first),
        cmocka_unit_test(test_lost_lock_sessions_never_unfence),
        cmocka_unit_test(test_takeover_of_a_lost_directory),
        cmocka_unit_test(test_damaged_identity_stops_start),
        cmocka_unit_test(test_refused_resolution_is_not_success),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
