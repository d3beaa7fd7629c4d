/*
 * Driver calls waited for (pxcall.h).
 */
#include "pxcall.h"

#include <stdlib.h>
#include <string.h>

void pxc_copy_result(px_result *dst, const px_result *src)
{
    size_t ncells = (size_t)src->nrows * src->ncols;
    memset(dst, 0, sizeof *dst);
    dst->rows_affected = src->rows_affected;
    dst->ncols = src->ncols;
    dst->nrows = src->nrows;
    dst->colnames = calloc((size_t)src->ncols + 1, sizeof *dst->colnames);
    dst->coltypes = calloc((size_t)src->ncols + 1, sizeof *dst->coltypes);
    dst->cells = calloc(ncells + 1, sizeof *dst->cells);
    assert_true(dst->colnames && dst->coltypes && dst->cells);
    for (int j = 0; j < src->ncols; j++) {
        dst->colnames[j] = strdup(src->colnames[j]);
        dst->coltypes[j] = src->coltypes[j];
    }
    for (size_t i = 0; i < ncells; i++)
        dst->cells[i] = src->cells[i] ? strdup(src->cells[i]) : NULL;
}

void pxc_reset(px_call *k)
{
    for (int i = 0; i < PXC_MAX_RES; i++)
        px_result_free(&k->res[i]);
    memset(k, 0, sizeof *k);
}

/* ---------------------------------------------------------------- recording */

static void record(px_call *k, const px_error *err)
{
    k->calls++;
    k->done = true;
    k->failed = err != NULL;
    if (err)
        k->err = *err;
}

void pxc_on_connect(px_conn *c, const px_error *err, void *arg)
{
    px_call *k = arg;
    record(k, err);
    k->conn = c;
    if (c && k->close_in_cb)
        px_conn_base(c)->driver->close(c);
}

void pxc_on_done(px_conn *c, const px_error *err, void *arg)
{
    record(arg, err);
}

void pxc_on_exec(px_conn *c, const px_error *err, int failed_index, const px_result *results,
                 int nresults, void *arg)
{
    px_call *k = arg;
    record(k, err);
    k->failed_index = failed_index;
    k->nresults = nresults;
    for (int i = 0; i < nresults && i < PXC_MAX_RES; i++)
        pxc_copy_result(&k->res[i], &results[i]);
    if (k->close_in_cb)
        px_conn_base(c)->driver->close(c);
}

void pxc_on_recover(px_conn *c, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    px_call *k = arg;
    record(k, err);
    k->nxids = n < PXC_MAX_XIDS ? n : PXC_MAX_XIDS;
    if (k->nxids)
        memcpy(k->xids, xids, k->nxids * sizeof *xids);
}

/* ---------------------------------------------------------------- one step, waited for */

void pxc_check_ok(const px_call *k)
{
    if (k->failed)
        fail_msg("unexpected error: %s: %s [%s %d]", px_errclass_name(k->err.cls), k->err.message,
                 k->err.sqlstate, k->err.code);
}

void pxc_wait(uv_loop_t *loop, px_call *k)
{
    tu_run_until(loop, &k->done, PXC_WAIT_MS);
    assert_int_equal(k->calls, 1);
}

px_conn *pxc_try_connect(uv_loop_t *loop, const px_driver *d, const px_target *t, px_call *k)
{
    pxc_reset(k);
    assert_int_equal(d->connect(loop, t, pxc_on_connect, k), 0);
    pxc_wait(loop, k);
    return k->conn;
}

px_conn *pxc_connect_ok(uv_loop_t *loop, const px_driver *d, const px_target *t)
{
    px_call k = {0};
    px_conn *c = pxc_try_connect(loop, d, t, &k);
    pxc_check_ok(&k);
    assert_non_null(c);
    assert_ptr_equal(px_conn_base(c)->driver, d);
    return c;
}

px_errclass pxc_exec(uv_loop_t *loop, px_conn *c, const px_stmt *s, int n, px_call *k)
{
    pxc_reset(k);
    assert_int_equal(px_conn_base(c)->driver->exec(c, s, n, pxc_on_exec, k), 0);
    pxc_wait(loop, k);
    return k->failed ? k->err.cls : PX_OK;
}

px_errclass pxc_xid(uv_loop_t *loop, pxc_xid_fn fn, px_conn *c, const px_xid *x, px_call *k)
{
    pxc_reset(k);
    assert_int_equal(fn(c, x, pxc_on_done, k), 0);
    pxc_wait(loop, k);
    return k->failed ? k->err.cls : PX_OK;
}

void pxc_xid_ok(uv_loop_t *loop, pxc_xid_fn fn, px_conn *c, const px_xid *x)
{
    px_call k = {0};
    pxc_xid(loop, fn, c, x, &k);
    if (k.failed)
        fail_msg("branch %s.%s: %s: %s [%s %d]", x->gtrid, x->bqual, px_errclass_name(k.err.cls),
                 k.err.message, k.err.sqlstate, k.err.code);
}

size_t pxc_recover_ok(uv_loop_t *loop, px_conn *c, const char *prefix, const char *bqual,
                      px_call *k)
{
    pxc_reset(k);
    assert_int_equal(px_conn_base(c)->driver->recover(c, prefix, bqual, pxc_on_recover, k), 0);
    pxc_wait(loop, k);
    pxc_check_ok(k);
    return k->nxids;
}

bool pxc_listed(const px_call *k, const px_xid *x)
{
    for (size_t i = 0; i < k->nxids; i++)
        if (strcmp(k->xids[i].gtrid, x->gtrid) == 0 && strcmp(k->xids[i].bqual, x->bqual) == 0)
            return true;
    return false;
}

/* ---------------------------------------------------------------- loop end */

static void on_drain_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
    uv_stop(t->loop);
}

/* The deadline timer is unreferenced, so it does not keep the loop alive. */
void pxc_finish(uv_loop_t *loop, const px_driver *d, px_conn **conns, int n)
{
    uv_timer_t deadline;
    bool expired = false;
    for (int i = 0; i < n; i++)
        if (conns[i])
            d->close(conns[i]);
    uv_timer_init(loop, &deadline);
    deadline.data = &expired;
    uv_timer_start(&deadline, on_drain_deadline, 10000, 0);
    uv_unref((uv_handle_t *)&deadline);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (expired)
        fail_msg("connections did not finish closing within 10 s");
    tu_loop_close(loop);
}
