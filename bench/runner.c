/*
 * The closed-loop runner (see bench.h): every client runs one transaction after another until
 * the deadline or its last order, and the run records each finished transaction's latency.
 * Connections are made before the clock starts, so connect time never counts; transactions in
 * flight at the deadline finish and count, and the elapsed time runs until the last of them.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

int bench_read_secret(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    bool ok;
    if (!f)
        return -EIO;
    ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    if (!ok)
        return -EIO;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static void record(bench_run *run, uint64_t us)
{
    if (run->nlat == run->caplat) {
        size_t cap = run->caplat ? run->caplat * 2 : 65536;
        uint64_t *p = realloc(run->lat, cap * sizeof *p);
        if (!p)
            return; /* a lost sample only; the counters stay exact */
        run->lat = p;
        run->caplat = cap;
    }
    run->lat[run->nlat++] = us;
}

static void go_idle(bench_client *cl)
{
    bench_run *run = cl->run;
    cl->busy = false;
    if (++run->nidle == run->conc) {
        run->t_end = uv_hrtime();
        uv_stop(run->loop);
    }
}

static void next(bench_client *cl)
{
    if (cl->dead || uv_hrtime() >= cl->run->deadline || cl->order >= cl->order_end) {
        go_idle(cl);
        return;
    }
    cl->busy = true;
    cl->t0 = uv_hrtime();
    cl->run->kind->start(cl);
}

void bench_client_ready(bench_client *cl)
{
    bench_run *run = cl->run;
    cl->ready = true;
    if (++run->nready + run->nfailed == run->conc)
        uv_stop(run->loop);
}

void bench_client_failed(bench_client *cl, const char *why)
{
    bench_run *run = cl->run;
    if (cl->dead)
        return;
    if (!run->first_error[0])
        snprintf(run->first_error, sizeof run->first_error, "client %d: %s", cl->index, why);
    cl->dead = true;
    if (run->deadline == 0) {
        if (++run->nfailed + run->nready == run->conc)
            uv_stop(run->loop);
    }
}

void bench_client_done(bench_client *cl, bench_outcome outcome, const char *why)
{
    bench_run *run = cl->run;
    record(run, (uv_hrtime() - cl->t0) / 1000);
    cl->order++;
    if (outcome == BENCH_COMMITTED) {
        run->committed++;
    } else if (outcome == BENCH_ABORTED) {
        run->aborted++;
    } else {
        run->errors++;
        if (!run->first_error[0] && why)
            snprintf(run->first_error, sizeof run->first_error, "client %d: %s", cl->index, why);
    }
    next(cl);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const bench_run *run, double p)
{
    size_t i;
    if (run->nlat == 0)
        return 0;
    i = (size_t)(p * (double)(run->nlat - 1) + 0.5);
    return (double)run->lat[i] / 1000.0;
}

/* Lets every close callback run so that the next run starts on a quiet loop. */
static void settle(uv_loop_t *loop)
{
    for (int i = 0; i < 50; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

int bench_run_execute(bench_run *run, const bench_kind *kind, int conc, double seconds,
                      int64_t per_client, bench_result *out)
{
    uv_loop_t *loop = run->loop;
    int rc = 0;
    run->kind = kind;
    run->conc = conc;
    run->nready = run->nfailed = run->nidle = 0;
    run->deadline = 0;
    run->committed = run->aborted = run->errors = 0;
    run->nlat = 0;
    run->first_error[0] = '\0';
    run->clients = calloc((size_t)conc, sizeof *run->clients);
    if (!run->clients)
        return -1;
    for (int k = 0; k < conc; k++) {
        bench_client *cl = &run->clients[k];
        cl->run = run;
        cl->index = k;
        cl->user = k + 1;
        cl->order = 1 + (int64_t)k * per_client;
        cl->order_end = cl->order + per_client;
        kind->open(cl);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    if (run->nfailed > 0) {
        rc = -1;
    } else {
        run->t_start = uv_hrtime();
        run->deadline = run->t_start + (uint64_t)(seconds * 1e9);
        for (int k = 0; k < conc; k++)
            next(&run->clients[k]);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    for (int k = 0; k < conc; k++)
        kind->close(&run->clients[k]);
    settle(loop);
    free(run->clients);
    run->clients = NULL;
    if (rc != 0)
        return rc;

    qsort(run->lat, run->nlat, sizeof *run->lat, cmp_u64);
    memset(out, 0, sizeof *out);
    out->conc = conc;
    out->seconds = (double)(run->t_end - run->t_start) / 1e9;
    out->committed = run->committed;
    out->aborted = run->aborted;
    out->errors = run->errors;
    out->tps = out->seconds > 0 ? (double)run->committed / out->seconds : 0;
    out->p50_ms = pct_ms(run, 0.50);
    out->p99_ms = pct_ms(run, 0.99);
    out->p999_ms = pct_ms(run, 0.999);
    return 0;
}

void bench_run_free(bench_run *run)
{
    free(run->lat);
    run->lat = NULL;
    run->nlat = run->caplat = 0;
}
