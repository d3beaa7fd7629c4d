/*
 * The fault matrix (docs/design.md section 8, "Faults"): the daemon reaches each database through
 * a fault proxy (tests/support/faultproxy.h), and for each database and each protocol step -
 * connect, statements, prepare, commit, rollback, recovery listing - the proxy hangs the step,
 * resets the connection at it, loses its reply, or makes it slow (twice the phase-1 timeout)
 * while a checkout runs. Each time: the reply is the truth (or, without a reply, GET is), a
 * transaction on the two healthy databases commits while the fault lasts, nothing stays prepared
 * once it heals, and I1-I5 hold. Then one database is partitioned away for 30 s during phase 2:
 * the reply says pending, and the commit lands after healing.
 */
#include "daemon.h"
#include "faultproxy.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Phase-1 timeout of the checkouts; "slow" is twice it (section 8). */
#define TIMEOUT_MS 1000
#define SLOW_MS (2 * TIMEOUT_MS)
#define COMMIT_WAIT_MS "500"
/* Bounds of the waits: a fault must act, a reply come and a healed fault settle within these. */
#define HIT_WAIT_MS 15000
#define REPLY_WAIT_MS 20000
#define SETTLE_WAIT_MS 30000
#define PARTITION_S 30

enum { PAYMENT, ORDER, WAREHOUSE, NDB };
static const char *const db_name[NDB] = {"payment", "order", "warehouse"};
/* The proxies listen on XA_FAULT_PROXY_PORT and the next two ports (default 28401). */
static int proxy_port[NDB];
static fp_proxy *proxy[NDB];

typedef enum step { CONNECT, STATEMENT, PREPARE, COMMIT, ROLLBACK, RECOVERY, NSTEP } step;
static const char *const step_name[NSTEP] = {"connect", "statement", "prepare",
                                             "commit",  "rollback",  "recovery"};

/* The SQL each step sends, per database kind (NULL: the connect message). */
static const char *step_sql(int db, step s)
{
    static const char *const pg[NSTEP] = {NULL,
                                          "UPDATE account",
                                          "PREPARE TRANSACTION",
                                          "COMMIT PREPARED",
                                          "ROLLBACK PREPARED",
                                          "pg_prepared_xacts"};
    static const char *const my[NSTEP] = {NULL,        "UPDATE ",     "XA PREPARE",
                                          "XA COMMIT", "XA ROLLBACK", "XA RECOVER"};
    if (s == STATEMENT && db != PAYMENT)
        return db == ORDER ? "UPDATE orders" : "UPDATE stock";
    return db == PAYMENT ? pg[s] : my[s];
}

typedef struct fault {
    const char *name;
    fp_action action;
    unsigned delay_ms;
} fault;

static const fault faults[] = {
    {"hang", FP_HANG, 0},
    {"reset", FP_RESET, 0},
    {"lost-reply", FP_LOSE_REPLY, 0},
    {"slow", FP_DELAY, SLOW_MS},
};
#define NFAULT (sizeof faults / sizeof faults[0])

/* --- Requests ----------------------------------------------------------------------------- */

typedef struct post {
    tu_daemon *d;
    char *body;
    int status;
    char *resp;
    int done;
} post;

static void *post_thread(void *arg)
{
    post *p = arg;
    p->status = tu_http(p->d->port, "POST", "/v1/transactions", p->body, NULL, &p->resp);
    __atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits for the POST's reply; the daemon must answer within the phase-1 timeout plus
 * commit_wait_ms, so REPLY_WAIT_MS is generous. */
static void post_join(pthread_t th, post *p, const char *what)
{
    for (unsigned waited = 0; !__atomic_load_n(&p->done, __ATOMIC_ACQUIRE); waited += 20) {
        if (waited >= REPLY_WAIT_MS)
            fail_msg("%s: no reply within %u ms", what, REPLY_WAIT_MS);
        sleep_ms(20);
    }
    pthread_join(th, NULL);
}

/* A checkout of order 1001 (user 7, 100, one SKU-1) with a short phase-1 timeout; fail_db makes
 * that branch fail its check (a business abort), else -1. */
static char *checkout(const char *id, int fail_db)
{
    long order = fail_db == ORDER ? 9999 : 1001, amount = fail_db == PAYMENT ? 100000 : 100;
    long qty = fail_db == WAREHOUSE ? 1000 : 1;
    char *base = tu_checkout_json(id, order, 7, amount, "SKU-1", qty), *s = NULL;
    if (asprintf(&s, "{\"timeout_ms\":%d,%s", TIMEOUT_MS, base + 1) < 0)
        fail_msg("out of memory");
    free(base);
    return s;
}

/* A transaction on the two databases other than `faulted` that changes nothing (rows the
 * checkout does not touch): it needs both to prepare and commit. */
static void healthy_commit(tu_daemon *d, int faulted, const char *what)
{
    static const char *const sql[NDB] = {
        "UPDATE account SET balance = balance WHERE user_id = 9",
        "UPDATE orders SET status = status WHERE id = 1004",
        "UPDATE stock SET qty = qty WHERE sku = 'SKU-3'",
    };
    char body[1024], *resp = NULL;
    size_t len = (size_t)snprintf(body, sizeof body, "{\"branches\":[");
    int status;
    for (int db = 0, n = 0; db < NDB; db++) {
        if (db == faulted)
            continue;
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "%s{\"participant\":\"%s\",\"statements\":[{\"sql\":\"%s\","
                                "\"expect_rows\":1}]}",
                                n++ ? "," : "", db_name[db], sql[db]);
    }
    snprintf(body + len, sizeof body - len, "]}");
    status = tu_http(d->port, "POST", "/v1/transactions", body, NULL, &resp);
    if (status != 200 || !strstr(resp, "\"outcome\":\"committed\""))
        fail_msg("%s: the healthy databases did not commit: %d %s", what, status, resp ? resp : "");
    free(resp);
}

/* --- Checking ----------------------------------------------------------------------------- */

static long prepared_anywhere(void)
{
    long n = 0;
    for (int db = 0; db < NDB; db++)
        n += tu_prepared(db_name[db], "xa");
    return n;
}

/* GET's outcome of id: "committed", "aborted", "in_progress", "unknown" (404), "unavailable"
 * (503: a participant whose markers would tell cannot be asked yet); pending: the answer names
 * a pending participant. */
static const char *get_outcome(tu_daemon *d, const char *id, bool *pending)
{
    char path[160], *resp = NULL;
    const char *o = NULL;
    int status;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = tu_http(d->port, "GET", path, NULL, NULL, &resp);
    if (status == 404)
        o = "unknown";
    else if (status == 503 && resp && strstr(resp, "cannot tell"))
        o = "unavailable";
    else if (status != 200 || !resp)
        fail_msg("GET %s: %d %s", path, status, resp ? resp : "");
    else if (strstr(resp, "\"outcome\":\"committed\""))
        o = "committed";
    else if (strstr(resp, "\"outcome\":\"aborted\""))
        o = "aborted";
    else
        o = "in_progress";
    *pending = resp && strstr(resp, "\"pending\":[\"");
    free(resp);
    return o;
}

/* Once healed: waits until nothing is prepared and the id's outcome is final with nothing
 * pending; returns whether it committed. */
static bool settle(tu_daemon *d, const char *id, const char *what)
{
    for (unsigned waited = 0;; waited += 100) {
        bool pending;
        const char *o = get_outcome(d, id, &pending);
        bool final = strcmp(o, "in_progress") != 0 && strcmp(o, "unavailable") != 0 && !pending;
        if (final && prepared_anywhere() == 0)
            return strcmp(o, "committed") == 0;
        if (waited >= SETTLE_WAIT_MS)
            fail_msg("%s: not settled %u ms after healing: GET %s%s, %ld prepared", what,
                     SETTLE_WAIT_MS, o, pending ? " (pending)" : "", prepared_anywhere());
        sleep_ms(100);
    }
}

/* No branch ended against its decision (a heuristic outcome or a data-loss alarm). */
static void assert_no_heuristics(tu_daemon *d, const char *what)
{
    char *resp = NULL;
    int status = tu_http(d->port, "GET", "/v1/heuristics", NULL, NULL, &resp);
    if (status != 200 || !resp || (!strstr(resp, "\"total\": 0") && !strstr(resp, "\"total\":0")))
        fail_msg("%s: heuristic outcomes: %d %s", what, status, resp ? resp : "");
    free(resp);
}

/* A lost COMMIT reply must really have been lost after the COMMIT ran: the retry found the branch
 * already finished (section 3: "not found", not listed, marker present). */
static void assert_found_finished(tu_daemon *d, int db, const char *what)
{
    char *resp = NULL, want[96];
    const char *at;
    int status = tu_http(d->port, "GET", "/metrics", NULL, NULL, &resp);
    snprintf(want, sizeof want, "xacoord_xid_not_found_total{participant=\"%s\"} ", db_name[db]);
    at = resp ? strstr(resp, want) : NULL;
    if (status != 200 || !at || atol(at + strlen(want)) < 1)
        fail_msg("%s: no branch was found already committed (%.*s)", what,
                 at ? (int)strcspn(at, "\n") : 14, at ? at : "metric missing");
    free(resp);
}

/* The checkout's work in the data: 1 all of it, 0 none of it (anything else breaks I2). */
static bool checkout_landed(void)
{
    char st = tu_order_status(1001);
    return st == 'P';
}

/* --- The matrix ---------------------------------------------------------------------------- */

typedef struct cell {
    int db;
    step s;
    const fault *f;
} cell;

/* What the contract promises for a cell's reply (section 8): phase-1 faults abort (a retry on a
 * fresh connection meets the same fault), commit faults commit, rollback faults abort with the
 * failing branch's reason. The recovery listing is not on a checkout's path: it commits. */
static bool expect_commit(const cell *c)
{
    return c->s == COMMIT || c->s == RECOVERY;
}

static void check_reply(const cell *c, const char *what, const post *p, bool landed)
{
    const char *resp = p->resp ? p->resp : "";
    bool committed = p->status == 200 && strstr(resp, "\"outcome\":\"committed\"");
    if (p->status != 200 && p->status != 409 && p->status != 503)
        fail_msg("%s: unexpected reply %d %s", what, p->status, resp);
    if (committed != landed)
        fail_msg("%s: the reply says %s, the data says %s: %s", what,
                 committed ? "committed" : "aborted", landed ? "committed" : "not", resp);
    if (committed != expect_commit(c))
        fail_msg("%s: expected %s, got %d %s", what, expect_commit(c) ? "committed" : "aborted",
                 p->status, resp);
    if (committed || c->s == ROLLBACK)
        return;
    /* A phase-1 fault is transient: the client may retry. A connection that is gone is 503. */
    if (!strstr(resp, "\"retryable\":true"))
        fail_msg("%s: a transient abort must be retryable: %d %s", what, p->status, resp);
    if ((c->f->action == FP_RESET || c->f->action == FP_LOSE_REPLY) && p->status != 503)
        fail_msg("%s: a lost connection must answer 503: %d %s", what, p->status, resp);
}

/* The daemon of the cell running now: a failed cell leaves it running, and with it the
 * ownership locks of node "fx" that the next cell's daemon needs. */
static tu_daemon *running;

static void start_daemon(tu_daemon *d)
{
    char port[16], section[64];
    tu_daemon_init(d, "fx", NULL);
    /* Short waits keep the matrix short: the reply leaves after COMMIT_WAIT_MS with what is
     * still pending, and scans come often enough to finish a healed fault within a second. */
    tu_daemon_set_key(d, "coordinator", "commit_wait_ms", COMMIT_WAIT_MS);
    tu_daemon_set_key(d, "coordinator", "recovery_interval_ms", "300");
    for (int db = 0; db < NDB; db++) {
        snprintf(port, sizeof port, "%d", proxy_port[db]);
        snprintf(section, sizeof section, "participant.%s", db_name[db]);
        tu_daemon_set_key(d, section, "port", port);
    }
    tu_daemon_start(d, NULL);
    running = d;
}

/* Whatever a failed cell left behind: its daemon, its rules. */
static void clean_up_failed_cell(void)
{
    if (running && running->pid > 0)
        tu_daemon_kill(running);
    running = NULL;
    for (int db = 0; db < NDB; db++)
        fp_heal(proxy[db]);
}

/* A cell's start: what a failed one left behind gone, the shop's data fresh, a daemon ready. */
static void begin_cell(tu_daemon *d)
{
    clean_up_failed_cell();
    tu_shop_reset();
    start_daemon(d);
}

/* The checkout under test, from another thread (see post_join). */
static void post_checkout(tu_daemon *d, post *p, pthread_t *th, const char *id, int fail_db)
{
    p->d = d;
    p->body = checkout(id, fail_db);
    assert_int_equal(pthread_create(th, NULL, post_thread, p), 0);
}

/* A cell's end, once healed and settled: no heuristics, I1-I5, a clean stop. */
static void end_cell(tu_daemon *d, post *p, const char *what)
{
    assert_no_heuristics(d, what);
    assert_int_equal(tu_invariants(), 0);
    assert_int_equal(tu_daemon_stop(d), 0);
    running = NULL;
    tu_daemon_cleanup(d);
    free(p->body);
    free(p->resp);
}

/* The failing branch of a rollback cell: another database, whose check is delayed so that the
 * faulted database has prepared by then and gets a ROLLBACK of a prepared branch. */
static int rollback_culprit(int db)
{
    return (db + 1) % NDB;
}

static void run_cell(const cell *c)
{
    char what[96], id[96];
    static tu_daemon d; /* outlives a failed cell: see clean_up_failed_cell */
    post p = {0};
    pthread_t th;
    fp_rule rule = {
        .action = c->f->action, .match = step_sql(c->db, c->s), .delay_ms = c->f->delay_ms};
    int culprit = c->s == ROLLBACK ? rollback_culprit(c->db) : -1;
    bool landed;
    snprintf(what, sizeof what, "%s %s %s", db_name[c->db], step_name[c->s], c->f->name);
    snprintf(id, sizeof id, "f-%s-%s-%s", db_name[c->db], step_name[c->s], c->f->name);
    print_message("[ cell     ] %s\n", what);

    begin_cell(&d);
    if (c->s == CONNECT) /* every pooled connection dies: the checkout must connect anew */
        fp_reset_all(proxy[c->db]);
    if (culprit >= 0) {
        fp_rule late = {
            .action = FP_DELAY, .match = step_sql(culprit, STATEMENT), .delay_ms = 300, .times = 1};
        fp_set(proxy[culprit], &late);
    }
    fp_set(proxy[c->db], &rule);
    if (c->s == RECOVERY && fp_wait_hits(proxy[c->db], 1, HIT_WAIT_MS) != 0)
        fail_msg("%s: no recovery scan within %u ms", what, HIT_WAIT_MS);

    post_checkout(&d, &p, &th, id, culprit);
    if (fp_wait_hits(proxy[c->db], 1, HIT_WAIT_MS) != 0)
        fail_msg("%s: the fault never acted", what);
    healthy_commit(&d, c->db, what); /* the daemon keeps serving meanwhile */
    post_join(th, &p, what);

    for (int db = 0; db < NDB; db++)
        fp_heal(proxy[db]);
    landed = settle(&d, id, what);
    assert_int_equal(checkout_landed(), landed);
    if (p.status < 0) /* no reply: GET is the truth, and settle checked it against the data */
        print_message("[ no reply ] %s: GET says %s\n", what, landed ? "committed" : "not");
    else
        check_reply(c, what, &p, landed);
    if (c->s == COMMIT && c->f->action == FP_LOSE_REPLY)
        assert_found_finished(&d, c->db, what);
    end_cell(&d, &p, what);
}

static void run_matrix(int db)
{
    for (int s = 0; s < NSTEP; s++)
        for (size_t f = 0; f < NFAULT; f++) {
            cell c = {db, (step)s, &faults[f]};
            run_cell(&c);
        }
}

static void test_payment(void **state)
{
    (void)state;
    run_matrix(PAYMENT);
}

static void test_order(void **state)
{
    (void)state;
    run_matrix(ORDER);
}

static void test_warehouse(void **state)
{
    (void)state;
    run_matrix(WAREHOUSE);
}

/* Section 8, "Partition in phase 2": the decision is durable, so the reply says committed with
 * the partitioned database pending; the healthy ones keep serving; after healing the commit
 * lands and nothing stays prepared. */
static void test_partition_in_phase2(void **state)
{
    const char *what = "partition";
    const int db = ORDER;
    static tu_daemon d; /* outlives a failed cell: see clean_up_failed_cell */
    post p = {0};
    pthread_t th;
    fp_rule rule = {.action = FP_HANG, .match = step_sql(db, COMMIT)};
    time_t start;
    bool pending;
    (void)state;
    begin_cell(&d);
    fp_set(proxy[db], &rule);
    post_checkout(&d, &p, &th, "f-partition", -1);
    if (fp_wait_hits(proxy[db], 1, HIT_WAIT_MS) != 0)
        fail_msg("partition: phase 2 never reached %s", db_name[db]);
    fp_partition(proxy[db]);
    start = time(NULL);
    post_join(th, &p, "partition");
    if (p.status != 200 || !strstr(p.resp, "\"outcome\":\"committed\"") ||
        !strstr(p.resp, "\"pending\":[\"order\"]"))
        fail_msg("partition: expected committed with order pending: %d %s", p.status,
                 p.resp ? p.resp : "");
    while (time(NULL) - start < PARTITION_S) {
        healthy_commit(&d, db, "partition");
        assert_string_equal(get_outcome(&d, "f-partition", &pending), "committed");
        assert_true(pending);
        sleep_ms(1000);
    }
    fp_heal(proxy[db]);
    assert_true(settle(&d, "f-partition", "partition"));
    assert_true(checkout_landed());
    end_cell(&d, &p, what);
}

/* Section 8, "Half-open connection": the daemon's connection is reset while the database's
 * session lives on, unaware, still holding the branch (on MariaDB its XID, which a fresh
 * connection's XA START then finds taken). The branch starts over once on a fresh connection;
 * whether that succeeds or not, a lost connection is never a 409: committed, or 503 and
 * retryable. */
static void half_open(int db)
{
    static tu_daemon d; /* outlives a failed cell: see clean_up_failed_cell */
    char what[64], id[64];
    post p = {0};
    pthread_t th;
    fp_rule rule = {.action = FP_RESET_HALF, .match = step_sql(db, STATEMENT), .times = 1};
    const char *resp;
    bool landed, committed;
    snprintf(what, sizeof what, "%s half-open reset", db_name[db]);
    snprintf(id, sizeof id, "f-%s-half-open", db_name[db]);
    begin_cell(&d);
    fp_set(proxy[db], &rule);
    post_checkout(&d, &p, &th, id, -1);
    if (fp_wait_hits(proxy[db], 1, HIT_WAIT_MS) != 0)
        fail_msg("%s: the fault never acted", what);
    healthy_commit(&d, db, what);
    post_join(th, &p, what);
    resp = p.resp ? p.resp : "";
    committed = p.status == 200 && strstr(resp, "\"outcome\":\"committed\"");
    if (!committed && (p.status != 503 || !strstr(resp, "\"retryable\":true")))
        fail_msg("%s: a lost connection must answer committed or 503: %d %s", what, p.status, resp);
    print_message("[ reply    ] %s: %d %.160s\n", what, p.status, resp);
    fp_heal(proxy[db]);
    landed = settle(&d, id, what);
    assert_int_equal(landed, committed);
    assert_int_equal(checkout_landed(), landed);
    end_cell(&d, &p, what);
}

static void test_half_open_order(void **state)
{
    (void)state;
    half_open(ORDER);
}

static void test_half_open_payment(void **state)
{
    (void)state;
    half_open(PAYMENT);
}

static int start_proxies(void **state)
{
    const char *up[NDB] = {tu_env("XA_PG_PORT"), tu_env("XA_ORDER_PORT"),
                           tu_env("XA_WAREHOUSE_PORT")};
    const char *base = getenv("XA_FAULT_PROXY_PORT");
    (void)state;
    for (int db = 0; db < NDB; db++) {
        proxy_port[db] = (base ? atoi(base) : 28401) + db;
        proxy[db] = fp_start(db == PAYMENT ? FP_POSTGRES : FP_MYSQL, proxy_port[db], atoi(up[db]));
        if (!proxy[db])
            return -EIO; /* cmocka: a non-zero group setup fails the group */
    }
    return 0;
}

static int stop_proxies(void **state)
{
    (void)state;
    for (int db = 0; db < NDB; db++)
        if (proxy[db])
            fp_stop(proxy[db]);
    return 0;
}

/* One cell, for a developer chasing one: test_faults DB STEP FAULT. */
static cell only;

static void test_one(void **state)
{
    (void)state;
    run_cell(&only);
}

/* Sets `only` to the cell named; -ENOENT when there is none of that name. */
static int pick_cell(const char *db, const char *s, const char *f)
{
    for (int i = 0; i < NDB; i++)
        for (int j = 0; j < NSTEP; j++)
            for (size_t k = 0; k < NFAULT; k++)
                if (!strcmp(db, db_name[i]) && !strcmp(s, step_name[j]) &&
                    !strcmp(f, faults[k].name)) {
                    only = (cell){i, (step)j, &faults[k]};
                    return 0;
                }
    return -ENOENT;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payment),         cmocka_unit_test(test_order),
        cmocka_unit_test(test_warehouse),       cmocka_unit_test(test_partition_in_phase2),
        cmocka_unit_test(test_half_open_order), cmocka_unit_test(test_half_open_payment),
    };
    const struct CMUnitTest one[] = {cmocka_unit_test(test_one)};
    if (argc == 2) { /* one of the tests above by name */
        for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
            if (!strcmp(argv[1], tests[i].name))
                return _cmocka_run_group_tests("test_faults", &tests[i], 1, start_proxies,
                                               stop_proxies);
        fprintf(stderr, "no test %s\n", argv[1]);
        return 2;
    }
    if (argc == 4) {
        if (pick_cell(argv[1], argv[2], argv[3]) != 0) {
            fprintf(stderr, "no cell %s %s %s\n", argv[1], argv[2], argv[3]);
            return 2;
        }
        return cmocka_run_group_tests(one, start_proxies, stop_proxies);
    }
    return cmocka_run_group_tests(tests, start_proxies, stop_proxies);
}
