/*
 * Driver calls waited for, for the driver tests: a px_call records what one callback reported,
 * copied out of the driver's memory (results are valid only inside the callback), and the
 * pxc_ functions start one operation and run the loop until its callback came, exactly once.
 */
#ifndef XA_PXCALL_H
#define XA_PXCALL_H

#include "testutil.h"

#define PXC_WAIT_MS 15000
#define PXC_MAX_RES 16
#define PXC_MAX_XIDS 64

typedef struct px_call {
    bool done;
    int calls;
    px_conn *conn;
    bool failed;
    px_error err;
    int failed_index, nresults;
    px_result res[PXC_MAX_RES];
    px_xid xids[PXC_MAX_XIDS];
    size_t nxids;
    bool close_in_cb; /* the connect or exec callback closes the connection */
} px_call;

/* Frees what k copied and clears it. */
void pxc_reset(px_call *k);

/* Callbacks that record into the px_call passed as arg. */
void pxc_on_connect(px_conn *c, const px_error *err, void *arg);
void pxc_on_done(px_conn *c, const px_error *err, void *arg);
void pxc_on_exec(px_conn *c, const px_error *err, int failed_index, const px_result *results,
                 int nresults, void *arg);
void pxc_on_recover(px_conn *c, const px_error *err, const px_xid *xids, size_t n, void *arg);

/* Fails the test with the error's class, message and codes when k reported one. */
void pxc_check_ok(const px_call *k);
/* Runs the loop until k's callback came; fails unless it came exactly once. */
void pxc_wait(uv_loop_t *loop, px_call *k);

px_conn *pxc_try_connect(uv_loop_t *loop, const px_driver *d, const px_target *t, px_call *k);
px_conn *pxc_connect_ok(uv_loop_t *loop, const px_driver *d, const px_target *t);
/* The class of the outcome (PX_OK on success); the details stay in k. */
px_errclass pxc_exec(uv_loop_t *loop, px_conn *c, const px_stmt *s, int n, px_call *k);

typedef int (*pxc_xid_fn)(px_conn *, const px_xid *, px_done_cb, void *);
px_errclass pxc_xid(uv_loop_t *loop, pxc_xid_fn fn, px_conn *c, const px_xid *x, px_call *k);
void pxc_xid_ok(uv_loop_t *loop, pxc_xid_fn fn, px_conn *c, const px_xid *x);
/* The number of branches listed (their XIDs in k->xids); fails on an error. */
size_t pxc_recover_ok(uv_loop_t *loop, px_conn *c, const char *prefix, const char *bqual,
                      px_call *k);
bool pxc_listed(const px_call *k, const px_xid *x);

/* Copies a result out of a driver's callback (px_result_free frees it). */
void pxc_copy_result(px_result *dst, const px_result *src);

/* Closes the n connections (NULLs skipped) with d, runs the loop until every handle they had is
 * closed (10 s at most) and checks that the loop closes cleanly: a leaked handle fails. */
void pxc_finish(uv_loop_t *loop, const px_driver *d, px_conn **conns, int n);

#endif
