/*
 * The in-memory participant driver (see memory.h): a registry of fake servers, each a hash table of
 * branches by XID (prepared ones, and a bounded FIFO of finished ones that answers "what happened
 * to this XID"), and connections that complete every operation on a later loop turn. It exists so
 * that the engine can be tested without a database and so that the benchmark can measure the
 * coordinator's own cost, which is why the zero-latency path allocates nothing per operation but
 * an exec's result array and a prepared branch's table entry.
 */
#include "memory.h"

#include "list.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------------------------ */
/* Servers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct mem_branch {
    px_xid xid;
    px_memory_state state;
    struct mem_branch *hnext; /* hash chain */
    list_node fin;            /* on the server's finished FIFO; unlinked while prepared */
} mem_branch;

typedef struct mem_fault {
    px_errclass cls;
    int code;  /* the error code they carry */
    int times; /* calls left that fail with cls */
    int lose;  /* calls left whose reply is lost */
} mem_fault;

typedef struct mem_server {
    char *name;
    list_node node; /* in the registry */
    unsigned refs;  /* connections that point at it */
    bool detached;  /* dropped by px_memory_reset while connections still used it */
    bool down;
    unsigned latency_ms;
    mem_fault fault[PX_MEM_NOPS];
    px_memory_stats st;
    mem_branch **buckets;
    size_t nbuckets, nentries;
    list_head finished; /* mem_branch, oldest first */
    mem_branch *spare;  /* the last evicted entry, reused so that steady state allocates nothing */
} mem_server;

/* The process-wide registry of servers by name (the one global state memory.h documents). */
static list_head registry;

static const char *const op_names[PX_MEM_NOPS] = {
    "connect",          "begin",    "exec",    "prepare", "commit_prepared", "rollback_prepared",
    "commit_one_phase", "rollback", "recover", "reset",   "marker_exists",   "markers_prune",
};

static size_t xid_hash(const px_xid *x)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = x->gtrid; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ '.') * 1099511628211ULL;
    for (const char *p = x->bqual; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)h;
}

static bool xid_eq(const px_xid *a, const px_xid *b)
{
    return strcmp(a->gtrid, b->gtrid) == 0 && strcmp(a->bqual, b->bqual) == 0;
}

/* The link that points at x's entry, or the NULL link at the end of its chain. */
static mem_branch **branch_link(mem_server *s, const px_xid *x)
{
    mem_branch **link = &s->buckets[xid_hash(x) & (s->nbuckets - 1)];
    while (*link && !xid_eq(&(*link)->xid, x))
        link = &(*link)->hnext;
    return link;
}

static mem_branch *branch_find(mem_server *s, const px_xid *x)
{
    return s->nbuckets ? *branch_link(s, x) : NULL;
}

static bool table_grow(mem_server *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
    mem_branch **nb = calloc(n, sizeof *nb);
    if (!nb)
        return false;
    for (size_t i = 0; i < s->nbuckets; i++) {
        mem_branch *b = s->buckets[i], *next;
        for (; b; b = next) {
            size_t k = xid_hash(&b->xid) & (n - 1);
            next = b->hnext;
            b->hnext = nb[k];
            nb[k] = b;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
    return true;
}

/* Finds x's entry or adds one (state PX_MEM_NONE). A finished entry leaves the FIFO: its caller
 * is about to give it a new state. NULL when out of memory. */
static mem_branch *branch_put(mem_server *s, const px_xid *x)
{
    mem_branch *b, **link;
    if (s->nentries >= s->nbuckets && !table_grow(s))
        return NULL;
    link = branch_link(s, x);
    if ((b = *link)) {
        if (b->state != PX_MEM_PREPARED)
            list_remove(&s->finished, &b->fin);
        return b;
    }
    b = s->spare ? s->spare : malloc(sizeof *b);
    if (!b)
        return NULL;
    s->spare = NULL;
    memset(b, 0, sizeof *b);
    b->xid = *x;
    *link = b;
    s->nentries++;
    return b;
}

/* Gives b a final state and forgets the oldest finished branch beyond the bound. */
static void branch_finish(mem_server *s, mem_branch *b, px_memory_state state)
{
    b->state = state;
    list_push_tail(&s->finished, &b->fin);
    if (list_count(&s->finished) > PX_MEMORY_OUTCOMES_MAX) {
        mem_branch *old = list_entry(list_first(&s->finished), mem_branch, fin);
        list_remove(&s->finished, &old->fin);
        *branch_link(s, &old->xid) = old->hnext;
        s->nentries--;
        free(s->spare);
        s->spare = old;
    }
}

/* Outcome memory is best effort: when it cannot get an entry the server still did the work. An
 * XID that is prepared (planted while a connection had it open) keeps its prepared entry. */
static void record_outcome(mem_server *s, const px_xid *x, px_memory_state state)
{
    mem_branch *b = branch_put(s, x);
    if (b && b->state != PX_MEM_PREPARED)
        branch_finish(s, b, state);
}

static void server_free(mem_server *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        mem_branch *b = s->buckets[i], *next;
        for (; b; b = next) {
            next = b->hnext;
            free(b);
        }
    }
    free(s->buckets);
    free(s->spare);
    free(s->name);
    free(s);
}

static mem_server *server_find(const char *name)
{
    if (!name)
        return NULL;
    list_each(n, &registry) {
        mem_server *s = list_entry(n, mem_server, node);
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static mem_server *server_get(const char *name)
{
    mem_server *s = server_find(name);
    if (s || !name)
        return s;
    if (!(s = calloc(1, sizeof *s)) || !(s->name = strdup(name))) {
        free(s);
        return NULL;
    }
    list_push_head(&registry, &s->node);
    return s;
}

static void server_unref(mem_server *s)
{
    if (--s->refs == 0 && s->detached)
        server_free(s);
}

void px_memory_reset(void)
{
    while (!list_empty(&registry)) {
        mem_server *s = list_entry(list_first(&registry), mem_server, node);
        list_remove(&registry, &s->node);
        if (s->refs == 0)
            server_free(s);
        else
            s->detached = true;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Control API                                                                                */
/* ------------------------------------------------------------------------------------------ */

void px_memory_stats_get(const char *name, px_memory_stats *out)
{
    mem_server *s = server_find(name);
    if (s)
        *out = s->st;
    else
        memset(out, 0, sizeof *out);
}

void px_memory_fail_code(const char *name, px_memory_op op, px_errclass cls, int code, int times)
{
    mem_server *s = server_get(name);
    if (!s || op < 0 || op >= PX_MEM_NOPS)
        return;
    s->fault[op].cls = cls;
    s->fault[op].code = code;
    s->fault[op].times = cls == PX_OK ? 0 : times;
}

void px_memory_fail(const char *name, px_memory_op op, px_errclass cls, int times)
{
    px_memory_fail_code(name, op, cls, 0, times);
}

void px_memory_lose_reply(const char *name, px_memory_op op, int times)
{
    mem_server *s = server_get(name);
    if (s && op >= 0 && op < PX_MEM_NOPS)
        s->fault[op].lose = times;
}

void px_memory_set_down(const char *name, bool down)
{
    mem_server *s = server_get(name);
    if (s)
        s->down = down;
}

void px_memory_set_latency_ms(const char *name, unsigned ms)
{
    mem_server *s = server_get(name);
    if (s)
        s->latency_ms = ms;
}

size_t px_memory_prepared_count(const char *name)
{
    mem_server *s = server_find(name);
    return s ? s->st.prepared_now : 0;
}

int px_memory_add_prepared(const char *name, const px_xid *x)
{
    mem_server *s = server_get(name);
    mem_branch *b;
    if (s && px_memory_outcome(name, x) == PX_MEM_PREPARED)
        return -EEXIST;
    if (!s || !(b = branch_put(s, x)))
        return -ENOMEM;
    b->state = PX_MEM_PREPARED;
    s->st.prepared_now++;
    return 0;
}

int px_memory_finish_prepared(const char *name, const px_xid *x, bool commit)
{
    mem_server *s = server_find(name);
    mem_branch *b = s ? branch_find(s, x) : NULL;
    if (!b || b->state != PX_MEM_PREPARED)
        return -ENOENT;
    s->st.prepared_now--;
    if (commit)
        s->st.committed++;
    else
        s->st.rolled_back_prepared++;
    branch_finish(s, b, commit ? PX_MEM_COMMITTED : PX_MEM_ROLLED_BACK);
    return 0;
}

bool px_memory_is_prepared(const char *name, const px_xid *x)
{
    return px_memory_outcome(name, x) == PX_MEM_PREPARED;
}

px_memory_state px_memory_outcome(const char *name, const px_xid *x)
{
    mem_server *s = server_find(name);
    mem_branch *b = s ? branch_find(s, x) : NULL;
    return b ? b->state : PX_MEM_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* The outcome of an exec, computed when it starts so that the statements need not outlive the
 * call; one allocation per exec. */
typedef struct mem_outcome {
    px_error err; /* cls PX_OK when every statement succeeded */
    int failed_index;
    int nresults;
    int executed;
    px_result results[];
} mem_outcome;

/*
 * A zero-latency operation completes from the connection's uv_idle handle. Starting and stopping
 * an idle handle is a list insert and remove, with no syscall and no allocation; uv_async would
 * write to an eventfd, and a 0 ms timer costs a heap insert. While any idle handle is active the
 * loop polls without blocking, so the operation completes on the next iteration, never inside the
 * starting call. Operations with latency use the timer instead.
 */
struct px_conn {
    struct px_conn_base base; /* first: generic code reads the driver from it */
    mem_server *srv;
    uv_idle_t idle;
    uv_timer_t timer;
    int open_handles;
    bool connected, broken, closing;
    bool in_branch; /* a branch is begun and not yet prepared or ended */
    px_xid branch;
    px_memory_op op; /* in flight; PX_MEM_NOPS when none */
    union {
        px_connect_cb connect;
        px_done_cb done;
        px_exec_cb exec;
        px_recover_cb recover;
        px_marker_cb marker;
    } cb;
    void *arg;
    px_xid xid;
    mem_outcome *ex;
    char prefix[PX_XID_PART_MAX + 1];
    char bqual[PX_XID_PART_MAX + 1]; /* "" matches any */
};

static void on_handle_closed(uv_handle_t *h)
{
    px_conn *c = h->data;
    if (--c->open_handles == 0) {
        server_unref(c->srv);
        free(c);
    }
}

static void close_handles(px_conn *c)
{
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void exec_free(mem_outcome *ex)
{
    if (!ex)
        return;
    for (int i = 0; i < ex->nresults; i++)
        px_result_free(&ex->results[i]);
    free(ex);
}

static void rollback_open(px_conn *c)
{
    if (!c->in_branch)
        return;
    c->in_branch = false;
    c->srv->st.rolled_back++;
    record_outcome(c->srv, &c->branch, PX_MEM_ROLLED_BACK);
}

static void conn_break(px_conn *c)
{
    c->broken = true;
    rollback_open(c);
}

/* Server down, broken connection or an injected fault: fills err and returns true. */
static bool op_refused(px_conn *c, px_memory_op op, px_error *err)
{
    mem_server *s = c->srv;
    mem_fault *f = &s->fault[op];
    if (c->broken || s->down) {
        conn_break(c);
        px_error_set(err, PX_RETRYABLE, true, 0, "08006", "%s: connection lost (server down)",
                     s->name);
        return true;
    }
    if (f->times > 0) {
        f->times--;
        px_error_set(err, f->cls, false, f->code, "XX000", "%s: injected %s failure (%s)", s->name,
                     op_names[op], px_errclass_name(f->cls));
        if (op == PX_MEM_PREPARE || op == PX_MEM_COMMIT_ONE_PHASE)
            rollback_open(c);
        return true;
    }
    return false;
}

/* After the server acted: maybe the reply never reaches the caller. */
static void maybe_lose_reply(px_conn *c, px_memory_op op, px_error *err)
{
    mem_fault *f = &c->srv->fault[op];
    if (err->cls != PX_OK || f->lose <= 0)
        return;
    f->lose--;
    conn_break(c);
    px_error_set(err, PX_RETRYABLE, true, 0, "08006", "%s: connection lost after %s", c->srv->name,
                 op_names[op]);
}

static bool branch_is_open(px_conn *c, px_error *err)
{
    char gid[2 * PX_XID_PART_MAX + 2];
    if (c->in_branch && xid_eq(&c->branch, &c->xid))
        return true;
    px_xid_gid(&c->xid, gid, sizeof gid);
    px_error_set(err, PX_FATAL, false, 0, "XX000", "%s: branch %s is not open on this connection",
                 c->srv->name, gid);
    return false;
}

static void do_begin(px_conn *c, px_error *err)
{
    mem_branch *b = branch_find(c->srv, &c->xid);
    if (c->in_branch) {
        px_error_set(err, PX_FATAL, false, 0, "XX000", "%s: a branch is already open",
                     c->srv->name);
    } else if (b && b->state == PX_MEM_PREPARED) {
        px_error_set(err, PX_FATAL, false, 0, "XX000", "%s: xid %s already in use", c->srv->name,
                     c->xid.gtrid);
    } else {
        c->in_branch = true;
        c->branch = c->xid;
        c->srv->st.begun++;
    }
}

static void do_prepare(px_conn *c, px_error *err)
{
    mem_server *s = c->srv;
    mem_branch *b;
    if (!branch_is_open(c, err))
        return;
    b = branch_put(s, &c->xid);
    if (!b || b->state == PX_MEM_PREPARED) {
        px_error_set(err, PX_FATAL, false, 0, "XX000", "%s: cannot prepare %s: %s", s->name,
                     c->xid.gtrid, b ? "xid already in use" : "out of memory");
        rollback_open(c);
        return;
    }
    b->state = PX_MEM_PREPARED;
    c->in_branch = false;
    s->st.prepared++;
    s->st.prepared_now++;
}

static void do_commit_one_phase(px_conn *c, px_error *err)
{
    if (!branch_is_open(c, err))
        return;
    c->in_branch = false;
    c->srv->st.committed_one_phase++;
    record_outcome(c->srv, &c->xid, PX_MEM_COMMITTED);
}

static void do_rollback(px_conn *c, px_error *err)
{
    if (c->in_branch && branch_is_open(c, err))
        rollback_open(c);
}

static void do_finish_prepared(px_conn *c, bool commit, px_error *err)
{
    mem_server *s = c->srv;
    mem_branch *b = branch_find(s, &c->xid);
    char gid[2 * PX_XID_PART_MAX + 2];
    if (!b || b->state != PX_MEM_PREPARED) {
        px_xid_gid(&c->xid, gid, sizeof gid);
        px_error_set(err, PX_XID_NOT_FOUND, false, 0, "42704",
                     "%s: prepared transaction %s does not exist", s->name, gid);
        return;
    }
    s->st.prepared_now--;
    if (commit)
        s->st.committed++;
    else
        s->st.rolled_back_prepared++;
    branch_finish(s, b, commit ? PX_MEM_COMMITTED : PX_MEM_ROLLED_BACK);
}

static void complete_done(px_conn *c, px_memory_op op)
{
    px_done_cb cb = c->cb.done;
    px_error err;
    err.cls = PX_OK;
    if (!op_refused(c, op, &err)) {
        switch (op) {
        case PX_MEM_BEGIN:
            do_begin(c, &err);
            break;
        case PX_MEM_PREPARE:
            do_prepare(c, &err);
            break;
        case PX_MEM_COMMIT_ONE_PHASE:
            do_commit_one_phase(c, &err);
            break;
        case PX_MEM_ROLLBACK:
            do_rollback(c, &err);
            break;
        case PX_MEM_COMMIT_PREPARED:
            do_finish_prepared(c, true, &err);
            break;
        case PX_MEM_ROLLBACK_PREPARED:
            do_finish_prepared(c, false, &err);
            break;
        case PX_MEM_RESET:
            c->srv->st.resets++;
            break;
        default:
            break;
        }
        maybe_lose_reply(c, op, &err);
    }
    cb(c, err.cls == PX_OK ? NULL : &err, c->arg);
}

static void complete_exec(px_conn *c)
{
    px_exec_cb cb = c->cb.exec;
    mem_outcome *ex = c->ex;
    px_error err;
    err.cls = PX_OK;
    c->ex = NULL; /* the callback may start another exec on this connection */
    if (op_refused(c, PX_MEM_EXEC, &err)) {
        cb(c, &err, 0, NULL, 0, c->arg);
    } else {
        c->srv->st.executed += (uint64_t)ex->executed;
        if (ex->err.cls != PX_OK)
            err = ex->err;
        maybe_lose_reply(c, PX_MEM_EXEC, &err);
        if (err.cls == PX_OK)
            cb(c, NULL, -1, ex->results, ex->nresults, c->arg);
        else if (ex->err.cls == PX_OK) /* a lost reply: nothing came back */
            cb(c, &err, 0, NULL, 0, c->arg);
        else
            cb(c, &err, ex->failed_index, ex->results, ex->nresults, c->arg);
    }
    exec_free(ex);
}

static bool prefix_match(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void complete_recover(px_conn *c)
{
    px_recover_cb cb = c->cb.recover;
    mem_server *s = c->srv;
    px_xid *xids = NULL;
    size_t n = 0;
    px_error err;
    err.cls = PX_OK;
    if (!op_refused(c, PX_MEM_RECOVER, &err) &&
        !(xids = malloc((s->st.prepared_now ? s->st.prepared_now : 1) * sizeof *xids)))
        px_error_set(&err, PX_FATAL, false, 0, "", "%s: out of memory", s->name);
    for (size_t i = 0; xids && i < s->nbuckets; i++)
        for (mem_branch *b = s->buckets[i]; b; b = b->hnext)
            if (b->state == PX_MEM_PREPARED && prefix_match(b->xid.gtrid, c->prefix) &&
                (!c->bqual[0] || strcmp(b->xid.bqual, c->bqual) == 0))
                xids[n++] = b->xid;
    maybe_lose_reply(c, PX_MEM_RECOVER, &err);
    if (err.cls == PX_OK)
        cb(c, NULL, xids, n, c->arg);
    else
        cb(c, &err, NULL, 0, c->arg);
    free(xids);
}

/* A real server's marker row commits with the branch's work: visible once the branch committed,
 * never after a rollback (nor, to other sessions, while it is prepared). */
static void complete_marker(px_conn *c)
{
    px_marker_cb cb = c->cb.marker;
    mem_branch *b = branch_find(c->srv, &c->xid);
    px_error err;
    err.cls = PX_OK;
    op_refused(c, PX_MEM_MARKER, &err);
    maybe_lose_reply(c, PX_MEM_MARKER, &err);
    if (err.cls != PX_OK)
        cb(c, &err, false, c->arg);
    else
        cb(c, NULL, b && b->state == PX_MEM_COMMITTED, c->arg);
}

static void complete_connect(px_conn *c)
{
    px_connect_cb cb = c->cb.connect;
    mem_server *s = c->srv;
    px_error err;
    err.cls = PX_OK;
    if (s->down)
        px_error_set(&err, PX_RETRYABLE, true, 0, "08001", "%s: connection refused (server down)",
                     s->name);
    else
        op_refused(c, PX_MEM_CONNECT, &err);
    maybe_lose_reply(c, PX_MEM_CONNECT, &err);
    if (err.cls != PX_OK) {
        s->st.connect_failures++;
        c->closing = true;
        close_handles(c);
        cb(NULL, &err, c->arg);
        return;
    }
    c->connected = true;
    s->st.connects++;
    s->st.connections++;
    cb(c, NULL, c->arg);
}

static void complete(px_conn *c)
{
    px_memory_op op = c->op;
    c->op = PX_MEM_NOPS;
    switch (op) {
    case PX_MEM_CONNECT:
        complete_connect(c);
        break;
    case PX_MEM_EXEC:
        complete_exec(c);
        break;
    case PX_MEM_RECOVER:
        complete_recover(c);
        break;
    case PX_MEM_MARKER:
        complete_marker(c);
        break;
    case PX_MEM_NOPS:
        break;
    default:
        complete_done(c, op);
        break;
    }
}

static void on_idle(uv_idle_t *h)
{
    uv_idle_stop(h);
    complete(h->data);
}

static void on_timer(uv_timer_t *t)
{
    complete(t->data);
}

static void op_start(px_conn *c, px_memory_op op, void *arg, uint64_t extra_ms)
{
    uint64_t delay = c->srv->latency_ms + extra_ms;
    c->op = op;
    c->arg = arg;
    if (delay == 0)
        uv_idle_start(&c->idle, on_idle);
    else
        uv_timer_start(&c->timer, on_timer, delay, 0);
}

static int op_check(px_conn *c)
{
    if (!c || c->closing)
        return -EINVAL;
    return c->op == PX_MEM_NOPS ? 0 : -EBUSY;
}

/* ------------------------------------------------------------------------------------------ */
/* Statements                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Returns the text after the leading word when sql starts with it (case-insensitive). */
static const char *word_arg(const char *sql, const char *word)
{
    size_t n = strlen(word);
    while (*sql == ' ' || *sql == '\t' || *sql == '\n')
        sql++;
    if (strncasecmp(sql, word, n) != 0 || (sql[n] && sql[n] != ' ' && sql[n] != '\t'))
        return NULL;
    for (sql += n; *sql == ' ' || *sql == '\t';)
        sql++;
    return sql;
}

static char *param_text(const px_param *p, px_coltype *type)
{
    char buf[64];
    *type = PX_COL_TEXT;
    switch (p->type) {
    case PX_P_NULL:
        return NULL;
    case PX_P_BOOL:
        *type = PX_COL_BOOL;
        return strdup(p->b ? "t" : "f");
    case PX_P_INT:
        *type = PX_COL_INT;
        snprintf(buf, sizeof buf, "%" PRId64, p->i);
        return strdup(buf);
    case PX_P_REAL:
        *type = PX_COL_REAL;
        snprintf(buf, sizeof buf, "%.17g", p->r);
        return strdup(buf);
    case PX_P_TEXT:
        return p->text ? strndup(p->text, p->len) : strdup("");
    }
    return NULL;
}

static bool echo_result(const px_stmt *st, px_result *r)
{
    int n = st->nparams > 0 ? st->nparams : 0;
    size_t cap = n ? (size_t)n : 1;
    r->colnames = calloc(cap, sizeof *r->colnames);
    r->coltypes = calloc(cap, sizeof *r->coltypes);
    r->cells = calloc(cap, sizeof *r->cells);
    if (!r->colnames || !r->coltypes || !r->cells)
        return false;
    r->ncols = n;
    r->nrows = 1;
    for (int i = 0; i < n; i++) {
        if (!(r->colnames[i] = strdup("value")))
            return false;
        r->cells[i] = param_text(&st->params[i], &r->coltypes[i]);
    }
    r->rows_affected = 1;
    return true;
}

static px_errclass error_class(const char *word)
{
    if (word_arg(word, "business"))
        return PX_BUSINESS;
    if (word_arg(word, "retryable"))
        return PX_RETRYABLE;
    return PX_FATAL;
}

/* Runs one statement into r; false with err filled when it fails. */
static bool run_stmt(const char *name, const px_stmt *st, px_result *r, px_error *err,
                     uint64_t *sleep_ms)
{
    const char *sql = st->sql ? st->sql : "", *a;
    r->rows_affected = 1;
    if ((a = word_arg(sql, "rows"))) {
        r->rows_affected = strtoll(a, NULL, 10);
    } else if ((a = word_arg(sql, "sleep"))) {
        *sleep_ms += strtoull(a, NULL, 10);
    } else if ((a = word_arg(sql, "error"))) {
        px_errclass cls = error_class(a);
        px_error_set(err, cls, false, 0, "XX000", "%s: %s error raised by statement", name,
                     px_errclass_name(cls));
        return false;
    } else if (word_arg(sql, "echo") && !echo_result(st, r)) {
        px_result_free(r);
        px_error_set(err, PX_FATAL, false, 0, "", "%s: out of memory", name);
        return false;
    }
    if (st->expect_rows >= 0 && r->rows_affected != st->expect_rows) {
        px_error_set(err, PX_BUSINESS, false, 0, "", "expected %" PRId64 " rows, got %" PRId64,
                     st->expect_rows, r->rows_affected);
        err->rows_mismatch = true;
        px_result_free(r);
        return false;
    }
    return true;
}

static void run_stmts(px_conn *c, mem_outcome *ex, const px_stmt *stmts, int n, uint64_t *sleep_ms)
{
    const char *name = c->srv->name;
    if (!c->in_branch) {
        px_error_set(&ex->err, PX_FATAL, false, 0, "XX000", "%s: exec with no branch begun", name);
        return;
    }
    for (int i = 0; i < n; i++) {
        ex->executed++;
        if (!run_stmt(name, &stmts[i], &ex->results[i], &ex->err, sleep_ms)) {
            ex->failed_index = i;
            return;
        }
        ex->nresults++;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Driver entry points                                                                        */
/* ------------------------------------------------------------------------------------------ */

static int mem_connect(uv_loop_t *loop, const px_target *t, px_connect_cb cb, void *arg)
{
    px_conn *c;
    mem_server *s;
    if (!loop || !t || !t->name || !cb)
        return -EINVAL;
    if (!(s = server_get(t->name)) || !(c = calloc(1, sizeof *c)))
        return -ENOMEM;
    c->base.driver = &px_memory_driver;
    c->base.target = t;
    c->srv = s;
    s->refs++;
    uv_idle_init(loop, &c->idle);
    uv_timer_init(loop, &c->timer);
    c->idle.data = c->timer.data = c;
    c->open_handles = 2;
    c->cb.connect = cb;
    op_start(c, PX_MEM_CONNECT, arg, 0);
    return 0;
}

static int mem_exec(px_conn *c, const px_stmt *stmts, int n, px_exec_cb cb, void *arg)
{
    uint64_t sleep_ms = 0;
    int rc = op_check(c);
    if (rc)
        return rc;
    if (n < 0 || (n > 0 && !stmts) || !cb)
        return -EINVAL;
    if (!(c->ex = calloc(1, sizeof *c->ex + (size_t)n * sizeof(px_result))))
        return -ENOMEM;
    c->ex->err.cls = PX_OK;
    run_stmts(c, c->ex, stmts, n, &sleep_ms);
    c->cb.exec = cb;
    op_start(c, PX_MEM_EXEC, arg, sleep_ms);
    return 0;
}

static int done_op(px_conn *c, px_memory_op op, const px_xid *x, px_done_cb cb, void *arg)
{
    int rc = op_check(c);
    if (rc)
        return rc;
    if (px_xid_check(x) != 0 || !cb)
        return -EINVAL;
    c->xid = *x;
    c->cb.done = cb;
    op_start(c, op, arg, 0);
    return 0;
}

static int mem_begin(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_BEGIN, x, cb, arg);
}

static int mem_prepare(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_PREPARE, x, cb, arg);
}

static int mem_rollback(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_ROLLBACK, x, cb, arg);
}

static int mem_commit_one_phase(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_COMMIT_ONE_PHASE, x, cb, arg);
}

static int mem_commit_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_COMMIT_PREPARED, x, cb, arg);
}

static int mem_rollback_prepared(px_conn *c, const px_xid *x, px_done_cb cb, void *arg)
{
    return done_op(c, PX_MEM_ROLLBACK_PREPARED, x, cb, arg);
}

/* An operation about no branch: it only completes (and counts, and can be made to fail). */
static int plain_op(px_conn *c, px_memory_op op, px_done_cb cb, void *arg)
{
    int rc = op_check(c);
    if (rc)
        return rc;
    if (!cb)
        return -EINVAL;
    c->cb.done = cb;
    op_start(c, op, arg, 0);
    return 0;
}

static int mem_reset(px_conn *c, px_done_cb cb, void *arg)
{
    return plain_op(c, PX_MEM_RESET, cb, arg);
}

static int mem_marker_exists(px_conn *c, const px_xid *x, px_marker_cb cb, void *arg)
{
    int rc = op_check(c);
    if (rc)
        return rc;
    if (px_xid_check(x) != 0 || !cb)
        return -EINVAL;
    c->xid = *x;
    c->cb.marker = cb;
    op_start(c, PX_MEM_MARKER, arg, 0);
    return 0;
}

static int mem_markers_prune(px_conn *c, const char *gtrid_prefix, uint32_t older_than_s,
                             px_done_cb cb, void *arg)
{
    (void)older_than_s;
    return gtrid_prefix ? plain_op(c, PX_MEM_PRUNE, cb, arg) : -EINVAL;
}

static int mem_recover(px_conn *c, const char *gtrid_prefix, const char *bqual, px_recover_cb cb,
                       void *arg)
{
    int rc = op_check(c);
    const char *p = gtrid_prefix ? gtrid_prefix : "", *q = bqual ? bqual : "";
    if (rc)
        return rc;
    if (!cb || strlen(p) > PX_XID_PART_MAX || strlen(q) > PX_XID_PART_MAX)
        return -EINVAL;
    strcpy(c->prefix, p);
    strcpy(c->bqual, q);
    c->cb.recover = cb;
    op_start(c, PX_MEM_RECOVER, arg, 0);
    return 0;
}

static void mem_close(px_conn *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    c->op = PX_MEM_NOPS; /* abandoned: uv_close stops the idle handle or timer */
    exec_free(c->ex);
    c->ex = NULL;
    if (c->connected) {
        c->srv->st.connections--;
        rollback_open(c);
    }
    close_handles(c);
}

const px_driver px_memory_driver = {
    .name = "memory",
    .connect = mem_connect,
    .exec = mem_exec,
    .begin = mem_begin,
    .prepare = mem_prepare,
    .rollback = mem_rollback,
    .commit_one_phase = mem_commit_one_phase,
    .commit_prepared = mem_commit_prepared,
    .rollback_prepared = mem_rollback_prepared,
    .recover = mem_recover,
    .marker_exists = mem_marker_exists,
    .markers_prune = mem_markers_prune,
    .reset = mem_reset,
    .close = mem_close,
};
