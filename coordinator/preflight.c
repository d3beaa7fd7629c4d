/*
 * Participant preflight (see preflight.h): the rules (preflight_judge), then the queries that
 * gather the facts - one small state machine per participant that borrows a pooled connection,
 * runs its dialect's probes one after another and judges what they found.
 */
#include "preflight.h"

#include "log.h"
#include "schema.h"

#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STATE_MAX 1024
/* Before the first verdict, retry soon (the participant takes no work until then). */
#define FIRST_RETRY_MS 200u

/* ---- the rules --------------------------------------------------------------------------- */

bool preflight_on(const char *v)
{
    return !strcmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "true") ||
           !strcasecmp(v, "yes");
}

typedef struct findings {
    preflight_finding *out;
    int n, max;
} findings;

/* Unsafe findings go before every warning, in the order they were found. */
static void __attribute__((format(printf, 3, 4)))
add(findings *fs, bool unsafe, const char *fmt, ...)
{
    int at = fs->n;
    va_list ap;
    if (fs->n == fs->max)
        return;
    if (unsafe)
        while (at > 0 && !fs->out[at - 1].unsafe)
            at--;
    memmove(&fs->out[at + 1], &fs->out[at], (size_t)(fs->n - at) * sizeof fs->out[0]);
    fs->out[at].unsafe = unsafe;
    va_start(ap, fmt);
    vsnprintf(fs->out[at].text, sizeof fs->out[at].text, fmt, ap);
    va_end(ap);
    fs->n++;
}

static void judge_schema(const preflight_facts *f, findings *fs)
{
    const schema_dialect *d = schema_for(f->postgres ? "postgres" : "mysql");
    if (f->schema_missing[0])
        add(fs, true, "table %s is missing: run `xacoord --init-participants CONFIG` or %s",
            f->schema_missing, d->file);
    else if (f->schema_denied[0])
        add(fs, true, "the coordinator's %s lacks %s%s: grant what %s lists",
            f->postgres ? "role" : "user", f->schema_denied,
            f->postgres ? "" : " (or the table is missing)", d->file);
    else if (f->schema_version < SCHEMA_VERSION)
        add(fs, true,
            "the xacoord schema has version %d, this coordinator needs %d: run "
            "`xacoord --init-participants CONFIG` or %s",
            f->schema_version, SCHEMA_VERSION, d->file);
}

/* Each transaction in flight holds at most one prepared branch per participant, so
 * max_inflight bounds what this coordinator prepares there. Below pool_size, transactions the
 * pool lets run at once already fail at PREPARE (0 disables two-phase commit altogether). */
static void judge_prepared(const preflight_facts *f, const preflight_need *need, findings *fs)
{
    long n = f->max_prepared_transactions;
    if (n < need->pool_size)
        add(fs, true, "max_prepared_transactions = %ld%s (set it to at least max_inflight, %d)", n,
            n == 0 ? " disables two-phase commit" : " is below pool_size", need->max_inflight);
    else if (n < need->max_inflight)
        add(fs, false,
            "max_prepared_transactions = %ld is below max_inflight %d: PREPARE TRANSACTION "
            "fails (53200) when more transactions are in flight",
            n, need->max_inflight);
}

static void judge_postgres(const preflight_facts *f, const preflight_need *need, findings *fs)
{
    if (!preflight_on(f->fsync))
        add(fs, true, "fsync = %s (set it to on)", f->fsync);
    /* off only: local flushes here before answering like on does. */
    if (!strcasecmp(f->synchronous_commit, "off"))
        add(fs, true, "synchronous_commit = %s (set it to on)", f->synchronous_commit);
    if (!preflight_on(f->full_page_writes))
        add(fs, true, "full_page_writes = %s (set it to on)", f->full_page_writes);
    if (f->in_recovery)
        add(fs, true,
            "the server is a standby in recovery and cannot prepare transactions "
            "(use the primary)");
    judge_prepared(f, need, fs);
}

static void judge_mysql(const preflight_facts *f, findings *fs)
{
    if (strcmp(f->flush_log_at_trx_commit, "1") != 0)
        add(fs, true, "innodb_flush_log_at_trx_commit = %s (set it to 1)",
            f->flush_log_at_trx_commit);
    if (preflight_on(f->log_bin) && strcmp(f->sync_binlog, "1") != 0)
        add(fs, true, "sync_binlog = %s with the binary log on (set it to 1)", f->sync_binlog);
    if (preflight_on(f->read_only))
        add(fs, true,
            "read_only = ON: the server takes no writes (use the primary, or set it to OFF)");
    if (preflight_on(f->super_read_only))
        add(fs, true,
            "super_read_only = ON: the server takes no writes (use the primary, or set "
            "it to OFF)");
    if (f->xa_recover_denied)
        add(fs, true, "XA RECOVER is denied to the coordinator's user (grant it XA_RECOVER_ADMIN)");
}

int preflight_judge(const preflight_facts *f, const preflight_need *need, preflight_finding *out,
                    int max)
{
    findings fs = {out, 0, max};
    judge_schema(f, &fs);
    if (f->postgres)
        judge_postgres(f, need, &fs);
    else
        judge_mysql(f, &fs);
    return fs.n;
}

static const char *on_off(const char *v)
{
    return preflight_on(v) ? "ON" : "OFF";
}

void preflight_describe(const preflight_facts *f, char *buf, size_t len)
{
    if (f->postgres) {
        snprintf(buf, len,
                 "fsync=%s synchronous_commit=%s full_page_writes=%s max_prepared_transactions=%ld "
                 "%s; xacoord schema version %d",
                 f->fsync, f->synchronous_commit, f->full_page_writes, f->max_prepared_transactions,
                 f->in_recovery ? "standby" : "primary", f->schema_version);
        return;
    }
    snprintf(buf, len,
             "innodb_flush_log_at_trx_commit=%s sync_binlog=%s log_bin=%s read_only=%s%s%s%s%s; "
             "xacoord schema version %d",
             f->flush_log_at_trx_commit, f->sync_binlog, on_off(f->log_bin), on_off(f->read_only),
             f->super_read_only[0] ? " super_read_only=" : "",
             f->super_read_only[0] ? on_off(f->super_read_only) : "",
             f->xa_detach_on_prepare[0] ? " xa_detach_on_prepare=" : "",
             f->xa_detach_on_prepare[0] ? on_off(f->xa_detach_on_prepare) : "", f->schema_version);
}

/* ---- the probes -------------------------------------------------------------------------- */

typedef enum probe_kind {
    PG_SETTINGS,
    PG_MARKER,
    MY_VARS,
    MY_SUPER_READ_ONLY,
    MY_XA_DETACH,
    MY_XA_RECOVER, /* through the driver's recover: the privilege it needs is the point */
    MY_MARKER_SELECT,
    MY_MARKER_INSERT,
    MY_MARKER_DELETE,
    SCHEMA_VERSION_READ,
} probe_kind;

typedef struct probe {
    probe_kind kind;
    const char *sql; /* NULL: the dialect's (schema.h), or none (MY_XA_RECOVER) */
    int ncols;       /* a value probe answers one row of this many columns; 0: not read */
} probe;

/* The session may hold what a client's statements left (the driver resets it only in front of
 * a branch): so the role is session_user, not a SET ROLE's, synchronous_commit is the value a
 * reset session gets (reset_val), and functions are qualified against a changed search_path.
 * has_table_privilege answers for each privilege (a list would mean "any of them"); it fails
 * like a query when the table is missing (42P01) or the schema not usable (42501). */
static const probe pg_probes[] = {
    {PG_SETTINGS,
     "SELECT pg_catalog.current_setting('fsync'), "
     "(SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'synchronous_commit'), "
     "pg_catalog.current_setting('full_page_writes'), "
     "pg_catalog.current_setting('max_prepared_transactions'), pg_catalog.pg_is_in_recovery()",
     5},
    {PG_MARKER,
     "SELECT pg_catalog.has_table_privilege(session_user, 'xacoord.marker', 'SELECT'), "
     "pg_catalog.has_table_privilege(session_user, 'xacoord.marker', 'INSERT'), "
     "pg_catalog.has_table_privilege(session_user, 'xacoord.marker', 'DELETE')",
     3},
    {SCHEMA_VERSION_READ, NULL, 1},
};

/* Variables that not every server has get a query each, so that one unknown variable (1193)
 * fails only its own. EXPLAIN needs the privileges of the statement it explains and changes
 * nothing. */
static const probe my_probes[] = {
    {MY_VARS, "SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin, @@read_only", 4},
    {MY_SUPER_READ_ONLY, "SELECT @@super_read_only", 1},
    {MY_XA_DETACH, "SELECT @@xa_detach_on_prepare", 1},
    {MY_XA_RECOVER, NULL, 0},
    {MY_MARKER_SELECT, NULL, 0},
    {MY_MARKER_INSERT, "EXPLAIN INSERT INTO xacoord_marker (gtrid, bqual) VALUES ('', '')", 0},
    {MY_MARKER_DELETE, "EXPLAIN DELETE FROM xacoord_marker WHERE gtrid = ''", 0},
    {SCHEMA_VERSION_READ, NULL, 1},
};

/* The text of a cell of the single row ("" for SQL NULL). */
static const char *cell(const px_result *r, int col)
{
    return r->cells[col] ? r->cells[col] : "";
}

static void copy_value(char *dst, const px_result *r, int col)
{
    snprintf(dst, PREFLIGHT_VALUE_MAX, "%s", cell(r, col));
}

static void add_denied(preflight_facts *f, const char *what, const char *table)
{
    size_t len = strlen(f->schema_denied);
    snprintf(f->schema_denied + len, sizeof f->schema_denied - len, "%s%s on %s", len ? ", " : "",
             what, table);
}

/* A probe's error that is a fact about the server (a missing variable, table or privilege)
 * goes into f; false for any other error. */
static bool take_error(preflight_facts *f, probe_kind kind, const schema_dialect *d,
                       const px_error *err)
{
    schema_error se = schema_classify(err);
    switch (kind) {
    case MY_SUPER_READ_ONLY:
    case MY_XA_DETACH:
        return err->code == 1193; /* unknown system variable: not this server's */
    case MY_XA_RECOVER:
        /* MySQL 8 answers 1401 XAER_RMERR, with 1227 (XA_RECOVER_ADMIN) as a further condition. */
        f->xa_recover_denied = err->code == 1401 || err->code == 1227;
        return f->xa_recover_denied;
    case PG_MARKER:
    case MY_MARKER_SELECT:
    case MY_MARKER_INSERT:
    case MY_MARKER_DELETE:
    case SCHEMA_VERSION_READ:
        break;
    default:
        return false;
    }
    if (se == SCHEMA_ERR_MISSING) {
        if (!f->schema_missing[0])
            snprintf(f->schema_missing, sizeof f->schema_missing, "%s",
                     kind == SCHEMA_VERSION_READ ? d->version_table : d->marker);
        return true;
    }
    if (se != SCHEMA_ERR_DENIED)
        return false;
    if (kind == PG_MARKER) /* has_table_privilege fails only without USAGE on the schema */
        add_denied(f, "USAGE", "schema xacoord");
    else
        add_denied(f,
                   kind == MY_MARKER_INSERT   ? "INSERT"
                   : kind == MY_MARKER_DELETE ? "DELETE"
                                              : "SELECT",
                   kind == SCHEMA_VERSION_READ ? d->version_table : d->marker);
    return true;
}

/* What a probe found; false when it failed in a way the facts cannot say. */
static bool take(preflight_facts *f, const probe *p, const schema_dialect *d, const px_error *err,
                 const px_result *r)
{
    static const char *const privs[] = {"SELECT", "INSERT", "DELETE"};
    if (err)
        return take_error(f, p->kind, d, err);
    if (p->ncols > 0 && (!r || r->nrows != 1 || r->ncols != p->ncols))
        return false;
    switch (p->kind) {
    case PG_SETTINGS:
        copy_value(f->fsync, r, 0);
        copy_value(f->synchronous_commit, r, 1);
        copy_value(f->full_page_writes, r, 2);
        f->max_prepared_transactions = atol(cell(r, 3));
        f->in_recovery = preflight_on(cell(r, 4));
        break;
    case PG_MARKER:
        for (int i = 0; i < 3; i++)
            if (!preflight_on(cell(r, i)))
                add_denied(f, privs[i], d->marker);
        break;
    case MY_VARS:
        copy_value(f->flush_log_at_trx_commit, r, 0);
        copy_value(f->sync_binlog, r, 1);
        copy_value(f->log_bin, r, 2);
        copy_value(f->read_only, r, 3);
        break;
    case MY_SUPER_READ_ONLY:
        copy_value(f->super_read_only, r, 0);
        break;
    case MY_XA_DETACH:
        copy_value(f->xa_detach_on_prepare, r, 0);
        break;
    case SCHEMA_VERSION_READ:
        f->schema_version = atoi(cell(r, 0));
        break;
    default:
        break;
    }
    return true;
}

/* ---- one participant's checks ------------------------------------------------------------ */

typedef struct slot {
    struct preflight *pf;
    coord_part *part;
    const schema_dialect *dialect;
    const probe *probes;
    int nprobes, step;
    char ctx[48];
    uv_timer_t timer;
    px_pool_req preq;
    px_conn *conn;
    px_stmt stmt;
    bool busy;    /* a pool request or a driver call is in flight */
    bool failing; /* the last run could not finish (logged once) */
    bool judged;  /* a verdict exists */
    bool safe;    /* ... that found nothing unsafe, or allow_unsafe (preflight_safe) */
    unsigned attempts;
    preflight_facts facts;
    char findings[STATE_MAX];   /* the verdict's findings, to log each change once */
    char state[STATE_MAX + 64]; /* the findings after a prefix */
} slot;

struct preflight {
    coord *c;
    int open_handles;
    bool stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    slot slots[CONFIG_MAX_PARTICIPANTS];
};

static void slot_run(slot *s);
static void on_timer(uv_timer_t *t)
{
    slot_run(t->data);
}

static void later(slot *s, unsigned ms)
{
    if (!s->pf->stopping)
        uv_timer_start(&s->timer, on_timer, ms, 0);
}

static void give_back(slot *s, bool broken)
{
    if (!s->conn)
        return;
    if (broken)
        px_pool_discard(s->part->pool, s->conn);
    else
        px_pool_release(s->part->pool, s->conn);
    s->conn = NULL;
}

/* The run could not finish: the last verdict stands, and the next run comes at the interval
 * (soon, while there is no verdict yet). */
static void run_failed(slot *s, const char *why, bool broken)
{
    uint32_t interval = s->pf->c->cfg->recovery_interval_ms;
    unsigned ms = FIRST_RETRY_MS << (s->attempts < 5 ? s->attempts : 5);
    give_back(s, broken);
    s->attempts++;
    if (!s->failing)
        log_warn(s->ctx, "preflight could not run (%s); %s", why,
                 s->judged ? "keeping the last verdict" : "not taking new work until it has run");
    s->failing = true;
    later(s, s->judged || ms > interval ? interval : ms);
}

/* Joins the findings into s->findings and the /readyz state into s->state. */
static void describe_verdict(slot *s, const preflight_finding *f, int n, bool unsafe)
{
    bool allow = s->part->cfg->allow_unsafe;
    size_t pos = 0;
    s->findings[0] = '\0';
    for (int i = 0; i < n && pos < sizeof s->findings; i++)
        pos += (size_t)snprintf(s->findings + pos, sizeof s->findings - pos, "%s%s", i ? "; " : "",
                                f[i].text);
    if (!unsafe)
        snprintf(s->state, sizeof s->state, "ready");
    else
        snprintf(s->state, sizeof s->state, "%s%s",
                 allow ? "ready, UNSAFE allowed by allow_unsafe: " : "unsafe: ", s->findings);
}

static void log_verdict(slot *s, const preflight_finding *f, int n, bool unsafe)
{
    char facts[512];
    preflight_describe(&s->facts, facts, sizeof facts);
    log_info(s->ctx, "preflight: %s", facts);
    for (int i = 0; i < n; i++) {
        if (!f[i].unsafe)
            log_warn(s->ctx, "preflight warning: %s", f[i].text);
        else if (s->part->cfg->allow_unsafe)
            log_error(s->ctx, "UNSAFE: %s - used anyway, allowed by allow_unsafe", f[i].text);
        else
            log_error(s->ctx, "unsafe: %s - not taking new work until this is fixed", f[i].text);
    }
    if (!unsafe && s->judged && !s->safe)
        log_info(s->ctx, "preflight passed: taking new work again");
}

static void judge_run(slot *s)
{
    preflight_finding f[PREFLIGHT_MAX_FINDINGS];
    preflight_need need = {s->part->cfg->pool_size, s->pf->c->cfg->max_inflight};
    int n = preflight_judge(&s->facts, &need, f, PREFLIGHT_MAX_FINDINGS);
    bool unsafe = n > 0 && f[0].unsafe;
    char before[STATE_MAX];
    memcpy(before, s->findings, sizeof before);
    describe_verdict(s, f, n, unsafe);
    if (!s->judged || strcmp(before, s->findings) != 0)
        log_verdict(s, f, n, unsafe);
    s->safe = !unsafe || s->part->cfg->allow_unsafe;
    s->judged = true;
}

static void run_done(slot *s)
{
    give_back(s, false);
    judge_run(s);
    s->attempts = 0;
    s->failing = false;
    later(s, s->pf->c->cfg->recovery_interval_ms);
}

static void next_probe(slot *s);

static void probed(slot *s, const px_error *err, const px_result *r)
{
    s->busy = false;
    if (err && err->conn_broken) {
        run_failed(s, err->message, true);
        return;
    }
    if (!take(&s->facts, &s->probes[s->step], s->dialect, err, r)) {
        run_failed(s, err ? err->message : "unexpected answer", false);
        return;
    }
    s->step++;
    next_probe(s);
}

static void on_exec(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                    int nresults, void *arg)
{
    probed(arg, err, nresults > 0 ? results : NULL);
}

static void on_listed(px_conn *conn, const px_error *err, const px_xid *xids, size_t n, void *arg)
{
    probed(arg, err, NULL);
}

static void next_probe(slot *s)
{
    const px_driver *drv = px_pool_driver(s->part->pool);
    const probe *p = &s->probes[s->step];
    int rc;
    if (s->step == s->nprobes) {
        run_done(s);
        return;
    }
    s->stmt = (px_stmt){p->sql, NULL, 0, -1, true};
    if (p->kind == SCHEMA_VERSION_READ)
        s->stmt.sql = s->dialect->version_sql;
    else if (p->kind == MY_MARKER_SELECT)
        s->stmt.sql = s->dialect->marker_sql;
    s->busy = true;
    rc = p->kind == MY_XA_RECOVER
             ? drv->recover(s->conn, s->pf->c->prefix, s->part->cfg->name, on_listed, s)
             : drv->exec(s->conn, &s->stmt, 1, on_exec, s);
    if (rc != 0) {
        s->busy = false;
        run_failed(s, "the driver refused a query", false);
    }
}

static void on_conn(px_pool_req *req, px_conn *conn, const px_error *err)
{
    slot *s = req->data;
    s->busy = false;
    if (!conn) {
        run_failed(s, err ? err->message : "no connection", false);
        return;
    }
    s->conn = conn;
    next_probe(s);
}

static void slot_run(slot *s)
{
    if (s->busy || s->pf->stopping)
        return;
    memset(&s->facts, 0, sizeof s->facts);
    s->facts.postgres = s->probes == pg_probes;
    s->step = 0;
    s->preq.data = s;
    s->busy = true;
    if (px_pool_acquire(s->part->pool, &s->preq, on_conn) != 0) {
        s->busy = false;
        run_failed(s, "pool closing", false);
    }
}

static void slot_init(struct preflight *pf, slot *s, coord_part *p)
{
    bool pg;
    s->pf = pf;
    s->part = p;
    s->dialect = schema_for(p->cfg->driver);
    snprintf(s->ctx, sizeof s->ctx, "participant %s", p->cfg->name);
    uv_timer_init(pf->c->loop, &s->timer);
    s->timer.data = s;
    pf->open_handles++;
    if (!s->dialect) {
        /* The in-memory participant lives in this process: nothing to check. */
        s->safe = true;
        snprintf(s->state, sizeof s->state, "ready");
        return;
    }
    if (p->cfg->allow_unsafe)
        log_warn(s->ctx, "allow_unsafe = true: this participant takes work even if preflight "
                         "finds it unsafe (for development only)");
    pg = strcmp(s->dialect->driver, "postgres") == 0;
    s->probes = pg ? pg_probes : my_probes;
    s->nprobes = pg ? (int)(sizeof pg_probes / sizeof pg_probes[0])
                    : (int)(sizeof my_probes / sizeof my_probes[0]);
    snprintf(s->state, sizeof s->state, "checking the server's settings (preflight)");
    slot_run(s);
}

int preflight_start(coord *c)
{
    struct preflight *pf = calloc(1, sizeof *pf);
    if (!pf)
        return -ENOMEM;
    pf->c = c;
    c->preflight = pf;
    for (int i = 0; i < c->nparts; i++)
        slot_init(pf, &pf->slots[i], &c->parts[i]);
    return 0;
}

bool preflight_safe(const coord *c, int participant)
{
    return c->preflight && c->preflight->slots[participant].safe;
}

const char *preflight_state(const coord *c, int participant)
{
    return c->preflight ? c->preflight->slots[participant].state : "ready";
}

static void on_closed(uv_handle_t *h)
{
    struct preflight *pf = h->data;
    if (--pf->open_handles > 0)
        return;
    pf->c->preflight = NULL;
    pf->stop_cb(pf->stop_arg);
    free(pf);
}

void preflight_stop(coord *c, void (*cb)(void *arg), void *arg)
{
    struct preflight *pf = c->preflight;
    pf->stopping = true;
    pf->stop_cb = cb;
    pf->stop_arg = arg;
    if (c->nparts == 0) {
        c->preflight = NULL;
        free(pf);
        cb(arg);
        return;
    }
    for (int i = 0; i < c->nparts; i++) {
        slot *s = &pf->slots[i];
        /* A query in flight is abandoned with its connection; a waiting request is withdrawn. */
        if (s->conn)
            give_back(s, true);
        else if (s->busy)
            px_pool_cancel(&s->preq);
        s->busy = false;
        s->timer.data = pf;
        uv_close((uv_handle_t *)&s->timer, on_closed);
    }
}
