/*
 * docs/grafana-dashboard.json asks only for series the daemon exports: every metric name in its
 * queries has a "# TYPE" line in a running daemon's /metrics (a renamed metric breaks this test,
 * not the dashboard at 3 a.m.).
 */
#include "daemon.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The metric family of a series name: histograms are queried by _bucket, _sum and _count. */
static void family(char *name)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t s = strlen(suffixes[i]);
        if (n > s && strcmp(name + n - s, suffixes[i]) == 0) {
            name[n - s] = '\0';
            return;
        }
    }
}

/* Checks every xacoord_* name in expr; returns how many there were. */
static int check_expr(const char *expr, const char *metrics)
{
    int found = 0;
    for (const char *p = strstr(expr, "xacoord_"); p; p = strstr(p + 1, "xacoord_")) {
        char name[128], type_line[160];
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        family(name);
        snprintf(type_line, sizeof type_line, "# TYPE %s ", name);
        if (!strstr(metrics, type_line))
            fail_msg("the dashboard queries %s, which /metrics does not export (in: %s)", name,
                     expr);
        found++;
    }
    return found;
}

static void test_dashboard_metrics_exist(void **state)
{
    tu_daemon d;
    char path[512], *metrics = NULL;
    json_error_t jerr;
    json_t *dash, *panel;
    size_t i;
    int names = 0, panels = 0;

    snprintf(path, sizeof path, "%s/docs/grafana-dashboard.json", tu_source_dir());
    dash = json_load_file(path, 0, &jerr);
    if (!dash)
        fail_msg("%s:%d: %s", path, jerr.line, jerr.text);
    tu_daemon_init(&d, "dash", NULL);
    tu_daemon_start(&d, NULL);
    assert_int_equal(tu_http(d.port, "GET", "/metrics", NULL, NULL, &metrics), 200);
    json_array_foreach(json_object_get(dash, "panels"), i, panel)
    {
        size_t j;
        json_t *target;
        json_array_foreach(json_object_get(panel, "targets"), j, target)
        {
            names += check_expr(json_string_value(json_object_get(target, "expr")), metrics);
            panels++;
        }
    }
    assert_true(panels >= 10);
    assert_true(names >= panels);
    free(metrics);
    json_decref(dash);
    assert_int_equal(tu_daemon_stop(&d), 0);
    tu_daemon_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dashboard_metrics_exist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
