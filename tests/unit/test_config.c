/*
 * Configuration loading and validation (coordinator/config.c): values and defaults of a valid
 * file, the shipped example, the dump, and one test per kind of error - each error must name the
 * file, the line and the key, and no message or dump may ever contain a secret.
 */
#include "testutil.h"

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SECRET "Pa55-never-print-me"
#define TOKEN "tok-never-print-me"

typedef struct fixture {
    char dir[64];
    char cfg_path[128];
} fixture;

static void write_file(const char *path, const char *content, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static char *path_in(const fixture *fx, const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", fx->dir, name);
    return buf;
}

/* Returns a malloc'ed copy of text with every `from` replaced by `to`. */
static char *replace_all(const char *text, const char *from, const char *to)
{
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = strstr(text, from); p; p = strstr(p + fl, from))
        n++;
    char *out = malloc(strlen(text) + n * tl + 1);
    assert_non_null(out);
    char *o = out;
    for (const char *p = text;;) {
        const char *hit = strstr(p, from);
        size_t chunk = hit ? (size_t)(hit - p) : strlen(p);
        memcpy(o, p, chunk);
        o += chunk;
        if (!hit)
            break;
        memcpy(o, to, tl);
        o += tl;
        p = hit + fl;
    }
    *o = '\0';
    return out;
}

/* Writes text (with @DIR@ standing for the fixture's directory) as the config file and loads it. */
static int load_text(const fixture *fx, const char *text, config *cfg, char *err, size_t errlen)
{
    char *body = replace_all(text, "@DIR@", fx->dir);
    write_file(fx->cfg_path, body, 0644);
    free(body);
    err[0] = '\0';
    return config_load(fx->cfg_path, cfg, err, errlen);
}

static int group_setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/xacoord-test-config-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->cfg_path, sizeof fx->cfg_path, "%s/xacoord.ini", fx->dir);
    write_file(path_in(fx, "pw"), SECRET "\n", 0600);
    write_file(path_in(fx, "token"), TOKEN "\n", 0600);
    write_file(path_in(fx, "ca.pem"), "not checked here\n", 0644);
    write_file(path_in(fx, "cert.pem"), "not checked here\n", 0644);
    write_file(path_in(fx, "key.pem"), "not checked here\n", 0600);
    *state = fx;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *fx = *state;
    tu_sh("rm -rf '%s'", fx->dir);
    free(fx);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Valid files.
 */

static const char full_config[] =
    "; every key set\n"
    "[coordinator]\n"
    "node_id = shop01\n"
    "listen = [::1]:8081\n"
    "data_dir = @DIR@/data\n"
    "api_token_file = @DIR@/token\n"
    "max_inflight = 1000\n"
    "default_timeout_ms = 4000\n"
    "max_timeout_ms = 30000\n"
    "commit_wait_ms = 1500\n"
    "drain_limit_ms = 4500\n"
    "recovery_interval_ms = 5000\n"
    "outcome_retention_s = 3600\n"
    "max_body_bytes = 65536\n"
    "max_branches = 8\n"
    "max_statements = 32\n"
    "log_level = debug\n"
    "\n"
    "[participant.payment]\n"
    "driver = postgres\n"
    "conninfo = host=127.0.0.1 port=25432 dbname=payment user=xacoord sslmode=disable\n"
    "password_file = @DIR@/pw\n"
    "    pool_size = 4   ; indented, with a comment\n"
    "connect_timeout_ms = 1000\n"
    "lock_timeout_ms = 1500\n"
    "\n"
    "[participant.order_db]\n"
    "driver = mysql\n"
    "host = 127.0.0.1\n"
    "port = 23306\n"
    "database = shop_order\n"
    "user = xacoord\n"
    "password_file = @DIR@/pw\n"
    "ssl_ca = @DIR@/ca.pem\n"
    "ssl_cert = @DIR@/cert.pem\n"
    "ssl_key = @DIR@/key.pem\n"
    "ssl_verify_server_cert = false\n"
    "pool_size = 2\n"
    "connect_timeout_ms = 2000\n"
    "lock_timeout_ms = 3000\n"
    "\n"
    "[participant.mem]\n"
    "driver = memory\n";

static void test_full_config(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    assert_int_equal(load_text(fx, full_config, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg.path, fx->cfg_path);
    assert_string_equal(cfg.node_id, "shop01");
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8081);
    assert_string_equal(cfg.data_dir, path_in(fx, "data"));
    assert_string_equal(cfg.api_token_file, path_in(fx, "token"));
    assert_string_equal(cfg.api_token, TOKEN);
    assert_int_equal(cfg.max_inflight, 1000);
    assert_int_equal(cfg.default_timeout_ms, 4000);
    assert_int_equal(cfg.max_timeout_ms, 30000);
    assert_int_equal(cfg.commit_wait_ms, 1500);
    assert_int_equal(cfg.drain_limit_ms, 4500);
    assert_int_equal(cfg.recovery_interval_ms, 5000);
    assert_int_equal(cfg.outcome_retention_s, 3600);
    assert_int_equal(cfg.max_body_bytes, 65536);
    assert_int_equal(cfg.max_branches, 8);
    assert_int_equal(cfg.max_statements, 32);
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.nparticipants, 3);

    const config_participant *pg = config_find_participant(&cfg, "payment");
    assert_non_null(pg);
    assert_string_equal(pg->driver, "postgres");
    assert_string_equal(pg->password, SECRET);
    assert_int_equal(pg->pool_size, 4);
    assert_int_equal(pg->connect_timeout_ms, 1000);
    assert_int_equal(pg->lock_timeout_ms, 1500);
    assert_ptr_equal(pg->target.name, pg->name);
    assert_ptr_equal(pg->target.conninfo, pg->conninfo);
    assert_ptr_equal(pg->target.password, pg->password);
    assert_string_equal(pg->target.driver, "postgres");
    assert_null(pg->target.host);
    assert_int_equal(pg->target.connect_timeout_ms, 1000);
    assert_int_equal(pg->target.lock_timeout_ms, 1500);

    const config_participant *my = config_find_participant(&cfg, "order_db");
    assert_non_null(my);
    assert_string_equal(my->target.host, "127.0.0.1");
    assert_int_equal(my->target.port, 23306);
    assert_string_equal(my->target.database, "shop_order");
    assert_string_equal(my->target.user, "xacoord");
    assert_string_equal(my->target.password, SECRET);
    assert_string_equal(my->target.ssl_ca, path_in(fx, "ca.pem"));
    assert_string_equal(my->target.ssl_cert, path_in(fx, "cert.pem"));
    assert_string_equal(my->target.ssl_key, path_in(fx, "key.pem"));
    assert_false(my->target.ssl_verify_server_cert);
    assert_int_equal(my->target.lock_timeout_ms, 3000);
    assert_int_equal(my->pool_size, 2);

    const config_participant *mem = config_find_participant(&cfg, "mem");
    assert_non_null(mem);
    assert_string_equal(mem->target.driver, "memory");
    assert_null(mem->target.password);
    assert_int_equal(mem->target.lock_timeout_ms, 2000); /* half of default_timeout_ms */
    assert_null(config_find_participant(&cfg, "nope"));
    config_free(&cfg);
    assert_null(cfg.path);
}

static void test_defaults(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    assert_int_equal(load_text(fx,
                               "[coordinator]\nnode_id = c1\ndata_dir = d\n"
                               "[participant.order]\ndriver = mysql\nhost = ::1\n"
                               "database = shop_order\nuser = xacoord\n"
                               "[participant.tls]\ndriver = mysql\nhost = 127.0.0.1\n"
                               "database = x\nuser = y\nssl_ca = @DIR@/ca.pem\n"
                               "[participant.payment]\ndriver = postgres\n"
                               "conninfo = hostaddr=10.0.0.1 host=db.example.com dbname=p\n",
                               &cfg, err, sizeof err),
                     0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 7070);
    assert_null(cfg.api_token_file);
    assert_null(cfg.api_token);
    assert_int_equal(cfg.max_inflight, 256);
    assert_int_equal(cfg.default_timeout_ms, 5000);
    assert_int_equal(cfg.max_timeout_ms, 60000);
    assert_int_equal(cfg.commit_wait_ms, 2000);
    assert_int_equal(cfg.drain_limit_ms, 30000);
    assert_int_equal(cfg.recovery_interval_ms, 10000);
    assert_int_equal(cfg.outcome_retention_s, 86400);
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(cfg.max_branches, 16);
    assert_int_equal(cfg.max_statements, 64);
    assert_string_equal(cfg.log_level, "info");
    const config_participant *p = config_find_participant(&cfg, "order");
    assert_non_null(p);
    assert_int_equal(p->port, 3306);
    assert_int_equal(p->pool_size, 8);
    assert_int_equal(p->connect_timeout_ms, 3000);
    assert_int_equal(p->lock_timeout_ms, 2500);
    assert_null(p->password);
    assert_null(p->target.password);
    assert_null(p->target.ssl_ca);
    assert_false(p->target.ssl_verify_server_cert);
    p = config_find_participant(&cfg, "tls");
    assert_non_null(p);
    assert_true(p->target.ssl_verify_server_cert); /* default once ssl_ca is set */
    p = config_find_participant(&cfg, "payment");
    assert_non_null(p);
    assert_int_equal(p->target.port, 0);
    config_free(&cfg);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    assert_true(n > 0 && n < (1 << 16) - 1);
    fclose(f);
    return buf;
}

static void test_example_file(void **state)
{
    fixture *fx = *state;
    /* The example lives next to the tests in the source tree. */
    char example[512];
    const char *me = __FILE__;
    const char *tail = strstr(me, "tests/unit/test_config.c");
    assert_non_null(tail);
    snprintf(example, sizeof example, "%.*sdocs/xacoord.example.ini", (int)(tail - me), me);
    char *text = read_all(example);
    char dir[80];
    snprintf(dir, sizeof dir, "%s/", fx->dir);
    char *local = replace_all(text, "/etc/xacoord/", dir);
    free(text);
    write_file(path_in(fx, "payment.pw"), "pg-" SECRET "\n", 0600);
    write_file(path_in(fx, "order.pw"), "order-" SECRET "\n", 0600);
    write_file(path_in(fx, "warehouse.pw"), "wh-" SECRET, 0600); /* no newline: fine too */

    config cfg;
    char err[512];
    assert_int_equal(load_text(fx, local, &cfg, err, sizeof err), 0);
    free(local);
    assert_string_equal(cfg.node_id, "c1");
    assert_string_equal(cfg.api_token, TOKEN);
    assert_int_equal(cfg.nparticipants, 3);
    const config_participant *pg = config_find_participant(&cfg, "payment");
    const config_participant *order = config_find_participant(&cfg, "order");
    const config_participant *wh = config_find_participant(&cfg, "warehouse");
    assert_non_null(pg);
    assert_non_null(order);
    assert_non_null(wh);
    assert_non_null(strstr(pg->conninfo, "port=25432"));
    assert_non_null(strstr(pg->conninfo, "dbname=payment"));
    assert_string_equal(pg->password, "pg-" SECRET);
    assert_int_equal(order->port, 23306);
    assert_string_equal(order->database, "shop_order");
    assert_string_equal(order->password, "order-" SECRET);
    assert_int_equal(wh->port, 23307);
    assert_string_equal(wh->database, "shop_warehouse");
    assert_string_equal(wh->user, "xacoord");
    assert_string_equal(wh->password, "wh-" SECRET);
    assert_int_equal(wh->lock_timeout_ms, 2500);
    config_free(&cfg);
}

static void assert_no_secret(const char *text)
{
    if (strstr(text, SECRET) || strstr(text, TOKEN) || strstr(text, "hunter2"))
        fail_msg("secret leaked into: %s", text);
}

static void test_dump_masks_secrets_and_reloads(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    assert_int_equal(load_text(fx, full_config, &cfg, err, sizeof err), 0);
    char *dump = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&dump, &len);
    assert_non_null(out);
    config_dump(&cfg, out);
    assert_int_equal(fclose(out), 0);
    assert_no_secret(dump);
    assert_non_null(strstr(dump, "(set)"));
    assert_non_null(strstr(dump, "listen = [::1]:8081\n"));
    assert_non_null(strstr(dump, "lock_timeout_ms = 2000\n")); /* the derived default */
    assert_non_null(strstr(dump, "ssl_verify_server_cert = false\n"));
    config_free(&cfg);

    /* The dump is itself a valid configuration with the same effect. */
    config again;
    write_file(fx->cfg_path, dump, 0644);
    free(dump);
    assert_int_equal(config_load(fx->cfg_path, &again, err, sizeof err), 0);
    assert_string_equal(again.node_id, "shop01");
    assert_int_equal(again.listen_port, 8081);
    assert_string_equal(again.api_token, TOKEN);
    assert_int_equal(again.nparticipants, 3);
    const config_participant *my = config_find_participant(&again, "order_db");
    assert_non_null(my);
    assert_false(my->ssl_verify_server_cert);
    assert_int_equal(my->lock_timeout_ms, 3000);
    config_free(&again);
}

/* ---------------------------------------------------------------------------------------------
 * Errors.
 */

#define COORD "[coordinator]\nnode_id = c1\ndata_dir = @DIR@/data\n" /* 1-3 */
#define PG                                                                                         \
    "[participant.payment]\ndriver = postgres\nconninfo = host=127.0.0.1 dbname=payment\n"         \
    "password_file = @DIR@/pw\n" /* 4 lines */

/* Loads text, expects failure at `line` (0: a file-level error) with every needle in the message,
 * no secret in it, and nothing left in cfg. */
static void expect_error(const fixture *fx, const char *text, int line, const char *needle1,
                         const char *needle2)
{
    config cfg;
    char err[512], prefix[200];
    if (load_text(fx, text, &cfg, err, sizeof err) == 0) {
        config_free(&cfg);
        fail_msg("accepted:\n%s", text);
    }
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d: ", fx->cfg_path, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", fx->cfg_path);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("want prefix \"%s\", got \"%s\"", prefix, err);
    if (strstr(err, needle1) == NULL || (needle2 && strstr(err, needle2) == NULL))
        fail_msg("want \"%s\" and \"%s\" in \"%s\"", needle1, needle2 ? needle2 : "", err);
    assert_no_secret(err);
    assert_null(cfg.path);
    assert_int_equal(cfg.nparticipants, 0);
}

static void test_unknown_key_and_section(void **state)
{
    fixture *fx = *state;
    expect_error(fx, COORD "bogus = 1\n" PG, 4, "[coordinator] bogus", "unknown key");
    expect_error(fx, COORD PG "colour = red\n", 8, "[participant.payment] colour", "unknown key");
    expect_error(fx, COORD "[metrics]\nport = 1\n" PG, 4, "[metrics]", "unknown section");
    expect_error(fx, COORD "[participant]\n" PG, 4, "[participant]", "unknown section");
    expect_error(fx, "node_id = c1\n" COORD PG, 1, "node_id", "outside any section");
}

static void test_duplicates(void **state)
{
    fixture *fx = *state;
    expect_error(fx, COORD "node_id = c2\n" PG, 4, "[coordinator] node_id", "line 2");
    expect_error(fx, COORD PG "driver = postgres\n", 8, "[participant.payment] driver", "twice");
    expect_error(fx, COORD PG PG, 8, "[participant.payment]", "given twice");
    expect_error(fx, COORD PG "[coordinator]\n", 8, "[coordinator]", "given twice");
}

static void test_bad_integers(void **state)
{
    fixture *fx = *state;
    expect_error(fx, COORD "max_inflight = 12abc\n" PG, 4, "[coordinator] max_inflight",
                 "1..100000");
    expect_error(fx, COORD "max_inflight = -1\n" PG, 4, "max_inflight", "decimal");
    expect_error(fx, COORD "max_inflight = +5\n" PG, 4, "max_inflight", "decimal");
    expect_error(fx, COORD "max_inflight = 0x10\n" PG, 4, "max_inflight", "decimal");
    expect_error(fx, COORD "max_inflight = 100001\n" PG, 4, "max_inflight", "1..100000");
    expect_error(fx, COORD "max_inflight = 99999999999999999999999\n" PG, 4, "max_inflight",
                 "out of range");
    expect_error(fx, COORD PG "pool_size = 2000\n", 8, "pool_size", "1..1024");
    expect_error(fx, COORD PG "pool_size = 0\n", 8, "pool_size", "1..1024");
    expect_error(fx, COORD "max_body_bytes = 100\n" PG, 4, "max_body_bytes", "1024..67108864");
    expect_error(fx, COORD "max_branches = 65\n" PG, 4, "max_branches", "1..64");
    expect_error(fx, COORD "max_statements = 1025\n" PG, 4, "max_statements", "1..1024");
    expect_error(fx, COORD "data_dir2 = x\n" PG, 4, "data_dir2", "unknown key");
    expect_error(fx, "[coordinator]\nnode_id = c1\ndata_dir =\n" PG, 3, "data_dir", "empty");
    expect_error(fx, COORD "log_level = verbose\n" PG, 4, "log_level", "debug, info");
}

static void test_bad_listen(void **state)
{
    fixture *fx = *state;
    static const char *const bad[] = {
        "localhost:7070", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",    "127.0.0.1:70000",
        "::1:7070",       "[::1]",     "[::1]7070",  "[127.0.0.1]:80", "256.1.1.1:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "%slisten = %s\n%s", COORD, bad[i], PG);
        expect_error(fx, text, 4, "[coordinator] listen", NULL);
    }
}

static void test_node_id_and_names(void **state)
{
    fixture *fx = *state;
    expect_error(fx, "[coordinator]\nnode_id = C1\ndata_dir = d\n" PG, 2, "node_id", "[a-z0-9]");
    expect_error(fx, "[coordinator]\nnode_id = a-b\ndata_dir = d\n" PG, 2, "node_id", NULL);
    /* 17 characters: the gtrid limit is explained */
    expect_error(fx, "[coordinator]\nnode_id = abcdefghijklmnopq\ndata_dir = d\n" PG, 2, "node_id",
                 "64 bytes");
    config cfg;
    char err[512];
    assert_int_equal(load_text(fx, "[coordinator]\nnode_id = abcdefghijklmnop\ndata_dir = d\n" PG,
                               &cfg, err, sizeof err),
                     0);
    config_free(&cfg);
    /* 33 characters */
    expect_error(fx, COORD "[participant.abcdefghijklmnopqrstuvwxyz0123456]\ndriver = memory\n", 4,
                 "[participant.abcdefghijklmnopqrstuvwxyz0123456]", "bqual");
    expect_error(fx, COORD "[participant.Pay]\ndriver = memory\n", 4, "[participant.Pay]",
                 "[a-z0-9_]");
    expect_error(fx, COORD "[participant.]\ndriver = memory\n", 4, "[participant.]", "1..32");
    assert_int_equal(load_text(fx,
                               COORD "[participant.abcdefghijklmnopqrstuvwxyz_12345]\n"
                                     "driver = memory\n",
                               &cfg, err, sizeof err),
                     0);
    config_free(&cfg);
}

static void test_participant_limit(void **state)
{
    fixture *fx = *state;
    char text[4096];
    int n = snprintf(text, sizeof text, "%s", COORD);
    for (int i = 0; i <= CONFIG_MAX_PARTICIPANTS; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, "[participant.m%d]\ndriver = memory\n", i);
    /* Sections start at line 4 and take two lines each. */
    expect_error(fx, text, 4 + 2 * CONFIG_MAX_PARTICIPANTS, "[participant.m32]", "more than 32");
}

static void test_missing_required(void **state)
{
    fixture *fx = *state;
    expect_error(fx, "[coordinator]\nnode_id = c1\n" PG, 1, "[coordinator] data_dir", "required");
    expect_error(fx, "[coordinator]\ndata_dir = d\n" PG, 1, "[coordinator] node_id", "required");
    expect_error(fx, COORD "[participant.payment]\nconninfo = dbname=p\n", 4,
                 "[participant.payment] driver", "required");
    expect_error(fx, COORD "[participant.payment]\ndriver = postgres\n", 4,
                 "[participant.payment] conninfo", "required");
    expect_error(fx, COORD "[participant.order]\ndriver = mysql\nhost = 127.0.0.1\nuser = u\n", 4,
                 "[participant.order] database", "required");
    expect_error(fx, COORD "[participant.order]\ndriver = mysql\ndatabase = d\nuser = u\n", 4,
                 "[participant.order] host", "required");
    expect_error(fx, COORD "[participant.order]\ndriver = mysql\nhost = ::1\ndatabase = d\n", 4,
                 "[participant.order] user", "required");
    expect_error(fx, COORD "[participant.x]\ndriver = oracle\n", 5, "[participant.x] driver",
                 "not a driver");
    expect_error(fx, PG, 0, "no [coordinator] section", NULL);
    expect_error(fx, COORD, 0, "no participant", NULL);
}

static void test_wrong_driver_keys(void **state)
{
    fixture *fx = *state;
    expect_error(fx, COORD PG "host = 127.0.0.1\n", 8, "[participant.payment] host",
                 "host is not a postgres key");
    expect_error(fx,
                 COORD "[participant.order]\nhost = 127.0.0.1\nconninfo = dbname=x\n"
                       "driver = mysql\ndatabase = d\nuser = u\n",
                 6, "[participant.order] conninfo", "conninfo is not a mysql key");
    expect_error(fx, COORD "[participant.m]\ndriver = memory\npassword_file = @DIR@/pw\n", 6,
                 "password_file", "not a memory key");
    expect_error(fx, COORD "[participant.order]\ndriver = mysql\nhost = db.example.com\n", 6,
                 "[participant.order] host", "numeric");
}

static void test_conninfo(void **state)
{
    fixture *fx = *state;
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = dbname=x password=hunter2\n",
                 6, "[participant.p] conninfo", "use password_file");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = dbname=x password = 'hunter2 x'\n",
                 6, "conninfo", "use password_file");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgresql://u:hunter2@127.0.0.1/db\n",
                 6, "conninfo", "use password_file");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = host=db.example.com dbname=x\n",
                 6, "conninfo", "numeric");
    expect_error(fx, COORD "[participant.p]\ndriver = postgres\nconninfo = dbname='hunter2\n", 6,
                 "conninfo", "malformed");
    /* What libpq reads, not what the text looks like: a URI's host list, percent-encoded keys. */
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgresql://db.example.com/payment\n",
                 6, "conninfo", "db.example.com is not a numeric address");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgresql://127.0.0.1,db.example.com:5433/payment\n",
                 6, "conninfo", "db.example.com is not a numeric address");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgresql://127.0.0.1/payment?pass%77ord=hunter2\n",
                 6, "conninfo", "use password_file");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgres://127.0.0.1/payment?host=db.example.com\n",
                 6, "conninfo", "not a numeric address");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\n"
                       "conninfo = postgresql://127.0.0.1/payment?colour=red\n",
                 6, "conninfo", "malformed");
    static const char *const fine[] = {
        "postgresql://127.0.0.1:5432/payment?sslmode=disable",
        "postgresql://xacoord@[::1]/payment",
        "postgresql:///payment?host=/run/postgresql",
        "postgresql://db.example.com/payment?hostaddr=10.0.0.1",
        "host=/run/postgresql dbname=payment",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        char text[512], err[512];
        config cfg;
        snprintf(text, sizeof text, COORD "[participant.p]\ndriver = postgres\nconninfo = %s\n",
                 fine[i]);
        if (load_text(fx, text, &cfg, err, sizeof err) != 0)
            fail_msg("refused %s: %s", fine[i], err);
        config_free(&cfg);
    }
}

static void test_secret_files(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    write_file(path_in(fx, "open.pw"), SECRET "\n", 0644);
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                       "password_file = @DIR@/open.pw\n",
                 7, "[participant.p] password_file", "is readable by group or others (chmod 600)");
    write_file(path_in(fx, "open.pw"), SECRET "\n", 0620);
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                       "password_file = @DIR@/open.pw\n",
                 7, "password_file", "writable by group or others");
    /* Once fixed, the same file is accepted. */
    assert_int_equal(chmod(path_in(fx, "open.pw"), 0600), 0);
    assert_int_equal(load_text(fx,
                               COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                                     "password_file = @DIR@/open.pw\n",
                               &cfg, err, sizeof err),
                     0);
    assert_string_equal(cfg.participants[0].password, SECRET);
    config_free(&cfg);

    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                       "password_file = @DIR@/missing.pw\n",
                 7, "password_file", "No such file");
    write_file(path_in(fx, "empty.pw"), "\n", 0600);
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                       "password_file = @DIR@/empty.pw\n",
                 7, "password_file", "empty");
    expect_error(fx,
                 COORD "[participant.p]\ndriver = postgres\nconninfo = dbname=x\n"
                       "password_file = @DIR@\n",
                 7, "password_file", "not a regular file");
    write_file(path_in(fx, "open.token"), TOKEN "\n", 0640);
    expect_error(fx, COORD "api_token_file = @DIR@/open.token\n" PG, 4,
                 "[coordinator] api_token_file", "(chmod 600)");
}

static void test_timeouts(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    expect_error(fx, COORD "default_timeout_ms = 2000\n" PG "lock_timeout_ms = 2000\n", 9,
                 "[participant.payment] lock_timeout_ms", "below default_timeout_ms");
    expect_error(fx, COORD "default_timeout_ms = 2000\n" PG "lock_timeout_ms = 5000\n", 9,
                 "lock_timeout_ms", "2000");
    /* MySQL counts whole seconds: 1001 ms is 2 s, not below 2000 ms. */
    expect_error(fx,
                 COORD "default_timeout_ms = 2000\n"
                       "[participant.o]\ndriver = mysql\nhost = 127.0.0.1\ndatabase = d\n"
                       "user = u\nlock_timeout_ms = 1001\n",
                 10, "lock_timeout_ms", "whole seconds");
    /* The derived default (half of 1000 = 500 ms) rounds up to 1 s for MySQL. */
    expect_error(fx,
                 COORD "default_timeout_ms = 1000\n"
                       "[participant.o]\ndriver = mysql\nhost = 127.0.0.1\ndatabase = d\n"
                       "user = u\n",
                 5, "[participant.o] lock_timeout_ms", "default");
    expect_error(fx, COORD "default_timeout_ms = 9000\nmax_timeout_ms = 8000\n" PG, 5,
                 "[coordinator] max_timeout_ms", ">= default_timeout_ms");
    expect_error(fx, COORD "default_timeout_ms = 90000\n" PG, 4, "[coordinator] default_timeout_ms",
                 ">= default_timeout_ms");
    assert_int_equal(load_text(fx,
                               COORD "default_timeout_ms = 2000\n" PG "lock_timeout_ms = 1999\n",
                               &cfg, err, sizeof err),
                     0);
    assert_int_equal(cfg.participants[0].target.lock_timeout_ms, 1999);
    config_free(&cfg);
}

/* allow_unsafe: off unless set, a boolean, and only for database drivers (preflight.h). */
static void test_allow_unsafe(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    assert_int_equal(load_text(fx, COORD PG, &cfg, err, sizeof err), 0);
    assert_false(cfg.participants[0].allow_unsafe);
    config_free(&cfg);
    assert_int_equal(load_text(fx, COORD PG "allow_unsafe = true\n", &cfg, err, sizeof err), 0);
    assert_true(cfg.participants[0].allow_unsafe);
    config_free(&cfg);
    expect_error(fx, COORD PG "allow_unsafe = maybe\n", 8, "allow_unsafe", "");
    expect_error(fx, COORD "[participant.m]\ndriver = memory\nallow_unsafe = true\n", 6,
                 "allow_unsafe", "not a memory key");
}

/* decision_log = postgres and [decision_store] go together; renew_ms fits the lease. */
static void test_decision_store(void **state)
{
    fixture *fx = *state;
    config cfg;
    char err[512];
    const char *store = "[decision_store]\nconninfo = host=127.0.0.1 dbname=xa\n"; /* 5-6 */
    char text[1024];
    assert_int_equal(load_text(fx, COORD PG, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.decision_log, DECISION_LOG_JOURNAL);
    assert_false(cfg.has_store);
    config_free(&cfg);

    snprintf(text, sizeof text, "%sdecision_log = postgres\n%s%s", COORD, store, PG);
    assert_int_equal(load_text(fx, text, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.decision_log, DECISION_LOG_POSTGRES);
    assert_int_equal(cfg.store.pool_size, 4);
    assert_int_equal(cfg.store.lease_ms, 10000);
    assert_int_equal(cfg.store.renew_ms, 2500); /* a quarter of the lease */
    assert_string_equal(cfg.store.target.driver, "postgres");
    config_free(&cfg);

    expect_error(fx, COORD "decision_log = sqlite\n" PG, 4, "decision_log", "journal or postgres");
    expect_error(fx, COORD "decision_log = postgres\n" PG, 4, "decision_log",
                 "needs a [decision_store]");
    snprintf(text, sizeof text, "%s%s%s", COORD, store, PG);
    expect_error(fx, text, 4, "[decision_store]", "only with decision_log = postgres");
    snprintf(text, sizeof text, "%sdecision_log = postgres\n[decision_store]\n%s", COORD, PG);
    expect_error(fx, text, 5, "[decision_store] conninfo", "is required");
    snprintf(text, sizeof text, "%sdecision_log = postgres\n%slease_ms = 1000\nrenew_ms = 600\n%s",
             COORD, store, PG);
    expect_error(fx, text, 8, "renew_ms", "at most half of lease_ms");
    snprintf(text, sizeof text, "%sdecision_log = postgres\n%scolour = red\n%s", COORD, store, PG);
    expect_error(fx, text, 7, "[decision_store] colour", "unknown key");
}

static void test_tls_keys(void **state)
{
    fixture *fx = *state;
    const char *my = "[participant.o]\ndriver = mysql\nhost = 127.0.0.1\ndatabase = d\nuser = u\n";
    char text[512];
    snprintf(text, sizeof text, "%s%sssl_cert = @DIR@/cert.pem\nssl_key = @DIR@/key.pem\n", COORD,
             my);
    expect_error(fx, text, 9, "[participant.o] ssl_cert", "needs ssl_ca");
    snprintf(text, sizeof text, "%s%sssl_ca = @DIR@/ca.pem\nssl_cert = @DIR@/cert.pem\n", COORD,
             my);
    expect_error(fx, text, 10, "ssl_cert", "go together");
    snprintf(text, sizeof text, "%s%sssl_ca = @DIR@/nope.pem\n", COORD, my);
    expect_error(fx, text, 9, "[participant.o] ssl_ca", "No such file");
    snprintf(text, sizeof text, "%s%sssl_ca = @DIR@/ca.pem\nssl_verify_server_cert = yes\n", COORD,
             my);
    expect_error(fx, text, 10, "ssl_verify_server_cert", "true or false");
    expect_error(fx, COORD PG "ssl_ca = @DIR@/ca.pem\n", 8, "ssl_ca", "not a postgres key");
}

static void test_syntax(void **state)
{
    fixture *fx = *state;
    expect_error(fx, COORD "just some words\n" PG, 4, "syntax error", NULL);
    expect_error(fx, COORD "[participant.p\ndriver = memory\n", 4, "without ']'", NULL);
    expect_error(fx, COORD "[participant.p] extra\ndriver = memory\n", 4, "after the section",
                 NULL);
    /* A syntax error before a semantic one is the one reported. */
    expect_error(fx, COORD "oops\nbogus = 1\n" PG, 4, "syntax error", NULL);
    char text[1024];
    char longval[400];
    memset(longval, 'x', sizeof longval - 1);
    longval[sizeof longval - 1] = '\0';
    snprintf(text, sizeof text, "%sapi_token_file = %s\n%s", COORD, longval, PG);
    expect_error(fx, text, 4, "line longer than", NULL);
}

/* A NUL byte must not split a line: inih reads lines in chunks of 199 bytes, and with a NUL in
 * the first chunk the rest of the line used to be read as a line of its own - so a comment could
 * set any key (here data_dir). */
static void test_nul_byte(void **state)
{
    fixture *fx = *state;
    static const char head[] = "[coordinator]\nnode_id = c1\n; c";
    static const char tail[] = "data_dir = /tmp/elsewhere\n[participant.m]\ndriver = memory\n";
    char text[1024], err[512], prefix[200];
    size_t n = 0;
    config cfg;
    FILE *f;
    memcpy(text + n, head, sizeof head - 1);
    n += sizeof head - 1;
    text[n++] = '\0';
    memset(text + n, ' ', 195); /* "data_dir" starts a new 199-byte chunk */
    n += 195;
    n += (size_t)snprintf(text + n, sizeof text - n, "%s", tail);
    f = fopen(fx->cfg_path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    if (config_load(fx->cfg_path, &cfg, err, sizeof err) == 0) {
        config_free(&cfg);
        fail_msg("a NUL byte was accepted");
    }
    snprintf(prefix, sizeof prefix, "%s:3: NUL byte", fx->cfg_path);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("want \"%s\", got \"%s\"", prefix, err);
}

/* Every value that loads is written back by config_dump in a form that loads to the same value:
 * "key =;x" is the value ";x", but "key = ;x" a comment. */
static void test_dump_reloads_what_loaded(void **state)
{
    fixture *fx = *state;
    expect_error(fx, "[coordinator]\nnode_id = c1\ndata_dir =;\n[participant.m]\ndriver = memory\n",
                 3, "[coordinator] data_dir", "must not start with ';'");
    expect_error(fx, COORD "api_token_file=;x\n" PG, 4, "api_token_file",
                 "must not start with ';'");
}

/* A value as long as its line allows when written "key=value" would not fit once config_dump
 * writes "key = value" (found by fuzz_config): the longest that loads must dump to a line that
 * loads back, and one character more is refused, naming the limit. */
static void test_long_value_dumps_back(void **state)
{
    fixture *fx = *state;
    char user[200], text[1024], err[512], *dumped = NULL;
    size_t room = 198 - strlen("user = "), len = 0;
    config cfg;
    FILE *f;
    memset(user, 'u', room);
    user[room] = '\0';
    snprintf(text, sizeof text,
             COORD "[participant.m]\ndriver = mysql\nhost = 127.0.0.1\ndatabase = d\nuser=%s\n"
                   "password_file = @DIR@/pw\n",
             user);
    if (load_text(fx, text, &cfg, err, sizeof err) != 0)
        fail_msg("the longest value that fits was refused: %s", err);
    f = open_memstream(&dumped, &len);
    assert_non_null(f);
    config_dump(&cfg, f);
    assert_int_equal(fclose(f), 0);
    config_free(&cfg);
    if (load_text(fx, dumped, &cfg, err, sizeof err) != 0)
        fail_msg("its dump does not load back: %s", err);
    config_free(&cfg);
    free(dumped);
    user[room] = 'u';
    user[room + 1] = '\0';
    snprintf(text, sizeof text,
             COORD "[participant.m]\ndriver = mysql\nhost = 127.0.0.1\ndatabase = d\nuser=%s\n"
                   "password_file = @DIR@/pw\n",
             user);
    expect_error(fx, text, 8, "user", "at most 191 fit on its line");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_long_value_dumps_back),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_dump_masks_secrets_and_reloads),
        cmocka_unit_test(test_unknown_key_and_section),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_bad_integers),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_node_id_and_names),
        cmocka_unit_test(test_participant_limit),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_wrong_driver_keys),
        cmocka_unit_test(test_conninfo),
        cmocka_unit_test(test_secret_files),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_allow_unsafe),
        cmocka_unit_test(test_tls_keys),
        cmocka_unit_test(test_decision_store),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_dump_reloads_what_loaded),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
