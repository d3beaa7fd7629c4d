/*
 * Running the real daemon in tests (see daemon.h).
 */
#include "daemon.h"

#include "httpc.h"
#include "identity.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef XACOORD_BIN
#error "XACOORD_BIN must name the daemon binary"
#endif
#ifndef XACOORD_SOURCE_DIR
#error "XACOORD_SOURCE_DIR must name the source tree"
#endif

extern char **environ;

/* Whether port belongs to a database server of the tests (or a fault proxy in front of one):
 * free while a test has that server killed, yet never the daemon's to take - the server's
 * restart would find it bound. */
static bool server_port(int port)
{
    static const char *const vars[] = {"XA_PG_PORT", "XA_ORDER_PORT", "XA_WAREHOUSE_PORT",
                                       "XA_FAULT_PROXY_PORT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        int p = v ? atoi(v) : 0;
        /* the fault proxies listen on the port given and the next two */
        if (p > 0 && port >= p && port <= p + (i == 3 ? 2 : 0))
            return true;
    }
    return port == 28401 || port == 28402 || port == 28403; /* the proxies' default */
}

/* A free port below the kernel's ephemeral range (32768 and up here): a port from that range can
 * be taken by an outgoing connection - or its TIME_WAIT - between this check and the daemon's
 * bind. A lookup: it returns the port itself and has no error result, because finding none
 * fails the test (fail_msg does not return; the -EADDRINUSE after it is never seen). */
int tu_free_port(void)
{
    static int next;
    if (!next)
        next = 20000 + (int)(getpid() % 1000) * 10;
    for (int tries = 0; tries < 1000; tries++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd, port = next;
        next = next >= 31999 ? 20000 : next + 1;
        if (server_port(port))
            continue;
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_port = htons((uint16_t)port);
        assert_true(fd >= 0);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(fd);
            return port;
        }
        close(fd);
    }
    fail_msg("no free port in 20000-31999");
    return -EADDRINUSE;
}

bool tu_store_mode(void)
{
    const char *mode = getenv("XA_TEST_DECISION_LOG");
    return mode && (strcmp(mode, "postgres") == 0 || strcmp(mode, "postgres-lr") == 0);
}

bool tu_store_last_resource(void)
{
    const char *mode = getenv("XA_TEST_DECISION_LOG");
    return mode && strcmp(mode, "postgres-lr") == 0;
}

/* The store's database: the scratch xatest, or payment's own for the last resource. */
static const char *store_db(void)
{
    return tu_store_last_resource() ? "payment" : "xatest";
}

/* The [decision_store] of every daemon in store mode: the scratch database xatest on the
 * payment server, and a short lease so that takeovers and restarts happen within seconds. */
static void write_store_section(FILE *f, const char *secrets)
{
    fprintf(f,
            "decision_log = postgres\n\n[decision_store]\n"
            "conninfo = host=127.0.0.1 hostaddr=127.0.0.1 port=%s dbname=%s user=xacoord "
            "sslmode=disable gssencmode=disable\n"
            "password_file = %s/secrets/payment.pw\nlease_ms = %u\nrenew_ms = %u\n%s",
            tu_env("XA_PG_PORT"), store_db(), secrets, TU_STORE_LEASE_MS, TU_STORE_LEASE_MS / 5,
            tu_store_last_resource() ? "participant = payment\n" : "");
}

void tu_store_reset(void)
{
    char path[512], *ddl, *out;
    FILE *f;
    long len;
    snprintf(path, sizeof path, "%s/sql/xacoord-store.sql", XACOORD_SOURCE_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    ddl = calloc(1, (size_t)len + 256);
    assert_non_null(ddl);
    strcpy(ddl, "SET client_min_messages = warning;\n");
    assert_int_equal(fread(ddl + strlen(ddl), 1, (size_t)len, f), (size_t)len);
    fclose(f);
    strcat(ddl, "\nALTER TABLE xacoord_decisions OWNER TO xacoord;\n"
                "ALTER TABLE xacoord_nodes OWNER TO xacoord;\n"
                "TRUNCATE xacoord_decisions, xacoord_nodes;\n");
    out = tu_admin_sql("payment", store_db(), ddl);
    free(out);
    free(ddl);
}

void tu_daemon_init(tu_daemon *d, const char *node, const char *extra)
{
    const char *secrets = tu_env("XA_DB_DIR");
    FILE *f;
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/xacoord-t-%s-XXXXXX", node);
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->node, sizeof d->node, "%s", node);
    snprintf(d->config, sizeof d->config, "%s/xacoord.ini", d->dir);
    snprintf(d->log, sizeof d->log, "%s/xacoord.log", d->dir);
    d->port = tu_free_port();
    f = fopen(d->config, "w");
    assert_non_null(f);
    fprintf(f,
            "[coordinator]\nnode_id = %s\nlisten = 127.0.0.1:%d\ndata_dir = %s/data\n"
            "default_timeout_ms = 5000\ncommit_wait_ms = 2000\nrecovery_interval_ms = 1000\n%s\n",
            node, d->port, d->dir, extra ? extra : "");
    if (tu_store_mode())
        write_store_section(f, secrets);
    fprintf(f,
            "\n[participant.payment]\ndriver = postgres\n"
            "conninfo = host=127.0.0.1 hostaddr=127.0.0.1 port=%s dbname=payment user=xacoord "
            "sslmode=disable gssencmode=disable\n"
            "password_file = %s/secrets/payment.pw\npool_size = 8\n\n"
            "[participant.order]\ndriver = mysql\nhost = 127.0.0.1\nport = %s\n"
            "database = shop_order\nuser = xacoord\npassword_file = %s/secrets/order.pw\n"
            "pool_size = 8\n\n"
            "[participant.warehouse]\ndriver = mysql\nhost = 127.0.0.1\nport = %s\n"
            "database = shop_warehouse\nuser = xacoord\npassword_file = %s/secrets/warehouse.pw\n"
            "pool_size = 8\n",
            tu_env("XA_PG_PORT"), secrets, tu_env("XA_ORDER_PORT"), secrets,
            tu_env("XA_WAREHOUSE_PORT"), secrets);
    fclose(f);
}

/* Rewrites d's configuration line by line: edit(line, section, out, arg) writes each line's
 * replacement to out (section: the current "[...]" header, "" before the first). */
typedef void line_edit(const char *line, const char *section, FILE *out, const void *arg);

static void rewrite_config(tu_daemon *d, line_edit *edit, const void *arg)
{
    char *text = NULL, line[1024], section[128] = "";
    size_t len = 0;
    FILE *in = fopen(d->config, "r"), *out = open_memstream(&text, &len);
    assert_non_null(in);
    assert_non_null(out);
    while (fgets(line, sizeof line, in)) {
        if (line[0] == '[')
            snprintf(section, sizeof section, "%.*s", (int)strcspn(line, "\n"), line);
        edit(line, section, out, arg);
    }
    fclose(in);
    fclose(out);
    in = fopen(d->config, "w");
    assert_non_null(in);
    assert_int_equal(fwrite(text, 1, len, in), len);
    assert_int_equal(fclose(in), 0);
    free(text);
}

static void edit_pool_size(const char *line, const char *section, FILE *out, const void *arg)
{
    (void)section;
    if (strncmp(line, "pool_size", 9) == 0 && strchr(" =", line[9]))
        fprintf(out, "pool_size = %d\n", *(const int *)arg);
    else
        fputs(line, out);
}

void tu_daemon_set_pool_size(tu_daemon *d, int pool_size)
{
    rewrite_config(d, edit_pool_size, &pool_size);
}

typedef struct key_edit {
    char section[64];
    const char *key, *value;
} key_edit;

/* Replaces key's line in the section, or - for a PostgreSQL port - the port in its conninfo, or
 * adds the key right after the section's header. */
static void edit_key(const char *line, const char *section, FILE *out, const void *arg)
{
    const key_edit *e = arg;
    size_t klen = strlen(e->key);
    const char *at = strstr(line, " port=");
    if (strcmp(section, e->section) != 0) {
        fputs(line, out);
    } else if (line[0] == '[') {
        fputs(line, out);
        if (strcmp(e->key, "port") != 0)
            fprintf(out, "%s = %s\n", e->key, e->value);
    } else if (strncmp(line, e->key, klen) == 0 && strchr(" =", line[klen])) {
        if (strcmp(e->key, "port") == 0)
            fprintf(out, "port = %s\n", e->value);
    } else if (strcmp(e->key, "port") == 0 && strncmp(line, "conninfo", 8) == 0 && at) {
        fprintf(out, "%.*s port=%s%s", (int)(at - line), line, e->value,
                at + 6 + strspn(at + 6, "0123456789"));
    } else {
        fputs(line, out);
    }
}

void tu_daemon_set_key(tu_daemon *d, const char *section, const char *key, const char *value)
{
    key_edit e = {.key = key, .value = value};
    snprintf(e.section, sizeof e.section, "[%s]", section);
    rewrite_config(d, edit_key, &e);
}

pid_t tu_daemon_spawn(tu_daemon *d, const char *const *env)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        /* A test that dies must not leave its daemon running: it would keep scanning the shared
         * servers under its node_id. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        execl(XACOORD_BIN, "xacoord", "--config", d->config, (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
    return pid;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void tu_daemon_wait_ready(tu_daemon *d, unsigned timeout_ms)
{
    for (unsigned waited = 0; waited < timeout_ms; waited += 50) {
        int status;
        char *body = NULL;
        if (d->pid > 0 && waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            tu_sh("tail -n 30 %s >&2", d->log);
            fail_msg("xacoord exited during start-up (status %d)", status);
        }
        if (tu_http(d->port, "GET", "/readyz", NULL, NULL, &body) == 200) {
            free(body);
            return;
        }
        free(body);
        sleep_ms(50);
    }
    tu_sh("tail -n 30 %s >&2", d->log);
    fail_msg("xacoord not ready within %u ms", timeout_ms);
}

void tu_daemon_start(tu_daemon *d, const char *const *env)
{
    tu_daemon_spawn(d, env);
    tu_daemon_wait_ready(d, 30000);
}

void tu_daemon_kill(tu_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
}

int tu_daemon_wait_exit(tu_daemon *d, unsigned timeout_ms)
{
    for (unsigned waited = 0; waited < timeout_ms; waited += 20) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return status;
        }
        sleep_ms(20);
    }
    fail_msg("xacoord did not exit within %u ms", timeout_ms);
    return -ETIMEDOUT; /* not reached: fail_msg ends the test */
}

int tu_daemon_stop(tu_daemon *d)
{
    int status;
    if (d->pid <= 0)
        return -ESRCH;
    kill(d->pid, SIGTERM);
    status = tu_daemon_wait_exit(d, 40000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        tu_sh("tail -n 30 %s >&2", d->log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
}

void tu_daemon_cleanup(tu_daemon *d)
{
    tu_daemon_kill(d);
    if (getenv("XA_KEEP_TEST_DIRS") == NULL)
        tu_sh("rm -rf '%s'", d->dir);
}

void tu_daemon_identity(const tu_daemon *d, char *out)
{
    char dir[300], err[512];
    dir_identity id;
    snprintf(dir, sizeof dir, "%s/data", d->dir);
    if (identity_load(dir, &id, err, sizeof err) != 1)
        fail_msg("no identity in %s: %s", dir, err);
    snprintf(out, IDENTITY_LEN + 1, "%s", id.id);
}

void tu_write_secret(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fprintf(f, "%s\n", text) > 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

/* ---- HTTP -------------------------------------------------------------------------------- */

/* With XA_API_REPLIES set, every reply is appended to that file as one JSON line (the test, method,
 * path, status and body), for tests/openapi/check.mjs to validate against docs/openapi.yaml. One
 * write per line with O_APPEND, so the threads of a test and parallel tests do not interleave. */
static void record_reply(const char *method, const char *path, int status, const char *body)
{
    const char *file = getenv("XA_API_REPLIES");
    json_t *rec, *text;
    char *line, *out = NULL;
    int fd, n;
    if (!file || !*file || status < 0)
        return;
    text = body ? json_string(body) : json_null();
    if (!text)
        fail_msg("%s %s: the reply body is not UTF-8", method, path);
    rec = json_pack("{s:s, s:s, s:s, s:i, s:o}", "test", program_invocation_short_name, "method",
                    method, "path", path, "status", status, "body", text);
    line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    assert_non_null(line);
    n = asprintf(&out, "%s\n", line);
    free(line);
    assert_true(n > 0);
    fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_true(write(fd, out, (size_t)n) == n);
    close(fd);
    free(out);
}

int tu_http(int port, const char *method, const char *path, const char *body, const char *token,
            char **resp)
{
    int status = httpc_request("127.0.0.1", port, method, path, token, body, resp);
    record_reply(method, path, status, *resp);
    return status;
}

/* ---- the shop ---------------------------------------------------------------------------- */

char *tu_checkout_json(const char *id, long order, long user, long amount, const char *sku,
                       long qty)
{
    char *s = NULL, idpart[128] = "";
    if (id)
        snprintf(idpart, sizeof idpart, "\"id\":\"%s\",", id);
    if (asprintf(&s,
                 "{%s\"branches\":["
                 "{\"participant\":\"payment\",\"statements\":["
                 "{\"sql\":\"UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND "
                 "balance >= $1\",\"params\":[%ld,%ld],\"expect_rows\":1,"
                 "\"abort_reason\":\"insufficient balance\"},"
                 "{\"sql\":\"INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)\","
                 "\"params\":[%ld,%ld,%ld]}]},"
                 "{\"participant\":\"order\",\"statements\":["
                 "{\"sql\":\"UPDATE orders SET status = 'P' WHERE id = ? AND status = 'I'\","
                 "\"params\":[%ld],\"expect_rows\":1,"
                 "\"abort_reason\":\"order is not awaiting payment\"}]},"
                 "{\"participant\":\"warehouse\",\"statements\":["
                 "{\"sql\":\"UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?\","
                 "\"params\":[%ld,\"%s\",%ld],\"expect_rows\":1,\"abort_reason\":\"out of stock\"},"
                 "{\"sql\":\"INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, ?, ?, "
                 "'R')\",\"params\":[%ld,\"%s\",%ld]}]}]}",
                 idpart, amount, user, order, user, amount, order, qty, sku, qty, order, sku,
                 qty) < 0)
        fail_msg("out of memory");
    return s;
}

char *tu_ship_json(const char *id, long order)
{
    char *s = NULL, idpart[128] = "";
    if (id)
        snprintf(idpart, sizeof idpart, "\"id\":\"%s\",", id);
    if (asprintf(&s,
                 "{%s\"branches\":["
                 "{\"participant\":\"order\",\"statements\":["
                 "{\"sql\":\"UPDATE orders SET status = 'W' WHERE id = ? AND status = 'P'\","
                 "\"params\":[%ld],\"expect_rows\":1,\"abort_reason\":\"order is not paid\"}]},"
                 "{\"participant\":\"warehouse\",\"statements\":["
                 "{\"sql\":\"UPDATE shipment SET status = 'S' WHERE order_id = ? AND status = "
                 "'R'\",\"params\":[%ld],\"expect_rows\":1,"
                 "\"abort_reason\":\"nothing reserved to ship\"}]}]}",
                 idpart, order, order) < 0)
        fail_msg("out of memory");
    return s;
}

const char *tu_source_dir(void)
{
    return XACOORD_SOURCE_DIR;
}

int tu_xactl(const tu_daemon *d, const char *args, char **out)
{
    char cmd[1024], buf[4096];
    size_t len = 0;
    FILE *p;
    int rc;
    snprintf(cmd, sizeof cmd, "%s --url http://127.0.0.1:%d %s", XACTL_BIN, d->port, args);
    p = popen(cmd, "r");
    assert_non_null(p);
    len = fread(buf, 1, sizeof buf - 1, p);
    buf[len] = '\0';
    rc = pclose(p);
    if (out)
        *out = strdup(buf);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -EINTR;
}

void tu_shop_reset(void)
{
    assert_int_equal(tu_sh("%s/scripts/db reset >/dev/null", XACOORD_SOURCE_DIR), 0);
    if (tu_store_mode())
        tu_store_reset();
    assert_int_equal(tu_invariants(), 0);
}

int tu_invariants(void)
{
    return tu_sh("%s/tests/invariants check >&2", XACOORD_SOURCE_DIR);
}

long tu_shop_long(const char *which, const char *sql)
{
    const char *db = strcmp(which, "payment") == 0 ? "payment"
                     : strcmp(which, "order") == 0 ? "shop_order"
                                                   : "shop_warehouse";
    char *out = tu_admin_sql(which, db, sql);
    long v;
    if (!out)
        fail_msg("admin query failed on %s: %s", which, sql);
    v = strtol(out, NULL, 10);
    free(out);
    return v;
}

long tu_prepared(const char *which, const char *prefix)
{
    char sql[200], *out, *save = NULL;
    long n = 0;
    if (strcmp(which, "payment") == 0) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() "
                 "AND starts_with(gid, '%s')",
                 prefix);
        return tu_shop_long(which, sql);
    }
    /* XA RECOVER rows: formatID, gtrid_length, bqual_length, data (gtrid then bqual) */
    out = tu_admin_sql(which, strcmp(which, "order") == 0 ? "shop_order" : "shop_warehouse",
                       "XA RECOVER");
    if (!out)
        fail_msg("XA RECOVER failed on %s", which);
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *data = strrchr(line, '\t');
        n += data && strncmp(data + 1, prefix, strlen(prefix)) == 0;
    }
    free(out);
    return n;
}

long tu_balance(long user)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT balance FROM account WHERE user_id = %ld", user);
    return tu_shop_long("payment", sql);
}

char tu_order_status(long order)
{
    char sql[96], *out, st;
    snprintf(sql, sizeof sql, "SELECT status FROM orders WHERE id = %ld", order);
    out = tu_admin_sql("order", "shop_order", sql);
    if (!out)
        fail_msg("no order %ld", order);
    st = out[0];
    free(out);
    return st;
}

void *tu_post_thread(void *arg)
{
    tu_poster *p = arg;
    p->status = tu_http(p->d->port, "POST", "/v1/transactions", p->body, NULL, &p->resp);
    return NULL;
}

void tu_hold_stock_row(double hold_s)
{
    assert_int_equal(tu_sh("mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P%s -uroot "
                           "shop_warehouse -e \"BEGIN; SELECT * FROM stock WHERE sku = 'SKU-1' "
                           "FOR UPDATE; SELECT SLEEP(%.1f); COMMIT;\" >/dev/null 2>&1 &",
                           tu_env("XA_WAREHOUSE_PORT"), hold_s),
                     0);
    usleep(300000);
}
