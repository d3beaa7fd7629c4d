/*
 * The operator page in a real browser: tests/browser/ui.mjs drives Debian's chromium (headless,
 * through playwright-core) against a daemon with the API token on. This program sets the scene -
 * the shop, the daemon, an in-doubt branch - runs the script and checks the database after the
 * click. The screenshots land in the build directory (tests/browser-ui-*.png).
 *
 * The planted branch is one the coordinator cannot finish on its own until the test lets it: a
 * MariaDB branch of a finished boot, prepared by a session this program keeps open, stays attached
 * to that session (every other session gets "not found" although XA RECOVER lists it), so the
 * start-up scan leaves it in doubt with the journal's decision "abort". Then the session closes
 * and the branch detaches; the scans are an hour apart, so only the click can roll it back.
 */
#include "daemon.h"
#include "testutil.h"

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char token[] = "ui-test-token";

/* Rewrites recovery_interval_ms in d's configuration (before the daemon starts). */
static void set_recovery_interval(tu_daemon *d, long ms)
{
    assert_int_equal(tu_sh("sed -i 's/^recovery_interval_ms = .*/recovery_interval_ms = %ld/' %s",
                           ms, d->config),
                     0);
}

/* An XA branch named gtrid,'order' prepared by a session that stays open until pclose. */
static FILE *plant_attached_branch(const char *gtrid)
{
    char cmd[256];
    FILE *session;
    snprintf(cmd, sizeof cmd,
             "mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P%s -uroot shop_order >/dev/null",
             tu_env("XA_ORDER_PORT"));
    /* "e": the daemon forked later must not inherit the pipe and keep the session open */
    session = popen(cmd, "we");
    assert_non_null(session);
    fprintf(session,
            "XA START '%s','order';\n"
            "INSERT INTO xacoord_marker (gtrid, bqual) VALUES ('%s', 'order');\n"
            "XA END '%s','order';\nXA PREPARE '%s','order';\n",
            gtrid, gtrid, gtrid, gtrid);
    assert_int_equal(fflush(session), 0);
    for (int waited = 0; waited < 100 && tu_prepared("order", gtrid) != 1; waited++)
        usleep(100000);
    assert_int_equal(tu_prepared("order", gtrid), 1);
    return session;
}

static bool listed_in_doubt(const tu_daemon *d, const char *gtrid)
{
    char *resp = NULL;
    bool found = tu_http(d->port, "GET", "/v1/in-doubt", NULL, token, &resp) == 200 && resp &&
                 strstr(resp, gtrid) && strstr(resp, "\"decision\":\"abort\"");
    free(resp);
    return found;
}

static void test_operator_page(void **state)
{
    tu_daemon d;
    char tokdir[] = "/tmp/xacoord-ui-XXXXXX", tokfile[64], extra[128], id[16], gtrid[64];
    char cmd[1024];
    FILE *session;
    int waited;

    tu_shop_reset();
    assert_non_null(mkdtemp(tokdir));
    snprintf(tokfile, sizeof tokfile, "%s/token", tokdir);
    tu_write_secret(tokfile, token);
    snprintf(extra, sizeof extra, "api_token_file = %s", tokfile);
    tu_daemon_init(&d, "ui", extra);
    set_recovery_interval(&d, 3600000);
    tu_daemon_start(&d, NULL); /* boot 1 makes the data directory's identity */
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_identity(&d, id);
    snprintf(gtrid, sizeof gtrid, "xa2.ui.%s.1.2r", id); /* boot 1 is over: a dead branch */

    session = plant_attached_branch(gtrid);
    tu_daemon_start(&d, NULL);
    for (waited = 0; waited < 100 && !listed_in_doubt(&d, gtrid); waited++)
        usleep(100000);
    assert_true(listed_in_doubt(&d, gtrid));
    assert_int_equal(pclose(session), 0); /* the branch detaches: now the API can finish it */

    snprintf(cmd, sizeof cmd,
             "XA_UI_URL=http://127.0.0.1:%d/ui XA_UI_TOKEN=%s XA_UI_XID=%s "
             "XA_UI_SHOTS=tests/browser-ui node %s/tests/browser/ui.mjs",
             d.port, token, gtrid, tu_source_dir());
    /* ctest runs from the source root; the screenshots go to the build directory */
    assert_int_equal(tu_sh("cd %s && %s", XA_BUILD_DIR, cmd), 0);

    /* rolled back, not committed: the branch's marker row is gone with it */
    assert_int_equal(tu_prepared("order", gtrid), 0);
    snprintf(cmd, sizeof cmd, "SELECT COUNT(*) FROM xacoord_marker WHERE gtrid = '%s'", gtrid);
    assert_int_equal(tu_shop_long("order", cmd), 0);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
    tu_sh("rm -rf %s", tokdir);
    assert_int_equal(tu_invariants(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operator_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
