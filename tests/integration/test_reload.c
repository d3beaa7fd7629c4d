/*
 * SIGHUP reloads what can change safely and logs what it could not (reload.h); log_format = json
 * writes one JSON object per line.
 */
#include "daemon.h"
#include "testutil.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void config_replace(tu_daemon *d, const char *match, const char *line)
{
    assert_int_equal(tu_sh("sed -i 's|^%s.*$|%s|' %s", match, line, d->config), 0);
}

/* Waits (bounded) until the log has a line containing text. */
static void wait_log(const tu_daemon *d, const char *text)
{
    for (int i = 0; i < 100; i++) {
        if (tu_sh("grep -qF -- '%s' %s", text, d->log) == 0)
            return;
        usleep(100000);
    }
    tu_sh("tail -20 %s >&2", d->log);
    fail_msg("the log never showed: %s", text);
}

static long pool_size(const tu_daemon *d, const char *token, const char *name)
{
    char *resp = NULL;
    json_t *st, *p;
    size_t i;
    long size = -1;
    assert_int_equal(tu_http(d->port, "GET", "/v1/status", NULL, token, &resp), 200);
    st = json_loads(resp, 0, NULL);
    assert_non_null(st);
    json_array_foreach(json_object_get(st, "participants"), i,
                       p) if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0)
        size = (long)json_integer_value(json_object_get(json_object_get(p, "pool"), "size"));
    json_decref(st);
    free(resp);
    return size;
}

/* Every line after the first JSON one is a JSON object with time, level and msg. */
static void check_json_lines(const tu_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    char line[8192];
    int json_lines = 0;
    assert_non_null(f);
    while (fgets(line, sizeof line, f)) {
        json_t *j;
        if (line[0] != '{') {
            assert_int_equal(json_lines, 0); /* no text line after the switch */
            continue;
        }
        j = json_loads(line, 0, NULL);
        if (!j || !json_is_string(json_object_get(j, "time")) ||
            !json_is_string(json_object_get(j, "level")) ||
            !json_is_string(json_object_get(j, "msg")))
            fail_msg("not a JSON log line: %s", line);
        json_decref(j);
        json_lines++;
    }
    fclose(f);
    assert_true(json_lines >= 3);
}

static void test_sighup_reload(void **state)
{
    tu_daemon d;
    char line[480], tokfile[300], *resp = NULL;

    tu_daemon_init(&d, "reload", NULL);
    tu_daemon_start(&d, NULL);
    assert_int_equal(pool_size(&d, NULL, "payment"), 8);

    /* reloadable: level, format, token, a timeout, one pool; not: the listen address, and one
     * participant's database */
    snprintf(tokfile, sizeof tokfile, "%s/token", d.dir);
    tu_write_secret(tokfile, "reloaded-token");
    snprintf(line, sizeof line,
             "commit_wait_ms = 1500\\ndrain_limit_ms = 2500\\nlog_level = debug\\n"
             "log_format = json\\n"
             "api_token_file = %s",
             tokfile);
    config_replace(&d, "commit_wait_ms", line);
    config_replace(&d, "listen", "listen = 127.0.0.1:1");
    assert_int_equal(tu_sh("sed -i '0,/pool_size = 8/s//pool_size = 2/' %s", d.config), 0);
    assert_int_equal(
        tu_sh("sed -i 's|database = shop_warehouse|database = elsewhere|' %s", d.config), 0);
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    wait_log(&d, "reloaded: 7 changes applied, 2 needing a restart");

    /* the token is on now, the pool smaller, and the daemon still on its old address */
    assert_int_equal(tu_http(d.port, "GET", "/v1/in-doubt", NULL, NULL, &resp), 401);
    free(resp);
    assert_int_equal(pool_size(&d, "reloaded-token", "payment"), 2);
    assert_int_equal(pool_size(&d, "reloaded-token", "order"), 8);
    wait_log(&d, "[coordinator] listen: 127.0.0.1:");
    wait_log(&d, "needs a restart; still shop_warehouse");
    wait_log(&d, "[participant.payment] pool_size: 8 -> 2");
    wait_log(&d, "API token set: the API now needs it");

    /* a file that does not load changes nothing */
    assert_int_equal(tu_sh("echo 'max_inflight = many' >> %s", d.config), 0);
    assert_int_equal(kill(d.pid, SIGHUP), 0);
    wait_log(&d, "nothing reloaded");
    assert_int_equal(pool_size(&d, "reloaded-token", "payment"), 2);

    /* a transaction still commits through the smaller pool */
    {
        char *body = tu_checkout_json(NULL, 1001, 7, 100, "SKU-1", 1);
        tu_shop_reset();
        assert_int_equal(tu_http(d.port, "POST", "/v1/transactions", body, "reloaded-token", &resp),
                         200);
        free(resp);
        free(body);
    }
    check_json_lines(&d);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    assert_int_equal(tu_invariants(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sighup_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
