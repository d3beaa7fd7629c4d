/*
 * Metrics in Prometheus text format: counters, gauges and fixed-bucket histograms, registered by
 * name at start-up and updated on the loop thread (no locks). Gauges whose value lives elsewhere
 * (pool state, in-doubt counts) are read through callbacks when /metrics is rendered.
 */
#ifndef XA_METRICS_H
#define XA_METRICS_H

#include "compiler.h"

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics;
typedef struct metric_counter metric_counter;
typedef struct metric_gauge metric_gauge;
typedef struct metric_histogram metric_histogram;

XA_MUST_CHECK metrics *metrics_new(void);
void metrics_free(metrics *m);

/* name must be a valid Prometheus metric name; labels is "" or a label set without braces, e.g.
 * "outcome=\"committed\"". Registering the same name+labels twice returns the same metric.
 * The help text is printed once per name (the first registration's). Returns NULL for an invalid
 * name, a name already registered as another type, histogram bounds that are not strictly
 * ascending or differ from those of the same name+labels, or out of memory; the update functions
 * ignore NULL, so a failed registration never crashes the caller. */
XA_MUST_CHECK metric_counter *metrics_counter(metrics *m, const char *name, const char *labels,
                                              const char *help);
XA_MUST_CHECK metric_gauge *metrics_gauge(metrics *m, const char *name, const char *labels,
                                          const char *help);
/* bounds: ascending upper bounds (seconds for latencies); +Inf is added. */
XA_MUST_CHECK metric_histogram *metrics_histogram(metrics *m, const char *name, const char *labels,
                                                  const char *help, const double *bounds,
                                                  size_t nbounds);

void metric_counter_add(metric_counter *c, uint64_t n);
void metric_gauge_set(metric_gauge *g, double v);
void metric_gauge_add(metric_gauge *g, double v);
void metric_histogram_observe(metric_histogram *h, double v);
/* The current value (for tests and for xactl-style summaries). */
uint64_t metric_counter_value(const metric_counter *c);
double metric_gauge_value(const metric_gauge *g);

/* A gauge computed at render time: fn is called with arg and returns the value. */
XA_MUST_CHECK metric_gauge *metrics_gauge_fn(metrics *m, const char *name, const char *labels,
                                             const char *help, double (*fn)(void *arg), void *arg);

/* Renders every metric; returns a malloc'ed NUL-terminated buffer and its length in *len. */
XA_MUST_CHECK char *metrics_render(metrics *m, size_t *len);

/* Latency buckets in seconds, 0.0005 .. 10. */
extern const double metrics_latency_bounds[];
extern const size_t metrics_latency_nbounds;

#endif
