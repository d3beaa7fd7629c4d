/*
 * The daemon end to end against the real servers: the example shop's checkout and ship across
 * PostgreSQL and two MariaDB servers, every way a checkout must abort, idempotency, concurrency on
 * one balance, and the API's answers to malformed requests. After each case the shop's invariants
 * I1-I5 must hold (tests/invariants).
 */
#include "daemon.h"
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static tu_daemon daemon_;

static json_t *post(const char *body, int *status)
{
    char *resp = NULL;
    json_t *j;
    *status = tu_http(daemon_.port, "POST", "/v1/transactions", body, NULL, &resp);
    j = resp ? json_loads(resp, 0, NULL) : NULL;
    if (!j)
        fail_msg("status %d, body not JSON: %s", *status, resp ? resp : "(none)");
    free(resp);
    return j;
}

static const char *str(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int setup(void **state)
{
    tu_daemon_init(&daemon_, "shop", NULL);
    tu_daemon_start(&daemon_, NULL);
    return 0;
}

static int teardown(void **state)
{
    assert_int_equal(tu_daemon_stop(&daemon_), 0);
    tu_daemon_cleanup(&daemon_);
    return 0;
}

static int reset(void **state)
{
    tu_shop_reset();
    return 0;
}

static long stock(const char *sku)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT qty FROM stock WHERE sku = '%s'", sku);
    return tu_shop_long("warehouse", sql);
}

/* Asserts an abort with the given reason fragment and that nothing changed. */
static void expect_abort(const char *body, int want_status, const char *reason)
{
    int status;
    long bal = tu_balance(7), qty = stock("SKU-1");
    json_t *j = post(body, &status);
    assert_int_equal(status, want_status);
    assert_string_equal(str(j, "outcome"), "aborted");
    if (!strstr(str(j, "reason"), reason))
        fail_msg("reason '%s' does not mention '%s'", str(j, "reason"), reason);
    json_decref(j);
    assert_int_equal(tu_balance(7), bal);
    assert_int_equal(stock("SKU-1"), qty);
    assert_int_equal(tu_invariants(), 0);
}

static void test_checkout_and_ship(void **state)
{
    int status;
    char *body = tu_checkout_json("checkout-1001", 1001, 7, 100, "SKU-1", 1);
    json_t *j = post(body, &status), *branches;
    free(body);
    assert_int_equal(status, 200);
    assert_string_equal(str(j, "outcome"), "committed");
    assert_string_equal(str(j, "id"), "checkout-1001");
    assert_true(json_is_false(json_object_get(j, "replayed")));
    assert_int_equal(json_array_size(json_object_get(j, "pending")), 0);
    branches = json_object_get(j, "branches");
    assert_int_equal(json_array_size(branches), 3);
    json_decref(j);
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_order_status(1001), 'P');
    assert_int_equal(stock("SKU-1"), 9);
    assert_int_equal(tu_invariants(), 0);

    body = tu_ship_json("ship-1001", 1001);
    j = post(body, &status);
    free(body);
    assert_int_equal(status, 200);
    json_decref(j);
    assert_int_equal(tu_order_status(1001), 'W');
    assert_int_equal(tu_invariants(), 0);
}

static void test_insufficient_balance(void **state)
{
    char *body = tu_checkout_json(NULL, 1001, 7, 300, "SKU-1", 1);
    expect_abort(body, 409, "insufficient balance");
    free(body);
}

static void test_order_not_awaiting_payment(void **state)
{
    char *body = tu_checkout_json(NULL, 1001, 7, 100, "SKU-1", 1);
    int status;
    json_decref(post(body, &status));
    assert_int_equal(status, 200);
    free(body);
    /* the same order again, under another id: order is P now */
    body = tu_checkout_json("again", 1001, 7, 100, "SKU-1", 1);
    expect_abort(body, 409, "");
    free(body);
    assert_int_equal(tu_balance(7), 100);
}

static void test_out_of_stock(void **state)
{
    char *body = tu_checkout_json(NULL, 1003, 7, 100, "SKU-2", 1);
    expect_abort(body, 409, "out of stock");
    free(body);
    assert_int_equal(tu_order_status(1003), 'I');
}

static void test_duplicate_payment(void **state)
{
    char *body = tu_checkout_json(NULL, 1002, 7, 100, "SKU-1", 1);
    char *out = tu_admin_sql("payment", "payment",
                             "INSERT INTO payment(order_id, user_id, amount) VALUES (1002, 8, 1);"
                             "UPDATE account SET balance = balance - 1 WHERE user_id = 8");
    int status;
    json_t *j;
    free(out);
    assert_int_equal(tu_sh("%s/tests/invariants baseline >/dev/null", tu_source_dir()), 0);
    j = post(body, &status);
    free(body);
    assert_int_equal(status, 409);
    assert_string_equal(str(json_object_get(j, "failed"), "sqlstate"), "23505");
    assert_string_equal(str(json_object_get(j, "failed"), "participant"), "payment");
    json_decref(j);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_order_status(1002), 'I');
}

static void test_sql_error(void **state)
{
    int status;
    json_t *j = post("{\"branches\":[{\"participant\":\"payment\",\"statements\":"
                     "[{\"sql\":\"UPDATE account SET balance = 0 WHERE user_id = 7\"}]},"
                     "{\"participant\":\"order\",\"statements\":[{\"sql\":\"UPDATE nosuchtable "
                     "SET x = 1\"}]}]}",
                     &status);
    assert_int_equal(status, 409);
    assert_string_equal(str(json_object_get(j, "failed"), "participant"), "order");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "failed"), "statement")),
                     0);
    json_decref(j);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_invariants(), 0);
}

static void test_participant_down(void **state)
{
    char *body = tu_checkout_json("down-1", 1001, 7, 100, "SKU-1", 1);
    int status;
    json_t *j;
    assert_int_equal(tu_sh("%s/scripts/db kill warehouse >/dev/null", tu_source_dir()), 0);
    j = post(body, &status);
    /* back up before any assertion, so a failure here cannot fail every later test */
    assert_int_equal(tu_sh("%s/scripts/db restart warehouse >/dev/null", tu_source_dir()), 0);
    assert_true(status == 503 || status == 409);
    assert_string_equal(str(j, "outcome"), "aborted");
    assert_true(json_is_true(json_object_get(j, "retryable")));
    json_decref(j);
    assert_int_equal(tu_balance(7), 200);
    /* The same id runs again once the server is back (a transient abort is not replayed). */
    for (int i = 0; i < 100; i++) {
        j = post(body, &status);
        json_decref(j);
        if (status == 200)
            break;
        usleep(100000);
    }
    free(body);
    assert_int_equal(status, 200);
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_invariants(), 0);
}

static void test_lock_timeout(void **state)
{
    char *body = tu_checkout_json(NULL, 1001, 7, 100, "SKU-1", 1);
    int status;
    json_t *j;
    /* Another session holds the account row for longer than the transaction may wait. */
    assert_int_equal(tu_sh("psql -X -q -h 127.0.0.1 -p %s -U postgres -d payment -c "
                           "\"BEGIN; SELECT * FROM account WHERE user_id = 7 FOR UPDATE; "
                           "SELECT pg_sleep(8); COMMIT;\" >/dev/null 2>&1 &",
                           tu_env("XA_PG_PORT")),
                     0);
    sleep(1);
    j = post(body, &status);
    free(body);
    assert_int_equal(status, 409);
    assert_true(json_is_true(json_object_get(j, "retryable")));
    json_decref(j);
    sleep(8);
    assert_int_equal(tu_balance(7), 200);
    assert_int_equal(tu_invariants(), 0);
}

static void test_same_id_twice(void **state)
{
    char *body = tu_checkout_json("once", 1001, 7, 100, "SKU-1", 1);
    char *other = tu_checkout_json("once", 1002, 7, 100, "SKU-1", 1);
    char *resp = NULL;
    int status;
    json_t *j = post(body, &status);
    assert_int_equal(status, 200);
    json_decref(j);
    j = post(body, &status);
    assert_int_equal(status, 200);
    assert_true(json_is_true(json_object_get(j, "replayed")));
    assert_string_equal(str(j, "outcome"), "committed");
    json_decref(j);
    j = post(other, &status);
    assert_int_equal(status, 422);
    json_decref(j);
    free(body);
    free(other);
    assert_int_equal(tu_balance(7), 100);
    assert_int_equal(tu_shop_long("payment", "SELECT count(*) FROM payment"), 1);
    assert_int_equal(tu_http(daemon_.port, "GET", "/v1/transactions/once", NULL, NULL, &resp), 200);
    assert_non_null(strstr(resp, "\"committed\""));
    free(resp);
    assert_int_equal(tu_http(daemon_.port, "GET", "/v1/transactions/never", NULL, NULL, &resp),
                     404);
    free(resp);
}

/* ---- 100 concurrent checkouts on one balance -------------------------------------------- */

typedef struct racer {
    long order;
    int final_status;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    char id[32], *body, *resp = NULL;
    snprintf(id, sizeof id, "race-%ld", r->order);
    body = tu_checkout_json(id, r->order, 9, 100, "SKU-R", 1);
    /* A client retries transient aborts (lock timeouts between the two databases). */
    for (int attempt = 0; attempt < 50; attempt++) {
        r->final_status = tu_http(daemon_.port, "POST", "/v1/transactions", body, NULL, &resp);
        bool retry = r->final_status == 503 ||
                     (r->final_status == 409 && resp && strstr(resp, "\"retryable\":true"));
        free(resp);
        resp = NULL;
        if (!retry)
            break;
        usleep(20000 + (useconds_t)(rand() % 50000));
    }
    free(body);
    return NULL;
}

static void test_concurrent_checkouts_one_balance(void **state)
{
    enum { N = 100 };
    static racer racers[N];
    pthread_t th[N];
    char sql[8192];
    int committed = 0, pos = 0;
    char *out;

    pos += snprintf(sql, sizeof sql, "INSERT INTO orders(id, user_id, amount, sku, qty) VALUES ");
    for (int i = 0; i < N; i++)
        pos += snprintf(sql + pos, sizeof sql - (size_t)pos, "%s(%d, 9, 100, 'SKU-R', 1)",
                        i ? "," : "", 5000 + i);
    out = tu_admin_sql("order", "shop_order", sql);
    assert_non_null(out);
    free(out);
    out = tu_admin_sql("warehouse", "shop_warehouse",
                       "INSERT INTO stock(sku, qty) VALUES ('SKU-R', 1000)");
    assert_non_null(out);
    free(out);
    assert_int_equal(tu_sh("%s/tests/invariants baseline >/dev/null", tu_source_dir()), 0);

    for (int i = 0; i < N; i++) {
        racers[i].order = 5000 + i;
        assert_int_equal(pthread_create(&th[i], NULL, race, &racers[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        committed += racers[i].final_status == 200;
        assert_true(racers[i].final_status == 200 || racers[i].final_status == 409);
    }
    /* user 9 holds 500: exactly five orders of 100 can be paid, and the balance never goes below 0
     */
    assert_int_equal(committed, 5);
    assert_int_equal(tu_balance(9), 0);
    assert_int_equal(tu_shop_long("payment", "SELECT count(*) FROM payment WHERE user_id = 9"), 5);
    assert_int_equal(tu_invariants(), 0);
}

typedef struct slow_req {
    tu_daemon *d;
    const char *body;
    int status;
} slow_req;

static void *slow_post(void *arg)
{
    slow_req *r = arg;
    char *resp = NULL;
    r->status = tu_http(r->d->port, "POST", "/v1/transactions", r->body, NULL, &resp);
    free(resp);
    return NULL;
}

/* ---- malformed requests ----------------------------------------------------------------- */

static void expect_status(const char *body, int want, const char *fragment)
{
    char *resp = NULL;
    int status = tu_http(daemon_.port, "POST", "/v1/transactions", body, NULL, &resp);
    if (status != want || !resp || !strstr(resp, fragment))
        fail_msg("for %.80s: status %d (want %d), body %s (want '%s')", body, status, want,
                 resp ? resp : "(none)", fragment);
    free(resp);
}

static void test_malformed_requests(void **state)
{
    char big[80000];
    expect_status("{not json", 400, "invalid JSON");
    expect_status("[]", 400, "must be a JSON object");
    expect_status("{\"branches\":[]}", 400, "branches");
    expect_status("{\"branches\":[{\"participant\":\"nope\",\"statements\":[{\"sql\":\"x\"}]}]}",
                  400, "unknown participant");
    expect_status("{\"branches\":[{\"participant\":\"payment\",\"statements\":[]}]}", 400,
                  "statements");
    expect_status("{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":1}]}]}",
                  400, "sql");
    expect_status("{\"id\":\"bad id!\",\"branches\":[{\"participant\":\"payment\",\"statements\":"
                  "[{\"sql\":\"SELECT 1\"}]}]}",
                  400, "id");
    expect_status("{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":\"SELECT "
                  "1\",\"params\":[[1]]}]}]}",
                  400, "params[0]");
    expect_status("{\"bogus\":1,\"branches\":[]}", 400, "unknown field");
    /* more statements than max_statements (64) */
    int pos =
        snprintf(big, sizeof big, "{\"branches\":[{\"participant\":\"payment\",\"statements\":[");
    for (int i = 0; i < 65; i++)
        pos +=
            snprintf(big + pos, sizeof big - (size_t)pos, "%s{\"sql\":\"SELECT 1\"}", i ? "," : "");
    snprintf(big + pos, sizeof big - (size_t)pos, "]}]}");
    expect_status(big, 400, "more than 64 statements");
    assert_int_equal(tu_balance(7), 200);
}

static void test_oversized_body(void **state)
{
    size_t n = 2 * 1024 * 1024;
    char *body = malloc(n + 1), *resp = NULL;
    memset(body, ' ', n);
    body[n] = '\0';
    assert_int_equal(tu_http(daemon_.port, "POST", "/v1/transactions", body, NULL, &resp), 413);
    free(resp);
    free(body);
    /* still serving, also after a SIGHUP (no reload, and no stop either) */
    kill(daemon_.pid, SIGHUP);
    usleep(200000);
    assert_int_equal(tu_http(daemon_.port, "GET", "/healthz", NULL, NULL, &resp), 200);
    free(resp);
    assert_int_equal(tu_http(daemon_.port, "GET", "/metrics", NULL, NULL, &resp), 200);
    assert_non_null(strstr(resp, "xacoord_pool_idle_connections{participant=\"payment\"}"));
    assert_non_null(strstr(resp, "xacoord_transactions_total{outcome=\"committed\"}"));
    free(resp);
}

static void test_token(void **state)
{
    tu_daemon d;
    char tokdir[] = "/tmp/xacoord-token-XXXXXX", tokfile[64], extra[128];
    char *resp = NULL, *body = tu_checkout_json(NULL, 1001, 7, 100, "SKU-1", 1);
    FILE *f;
    assert_non_null(mkdtemp(tokdir));
    snprintf(tokfile, sizeof tokfile, "%s/token", tokdir);
    f = fopen(tokfile, "w");
    fputs("s3cret-token\n", f);
    fclose(f);
    chmod(tokfile, 0600);
    snprintf(extra, sizeof extra, "api_token_file = %s", tokfile);
    tu_daemon_init(&d, "tok", extra);
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, NULL, &resp), 401);
    free(resp);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, "wrong", &resp), 401);
    free(resp);
    assert_int_equal(tu_http(d.port, "GET", "/healthz", NULL, NULL, &resp), 200);
    free(resp);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, "s3cret-token", &resp), 200);
    free(resp);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    tu_sh("rm -rf %s", tokdir);
    free(body);
    assert_int_equal(tu_balance(7), 100);
}

/* The command-line client: its exit code tells the outcome. */
static void test_xactl(void **state)
{
    char file[] = "/tmp/xacoord-xactl-XXXXXX", *out = NULL, args[256];
    char *body = tu_checkout_json("cli-1", 1001, 7, 100, "SKU-1", 1);
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    snprintf(args, sizeof args, "submit %s", file);
    assert_int_equal(tu_xactl(&daemon_, args, &out), 0);
    assert_non_null(strstr(out, "cli-1 committed"));
    free(out);
    assert_int_equal(tu_xactl(&daemon_, args, &out), 0); /* replayed */
    assert_non_null(strstr(out, "(replayed)"));
    free(out);
    assert_int_equal(tu_xactl(&daemon_, "show cli-1", &out), 0);
    free(out);
    assert_int_equal(tu_xactl(&daemon_, "show nope", NULL), 3);
    assert_int_equal(tu_xactl(&daemon_, "--json health", &out), 0);
    assert_non_null(strstr(out, "\"ready\":true"));
    free(out);
    assert_int_equal(tu_xactl(&daemon_, "in-doubt", &out), 0);
    assert_non_null(strstr(out, "no in-doubt branches"));
    free(out);
    unlink(file);
    free(body);
    /* an abort exits 1 */
    body = tu_checkout_json("cli-2", 1002, 7, 500, "SKU-1", 1);
    fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    assert_int_equal(tu_xactl(&daemon_, args, &out), 1);
    assert_non_null(strstr(out, "insufficient balance"));
    free(out);
    unlink(file);
    free(body);
    assert_int_equal(tu_balance(7), 100);
}

/* Above max_inflight: 503 and nothing done. */
static void test_max_inflight(void **state)
{
    tu_daemon d;
    char *resp = NULL, *first = tu_checkout_json("slow", 1001, 7, 100, "SKU-1", 1);
    char *second = tu_checkout_json("fast", 1002, 7, 100, "SKU-1", 1);
    pthread_t th;
    slow_req slow = {&d, first, 0};

    tu_daemon_init(&d, "mi", "max_inflight = 1");
    tu_daemon_start(&d, NULL);
    /* the first holds the only slot while it waits for a row lock */
    assert_int_equal(tu_sh("psql -X -q -h 127.0.0.1 -p %s -U postgres -d payment -c "
                           "\"BEGIN; SELECT * FROM account WHERE user_id = 7 FOR UPDATE; "
                           "SELECT pg_sleep(2); COMMIT;\" >/dev/null 2>&1 &",
                           tu_env("XA_PG_PORT")),
                     0);
    sleep(1);
    assert_int_equal(pthread_create(&th, NULL, slow_post, &slow), 0);
    usleep(300000);
    assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", second, NULL, &resp), 503);
    assert_non_null(strstr(resp, "overloaded"));
    free(resp);
    pthread_join(th, NULL);
    assert_int_equal(slow.status, 200);
    assert_int_equal(tu_order_status(1002), 'I'); /* the refused one did nothing */
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    free(first);
    free(second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_checkout_and_ship, reset),
        cmocka_unit_test_setup(test_insufficient_balance, reset),
        cmocka_unit_test_setup(test_order_not_awaiting_payment, reset),
        cmocka_unit_test_setup(test_out_of_stock, reset),
        cmocka_unit_test_setup(test_duplicate_payment, reset),
        cmocka_unit_test_setup(test_sql_error, reset),
        cmocka_unit_test_setup(test_participant_down, reset),
        cmocka_unit_test_setup(test_lock_timeout, reset),
        cmocka_unit_test_setup(test_same_id_twice, reset),
        cmocka_unit_test_setup(test_concurrent_checkouts_one_balance, reset),
        cmocka_unit_test_setup(test_malformed_requests, reset),
        cmocka_unit_test_setup(test_oversized_body, reset),
        cmocka_unit_test_setup(test_token, reset),
        cmocka_unit_test_setup(test_xactl, reset),
        cmocka_unit_test_setup(test_max_inflight, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
