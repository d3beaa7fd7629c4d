/*
 * The metrics registry behind GET /metrics (see metrics.h). Metrics are grouped into families by
 * name, in registration order, and each family keeps its label sets in registration order, so the
 * Prometheus text exposition (format 0.0.4) prints one HELP and one TYPE line per name followed by
 * all of its samples. Histograms keep per-bucket counts and make them cumulative only when
 * rendered. Single-threaded by design: every call happens on the loop thread, so there are no locks
 * and no atomics; a thread that wants to report something posts it to the loop first.
 */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

/* What every metric starts with: its place in its family's list and its label set. */
typedef struct series {
    struct series *next;
    char *labels;
} series;

struct metric_counter {
    series s;
    uint64_t value;
};

struct metric_gauge {
    series s;
    double value;
    double (*fn)(void *arg);
    void *arg;
};

struct metric_histogram {
    series s;
    double *bounds;
    size_t nbounds;
    uint64_t *counts; /* nbounds + 1, the last one is +Inf; not cumulative */
    uint64_t count;
    double sum;
};

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metric_kind kind;
    series *members; /* all of the family's kind, in registration order */
} family;

struct metrics {
    family *first, *last;
};

const double metrics_latency_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                         0.1,    0.2,   0.5,   1,     2,    5,    10};
const size_t metrics_latency_nbounds = sizeof metrics_latency_bounds / sizeof(double);

/* ---------------------------------------------------------------- registry */

metrics *metrics_new(void)
{
    return calloc(1, sizeof(metrics));
}

static void family_free(family *f)
{
    while (f->members) {
        series *n = f->members->next;
        if (f->kind == KIND_HISTOGRAM) {
            free(((metric_histogram *)f->members)->bounds);
            free(((metric_histogram *)f->members)->counts);
        }
        free(f->members->labels);
        free(f->members);
        f->members = n;
    }
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    while (m->first) {
        family *n = m->first->next;
        family_free(m->first);
        m->first = n;
    }
    free(m);
}

static bool valid_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

/* Finds the family of name, or creates it; NULL when the name is taken by another kind. */
static family *family_get(metrics *m, const char *name, const char *help, metric_kind kind)
{
    family *f;
    if (!m || !valid_name(name))
        return NULL;
    for (f = m->first; f; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f->kind == kind ? f : NULL;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->kind = kind;
    if (!f->name || !f->help) {
        family_free(f);
        return NULL;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    return f;
}

/* The member of f with these labels; a new one (size bytes, zeroed) goes to the tail, and
 * *made says so. NULL when out of memory. */
static series *series_get(family *f, const char *labels, size_t size, bool *made)
{
    series **tail, *s;
    labels = labels ? labels : "";
    *made = false;
    for (tail = &f->members; *tail; tail = &(*tail)->next) {
        if (strcmp((*tail)->labels, labels) == 0)
            return *tail;
    }
    s = calloc(1, size);
    if (!s || !(s->labels = strdup(labels))) {
        free(s);
        return NULL;
    }
    *tail = s;
    *made = true;
    return s;
}

metric_counter *metrics_counter(metrics *m, const char *name, const char *labels, const char *help)
{
    family *f = family_get(m, name, help, KIND_COUNTER);
    bool made;
    return f ? (metric_counter *)series_get(f, labels, sizeof(metric_counter), &made) : NULL;
}

static metric_gauge *gauge_get(metrics *m, const char *name, const char *labels, const char *help)
{
    family *f = family_get(m, name, help, KIND_GAUGE);
    bool made;
    return f ? (metric_gauge *)series_get(f, labels, sizeof(metric_gauge), &made) : NULL;
}

metric_gauge *metrics_gauge(metrics *m, const char *name, const char *labels, const char *help)
{
    return gauge_get(m, name, labels, help);
}

metric_gauge *metrics_gauge_fn(metrics *m, const char *name, const char *labels, const char *help,
                               double (*fn)(void *arg), void *arg)
{
    metric_gauge *g = gauge_get(m, name, labels, help);
    if (g) {
        g->fn = fn;
        g->arg = arg;
    }
    return g;
}

static bool bounds_ok(const double *bounds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            return false;
    }
    return true;
}

static bool same_bounds(const metric_histogram *h, const double *bounds, size_t n)
{
    return h->counts && h->nbounds == n &&
           (n == 0 || memcmp(h->bounds, bounds, n * sizeof(double)) == 0);
}

metric_histogram *metrics_histogram(metrics *m, const char *name, const char *labels,
                                    const char *help, const double *bounds, size_t nbounds)
{
    family *f;
    metric_histogram *h;
    bool made;
    if (!bounds_ok(bounds, nbounds) || !(f = family_get(m, name, help, KIND_HISTOGRAM)) ||
        !(h = (metric_histogram *)series_get(f, labels, sizeof *h, &made)))
        return NULL;
    if (!made)
        return same_bounds(h, bounds, nbounds) ? h : NULL;
    /* Made but out of memory: h stays in the list without counts, which same_bounds refuses
     * and the render skips. */
    h->bounds = malloc((nbounds ? nbounds : 1) * sizeof(double));
    h->counts = calloc(nbounds + 1, sizeof(uint64_t));
    if (!h->bounds || !h->counts)
        return NULL;
    if (nbounds)
        memcpy(h->bounds, bounds, nbounds * sizeof(double));
    h->nbounds = nbounds;
    return h;
}

/* ---------------------------------------------------------------- updates */

void metric_counter_add(metric_counter *c, uint64_t n)
{
    if (c)
        c->value += n;
}

void metric_gauge_set(metric_gauge *g, double v)
{
    if (g)
        g->value = v;
}

void metric_gauge_add(metric_gauge *g, double v)
{
    if (g)
        g->value += v;
}

void metric_histogram_observe(metric_histogram *h, double v)
{
    size_t i = 0;
    /* A NaN would poison the sum forever. */
    if (!h || isnan(v))
        return;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

uint64_t metric_counter_value(const metric_counter *c)
{
    return c ? c->value : 0;
}

double metric_gauge_value(const metric_gauge *g)
{
    if (!g)
        return 0;
    return g->fn ? g->fn(g->arg) : g->value;
}

/* ---------------------------------------------------------------- rendering */

typedef struct outbuf {
    char *p;
    size_t len, cap;
    bool failed;
} outbuf;

static void out_printf(outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(outbuf *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (o->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->failed = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

/* The shortest text that reads back as the same double, in the spelling Prometheus expects. */
static void format_double(char *buf, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    } else {
        /* Start with every integer digit so that 10 prints as "10", not "1e+01". */
        double a = v < 0 ? -v : v;
        int prec = 1;
        for (; a >= 10 && prec < 17; a /= 10)
            prec++;
        for (; prec <= 17; prec++) {
            snprintf(buf, size, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                return;
        }
    }
}

/* HELP text escapes backslash and newline, as the exposition format requires. */
static void out_help(outbuf *o, const family *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    out_printf(o, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            out_printf(o, "\\\\");
        else if (*p == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *p);
    }
    out_printf(o, "\n# TYPE %s %s\n", f->name, types[f->kind]);
}

static void out_sample(outbuf *o, const char *name, const char *suffix, const char *labels,
                       const char *value)
{
    if (*labels)
        out_printf(o, "%s%s{%s} %s\n", name, suffix, labels, value);
    else
        out_printf(o, "%s%s %s\n", name, suffix, value);
}

static void out_histogram(outbuf *o, const char *name, const metric_histogram *h)
{
    char num[64], le[64];
    const char *sep = *h->s.labels ? "," : "";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += h->counts[i];
        if (i < h->nbounds)
            format_double(le, sizeof le, h->bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        out_printf(o, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, h->s.labels, sep, le,
                   cumulative);
    }
    format_double(num, sizeof num, h->sum);
    out_sample(o, name, "_sum", h->s.labels, num);
    snprintf(num, sizeof num, "%" PRIu64, h->count);
    out_sample(o, name, "_count", h->s.labels, num);
}

static void out_family(outbuf *o, const family *f)
{
    char num[64];
    out_help(o, f);
    for (const series *s = f->members; s; s = s->next) {
        if (f->kind == KIND_HISTOGRAM) {
            if (((const metric_histogram *)s)->counts)
                out_histogram(o, f->name, (const metric_histogram *)s);
            continue;
        }
        if (f->kind == KIND_COUNTER)
            snprintf(num, sizeof num, "%" PRIu64, ((const metric_counter *)s)->value);
        else
            format_double(num, sizeof num, metric_gauge_value((const metric_gauge *)s));
        out_sample(o, f->name, "", s->labels, num);
    }
}

char *metrics_render(metrics *m, size_t *len)
{
    outbuf o = {0};
    o.cap = 4096;
    o.p = malloc(o.cap);
    if (!o.p)
        return NULL;
    o.p[0] = '\0';
    for (const family *f = m ? m->first : NULL; f; f = f->next)
        out_family(&o, f);
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    if (len)
        *len = o.len;
    return o.p;
}
