/*
 * The two baselines, driven straight through the participant drivers with no coordinator, no
 * journal and no HTTP: each client owns one connection per shop database and runs the same
 * statements with the same parameters as the HTTP checkout, on all three databases in parallel.
 *   B0: three independent local transactions (BEGIN; statements; COMMIT in one round trip each).
 *       No atomicity: the naive approach the coordinator replaces.
 *   B1: the same branches as XA: begin, work, prepare on all three, then commit each prepared
 *       branch (on its preparing connection), exactly the statements the daemon sends.
 * With run->single, only the payment branch runs (the single-branch workload): B0 is then one
 * local transaction, the direct commit a one-phase commit through the daemon is measured against.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PAY = 0, ORD, WH, NBR };

typedef enum stage { ST_IDLE, ST_BEGUN, ST_PREPARED, ST_DONE } stage;

typedef struct dclient {
    bench_client *cl;
    bool xa;
    int nbr; /* branches used: NBR, or 1 (payment) for the single-branch workload */
    px_conn *conn[NBR];
    int nconnected;
    /* the transaction in flight */
    int pending;
    bool failed, broken, committing;
    stage st[NBR];
    px_xid xid[NBR];
    char sku[24];
    char why[300];
    px_param pay_upd[2], pay_ins[3], ord_upd[1], wh_upd[3], wh_ins[3];
    px_stmt stmts[NBR][4];
    int nstmts[NBR];
} dclient;

static const px_target *target_of(const bench_run *run, int b)
{
    return b == PAY   ? &run->targets->payment
           : b == ORD ? &run->targets->order
                      : &run->targets->warehouse;
}

static px_param p_int(int64_t v)
{
    return (px_param){.type = PX_P_INT, .i = v};
}

static px_param p_text(const char *s)
{
    return (px_param){.type = PX_P_TEXT, .text = s, .len = strlen(s)};
}

static px_stmt stmt(const char *sql, const px_param *p, int n, int64_t expect)
{
    return (px_stmt){sql, p, n, expect, true}; /* the shop's statements call no function */
}

/* The checkout's statements for this client's current order (the same as httpc.c's JSON). */
static void build(dclient *d)
{
    const bench_client *cl = d->cl;
    int64_t o = cl->order, u = cl->user;
    int k;
    snprintf(d->sku, sizeof d->sku, "B%lld", (long long)u);
    d->pay_upd[0] = p_int(1), d->pay_upd[1] = p_int(u);
    d->pay_ins[0] = p_int(o), d->pay_ins[1] = p_int(u), d->pay_ins[2] = p_int(1);
    d->ord_upd[0] = p_int(o);
    d->wh_upd[0] = p_int(1), d->wh_upd[1] = p_text(d->sku), d->wh_upd[2] = p_int(1);
    d->wh_ins[0] = p_int(o), d->wh_ins[1] = p_text(d->sku), d->wh_ins[2] = p_int(1);

    k = 0;
    if (!d->xa)
        d->stmts[PAY][k++] = stmt("BEGIN", NULL, 0, -1);
    d->stmts[PAY][k++] = stmt("UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND "
                              "balance >= $1",
                              d->pay_upd, 2, 1);
    d->stmts[PAY][k++] = stmt("INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)",
                              d->pay_ins, 3, -1);
    if (!d->xa)
        d->stmts[PAY][k++] = stmt("COMMIT", NULL, 0, -1);
    d->nstmts[PAY] = k;

    k = 0;
    if (!d->xa)
        d->stmts[ORD][k++] = stmt("START TRANSACTION", NULL, 0, -1);
    d->stmts[ORD][k++] =
        stmt("UPDATE orders SET status = 'P' WHERE id = ? AND status = 'I'", d->ord_upd, 1, 1);
    if (!d->xa)
        d->stmts[ORD][k++] = stmt("COMMIT", NULL, 0, -1);
    d->nstmts[ORD] = k;

    k = 0;
    if (!d->xa)
        d->stmts[WH][k++] = stmt("START TRANSACTION", NULL, 0, -1);
    d->stmts[WH][k++] =
        stmt("UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?", d->wh_upd, 3, 1);
    d->stmts[WH][k++] = stmt("INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, ?, ?, "
                             "'R')",
                             d->wh_ins, 3, -1);
    if (!d->xa)
        d->stmts[WH][k++] = stmt("COMMIT", NULL, 0, -1);
    d->nstmts[WH] = k;
}

/* Each callback gets the branch's slot in conn[] as its argument. */
static dclient *owner(px_conn *c, int *b)
{
    dclient *d = px_conn_base(c)->user;
    for (*b = 0; *b < d->nbr; (*b)++)
        if (d->conn[*b] == c)
            break;
    return d;
}

static void note_error(dclient *d, int b, const px_error *err)
{
    d->failed = true;
    if (err->conn_broken)
        d->broken = true;
    if (!d->why[0])
        snprintf(d->why, sizeof d->why, "branch %d: %s", b, err->message);
}

static void branch_settled(dclient *d);

static void on_step(px_conn *c, const px_error *err, void *arg);

static void on_exec(px_conn *c, const px_error *err, int failed_index, const px_result *results,
                    int nresults, void *arg)
{
    int b;
    dclient *d = owner(c, &b);
    if (err && err->cls != PX_OK) {
        note_error(d, b, err);
        branch_settled(d);
        return;
    }
    if (!d->xa) {
        d->st[b] = ST_DONE;
        branch_settled(d);
        return;
    }
    if (px_conn_base(c)->driver->prepare(c, &d->xid[b], on_step, NULL) != 0) {
        d->failed = true;
        branch_settled(d);
    }
}

/* begin -> exec -> prepare, then commit (or rollback), one callback for every XA step. */
static void on_step(px_conn *c, const px_error *err, void *arg)
{
    int b;
    dclient *d = owner(c, &b);
    const px_driver *drv = px_conn_base(c)->driver;
    if (err && err->cls != PX_OK) {
        note_error(d, b, err);
        branch_settled(d);
        return;
    }
    switch (d->st[b]) {
    case ST_IDLE:
        d->st[b] = ST_BEGUN;
        if (drv->exec(c, d->stmts[b], d->nstmts[b], on_exec, NULL) != 0) {
            d->failed = true;
            branch_settled(d);
        }
        return;
    case ST_BEGUN:
        d->st[b] = d->committing ? ST_DONE : ST_PREPARED;
        break;
    case ST_PREPARED:
        d->st[b] = ST_DONE;
        break;
    case ST_DONE:
        break;
    }
    branch_settled(d);
}

static void finish(dclient *d)
{
    bench_client *cl = d->cl;
    if (d->broken)
        cl->dead = true;
    bench_client_done(cl, d->failed ? (d->broken ? BENCH_ERROR : BENCH_ABORTED) : BENCH_COMMITTED,
                      d->why);
}

static void on_cleanup(px_conn *c, const px_error *err, void *arg)
{
    int b;
    dclient *d = owner(c, &b);
    if (err && err->cls != PX_OK)
        d->broken = true;
    if (--d->pending == 0)
        finish(d);
}

static void on_cleanup_exec(px_conn *c, const px_error *err, int fi, const px_result *r, int n,
                            void *arg)
{
    on_cleanup(c, err, arg);
}

/* After a failure: roll every branch back so that no prepared branch is left behind. */
static void clean_up(dclient *d)
{
    static const px_stmt rb = {"ROLLBACK", NULL, 0, -1, true};
    d->pending = 1;
    for (int b = 0; b < d->nbr; b++) {
        px_conn *c = d->conn[b];
        const px_driver *drv = px_conn_base(c)->driver;
        int rc = 0;
        if (d->st[b] == ST_PREPARED) {
            d->pending++;
            rc = drv->rollback_prepared(c, &d->xid[b], on_cleanup, NULL);
        } else if (d->st[b] != ST_DONE && d->xa) {
            d->pending++;
            rc = drv->rollback(c, &d->xid[b], on_cleanup, NULL);
        } else if (d->st[b] != ST_DONE) {
            d->pending++;
            rc = drv->exec(c, &rb, 1, on_cleanup_exec, NULL);
        }
        if (rc != 0) {
            d->pending--;
            d->broken = true;
        }
    }
    if (--d->pending == 0)
        finish(d);
}

static void commit_all(dclient *d)
{
    d->committing = true;
    d->pending = d->nbr;
    for (int b = 0; b < d->nbr; b++) {
        px_conn *c = d->conn[b];
        d->st[b] = ST_BEGUN; /* on_step moves it to ST_DONE */
        if (px_conn_base(c)->driver->commit_prepared(c, &d->xid[b], on_step, NULL) != 0) {
            d->failed = d->broken = true;
            d->pending--;
        }
    }
    if (d->pending == 0)
        finish(d);
}

static void branch_settled(dclient *d)
{
    if (--d->pending > 0)
        return;
    if (d->failed && !d->committing) {
        clean_up(d);
        return;
    }
    if (d->xa && !d->committing && !d->failed) {
        commit_all(d);
        return;
    }
    finish(d);
}

static void direct_start(bench_client *cl)
{
    dclient *d = cl->impl;
    bench_run *run = cl->run;
    d->pending = d->nbr;
    d->failed = d->broken = d->committing = false;
    d->why[0] = '\0';
    build(d);
    if (d->xa) {
        char gtrid[PX_XID_PART_MAX + 1];
        snprintf(gtrid, sizeof gtrid, "bb.%d.%llu", cl->index,
                 (unsigned long long)++run->gtrid_seq);
        for (int b = 0; b < d->nbr; b++)
            if (px_xid_set(&d->xid[b], gtrid, target_of(run, b)->name) != 0)
                abort(); /* participant names are checked at start */
    }
    for (int b = 0; b < d->nbr; b++) {
        px_conn *c = d->conn[b];
        const px_driver *drv = px_conn_base(c)->driver;
        int rc;
        d->st[b] = ST_IDLE;
        rc = d->xa ? drv->begin(c, &d->xid[b], on_step, NULL)
                   : drv->exec(c, d->stmts[b], d->nstmts[b], on_exec, NULL);
        if (rc != 0) {
            d->failed = d->broken = true;
            snprintf(d->why, sizeof d->why, "branch %d: start failed (%d)", b, rc);
            d->st[b] = ST_DONE;
            branch_settled(d);
        }
    }
}

static void on_connected(px_conn *c, const px_error *err, void *arg)
{
    dclient *d = ((void **)arg)[0];
    int b = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    if (!c) {
        char why[300];
        snprintf(why, sizeof why, "connect %s: %s", target_of(d->cl->run, b)->name,
                 err ? err->message : "failed");
        bench_client_failed(d->cl, why);
        return;
    }
    px_conn_base(c)->user = d;
    d->conn[b] = c;
    if (++d->nconnected == d->nbr)
        bench_client_ready(d->cl);
}

static void direct_open(bench_client *cl, bool xa)
{
    dclient *d = calloc(1, sizeof *d);
    if (!d) {
        bench_client_failed(cl, "out of memory");
        return;
    }
    d->cl = cl;
    d->xa = xa;
    d->nbr = cl->run->single ? 1 : NBR;
    cl->impl = d;
    for (int b = 0; b < d->nbr; b++) {
        const px_target *t = target_of(cl->run, b);
        void **arg = malloc(2 * sizeof *arg);
        if (arg) {
            arg[0] = d;
            arg[1] = (void *)(intptr_t)b;
        }
        if (!arg || px_driver_find(t->driver)->connect(cl->run->loop, t, on_connected, arg) != 0) {
            free(arg);
            bench_client_failed(cl, "connect could not start");
            return;
        }
    }
}

static void b0_open(bench_client *cl)
{
    direct_open(cl, false);
}
static void b1_open(bench_client *cl)
{
    direct_open(cl, true);
}

static void direct_close(bench_client *cl)
{
    dclient *d = cl->impl;
    if (!d)
        return;
    for (int b = 0; b < d->nbr; b++)
        if (d->conn[b])
            px_conn_base(d->conn[b])->driver->close(d->conn[b]);
    free(d);
    cl->impl = NULL;
}

const bench_kind bench_b0_kind = {"B0", b0_open, direct_start, direct_close};
const bench_kind bench_b1_kind = {"B1", b1_open, direct_start, direct_close};
