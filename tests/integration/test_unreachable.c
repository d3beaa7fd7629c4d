/*
 * Why a participant is down (docs/operations.md section 4): a connection that fails names its
 * cause - TLS verification failed, authentication failed, unknown database, connection refused -
 * in /readyz, `xactl health` and /v1/status, and in the log once per change, not once per retry.
 */
#include "daemon.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Replaces the configuration line that contains `match` by `line` (before the daemon starts). */
static void config_replace(tu_daemon *d, const char *match, const char *line)
{
    assert_int_equal(tu_sh("sed -i 's|^.*%s.*$|%s|' %s", match, line, d->config), 0);
}

/* Waits until /readyz answers (503) with `want` in the state of participant `name`. */
static char *wait_state(tu_daemon *d, const char *name, const char *want)
{
    char *resp = NULL, key[64];
    snprintf(key, sizeof key, "\"%s\":\"", name);
    for (int i = 0; i < 150; i++) {
        int status = tu_http(d->port, "GET", "/readyz", NULL, NULL, &resp);
        const char *at = resp ? strstr(resp, key) : NULL;
        if (status == 503 && at && strncmp(at + strlen(key), want, strlen(want)) == 0)
            return resp;
        free(resp);
        resp = NULL;
        usleep(100000);
    }
    char last[1024] = "(no answer)";
    tu_http(d->port, "GET", "/readyz", NULL, NULL, &resp);
    if (resp)
        snprintf(last, sizeof last, "%s", resp);
    free(resp);
    fail_msg("participant %s never showed \"%s\": %s", name, want, last);
    return NULL;
}

static int count_in_log(const tu_daemon *d, const char *text)
{
    char cmd[512], buf[32] = "";
    FILE *p;
    snprintf(cmd, sizeof cmd, "grep -cF -- '%s' %s", text, d->log);
    p = popen(cmd, "r");
    assert_non_null(p);
    if (!fgets(buf, sizeof buf, p))
        buf[0] = '\0';
    pclose(p);
    return atoi(buf);
}

static void test_causes_in_readyz_health_and_log(void **state)
{
    tu_daemon d;
    char line[512], pwfile[300], *resp, *out = NULL;

    tu_daemon_init(&d, "unreach", NULL);
    /* payment: a database that does not exist; order: a wrong password; warehouse: no server */
    snprintf(line, sizeof line,
             "conninfo = host=127.0.0.1 hostaddr=127.0.0.1 port=%s dbname=no_such_db "
             "user=xacoord sslmode=disable gssencmode=disable",
             tu_env("XA_PG_PORT"));
    config_replace(&d, "dbname=payment", line);
    snprintf(pwfile, sizeof pwfile, "%s/wrong.pw", d.dir);
    tu_write_secret(pwfile, "not-the-password");
    snprintf(line, sizeof line, "password_file = %s", pwfile);
    config_replace(&d, "secrets/order.pw", line);
    snprintf(line, sizeof line, "port = 1");
    config_replace(&d, tu_env("XA_WAREHOUSE_PORT"), line);
    tu_daemon_spawn(&d, NULL);

    free(wait_state(&d, "payment", "unreachable: unknown database: "));
    free(wait_state(&d, "order", "unreachable: authentication failed: "));
    resp = wait_state(&d, "warehouse", "unreachable: connection refused: ");
    free(resp);
    /* the same causes in xactl health and in the page's /v1/status */
    assert_int_not_equal(tu_xactl(&d, "health", &out), 0);
    assert_non_null(strstr(out, "unknown database"));
    assert_non_null(strstr(out, "authentication failed"));
    assert_non_null(strstr(out, "connection refused"));
    free(out);
    assert_int_equal(tu_http(d.port, "GET", "/v1/status", NULL, NULL, &out), 200);
    assert_non_null(strstr(out, "\"state\":\"unreachable: authentication failed: "));
    free(out);
    /* The lock connection retries every 2 s: 5 s more are two retries or more, each failing the
     * same way, and still each cause is logged once. */
    sleep(5);
    assert_int_equal(count_in_log(&d, "[participant payment] cannot connect: unknown database"), 1);
    assert_int_equal(count_in_log(&d, "[participant order] cannot connect: authentication failed"),
                     1);
    assert_int_equal(count_in_log(&d, "[participant warehouse] cannot connect: connection refused"),
                     1);
    tu_daemon_kill(&d);
    tu_daemon_cleanup(&d);
}

/* ssl_ca on a server without TLS: the handshake cannot be verified. */
static void test_tls_cause(void **state)
{
    tu_daemon d;
    char line[512], ca[300];
    tu_daemon_init(&d, "unreachtls", NULL);
    snprintf(ca, sizeof ca, "%s/ca.pem", d.dir);
    assert_int_equal(tu_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/ca.key -out %s "
                           "-days 1 -subj /CN=xacoord-test-ca >/dev/null 2>&1",
                           d.dir, ca),
                     0);
    snprintf(line, sizeof line, "database = shop_warehouse\\nssl_ca = %s", ca);
    config_replace(&d, "database = shop_warehouse", line);
    tu_daemon_spawn(&d, NULL);
    free(wait_state(&d, "warehouse", "unreachable: TLS verification failed: "));
    tu_daemon_kill(&d);
    tu_daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causes_in_readyz_health_and_log),
        cmocka_unit_test(test_tls_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
