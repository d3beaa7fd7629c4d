/*
 * One-phase commit (docs/design.md section 3, "One-phase commit"): a transaction with a single
 * branch that writes is committed without PREPARE, and the marker written first in that branch
 * holds the client id. Against the real servers, on PostgreSQL (a transfer between two accounts,
 * which keeps I1) and on MariaDB (a new order in status I, which keeps I2): the daemon killed
 * before and after the COMMIT, and a COMMIT whose answer is lost. Each time the reply, GET, a retry
 * with the same id and the data agree, nothing runs twice, and nothing is left prepared.
 */
#include "daemon.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* 30 from user 8 to user 9 on payment, in one branch. */
static char *transfer_json(const char *id)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"id\":\"%s\",\"branches\":[{\"participant\":\"payment\",\"statements\":["
                 "{\"sql\":\"UPDATE account SET balance = balance - 30 WHERE user_id = 8\","
                 "\"expect_rows\":1},"
                 "{\"sql\":\"UPDATE account SET balance = balance + 30 WHERE user_id = 9\","
                 "\"expect_rows\":1},"
                 "{\"sql\":\"SELECT balance FROM account WHERE user_id = 8\"}]}]}",
                 id) < 0)
        fail_msg("out of memory");
    return s;
}

/* A new order 2001 in status I on order, in one branch. */
static char *new_order_json(const char *id)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"id\":\"%s\",\"branches\":[{\"participant\":\"order\",\"statements\":["
                 "{\"sql\":\"INSERT INTO orders (id, user_id, amount, sku, qty) VALUES "
                 "(2001, 8, 100, 'SKU-3', 1)\",\"expect_rows\":1}]}]}",
                 id) < 0)
        fail_msg("out of memory");
    return s;
}

/* Another request under the same id, on the same participant. */
static char *touch_json(const char *id, const char *participant, const char *sql)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"id\":\"%s\",\"branches\":[{\"participant\":\"%s\",\"statements\":["
                 "{\"sql\":\"%s\"}]}]}",
                 id, participant, sql) < 0)
        fail_msg("out of memory");
    return s;
}

static char *other_transfer_json(const char *id)
{
    return touch_json(id, "payment", "UPDATE account SET balance = balance WHERE user_id = 8");
}

static char *other_order_json(const char *id)
{
    return touch_json(id, "order", "UPDATE orders SET status = status WHERE id = 1004");
}

typedef struct scenario {
    const char *name;
    char *(*json)(const char *id);
    char *(*other)(const char *id);
    long (*applied)(void); /* how many times the work landed: 0 or 1 (never more) */
} scenario;

static long transfers(void)
{
    long b8 = tu_balance(8), b9 = tu_balance(9);
    assert_int_equal(b8 + b9, 1000); /* I1 within payment */
    assert_int_equal((500 - b8) % 30, 0);
    return (500 - b8) / 30;
}

static long new_orders(void)
{
    return tu_shop_long("order", "SELECT count(*) FROM orders WHERE id = 2001");
}

static const scenario payment = {"payment", transfer_json, other_transfer_json, transfers};
static const scenario order = {"order", new_order_json, other_order_json, new_orders};

/* GET's answer: 1 committed, 0 unknown (404). */
static int get_outcome(tu_daemon *d, const char *id, char **resp)
{
    char path[128];
    int status;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = tu_http(d->port, "GET", path, NULL, NULL, resp);
    if (status == 200 && strstr(*resp, "\"outcome\":\"committed\""))
        return 1;
    if (status != 404)
        fail_msg("GET %s: %d %s", path, status, *resp ? *resp : "");
    return 0;
}

static void assert_nothing_prepared(void)
{
    assert_int_equal(tu_prepared("payment", "xa"), 0);
    assert_int_equal(tu_prepared("order", "xa"), 0);
    assert_int_equal(tu_prepared("warehouse", "xa"), 0);
}

/* Every case ends with the work landed exactly once, nothing prepared and I1-I5. */
static void finish(const scenario *s, tu_daemon *d, char *body)
{
    assert_int_equal(s->applied(), 1);
    assert_nothing_prepared();
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(d), 0);
    tu_daemon_cleanup(d);
    free(body);
}

/* The plain path: committed, its results in the reply, its marker holding the id, no PREPARE. */
static void run_plain(const scenario *s)
{
    tu_daemon d;
    char id[64], *body, *resp = NULL, *got = NULL;
    snprintf(id, sizeof id, "op-plain-%s", s->name);
    body = s->json(id);
    tu_shop_reset();
    tu_daemon_init(&d, "op", NULL);
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp), 200);
    if (!strstr(resp, "\"outcome\":\"committed\"") || !strstr(resp, "\"replayed\":false"))
        fail_msg("%s: %s", s->name, resp);
    assert_int_equal(s->applied(), 1);
    if (s == &payment)
        assert_non_null(strstr(resp, "\"rows\":[{\"balance\":470}]"));
    assert_int_equal(get_outcome(&d, id, &got), 1);
    free(got);
    free(resp);
    /* the same id again: the journal answers, nothing runs */
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp), 200);
    assert_non_null(strstr(resp, "\"replayed\":true"));
    free(resp);
    finish(s, &d, body);
}

static void test_plain(void **state)
{
    run_plain(&payment);
    run_plain(&order);
}

/* The daemon dies at `point`; after the restart GET, a retry and the data agree. */
static void run_crash(const scenario *s, const char *point, int expect)
{
    tu_daemon d;
    char env[96], id[64], *body, *resp = NULL, *got = NULL;
    const char *envs[] = {env, NULL};
    int ws, committed;

    snprintf(id, sizeof id, "op-%s-%s", s->name, point);
    body = s->json(id);
    tu_shop_reset();
    snprintf(env, sizeof env, "XACOORD_CRASH_AT=%s", point);
    tu_daemon_init(&d, "oc", NULL);
    tu_daemon_start(&d, envs);
    (void)tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    ws = tu_daemon_wait_exit(&d, 20000);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("%s, %s: the daemon did not die at the crash point (status %d)", s->name, point,
                 ws);
    /* it died before answering, or after answering the truth */
    if (resp && (expect != 1 || !strstr(resp, "\"outcome\":\"committed\"")))
        fail_msg("%s, %s: answered %s", s->name, point, resp);
    free(resp);
    resp = NULL;
    tu_daemon_start(&d, NULL);
    committed = get_outcome(&d, id, &got);
    if (committed != expect)
        fail_msg("%s, %s: GET says %d, expected %d: %s", s->name, point, committed, expect,
                 got ? got : "");
    assert_int_equal(s->applied(), committed);
    if (committed && !strcmp(point, "after-one-phase-commit")) /* only the marker knows it */
        assert_non_null(strstr(got, "\"results\":null"));
    free(got);
    /* the retry with the same id runs the work only if it never landed */
    if (tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp) != 200 ||
        !strstr(resp, "\"outcome\":\"committed\"") ||
        !strstr(resp, committed ? "\"replayed\":true" : "\"replayed\":false"))
        fail_msg("%s, %s: the retry got %s", s->name, point, resp ? resp : "no answer");
    free(resp);
    assert_int_equal(s->applied(), 1);
    /* and another request under that id is refused, whoever remembers it */
    resp = NULL;
    free(body);
    body = s->other(id);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp), 422);
    free(resp);
    finish(s, &d, body);
}

static void test_crash_points(void **state)
{
    static const struct {
        const char *point;
        int expect;
    } cases[] = {
        {"after-work", 0},
        {"after-one-phase-commit", 1},
        /* the lazily written record of the commit (never synced on its own, so there is no
         * journal-after-sync on this path): the marker answers if the record did not land */
        {"journal-after-write", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fprintf(stderr, "--- one-phase, crash point %s\n", cases[i].point);
        run_crash(&payment, cases[i].point, cases[i].expect);
        run_crash(&order, cases[i].point, cases[i].expect);
    }
}

/* The COMMIT went out and its answer was lost: the marker, read once the transaction is over,
 * tells the truth, and the reply says it. */
static void run_lost_reply(const scenario *s)
{
    tu_daemon d;
    const char *envs[] = {"XACOORD_FAULT_AT=cut-after-one-phase-commit", NULL};
    char id[64], *body, *resp = NULL, *got = NULL;
    int status, committed;

    snprintf(id, sizeof id, "op-lost-%s", s->name);
    body = s->json(id);
    tu_shop_reset();
    tu_daemon_init(&d, "ol", NULL);
    tu_daemon_start(&d, envs);
    status = tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp);
    committed = status == 200 && strstr(resp, "\"outcome\":\"committed\"") != NULL;
    if (!committed && !(status == 503 && strstr(resp, "\"outcome\":\"aborted\"")))
        fail_msg("%s: lost COMMIT answer: %d %s", s->name, status, resp ? resp : "");
    assert_int_equal(s->applied(), committed);
    assert_int_equal(get_outcome(&d, id, &got), committed);
    free(got);
    free(resp);
    assert_int_equal(tu_daemon_stop(&d), 0);
    /* without the fault, the retry lands it exactly once */
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp), 200);
    free(resp);
    finish(s, &d, body);
}

static void test_lost_commit_reply(void **state)
{
    run_lost_reply(&payment);
    run_lost_reply(&order);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_crash_points),
        cmocka_unit_test(test_lost_commit_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
