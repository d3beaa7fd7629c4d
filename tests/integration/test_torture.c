/*
 * Torture (bounded, about a minute and a half): concurrent checkouts and ships while the daemon is
 * killed with SIGKILL at random moments and restarted, and one database server is killed and
 * restarted. At the end recovery completes, I1-I5 hold, and every answer a client received is true:
 * each id answered "committed" is committed, each answered "aborted" is not, and per order exactly
 * the committed checkouts (at most one) and ships are reflected in the data.
 * In store mode (XA_TEST_DECISION_LOG=postgres, tests/support/daemon.h) two daemons share the
 * decision store: each try goes to either one, and the kills hit either one.
 */
#include "daemon.h"
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { ORDERS = 120, CLIENTS = 6, RUN_SECONDS = 75, MAX_ATTEMPTS = 8192 };
#define FIRST_ORDER 7000

typedef struct attempt {
    char id[48];
    long order;
    bool ship;
    int answer; /* 0 none, 1 committed, 2 aborted */
} attempt;

static tu_daemon daemons[2];
static int ndaemons = 1; /* 2 in store mode */
static attempt attempts[MAX_ATTEMPTS];
static atomic_int nattempts;
static atomic_bool stop;
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static int paid[ORDERS]; /* 0 unknown, 1 believed paid (a checkout answered committed) */

static attempt *new_attempt(long order, bool ship)
{
    int i = atomic_fetch_add(&nattempts, 1);
    if (i >= MAX_ATTEMPTS)
        return NULL;
    attempt *a = &attempts[i];
    snprintf(a->id, sizeof a->id, "%s-%ld-%d", ship ? "ship" : "pay", order, i);
    a->order = order;
    a->ship = ship;
    return a;
}

/* One attempt; a lost answer is retried with the same id, as a careful client does. */
static void run_attempt(attempt *a, unsigned *seed)
{
    char *body = a->ship ? tu_ship_json(a->id, a->order)
                         : tu_checkout_json(a->id, a->order, 100 + a->order % 20, 100, "SKU-T", 1);
    for (int tries = 0; tries < 20 && !atomic_load(&stop); tries++) {
        char *resp = NULL;
        tu_daemon *d = &daemons[rand_r(seed) % (unsigned)ndaemons];
        int status = tu_http(d->port, "POST", "/v1/transactions", body, NULL, &resp);
        if (status == 200 && strstr(resp, "\"outcome\":\"committed\""))
            a->answer = 1;
        else if (status == 409 || (status == 503 && resp && strstr(resp, "\"aborted\"")))
            a->answer = 2;
        free(resp);
        if (a->answer)
            break;
        usleep(100000 + rand_r(seed) % 200000); /* daemon down or overloaded: same id again */
    }
    free(body);
}

static void *client(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        long k = rand_r(&seed) % ORDERS;
        bool ship;
        pthread_mutex_lock(&order_lock);
        ship = paid[k] == 1;
        pthread_mutex_unlock(&order_lock);
        attempt *a = new_attempt(FIRST_ORDER + k, ship);
        if (!a)
            break;
        run_attempt(a, &seed);
        if (!ship && a->answer == 1) {
            pthread_mutex_lock(&order_lock);
            paid[k] = 1;
            pthread_mutex_unlock(&order_lock);
        }
    }
    return NULL;
}

static void *chaos(void *arg)
{
    unsigned seed = 42;
    const char *secs = getenv("XA_TORTURE_SECONDS"); /* for a shorter run by hand */
    int run = secs ? atoi(secs) : RUN_SECONDS;
    time_t end = time(NULL) + run;
    bool server_killed = getenv("XA_TORTURE_NO_CHAOS") != NULL;
    while (time(NULL) < end) {
        if (server_killed && getenv("XA_TORTURE_NO_CHAOS")) {
            sleep(1);
            continue;
        }
        usleep(1500000 + rand_r(&seed) % 3000000);
        if (!server_killed && time(NULL) > end - run / 2) {
            server_killed = true;
            fprintf(stderr, "--- chaos: kill -9 the order server\n");
            tu_sh("%s/scripts/db kill order >/dev/null", tu_source_dir());
            usleep(500000);
            tu_sh("%s/scripts/db restart order >/dev/null", tu_source_dir());
            continue;
        }
        tu_daemon *victim = &daemons[rand_r(&seed) % (unsigned)ndaemons];
        fprintf(stderr, "--- chaos: kill -9 the daemon %s\n", victim->node);
        tu_daemon_kill(victim);
        tu_daemon_start(victim, NULL);
    }
    atomic_store(&stop, true);
    return NULL;
}

static void setup_data(void)
{
    char sql[16384];
    int pos;
    char *out;
    tu_shop_reset();
    pos = snprintf(sql, sizeof sql, "INSERT INTO account(user_id, balance) VALUES ");
    for (int u = 0; u < 20; u++)
        pos += snprintf(sql + pos, sizeof sql - (size_t)pos, "%s(%d, 700)", u ? "," : "", 100 + u);
    out = tu_admin_sql("payment", "payment", sql);
    assert_non_null(out);
    free(out);
    pos = snprintf(sql, sizeof sql, "INSERT INTO orders(id, user_id, amount, sku, qty) VALUES ");
    for (int i = 0; i < ORDERS; i++)
        pos += snprintf(sql + pos, sizeof sql - (size_t)pos, "%s(%d, %d, 100, 'SKU-T', 1)",
                        i ? "," : "", FIRST_ORDER + i, 100 + (FIRST_ORDER + i) % 20);
    out = tu_admin_sql("order", "shop_order", sql);
    assert_non_null(out);
    free(out);
    out = tu_admin_sql("warehouse", "shop_warehouse",
                       "INSERT INTO stock(sku, qty) VALUES ('SKU-T', 100000)");
    assert_non_null(out);
    free(out);
    assert_int_equal(tu_sh("%s/tests/invariants baseline >/dev/null", tu_source_dir()), 0);
}

static bool committed_now(const char *id)
{
    char path[96], *resp = NULL;
    int status;
    bool yes;
    snprintf(path, sizeof path, "/v1/transactions/%.64s", id);
    status = tu_http(daemons[0].port, "GET", path, NULL, NULL, &resp);
    if (status != 200 && status != 404)
        fail_msg("GET %s: %d", path, status);
    yes = status == 200 && strstr(resp, "\"outcome\":\"committed\"");
    free(resp);
    return yes;
}

static void check_truth(void)
{
    int pays[ORDERS] = {0}, ships[ORDERS] = {0}, n = atomic_load(&nattempts);
    int answered = 0;
    if (n > MAX_ATTEMPTS)
        n = MAX_ATTEMPTS;
    for (int i = 0; i < n; i++) {
        attempt *a = &attempts[i];
        bool c = committed_now(a->id);
        if (a->answer == 1 && !c)
            fail_msg("%s was answered committed but is not", a->id);
        if (a->answer == 2 && c)
            fail_msg("%s was answered aborted but committed", a->id);
        long k = a->order - FIRST_ORDER;
        answered += a->answer != 0;
        if (k < 0 || k >= ORDERS)
            fail_msg("attempt %d has order %ld", i, a->order);
        if (c && a->ship)
            ships[k]++;
        else if (c)
            pays[k]++;
    }
    for (int k = 0; k < ORDERS; k++) {
        char sql[96], *st;
        snprintf(sql, sizeof sql, "SELECT status FROM orders WHERE id = %d", FIRST_ORDER + k);
        st = tu_admin_sql("order", "shop_order", sql);
        assert_non_null(st);
        assert_true(pays[k] <= 1 && ships[k] <= 1);
        if ((st[0] != 'I') != (pays[k] == 1) || (st[0] == 'W') != (ships[k] == 1))
            fail_msg("order %d is %c but %d checkouts and %d ships committed", FIRST_ORDER + k,
                     st[0], pays[k], ships[k]);
        free(st);
    }
    fprintf(stderr, "--- %d attempts, %d answered, all answers true\n", n, answered);
    assert_true(answered > 50);
}

static void test_torture(void **state)
{
    pthread_t th[CLIENTS], ch;
    setup_data();
    ndaemons = tu_store_mode() ? 2 : 1;
    for (int i = 0; i < ndaemons; i++) {
        tu_daemon_init(&daemons[i], i ? "tu" : "tt", NULL);
        tu_daemon_start(&daemons[i], NULL);
    }
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client, (void *)(uintptr_t)(i + 1)), 0);
    assert_int_equal(pthread_create(&ch, NULL, chaos, NULL), 0);
    pthread_join(ch, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);
    /* a last restart, then recovery must leave everything consistent */
    for (int i = 0; i < ndaemons; i++) {
        tu_daemon_kill(&daemons[i]);
        tu_daemon_start(&daemons[i], NULL);
    }
    for (int waited = 0; tu_sh("%s/tests/invariants check >/dev/null 2>&1", tu_source_dir()) != 0;
         waited++) {
        if (waited > 120)
            assert_int_equal(tu_invariants(), 0);
        usleep(250000);
    }
    check_truth();
    for (int i = 0; i < ndaemons; i++) {
        assert_int_equal(tu_daemon_stop(&daemons[i]), 0);
        tu_daemon_cleanup(&daemons[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_torture)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
