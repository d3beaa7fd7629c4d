/*
 * The metrics registry (coordinator/metrics.c): values of counters, gauges and histograms, and the
 * exact Prometheus text rendered for a small registry.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static void test_counter_and_gauge_values(void **state)
{
    metrics *m = metrics_new();
    metric_counter *c = metrics_counter(m, "xa_tx_total", "outcome=\"committed\"", "Transactions.");
    metric_gauge *g = metrics_gauge(m, "xa_inflight", "", "In flight.");

    assert_non_null(c);
    assert_non_null(g);
    metric_counter_add(c, 1);
    metric_counter_add(c, 41);
    assert_int_equal(metric_counter_value(c), 42);
    /* Same name and labels: the same metric. */
    assert_ptr_equal(metrics_counter(m, "xa_tx_total", "outcome=\"committed\"", "x"), c);
    assert_ptr_not_equal(metrics_counter(m, "xa_tx_total", "outcome=\"aborted\"", "x"), c);

    metric_gauge_set(g, 5);
    metric_gauge_add(g, -1.5);
    assert_true(metric_gauge_value(g) == 3.5);
    metrics_free(m);
}

static void test_rejects_bad_registrations(void **state)
{
    metrics *m = metrics_new();
    const double descending[] = {1, 0.5};
    const double ok[] = {1, 2};

    assert_null(metrics_counter(m, "9starts_with_digit", "", "h"));
    assert_null(metrics_counter(m, "has-dash", "", "h"));
    assert_null(metrics_counter(m, "", "", "h"));
    assert_non_null(metrics_counter(m, "xa_name", "", "h"));
    /* A name belongs to one type. */
    assert_null(metrics_gauge(m, "xa_name", "a=\"1\"", "h"));
    assert_null(metrics_histogram(m, "xa_h", "", "h", descending, 2));
    assert_non_null(metrics_histogram(m, "xa_h", "", "h", ok, 2));
    assert_null(metrics_histogram(m, "xa_h", "", "h", ok, 1));
    /* Updates through a failed registration are ignored, not crashes. */
    metric_counter_add(NULL, 1);
    metric_gauge_set(NULL, 1);
    metric_histogram_observe(NULL, 1);
    metrics_free(m);
}

static void test_histogram_buckets(void **state)
{
    metrics *m = metrics_new();
    const double bounds[] = {0.25, 1, 4};
    metric_histogram *h = metrics_histogram(m, "xa_lat_seconds", "", "Latency.", bounds, 3);
    char *text;
    size_t len = 0;

    assert_non_null(h);
    metric_histogram_observe(h, 0.25); /* the bound itself counts as "le" */
    metric_histogram_observe(h, 0.5);
    metric_histogram_observe(h, 0.5);
    metric_histogram_observe(h, 100);
    metric_histogram_observe(h, NAN); /* ignored */
    text = metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_string_equal(text, "# HELP xa_lat_seconds Latency.\n"
                              "# TYPE xa_lat_seconds histogram\n"
                              "xa_lat_seconds_bucket{le=\"0.25\"} 1\n"
                              "xa_lat_seconds_bucket{le=\"1\"} 3\n"
                              "xa_lat_seconds_bucket{le=\"4\"} 3\n"
                              "xa_lat_seconds_bucket{le=\"+Inf\"} 4\n"
                              "xa_lat_seconds_sum 101.25\n"
                              "xa_lat_seconds_count 4\n");
    free(text);
    metrics_free(m);
}

static double read_double(void *arg)
{
    return *(double *)arg;
}

static void test_render_small_registry(void **state)
{
    metrics *m = metrics_new();
    const double bounds[] = {0.5, 2};
    double depth = 7;
    metric_counter *committed =
        metrics_counter(m, "xa_transactions_total", "outcome=\"committed\"", "Transactions.");
    metric_gauge *inflight = metrics_gauge(m, "xa_inflight", "", "In-flight transactions.");
    metric_histogram *fsync = metrics_histogram(m, "xa_fsync_seconds", "journal=\"main\"",
                                                "Journal fsync latency.", bounds, 2);
    metric_counter *aborted =
        metrics_counter(m, "xa_transactions_total", "outcome=\"aborted\"", "ignored help");
    char *text;
    size_t len;

    assert_non_null(metrics_gauge_fn(m, "xa_pool_waiting", "participant=\"payment\"",
                                     "Waiters,\nper pool \\ x.", read_double, &depth));
    metric_counter_add(committed, 3);
    metric_counter_add(aborted, 1);
    metric_gauge_set(inflight, 2);
    metric_histogram_observe(fsync, 0.125);
    metric_histogram_observe(fsync, 1.5);
    depth = 9; /* read at render time, not at registration */

    text = metrics_render(m, &len);
    assert_non_null(text);
    assert_string_equal(text, "# HELP xa_transactions_total Transactions.\n"
                              "# TYPE xa_transactions_total counter\n"
                              "xa_transactions_total{outcome=\"committed\"} 3\n"
                              "xa_transactions_total{outcome=\"aborted\"} 1\n"
                              "# HELP xa_inflight In-flight transactions.\n"
                              "# TYPE xa_inflight gauge\n"
                              "xa_inflight 2\n"
                              "# HELP xa_fsync_seconds Journal fsync latency.\n"
                              "# TYPE xa_fsync_seconds histogram\n"
                              "xa_fsync_seconds_bucket{journal=\"main\",le=\"0.5\"} 1\n"
                              "xa_fsync_seconds_bucket{journal=\"main\",le=\"2\"} 2\n"
                              "xa_fsync_seconds_bucket{journal=\"main\",le=\"+Inf\"} 2\n"
                              "xa_fsync_seconds_sum{journal=\"main\"} 1.625\n"
                              "xa_fsync_seconds_count{journal=\"main\"} 2\n"
                              "# HELP xa_pool_waiting Waiters,\\nper pool \\\\ x.\n"
                              "# TYPE xa_pool_waiting gauge\n"
                              "xa_pool_waiting{participant=\"payment\"} 9\n");
    free(text);
    metrics_free(m);
}

static void test_latency_bounds(void **state)
{
    metrics *m = metrics_new();
    metric_histogram *h = metrics_histogram(m, "xa_tx_seconds", "", "Latency.",
                                            metrics_latency_bounds, metrics_latency_nbounds);
    char *text;

    assert_int_equal(metrics_latency_nbounds, 14);
    assert_true(metrics_latency_bounds[0] == 0.0005);
    assert_true(metrics_latency_bounds[13] == 10);
    assert_non_null(h);
    metric_histogram_observe(h, 0.003);
    text = metrics_render(m, NULL);
    assert_non_null(strstr(text, "xa_tx_seconds_bucket{le=\"0.0005\"} 0\n"));
    assert_non_null(strstr(text, "xa_tx_seconds_bucket{le=\"0.002\"} 0\n"));
    assert_non_null(strstr(text, "xa_tx_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(text, "xa_tx_seconds_bucket{le=\"10\"} 1\n"));
    assert_non_null(strstr(text, "xa_tx_seconds_sum 0.003\n"));
    free(text);
    metrics_free(m);
}

static void test_empty_registry(void **state)
{
    metrics *m = metrics_new();
    size_t len = 99;
    char *text = metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_values),
        cmocka_unit_test(test_rejects_bad_registrations),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_render_small_registry),
        cmocka_unit_test(test_latency_bounds),
        cmocka_unit_test(test_empty_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
