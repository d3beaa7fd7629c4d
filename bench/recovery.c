/*
 * The recovery-time measurement: leave the databases as a coordinator that crashed with n
 * transactions prepared everywhere and nothing in its journal would, then time the restart.
 * Each planted branch does a real write (one row of its own) and is prepared under this node's
 * gtrid prefix; the journal holds no commit record for any of them, so presumed abort says every
 * one must be rolled back. A MariaDB branch detaches from its session only when that session
 * closes (FACTS.md section 4), so every MariaDB branch is prepared on a connection of its own
 * that is then closed, as a crashed coordinator's would be.
 *
 * The databases' own limit is timed first, on the same planted set: WORKERS connections per
 * database - the daemon's RECOVERY_WORKERS - roll every branch back by XID with nothing else in
 * the way (no listing, no coordinator). Then the set is planted again and the daemon resolves it.
 */
#include "bench.h"
#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 32
enum { PAY = 0, ORD, WH, NBR };

typedef struct planter planter;

typedef struct worker {
    planter *pl;
    px_conn *conn[NBR];
    int b;
    int64_t seq;
    px_xid xid;
    px_param params[1];
    px_stmt stmt;
} worker;

struct planter {
    uv_loop_t *loop;
    const px_target *targets[NBR];
    const char *node;
    dir_identity identity; /* of the daemon's data directory: its branches are its to resolve */
    int64_t next, total, planted;
    int64_t next_of[NBR]; /* resolving: the next transaction of each database */
    int running;
    bool failed;
    bool resolving;          /* the workers roll the planted branches back (the direct baseline) */
    worker w[WORKERS * NBR]; /* planting: the first WORKERS; resolving: all, worker k on k % NBR */
    /* the listing poll */
    px_conn *lister[NBR];
    int nlisted;
    size_t listed[NBR];
    uv_timer_t timer;
    int port;
    pid_t pid;
    bool polling;
    uint64_t t_spawn, t_ready, t_clean;
    char prefix[40];
};

static void work_next(worker *w);

static void work_fail(worker *w, const char *what, const px_error *err)
{
    fprintf(stderr, "xabench: %s %s %lld: %s: %s\n", w->pl->resolving ? "resolve" : "plant",
            w->pl->targets[w->b]->name, (long long)w->seq, what,
            err ? err->message : "could not start");
    w->pl->failed = true;
    if (--w->pl->running == 0)
        uv_stop(w->pl->loop);
}

static void on_prepared(px_conn *c, const px_error *err, void *arg)
{
    worker *w = arg;
    if (err && err->cls != PX_OK) {
        work_fail(w, "prepare", err);
        return;
    }
    w->pl->planted++;
    if (strcmp(w->pl->targets[w->b]->driver, "mysql") == 0) {
        px_conn_base(c)->driver->close(c);
        w->conn[w->b] = NULL;
    }
    work_next(w);
}

static void on_resolved(px_conn *c, const px_error *err, void *arg)
{
    worker *w = arg;
    if (err && err->cls != PX_OK) {
        work_fail(w, "rollback prepared", err);
        return;
    }
    work_next(w);
}

static void on_worked(px_conn *c, const px_error *err, int fi, const px_result *r, int n, void *arg)
{
    worker *w = arg;
    if (err && err->cls != PX_OK) {
        work_fail(w, "exec", err);
        return;
    }
    if (px_conn_base(c)->driver->prepare(c, &w->xid, on_prepared, w) != 0)
        work_fail(w, "prepare", NULL);
}

static void on_begun(px_conn *c, const px_error *err, void *arg)
{
    worker *w = arg;
    if (err && err->cls != PX_OK) {
        work_fail(w, "begin", err);
        return;
    }
    if (px_conn_base(c)->driver->exec(c, &w->stmt, 1, on_worked, w) != 0)
        work_fail(w, "exec", NULL);
}

static void work_branch(worker *w)
{
    static const char *const sql[NBR] = {
        "UPDATE account SET balance = balance - 1 WHERE user_id = $1",
        "UPDATE orders SET status = 'P' WHERE id = ?",
        "INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, 'B1', 1, 'R')",
    };
    char gtrid[PX_XID_PART_MAX + 1];
    px_conn *c = w->conn[w->b];
    identity_gtrid(&w->pl->identity, w->pl->node, 1, (uint64_t)w->seq, gtrid, sizeof gtrid);
    if (px_xid_set(&w->xid, gtrid, w->pl->targets[w->b]->name) != 0) {
        work_fail(w, "xid", NULL);
        return;
    }
    if (w->pl->resolving) {
        if (px_conn_base(c)->driver->rollback_prepared(c, &w->xid, on_resolved, w) != 0)
            work_fail(w, "rollback prepared", NULL);
        return;
    }
    w->params[0] = (px_param){.type = PX_P_INT, .i = w->seq};
    w->stmt = (px_stmt){sql[w->b], w->params, 1, 1, true};
    if (px_conn_base(c)->driver->begin(c, &w->xid, on_begun, w) != 0)
        work_fail(w, "begin", NULL);
}

static void on_work_conn(px_conn *c, const px_error *err, void *arg)
{
    worker *w = arg;
    if (!c) {
        work_fail(w, "connect", err);
        return;
    }
    w->conn[w->b] = c;
    work_branch(w);
}

/* The next item, false when there is none. Planting interleaves the databases: item i is branch
 * (i % 3) of transaction i / 3 + 1. Resolving keeps each worker on its own database. */
static bool take_item(worker *w)
{
    planter *pl = w->pl;
    int64_t i;
    if (pl->resolving) {
        if (pl->next_of[w->b] >= pl->total / NBR)
            return false;
        w->seq = ++pl->next_of[w->b];
        return true;
    }
    if (pl->next >= pl->total)
        return false;
    i = pl->next++;
    w->b = (int)(i % NBR);
    w->seq = i / NBR + 1;
    return true;
}

static void work_next(worker *w)
{
    planter *pl = w->pl;
    if (pl->failed || !take_item(w)) {
        if (--pl->running == 0)
            uv_stop(pl->loop);
        return;
    }
    if (w->conn[w->b]) {
        work_branch(w);
        return;
    }
    if (px_driver_find(pl->targets[w->b]->driver)
            ->connect(pl->loop, pl->targets[w->b], on_work_conn, w) != 0)
        work_fail(w, "connect", NULL);
}

/* ---- the listing poll -------------------------------------------------------------------- */

static void poll_again(planter *pl);

static void on_listed(px_conn *c, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    planter *pl = arg;
    int b = 0;
    while (b < NBR && pl->lister[b] != c)
        b++;
    pl->listed[b] = err && err->cls != PX_OK ? (size_t)-1 : n;
    if (++pl->nlisted < NBR)
        return;
    if (pl->t_ready && !pl->t_clean && pl->listed[PAY] == 0 && pl->listed[ORD] == 0 &&
        pl->listed[WH] == 0) {
        pl->t_clean = uv_hrtime();
        uv_stop(pl->loop);
        return;
    }
    if (pl->polling)
        poll_again(pl);
}

static void list_all(planter *pl)
{
    pl->nlisted = 0;
    for (int b = 0; b < NBR; b++) {
        px_conn *c = pl->lister[b];
        if (px_conn_base(c)->driver->recover(c, pl->prefix, pl->targets[b]->name, on_listed, pl) !=
            0) {
            fprintf(stderr, "xabench: cannot list prepared branches on %s\n", pl->targets[b]->name);
            pl->failed = true;
            uv_stop(pl->loop);
            return;
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    planter *pl = t->data;
    int status;
    if (waitpid(pl->pid, &status, WNOHANG) == pl->pid ||
        uv_hrtime() - pl->t_spawn > 300 * (uint64_t)1000000000) {
        fprintf(stderr, "xabench: the daemon exited or took over 300 s\n");
        pl->pid = 0;
        uv_stop(pl->loop);
        return;
    }
    if (!pl->t_ready) {
        char *body = NULL;
        if (bench_http_get(pl->port, "/readyz", &body) == 200)
            pl->t_ready = uv_hrtime();
        free(body);
    }
    /* Listing 30,000 branches every 20 ms would take the databases' CPU from the daemon's
     * rollbacks (the direct baseline is not listed meanwhile): the listing starts once the
     * daemon says its scans finished. */
    if (!pl->t_ready) {
        poll_again(pl);
        return;
    }
    list_all(pl);
}

static void poll_again(planter *pl)
{
    uv_timer_start(&pl->timer, on_tick, 20, 0);
}

static void on_lister(px_conn *c, const px_error *err, void *arg)
{
    planter *pl = arg;
    int b = 0;
    while (b < NBR && pl->targets[b] != (c ? px_conn_base(c)->target : NULL))
        b++;
    if (!c || b == NBR) {
        fprintf(stderr, "xabench: lister connect: %s\n", err ? err->message : "?");
        pl->failed = true;
    } else {
        pl->lister[b] = c;
    }
    if (++pl->nlisted == NBR)
        uv_stop(pl->loop);
}

static pid_t spawn(const char *xacoord, const char *config, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(xacoord, "xacoord", "--config", config, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void close_all(planter *pl)
{
    for (int k = 0; k < WORKERS * NBR; k++)
        for (int b = 0; b < NBR; b++)
            if (pl->w[k].conn[b])
                px_conn_base(pl->w[k].conn[b])->driver->close(pl->w[k].conn[b]);
    for (int b = 0; b < NBR; b++)
        if (pl->lister[b])
            px_conn_base(pl->lister[b])->driver->close(pl->lister[b]);
    uv_close((uv_handle_t *)&pl->timer, NULL);
    for (int i = 0; i < 100; i++)
        uv_run(pl->loop, UV_RUN_NOWAIT);
}

/* Runs every worker over the n x NBR items (planting or resolving) until all are done. */
static void run_workers(planter *pl)
{
    int n = pl->resolving ? WORKERS * NBR : WORKERS;
    pl->next = 0;
    memset(pl->next_of, 0, sizeof pl->next_of);
    pl->running = n;
    for (int k = 0; k < n; k++) {
        pl->w[k].pl = pl;
        if (pl->resolving)
            pl->w[k].b = k % NBR;
        work_next(&pl->w[k]);
    }
    uv_run(pl->loop, UV_RUN_DEFAULT);
}

/* Waits until every database lists exactly want of this node's branches (closed MariaDB
 * sessions detach theirs asynchronously). 0, or -ETIMEDOUT after 10 s. */
static int wait_listed(planter *pl, size_t want)
{
    for (int tries = 0; tries < 500; tries++) {
        list_all(pl);
        uv_stop(pl->loop);
        while (pl->nlisted < NBR && !pl->failed)
            uv_run(pl->loop, UV_RUN_ONCE);
        if (pl->listed[PAY] == want && pl->listed[ORD] == want && pl->listed[WH] == want)
            return 0;
        usleep(20000);
    }
    return -ETIMEDOUT;
}

/* Plants n transactions and waits until all are listed. 0, or -EIO. */
static int plant(planter *pl, int n)
{
    double plant_s = bench_now_s();
    pl->planted = 0;
    run_workers(pl);
    plant_s = bench_now_s() - plant_s;
    if (pl->failed || wait_listed(pl, (size_t)n) != 0) {
        fprintf(stderr, "xabench: planting failed; listed %zu/%zu/%zu of %d\n", pl->listed[PAY],
                pl->listed[ORD], pl->listed[WH], n);
        return -EIO;
    }
    fprintf(stderr, "xabench: planted %lld branches in %.1f s; listed %zu/%zu/%zu\n",
            (long long)pl->planted, plant_s, pl->listed[PAY], pl->listed[ORD], pl->listed[WH]);
    return 0;
}

/* The databases' own rate: every planted branch rolled back by XID over WORKERS connections
 * per database. The seconds until the last ROLLBACK PREPARED / XA ROLLBACK returned, or a
 * negative value when one failed or a branch is still listed after. */
static double resolve_direct(planter *pl)
{
    double s = bench_now_s();
    pl->resolving = true;
    run_workers(pl);
    s = bench_now_s() - s;
    pl->resolving = false;
    if (pl->failed || wait_listed(pl, 0) != 0)
        return -1;
    return s;
}

static int open_listers(planter *pl)
{
    pl->nlisted = 0;
    for (int b = 0; b < NBR; b++)
        if (px_driver_find(pl->targets[b]->driver)
                ->connect(pl->loop, pl->targets[b], on_lister, pl))
            pl->failed = true;
    if (!pl->failed)
        uv_run(pl->loop, UV_RUN_DEFAULT);
    return pl->failed ? -EIO : 0;
}

int bench_recovery(const bench_targets *t, int n, const char *node, const char *identity,
                   const char *xacoord, const char *config, const char *log, int port)
{
    uv_loop_t loop;
    planter *pl = calloc(1, sizeof *pl);
    double direct_s = -1;
    pid_t pid;
    int rc = 0, status;
    if (!pl)
        return 1;
    uv_loop_init(&loop);
    pl->loop = &loop;
    pl->targets[PAY] = &t->payment;
    pl->targets[ORD] = &t->order;
    pl->targets[WH] = &t->warehouse;
    pl->node = node;
    snprintf(pl->identity.id, sizeof pl->identity.id, "%s", identity);
    pl->port = port;
    pl->total = (int64_t)n * NBR;
    gtrid_prefix(2, node, identity, pl->prefix, sizeof pl->prefix);
    uv_timer_init(&loop, &pl->timer);
    pl->timer.data = pl;

    if (open_listers(pl) != 0 || plant(pl, n) != 0 || (direct_s = resolve_direct(pl)) < 0 ||
        plant(pl, n) != 0) {
        fprintf(stderr, "xabench: the direct baseline failed\n");
        close_all(pl);
        free(pl);
        return 1;
    }
    fprintf(stderr, "xabench: the databases alone rolled back %lld branches in %.2f s\n",
            (long long)pl->total, direct_s);

    pl->t_spawn = uv_hrtime();
    pid = pl->pid = spawn(xacoord, config, log);
    pl->polling = true;
    if (pid < 0) {
        close_all(pl);
        free(pl);
        return 1;
    }
    poll_again(pl);
    uv_run(&loop, UV_RUN_DEFAULT);
    printf("n,branches,ready_s,resolved_s,direct_s\n");
    if (pl->t_clean) {
        printf("%d,%lld,%.3f,%.3f,%.3f\n", n, (long long)pl->planted,
               (double)(pl->t_ready - pl->t_spawn) / 1e9, (double)(pl->t_clean - pl->t_spawn) / 1e9,
               direct_s);
    } else {
        fprintf(stderr, "xabench: recovery did not finish\n");
        rc = 1;
    }
    if (pl->pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
    }
    close_all(pl);
    uv_loop_close(&loop);
    free(pl);
    return rc;
}
