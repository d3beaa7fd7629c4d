/*
 * xacoord: command line, signals and the start-up order (configuration -> journal replay and boot
 * -> pools and recovery -> HTTP API). SIGTERM/SIGINT stop new work, drain the transactions in
 * flight (bounded), then close everything in order. Exit codes: 0 clean stop, 1 runtime failure,
 * 2 bad usage or configuration.
 */
#include "api.h"
#include "config.h"
#include "coord.h"
#include "lifecycle.h"
#include "initparts.h"
#include "log.h"
#include "reload.h"
#include "status.h"
#include "txn.h"

#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct daemon_state {
    uv_loop_t *loop;
    config cfg;
    coord coord;
    http_server *http;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t tick;
    uint64_t drain_started;
    uint64_t drain_limit_ms;
    bool announced_ready;
    bool stopping;
    int exit_code;
} daemon_state;

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: xacoord --config FILE [--accept-damaged-tail]\n"
        "                                    run the coordinator in the foreground; the flag\n"
        "                                    cuts a damaged COMMIT record at the journal's end\n"
        "                                    once its transaction was resolved by hand\n"
        "       xacoord --check-config FILE  validate FILE, print the effective settings\n"
        "       xacoord --init-participants FILE\n"
        "                                    create the xacoord schema in every participant\n"
        "                                    database of FILE (sql/xacoord-*.sql)\n"
        "       xacoord --help | --version\n"
        "Logs go to stderr. SIGTERM or SIGINT drain the transactions in flight and stop.\n");
}

/* systemd's notify protocol (Type=notify), without linking libsystemd. */
static void sd_notify_msg(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len;
    int fd;
    if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof sa.sun_path)
        return;
    len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        log_warn(NULL, "sd_notify failed");
    close(fd);
}

static void on_closed_all(void *arg)
{
    daemon_state *d = arg;
    log_info(NULL, "stopped");
    uv_stop(d->loop);
}

static void on_http_stopped(void *arg)
{
    daemon_state *d = arg;
    d->http = NULL;
}

static void finish_stop(daemon_state *d)
{
    uv_timer_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    lifecycle_close(&d->coord, on_closed_all, d);
}

/* A drain that takes too long (a participant down in phase 2) must not hold the stop forever. */
static void drain_step(daemon_state *d)
{
    int left = coord_inflight(&d->coord);
    if (left > 0 && uv_now(d->loop) - d->drain_started > d->drain_limit_ms) {
        log_warn(NULL,
                 "%d transactions still unfinished after %" PRIu64 " ms: their decisions "
                 "are durable; the next start resolves them (with a decision store, a "
                 "peer's takeover may come first)",
                 left, d->drain_limit_ms);
        d->coord.abandoned_in_doubt += txn_count_maybe_prepared(&d->coord);
        txn_abandon_all(&d->coord, TXN_ASK_LATER);
        left = 0;
    }
    if (left == 0 && d->http == NULL)
        finish_stop(d);
}

/* Periodic upkeep: announce readiness once, and watch a drain. */
static void on_tick(uv_timer_t *t)
{
    daemon_state *d = t->data;
    if (!d->announced_ready && status_ready(&d->coord)) {
        d->announced_ready = true;
        log_info(NULL, "ready: recovery finished on every participant");
        sd_notify_msg("READY=1");
    }
    if (d->stopping)
        drain_step(d);
}

/* Reload what can change safely (reload.h); a hang-up never ends the process. */
static void on_sighup(uv_signal_t *s, int signum)
{
    daemon_state *d = s->data;
    reload_config(&d->coord, &d->cfg);
}

static void on_signal(uv_signal_t *s, int signum)
{
    daemon_state *d = s->data;
    if (d->stopping)
        return;
    d->stopping = true;
    d->coord.draining = true;
    d->drain_started = uv_now(d->loop);
    d->drain_limit_ms = d->cfg.drain_limit_ms; /* as the stop began, whatever a reload says */
    log_info(NULL, "%s: draining %d transactions in flight", strsignal(signum),
             coord_inflight(&d->coord));
    sd_notify_msg("STOPPING=1");
    http_server_stop(d->http, on_http_stopped, d);
}

static int run(daemon_state *d)
{
    char err[512];
    d->loop = uv_default_loop();
    if (lifecycle_open(&d->coord, d->loop, &d->cfg, err, sizeof err) != 0) {
        log_error(NULL, "cannot start: %s", err);
        return 1;
    }
    if (api_start(&d->coord, &d->http, err, sizeof err) != 0) {
        log_error(NULL, "cannot start: %s", err);
        return 1;
    }
    log_info(NULL, "xacoord %s node %s listening on %s:%d, %d participants", XACOORD_VERSION,
             d->cfg.node_id, d->cfg.listen_host, http_server_port(d->http), d->cfg.nparticipants);
    uv_signal_init(d->loop, &d->sigterm);
    uv_signal_init(d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_init(d->loop, &d->sighup);
    d->sighup.data = d;
    uv_signal_start(&d->sighup, on_sighup, SIGHUP);
    uv_timer_init(d->loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 50, 50);
    uv_run(d->loop, UV_RUN_DEFAULT);
    /* Let the close callbacks run, then make sure nothing is left. */
    uv_run(d->loop, UV_RUN_NOWAIT);
    uv_loop_close(d->loop);
    return d->exit_code;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", required_argument, NULL, 'k'},
                                         {"init-participants", required_argument, NULL, 'i'},
                                         {"accept-damaged-tail", no_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'v'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    bool check = false, init = false, accept_damaged_tail = false;
    char err[512];
    daemon_state d = {0};
    int ch;
    log_level level;
    log_format format;

    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            path = optarg;
            check = true;
            break;
        case 'i':
            path = optarg;
            init = true;
            break;
        case 'a':
            accept_damaged_tail = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("xacoord %s\n", XACOORD_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (config_load(path, &d.cfg, err, sizeof err) != 0) {
        fprintf(stderr, "xacoord: %s\n", err);
        return 2;
    }
    d.cfg.accept_damaged_tail = accept_damaged_tail;
    if (check) {
        config_dump(&d.cfg, stdout);
        printf("# %s: configuration is valid\n", path);
        config_free(&d.cfg);
        return 0;
    }
    if (log_parse_level(d.cfg.log_level, &level) == 0)
        log_set_level(level);
    if (log_parse_format(d.cfg.log_format, &format) == 0)
        log_set_format(format);
    signal(SIGPIPE, SIG_IGN);
    d.exit_code = init ? initparts_run(&d.cfg) : run(&d);
    config_free(&d.cfg);
    return d.exit_code;
}
