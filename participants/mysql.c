/*
 * The MySQL/MariaDB participant driver, on MariaDB Connector/C's non-blocking API.
 *
 * Every library call is a `_start` that either completes at once (returns 0) or returns a wait
 * mask; the connection then waits on one uv_poll_t for its socket (and a uv_timer_t for
 * MYSQL_WAIT_TIMEOUT) and hands the fired events to the matching `_cont`. Each operation
 * (connect, exec, an XA step, recover, reset, close) is a small state machine: `mx_drive` runs it
 * whenever the call in flight has completed, and the machine either starts the next library
 * call or ends the operation. Statements run through server-side prepared statements, cached
 * per connection by SQL text; XA statements go as text, built only from validated XIDs.
 */
#include "participant.h"

#include <arpa/inet.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define STMT_CACHE_MAX 32
#define CELL_SCRATCH 64 /* bytes per column fetched in place; longer values use fetch_column */
#define XA_SQL_MAX 640  /* the marker INSERT and two XA statements with 64-byte gtrid and bqual */
#define ST_DONE (-1)    /* the state machine ended the operation: stop driving */

enum mx_op { OP_NONE = 0, OP_CONNECT, OP_EXEC, OP_XA, OP_RECOVER, OP_RESET, OP_CLOSE };

/* What an XA operation does to the branch open on the connection. */
enum xa_kind {
    XK_START,   /* begin: opens it */
    XK_END,     /* commit_one_phase: XA END, which must find it still open */
    XK_PREPARE, /* prepare: the marker INSERT, then XA END (as XK_END) and XA PREPARE */
    XK_ABANDON, /* rollback: XA END may find it idle or rollback-only */
    XK_FINISH,  /* commit or rollback of a prepared branch */
};

/* Phases of the state machines. Each names the library call whose completion it handles,
 * except the *_START/NEXT phases, which start the next call. */
enum {
    CN_START = 0,
    CN_CONNECT,
    CN_SET,
    EX_NEXT = 0,
    EX_EVICT,
    EX_PREPARE,
    EX_DISCARD,
    EX_EXECUTE,
    EX_STORE,
    EX_FETCH,
    XA_NEXT = 0,
    XA_QUERY,
    XA_MORE,
    RC_START = 0,
    RC_QUERY,
    RC_STORE,
    RS_START = 0,
    RS_RESET,
    RS_SET,
    CL_START = 0,
    CL_WAIT,
};

typedef struct mx_cached {
    char *sql;
    size_t len;
    MYSQL_STMT *stmt;
    uint64_t used; /* LRU clock value of the last use */
} mx_cached;

union mx_val {
    long long i;
    double d;
    float f;
    signed char b;
};

typedef struct mx_exec {
    px_stmt *stmts; /* private copy of the caller's statements (one allocation) */
    int n, i;
    px_result *results;
    MYSQL_STMT *st;    /* statement being run */
    MYSQL_STMT *loose; /* prepared but not cached yet: freed by close if abandoned */
    px_error saved;    /* error of a failed prepare, reported once the statement is discarded */
    /* parameter bindings, grown as needed */
    MYSQL_BIND *pbind;
    union mx_val *pval;
    unsigned long *plen;
    int pcap;
    /* result bindings */
    MYSQL_BIND *rbind;
    union mx_val *rval;
    unsigned long *rlen;
    my_bool *rnull, *rerr;
    char *scratch;
    int rcap;
    size_t cells_cap;
} mx_exec;

struct px_conn {
    struct px_conn_base base; /* first: generic code reads it through px_conn_base() */
    uv_loop_t *loop;
    MYSQL *m;
    uv_poll_t *poll; /* on poll_fd; replaced if the library's socket changes */
    int poll_fd;
    uv_timer_t wait_timer;    /* MYSQL_WAIT_TIMEOUT */
    uv_timer_t connect_timer; /* target->connect_timeout_ms */
    uv_async_t deliver_async; /* delivers an outcome reached inside the starting call */
    int open_handles;
    bool released; /* MYSQL closed, handles closing: free when open_handles reaches 0 */

    enum mx_op op;
    int phase;
    int wait_mask;
    int (*cont)(px_conn *c, int events);
    bool closing, in_start, delivering, kick;

    /* results of the library call in flight */
    int ret_int;
    my_bool ret_bool;
    MYSQL *ret_mysql;
    MYSQL_RES *ret_res;

    /* the outcome of the operation and whom to tell */
    bool failed;
    int failed_index;
    px_error err;
    union {
        px_connect_cb connect;
        px_exec_cb exec;
        px_done_cb done;
        px_recover_cb recover;
    } cb;
    void *cb_arg;

    char set_sql[128]; /* the session settings, applied at connect and after every reset */
    bool branch_open;  /* XA START succeeded and nothing has ended the branch yet */
    /* A statement that may change the session ran (not px_stmt.session_neutral, or the server
     * flagged SERVER_SESSION_STATE_CHANGED) since the last reset: the next reset must run. */
    bool dirty;

    mx_exec ex;
    char xa_sql[2][XA_SQL_MAX];
    int xa_n, xa_i;
    px_marker_cb marker_cb; /* marker_exists runs as an exec; its caller waits here */
    px_done_cb prune_cb;
    void *marker_arg;
    px_param *prune_keys; /* the batch being deleted (texts point into the SELECT's cells) */
    char prune_from[PX_XID_PART_MAX + 1], prune_to[PX_XID_PART_MAX + 1];
    uint32_t prune_older;
    int prune_batches;
    bool prune_full;
    enum xa_kind xa_kind;
    int xa_part; /* the statement of the multi-statement query whose result is being read */
    char rc_prefix[PX_XID_PART_MAX + 1], rc_bqual[PX_XID_PART_MAX + 1];
    bool rc_any_bqual;
    px_xid *xids;
    size_t nxids;

    mx_cached cache[STMT_CACHE_MAX];
    int ncache;
    uint64_t clock;
};

static void mx_close(px_conn *c);
static void mx_drive(px_conn *c, int status);

/* ---------------------------------------------------------------------------------------------
 * Error classification
 *
 * PX_BUSINESS: the statement itself is wrong for the data - duplicate key 1062, foreign keys
 *   1451/1452, NOT NULL 1048, out of range / truncation 1264/1265/1292/1366/1406/1690, CHECK
 *   3819 (MySQL) and 4025 (MariaDB), SIGNAL from a trigger 1644, syntax and unknown
 *   table/column 1064/1146/1054/1149 and similar statement errors, parameters that do not fit
 *   the statement (server 1210, client 2031/2034: detected before anything is sent); also a
 *   branch the server rolled back on its own (1402 XA_RBROLLBACK, 1613 XA_RBTIMEOUT,
 *   1614 XA_RBDEADLOCK: the engine decides what they mean for the step that got them).
 * PX_RETRYABLE: deadlock 1213, lock wait timeout 1205, too many connections 1040/1203, shutdown
 *   in progress 1053, query interrupted 1317, and lost connections: client errors 2002, 2003,
 *   2006, 2013, 2055, connection killed 1927, idle timeout 4031. Also 1440 XAER_DUPID on
 *   XA START and every failed connect (see xa_fail, connect_fail).
 * PX_XID_NOT_FOUND: 1397 XAER_NOTA.
 * PX_FATAL: permissions 1044/1045/1142, XA state errors 1399/1400 and anything else.
 * conn_broken: only when the session is gone - the lost-connection codes above and the server
 * errors that end the session (1927, 1053, 4031) - or the library can no longer follow the
 * protocol stream (2014 commands out of sync, 2027 malformed packet). Other client errors
 * (2031 parameters not bound, 2036 unsupported type, ...) are raised before any I/O and leave
 * the connection usable.
 * ------------------------------------------------------------------------------------------- */

static const unsigned business_codes[] = {
    1048, 1052, 1054, 1062, 1064, 1109, 1111, 1136, 1146, 1149, 1169, 1210, 1216,
    1217, 1222, 1241, 1242, 1264, 1265, 1292, 1305, 1318, 1364, 1365, 1366, 1402,
    1406, 1411, 1451, 1452, 1557, 1613, 1614, 1644, 1690, 2031, 2034, 3819, 4025,
};
static const unsigned retryable_codes[] = {
    1040, 1053, 1203, 1205, 1213, 1317, 1927, 2002, 2003, 2006, 2013, 2055, 4031,
};
static const unsigned broken_codes[] = {
    1053, 1927, 2002, 2003, 2006, 2013, 2014, 2027, 2055, 4031,
};

static bool code_in(unsigned code, const unsigned *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == code)
            return true;
    return false;
}

#define CODE_IN(code, set) code_in(code, set, sizeof set / sizeof set[0])

static px_errclass mx_classify(unsigned code, bool *broken)
{
    *broken = CODE_IN(code, broken_codes);
    if (code == 1397)
        return PX_XID_NOT_FOUND;
    if (CODE_IN(code, retryable_codes))
        return PX_RETRYABLE;
    if (CODE_IN(code, business_codes))
        return PX_BUSINESS;
    return PX_FATAL;
}

static void set_error(px_error *err, unsigned code, const char *sqlstate, const char *msg)
{
    bool broken;
    px_errclass cls = mx_classify(code, &broken);
    px_error_set(err, cls, broken, (int)code, sqlstate, "%s", msg && *msg ? msg : "unknown error");
}

static void conn_error(px_conn *c)
{
    set_error(&c->err, mysql_errno(c->m), mysql_sqlstate(c->m), mysql_error(c->m));
}

static void stmt_error(px_error *err, MYSQL_STMT *st)
{
    set_error(err, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st));
}

/* ---------------------------------------------------------------------------------------------
 * Handles and the wait loop
 * ------------------------------------------------------------------------------------------- */

static void free_conn(px_conn *c)
{
    mx_exec *ex = &c->ex;
    free(c->prune_keys);
    for (int i = 0; i < c->ncache; i++)
        free(c->cache[i].sql);
    free(ex->stmts);
    free(ex->pbind);
    free(ex->pval);
    free(ex->plen);
    free(ex->rbind);
    free(ex->rval);
    free(ex->rlen);
    free(ex->rnull);
    free(ex->rerr);
    free(ex->scratch);
    free(c->xids);
    free(c);
}

static void handle_closed(px_conn *c)
{
    if (--c->open_handles == 0 && c->released)
        free_conn(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_poll_closed(uv_handle_t *h)
{
    px_conn *c = h->data;
    free(h);
    handle_closed(c);
}

/* Called right after the library closed or replaced its socket, before anything else can open
 * a socket with the same number: closing the handle later would remove that newcomer from
 * epoll (libuv drops the fd number from epoll when a poll handle closes). */
static void close_poll(px_conn *c)
{
    if (!c->poll)
        return;
    uv_close((uv_handle_t *)c->poll, on_poll_closed);
    c->poll = NULL;
    c->poll_fd = -1;
}

static int current_fd(px_conn *c)
{
    return c->m ? (int)mysql_get_socket(c->m) : -1;
}

/* The call in flight completed: nothing may fire until the next one asks for it. */
static void quiesce(px_conn *c)
{
    if (c->poll) {
        uv_poll_stop(c->poll);
        if (current_fd(c) != c->poll_fd)
            close_poll(c);
    }
    uv_timer_stop(&c->wait_timer);
}

static void on_wait_timer(uv_timer_t *t)
{
    px_conn *c = t->data;
    int ev = MYSQL_WAIT_TIMEOUT;
    if (c->kick) {
        c->kick = false;
        ev = c->wait_mask & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT);
    }
    if (c->poll)
        uv_poll_stop(c->poll);
    mx_drive(c, c->cont(c, ev));
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    px_conn *c = h->data;
    int ev = 0;
    if (status < 0) {
        /* EPOLLERR (UV_EBADF, the handle is stopped): the library reads the socket error. */
        ev = c->wait_mask & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT);
    } else {
        if (events & UV_READABLE)
            ev |= MYSQL_WAIT_READ;
        if (events & UV_WRITABLE)
            ev |= MYSQL_WAIT_WRITE;
        if (events & UV_PRIORITIZED)
            ev |= MYSQL_WAIT_EXCEPT;
    }
    uv_timer_stop(&c->wait_timer);
    mx_drive(c, c->cont(c, ev));
}

static int ensure_poll(px_conn *c, int fd)
{
    uv_poll_t *p;
    int rc;
    if (c->poll && c->poll_fd == fd)
        return 0;
    close_poll(c);
    if (fd < 0)
        return -EINVAL;
    p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    rc = uv_poll_init_socket(c->loop, p, fd);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->data = c;
    c->open_handles++;
    c->poll = p;
    c->poll_fd = fd;
    return 0;
}

static void wait_for(px_conn *c, int status)
{
    int uvev = 0;
    c->wait_mask = status;
    if (status & MYSQL_WAIT_READ)
        uvev |= UV_READABLE;
    if (status & MYSQL_WAIT_WRITE)
        uvev |= UV_WRITABLE;
    if (status & MYSQL_WAIT_EXCEPT)
        uvev |= UV_PRIORITIZED;
    if (uvev) {
        int fd = current_fd(c);
        if (ensure_poll(c, fd) != 0 || uv_poll_start(c->poll, uvev, on_poll) != 0) {
            /* Cannot watch the socket: cut it so the library fails fast, and resume it. */
            if (fd >= 0)
                shutdown(fd, SHUT_RDWR);
            c->kick = true;
            uv_timer_start(&c->wait_timer, on_wait_timer, 0, 0);
            return;
        }
    } else if (c->poll) {
        uv_poll_stop(c->poll);
    }
    if (status & MYSQL_WAIT_TIMEOUT)
        uv_timer_start(&c->wait_timer, on_wait_timer, mysql_get_timeout_value_ms(c->m), 0);
}

/* ---------------------------------------------------------------------------------------------
 * Outcome delivery
 * ------------------------------------------------------------------------------------------- */

static void free_results(px_result *res, int n)
{
    for (int i = 0; res && i < n; i++)
        px_result_free(&res[i]);
    free(res);
}

/* Drops what an unfinished or undelivered operation holds. Only safe while the library holds
 * no pointer into it (no call in flight). */
static void drop_op_state(px_conn *c)
{
    free_results(c->ex.results, c->ex.n);
    c->ex.results = NULL;
    free(c->ex.stmts);
    c->ex.stmts = NULL;
    if (c->ret_res) {
        mysql_free_result(c->ret_res); /* stored: frees memory, no I/O */
        c->ret_res = NULL;
    }
    free(c->xids);
    c->xids = NULL;
    c->nxids = 0;
}

static void deliver(px_conn *c)
{
    enum mx_op op = c->op;
    void *arg = c->cb_arg;
    px_error err = c->err; /* the callback may start another operation that overwrites it */
    const px_error *e = c->failed ? &err : NULL;

    c->op = OP_NONE;
    c->delivering = false;
    switch (op) {
    case OP_CONNECT: {
        px_connect_cb cb = c->cb.connect;
        if (c->failed) {
            mx_close(c);
            cb(NULL, &err, arg);
        } else {
            cb(c, NULL, arg);
        }
        break;
    }
    case OP_EXEC: {
        px_result *res = c->ex.results;
        int total = c->ex.n, fi = c->failed ? c->failed_index : -1;
        c->ex.results = NULL;
        free(c->ex.stmts);
        c->ex.stmts = NULL;
        c->cb.exec(c, e, fi, res, c->failed ? fi : total, arg);
        free_results(res, total);
        break;
    }
    case OP_XA:
    case OP_RESET:
        c->cb.done(c, e, arg);
        break;
    case OP_RECOVER: {
        px_xid *xids = c->xids;
        size_t n = c->nxids;
        c->xids = NULL;
        c->nxids = 0;
        c->cb.recover(c, e, xids, n, arg);
        free(xids);
        break;
    }
    default:
        break;
    }
}

static void on_deliver(uv_async_t *a)
{
    px_conn *c = a->data;
    uv_unref((uv_handle_t *)a);
    if (c->delivering)
        deliver(c);
}

/* Ends the operation. A callback never runs inside the call that started the operation: when
 * everything completed synchronously, delivery waits for the loop. An async handle wakes the
 * poll phase, so even a UV_RUN_ONCE caller returns right after the delivery (a zero timer fires
 * before the poll and lets that iteration block). It is referenced only while a delivery is
 * pending, so an idle connection does not keep the loop alive. */
static int finish(px_conn *c, bool failed)
{
    c->failed = failed;
    if (c->op == OP_CONNECT)
        uv_timer_stop(&c->connect_timer);
    if (c->in_start) {
        c->delivering = true;
        uv_ref((uv_handle_t *)&c->deliver_async);
        uv_async_send(&c->deliver_async);
    } else {
        deliver(c);
    }
    return ST_DONE;
}

static int fail_conn(px_conn *c)
{
    conn_error(c);
    return finish(c, true);
}

/* The connection cannot be used after this failure, whatever the error's code says. */
static int fail_broken(px_conn *c)
{
    conn_error(c);
    c->err.conn_broken = true;
    return finish(c, true);
}

/* The server's status flags as of the last OK or EOF packet. MariaDB 10.11 reports
 * SERVER_STATUS_IN_TRANS from XA START on (ACTIVE, and IDLE after XA END); XA COMMIT ... ONE
 * PHASE and XA ROLLBACK clear it. */
static unsigned server_status(px_conn *c)
{
    unsigned status = 0;
    return mariadb_get_infov(c->m, MARIADB_CONNECTION_SERVER_STATUS, &status) == 0 ? status : 0;
}

static bool in_trans(px_conn *c)
{
    return (server_status(c) & SERVER_STATUS_IN_TRANS) != 0;
}

/* A client statement can end the branch itself (XA END and XA COMMIT ... ONE PHASE for the
 * branch's own XID are accepted as prepared statements) and even open a new one under the same
 * XID: what the session holds is unknown. */
static void set_branch_ended(px_error *err)
{
    px_error_set(err, PX_BUSINESS, true, 0, "",
                 "the branch's XA transaction was ended by a statement");
}

/* ---------------------------------------------------------------------------------------------
 * Library continuations: each resumes the call that the current phase started.
 * ------------------------------------------------------------------------------------------- */

static int cont_connect(px_conn *c, int ev)
{
    return mysql_real_connect_cont(&c->ret_mysql, c->m, ev);
}

static int cont_query(px_conn *c, int ev)
{
    return mysql_real_query_cont(&c->ret_int, c->m, ev);
}

static int cont_next(px_conn *c, int ev)
{
    return mysql_next_result_cont(&c->ret_int, c->m, ev);
}

static int cont_store(px_conn *c, int ev)
{
    return mysql_store_result_cont(&c->ret_res, c->m, ev);
}

/* mysql_close frees the handle when it completes: forget it at once, before quiesce looks. */
static int close_done(px_conn *c, int status)
{
    if (status == 0)
        c->m = NULL;
    return status;
}

static int cont_close(px_conn *c, int ev)
{
    return close_done(c, mysql_close_cont(c->m, ev));
}

static int cont_st_prepare(px_conn *c, int ev)
{
    return mysql_stmt_prepare_cont(&c->ret_int, c->ex.st, ev);
}

static int cont_st_execute(px_conn *c, int ev)
{
    return mysql_stmt_execute_cont(&c->ret_int, c->ex.st, ev);
}

static int cont_st_store(px_conn *c, int ev)
{
    return mysql_stmt_store_result_cont(&c->ret_int, c->ex.st, ev);
}

static int cont_st_fetch(px_conn *c, int ev)
{
    return mysql_stmt_fetch_cont(&c->ret_int, c->ex.st, ev);
}

static int cont_st_close(px_conn *c, int ev)
{
    return mysql_stmt_close_cont(&c->ret_bool, c->ex.st, ev);
}

static int query_start(px_conn *c, const char *sql)
{
    c->cont = cont_query;
    return mysql_real_query_start(&c->ret_int, c->m, sql, strlen(sql));
}

/* ---------------------------------------------------------------------------------------------
 * Connect
 * ------------------------------------------------------------------------------------------- */

/* A failed connect is never permanent, whatever its code (a server starting, a grant or a
 * database about to be created, too many connections): the pool tries again later. */
static int connect_fail(px_conn *c)
{
    conn_error(c);
    c->err.cls = PX_RETRYABLE;
    c->err.conn_broken = true;
    return finish(c, true);
}

/* The settings every session starts with, at connect and after each reset. XA START needs no
 * open transaction: autocommit on. The lock wait limit must stay below the engine's phase-1
 * timeout (whole seconds, rounded up). session_track_state_change makes the server flag every
 * statement that changed the session, so that the reset runs when one did (dirty). The
 * handshake's character set (utf8mb4) needs no SET: MariaDB restores it itself on
 * COM_RESET_CONNECTION. */
static void session_settings(px_conn *c, const px_target *t)
{
    if (t->lock_timeout_ms > 0)
        snprintf(c->set_sql, sizeof c->set_sql,
                 "SET SESSION autocommit = 1, session_track_state_change = 1, "
                 "innodb_lock_wait_timeout = %lu",
                 ((unsigned long)t->lock_timeout_ms + 999) / 1000);
    else
        snprintf(c->set_sql, sizeof c->set_sql,
                 "SET SESSION autocommit = 1, session_track_state_change = 1");
}

static int connect_step(px_conn *c)
{
    const px_target *t = c->base.target;
    switch (c->phase) {
    case CN_START:
        c->phase = CN_CONNECT;
        c->cont = cont_connect;
        /* FOUND_ROWS: UPDATE reports matched rows like PostgreSQL, so expect_rows holds for a
         * no-op UPDATE. MULTI_STATEMENTS: two XA statements in one round trip (only XA text,
         * built from validated XIDs, ever goes through the text protocol). */
        return mysql_real_connect_start(&c->ret_mysql, c->m, t->host, t->user, t->password,
                                        t->database, (unsigned)t->port, NULL,
                                        CLIENT_FOUND_ROWS | CLIENT_MULTI_STATEMENTS);
    case CN_CONNECT:
        if (!c->ret_mysql)
            return connect_fail(c);
        c->phase = CN_SET;
        return query_start(c, c->set_sql);
    case CN_SET:
        if (c->ret_int)
            return connect_fail(c);
        return finish(c, false);
    }
    return ST_DONE;
}

static void on_connect_timeout(uv_timer_t *t)
{
    px_conn *c = t->data;
    px_connect_cb cb = c->cb.connect;
    void *arg = c->cb_arg;
    px_error err;
    if (c->op != OP_CONNECT || c->delivering)
        return;
    px_error_set(&err, PX_RETRYABLE, true, 0, "", "connect to %s:%d timed out after %u ms",
                 c->base.target->host, c->base.target->port, c->base.target->connect_timeout_ms);
    mx_close(c);
    cb(NULL, &err, arg);
}

static bool numeric_host(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return host && (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1);
}

static int set_tls(MYSQL *m, const px_target *t)
{
    my_bool verify = t->ssl_verify_server_cert;
    if (!t->ssl_ca)
        return 0;
    if (mysql_options(m, MYSQL_OPT_SSL_CA, t->ssl_ca) ||
        (t->ssl_cert && mysql_options(m, MYSQL_OPT_SSL_CERT, t->ssl_cert)) ||
        (t->ssl_key && mysql_options(m, MYSQL_OPT_SSL_KEY, t->ssl_key)) ||
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify))
        return -ENOMEM;
    return 0;
}

static int mx_connect(uv_loop_t *loop, const px_target *t, px_connect_cb cb, void *arg)
{
    unsigned proto = MYSQL_PROTOCOL_TCP, no_infile = 0;
    px_conn *c;
    if (!loop || !t || !cb || !numeric_host(t->host) || t->port <= 0 || t->port > 65535)
        return -EINVAL;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->m = mysql_init(NULL);
    if (!c->m) {
        free(c);
        return -ENOMEM;
    }
    /* NONBLOCK must come before any other call that could start I/O. */
    if (mysql_options(c->m, MYSQL_OPT_NONBLOCK, 0) ||
        mysql_options(c->m, MYSQL_SET_CHARSET_NAME, "utf8mb4") ||
        mysql_options(c->m, MYSQL_OPT_PROTOCOL, &proto) ||
        mysql_options(c->m, MYSQL_OPT_LOCAL_INFILE, &no_infile) || set_tls(c->m, t) != 0) {
        mysql_close(c->m); /* never connected: no I/O */
        free(c);
        return -ENOMEM;
    }
    c->base.driver = &px_mysql_driver;
    c->base.target = t;
    c->loop = loop;
    c->poll_fd = -1;
    session_settings(c, t);
    uv_timer_init(loop, &c->wait_timer);
    uv_timer_init(loop, &c->connect_timer);
    uv_async_init(loop, &c->deliver_async, on_deliver);
    uv_unref((uv_handle_t *)&c->deliver_async);
    c->wait_timer.data = c->connect_timer.data = c->deliver_async.data = c;
    c->open_handles = 3;
    c->cb.connect = cb;
    c->cb_arg = arg;
    if (t->connect_timeout_ms > 0)
        uv_timer_start(&c->connect_timer, on_connect_timeout, t->connect_timeout_ms, 0);
    c->op = OP_CONNECT;
    c->phase = CN_START;
    c->in_start = true;
    mx_drive(c, 0);
    c->in_start = false;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Statements: prepared-statement cache, parameter and result binding
 * ------------------------------------------------------------------------------------------- */

/* One allocation holding the statements, their parameters and all their bytes, so the caller's
 * arrays need not outlive the call. */
static px_stmt *copy_stmts(const px_stmt *s, int n)
{
    size_t size = (size_t)n * sizeof(px_stmt);
    char *mem, *bytes;
    px_param *params;
    px_stmt *out;
    for (int i = 0; i < n; i++)
        size += (size_t)s[i].nparams * sizeof(px_param);
    for (int i = 0; i < n; i++) {
        size += strlen(s[i].sql) + 1;
        for (int k = 0; k < s[i].nparams; k++)
            if (s[i].params[k].type == PX_P_TEXT)
                size += s[i].params[k].len + 1;
    }
    mem = malloc(size);
    if (!mem)
        return NULL;
    out = (px_stmt *)mem;
    params = (px_param *)(mem + (size_t)n * sizeof(px_stmt));
    bytes = (char *)params;
    for (int i = 0; i < n; i++)
        bytes += (size_t)s[i].nparams * sizeof(px_param);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(s[i].sql) + 1;
        out[i] = s[i];
        out[i].sql = memcpy(bytes, s[i].sql, len);
        bytes += len;
        out[i].params = params;
        for (int k = 0; k < s[i].nparams; k++) {
            params[k] = s[i].params[k];
            if (params[k].type == PX_P_TEXT) {
                if (params[k].len)
                    memcpy(bytes, params[k].text, params[k].len);
                bytes[params[k].len] = '\0';
                params[k].text = bytes;
                bytes += params[k].len + 1;
            }
        }
        params += s[i].nparams;
    }
    return out;
}

static bool stmts_valid(const px_stmt *s, int n)
{
    if (!s || n < 1)
        return false;
    for (int i = 0; i < n; i++) {
        if (!s[i].sql || s[i].nparams < 0 || (s[i].nparams > 0 && !s[i].params))
            return false;
        for (int k = 0; k < s[i].nparams; k++) {
            const px_param *p = &s[i].params[k];
            if (p->type > PX_P_TEXT || (p->type == PX_P_TEXT && p->len > 0 && !p->text))
                return false;
        }
    }
    return true;
}

static mx_cached *cache_find(px_conn *c, const char *sql, size_t len)
{
    for (int i = 0; i < c->ncache; i++)
        if (c->cache[i].len == len && memcmp(c->cache[i].sql, sql, len) == 0)
            return &c->cache[i];
    return NULL;
}

/* Removes the least recently used entry and returns its statement (to be closed). */
static MYSQL_STMT *cache_evict(px_conn *c)
{
    int lru = 0;
    MYSQL_STMT *st;
    for (int i = 1; i < c->ncache; i++)
        if (c->cache[i].used < c->cache[lru].used)
            lru = i;
    st = c->cache[lru].stmt;
    free(c->cache[lru].sql);
    c->cache[lru] = c->cache[--c->ncache];
    return st;
}

static bool cache_add(px_conn *c, const char *sql, MYSQL_STMT *st)
{
    mx_cached *e = &c->cache[c->ncache];
    e->sql = strdup(sql);
    if (!e->sql)
        return false;
    e->len = strlen(sql);
    e->stmt = st;
    e->used = ++c->clock;
    c->ncache++;
    return true;
}

static bool grow_params(mx_exec *ex, int n)
{
    void *b, *v, *l;
    if (n <= ex->pcap)
        return true;
    b = realloc(ex->pbind, (size_t)n * sizeof *ex->pbind);
    if (b)
        ex->pbind = b;
    v = realloc(ex->pval, (size_t)n * sizeof *ex->pval);
    if (v)
        ex->pval = v;
    l = realloc(ex->plen, (size_t)n * sizeof *ex->plen);
    if (l)
        ex->plen = l;
    if (!b || !v || !l)
        return false;
    ex->pcap = n;
    return true;
}

static bool grow_results(mx_exec *ex, int n)
{
    if (n <= ex->rcap)
        return true;
    free(ex->rbind);
    free(ex->rval);
    free(ex->rlen);
    free(ex->rnull);
    free(ex->rerr);
    free(ex->scratch);
    ex->rbind = calloc((size_t)n, sizeof *ex->rbind);
    ex->rval = calloc((size_t)n, sizeof *ex->rval);
    ex->rlen = calloc((size_t)n, sizeof *ex->rlen);
    ex->rnull = calloc((size_t)n, sizeof *ex->rnull);
    ex->rerr = calloc((size_t)n, sizeof *ex->rerr);
    ex->scratch = malloc((size_t)n * CELL_SCRATCH);
    ex->rcap = 0;
    if (!ex->rbind || !ex->rval || !ex->rlen || !ex->rnull || !ex->rerr || !ex->scratch)
        return false;
    ex->rcap = n;
    return true;
}

static void bind_param(mx_exec *ex, int k, const px_param *p)
{
    MYSQL_BIND *b = &ex->pbind[k];
    memset(b, 0, sizeof *b);
    switch (p->type) {
    case PX_P_NULL:
        b->buffer_type = MYSQL_TYPE_NULL;
        break;
    case PX_P_BOOL:
        ex->pval[k].b = p->b ? 1 : 0;
        b->buffer_type = MYSQL_TYPE_TINY;
        b->buffer = &ex->pval[k].b;
        break;
    case PX_P_INT:
        ex->pval[k].i = p->i;
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &ex->pval[k].i;
        break;
    case PX_P_REAL:
        ex->pval[k].d = p->r;
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &ex->pval[k].d;
        break;
    case PX_P_TEXT:
        /* Sent with its length: any byte, quotes and NULs included, reaches the server as is. */
        ex->plen[k] = p->len;
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = (void *)p->text;
        b->buffer_length = p->len;
        b->length = &ex->plen[k];
        break;
    }
}

static int exec_fail(px_conn *c)
{
    c->failed_index = c->ex.i;
    return finish(c, true);
}

static int exec_start_execute(px_conn *c)
{
    mx_exec *ex = &c->ex;
    const px_stmt *s = &ex->stmts[ex->i];
    unsigned long want = mysql_stmt_param_count(ex->st);
    if (want != (unsigned long)s->nparams) {
        px_error_set(&c->err, PX_BUSINESS, false, 0, "07001",
                     "statement has %lu placeholders but %d parameters were given", want,
                     s->nparams);
        return exec_fail(c);
    }
    if (s->nparams > 0) {
        if (!grow_params(ex, s->nparams)) {
            px_error_set(&c->err, PX_FATAL, false, 0, "", "out of memory");
            return exec_fail(c);
        }
        for (int k = 0; k < s->nparams; k++)
            bind_param(ex, k, &s->params[k]);
        if (mysql_stmt_bind_param(ex->st, ex->pbind)) {
            stmt_error(&c->err, ex->st);
            return exec_fail(c);
        }
    }
    c->phase = EX_EXECUTE;
    c->cont = cont_st_execute;
    return mysql_stmt_execute_start(&c->ret_int, ex->st);
}

static int exec_start_prepare(px_conn *c)
{
    mx_exec *ex = &c->ex;
    const char *sql = ex->stmts[ex->i].sql;
    ex->st = mysql_stmt_init(c->m);
    if (!ex->st) {
        conn_error(c);
        return exec_fail(c);
    }
    ex->loose = ex->st;
    c->phase = EX_PREPARE;
    c->cont = cont_st_prepare;
    return mysql_stmt_prepare_start(&c->ret_int, ex->st, sql, strlen(sql));
}

/* Bytes without a character set: BINARY/VARBINARY/BLOB columns and expressions like UNHEX()
 * carry the binary charset (63) - which numbers and dates carry too, so only string types count;
 * BIT and GEOMETRY values are raw bytes as well. */
static bool binary_field(const MYSQL_FIELD *f)
{
    switch (f->type) {
    case MYSQL_TYPE_BIT:
    case MYSQL_TYPE_GEOMETRY:
        return true;
    case MYSQL_TYPE_STRING:
    case MYSQL_TYPE_VAR_STRING:
    case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_TINY_BLOB:
    case MYSQL_TYPE_BLOB:
    case MYSQL_TYPE_MEDIUM_BLOB:
    case MYSQL_TYPE_LONG_BLOB:
        return f->charsetnr == 63;
    default:
        return false;
    }
}

static px_coltype bind_column(mx_exec *ex, int k, const MYSQL_FIELD *f)
{
    MYSQL_BIND *b = &ex->rbind[k];
    memset(b, 0, sizeof *b);
    b->is_null = &ex->rnull[k];
    b->length = &ex->rlen[k];
    b->error = &ex->rerr[k];
    switch (f->type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR:
        b->buffer_type = MYSQL_TYPE_LONGLONG;
        b->buffer = &ex->rval[k].i;
        b->is_unsigned = (f->flags & UNSIGNED_FLAG) != 0;
        return PX_COL_INT;
    case MYSQL_TYPE_FLOAT:
        b->buffer_type = MYSQL_TYPE_FLOAT;
        b->buffer = &ex->rval[k].f;
        return PX_COL_REAL;
    case MYSQL_TYPE_DOUBLE:
        b->buffer_type = MYSQL_TYPE_DOUBLE;
        b->buffer = &ex->rval[k].d;
        return PX_COL_REAL;
    default:
        /* Strings, decimals (sent as exact text), dates: the library hands over their bytes as
         * the server sent them, with their full length in rlen. */
        b->buffer_type = MYSQL_TYPE_STRING;
        b->buffer = ex->scratch + (size_t)k * CELL_SCRATCH;
        b->buffer_length = CELL_SCRATCH;
        if (f->type == MYSQL_TYPE_DECIMAL || f->type == MYSQL_TYPE_NEWDECIMAL)
            return PX_COL_DECIMAL;
        return binary_field(f) ? PX_COL_BINARY : PX_COL_TEXT;
    }
}

static bool exec_bind_result(px_conn *c)
{
    mx_exec *ex = &c->ex;
    px_result *r = &ex->results[ex->i];
    MYSQL_RES *meta = mysql_stmt_result_metadata(ex->st);
    int ncols = (int)mysql_stmt_field_count(ex->st);
    MYSQL_FIELD *f;
    bool ok = meta && grow_results(ex, ncols);
    if (ok) {
        r->colnames = calloc((size_t)ncols, sizeof *r->colnames);
        r->coltypes = calloc((size_t)ncols, sizeof *r->coltypes);
        ok = r->colnames && r->coltypes;
    }
    if (ok) {
        r->ncols = ncols;
        f = mysql_fetch_fields(meta);
        for (int k = 0; k < ncols && ok; k++) {
            r->colnames[k] = strndup(f[k].name, f[k].name_length);
            r->coltypes[k] = bind_column(ex, k, &f[k]);
            ok = r->colnames[k] != NULL;
        }
    }
    if (meta)
        mysql_free_result(meta); /* metadata only: no I/O */
    ex->cells_cap = 0;
    if (!ok) {
        px_error_set(&c->err, PX_FATAL, false, 0, "", "out of memory");
        return false;
    }
    if (mysql_stmt_bind_result(ex->st, ex->rbind)) {
        stmt_error(&c->err, ex->st);
        return false;
    }
    return true;
}

/* Shortest text that reads back as the same value. */
static void format_real(char *buf, size_t len, double d, bool single)
{
    int lo = single ? 6 : 15, hi = single ? 9 : 17;
    for (int p = lo; p <= hi; p++) {
        snprintf(buf, len, "%.*g", p, d);
        if (single ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d)
            return;
    }
}

/* The column's rlen[k] bytes (binary values may hold NULs), NUL-terminated. */
static char *cell_bytes(mx_exec *ex, int k)
{
    unsigned long len = ex->rlen[k];
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    if (len < CELL_SCRATCH) {
        memcpy(out, ex->scratch + (size_t)k * CELL_SCRATCH, len);
    } else {
        /* The stored row is in memory: fetching the rest of the column does no I/O. */
        MYSQL_BIND whole;
        unsigned long got = 0;
        memset(&whole, 0, sizeof whole);
        whole.buffer_type = MYSQL_TYPE_STRING;
        whole.buffer = out;
        whole.buffer_length = len + 1;
        whole.length = &got;
        if (mysql_stmt_fetch_column(ex->st, &whole, (unsigned)k, 0)) {
            free(out);
            return NULL;
        }
    }
    out[len] = '\0';
    return out;
}

static char *cell_text(mx_exec *ex, int k, px_coltype type)
{
    const MYSQL_BIND *b = &ex->rbind[k];
    char buf[64], *raw, *out;
    switch (b->buffer_type) {
    case MYSQL_TYPE_LONGLONG:
        if (b->is_unsigned)
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)ex->rval[k].i);
        else
            snprintf(buf, sizeof buf, "%lld", ex->rval[k].i);
        return strdup(buf);
    case MYSQL_TYPE_FLOAT:
        format_real(buf, sizeof buf, ex->rval[k].f, true);
        return strdup(buf);
    case MYSQL_TYPE_DOUBLE:
        format_real(buf, sizeof buf, ex->rval[k].d, false);
        return strdup(buf);
    default:
        break;
    }
    raw = cell_bytes(ex, k);
    if (!raw || type != PX_COL_BINARY)
        return raw;
    out = px_base64(raw, ex->rlen[k]);
    free(raw);
    return out;
}

static bool exec_collect_row(px_conn *c)
{
    mx_exec *ex = &c->ex;
    px_result *r = &ex->results[ex->i];
    size_t need = ((size_t)r->nrows + 1) * (size_t)r->ncols;
    if (r->ncols == 0)
        return true;
    if (need > ex->cells_cap) {
        size_t cap = ex->cells_cap ? ex->cells_cap * 2 : (size_t)r->ncols * 16;
        char **cells;
        while (cap < need)
            cap *= 2;
        cells = realloc(r->cells, cap * sizeof *cells);
        if (!cells)
            return false;
        r->cells = cells;
        ex->cells_cap = cap;
    }
    for (int k = 0; k < r->ncols; k++) {
        char **cell = &r->cells[(size_t)r->nrows * (size_t)r->ncols + (size_t)k];
        *cell = NULL;
        if (!ex->rnull[k] && !(*cell = cell_text(ex, k, r->coltypes[k]))) {
            for (int j = 0; j < k; j++)
                free(r->cells[(size_t)r->nrows * (size_t)r->ncols + (size_t)j]);
            return false;
        }
    }
    r->nrows++;
    return true;
}

/* After every statement, not only the last: a later one could open a new branch under the same
 * XID and hide that the first was committed. */
static int exec_stmt_done(px_conn *c)
{
    mx_exec *ex = &c->ex;
    int64_t want = ex->stmts[ex->i].expect_rows, got = ex->results[ex->i].rows_affected;
    if (c->branch_open && !in_trans(c)) {
        set_branch_ended(&c->err);
        return exec_fail(c);
    }
    /* The server's own account (session_track_state_change), whatever the statement's text
     * promised: settings and temporary tables changed by a stored function, for one. */
    if (server_status(c) & SERVER_SESSION_STATE_CHANGED)
        c->dirty = true;
    if (want >= 0 && want != got) {
        px_error_set(&c->err, PX_BUSINESS, false, 0, "", "expected %lld rows, got %lld",
                     (long long)want, (long long)got);
        c->err.rows_mismatch = true;
        return exec_fail(c);
    }
    if (++ex->i == ex->n)
        return finish(c, false);
    c->phase = EX_NEXT;
    return 0;
}

static int exec_step(px_conn *c)
{
    mx_exec *ex = &c->ex;
    px_result *r = &ex->results[ex->i];
    switch (c->phase) {
    case EX_NEXT: {
        const char *sql = ex->stmts[ex->i].sql;
        mx_cached *e = cache_find(c, sql, strlen(sql));
        if (e) {
            e->used = ++c->clock;
            ex->st = e->stmt;
            return exec_start_execute(c);
        }
        if (c->ncache < STMT_CACHE_MAX)
            return exec_start_prepare(c);
        ex->st = cache_evict(c);
        c->phase = EX_EVICT;
        c->cont = cont_st_close;
        return mysql_stmt_close_start(&c->ret_bool, ex->st);
    }
    case EX_EVICT:
        return exec_start_prepare(c);
    case EX_PREPARE:
        if (c->ret_int) {
            stmt_error(&ex->saved, ex->st);
            c->phase = EX_DISCARD;
            c->cont = cont_st_close;
            ex->loose = NULL;
            return mysql_stmt_close_start(&c->ret_bool, ex->st);
        }
        if (!cache_add(c, ex->stmts[ex->i].sql, ex->st)) {
            px_error_set(&ex->saved, PX_FATAL, false, 0, "", "out of memory");
            c->phase = EX_DISCARD;
            c->cont = cont_st_close;
            ex->loose = NULL;
            return mysql_stmt_close_start(&c->ret_bool, ex->st);
        }
        ex->loose = NULL;
        return exec_start_execute(c);
    case EX_DISCARD:
        c->err = ex->saved;
        return exec_fail(c);
    case EX_EXECUTE:
        if (c->ret_int) {
            stmt_error(&c->err, ex->st);
            return exec_fail(c);
        }
        if (mysql_stmt_field_count(ex->st) == 0) {
            r->rows_affected = (int64_t)mysql_stmt_affected_rows(ex->st);
            return exec_stmt_done(c);
        }
        c->phase = EX_STORE;
        c->cont = cont_st_store;
        return mysql_stmt_store_result_start(&c->ret_int, ex->st);
    case EX_STORE:
        if (c->ret_int) {
            stmt_error(&c->err, ex->st);
            return exec_fail(c);
        }
        if (!exec_bind_result(c)) {
            mysql_stmt_free_result(ex->st);
            return exec_fail(c);
        }
        c->phase = EX_FETCH;
        c->cont = cont_st_fetch;
        return mysql_stmt_fetch_start(&c->ret_int, ex->st);
    case EX_FETCH:
        if (c->ret_int == 0 || c->ret_int == MYSQL_DATA_TRUNCATED) {
            if (!exec_collect_row(c)) {
                px_error_set(&c->err, PX_FATAL, false, 0, "", "out of memory");
                mysql_stmt_free_result(ex->st);
                return exec_fail(c);
            }
            return mysql_stmt_fetch_start(&c->ret_int, ex->st);
        }
        if (c->ret_int != MYSQL_NO_DATA)
            stmt_error(&c->err, ex->st);
        /* The result was stored: freeing it does no I/O. */
        mysql_stmt_free_result(ex->st);
        if (c->ret_int != MYSQL_NO_DATA)
            return exec_fail(c);
        r->rows_affected = r->nrows;
        return exec_stmt_done(c);
    }
    return ST_DONE;
}

static int op_begin(px_conn *c, enum mx_op op, void *arg)
{
    c->op = op;
    c->phase = 0;
    c->failed = false;
    c->cb_arg = arg;
    c->in_start = true;
    mx_drive(c, 0);
    c->in_start = false;
    return 0;
}

static bool busy(px_conn *c)
{
    return c->op != OP_NONE || c->closing;
}

static int mx_exec_stmts(px_conn *c, const px_stmt *stmts, int n, px_exec_cb cb, void *arg)
{
    if (!c || !cb || !stmts_valid(stmts, n))
        return -EINVAL;
    if (busy(c))
        return -EBUSY;
    c->ex.stmts = copy_stmts(stmts, n);
    c->ex.results = calloc((size_t)n, sizeof *c->ex.results);
    if (!c->ex.stmts || !c->ex.results) {
        free(c->ex.stmts);
        free(c->ex.results);
        c->ex.stmts = NULL;
        c->ex.results = NULL;
        return -ENOMEM;
    }
    c->ex.n = n;
    c->ex.i = 0;
    c->cb.exec = cb;
    for (int i = 0; i < n; i++)
        c->dirty |= !stmts[i].session_neutral;
    return op_begin(c, OP_EXEC, arg);
}

/* ---------------------------------------------------------------------------------------------
 * XA statements
 * ------------------------------------------------------------------------------------------- */

/* 1399: XA END on a branch already idle; 1402/1613/1614: the server already rolled the branch
 * back (e.g. after a deadlock). In all of them XA ROLLBACK is still the way to end it. */
static bool end_ignorable(unsigned code)
{
    return code == 1399 || code == 1402 || code == 1613 || code == 1614;
}

/* 1440 XAER_DUPID on XA START: the XID is still held by another session, typically the one a
 * restarted branch used first, which the server has not finished ending. It lets go of it, and a
 * fresh connection gets past it. */
static int xa_fail(px_conn *c)
{
    conn_error(c);
    if (c->xa_kind == XK_START && c->err.code == 1440) {
        c->err.cls = PX_RETRYABLE;
        c->err.conn_broken = true;
    }
    if (c->xa_kind == XK_PREPARE && c->xa_i == 0 && c->xa_part == 0 &&
        (c->err.code == 1146 || c->err.code == 1142)) {
        /* The marker table is missing or not granted: the participant's setup, not the
         * request, is at fault. (Other errors of the INSERT - a rollback-only branch - keep
         * their class.) */
        char msg[sizeof c->err.message];
        snprintf(msg, sizeof msg, "%s", c->err.message);
        c->err.cls = PX_RETRYABLE;
        snprintf(c->err.message, sizeof c->err.message,
                 "cannot write the branch's marker (is the xacoord schema installed?): %.180s",
                 msg);
    }
    return finish(c, true);
}

static int xa_step(px_conn *c)
{
    switch (c->phase) {
    case XA_NEXT:
        if (c->xa_i == c->xa_n) {
            if (c->xa_kind == XK_START)
                c->branch_open = true;
            return finish(c, false);
        }
        /* Never XA END a branch a statement already ended: the server would answer for
         * whatever the session holds now (1397 for a committed XID, or a new branch). */
        if (c->xa_i == 0 && (c->xa_kind == XK_END || c->xa_kind == XK_PREPARE) && !in_trans(c)) {
            set_branch_ended(&c->err);
            return finish(c, true);
        }
        c->phase = XA_QUERY;
        c->xa_part = 0;
        return query_start(c, c->xa_sql[c->xa_i]);
    case XA_QUERY:
    case XA_MORE:
        /* real_query: 0 ok; next_result: 0 ok with more, -1 no more, > 0 error. */
        if (c->phase == XA_QUERY ? c->ret_int != 0 : c->ret_int > 0) {
            if (c->xa_i == 0 && c->xa_kind == XK_ABANDON && end_ignorable(mysql_errno(c->m))) {
                c->xa_i++;
                c->phase = XA_NEXT;
                return 0;
            }
            return xa_fail(c);
        }
        if (mysql_more_results(c->m)) {
            c->xa_part++;
            c->phase = XA_MORE;
            c->cont = cont_next;
            return mysql_next_result_start(&c->ret_int, c->m);
        }
        c->xa_i++;
        c->phase = XA_NEXT;
        return 0;
    }
    return ST_DONE;
}

/* The gtrid and bqual are re-checked against px_xid's charset [a-z0-9._] here, so quoting them
 * as 'gtrid','bqual' inside the SQL text cannot be escaped from. */
static bool xid_ok(const px_xid *x)
{
    return px_xid_check(x) == 0;
}

/* Writes tmpl into out with every "$X" replaced by the quoted XID ('gtrid','bqual'). Templates are
 * fixed strings, not printf formats: nothing can pair a conversion with the wrong argument. */
static bool xa_expand(char *out, size_t n, const char *tmpl, const px_xid *x)
{
    size_t len = 0;
    for (const char *p = tmpl; *p;) {
        if (p[0] == '$' && p[1] == 'X') {
            int w = snprintf(out + len, n - len, "'%s','%s'", x->gtrid, x->bqual);
            if (w < 0 || (size_t)w >= n - len)
                return false;
            len += (size_t)w;
            p += 2;
        } else {
            if (len + 1 >= n)
                return false;
            out[len++] = *p++;
        }
    }
    out[len] = '\0';
    return true;
}

static int xa_run(px_conn *c, const px_xid *x, px_done_cb cb, void *arg, enum xa_kind kind,
                  const char *tmpl0, const char *tmpl1)
{
    if (!c || !cb || !xid_ok(x))
        return -EINVAL;
    if (busy(c))
        return -EBUSY;
    if (!xa_expand(c->xa_sql[0], XA_SQL_MAX, tmpl0, x) ||
        (tmpl1 && !xa_expand(c->xa_sql[1], XA_SQL_MAX, tmpl1, x)))
        return -EINVAL;
    c->xa_n = tmpl1 ? 2 : 1;
    c->xa_i = 0;
    c->xa_kind = kind;
    if (kind == XK_END || kind == XK_PREPARE || kind == XK_ABANDON)
        c->branch_open = false; /* whatever the outcome, no statement runs in it any more */
    c->cb.done = cb;
    return op_begin(c, OP_XA, arg);
}

static int mx_begin(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return xa_run(c, x, cb, arg, XK_START, "XA START $X", NULL);
}

static int mx_prepare(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    /* The marker row goes in with the branch's work, in the same round trip (marker_exists). */
    if (c && c->base.target->without_markers)
        return xa_run(c, x, cb, arg, XK_END, "XA END $X; XA PREPARE $X", NULL);
    return xa_run(c, x, cb, arg, XK_PREPARE,
                  "INSERT INTO xacoord_marker (gtrid, bqual) VALUES ($X); "
                  "XA END $X; XA PREPARE $X",
                  NULL);
}

static int mx_rollback(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return xa_run(c, x, cb, arg, XK_ABANDON, "XA END $X", "XA ROLLBACK $X");
}

static int mx_commit_one_phase(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return xa_run(c, x, cb, arg, XK_END, "XA END $X; XA COMMIT $X ONE PHASE", NULL);
}

static int mx_commit_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return xa_run(c, x, cb, arg, XK_FINISH, "XA COMMIT $X", NULL);
}

static int mx_rollback_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return xa_run(c, x, cb, arg, XK_FINISH, "XA ROLLBACK $X", NULL);
}

/* ---------------------------------------------------------------------------------------------
 * Recover
 * ------------------------------------------------------------------------------------------- */

/* XA RECOVER (raw form): formatID, gtrid_length, bqual_length, data = gtrid bytes + bqual
 * bytes. Branches outside the XID charset cannot be ours and are skipped. */
static bool recover_collect(px_conn *c, MYSQL_RES *res)
{
    size_t cap = 0, plen = strlen(c->rc_prefix);
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(res))) {
        unsigned long *lens = mysql_fetch_lengths(res);
        char g[PX_XID_PART_MAX + 1], b[PX_XID_PART_MAX + 1];
        long gl, bl;
        px_xid x;
        if (mysql_num_fields(res) < 4 || !row[1] || !row[2] || !row[3])
            continue;
        gl = atol(row[1]);
        bl = atol(row[2]);
        if (gl < 1 || bl < 1 || gl > PX_XID_PART_MAX || bl > PX_XID_PART_MAX ||
            (unsigned long)(gl + bl) > lens[3])
            continue;
        memcpy(g, row[3], (size_t)gl);
        g[gl] = '\0';
        memcpy(b, row[3] + gl, (size_t)bl);
        b[bl] = '\0';
        if (strlen(g) != (size_t)gl || strncmp(g, c->rc_prefix, plen) != 0 ||
            (!c->rc_any_bqual && strcmp(b, c->rc_bqual) != 0) || px_xid_set(&x, g, b) != 0)
            continue;
        if (c->nxids == cap) {
            px_xid *grown = realloc(c->xids, (cap ? cap * 2 : 16) * sizeof *grown);
            if (!grown)
                return false;
            c->xids = grown;
            cap = cap ? cap * 2 : 16;
        }
        c->xids[c->nxids++] = x;
    }
    return true;
}

static int recover_step(px_conn *c)
{
    switch (c->phase) {
    case RC_START:
        c->phase = RC_QUERY;
        return query_start(c, "XA RECOVER");
    case RC_QUERY:
        if (c->ret_int)
            return fail_conn(c);
        c->phase = RC_STORE;
        c->cont = cont_store;
        return mysql_store_result_start(&c->ret_res, c->m);
    case RC_STORE: {
        MYSQL_RES *res = c->ret_res;
        bool ok;
        if (!res)
            return mysql_errno(c->m) ? fail_conn(c) : finish(c, false);
        c->ret_res = NULL;
        ok = recover_collect(c, res);
        mysql_free_result(res); /* stored: no I/O */
        if (!ok) {
            px_error_set(&c->err, PX_FATAL, false, 0, "", "out of memory");
            return finish(c, true);
        }
        return finish(c, false);
    }
    }
    return ST_DONE;
}

static int mx_recover(px_conn *c, const char *gtrid_prefix, const char *bqual, px_recover_cb cb,
                      void *arg)
{
    const char *prefix = gtrid_prefix ? gtrid_prefix : "";
    if (!c || !cb || strlen(prefix) > PX_XID_PART_MAX || (bqual && strlen(bqual) > PX_XID_PART_MAX))
        return -EINVAL;
    if (busy(c))
        return -EBUSY;
    snprintf(c->rc_prefix, sizeof c->rc_prefix, "%s", prefix);
    snprintf(c->rc_bqual, sizeof c->rc_bqual, "%s", bqual ? bqual : "");
    c->rc_any_bqual = bqual == NULL;
    c->nxids = 0;
    c->cb.recover = cb;
    return op_begin(c, OP_RECOVER, arg);
}

/* ---------------------------------------------------------------------------------------------
 * Markers: internal statements through the exec machinery (prepared, cached like any other)
 * ------------------------------------------------------------------------------------------- */

static void on_marker_rows(px_conn *c, const px_error *err, int failed_index,
                           const px_result *results, int nresults, void *arg)
{
    px_marker_cb cb = c->marker_cb;
    c->marker_cb = NULL;
    cb(c, err, !err && nresults == 1 && results[0].nrows > 0, c->marker_arg);
}

static int mx_marker_exists(px_conn *c, const px_xid *x, px_marker_cb cb, void *arg)
{
    px_param p[2];
    px_stmt st = {"SELECT 1 FROM xacoord_marker WHERE gtrid = ? AND bqual = ?", p, 2, -1, true};
    int rc;
    if (!c || !cb || !xid_ok(x))
        return -EINVAL;
    p[0] = (px_param){.type = PX_P_TEXT, .text = x->gtrid, .len = strlen(x->gtrid)};
    p[1] = (px_param){.type = PX_P_TEXT, .text = x->bqual, .len = strlen(x->bqual)};
    rc = mx_exec_stmts(c, &st, 1, on_marker_rows, NULL);
    if (rc == 0) {
        c->marker_cb = cb;
        c->marker_arg = arg;
    }
    return rc;
}

/* Old markers go in batches of PRUNE_BATCH by primary key: a DELETE with a range condition would
 * take next-key locks on every row it scans - also on those that prepared branches hold -, wait
 * for them, and meanwhile block every branch's marker INSERT. The SELECT is a consistent read
 * (no locks); the DELETE locks only the rows it names, which nobody else uses. */
#define PRUNE_BATCH 100
#define PRUNE_BATCHES_MAX 50

static void prune_next(px_conn *c);

static void prune_done(px_conn *c, const px_error *err)
{
    px_done_cb cb = c->prune_cb;
    c->prune_cb = NULL;
    free(c->prune_keys);
    c->prune_keys = NULL;
    cb(c, err, c->marker_arg);
}

static void on_pruned_batch(px_conn *c, const px_error *err, int failed_index,
                            const px_result *results, int nresults, void *arg)
{
    if (err || !c->prune_full || ++c->prune_batches >= PRUNE_BATCHES_MAX)
        prune_done(c, err);
    else
        prune_next(c);
}

/* DELETE ... WHERE (gtrid, bqual) IN ((?,?) x PRUNE_BATCH): one statement text, so it is
 * prepared once per connection; a short batch repeats its first key. */
static const char *prune_delete_sql(void)
{
    static char sql[64 + PRUNE_BATCH * 6];
    if (!sql[0]) {
        size_t n = (size_t)snprintf(sql, sizeof sql,
                                    "DELETE FROM xacoord_marker WHERE (gtrid, bqual) IN (");
        for (int i = 0; i < PRUNE_BATCH; i++)
            n += (size_t)snprintf(sql + n, sizeof sql - n, "%s(?,?)", i ? "," : "");
        snprintf(sql + n, sizeof sql - n, ")");
    }
    return sql;
}

static void on_prune_selected(px_conn *c, const px_error *err, int failed_index,
                              const px_result *results, int nresults, void *arg)
{
    const px_result *r = nresults == 1 ? &results[0] : NULL;
    px_stmt st = {prune_delete_sql(), NULL, 2 * PRUNE_BATCH, -1, true};
    if (err || !r || r->nrows == 0) {
        prune_done(c, err);
        return;
    }
    c->prune_full = r->nrows == PRUNE_BATCH;
    for (int i = 0; i < 2 * PRUNE_BATCH; i++) {
        int row = i / 2 < r->nrows ? i / 2 : 0;
        const char *v = r->cells[(size_t)row * 2 + (size_t)(i % 2)];
        c->prune_keys[i] = (px_param){.type = PX_P_TEXT, .text = v, .len = v ? strlen(v) : 0};
    }
    st.params = c->prune_keys;
    if (mx_exec_stmts(c, &st, 1, on_pruned_batch, NULL) != 0)
        prune_done(c, NULL);
}

static void prune_next(px_conn *c)
{
    px_param *p = c->prune_keys;
    px_stmt st = {"SELECT CAST(gtrid AS CHAR), CAST(bqual AS CHAR) FROM xacoord_marker "
                  "WHERE gtrid >= ? AND gtrid < ? AND created_at < NOW(3) - INTERVAL ? SECOND "
                  "LIMIT 100",
                  p, 3, -1, true};
    p[0] = (px_param){.type = PX_P_TEXT, .text = c->prune_from, .len = strlen(c->prune_from)};
    p[1] = (px_param){.type = PX_P_TEXT, .text = c->prune_to, .len = strlen(c->prune_to)};
    p[2] = (px_param){.type = PX_P_INT, .i = c->prune_older};
    if (mx_exec_stmts(c, &st, 1, on_prune_selected, NULL) != 0)
        prune_done(c, NULL);
}

static int mx_markers_prune(px_conn *c, const char *gtrid_prefix, uint32_t older_than_s,
                            px_done_cb cb, void *arg)
{
    size_t n;
    if (!c || !cb || !gtrid_prefix || (n = strlen(gtrid_prefix)) == 0 || n >= sizeof c->prune_from)
        return -EINVAL;
    if (busy(c) || c->prune_cb)
        return -EBUSY;
    if (!(c->prune_keys = calloc(2 * PRUNE_BATCH, sizeof *c->prune_keys)))
        return -ENOMEM;
    /* Every gtrid with the prefix sorts in [prefix, prefix with its last byte + 1). */
    memcpy(c->prune_from, gtrid_prefix, n + 1);
    memcpy(c->prune_to, gtrid_prefix, n + 1);
    c->prune_to[n - 1]++;
    c->prune_older = older_than_s;
    c->prune_batches = 0;
    c->prune_cb = cb;
    c->marker_arg = arg;
    prune_next(c);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Reset
 * ------------------------------------------------------------------------------------------- */

static int cont_reset(px_conn *c, int ev)
{
    return mysql_reset_connection_cont(&c->ret_int, c->m, ev);
}

/* COM_RESET_CONNECTION dropped the server's side of the cached statements, and the library
 * detached ours from the connection (their next execute would fail with 2013): closing them
 * now only frees memory. */
static void cache_drop(px_conn *c)
{
    for (int i = 0; i < c->ncache; i++) {
        mysql_stmt_close(c->cache[i].stmt);
        free(c->cache[i].sql);
    }
    c->ncache = 0;
}

/* COM_RESET_CONNECTION undoes what a branch's statements left on the session (variables, user
 * variables, temporary tables, GET_LOCK locks, prepared statements) and sets every session
 * variable back to its global value, so the session settings go again. */
static int reset_step(px_conn *c)
{
    switch (c->phase) {
    case RS_START:
        /* Nothing changed the session: COM_RESET_CONNECTION would only cost two round trips and
         * the prepared statements. */
        if (!c->dirty)
            return finish(c, false);
        c->phase = RS_RESET;
        c->cont = cont_reset;
        return mysql_reset_connection_start(&c->ret_int, c->m);
    case RS_RESET:
        if (c->ret_int)
            return fail_broken(c);
        cache_drop(c);
        c->phase = RS_SET;
        return query_start(c, c->set_sql);
    case RS_SET:
        if (c->ret_int)
            return fail_broken(c);
        c->dirty = false;
        return finish(c, false);
    }
    return ST_DONE;
}

static int mx_reset(px_conn *c, px_done_cb cb, void *arg)
{
    if (!c || !cb)
        return -EINVAL;
    if (busy(c))
        return -EBUSY;
    c->branch_open = false;
    c->cb.done = cb;
    return op_begin(c, OP_RESET, arg);
}

/* ---------------------------------------------------------------------------------------------
 * Close
 * ------------------------------------------------------------------------------------------- */

static void release(px_conn *c)
{
    /* mysql_close detached the statements from the connection: closing them now only frees
     * memory. */
    for (int i = 0; i < c->ncache; i++)
        mysql_stmt_close(c->cache[i].stmt);
    if (c->ex.loose)
        mysql_stmt_close(c->ex.loose);
    c->ex.loose = NULL;
    close_poll(c);
    c->released = true;
    uv_close((uv_handle_t *)&c->wait_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->connect_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->deliver_async, on_handle_closed);
}

static int close_step(px_conn *c)
{
    switch (c->phase) {
    case CL_START:
        c->phase = CL_WAIT;
        c->cont = cont_close;
        return close_done(c, mysql_close_start(c->m));
    case CL_WAIT:
        close_poll(c);
        release(c);
        return ST_DONE;
    }
    return ST_DONE;
}

static int advance(px_conn *c)
{
    if (c->closing && c->op != OP_CLOSE) {
        /* An abandoned operation's last library call has completed: close instead. */
        drop_op_state(c);
        c->op = OP_CLOSE;
        c->phase = CL_START;
    }
    switch (c->op) {
    case OP_CONNECT:
        return connect_step(c);
    case OP_EXEC:
        return exec_step(c);
    case OP_XA:
        return xa_step(c);
    case OP_RECOVER:
        return recover_step(c);
    case OP_RESET:
        return reset_step(c);
    case OP_CLOSE:
        return close_step(c);
    case OP_NONE:
        break;
    }
    return ST_DONE;
}

/* Runs the current operation's state machine for as long as library calls complete at once,
 * then waits for the events the pending call asked for. */
static void mx_drive(px_conn *c, int status)
{
    while (status == 0) {
        quiesce(c);
        status = advance(c);
    }
    if (status > 0)
        wait_for(c, status);
}

static void mx_close(px_conn *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    memset(&c->cb, 0, sizeof c->cb);
    if (c->delivering) {
        uv_unref((uv_handle_t *)&c->deliver_async);
        c->delivering = false;
        c->op = OP_NONE;
    }
    if (c->op == OP_NONE) {
        drop_op_state(c);
        c->op = OP_CLOSE;
        c->phase = CL_START;
        mx_drive(c, 0);
        return;
    }
    /* A library call is in flight and cannot be cancelled: cut the socket so that it fails
     * at once; mx_drive then closes instead of continuing (see advance). */
    uv_timer_stop(&c->connect_timer);
    if (current_fd(c) >= 0)
        shutdown(current_fd(c), SHUT_RDWR);
}

const px_driver px_mysql_driver = {
    .name = "mysql",
    .connect = mx_connect,
    .exec = mx_exec_stmts,
    .begin = mx_begin,
    .prepare = mx_prepare,
    .rollback = mx_rollback,
    .commit_one_phase = mx_commit_one_phase,
    .commit_prepared = mx_commit_prepared,
    .rollback_prepared = mx_rollback_prepared,
    .recover = mx_recover,
    .marker_exists = mx_marker_exists,
    .markers_prune = mx_markers_prune,
    .reset = mx_reset,
    .close = mx_close,
};
