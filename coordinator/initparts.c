/*
 * --init-participants (see initparts.h). The participants are done one after another on a private
 * loop: connect, read the schema's version, and only when it is missing or older run the DDL (on
 * PostgreSQL the statements share one pipeline and so one transaction) and read it again.
 */
#include "initparts.h"

#include "schema.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct init_run {
    uv_loop_t loop;
    const config *cfg;
    int index; /* the participant being done */
    const schema_dialect *d;
    px_conn *conn;
    px_stmt probe[2]; /* the version, then the marker table */
    char **ddl;
    int nddl;
    px_stmt *ddl_stmts;
    bool created; /* the DDL ran for this participant */
    int failures;
} init_run;

static void start_next(init_run *r);

static const config_participant *part(const init_run *r)
{
    return &r->cfg->participants[r->index];
}

static void end_participant(init_run *r)
{
    if (r->conn)
        px_conn_base(r->conn)->driver->close(r->conn);
    r->conn = NULL;
    r->index++;
    start_next(r);
}

static void failed(init_run *r, const char *what, const px_error *err)
{
    fprintf(stderr, "xacoord: participant %s: %s%s%s\n", part(r)->name, what, err ? ": " : "",
            err ? err->message : "");
    r->failures++;
    end_participant(r);
}

/* The DDL failed: name the statement and say what an administrator does instead. */
static void ddl_failed(init_run *r, int index, const px_error *err)
{
    char what[768];
    const char *stmt = index >= 0 && index < r->nddl ? r->ddl[index] : "";
    int first_line = (int)strcspn(stmt, "\n");
    snprintf(what, sizeof what,
             "cannot create the xacoord schema (at \"%.*s\"): %s - run %s in that database as "
             "an administrator, then grant the coordinator's %s what the file lists",
             first_line > 60 ? 60 : first_line, stmt, err->message, r->d->file,
             strcmp(r->d->driver, "postgres") ? "user" : "role");
    failed(r, what, NULL);
}

static void on_ddl(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                   int nresults, void *arg);

static void run_ddl(init_run *r)
{
    const px_driver *drv = px_conn_base(r->conn)->driver;
    r->created = true;
    if (drv->exec(r->conn, r->ddl_stmts, r->nddl, on_ddl, r) != 0)
        failed(r, "the driver refused the schema's statements", NULL);
}

static void on_probed(px_conn *conn, const px_error *err, int failed_index,
                      const px_result *results, int nresults, void *arg)
{
    init_run *r = arg;
    int version = !err && nresults > 0 && results[0].nrows > 0 && results[0].cells[0]
                      ? atoi(results[0].cells[0])
                      : 0;
    if (!err && version >= SCHEMA_VERSION) {
        printf("participant %s (%s): %s the xacoord schema, version %d\n", part(r)->name,
               r->d->driver, r->created ? "created" : "already has", version);
        end_participant(r);
    } else if (r->created) {
        failed(r, "the xacoord schema was created but cannot be read", err);
    } else if (err && schema_classify(err) == SCHEMA_ERR_OTHER) {
        failed(r, "cannot read the xacoord schema", err);
    } else {
        run_ddl(r); /* missing, not granted, or older */
    }
}

static void probe(init_run *r)
{
    const px_driver *drv = px_conn_base(r->conn)->driver;
    r->probe[0] = (px_stmt){r->d->version_sql, NULL, 0, -1, true};
    r->probe[1] = (px_stmt){r->d->marker_sql, NULL, 0, -1, true};
    if (drv->exec(r->conn, r->probe, 2, on_probed, r) != 0)
        failed(r, "the driver refused a query", NULL);
}

static void on_ddl(px_conn *conn, const px_error *err, int failed_index, const px_result *results,
                   int nresults, void *arg)
{
    init_run *r = arg;
    if (err)
        ddl_failed(r, failed_index, err);
    else
        probe(r);
}

static void on_connected(px_conn *conn, const px_error *err, void *arg)
{
    init_run *r = arg;
    if (!conn) {
        failed(r, "cannot connect", err);
        return;
    }
    r->conn = conn;
    probe(r);
}

/* Splits the dialect's DDL into the statements one exec runs. */
static bool load_ddl(init_run *r)
{
    schema_statements_free(r->ddl, r->nddl);
    free(r->ddl_stmts);
    r->ddl = NULL;
    r->ddl_stmts = NULL;
    r->nddl = schema_statements(r->d->ddl, &r->ddl);
    if (r->nddl <= 0 || !(r->ddl_stmts = calloc((size_t)r->nddl, sizeof *r->ddl_stmts)))
        return false;
    for (int i = 0; i < r->nddl; i++)
        r->ddl_stmts[i] = (px_stmt){r->ddl[i], NULL, 0, -1, true};
    return true;
}

static void start_next(init_run *r)
{
    const config_participant *p;
    const px_driver *drv;
    for (; r->index < r->cfg->nparticipants; r->index++) {
        r->d = schema_for(part(r)->driver);
        if (r->d)
            break;
        printf("participant %s (%s): keeps no schema; skipped\n", part(r)->name, part(r)->driver);
    }
    if (r->index == r->cfg->nparticipants)
        return;
    p = part(r);
    r->created = false;
    if (!load_ddl(r)) {
        failed(r, "out of memory", NULL);
        return;
    }
    drv = px_driver_find(p->driver);
    if (!drv || drv->connect(&r->loop, &p->target, on_connected, r) != 0)
        failed(r, "cannot start a connection", NULL);
}

/* decision_log = postgres: the store's tables too (sql/xacoord-store.sql). */
static int init_store(const config *cfg)
{
    char err[512];
    int rc;
    if (cfg->decision_log != DECISION_LOG_POSTGRES)
        return 0;
    rc = store_init_schema(cfg, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "xacoord: %s\n", err);
        return rc;
    }
    fprintf(stderr, "xacoord: decision store: tables ready\n");
    return 0;
}

int initparts_run(const config *cfg)
{
    init_run r = {.cfg = cfg};
    if (uv_loop_init(&r.loop) != 0) {
        fprintf(stderr, "xacoord: cannot create an event loop\n");
        return 1;
    }
    start_next(&r);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uv_loop_close(&r.loop);
    schema_statements_free(r.ddl, r.nddl);
    free(r.ddl_stmts);
    if (r.failures)
        fprintf(stderr, "xacoord: %d of %d participants lack the xacoord schema\n", r.failures,
                cfg->nparticipants);
    return init_store(cfg) != 0 || r.failures ? 1 : 0;
}
