/*
 * xabench: the benchmark's command line. scripts/bench starts the servers and the daemon and
 * calls one subcommand per measurement:
 *   shop       checkout throughput and latency of xacoord, B0 and B1 at each concurrency
 *   single     the checkout's payment branch alone: xacoord (one-phase commit) against B0
 *   coordonly  decisions per second, daemon CPU per transaction and group-commit size, on
 *              memory participants
 *   memory     the daemon's resident memory with N transactions in flight
 *   idle       the daemon's resident memory per idle keep-alive HTTP connection
 *   recovery   plants N in-doubt branches per participant, starts the daemon, and times it
 *              until /readyz answers 200 and no branch of its prefix is left
 * Results go to stdout as CSV lines (one header line per subcommand), for scripts/bench.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct opts {
    int port;
    int store_port; /* shop: a second daemon, decision store with a last resource */
    int pg_port, order_port, wh_port;
    const char *secrets;
    const char *setup;
    const char *conc;
    double seconds;
    int64_t orders;
    int pid;
    int n;
    int sleep_ms;
    const char *node;
    const char *identity;
    const char *xacoord;
    const char *config;
    const char *log;
} opts;

/* ---- small helpers ----------------------------------------------------------------------- */

/* The value of one unlabelled sample in Prometheus text, or -1. */
static double metric(int port, const char *name)
{
    char *body = NULL, *p;
    double v = -1;
    size_t n = strlen(name);
    if (bench_http_get(port, "/metrics", &body) != 200 || !body) {
        free(body);
        return -1;
    }
    for (p = body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    }
    free(body);
    return v;
}

/* User+system CPU seconds of a process. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
    fclose(f);
    /* After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime (fields 3..15). */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A "VmHWM:" style line of /proc/<pid>/status, in KiB. */
static long proc_kib(int pid, const char *key)
{
    char path[64], line[256];
    long v = -1;
    size_t n = strlen(key);
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static int fail(const char *msg)
{
    fprintf(stderr, "xabench: %s\n", msg);
    return 1;
}

/* ---- database targets -------------------------------------------------------------------- */

static bool load_targets(const opts *o, bench_targets *t)
{
    static const char *const names[3] = {"payment", "order", "warehouse"};
    char path[512];
    if (!o->secrets || !o->pg_port || !o->order_port || !o->wh_port)
        return false;
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.pw", o->secrets, names[i]);
        if (bench_read_secret(path, t->pw[i], sizeof t->pw[i]) != 0) {
            fprintf(stderr, "xabench: cannot read %s\n", path);
            return false;
        }
    }
    snprintf(t->pg_conninfo, sizeof t->pg_conninfo,
             "host=127.0.0.1 hostaddr=127.0.0.1 port=%d dbname=payment user=xacoord "
             "sslmode=disable gssencmode=disable",
             o->pg_port);
    t->payment = (px_target){.name = "payment",
                             .driver = "postgres",
                             .conninfo = t->pg_conninfo,
                             .password = t->pw[0],
                             .connect_timeout_ms = 10000,
                             .without_markers = true};
    t->order = (px_target){.name = "order",
                           .driver = "mysql",
                           .host = "127.0.0.1",
                           .port = o->order_port,
                           .database = "shop_order",
                           .user = "xacoord",
                           .password = t->pw[1],
                           .connect_timeout_ms = 10000,
                           .without_markers = true};
    t->warehouse = (px_target){.name = "warehouse",
                               .driver = "mysql",
                               .host = "127.0.0.1",
                               .port = o->wh_port,
                               .database = "shop_warehouse",
                               .user = "xacoord",
                               .password = t->pw[2],
                               .connect_timeout_ms = 10000,
                               .without_markers = true};
    return true;
}

static int run_setup(const opts *o, int users, int64_t per_user)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %d %lld", o->setup, users, (long long)per_user);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- shop -------------------------------------------------------------------------------- */

static void print_result(const char *what, const bench_result *r, double group)
{
    printf("%s,%d,%.3f,%llu,%llu,%llu,%.1f,%.3f,%.3f,%.3f,%.2f\n", what, r->conc, r->seconds,
           (unsigned long long)r->committed, (unsigned long long)r->aborted,
           (unsigned long long)r->errors, r->tps, r->p50_ms, r->p99_ms, r->p999_ms, group);
    fflush(stdout);
}

/* One measured run of one mode; the daemon (http kind) first gets an unmeasured second at this
 * concurrency: a running daemon's pools are warm, a fresh one opens connections during its first
 * transactions, and the baselines connect before the clock. */
static int measure(const opts *o, bench_run *run, const bench_kind *kind, int conc, int64_t per,
                   bool warm_up, bench_result *r, double *group)
{
    double s0 = 0, c0 = 0;
    *group = 0;
    if (warm_up &&
        (run_setup(o, conc, per) != 0 || bench_run_execute(run, kind, conc, 1.0, per, r) != 0))
        return fail("warm-up failed");
    if (run_setup(o, conc, per) != 0)
        return fail("setup command failed");
    if (kind == &bench_http_kind) {
        s0 = metric(o->port, "xacoord_journal_group_size_sum");
        c0 = metric(o->port, "xacoord_journal_group_size_count");
    }
    if (bench_run_execute(run, kind, conc, o->seconds, per, r) != 0) {
        fprintf(stderr, "xabench: %s at %d: %s\n", kind->name, conc, run->first_error);
        return 1;
    }
    if (kind == &bench_http_kind) {
        double n = metric(o->port, "xacoord_journal_group_size_count") - c0;
        *group = n > 0 ? (metric(o->port, "xacoord_journal_group_size_sum") - s0) / n : 0;
    }
    if (run->first_error[0])
        fprintf(stderr, "xabench: %s at %d: first error: %s\n", kind->name, conc, run->first_error);
    return 0;
}

/* Throughput on two shared cores moves by tens of percent from one run to the next, so every
 * point runs SHOP_ROUNDS times with the three modes interleaved, and the round with the median
 * throughput of each mode is reported. */
#define SHOP_ROUNDS 3

/* single: the checkout's payment branch alone, through the daemon (one-phase commit) and as one
 * local transaction (B0); B1 does not apply. */
static int cmd_shop(const opts *o, bool single)
{
    const bench_kind *kinds[4] = {&bench_http_kind, &bench_b0_kind, &bench_b1_kind,
                                  &bench_http_store_kind};
    const int nkinds = single ? 2 : o->store_port ? 4 : 3;
    bench_targets t;
    uv_loop_t loop;
    bench_run run = {0};
    char conc_list[256], *save = NULL;
    int rc = 0;
    if (!load_targets(o, &t) || !o->setup || !o->port)
        return fail("shop needs --port, --pg-port, --order-port, --warehouse-port, --secrets, "
                    "--setup");
    uv_loop_init(&loop);
    run.loop = &loop;
    run.http_port = o->port;
    run.store_port = o->store_port;
    run.body = BENCH_BODY_SHOP;
    run.single = single;
    run.targets = &t;
    printf("mode,conc,seconds,committed,aborted,errors,tps,p50_ms,p99_ms,p999_ms,group\n");
    snprintf(conc_list, sizeof conc_list, "%s", o->conc);
    for (char *tok = strtok_r(conc_list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int conc = atoi(tok);
        int64_t per = conc > 0 ? o->orders / conc : 0;
        bench_result res[4][SHOP_ROUNDS];
        double group[4][SHOP_ROUNDS];
        if (conc <= 0 || per <= 0)
            return fail("bad --conc");
        for (int round = 0; round < SHOP_ROUNDS; round++)
            for (int k = 0; k < nkinds; k++)
                if ((rc = measure(o, &run, kinds[k], conc, per,
                                  round == 0 && kinds[k]->open == bench_http_kind.open,
                                  &res[k][round], &group[k][round])) != 0)
                    goto out;
        for (int k = 0; k < nkinds; k++) {
            int order[SHOP_ROUNDS];
            for (int i = 0; i < SHOP_ROUNDS; i++)
                order[i] = i;
            for (int i = 1; i < SHOP_ROUNDS; i++) /* insertion sort by throughput */
                for (int j = i; j > 0 && res[k][order[j]].tps < res[k][order[j - 1]].tps; j--) {
                    int tmp = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = tmp;
                }
            int mid = order[SHOP_ROUNDS / 2];
            print_result(kinds[k]->name, &res[k][mid], group[k][mid]);
        }
    }
out:
    bench_run_free(&run);
    uv_loop_close(&loop);
    return rc;
}

/* ---- coordinator only -------------------------------------------------------------------- */

static int cmd_coordonly(const opts *o)
{
    uv_loop_t loop;
    bench_run run = {0};
    bench_result r;
    double cpu0, cpu1, s0, c0, n, group;
    int conc = o->conc ? atoi(o->conc) : 64;
    if (!o->port || !o->pid || conc <= 0)
        return fail("coordonly needs --port, --pid and --conc N");
    uv_loop_init(&loop);
    run.loop = &loop;
    run.http_port = o->port;
    run.body = BENCH_BODY_MEMORY;
    run.mem_stmt = "rows 1";
    s0 = metric(o->port, "xacoord_journal_group_size_sum");
    c0 = metric(o->port, "xacoord_journal_group_size_count");
    cpu0 = proc_cpu_s(o->pid);
    if (bench_run_execute(&run, &bench_http_kind, conc, o->seconds, INT64_MAX / 2 / conc, &r) != 0)
        return fail(run.first_error);
    cpu1 = proc_cpu_s(o->pid);
    n = metric(o->port, "xacoord_journal_group_size_count") - c0;
    group = n > 0 ? (metric(o->port, "xacoord_journal_group_size_sum") - s0) / n : 0;
    printf("conc,seconds,committed,errors,decisions_per_s,daemon_cpu_s,cpu_us_per_txn,"
           "decisions_per_cpu_s,group,p50_ms,p99_ms\n");
    printf("%d,%.3f,%llu,%llu,%.1f,%.3f,%.2f,%.1f,%.2f,%.3f,%.3f\n", conc, r.seconds,
           (unsigned long long)r.committed, (unsigned long long)r.errors, r.tps, cpu1 - cpu0,
           r.committed ? (cpu1 - cpu0) * 1e6 / (double)r.committed : 0,
           cpu1 > cpu0 ? (double)r.committed / (cpu1 - cpu0) : 0, group, r.p50_ms, r.p99_ms);
    if (run.first_error[0])
        fprintf(stderr, "xabench: coordonly: first error: %s\n", run.first_error);
    bench_run_free(&run);
    uv_loop_close(&loop);
    return 0;
}

/* ---- memory ------------------------------------------------------------------------------ */

typedef struct mem_probe {
    const opts *o;
    uv_timer_t timer;
    long rss_kib;
    double inflight;
} mem_probe;

static void on_probe(uv_timer_t *t)
{
    mem_probe *m = t->data;
    m->rss_kib = proc_kib(m->o->pid, "VmRSS");
    m->inflight = metric(m->o->port, "xacoord_inflight_transactions");
}

static int cmd_memory(const opts *o)
{
    uv_loop_t loop;
    bench_run run = {0};
    bench_result r;
    mem_probe m = {o, {0}, -1, -1};
    char stmt[32];
    long hwm0, rss0, hwm1;
    if (!o->port || !o->pid || o->n <= 0)
        return fail("memory needs --port, --pid and --n");
    uv_loop_init(&loop);
    snprintf(stmt, sizeof stmt, "sleep %d", o->sleep_ms);
    run.loop = &loop;
    run.http_port = o->port;
    run.body = BENCH_BODY_MEMORY;
    run.mem_stmt = stmt;
    hwm0 = proc_kib(o->pid, "VmHWM");
    rss0 = proc_kib(o->pid, "VmRSS");
    /* The probe fires while every request waits in its first sleep: connecting all clients
     * takes well under the 300 ms margin. */
    uv_timer_init(&loop, &m.timer);
    m.timer.data = &m;
    uv_timer_start(&m.timer, on_probe, (uint64_t)o->sleep_ms / 2 + 300, 0);
    if (bench_run_execute(&run, &bench_http_kind, o->n, 60, 1, &r) != 0)
        return fail(run.first_error);
    hwm1 = proc_kib(o->pid, "VmHWM");
    printf("n,committed,errors,inflight_seen,hwm_before_kib,rss_before_kib,rss_during_kib,"
           "hwm_after_kib,kib_per_txn,p50_ms\n");
    printf("%d,%llu,%llu,%.0f,%ld,%ld,%ld,%ld,%.2f,%.1f\n", o->n, (unsigned long long)r.committed,
           (unsigned long long)r.errors, m.inflight, hwm0, rss0, m.rss_kib, hwm1,
           (double)(hwm1 - hwm0) / o->n, r.p50_ms);
    if (run.first_error[0])
        fprintf(stderr, "xabench: memory: first error: %s\n", run.first_error);
    uv_close((uv_handle_t *)&m.timer, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    bench_run_free(&run);
    uv_loop_close(&loop);
    return 0;
}

/* ---- idle connections ------------------------------------------------------------------ */

/* One keep-alive connection that has been through a request (GET /healthz) and then waits, as
 * a client's pooled connection does between requests; -1 on failure. */
static int idle_conn(int port)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char buf[1024];
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* /healthz answers in one small packet: its status line is enough to know it was served. */
    n = read(fd, buf, sizeof buf - 1);
    if (n <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int cmd_idle(const opts *o)
{
    int *fds, open_n = 0;
    long rss0, rss1;
    if (!o->port || !o->pid || o->n <= 0)
        return fail("idle needs --port, --pid and --n");
    fds = calloc((size_t)o->n, sizeof *fds);
    if (!fds)
        return fail("out of memory");
    /* One connection first: what every connection shares (the first accept's buffers, the
     * handler's first allocations) is not counted per connection. */
    fds[open_n] = idle_conn(o->port);
    if (fds[open_n] >= 0)
        open_n++;
    usleep(200000);
    rss0 = proc_kib(o->pid, "VmRSS");
    while (open_n < o->n && (fds[open_n] = idle_conn(o->port)) >= 0)
        open_n++;
    usleep(500000);
    rss1 = proc_kib(o->pid, "VmRSS");
    printf("n,open,rss_before_kib,rss_after_kib,bytes_per_idle_conn\n");
    printf("%d,%d,%ld,%ld,%.0f\n", o->n, open_n, rss0, rss1,
           open_n > 1 ? (double)(rss1 - rss0) * 1024.0 / (open_n - 1) : 0.0);
    for (int i = 0; i < open_n; i++)
        close(fds[i]);
    free(fds);
    return open_n == o->n ? 0 : fail("not every connection was served");
}

/* ---- recovery --------------------------------------------------------------------------- */

static int cmd_recovery(const opts *o)
{
    bench_targets t;
    if (!load_targets(o, &t) || !o->setup || !o->port || o->n <= 0 || !o->node || !o->identity ||
        !o->xacoord || !o->config || !o->log)
        return fail("recovery needs --n, --node, --identity, --xacoord, --config, --log, --port, "
                    "--setup and the database options");
    /* One distinct row per planted branch: prepared branches on one row would wait for each
     * other's locks. */
    if (run_setup(o, o->n, 1) != 0)
        return fail("setup command failed");
    return bench_recovery(&t, o->n, o->node, o->identity, o->xacoord, o->config, o->log, o->port);
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: xabench shop|single|coordonly|memory|idle|recovery [options]\n"
            "  --port N            the daemon's HTTP port\n"
            "  --store-port N      shop: also measure a daemon with decision_log = postgres and\n"
            "                      payment as the last resource (mode xacoord-store-lr)\n"
            "  --pg-port N --order-port N --warehouse-port N --secrets DIR\n"
            "                      the shop databases (passwords in DIR/<name>.pw)\n"
            "  --setup CMD         run as 'CMD USERS ORDERS_PER_USER' before each run\n"
            "  --conc LIST         shop: concurrencies (default 1,8,32,128); coordonly: one\n"
            "  --seconds S         time bound of each run (default 5)\n"
            "  --orders N          shop: orders per run, split among the clients (default 60000)\n"
            "  --pid PID           coordonly, memory, idle: the daemon's process\n"
            "  --n N --sleep-ms MS memory: transactions in flight and their sleep (2000)\n"
            "  --n N               idle: keep-alive connections to open and leave idle\n"
            "  --n N --node ID --identity ID --xacoord BIN --config FILE --log FILE\n"
            "                      recovery: branches to plant (as the data directory of that\n"
            "                      identity), and the daemon to start\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"port", required_argument, NULL, 'p'},
                                             {"pg-port", required_argument, NULL, 'P'},
                                             {"order-port", required_argument, NULL, 'O'},
                                             {"warehouse-port", required_argument, NULL, 'W'},
                                             {"secrets", required_argument, NULL, 'S'},
                                             {"setup", required_argument, NULL, 's'},
                                             {"conc", required_argument, NULL, 'c'},
                                             {"seconds", required_argument, NULL, 't'},
                                             {"orders", required_argument, NULL, 'o'},
                                             {"pid", required_argument, NULL, 'i'},
                                             {"n", required_argument, NULL, 'n'},
                                             {"sleep-ms", required_argument, NULL, 'm'},
                                             {"node", required_argument, NULL, 'N'},
                                             {"xacoord", required_argument, NULL, 'x'},
                                             {"config", required_argument, NULL, 'C'},
                                             {"log", required_argument, NULL, 'l'},
                                             {"identity", required_argument, NULL, 'I'},
                                             {"store-port", required_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    opts o = {.conc = NULL, .seconds = 5, .orders = 60000, .sleep_ms = 2000};
    const char *cmd;
    int ch;
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'q':
            o.store_port = atoi(optarg);
            break;
        case 'P':
            o.pg_port = atoi(optarg);
            break;
        case 'O':
            o.order_port = atoi(optarg);
            break;
        case 'W':
            o.wh_port = atoi(optarg);
            break;
        case 'S':
            o.secrets = optarg;
            break;
        case 's':
            o.setup = optarg;
            break;
        case 'c':
            o.conc = optarg;
            break;
        case 't':
            o.seconds = atof(optarg);
            break;
        case 'o':
            o.orders = atoll(optarg);
            break;
        case 'i':
            o.pid = atoi(optarg);
            break;
        case 'n':
            o.n = atoi(optarg);
            break;
        case 'm':
            o.sleep_ms = atoi(optarg);
            break;
        case 'N':
            o.node = optarg;
            break;
        case 'I':
            o.identity = optarg;
            break;
        case 'x':
            o.xacoord = optarg;
            break;
        case 'C':
            o.config = optarg;
            break;
        case 'l':
            o.log = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(cmd, "shop") == 0) {
        if (!o.conc)
            o.conc = "1,8,32,128";
        return cmd_shop(&o, false);
    }
    if (strcmp(cmd, "single") == 0) {
        if (!o.conc)
            o.conc = "8";
        return cmd_shop(&o, true);
    }
    if (strcmp(cmd, "coordonly") == 0)
        return cmd_coordonly(&o);
    if (strcmp(cmd, "memory") == 0)
        return cmd_memory(&o);
    if (strcmp(cmd, "idle") == 0)
        return cmd_idle(&o);
    if (strcmp(cmd, "recovery") == 0)
        return cmd_recovery(&o);
    usage(stderr);
    return 2;
}
