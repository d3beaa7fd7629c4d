/*
 * Hostile clients (issue 9): no request, however crafted, may make xacoord lie about an outcome,
 * freeze, leak one client's session state into another client's transaction, or lose a commit.
 *
 * One daemon (node_id "hostile") runs for the whole program against the shared PostgreSQL and
 * MariaDB servers, with pool_size = 1 on every participant so that each transaction reuses the
 * connection of the one before it. Every request goes through post_body(), which also checks the
 * properties that must hold after *any* request:
 *   - an answer comes at all (a request that gets none within POST_DEADLINE_MS froze the daemon:
 *     it is killed and restarted, which runs recovery, and the case is reported);
 *   - /healthz answers 200 within HEALTH_LIMIT_MS right after it;
 *   - GET /v1/transactions/{id} agrees with a 200/409/503 answer that carried an id
 *     (committed <=> committed; a permanent abort is "aborted"; a transient abort may be 404);
 *   - every result that carries rows also carries "columns".
 * Checks record a failure and go on (CHECK), so one run reports every broken case with the reply
 * it got; each test fails at its end when any of its checks failed. Preconditions use REQUIRE.
 * After each test that sends hostile statements, no prepared transaction of this coordinator (or
 * created by a hostile statement) may be left behind that /v1/in-doubt does not list, and
 * tests/invariants must pass.
 *
 * The servers are shared: a test program running at the same time (its resets end every session)
 * can make cases here fail spuriously; run this one alone.
 */
#include "daemon.h"
#include "identity.h"
#include "testutil.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define NODE "hostile"
#define PREFIX "xa2." NODE "." /* every identity of the node */
/* The phase-1 bound is 5 s (tu_daemon_init) and commit_wait_ms 2 s: an answer later than this
 * means the daemon stopped serving. */
#define POST_DEADLINE_MS 15000
#define HEALTH_LIMIT_MS 1000
/* No participant sets lock_timeout_ms, so config.c makes it half of default_timeout_ms (5000). */
#define CONFIGURED_LOCK_TIMEOUT "2500ms"
/* The log line a hostile statement tries to forge. */
#define FORGED_STAMP "2030-01-01T00:00:00.000Z"

static tu_daemon daemon_;
static int failures;
static int next_id;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  CHECK FAILED (%s:%d): ", __func__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg(__VA_ARGS__);                                                                 \
    } while (0)

/* Ends a test: fails it when any CHECK failed. */
static void finish(void)
{
    int n = failures;
    failures = 0;
    if (n)
        fail_msg("%d check(s) failed (see above)", n);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static const char *str(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

/* ---- HTTP with a deadline ---------------------------------------------------------------- */

typedef struct http_call {
    const char *method, *path, *body;
    int status;
    char *resp;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} http_call;

static void *http_thread(void *arg)
{
    http_call *c = arg;
    char *resp = NULL;
    int status = tu_http(daemon_.port, c->method, c->path, c->body, NULL, &resp);
    pthread_mutex_lock(&c->mu);
    c->status = status;
    c->resp = resp;
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* One request that must be answered within deadline_ms. Returns the status; -ETIMEDOUT when no
 * answer came in time: the daemon is frozen, and it is killed here (which also ends the blocked
 * request); another negative errno (tu_http's) when the connection failed, e.g. the daemon died.
 * *ms gets the round trip. */
static int timed_http(const char *method, const char *path, const char *body, unsigned deadline_ms,
                      char **resp, long *ms)
{
    http_call c = {.method = method, .path = path, .body = body};
    struct timespec until;
    pthread_t th;
    bool late = false;
    long t0 = now_ms();

    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += deadline_ms / 1000;
    until.tv_nsec += (long)(deadline_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    REQUIRE(pthread_create(&th, NULL, http_thread, &c) == 0, "pthread_create");
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        if (pthread_cond_timedwait(&c.cv, &c.mu, &until) == ETIMEDOUT) {
            late = !c.done;
            break;
        }
    pthread_mutex_unlock(&c.mu);
    if (ms)
        *ms = now_ms() - t0;
    if (late) {
        fprintf(stderr, "  %s %s: no answer within %u ms; the daemon is frozen, killing it\n",
                method, path, deadline_ms);
        tu_sh("tail -n 15 %s >&2", daemon_.log);
        tu_daemon_kill(&daemon_);
    }
    pthread_join(th, NULL);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    if (late) {
        free(c.resp);
        c.resp = NULL;
        c.status = -ETIMEDOUT;
    }
    *resp = c.resp;
    return c.status;
}

/* Makes sure a responsive daemon runs: starts it again (recovery included) when an earlier case
 * froze or killed it. */
static void ensure_daemon(void)
{
    char *resp = NULL;
    long ms;
    if (daemon_.pid > 0) {
        int status = timed_http("GET", "/healthz", NULL, 3000, &resp, &ms);
        free(resp);
        if (status == 200)
            return;
        tu_daemon_kill(&daemon_);
    }
    fprintf(stderr, "  (re)starting the daemon\n");
    tu_daemon_start(&daemon_, NULL);
}

/* /healthz must answer 200 within HEALTH_LIMIT_MS (the loop is never blocked). */
static void check_health(const char *after)
{
    char *resp = NULL;
    long ms = 0;
    int status = timed_http("GET", "/healthz", NULL, 3000, &resp, &ms);
    free(resp);
    CHECK(status == 200, "/healthz answered %d after %s", status, after);
    CHECK(ms < HEALTH_LIMIT_MS, "/healthz took %ld ms after %s", ms, after);
    if (status != 200)
        ensure_daemon();
}

static int get_txn(const char *id, json_t **out)
{
    char path[160], *resp = NULL;
    long ms;
    int status;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = timed_http("GET", path, NULL, 5000, &resp, &ms);
    *out = resp ? json_loads(resp, 0, NULL) : NULL;
    if (!*out)
        *out = json_object();
    free(resp);
    return status;
}

/* ---- requests ---------------------------------------------------------------------------- */

typedef struct reply {
    int status; /* HTTP status; -ETIMEDOUT no answer in time, another < 0 no connection */
    json_t *j;  /* the parsed body; an empty object when there was none or it was not JSON */
    char *raw;  /* the body as received ("" when none) */
} reply;

static void reply_free(reply *r)
{
    json_decref(r->j);
    free(r->raw);
    r->j = NULL;
    r->raw = NULL;
}

/* What the daemon says about the id of an answered request must agree with the answer. */
static void check_get_agrees(const reply *r, const char *what)
{
    const char *id = str(r->j, "id");
    bool retryable = json_is_true(json_object_get(r->j, "retryable"));
    json_t *g;
    int status;
    if ((r->status != 200 && r->status != 409 && r->status != 503) || !*id)
        return;
    status = get_txn(id, &g);
    if (r->status == 200)
        CHECK(status == 200 && strcmp(str(g, "outcome"), "committed") == 0,
              "%s: answered 200 committed, but GET %s says %d %s", what, id, status,
              str(g, "outcome"));
    else if (retryable)
        CHECK(status == 404 || (status == 200 && strcmp(str(g, "outcome"), "aborted") == 0),
              "%s: answered a transient abort, but GET %s says %d %s", what, id, status,
              str(g, "outcome"));
    else
        CHECK(status == 200 && strcmp(str(g, "outcome"), "aborted") == 0,
              "%s: answered a permanent abort, but GET %s says %d %s", what, id, status,
              str(g, "outcome"));
    json_decref(g);
}

/* Every result with rows names its columns. */
static void check_columns(const reply *r, const char *what)
{
    json_t *b, *res;
    size_t i, k;
    json_array_foreach(json_object_get(r->j, "branches"), i, b)
    {
        json_array_foreach(json_object_get(b, "results"), k, res)
        {
            if (json_object_get(res, "rows"))
                CHECK(json_is_array(json_object_get(res, "columns")),
                      "%s: %s result %zu has rows but no \"columns\"", what, str(b, "participant"),
                      k);
        }
    }
}

/* Posts one request body; checks health and agreement afterwards. Never fails the test itself. */
static reply post_body(const char *body, const char *what)
{
    reply r = {0};
    long ms;
    r.status = timed_http("POST", "/v1/transactions", body, POST_DEADLINE_MS, &r.raw, &ms);
    if (!r.raw)
        r.raw = strdup("");
    r.j = json_loads(r.raw, 0, NULL);
    if (r.status == -ETIMEDOUT) {
        CHECK(false, "%s: no answer within %d ms: the daemon froze", what, POST_DEADLINE_MS);
        ensure_daemon();
    } else if (r.status < 0) {
        CHECK(false, "%s: the connection failed: the daemon died?", what);
        tu_sh("tail -n 30 %s >&2", daemon_.log);
        ensure_daemon();
    } else {
        CHECK(r.j != NULL, "%s: status %d, body is not JSON: %s", what, r.status, r.raw);
    }
    if (!r.j)
        r.j = json_object();
    if (r.status > 0) {
        check_health(what);
        check_get_agrees(&r, what);
        if (r.status == 200)
            check_columns(&r, what);
    }
    return r;
}

/* Posts {"id": id (when not NULL), "branches": branches}; steals branches. */
static reply post_req(const char *id, json_t *branches, const char *what)
{
    json_t *req = json_pack("{s:o}", "branches", branches);
    char *body;
    reply r;
    if (id)
        json_object_set_new(req, "id", json_string(id));
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    REQUIRE(body != NULL, "json_dumps");
    r = post_body(body, what);
    free(body);
    return r;
}

/* A fresh client id for this run. */
static const char *new_id(char *buf, size_t len)
{
    snprintf(buf, len, "h-%d-%d", (int)getpid(), ++next_id);
    return buf;
}

/* ---- request builders -------------------------------------------------------------------- */

static json_t *st(const char *sql)
{
    return json_pack("{s:s}", "sql", sql);
}

static json_t *stp(const char *sql, json_t *params)
{
    return json_pack("{s:s, s:o}", "sql", sql, "params", params);
}

static json_t *branch(const char *participant, json_t *stmts)
{
    return json_pack("{s:s, s:o}", "participant", participant, "statements", stmts);
}

/* One branch of plain statements (NULL-terminated). */
static json_t *branch_sql(const char *participant, ...)
{
    json_t *stmts = json_array();
    va_list ap;
    va_start(ap, participant);
    for (const char *sql = va_arg(ap, const char *); sql; sql = va_arg(ap, const char *))
        json_array_append_new(stmts, st(sql));
    va_end(ap);
    return branch(participant, stmts);
}

/* The checkout's statements for order 1001 (user 7 pays 100, one SKU-1). */
static json_t *debit(void)
{
    return json_pack("{s:s, s:[i,i], s:i, s:s}", "sql",
                     "UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND "
                     "balance >= $1",
                     "params", 100, 7, "expect_rows", 1, "abort_reason", "insufficient balance");
}

static json_t *record_payment(void)
{
    return stp("INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)",
               json_pack("[i,i,i]", 1001, 7, 100));
}

/* An order branch whose check fails: the transaction must abort. */
static json_t *failing_order_branch(void)
{
    return branch("order", json_pack("[{s:s, s:[i], s:i, s:s}]", "sql",
                                     "UPDATE orders SET status = 'P' WHERE id = ? AND status = 'X'",
                                     "params", 1001, "expect_rows", 1, "abort_reason",
                                     "order is not in state X"));
}

/* One transaction of one statement on one participant. */
static reply post1(const char *participant, const char *sql, const char *what)
{
    char id[48];
    return post_req(new_id(id, sizeof id), json_pack("[o]", branch_sql(participant, sql, NULL)),
                    what);
}

/* The full checkout of order 1001 (tests/support). */
static reply post_checkout(const char *what)
{
    char id[48], *body = tu_checkout_json(new_id(id, sizeof id), 1001, 7, 100, "SKU-1", 1);
    reply r = post_body(body, what);
    free(body);
    return r;
}

/* Result `stmt` of `participant`'s branch in a 200 answer, or NULL. */
static json_t *result_of(const reply *r, const char *participant, int stmt)
{
    json_t *b;
    size_t i;
    json_array_foreach(json_object_get(r->j, "branches"), i, b)
    {
        if (strcmp(str(b, "participant"), participant) == 0)
            return json_array_get(json_object_get(b, "results"), (size_t)stmt);
    }
    return NULL;
}

/* Column `col` of the first row of a one-statement transaction's result (rows as objects). */
static json_t *cell(const reply *r, const char *participant, const char *col)
{
    json_t *res = result_of(r, participant, 0);
    json_t *row = json_array_get(json_object_get(res, "rows"), 0);
    return json_object_get(row, col);
}

static char *dump(json_t *v)
{
    static char buf[512];
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(buf, sizeof buf, "%s", s ? s : "(missing)");
    free(s);
    return buf;
}

/* ---- the shop's data and leftovers ------------------------------------------------------- */

typedef struct shop_state {
    long balance, payments, stock;
    char status;
} shop_state;

static shop_state shop_now(void)
{
    shop_state s;
    s.balance = tu_balance(7);
    s.payments = tu_shop_long("payment", "SELECT count(*) FROM payment");
    s.stock = tu_shop_long("warehouse", "SELECT qty FROM stock WHERE sku = 'SKU-1'");
    s.status = tu_order_status(1001);
    return s;
}

static bool shop_same(shop_state a, shop_state b)
{
    return a.balance == b.balance && a.payments == b.payments && a.stock == b.stock &&
           a.status == b.status;
}

/* Appends the lines of `text` to out, joined by ", ", keeping those that `keep` accepts. */
static void add_lines(FILE *out, const char *label, char *text, bool (*keep)(const char *))
{
    char *save = NULL;
    bool first = true;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (keep && !keep(line))
            continue;
        fprintf(out, "%s%s%s", first ? label : ", ", first ? ": " : "", line);
        first = false;
    }
    if (!first)
        fputc(' ', out);
}

/* An XA RECOVER row (formatID, gtrid_length, bqual_length, data) of this run. */
static bool ours_xa(const char *line)
{
    const char *data = strrchr(line, '\t');
    data = data ? data + 1 : line;
    return strncmp(data, PREFIX, strlen(PREFIX)) == 0 || strstr(data, "hostile") != NULL;
}

/* Prepared transactions this run could have left: this node's branches, and any a hostile
 * statement named (gids with "hostile"). Returns them as text, "" when there are none. */
static char *leftovers(void)
{
    static const char *const my[][2] = {{"order", "shop_order"}, {"warehouse", "shop_warehouse"}};
    char *text = NULL, *out;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    out = tu_admin_sql("payment", "payment",
                       "SELECT gid || ' (' || database || ')' FROM pg_prepared_xacts WHERE gid "
                       "LIKE '" PREFIX "%' OR gid LIKE '%hostile%'");
    if (!out)
        fputs("(pg_prepared_xacts could not be read) ", f);
    else
        add_lines(f, "payment", out, NULL);
    free(out);
    for (size_t i = 0; i < 2; i++) {
        out = tu_admin_sql(my[i][0], my[i][1], "XA RECOVER");
        if (!out)
            fprintf(f, "(XA RECOVER on %s failed) ", my[i][0]);
        else
            add_lines(f, my[i][0], out, ours_xa);
        free(out);
    }
    fclose(f);
    return text;
}

/* No prepared transaction may stay behind once the daemon is idle: this coordinator's branches are
 * finished within a few seconds (and until then listed by /v1/in-doubt), and no other may exist.
 * Also rolls back what a hostile PREPARE TRANSACTION left, so that it cannot disturb later tests.
 */
static void check_no_stray_prepared(const char *after)
{
    char *left = NULL, *resp = NULL;
    long ms;
    for (int i = 0; i < 32; i++) {
        free(left);
        left = leftovers();
        if (left && !*left)
            break;
        usleep(250000);
    }
    if (left && *left)
        timed_http("GET", "/v1/in-doubt", NULL, 3000, &resp, &ms);
    CHECK(left && !*left, "after %s: prepared transactions left: %s (/v1/in-doubt: %s)", after,
          left ? left : "(query failed)", resp ? resp : "-");
    free(resp);
    if (left && strstr(left, "hostile-x"))
        free(tu_admin_sql("payment", "payment", "ROLLBACK PREPARED 'hostile-x'"));
    free(left);
    CHECK(tu_invariants() == 0, "after %s: tests/invariants check fails", after);
}

/* ---- metrics ----------------------------------------------------------------------------- */

/* Sum of the /metrics samples whose name mentions "discard" for participant p; -1 when the daemon
 * exports no such metric. */
static double discards(const char *p)
{
    char *resp = NULL, label[64], *save = NULL;
    long ms;
    double sum = -1;
    snprintf(label, sizeof label, "participant=\"%s\"", p);
    if (timed_http("GET", "/metrics", NULL, 3000, &resp, &ms) != 200 || !resp) {
        free(resp);
        return -1;
    }
    for (char *line = strtok_r(resp, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *sp = strrchr(line, ' ');
        if (line[0] == '#' || !strstr(line, "discard") || !strstr(line, label) || !sp)
            continue;
        sum = (sum < 0 ? 0 : sum) + strtod(sp + 1, NULL);
    }
    free(resp);
    return sum;
}

/* ---- setup ------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    tu_daemon_init(&daemon_, NODE, NULL);
    /* one connection per participant: every transaction reuses the previous one's session */
    tu_daemon_set_pool_size(&daemon_, 1);
    tu_daemon_start(&daemon_, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    int rc;
    ensure_daemon();
    rc = tu_daemon_stop(&daemon_);
    tu_daemon_cleanup(&daemon_);
    assert_int_equal(rc, 0);
    return 0;
}

static int per_test(void **state)
{
    failures = 0;
    ensure_daemon();
    tu_shop_reset();
    return 0;
}

/* ---- 1. the statement guard -------------------------------------------------------------- */

static bool word_in(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strcasestr(p, word)) != NULL; p++) {
        bool left = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
        bool right = !(isalnum((unsigned char)p[n]) || p[n] == '_');
        if (left && right)
            return true;
    }
    return false;
}

/* The request (branches as sent) must get 400 with an error naming the branch index bi, the
 * statement index si, the participant and the keyword; nothing may run: the shop's data stays
 * as it was and the id stays unknown. */
static void expect_refused(json_t *branches, int bi, int si, const char *participant,
                           const char *keyword, const char *what)
{
    char id[48], b1[32], b2[32], s1[32], s2[32];
    shop_state before = shop_now(), after;
    reply r = post_req(new_id(id, sizeof id), branches, what);
    const char *err = str(r.j, "error");
    json_t *g;
    int gst;

    fprintf(stderr, "  guard: %-44s -> %d %s\n", what, r.status, r.raw);
    snprintf(b1, sizeof b1, "branches[%d]", bi);
    snprintf(b2, sizeof b2, "branch %d", bi);
    snprintf(s1, sizeof s1, "statements[%d]", si);
    snprintf(s2, sizeof s2, "statement %d", si);
    CHECK(r.status == 400, "%s: status %d (want 400): %s", what, r.status, r.raw);
    if (r.status == 400) {
        CHECK(strstr(err, b1) || strcasestr(err, b2), "%s: error does not name branch %d: %s", what,
              bi, err);
        CHECK(strstr(err, s1) || strcasestr(err, s2), "%s: error does not name statement %d: %s",
              what, si, err);
        CHECK(strstr(err, participant), "%s: error does not name participant %s: %s", what,
              participant, err);
        CHECK(word_in(err, keyword), "%s: error does not name the keyword %s: %s", what, keyword,
              err);
    }
    gst = get_txn(id, &g);
    CHECK(gst == 404, "%s: GET of its id answers %d (want 404): %s", what, gst, dump(g));
    json_decref(g);
    after = shop_now();
    CHECK(shop_same(before, after),
          "%s: the data changed: balance %ld->%ld, payments %ld->%ld, stock %ld->%ld, "
          "order %c->%c",
          what, before.balance, after.balance, before.payments, after.payments, before.stock,
          after.stock, before.status, after.status);
    if (!shop_same(before, after))
        tu_shop_reset(); /* so that the next case starts from the seed data */
    reply_free(&r);
}

/* Transaction control, COPY, PREPARE and SET in a PostgreSQL branch: each would let the client
 * end, split or outlive the coordinator's transaction (so the reply lies), freeze the loop
 * (COPY), or change the pooled session for later clients. Refused before anything runs. */
static void test_guard_postgres(void **state)
{
    expect_refused(json_pack("[o]", branch_sql("payment", "COPY (SELECT 1) TO STDOUT", NULL)), 0, 0,
                   "payment", "COPY", "COPY (SELECT 1) TO STDOUT");
    expect_refused(json_pack("[o]", branch_sql("payment", "COPY account FROM STDIN", NULL)), 0, 0,
                   "payment", "COPY", "COPY account FROM STDIN");
    expect_refused(
        json_pack("[o]", branch("payment", json_pack("[o,o,o,o]", debit(), record_payment(),
                                                     st("ROLLBACK"), st("BEGIN")))),
        0, 2, "payment", "ROLLBACK", "[debit, insert, ROLLBACK, BEGIN]");
    /* the other branch fails, so a COMMIT inside the payment branch would outlive the abort; the
     * payment branch is the request's second although the coordinator may sort branches */
    expect_refused(json_pack("[o,o]", failing_order_branch(),
                             branch("payment", json_pack("[o,o]", debit(), st("COMMIT")))),
                   1, 1, "payment", "COMMIT", "[failing order], [debit, COMMIT]");
    expect_refused(json_pack("[o]", branch_sql("payment", "PREPARE TRANSACTION 'hostile-x'", NULL)),
                   0, 0, "payment", "PREPARE", "PREPARE TRANSACTION 'hostile-x'");
    expect_refused(
        json_pack("[o]", branch_sql("payment", "SELECT 1", "SET search_path = pg_catalog", NULL)),
        0, 1, "payment", "SET", "[SELECT 1, SET search_path = pg_catalog]");
    expect_refused(json_pack("[o]", branch_sql("payment", "SET lock_timeout = 0", NULL)), 0, 0,
                   "payment", "SET", "SET lock_timeout = 0");
    expect_refused(
        json_pack("[o]", branch("payment", json_pack("[o,o]", debit(), st("/* c */ commit")))), 0,
        1, "payment", "commit", "[debit, /* c */ commit]");
    expect_refused(
        json_pack("[o]", branch("payment", json_pack("[o,o]", debit(), st("  -- x\n rollback")))),
        0, 1, "payment", "rollback", "[debit, '  -- x\\n rollback']");
    /* nested comments and parentheses before the keyword (PostgreSQL nests block comments) */
    expect_refused(
        json_pack("[o]", branch_sql("payment", "/* a /* b */ SELECT */ ((COMMIT))", NULL)), 0, 0,
        "payment", "COMMIT", "/* a /* b */ SELECT */ ((COMMIT))");
    check_no_stray_prepared("the PostgreSQL guard cases");
    finish();
}

/* The same for MariaDB: XA statements (the coordinator's XIDs are predictable), session SET,
 * table locks, procedures and DO. */
static void test_guard_mysql(void **state)
{
    char predicted[3][160];
    reply r;
    gtrid_parts g = {0};

    expect_refused(json_pack("[o]", branch_sql("order", "XA END 'a','order'", NULL)), 0, 0, "order",
                   "XA", "XA END 'a','order'");
    expect_refused(json_pack("[o]", branch_sql("order", "SET SESSION tx_read_only = 1", NULL)), 0,
                   0, "order", "SET", "SET SESSION tx_read_only = 1");
    expect_refused(json_pack("[o]", branch_sql("order", "SET autocommit = 0", NULL)), 0, 0, "order",
                   "SET", "SET autocommit = 0");
    expect_refused(json_pack("[o]", branch_sql("order", "LOCK TABLES orders WRITE", NULL)), 0, 0,
                   "order", "LOCK", "LOCK TABLES orders WRITE");
    expect_refused(json_pack("[o]", branch_sql("warehouse", "CALL p()", NULL)), 0, 0, "warehouse",
                   "CALL", "CALL p()");
    expect_refused(json_pack("[o]", branch_sql("order", "DO 1", NULL)), 0, 0, "order", "DO",
                   "DO 1");

    /* The attack of the issue: predict this transaction's own XID (the next seq of this boot, as
     * a generated id shows) and commit the order branch one-phase while the payment branch fails.
     * Refused by the guard whatever the prediction. */
    r = post_req(NULL, json_pack("[o]", branch_sql("order", "SELECT 1 AS one", NULL)),
                 "a generated id to learn boot and seq");
    REQUIRE(r.status == 200, "SELECT 1 on order: %d %s", r.status, r.raw);
    REQUIRE(gtrid_parse(str(r.j, "xid"), &g) == 0, "a generated xid that does not parse: %s",
            r.raw);
    reply_free(&r);
    for (int k = 0; k < 3; k++) {
        g.seq++;
        REQUIRE(gtrid_format(&g, predicted[k], sizeof predicted[k]) == 0, "gtrid too long");
    }
    for (int k = 0; k < 3; k++) {
        char end[sizeof predicted + 32], commit[sizeof predicted + 48]; /* GCC cannot bound k */
        snprintf(end, sizeof end, "XA END '%s','order'", predicted[k]);
        snprintf(commit, sizeof commit, "XA COMMIT '%s','order' ONE PHASE", predicted[k]);
        expect_refused(
            json_pack(
                "[o,o]",
                branch("payment", json_pack("[{s:s, s:i, s:s}]", "sql",
                                            "SELECT 1 FROM account WHERE user_id = -1",
                                            "expect_rows", 1, "abort_reason", "no such user")),
                branch("order", json_pack("[{s:s, s:[i], s:i}, o, o]", "sql",
                                          "UPDATE orders SET status = 'P' WHERE id = ? AND "
                                          "status = 'I'",
                                          "params", 1001, "expect_rows", 1, st(end), st(commit)))),
            1, 1, "order", "XA", "[failing payment], [mark paid, XA END own, XA COMMIT own]");
    }
    check_no_stray_prepared("the MariaDB guard cases");
    finish();
}

/* The guard must not refuse data statements, however they are written. */
static void test_guard_accepts_data_statements(void **state)
{
    static const char *const pg[] = {
        "select 1 AS a",
        "  /* a /* nested */ b */ -- line\n ( SELECT 1 AS a )",
        "WITH t AS (SELECT 1 AS v) SELECT v FROM t",
        "VALUES (1)",
        "TABLE account",
        "UPDATE account SET balance = balance WHERE user_id = 7",
        "INSERT INTO payment(order_id, user_id, amount) SELECT 1, 7, 1 WHERE false",
        "DELETE FROM payment WHERE order_id = -1",
    };
    static const char *const my[] = {
        "select 1 AS a",
        " /* c */ -- line\n ( SELECT 1 AS a )",
        "WITH t AS (SELECT 1 AS v) SELECT v FROM t",
        "VALUES (1)",
        "UPDATE orders SET status = status WHERE id = 1001",
        "DELETE FROM orders WHERE id = -1",
        ("REPLACE INTO orders(id, user_id, amount, sku, qty, status) "
         "SELECT id, user_id, amount, sku, qty, status FROM orders WHERE id = -1"),
    };
    for (size_t i = 0; i < sizeof pg / sizeof pg[0]; i++) {
        reply r = post1("payment", pg[i], pg[i]);
        CHECK(r.status == 200, "payment '%s': %d %s", pg[i], r.status, r.raw);
        reply_free(&r);
    }
    for (size_t i = 0; i < sizeof my / sizeof my[0]; i++) {
        reply r = post1("order", my[i], my[i]);
        CHECK(r.status == 200, "order '%s': %d %s", my[i], r.status, r.raw);
        reply_free(&r);
    }
    CHECK(tu_invariants() == 0, "tests/invariants check fails");
    finish();
}

/* ---- 2. session hygiene ------------------------------------------------------------------ */

/* tx1 changes its session through a function (the guard cannot see that); it must commit. */
static void tx1(const char *participant, const char *sql)
{
    reply r = post1(participant, sql, sql);
    fprintf(stderr, "  tx1 %s: %d %s\n", sql, r.status, r.raw);
    REQUIRE(r.status == 200, "tx1 '%s' on %s: %d %s", sql, participant, r.status, r.raw);
    reply_free(&r);
}

/* search_path set to pg_catalog: later transactions must still find the shop's tables. */
static void test_session_pg_search_path(void **state)
{
    reply r;
    tx1("payment", "SELECT set_config('search_path','pg_catalog',false)");
    r = post_checkout("checkout after set_config(search_path)");
    CHECK(r.status == 200, "checkout after search_path = pg_catalog: %d %s", r.status, r.raw);
    reply_free(&r);
    CHECK(tu_invariants() == 0, "tests/invariants check fails");
    finish();
}

/* lock_timeout 0 would remove the lock wait limit the design requires (a cross-database lock
 * cycle would then hold until the phase-1 timeout): the next transaction sees the configured one.
 */
static void test_session_pg_lock_timeout(void **state)
{
    reply r;
    json_t *v;
    tx1("payment", "SELECT set_config('lock_timeout','0',false)");
    r = post1("payment", "SELECT current_setting('lock_timeout') AS v", "read lock_timeout");
    v = cell(&r, "payment", "v");
    CHECK(r.status == 200, "reading lock_timeout: %d %s", r.status, r.raw);
    CHECK(json_is_string(v) && strcmp(json_string_value(v), CONFIGURED_LOCK_TIMEOUT) == 0,
          "lock_timeout after another transaction set it to 0: %s (want \"%s\")", dump(v),
          CONFIGURED_LOCK_TIMEOUT);
    reply_free(&r);
    finish();
}

/* statement_timeout 1 ms would cancel the next client's statements. */
static void test_session_pg_statement_timeout(void **state)
{
    reply r;
    char id[48];
    json_t *branches;
    /* tx1's own PREPARE may fall under its 1 ms limit: its outcome is its own business */
    r = post1("payment", "SELECT set_config('statement_timeout','1',false)",
              "set_config(statement_timeout, 1)");
    fprintf(stderr, "  tx1 statement_timeout: %d %s\n", r.status, r.raw);
    CHECK(r.status == 200 || r.status == 409, "tx1 statement_timeout: %d %s", r.status, r.raw);
    reply_free(&r);
    /* the checkout plus a statement that takes 50 ms */
    branches = json_pack("[o]", branch("payment", json_pack("[o,o,o]", debit(), record_payment(),
                                                            st("SELECT 1 AS one FROM "
                                                               "pg_sleep(0.05)"))));
    json_array_append_new(
        branches, branch("order", json_pack("[{s:s, s:[i], s:i}]", "sql",
                                            "UPDATE orders SET status = 'P' WHERE id = ? AND "
                                            "status = 'I'",
                                            "params", 1001, "expect_rows", 1)));
    json_array_append_new(
        branches,
        branch("warehouse",
               json_pack("[{s:s, s:[i,s,i], s:i}, {s:s, s:[i,s,i]}]", "sql",
                         "UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?", "params", 1,
                         "SKU-1", 1, "expect_rows", 1, "sql",
                         "INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, ?, ?, 'R')",
                         "params", 1001, "SKU-1", 1)));
    r = post_req(new_id(id, sizeof id), branches, "checkout with a 50 ms statement");
    CHECK(r.status == 200, "checkout after statement_timeout = 1: %d %s", r.status, r.raw);
    reply_free(&r);
    CHECK(tu_invariants() == 0, "tests/invariants check fails");
    finish();
}

/* A session-level advisory lock taken by one client must not stay held by the pooled session. */
static void test_session_pg_advisory_lock(void **state)
{
    reply r;
    char *before, *after;
    tx1("payment", "SELECT pg_advisory_lock(4242)");
    before = tu_admin_sql("payment", "payment", "SELECT pg_try_advisory_lock(4242)");
    /* the next transaction on the same connection: a reset before its BEGIN is enough */
    r = post1("payment", "SELECT 1 AS one", "SELECT 1 after pg_advisory_lock");
    CHECK(r.status == 200, "SELECT 1 after pg_advisory_lock: %d %s", r.status, r.raw);
    reply_free(&r);
    after = tu_admin_sql("payment", "payment", "SELECT pg_try_advisory_lock(4242)");
    fprintf(stderr,
            "  pg_try_advisory_lock(4242) from an admin session: right after tx1 %s, "
            "after the next transaction %s\n",
            before ? before : "(failed)", after ? after : "(failed)");
    CHECK(after && strcmp(after, "t") == 0,
          "the advisory lock of tx1 is still held after the next transaction: %s",
          after ? after : "(query failed)");
    free(before);
    free(after);
    finish();
}

/* User variables on MariaDB. */
static void test_session_mysql_user_variable(void **state)
{
    reply r;
    json_t *v;
    tx1("order", "SELECT @x := 5");
    r = post1("order", "SELECT @x AS v", "SELECT @x");
    v = cell(&r, "order", "v");
    CHECK(r.status == 200, "SELECT @x: %d %s", r.status, r.raw);
    CHECK(json_is_null(v), "@x after another transaction set it: %s (want null)", dump(v));
    reply_free(&r);
    finish();
}

/* Named locks on MariaDB (GET_LOCK is held by the session, not the transaction). */
static void test_session_mysql_named_lock(void **state)
{
    reply r;
    json_t *v;
    tx1("order", "SELECT GET_LOCK('hostile',0)");
    r = post1("order", "SELECT IS_FREE_LOCK('hostile') AS v", "IS_FREE_LOCK");
    v = cell(&r, "order", "v");
    CHECK(r.status == 200, "IS_FREE_LOCK: %d %s", r.status, r.raw);
    CHECK(json_is_integer(v) && json_integer_value(v) == 1,
          "IS_FREE_LOCK('hostile') after another transaction took it: %s (want 1)", dump(v));
    reply_free(&r);
    finish();
}

/* ---- 3. one namespace for ids ------------------------------------------------------------ */

/* A generated id can never be a client's id: clients may not send ids in the reserved space
 * ("xa" and a digit, any case), so a replay or GET can never name another transaction. */
static void test_id_namespace(void **state)
{
    static const char *const reserved[] = {
        "xa1.c1.1.1", "xa2.c1.abcdefgh.1.1", "XA9", "xa9", "Xa1.x", "xA0"};
    char gen[80];
    reply r =
        post_req(NULL, json_pack("[o]", branch_sql("payment", "SELECT 1 AS one", NULL)), "no id");
    json_t *g;
    int gst;
    REQUIRE(r.status == 200, "POST without id: %d %s", r.status, r.raw);
    snprintf(gen, sizeof gen, "%s", str(r.j, "id"));
    reply_free(&r);
    CHECK(strncmp(gen, PREFIX, strlen(PREFIX)) == 0, "generated id '%s' does not start with %s",
          gen, PREFIX);

    /* the generated id sent back as a client id: the same body, which would otherwise replay */
    r = post_req(gen, json_pack("[o]", branch_sql("payment", "SELECT 1 AS one", NULL)),
                 "the generated id as a client id");
    CHECK(r.status == 400 && word_in(str(r.j, "error"), "id"),
          "POST with the generated id %s: %d %s (want 400 naming the id)", gen, r.status, r.raw);
    reply_free(&r);
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        r = post_req(reserved[i], json_pack("[o]", branch_sql("payment", "SELECT 1 AS one", NULL)),
                     reserved[i]);
        CHECK(r.status == 400 && word_in(str(r.j, "error"), "id"),
              "POST with id %s: %d %s (want 400 naming the id)", reserved[i], r.status, r.raw);
        reply_free(&r);
    }
    /* only "xa" and a digit is reserved: other ids starting with xa stay the client's */
    r = post_req("xavier-1", json_pack("[o]", branch_sql("payment", "SELECT 1 AS one", NULL)),
                 "id xavier-1");
    CHECK(r.status == 200, "POST with id xavier-1: %d %s", r.status, r.raw);
    reply_free(&r);

    gst = get_txn(gen, &g);
    CHECK(gst == 200 && strcmp(str(g, "outcome"), "committed") == 0 &&
              strcmp(str(g, "id"), gen) == 0,
          "GET of the generated id %s: %d %s", gen, gst, dump(g));
    json_decref(g);
    finish();
}

/* ---- 4. parameter-count mismatch --------------------------------------------------------- */

/* The database session the (single) pooled connection of participant runs on. */
static long session_id(const char *participant)
{
    bool pg = strcmp(participant, "payment") == 0;
    reply r =
        post1(participant, pg ? "SELECT pg_backend_pid() AS pid" : "SELECT CONNECTION_ID() AS pid",
              "the session's id");
    json_t *v = cell(&r, participant, "pid");
    long id = json_is_integer(v)  ? (long)json_integer_value(v)
              : json_is_string(v) ? strtol(json_string_value(v), NULL, 10)
                                  : -1;
    CHECK(r.status == 200 && id > 0, "%s: reading the session id: %d %s", participant, r.status,
          r.raw);
    reply_free(&r);
    return id;
}

/* A statement with fewer parameters than placeholders can never succeed: a permanent abort (409,
 * not retryable), recorded, no pool flush (with pool_size = 1 the connection - the database
 * session - stays the same; and a discard counter in /metrics, if there is one, does not grow),
 * and the next transaction runs at once. */
static void param_mismatch(const char *participant, const char *sql)
{
    char id[48], what[160];
    double d0 = discards(participant), d1;
    long s0 = session_id(participant), s1;
    reply r;
    snprintf(what, sizeof what, "%s: '%s' with one parameter", participant, sql);
    r = post_req(
        new_id(id, sizeof id),
        json_pack("[o]", branch(participant, json_pack("[o]", stp(sql, json_pack("[i]", 1))))),
        what);
    fprintf(stderr, "  %s -> %d %s\n", what, r.status, r.raw);
    CHECK(r.status == 409, "%s: status %d (want 409): %s", what, r.status, r.raw);
    CHECK(json_is_false(json_object_get(r.j, "retryable")), "%s: \"retryable\" is %s (want false)",
          what, dump(json_object_get(r.j, "retryable")));
    CHECK(strcmp(str(r.j, "outcome"), "aborted") == 0, "%s: outcome %s", what, str(r.j, "outcome"));
    reply_free(&r);
    s1 = session_id(participant);
    CHECK(s0 == s1,
          "%s: the pooled connection was replaced (session %ld, then %ld): the pool was "
          "flushed",
          what, s0, s1);
    r = post_checkout("checkout after a parameter mismatch");
    CHECK(r.status == 200, "the next checkout after %s: %d %s", what, r.status, r.raw);
    reply_free(&r);
    d1 = discards(participant);
    if (d0 < 0)
        fprintf(stderr, "  (no pool discard metric in /metrics: that part is skipped)\n");
    else
        CHECK(d1 == d0, "%s: pool discards of %s grew from %g to %g", what, participant, d0, d1);
    CHECK(tu_invariants() == 0, "tests/invariants check fails");
}

static void test_param_mismatch_postgres(void **state)
{
    param_mismatch("payment", "SELECT $1::int + $2::int");
    finish();
}

static void test_param_mismatch_mysql(void **state)
{
    param_mismatch("order", "SELECT ? + ?");
    finish();
}

/* ---- 5. logs cannot be forged ------------------------------------------------------------ */

static char *read_log(size_t *len)
{
    FILE *f = fopen(daemon_.log, "r");
    char *buf = NULL;
    long n;
    REQUIRE(f != NULL, "cannot open %s", daemon_.log);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* No line of the log may start with the forged timestamp, and no raw terminal escape, carriage
 * return or bell may reach it. When marker is given, the client text "\n<stamp> ERROR <marker>"
 * must have reached the log (so the case exercised the log at all) as one line: with the newline
 * escaped (a backslash escape just before the stamp) or, when flattened_ok, flattened to a space
 * (the PostgreSQL driver folds every database message onto one line before anyone sees it). */
static void check_log(const char *marker, bool flattened_ok)
{
    size_t len, i, head = strlen(FORGED_STAMP " ERROR ");
    char *log = read_log(&len), *p;
    int forged = 0, raw_ctl = 0;
    bool seen = false, escaped = false, flattened = false;
    for (i = 0; i < len; i++) {
        if ((i == 0 || log[i - 1] == '\n') &&
            strncmp(log + i, FORGED_STAMP, strlen(FORGED_STAMP)) == 0)
            forged++;
        if (log[i] == 0x1b || log[i] == '\r' || log[i] == 0x07)
            raw_ctl++;
    }
    for (p = log; marker && (p = strstr(p, marker)) != NULL; p++) {
        size_t at = (size_t)(p - log), k;
        seen = true;
        if (at < head + 1 || strncmp(p - head, FORGED_STAMP, strlen(FORGED_STAMP)) != 0)
            continue;
        k = at - head < 6 ? at - head : 6;
        if (memchr(p - head - k, '\\', k))
            escaped = true;
        else if (p[-(long)head - 1] == ' ')
            flattened = true;
    }
    CHECK(forged == 0, "the log holds %d line(s) starting with %s (forged by a client)", forged,
          FORGED_STAMP);
    CHECK(raw_ctl == 0, "the log holds %d raw control character(s) (ESC, CR or BEL)", raw_ctl);
    if (marker) {
        CHECK(seen, "the client text '%s' never reached the log: the case proves nothing", marker);
        CHECK(!seen || escaped || (flattened_ok && flattened),
              "the log holds '%s' but not as '\\x0a%s ERROR %s'%s", marker, FORGED_STAMP, marker,
              flattened_ok ? " (or flattened to a space)" : "");
    }
    if (forged || raw_ctl || (marker && !(escaped || (flattened_ok && flattened)))) {
        fprintf(stderr, "  log lines mentioning 'forged' (cat -A):\n");
        tu_sh("grep -a -n forged %s | cat -A | cut -c1-300 >&2", daemon_.log);
    }
    free(log);
}

/* A database's error message echoes client text (a table name with a newline and a fake log
 * line; on MariaDB also ESC and BEL, which the server itself escapes); an abort_reason is client
 * text outright (newline, ESC, BEL); an unknown participant name may be echoed too. None of them
 * may forge a log line or put a raw control character into the log. */
static void test_log_forging(void **state)
{
    reply r;
    char id[48];
    r = post1("payment", "SELECT * FROM \"no_such\n" FORGED_STAMP " ERROR forged-by-client\"",
              "PostgreSQL: a table name with a newline");
    fprintf(stderr, "  PostgreSQL forged table: %d %s\n", r.status, r.raw);
    CHECK(r.status == 409, "PostgreSQL table with a newline: %d %s (want 409)", r.status, r.raw);
    reply_free(&r);

    r = post1("order", "SELECT * FROM `no_such\n" FORGED_STAMP " ERROR forged-by-mysql\x1b[2K\a`",
              "MariaDB: a table name with a newline, ESC and BEL");
    fprintf(stderr, "  MariaDB forged table: %d %s\n", r.status, r.raw);
    CHECK(r.status == 409, "MariaDB table with control characters: %d %s (want 409)", r.status,
          r.raw);
    reply_free(&r);

    r = post_req(
        new_id(id, sizeof id),
        json_pack("[o]", branch("payment",
                                json_pack("[{s:s, s:i, s:s}]", "sql",
                                          "SELECT 1 FROM account WHERE user_id = -1", "expect_rows",
                                          1, "abort_reason",
                                          "x\n" FORGED_STAMP " ERROR forged-by-reason\x1b[2K\a"))),
        "abort_reason with a newline");
    CHECK(r.status == 409, "abort_reason with a newline: %d %s (want 409)", r.status, r.raw);
    reply_free(&r);

    r = post_req(
        NULL,
        json_pack("[o]", branch_sql("no\n" FORGED_STAMP " ERROR forged-by-name", "SELECT 1", NULL)),
        "unknown participant with a newline");
    CHECK(r.status == 400, "unknown participant with a newline: %d %s (want 400)", r.status, r.raw);
    reply_free(&r);

    usleep(200000); /* stderr is unbuffered, but give the loop a moment */
    check_log("forged-by-client", true);
    check_log("forged-by-mysql", false);
    check_log("forged-by-reason", false);
    finish();
}

/* ---- 6. exact values --------------------------------------------------------------------- */

/* One query on one participant that must commit; returns the reply. */
static reply query(const char *participant, const char *sql)
{
    reply r = post1(participant, sql, sql);
    CHECK(r.status == 200, "%s '%s': %d %s", participant, sql, r.status, r.raw);
    return r;
}

static void check_string_cell(const char *participant, const char *sql, const char *col,
                              const char *want)
{
    reply r = query(participant, sql);
    json_t *v = cell(&r, participant, col);
    CHECK(json_is_string(v) && strcmp(json_string_value(v), want) == 0,
          "%s '%s': %s = %s (want \"%s\"); reply %s", participant, sql, col, dump(v), want, r.raw);
    reply_free(&r);
}

/* Repeated column names: "columns" lists both and rows are arrays, so no value is lost. */
static void check_repeated_names(const char *participant)
{
    reply r = query(participant, "SELECT 1 AS a, 2 AS a");
    json_t *res = result_of(&r, participant, 0);
    json_t *cols = json_object_get(res, "columns");
    json_t *row = json_array_get(json_object_get(res, "rows"), 0);
    CHECK(json_array_size(cols) == 2 &&
              strcmp(json_string_value(json_array_get(cols, 0)), "a") == 0 &&
              strcmp(json_string_value(json_array_get(cols, 1)), "a") == 0,
          "%s 'SELECT 1 AS a, 2 AS a': columns %s (want [\"a\",\"a\"])", participant, dump(cols));
    CHECK(json_is_array(row) && json_array_size(row) == 2 &&
              json_integer_value(json_array_get(row, 0)) == 1 &&
              json_integer_value(json_array_get(row, 1)) == 2 &&
              json_is_integer(json_array_get(row, 0)) && json_is_integer(json_array_get(row, 1)),
          "%s 'SELECT 1 AS a, 2 AS a': row %s (want [1,2])", participant, dump(row));
    reply_free(&r);
}

/* A committed reply may not drop or round any value. */
static void test_exact_values(void **state)
{
    reply r;
    json_t *v;
    check_string_cell("order", "SELECT UNHEX('FF') AS b", "b", "/w==");
    r = query("payment", "SELECT 'NaN'::float8 AS n, 'Infinity'::float8 AS i, "
                         "'-Infinity'::float8 AS m");
    v = json_array_get(json_object_get(result_of(&r, "payment", 0), "rows"), 0);
    CHECK(strcmp(str(v, "n"), "NaN") == 0 && strcmp(str(v, "i"), "Infinity") == 0 &&
              strcmp(str(v, "m"), "-Infinity") == 0,
          "NaN/Infinity/-Infinity: row %s (want \"NaN\", \"Infinity\", \"-Infinity\")", dump(v));
    reply_free(&r);
    check_string_cell("order", "SELECT CAST(18446744073709551615 AS UNSIGNED) AS u", "u",
                      "18446744073709551615");
    check_string_cell("payment", "SELECT 12345678901234567.89::numeric AS d", "d",
                      "12345678901234567.89");
    check_string_cell("order", "SELECT CAST(12345678901234567.89 AS DECIMAL(30,2)) AS d", "d",
                      "12345678901234567.89");
    check_repeated_names("payment");
    check_repeated_names("order");
    /* ordinary integers stay JSON integers */
    r = query("payment", "SELECT 42 AS n");
    v = cell(&r, "payment", "n");
    CHECK(json_is_integer(v) && json_integer_value(v) == 42, "SELECT 42: %s", dump(v));
    reply_free(&r);
    finish();
}

/* ---- 7. the loop never blocks ------------------------------------------------------------ */

typedef struct slow_req {
    const char *body;
    int status;
    char *resp;
    volatile bool done;
} slow_req;

static void *slow_post(void *arg)
{
    slow_req *s = arg;
    s->status = tu_http(daemon_.port, "POST", "/v1/transactions", s->body, NULL, &s->resp);
    s->done = true;
    return NULL;
}

/* While a 2 s statement is in flight, /healthz keeps answering within the limit. */
static void healthz_during(const char *participant, const char *sql)
{
    char body[512], *resp = NULL;
    slow_req s = {body, 0, NULL, false};
    pthread_t th;
    int polls = 0;
    long worst = 0, t0 = now_ms();
    snprintf(body, sizeof body,
             "{\"branches\":[{\"participant\":\"%s\",\"statements\":[{\"sql\":\"%s\"}]}]}",
             participant, sql);
    REQUIRE(pthread_create(&th, NULL, slow_post, &s) == 0, "pthread_create");
    usleep(200000);
    while (!s.done && now_ms() - t0 < 10000) {
        long ms = 0;
        int status = timed_http("GET", "/healthz", NULL, 3000, &resp, &ms);
        free(resp);
        resp = NULL;
        if (s.done)
            break;
        polls++;
        worst = ms > worst ? ms : worst;
        CHECK(status == 200, "/healthz during '%s': %d", sql, status);
        if (status != 200)
            break;
        usleep(100000);
    }
    pthread_join(th, NULL);
    fprintf(stderr, "  during '%s': %d /healthz polls, slowest %ld ms; the request: %d %s\n", sql,
            polls, worst, s.status, s.resp ? s.resp : "");
    CHECK(polls >= 5, "only %d /healthz polls while '%s' ran", polls, sql);
    CHECK(worst < HEALTH_LIMIT_MS, "/healthz took %ld ms while '%s' ran", worst, sql);
    CHECK(s.status == 200, "'%s': %d %s", sql, s.status, s.resp ? s.resp : "");
    free(s.resp);
}

static void test_healthz_during_slow_statements(void **state)
{
    healthz_during("payment", "SELECT pg_sleep(2)");
    healthz_during("order", "SELECT SLEEP(2) AS s");
    check_health("the slow statements");
    finish();
}

/* ---- 8. at the end ----------------------------------------------------------------------- */

/* After everything: nothing prepared is left, every invariant holds, no forged log line exists,
 * and a normal checkout still commits. */
static void test_final_state(void **state)
{
    reply r = post_checkout("the final checkout");
    CHECK(r.status == 200, "the final checkout: %d %s", r.status, r.raw);
    reply_free(&r);
    check_no_stray_prepared("all tests");
    check_log(NULL, false);
    finish();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_guard_postgres, per_test),
        cmocka_unit_test_setup(test_guard_mysql, per_test),
        cmocka_unit_test_setup(test_guard_accepts_data_statements, per_test),
        cmocka_unit_test_setup(test_session_pg_search_path, per_test),
        cmocka_unit_test_setup(test_session_pg_lock_timeout, per_test),
        cmocka_unit_test_setup(test_session_pg_statement_timeout, per_test),
        cmocka_unit_test_setup(test_session_pg_advisory_lock, per_test),
        cmocka_unit_test_setup(test_session_mysql_user_variable, per_test),
        cmocka_unit_test_setup(test_session_mysql_named_lock, per_test),
        cmocka_unit_test_setup(test_id_namespace, per_test),
        cmocka_unit_test_setup(test_param_mismatch_postgres, per_test),
        cmocka_unit_test_setup(test_param_mismatch_mysql, per_test),
        cmocka_unit_test_setup(test_log_forging, per_test),
        cmocka_unit_test_setup(test_exact_values, per_test),
        cmocka_unit_test_setup(test_healthz_during_slow_statements, per_test),
        cmocka_unit_test_setup(test_final_state, per_test),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
