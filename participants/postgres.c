/*
 * The PostgreSQL driver: participant.h implemented on libpq's asynchronous API, driven by a
 * uv_poll_t, a uv_timer_t and a uv_async_t per connection on the caller's loop. Nothing blocks:
 * the connection is made with PQconnectStartParams/PQconnectPoll, and after it every operation is a
 * libpq pipeline (extended protocol, one Sync at the end), so that BEGIN and all statements of a
 * branch leave in one round trip and the reply is read back as one batch. A branch is a plain
 * transaction block finished with PREPARE TRANSACTION '<gtrid>.<bqual>'; COMMIT/ROLLBACK PREPARED
 * may run on any connection of the same database. reset() only marks the session: DISCARD ALL and
 * the lock wait limit go out in front of the next BEGIN, in the same round trip. COMMIT/ROLLBACK
 * PREPARED and the recovery listing are no branch and never run in a session that a client's
 * statements left behind: on such a connection DISCARD ALL goes out in front of them, in the
 * same round trip too. Hosts must be numeric addresses (or socket paths): libpq resolves names
 * inside PQconnectPoll with a blocking getaddrinfo.
 */
#include "participant.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef LIBPQ_HAS_PIPELINING
#error "the PostgreSQL driver needs libpq >= 14 (pipeline mode)"
#endif

/* OIDs of built-in types; pg_type_d.h is a server header, and these values never change. */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define GID_MAX (2 * PX_XID_PART_MAX + 2)

typedef enum pg_op {
    OP_NONE = 0,
    OP_CONNECT,
    OP_EXEC,
    OP_BEGIN,
    OP_PREPARE,
    OP_ROLLBACK,
    OP_COMMIT_ONE_PHASE,
    OP_COMMIT_PREPARED,
    OP_ROLLBACK_PREPARED,
    OP_RECOVER,
    OP_RESET,
    OP_MARKER,
    OP_PRUNE,
} pg_op;

/* What one reply of the pipeline answers; values >= 0 are statement indexes of an exec.
 * ITEM_RESET: DISCARD ALL or the SET of the lock wait limit, sent in front of BEGIN, or DISCARD
 * ALL in front of COMMIT/ROLLBACK PREPARED or the recovery listing. */
enum { ITEM_BEGIN = -1, ITEM_CMD = -2, ITEM_RECOVER = -3, ITEM_RESET = -4, ITEM_MARKER = -5 };

/* Items that can precede an operation's own: DISCARD ALL, SET lock_timeout and BEGIN. */
#define PRELUDE_ITEMS 3

struct px_conn {
    struct px_conn_base base; /* first, so that generic code can cast */
    uv_loop_t *loop;
    PGconn *pg;
    uv_poll_t *poll; /* on the heap: libpq may switch sockets while connecting */
    int poll_fd;
    uv_timer_t timer; /* the connect timeout */
    uv_async_t wake;  /* reports an outcome known in advance, from the loop's poll phase */
    int open_handles; /* the connection is freed when the last one has closed */
    bool connected;
    bool closing;
    bool broken;
    bool want_write;    /* PQflush left data behind: also poll for writable */
    bool reset_pending; /* reset() was called: DISCARD ALL goes out in front of the next BEGIN */

    /* The session's state (see send_discard). dirty: a client's statement that may change the
     * session (not px_stmt.session_neutral) ran since the last DISCARD ALL, so the session may
     * hold its settings, role, temporary objects, locks.
     * settings_stale: the configured settings (lock_timeout) must be applied again - DISCARD ALL
     * dropped them, or the branch whose BEGIN carried them did not commit. settings_in_branch:
     * they went out in front of the open branch's BEGIN, inside its transaction, and a rollback
     * of the branch takes them back. */
    bool dirty;
    bool settings_stale;
    bool settings_in_branch;

    /* The branch open on this connection; BEGIN goes out with the first exec. */
    bool in_branch;
    bool begin_sent;
    px_xid xid;

    /* The operation in flight. */
    pg_op op;
    union {
        px_connect_cb connect;
        px_done_cb done;
        px_exec_cb exec;
        px_recover_cb recover;
        px_marker_cb marker;
    } cb;
    void *arg;
    bool deferred; /* the outcome is known: `wake` reports it on the next loop turn */
    int *items;    /* what each reply answers, in sending order */
    int nitems;
    int cur;      /* the item whose replies are being read */
    bool cur_got; /* cur has had a reply (the NULL after it moves to the next item) */
    int nstmts;
    int stmts_done;
    int64_t *expect;
    px_result *results;
    char bqual[PX_XID_PART_MAX + 1];
    px_xid *xids;
    size_t nxids, capxids;
    bool failed;
    int failed_index;
    px_error err;
    bool marker_found; /* OP_MARKER: the marker row was returned */
};

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);
static void on_wake(uv_async_t *a);
static void finish(px_conn *c);
static void pg_close(px_conn *c);

/* ------------------------------------------------------------------ errors */

/*
 * Error classification (SQLSTATE of the server's reply -> what the engine does):
 *
 *   22xxx data exception, 23xxx constraint violation  -> PX_BUSINESS
 *   42xxx syntax error or access rule, P0xxx raise     -> PX_BUSINESS
 *     but 42501 insufficient privilege                 -> PX_FATAL
 *     but 42704 on COMMIT/ROLLBACK PREPARED            -> PX_XID_NOT_FOUND
 *   40001 serialization failure, 40P01 deadlock        -> PX_RETRYABLE
 *   55P03 lock not available (lock_timeout)            -> PX_RETRYABLE
 *   53300 too many connections, 53200 out of memory    -> PX_RETRYABLE
 *   08P01 protocol violation (e.g. a parameter count   -> PX_BUSINESS
 *     that does not fit the SQL), other 08xxx          -> PX_RETRYABLE
 *   57P0x the server ends the session (shutdown,       -> PX_RETRYABLE, conn_broken
 *     starting, terminated)
 *   no reply at all (PQstatus CONNECTION_BAD)          -> PX_RETRYABLE, conn_broken
 *   55000, 0A000 and anything else                     -> PX_FATAL
 *   connect failures                                   -> PX_RETRYABLE ("server down"),
 *     but 28P01, 28000 (authentication), 3D000 (no such database) -> PX_FATAL
 * conn_broken never follows from the class alone: a session that the server keeps open
 * (PQstatus still CONNECTION_OK after the error) is still good, whatever the error was.
 */
static px_errclass classify(const char *st, bool xid_op)
{
    static const char *const retryable[] = {"40001", "40P01", "55P03", "53300", "53200"};
    if (!st || strlen(st) != 5)
        return PX_FATAL;
    if (strcmp(st, "42704") == 0 && xid_op)
        return PX_XID_NOT_FOUND;
    if (strcmp(st, "42501") == 0)
        return PX_FATAL;
    if (!strncmp(st, "22", 2) || !strncmp(st, "23", 2) || !strncmp(st, "42", 2) ||
        !strncmp(st, "P0", 2) || !strcmp(st, "08P01"))
        return PX_BUSINESS;
    for (size_t i = 0; i < sizeof retryable / sizeof retryable[0]; i++)
        if (strcmp(st, retryable[i]) == 0)
            return PX_RETRYABLE;
    if (!strncmp(st, "08", 2))
        return PX_RETRYABLE;
    return PX_FATAL;
}

/* The server ends this session after the error (57P01 admin shutdown, 57P02 crash shutdown,
 * 57P03 cannot connect now, ...): libpq may not have seen the socket close yet. */
static bool sqlstate_ends_session(const char *st)
{
    return !strncmp(st, "57P0", 4);
}

/* libpq messages span lines (DETAIL, HINT, LOCATION): keep one line, without the location. */
static void flatten(char *dst, size_t len, const char *src)
{
    size_t n = 0;
    bool space = false;
    const char *end = strstr(src, "LOCATION:");
    for (const char *p = src; *p && p != end && n + 1 < len; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r' || *p == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < len)
            dst[n++] = ' ';
        space = false;
        dst[n++] = *p;
    }
    dst[n] = '\0';
}

/* A password must never reach a message, even if some layer were to echo it. */
static void scrub(px_conn *c, char *msg)
{
    const char *pw = c->base.target->password;
    size_t pl = pw ? strlen(pw) : 0;
    char *hit;
    if (pl == 0)
        return;
    while ((hit = strstr(msg, pw)) != NULL) {
        memset(hit, '*', pl);
    }
}

/* Records the failure of the current operation. The lowest statement index wins: a bad
 * parameter is recorded before the earlier statements have answered. */
static void op_fail(px_conn *c, int index, px_errclass cls, bool broken, const char *sqlstate,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void op_fail(px_conn *c, int index, px_errclass cls, bool broken, const char *sqlstate,
                    const char *fmt, ...)
{
    va_list ap;
    char msg[sizeof c->err.message];
    if (broken)
        c->err.conn_broken = true;
    if (c->failed && index >= c->failed_index)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    scrub(c, msg);
    px_error_set(&c->err, cls, broken || c->err.conn_broken, 0, sqlstate, "%s", msg);
    c->failed = true;
    c->failed_index = index;
}

/* The connection is gone: whatever was in flight failed and nothing more will arrive. */
static void op_fail_lost(px_conn *c)
{
    char msg[256];
    int index = c->stmts_done;
    if (index >= c->nstmts)
        index = c->nstmts > 0 ? c->nstmts - 1 : 0;
    flatten(msg, sizeof msg, PQerrorMessage(c->pg));
    op_fail(c, index, PX_RETRYABLE, true, "", "connection lost: %s",
            *msg ? msg : "no reply from server");
}

static void op_fail_connect(px_conn *c)
{
    char msg[256], st[6] = "";
    const char *p = strstr(PQerrorMessage(c->pg), "FATAL:");
    px_errclass cls = PX_RETRYABLE;
    /* With PQERRORS_VERBOSE the server's SQLSTATE follows the severity: "FATAL:  28P01: ...". */
    if (p) {
        p += strlen("FATAL:");
        p += strspn(p, " ");
        if (strspn(p, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 5 && p[5] == ':')
            memcpy(st, p, 5);
    }
    if (!strcmp(st, "28P01") || !strcmp(st, "28000") || !strcmp(st, "3D000"))
        cls = PX_FATAL;
    flatten(msg, sizeof msg, PQerrorMessage(c->pg));
    op_fail(c, 0, cls, true, st, "%s%s", cls == PX_RETRYABLE ? "server down: " : "",
            *msg ? msg : "connection failed");
}

static void op_fail_result(px_conn *c, int index, const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    char msg[256];
    bool xid_op = c->op == OP_COMMIT_PREPARED || c->op == OP_ROLLBACK_PREPARED;
    bool lost = PQstatus(c->pg) == CONNECTION_BAD;
    flatten(msg, sizeof msg, primary ? primary : PQresultErrorMessage(r));
    if (!st || !*st) {
        op_fail(c, index, lost ? PX_RETRYABLE : PX_FATAL, lost, "", "%s",
                *msg ? msg : "unknown error");
        return;
    }
    if (lost || sqlstate_ends_session(st)) {
        op_fail(c, index, PX_RETRYABLE, true, st, "%s", msg);
        return;
    }
    op_fail(c, index, classify(st, xid_op), false, st, "%s", msg);
}

/* DISCARD ALL or SET failed in front of BEGIN, or DISCARD ALL in front of a phase-2 command or
 * the recovery listing: the session is not in the configured state, and nothing after it in the
 * pipeline ran. Retryable on another connection. */
static void op_fail_reset(px_conn *c, const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    char msg[256];
    flatten(msg, sizeof msg, primary ? primary : PQresultErrorMessage(r));
    op_fail(c, 0, PX_RETRYABLE, true, st ? st : "", "session reset failed: %s",
            *msg ? msg : "unknown error");
}

/* The branch's marker could not be written (the xacoord schema is missing, or not granted):
 * nothing is prepared, and the participant's setup - not the request - is at fault. */
static void op_fail_marker(px_conn *c, const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    char msg[200];
    flatten(msg, sizeof msg, primary ? primary : PQresultErrorMessage(r));
    op_fail(c, 0, PX_RETRYABLE, PQstatus(c->pg) == CONNECTION_BAD, st ? st : "",
            "cannot write the branch's marker (is the xacoord schema installed?): %s", msg);
}

/* --------------------------------------------------------------- handles */

static void on_closed(uv_handle_t *h)
{
    px_conn *c = h->data;
    if (h != (uv_handle_t *)&c->timer && h != (uv_handle_t *)&c->wake)
        free(h);
    if (--c->open_handles > 0)
        return;
    /* Every handle is closed: libpq may close its socket now. */
    PQfinish(c->pg);
    free(c->items);
    free(c->expect);
    for (int i = 0; c->results && i < c->nstmts; i++)
        px_result_free(&c->results[i]);
    free(c->results);
    free(c->xids);
    free(c);
}

static void stop_poll(px_conn *c)
{
    if (!c->poll)
        return;
    /* Once libpq has closed its socket, the fd number is free for anyone: close the handle now,
     * as closing it later would unregister whoever reused the number from epoll. */
    if (PQsocket(c->pg) != c->poll_fd) {
        uv_close((uv_handle_t *)c->poll, on_closed);
        c->poll = NULL;
        c->poll_fd = -1;
        return;
    }
    uv_poll_stop(c->poll);
}

/* Polls fd for events. A new fd number gets a new handle (the old one closes); the same number
 * is re-registered by the stop/start pair, since it may be a new socket. */
static int arm_poll(px_conn *c, int fd, int events)
{
    if (fd < 0)
        return UV_EBADF;
    if (c->poll && c->poll_fd != fd) {
        uv_close((uv_handle_t *)c->poll, on_closed);
        c->poll = NULL;
    }
    if (!c->poll) {
        uv_poll_t *p = malloc(sizeof *p);
        int rc;
        if (!p)
            return UV_ENOMEM;
        rc = uv_poll_init_socket(c->loop, p, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->data = c;
        c->poll = p;
        c->poll_fd = fd;
        c->open_handles++;
    }
    return uv_poll_start(c->poll, events, on_poll);
}

/* The outcome is already known: report it on the next loop turn, never from inside the
 * caller's call. An async wake-up rather than a zero timer: it is delivered in the poll phase,
 * so a caller running the loop with UV_RUN_ONCE sees it before that call returns. The handle
 * keeps the loop alive only while a report is pending. */
static void defer(px_conn *c)
{
    stop_poll(c);
    c->deferred = true;
    uv_ref((uv_handle_t *)&c->wake);
    uv_async_send(&c->wake);
}

static void on_wake(uv_async_t *a)
{
    px_conn *c = a->data;
    uv_unref((uv_handle_t *)a);
    if (c->closing || c->op == OP_NONE || !c->deferred)
        return;
    finish(c);
}

static void ignore_notice(void *arg, const char *message)
{
    /* Notices (e.g. "there is no transaction in progress") are not errors and have no reader. */
}

/* ------------------------------------------------------------- operations */

static void op_reset(px_conn *c)
{
    free(c->items);
    free(c->expect);
    c->items = NULL;
    c->expect = NULL;
    c->results = NULL;
    c->xids = NULL;
    c->nitems = c->cur = c->nstmts = c->stmts_done = 0;
    c->nxids = c->capxids = 0;
    c->cur_got = c->deferred = c->failed = c->want_write = c->marker_found = false;
    c->failed_index = 0;
    memset(&c->err, 0, sizeof c->err);
    c->op = OP_NONE;
}

static int op_start(px_conn *c, pg_op op, int max_items, void *arg)
{
    if (c->op != OP_NONE)
        return -EBUSY;
    if (c->closing)
        return -EINVAL;
    c->items = malloc(((size_t)max_items + PRELUDE_ITEMS) * sizeof *c->items);
    if (!c->items)
        return -ENOMEM;
    c->op = op;
    c->arg = arg;
    return 0;
}

static bool pg_lost(px_conn *c)
{
    return PQstatus(c->pg) == CONNECTION_BAD;
}

static void send_failed(px_conn *c)
{
    char msg[256];
    if (pg_lost(c)) {
        op_fail_lost(c);
        return;
    }
    flatten(msg, sizeof msg, PQerrorMessage(c->pg));
    /* Part of a pipeline may have gone out: the session state is unknown. */
    op_fail(c, c->nstmts > 0 ? c->nstmts - 1 : 0, PX_FATAL, true, "", "send failed: %s", msg);
}

static bool send_query(px_conn *c, int item, const char *sql, int n, const char *const *values)
{
    if (!PQsendQueryParams(c->pg, sql, n, NULL, values, NULL, NULL, 0)) {
        send_failed(c);
        return false;
    }
    c->items[c->nitems++] = item;
    return true;
}

/* Sends the Sync that ends the pipeline and starts reading its replies. */
static void sync_and_flush(px_conn *c)
{
    int rc;
    if (!PQpipelineSync(c->pg)) {
        send_failed(c);
        defer(c);
        return;
    }
    rc = PQflush(c->pg);
    if (rc < 0) {
        send_failed(c);
        defer(c);
        return;
    }
    c->want_write = rc == 1;
    rc = arm_poll(c, PQsocket(c->pg), UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
    if (rc < 0) {
        op_fail(c, 0, PX_FATAL, true, "", "cannot poll the socket: %s", uv_strerror(rc));
        defer(c);
    }
}

static void lock_timeout_sql(const px_conn *c, char *buf, size_t len)
{
    snprintf(buf, len, "SET lock_timeout = '%" PRIu32 "ms'", c->base.target->lock_timeout_ms);
}

/*
 * Session hygiene. A client's statements can change the session (set_config(), a role, advisory
 * locks, temporary objects, ...); DISCARD ALL undoes all of it. It must be the first message
 * after a Sync - PostgreSQL refuses it "within a pipeline" once another statement ran in the
 * same segment - and it commits at once by itself (PostgreSQL 15: a later rollback does not bring
 * the old state back), after which COMMIT/ROLLBACK PREPARED may still follow in the same segment
 * (after any other statement they too are refused "within a pipeline"). So every operation
 * starts a new segment, and the prelude is the first thing it sends: one round trip, one Sync.
 * The flags change when the message is queued: if it then fails, the operation fails with
 * conn_broken and the connection is not used again.
 */
static bool send_discard(px_conn *c)
{
    if (!send_query(c, ITEM_RESET, "DISCARD ALL", 0, NULL))
        return false;
    c->dirty = false;
    c->reset_pending = false;
    c->settings_stale = true;
    return true;
}

/* In front of COMMIT/ROLLBACK PREPARED and the recovery listing, which are no branch: they run on
 * whatever connection the engine holds - the one that ran the branch's statements and its
 * PREPARE, or one lent with its reset still pending - and must not run in a session that a
 * client's statements changed (a role that does not own the prepared transaction, a search_path
 * that finds a temporary view named pg_prepared_xacts first, a statement_timeout). A clean
 * session sends nothing. The lock wait limit is not needed here: it goes out with the next
 * BEGIN. */
static bool send_clean_session(px_conn *c)
{
    return !c->dirty || send_discard(c);
}

/* Sends the branch's BEGIN, preceded by the session reset that reset() left pending (DISCARD
 * ALL, when a client's statements ran since the last one) and by the lock wait limit, when the
 * session does not carry it. That SET travels inside the branch's transaction (BEGIN turns the
 * segment's implicit transaction into the block): it stays when the branch prepares or commits,
 * and is sent again after a rollback (finish_branch_state). A connection that never had reset
 * called - the owner's lock session - keeps its state. */
static bool send_begin(px_conn *c)
{
    char sql[64];
    if (c->reset_pending && c->dirty && !send_discard(c))
        return false;
    c->reset_pending = false;
    if (c->settings_stale && c->base.target->lock_timeout_ms > 0) {
        lock_timeout_sql(c, sql, sizeof sql);
        if (!send_query(c, ITEM_RESET, sql, 0, NULL))
            return false;
        c->settings_stale = false;
        c->settings_in_branch = true;
    }
    if (!send_query(c, ITEM_BEGIN, "BEGIN", 0, NULL))
        return false;
    c->begin_sent = true;
    return true;
}

static const char *trans_status_name(PGTransactionStatusType st)
{
    switch (st) {
    case PQTRANS_IDLE:
        return "idle";
    case PQTRANS_ACTIVE:
        return "active";
    case PQTRANS_INTRANS:
        return "in transaction";
    case PQTRANS_INERROR:
        return "failed transaction";
    default:
        return "unknown";
    }
}

/* The client's SQL can end the transaction block the driver began (COMMIT, ROLLBACK, END,
 * PREPARE TRANSACTION): what the driver would prepare or commit next is then not the branch.
 * The session state is unknown from here on. */
static void fail_branch_ended(px_conn *c, int index, const char *what)
{
    op_fail(c, index, PX_BUSINESS, true, "",
            "the branch's transaction was ended by a statement (%s)", what);
}

/* Whether the transaction block the driver began is still open (INERROR after a statement
 * failed); when it is not, the operation fails at index. */
static bool branch_still_open(px_conn *c, int index, bool failed)
{
    PGTransactionStatusType st = PQtransactionStatus(c->pg);
    char what[64];
    if (st == PQTRANS_INTRANS || (failed && st == PQTRANS_INERROR))
        return true;
    snprintf(what, sizeof what, "transaction status %s", trans_status_name(st));
    fail_branch_ended(c, index, what);
    return false;
}

/* The branch's marker row, inside the branch, right before PREPARE: it commits or rolls back
 * with the branch's work (marker_exists). The gid holds only [a-z0-9._] (xid_ok): the literals
 * are safe. */
static bool send_marker(px_conn *c)
{
    char sql[2 * PX_XID_PART_MAX + 96];
    snprintf(sql, sizeof sql, "INSERT INTO xacoord.marker (gtrid, bqual) VALUES ('%s', '%s')",
             c->xid.gtrid, c->xid.bqual);
    return send_query(c, ITEM_MARKER, sql, 0, NULL);
}

/* Starts a pipeline of BEGIN (when the branch has not sent it yet, and `with_begin`) or the
 * clean-session prelude (`clean`: phase 2) and one command, for the operations that take no
 * parameters. */
static void run_command(px_conn *c, bool with_begin, bool clean, const char *sql)
{
    if (c->broken) {
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
        defer(c);
        return;
    }
    /* PREPARE or COMMIT must not act on a transaction that is not the branch's. */
    if (with_begin && c->begin_sent && !branch_still_open(c, 0, true)) {
        defer(c);
        return;
    }
    if (with_begin && c->in_branch && !c->begin_sent && !send_begin(c)) {
        defer(c);
        return;
    }
    /* The prepared transaction belongs to the current role, and only its owner (or a superuser)
     * can finish it: a statement's set_config('role', ...) must not hand the branch to a role the
     * coordinator cannot act as. Only statements that may change the session can (dirty). (A
     * failed transaction refuses any command: its PREPARE answers ROLLBACK, which take_result
     * reports.) */
    if (c->op == OP_PREPARE && c->dirty && PQtransactionStatus(c->pg) != PQTRANS_INERROR &&
        !send_query(c, ITEM_RESET, "SET LOCAL ROLE NONE", 0, NULL)) {
        defer(c);
        return;
    }
    if (c->op == OP_PREPARE && !c->base.target->without_markers &&
        PQtransactionStatus(c->pg) != PQTRANS_INERROR && !send_marker(c)) {
        defer(c);
        return;
    }
    if (clean && !send_clean_session(c)) {
        defer(c);
        return;
    }
    if (!send_query(c, ITEM_CMD, sql, 0, NULL)) {
        defer(c);
        return;
    }
    sync_and_flush(c);
}

/* --------------------------------------------------------------- results */

static px_coltype coltype(Oid oid)
{
    switch (oid) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        return PX_COL_INT;
    case OID_FLOAT4:
    case OID_FLOAT8:
        return PX_COL_REAL;
    case OID_NUMERIC:
        return PX_COL_DECIMAL;
    case OID_BOOL:
        return PX_COL_BOOL;
    case OID_BYTEA:
        return PX_COL_BINARY;
    default:
        return PX_COL_TEXT;
    }
}

/* One cell in the form its column type names (participant.h). Numbers keep the server's text:
 * PostgreSQL prints numeric exactly, and floats (extra_float_digits >= 1, the default since 12)
 * as the shortest text that reads back the same, spelling NaN, Infinity and -Infinity as the
 * header does. NULL when out of memory. */
static char *cell_text(px_coltype type, const char *v)
{
    unsigned char *bytes;
    size_t len;
    char *out;
    switch (type) {
    case PX_COL_BOOL:
        return strdup(v[0] == 't' ? "true" : "false");
    case PX_COL_BINARY:
        /* The text form is \x<hex> (or the old escape form, if a session asked for it). */
        bytes = PQunescapeBytea((const unsigned char *)v, &len);
        out = bytes ? px_base64(bytes, len) : NULL;
        PQfreemem(bytes);
        return out;
    default:
        return strdup(v);
    }
}

static bool copy_rows(px_result *out, const PGresult *r)
{
    int ncols = PQnfields(r), nrows = PQntuples(r);
    size_t cols = ncols > 0 ? (size_t)ncols : 0, rows = nrows > 0 ? (size_t)nrows : 0;
    out->ncols = ncols;
    out->nrows = nrows;
    out->colnames = calloc(cols + 1, sizeof *out->colnames);
    out->coltypes = calloc(cols + 1, sizeof *out->coltypes);
    out->cells = calloc(rows * cols + 1, sizeof *out->cells);
    if (!out->colnames || !out->coltypes || !out->cells)
        return false;
    for (int j = 0; j < ncols; j++) {
        out->coltypes[j] = coltype(PQftype(r, j));
        if (!(out->colnames[j] = strdup(PQfname(r, j))))
            return false;
    }
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++) {
            char **cell = &out->cells[(size_t)i * ncols + j];
            if (PQgetisnull(r, i, j))
                continue;
            if (!(*cell = cell_text(out->coltypes[j], PQgetvalue(r, i, j))))
                return false;
        }
    return true;
}

/* After ROLLBACK or COMMIT, a BEGIN opens a new transaction block that the status check at the
 * Sync cannot tell from the branch's own: the command tag gives it away. A BEGIN inside the
 * open block changes nothing, but it is the client's transaction control all the same. */
static void check_no_begin(px_conn *c, int index, const PGresult *r)
{
    const char *tag = PQcmdStatus((PGresult *)r);
    char what[64];
    if (c->begin_sent && (!strcmp(tag, "BEGIN") || !strcmp(tag, "START TRANSACTION"))) {
        snprintf(what, sizeof what, "command %s", tag);
        fail_branch_ended(c, index, what);
    }
}

/* At the Sync of an exec inside the branch, where the transaction status is the server's. */
static void check_branch_open(px_conn *c)
{
    if (c->op == OP_EXEC && c->begin_sent)
        (void)branch_still_open(c, c->nstmts > 0 ? c->nstmts - 1 : 0, c->failed);
}

static void take_stmt_result(px_conn *c, int index, const PGresult *r)
{
    px_result *out = &c->results[index];
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK) {
        out->rows_affected = strtoll(PQcmdTuples((PGresult *)r), NULL, 10);
        check_no_begin(c, index, r);
    } else if (st == PGRES_TUPLES_OK) {
        out->rows_affected = PQntuples(r);
        if (!copy_rows(out, r)) {
            op_fail(c, index, PX_FATAL, false, "", "out of memory");
            return;
        }
    } else {
        op_fail(c, index, PX_FATAL, false, "", "unsupported reply %s", PQresStatus(st));
        return;
    }
    c->stmts_done = index + 1;
    if (c->expect[index] >= 0 && out->rows_affected != c->expect[index]) {
        op_fail(c, index, PX_BUSINESS, false, "", "expected %" PRId64 " rows, got %" PRId64,
                c->expect[index], out->rows_affected);
        if (c->failed_index == index)
            c->err.rows_mismatch = true;
    }
}

static void take_recover_result(px_conn *c, const PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        px_xid x;
        if (px_xid_parse_gid(&x, PQgetvalue(r, i, 0)) != 0 || strcmp(x.bqual, c->bqual) != 0)
            continue;
        if (c->nxids == c->capxids) {
            size_t cap = c->capxids ? 2 * c->capxids : 16;
            px_xid *n = realloc(c->xids, cap * sizeof *n);
            if (!n) {
                op_fail(c, 0, PX_FATAL, false, "", "out of memory");
                return;
            }
            c->xids = n;
            c->capxids = cap;
        }
        c->xids[c->nxids++] = x;
    }
}

static void take_result(px_conn *c, int item, const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    int index = item >= 0 ? item : (c->op == OP_EXEC ? c->stmts_done : 0);
    if (item == ITEM_RESET && st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_ABORTED) {
        op_fail_reset(c, r);
        return;
    }
    if (item == ITEM_MARKER && c->op == OP_PREPARE && st != PGRES_COMMAND_OK &&
        st != PGRES_PIPELINE_ABORTED) {
        op_fail_marker(c, r);
        return;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        op_fail_result(c, index, r);
        return;
    }
    if (st == PGRES_COPY_OUT || st == PGRES_COPY_IN || st == PGRES_COPY_BOTH) {
        /* libpq is in COPY mode now and returns nothing else: the connection is done for. */
        op_fail(c, index, PX_BUSINESS, true, "", "COPY is not supported");
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        /* Only after an error that was already recorded. */
        op_fail(c, index, PX_FATAL, false, "", "pipeline aborted");
        return;
    }
    if (item >= 0) {
        take_stmt_result(c, item, r);
    } else if (item == ITEM_MARKER && st == PGRES_TUPLES_OK) {
        c->marker_found = PQntuples(r) > 0;
    } else if (item == ITEM_RECOVER && st == PGRES_TUPLES_OK) {
        take_recover_result(c, r);
    } else if (st != PGRES_COMMAND_OK) {
        op_fail(c, index, PX_FATAL, false, "", "unexpected reply %s", PQresStatus(st));
    } else if (item == ITEM_CMD && (c->op == OP_PREPARE || c->op == OP_COMMIT_ONE_PHASE) &&
               strcmp(PQcmdStatus((PGresult *)r), "ROLLBACK") == 0) {
        /* The server's answer to PREPARE or COMMIT in a failed transaction: nothing was kept. */
        op_fail(c, 0, PX_BUSINESS, false, "", "the transaction had failed and was rolled back");
    }
}

/* Reads every reply that is complete; the operation ends at the pipeline's Sync. Every turn
 * either consumes a reply on the way to the Sync or leaves the loop: a reply that makes the
 * session unusable ends the operation at once, since the Sync may never be read - in COPY mode
 * libpq returns a new COPY result on every call, never NULL. */
static void drain(px_conn *c)
{
    bool idle_seen = false;
    while (!pg_lost(c) && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            /* A NULL before any reply of the item: libpq stepping its queue; a second one
             * means nothing is buffered yet. */
            if (!c->cur_got) {
                if (idle_seen)
                    break;
                idle_seen = true;
                continue;
            }
            c->cur++;
            c->cur_got = false;
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            check_branch_open(c);
            finish(c);
            return;
        }
        if (c->cur < c->nitems)
            take_result(c, c->items[c->cur], r);
        else
            op_fail(c, c->nstmts > 0 ? c->nstmts - 1 : 0, PX_FATAL, true, "", "unexpected reply %s",
                    PQresStatus(PQresultStatus(r)));
        c->cur_got = true;
        PQclear(r);
        if (c->err.conn_broken) {
            finish(c);
            return;
        }
    }
    if (pg_lost(c)) {
        stop_poll(c);
        op_fail_lost(c);
        finish(c);
    }
}

static void io_event(px_conn *c, int status, int events)
{
    bool was_writing = c->want_write;
    if ((status < 0 || (events & (UV_READABLE | UV_DISCONNECT))) && !PQconsumeInput(c->pg)) {
        stop_poll(c);
        op_fail_lost(c);
        finish(c);
        return;
    }
    if (c->want_write) {
        int rc = PQflush(c->pg);
        if (rc < 0) {
            stop_poll(c);
            op_fail_lost(c);
            finish(c);
            return;
        }
        c->want_write = rc == 1;
    }
    /* libuv stops the handle after an error event: arm it again, the next read tells more. */
    if (status < 0 || was_writing != c->want_write)
        (void)arm_poll(c, c->poll_fd, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
    drain(c);
}

/* -------------------------------------------------------------- connecting */

static void connected(px_conn *c)
{
    char sql[64];
    const px_target *t = c->base.target;
    c->connected = true;
    PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        op_fail(c, 0, PX_FATAL, true, "", "cannot enter pipeline mode");
        finish(c);
        return;
    }
    if (t->lock_timeout_ms == 0) {
        finish(c);
        return;
    }
    lock_timeout_sql(c, sql, sizeof sql);
    run_command(c, false, false, sql);
}

/* One step of libpq's connection state machine. The poll handle is stopped first: libpq may
 * close the socket and open another one, possibly with the same fd number. */
static void connect_step(px_conn *c)
{
    PostgresPollingStatusType st;
    int rc;
    stop_poll(c);
    st = PQconnectPoll(c->pg);
    if (st == PGRES_POLLING_OK) {
        connected(c);
        return;
    }
    if (st == PGRES_POLLING_FAILED) {
        op_fail_connect(c);
        finish(c);
        return;
    }
    rc = arm_poll(c, PQsocket(c->pg), st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
    if (rc < 0) {
        op_fail(c, 0, PX_FATAL, true, "", "cannot poll the socket: %s", uv_strerror(rc));
        finish(c);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    px_conn *c = h->data;
    if (c->closing || c->op == OP_NONE || c->deferred || h != c->poll) {
        uv_poll_stop(h);
        return;
    }
    /* An error (EPOLLERR arrives as UV_EBADF) still goes to libpq, which reads SO_ERROR. */
    if (!c->connected)
        connect_step(c);
    else
        io_event(c, status, events);
}

static void on_timer(uv_timer_t *t)
{
    px_conn *c = t->data;
    if (c->closing || c->op != OP_CONNECT || c->deferred)
        return;
    op_fail(c, 0, PX_RETRYABLE, true, "", "connect timeout after %" PRIu32 " ms",
            c->base.target->connect_timeout_ms ? c->base.target->connect_timeout_ms
                                               : DEFAULT_CONNECT_TIMEOUT_MS);
    defer(c);
}

/* Name lookup inside PQconnectPoll would block the loop: accept numeric addresses and socket
 * directories only (or any host when hostaddr gives the address). */
static bool hosts_numeric(const char *hosts)
{
    char buf[256];
    const char *p = hosts;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        unsigned char addr[16];
        if (n >= sizeof buf)
            return false;
        memcpy(buf, p, n);
        buf[n] = '\0';
        if (n > 0 && buf[0] != '/' && buf[0] != '@' && inet_pton(AF_INET, buf, addr) != 1 &&
            inet_pton(AF_INET6, buf, addr) != 1)
            return false;
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

/* Expands the conninfo into keyword arrays and adds the password, which never travels in the
 * conninfo string. The arrays point into *opts. */
static int connect_params(const px_target *t, PQconninfoOption **opts, const char ***kw,
                          const char ***val)
{
    size_t n = 0, k = 0;
    const char *host = NULL, *hostaddr = NULL;
    bool has_app = false, has_enc = false;
    char *errmsg = NULL;
    *opts = PQconninfoParse(t->conninfo ? t->conninfo : "", &errmsg);
    if (!*opts) {
        PQfreemem(errmsg);
        return -EINVAL;
    }
    for (PQconninfoOption *o = *opts; o->keyword; o++)
        n++;
    *kw = calloc(n + 4, sizeof **kw);
    *val = calloc(n + 4, sizeof **val);
    if (!*kw || !*val)
        return -ENOMEM;
    for (PQconninfoOption *o = *opts; o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "password") == 0)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        has_app |= strcmp(o->keyword, "application_name") == 0;
        has_enc |= strcmp(o->keyword, "client_encoding") == 0;
        (*kw)[k] = o->keyword;
        (*val)[k++] = o->val;
    }
    if (!hostaddr && !hosts_numeric(host))
        return -EINVAL;
    if (t->password) {
        (*kw)[k] = "password";
        (*val)[k++] = t->password;
    }
    if (!has_app) {
        (*kw)[k] = "fallback_application_name";
        (*val)[k++] = "xacoord";
    }
    /* Parameters arrive as UTF-8 (JSON): the server converts them to the database encoding. */
    if (!has_enc) {
        (*kw)[k] = "client_encoding";
        (*val)[k++] = "UTF8";
    }
    return 0;
}

static int pg_connect(uv_loop_t *loop, const px_target *t, px_connect_cb cb, void *arg)
{
    PQconninfoOption *opts = NULL;
    const char **kw = NULL, **val = NULL;
    px_conn *c;
    int rc;
    if (!loop || !t || !cb)
        return -EINVAL;
    rc = connect_params(t, &opts, &kw, &val);
    c = rc == 0 ? calloc(1, sizeof *c) : NULL;
    if (rc == 0 && !c)
        rc = -ENOMEM;
    if (rc == 0) {
        c->pg = PQconnectStartParams(kw, val, 0);
        if (!c->pg) {
            free(c);
            rc = -ENOMEM;
        }
    }
    free(kw);
    free(val);
    PQconninfoFree(opts);
    if (rc < 0)
        return rc;

    c->base.driver = &px_postgres_driver;
    c->base.target = t;
    c->loop = loop;
    c->poll_fd = -1;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_async_init(loop, &c->wake, on_wake);
    c->wake.data = c;
    uv_unref((uv_handle_t *)&c->wake);
    c->open_handles = 2;
    op_start(c, OP_CONNECT, 1, arg);
    c->cb.connect = cb;
    if (!c->items) {
        pg_close(c);
        return -ENOMEM;
    }
    PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    /* Verbose errors carry the SQLSTATE, the only way to tell an auth failure at connect. */
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        op_fail_connect(c);
        defer(c);
        return 0;
    }
    uv_timer_start(&c->timer, on_timer,
                   t->connect_timeout_ms ? t->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS, 0);
    /* libpq's rule: before the first PQconnectPoll, act as if it had returned WRITING. */
    rc = arm_poll(c, PQsocket(c->pg), UV_WRITABLE);
    if (rc < 0) {
        op_fail(c, 0, PX_FATAL, true, "", "cannot poll the socket: %s", uv_strerror(rc));
        defer(c);
    }
    return 0;
}

/* ------------------------------------------------------------- completion */

static void finish_branch_state(px_conn *c, pg_op op, bool failed)
{
    /* PREPARE, COMMIT and ROLLBACK end the transaction block even when they fail. A lock wait
     * limit sent in front of the branch's BEGIN stays only if the transaction was kept. */
    if (op == OP_PREPARE || op == OP_COMMIT_ONE_PHASE || op == OP_ROLLBACK) {
        if (c->settings_in_branch && (failed || op == OP_ROLLBACK))
            c->settings_stale = true;
        c->settings_in_branch = false;
        c->in_branch = false;
        c->begin_sent = false;
    }
}

/* Reports the operation's outcome. The caller returns right after: the callback may have
 * started the next operation or closed the connection. */
static void finish(px_conn *c)
{
    pg_op op = c->op;
    void *arg = c->arg;
    px_error err = c->err;
    bool failed = c->failed;
    int failed_index = c->failed_index, nstmts = c->nstmts;
    px_result *results = c->results;
    px_xid *xids = c->xids;
    size_t nxids = c->nxids;
    const px_error *e = failed ? &err : NULL;
    uv_timer_stop(&c->timer);
    stop_poll(c);
    if (failed && err.conn_broken)
        c->broken = true;
    finish_branch_state(c, op, failed);
    switch (op) {
    case OP_CONNECT: {
        px_connect_cb cb = c->cb.connect;
        op_reset(c);
        if (failed) {
            cb(NULL, e, arg);
            pg_close(c);
        } else {
            cb(c, NULL, arg);
        }
        break;
    }
    case OP_EXEC: {
        px_exec_cb cb = c->cb.exec;
        op_reset(c);
        cb(c, e, failed ? failed_index : -1, results, failed ? failed_index : nstmts, arg);
        break;
    }
    case OP_RECOVER: {
        px_recover_cb cb = c->cb.recover;
        op_reset(c);
        cb(c, e, failed ? NULL : xids, failed ? 0 : nxids, arg);
        break;
    }
    case OP_MARKER: {
        px_marker_cb cb = c->cb.marker;
        bool found = c->marker_found;
        op_reset(c);
        cb(c, e, !failed && found, arg);
        break;
    }
    case OP_NONE:
        break;
    default: {
        px_done_cb cb = c->cb.done;
        op_reset(c);
        cb(c, e, arg);
        break;
    }
    }
    for (int i = 0; results && i < nstmts; i++)
        px_result_free(&results[i]);
    free(results);
    free(xids);
}

/* ------------------------------------------------------------ the driver */

static bool params_valid(const px_stmt *s)
{
    if (!s->sql || s->nparams < 0 || (s->nparams > 0 && !s->params))
        return false;
    for (int p = 0; p < s->nparams; p++)
        if (s->params[p].type == PX_P_TEXT && !s->params[p].text && s->params[p].len > 0)
            return false;
    return true;
}

/* Sends one statement with its parameters in text format (libpq copies them). */
static bool send_stmt(px_conn *c, int index, const px_stmt *s)
{
    int n = s->nparams;
    size_t cap = n > 0 ? (size_t)n : 1;
    const char **values = calloc(cap, sizeof *values);
    char **owned = calloc(cap, sizeof *owned);
    bool ok = values && owned;
    for (int p = 0; ok && p < n; p++) {
        const px_param *pa = &s->params[p];
        switch (pa->type) {
        case PX_P_NULL:
            break;
        case PX_P_BOOL:
            values[p] = pa->b ? "true" : "false";
            break;
        case PX_P_INT:
            ok = asprintf(&owned[p], "%" PRId64, pa->i) >= 0;
            break;
        case PX_P_REAL:
            ok = asprintf(&owned[p], "%.17g", pa->r) >= 0;
            break;
        case PX_P_TEXT:
            ok = (owned[p] = malloc(pa->len + 1)) != NULL;
            if (ok) {
                if (pa->len)
                    memcpy(owned[p], pa->text, pa->len);
                owned[p][pa->len] = '\0';
            }
            break;
        }
        if (!ok)
            owned[p] = NULL;
        if (owned[p])
            values[p] = owned[p];
    }
    if (!ok)
        op_fail(c, index, PX_FATAL, false, "", "out of memory");
    else
        ok = send_query(c, index, s->sql, n, values);
    for (int p = 0; owned && p < n; p++)
        free(owned[p]);
    free(owned);
    free(values);
    return ok;
}

/* The index (1-based) of the first text parameter with a NUL byte, or 0. */
static int nul_param(const px_stmt *s)
{
    for (int p = 0; p < s->nparams; p++)
        if (s->params[p].type == PX_P_TEXT && s->params[p].len &&
            memchr(s->params[p].text, '\0', s->params[p].len))
            return p + 1;
    return 0;
}

static int pg_exec(px_conn *c, const px_stmt *stmts, int n, px_exec_cb cb, void *arg)
{
    int rc;
    if (!c || !cb || n < 0 || (n > 0 && !stmts))
        return -EINVAL;
    if (c->op != OP_NONE)
        return -EBUSY;
    for (int i = 0; i < n; i++)
        if (!params_valid(&stmts[i]))
            return -EINVAL;
    if ((rc = op_start(c, OP_EXEC, n, arg)) < 0)
        return rc;
    c->cb.exec = cb;
    c->nstmts = n;
    c->expect = malloc((n > 0 ? (size_t)n : 1) * sizeof *c->expect);
    c->results = calloc(n > 0 ? (size_t)n : 1, sizeof *c->results);
    if (!c->expect || !c->results) {
        free(c->results);
        op_reset(c);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++)
        c->expect[i] = stmts[i].expect_rows;
    if (c->broken) {
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
        defer(c);
        return 0;
    }
    if (c->in_branch && !c->begin_sent && !send_begin(c)) {
        defer(c);
        return 0;
    }
    /* Whatever the statements do to the session stays until a DISCARD ALL. */
    for (int i = 0; i < n; i++)
        c->dirty |= !stmts[i].session_neutral;
    for (int i = 0; i < n; i++) {
        int bad = nul_param(&stmts[i]);
        if (bad) {
            /* The statements before it still run, so that their results are real. */
            op_fail(c, i, PX_BUSINESS, false, "", "parameter %d contains a NUL byte", bad);
            break;
        }
        if (!send_stmt(c, i, &stmts[i])) {
            defer(c);
            return 0;
        }
    }
    sync_and_flush(c);
    return 0;
}

/* Copies x after checking it again: only [a-z0-9._] may be spliced into SQL text below. */
static bool xid_ok(const px_xid *x, px_xid *out)
{
    return x && px_xid_set(out, x->gtrid, x->bqual) == 0;
}

static int pg_begin(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    px_xid v;
    int rc;
    if (!c || !cb || !xid_ok(x, &v))
        return -EINVAL;
    if (c->op != OP_NONE)
        return -EBUSY;
    if (c->in_branch)
        return -EINVAL;
    if ((rc = op_start(c, OP_BEGIN, 1, arg)) < 0)
        return rc;
    c->cb.done = cb;
    if (c->broken) {
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
    } else {
        /* Nothing is sent: BEGIN travels with the first exec. */
        c->xid = v;
        c->in_branch = true;
        c->begin_sent = false;
    }
    defer(c);
    return 0;
}

/* Runs one command naming the branch's gid. */
static int gid_command(px_conn *c, pg_op op, const px_xid *x, const char *verb, bool with_begin,
                       bool clean, px_done_cb cb, void *arg)
{
    char gid[GID_MAX], sql[GID_MAX + 64];
    px_xid v;
    int rc;
    if (!c || !cb || !xid_ok(x, &v))
        return -EINVAL;
    if (c->op != OP_NONE)
        return -EBUSY;
    if ((rc = op_start(c, op, 3, arg)) < 0) /* SET LOCAL ROLE NONE, the marker, the command */
        return rc;
    c->cb.done = cb;
    px_xid_gid(&v, gid, sizeof gid);
    /* The gid holds only [a-z0-9._] (checked by xid_ok): splicing it into a literal is safe. */
    snprintf(sql, sizeof sql, "%s '%s'", verb, gid);
    run_command(c, with_begin, clean, sql);
    return 0;
}

static int pg_prepare(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    if (c && c->op == OP_NONE && !c->in_branch)
        return -EINVAL;
    return gid_command(c, OP_PREPARE, x, "PREPARE TRANSACTION", true, false, cb, arg);
}

static int pg_commit_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    /* COMMIT PREPARED cannot run inside a transaction block. */
    if (c && c->op == OP_NONE && c->in_branch)
        return -EINVAL;
    return gid_command(c, OP_COMMIT_PREPARED, x, "COMMIT PREPARED", false, true, cb, arg);
}

static int pg_rollback_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    if (c && c->op == OP_NONE && c->in_branch)
        return -EINVAL;
    return gid_command(c, OP_ROLLBACK_PREPARED, x, "ROLLBACK PREPARED", false, true, cb, arg);
}

static int simple_command(px_conn *c, pg_op op, const char *sql, bool with_begin, px_done_cb cb,
                          void *arg)
{
    int rc;
    if (!c || !cb)
        return -EINVAL;
    if ((rc = op_start(c, op, 1, arg)) < 0)
        return rc;
    c->cb.done = cb;
    run_command(c, with_begin, false, sql);
    return 0;
}

/* Always sent, even when BEGIN never went out: a ROLLBACK outside a transaction block is
 * harmless and leaves the session clean after any failure. The XID names nothing in the SQL;
 * it is checked all the same, so that every driver refuses the same calls. */
static int pg_rollback(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    if (px_xid_check(x) != 0)
        return -EINVAL;
    return simple_command(c, OP_ROLLBACK, "ROLLBACK", false, cb, arg);
}

static int pg_commit_one_phase(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    if (px_xid_check(x) != 0 || (c && c->op == OP_NONE && !c->in_branch))
        return -EINVAL;
    return simple_command(c, OP_COMMIT_ONE_PHASE, "COMMIT", true, cb, arg);
}

static int pg_recover(px_conn *c, const char *gtrid_prefix, const char *bqual, px_recover_cb cb,
                      void *arg)
{
    const char *values[1];
    int rc;
    if (!c || !cb || !gtrid_prefix || !bqual || strlen(bqual) > PX_XID_PART_MAX)
        return -EINVAL;
    if (c->op != OP_NONE)
        return -EBUSY;
    if (c->in_branch)
        return -EINVAL;
    if ((rc = op_start(c, OP_RECOVER, 1, arg)) < 0)
        return rc;
    c->cb.recover = cb;
    snprintf(c->bqual, sizeof c->bqual, "%s", bqual);
    if (c->broken) {
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
        defer(c);
        return 0;
    }
    values[0] = gtrid_prefix;
    if (!send_clean_session(c)) {
        defer(c);
        return 0;
    }
    if (!send_query(c, ITEM_RECOVER,
                    "SELECT gid FROM pg_prepared_xacts "
                    "WHERE database = current_database() AND starts_with(gid, $1)",
                    1, values)) {
        defer(c);
        return 0;
    }
    sync_and_flush(c);
    return 0;
}

/* One query with parameters on a connection with no branch open, in a clean session. */
static int query_op(px_conn *c, pg_op op, int item, const char *sql, int n,
                    const char *const *values, void *arg)
{
    int rc;
    if (c->op != OP_NONE)
        return -EBUSY;
    if (c->in_branch)
        return -EINVAL;
    if ((rc = op_start(c, op, 1, arg)) < 0)
        return rc;
    if (c->broken)
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
    else if (send_clean_session(c) && send_query(c, item, sql, n, values)) {
        sync_and_flush(c);
        return 0;
    }
    defer(c);
    return 0;
}

static int pg_marker_exists(px_conn *c, const px_xid *x, px_marker_cb cb, void *arg)
{
    const char *values[2];
    px_xid v;
    int rc;
    if (!c || !cb || !xid_ok(x, &v))
        return -EINVAL;
    values[0] = v.gtrid;
    values[1] = v.bqual;
    rc = query_op(c, OP_MARKER, ITEM_MARKER,
                  "SELECT 1 FROM xacoord.marker WHERE gtrid = $1 AND bqual = $2", 2, values, arg);
    if (rc == 0)
        c->cb.marker = cb;
    return rc;
}

static int pg_markers_prune(px_conn *c, const char *gtrid_prefix, uint32_t older_than_s,
                            px_done_cb cb, void *arg)
{
    char secs[16];
    const char *values[2] = {gtrid_prefix, secs};
    int rc;
    if (!c || !cb || !gtrid_prefix)
        return -EINVAL;
    snprintf(secs, sizeof secs, "%" PRIu32, older_than_s);
    rc = query_op(c, OP_PRUNE, ITEM_CMD,
                  "DELETE FROM xacoord.marker WHERE starts_with(gtrid, $1) "
                  "AND created_at < now() - make_interval(secs => $2::int)",
                  2, values, arg);
    if (rc == 0)
        c->cb.done = cb;
    return rc;
}

/* Nothing is sent now: the reset travels in front of the next BEGIN (send_begin), in the same
 * round trip - or in front of a phase-2 command or the recovery listing, if one comes first
 * (send_clean_session). A connection that never had reset called - the owner's lock session -
 * sees DISCARD ALL only in front of those, which it never runs. */
static int pg_reset(px_conn *c, px_done_cb cb, void *arg)
{
    int rc;
    if (!c || !cb)
        return -EINVAL;
    if (c->op != OP_NONE)
        return -EBUSY;
    if (c->in_branch)
        return -EINVAL;
    if ((rc = op_start(c, OP_RESET, 0, arg)) < 0)
        return rc;
    c->cb.done = cb;
    if (c->broken)
        op_fail(c, 0, PX_RETRYABLE, true, "", "connection is broken");
    else
        c->reset_pending = true;
    defer(c);
    return 0;
}

/* Abandons the operation in flight; the memory goes when the last handle has closed, so this
 * is safe from inside any callback of this driver. */
static void pg_close(px_conn *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    c->op = OP_NONE;
    if (c->poll) {
        uv_close((uv_handle_t *)c->poll, on_closed);
        c->poll = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->wake, on_closed);
}

const px_driver px_postgres_driver = {
    .name = "postgres",
    .connect = pg_connect,
    .exec = pg_exec,
    .begin = pg_begin,
    .prepare = pg_prepare,
    .rollback = pg_rollback,
    .commit_one_phase = pg_commit_one_phase,
    .commit_prepared = pg_commit_prepared,
    .rollback_prepared = pg_rollback_prepared,
    .recover = pg_recover,
    .marker_exists = pg_marker_exists,
    .markers_prune = pg_markers_prune,
    .reset = pg_reset,
    .close = pg_close,
};
