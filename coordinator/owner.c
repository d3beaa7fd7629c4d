/*
 * Ownership locks (see owner.h). One small state machine per participant on a dedicated
 * connection: connect -> lock -> (owned) check every second -> on a lost connection, connect and
 * lock again.
 */
#include "owner.h"

#include "log.h"
#include "recovery.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_MS 1000
#define RETRY_MS 2000

typedef struct owner owner;

typedef struct lock_slot {
    owner *o;
    coord_part *part;
    char ctx[48];
    char name[80]; /* xacoord:<node_id>:<participant> */
    px_param param;
    px_stmt lock_stmt;
    px_stmt check_stmt;
    px_conn *conn;
    uv_timer_t timer;
    bool busy;
    bool connecting; /* a connect is in flight: it cannot be cancelled */
    bool ever_owned;
    bool owned; /* the participant may take work: the lock was taken once and nobody else has it */
    bool held;  /* ... and the lock's session is alive right now: recovery may scan */
    const char *state; /* "" when owned */
    char failure[300]; /* why the last connect failed ("<cause>: <message>"); "" once connected */
    char unreachable[320]; /* the state while never owned and failing: "unreachable: <failure>" */
} lock_slot;

struct owner {
    coord *c;
    int open_handles;
    bool stopping;
    void (*stop_cb)(void *arg);
    void *stop_arg;
    lock_slot slots[CONFIG_MAX_PARTICIPANTS];
};

static void slot_connect(lock_slot *s);

/* Recovery scans a participant only while its lock's session is alive: a dead session (a
 * server restart) stops the scans, not the work - a process that took the lock meanwhile would
 * be seen when the lock is taken again, and this one would stop. */
static void set_held(lock_slot *s, bool held)
{
    s->held = held;
    recovery_allow(s->o->c, s->part->index, held);
}

static void set_owned(lock_slot *s, bool owned, const char *why)
{
    s->owned = owned;
    s->state = owned ? "" : why;
    set_held(s, owned);
}

static void later(lock_slot *s, void (*fn)(uv_timer_t *), unsigned ms)
{
    if (!s->o->stopping)
        uv_timer_start(&s->timer, fn, ms, 0);
}

static void drop_conn(lock_slot *s)
{
    if (s->conn) {
        px_conn_base(s->conn)->driver->close(s->conn);
        s->conn = NULL;
    }
}

static void on_retry(uv_timer_t *t)
{
    slot_connect(t->data);
}

static void lost(lock_slot *s, const char *why)
{
    bool was_held = s->held;
    if (was_held)
        log_warn(s->ctx, "ownership lock lost (%s); taking it again", why);
    drop_conn(s);
    set_held(s, false);
    if (!s->ever_owned)
        set_owned(s, false, "ownership lock not held (participant unreachable?)");
    later(s, on_retry, was_held ? 0 : RETRY_MS);
}

static void on_check(uv_timer_t *t);

static void on_checked(px_conn *conn, const px_error *err, int idx, const px_result *r, int n,
                       void *arg)
{
    lock_slot *s = arg;
    s->busy = false;
    if (err) {
        lost(s, err->message);
        return;
    }
    later(s, on_check, CHECK_MS);
}

/* The lock lives exactly as long as the session: a cheap round trip proves the session lives. */
static void on_check(uv_timer_t *t)
{
    lock_slot *s = t->data;
    const px_driver *drv = px_conn_base(s->conn)->driver;
    s->busy = true;
    if (drv->exec(s->conn, &s->check_stmt, 1, on_checked, s) != 0) {
        s->busy = false;
        lost(s, "the driver refused the check");
    }
}

static bool granted(const px_result *r)
{
    const char *v = r && r->nrows == 1 && r->ncols == 1 ? r->cells[0] : NULL;
    return v && (strcmp(v, "1") == 0 || strcmp(v, "t") == 0 || strcmp(v, "true") == 0);
}

static void on_locked(px_conn *conn, const px_error *err, int idx, const px_result *r, int n,
                      void *arg)
{
    lock_slot *s = arg;
    s->busy = false;
    if (err) {
        lost(s, err->message);
        return;
    }
    if (!granted(n > 0 ? r : NULL)) {
        if (s->ever_owned) {
            /* We held it, lost the session, and another process took it: two coordinators with
             * one node_id now share these databases. Stop before either undoes the other. */
            log_error(s->ctx,
                      "another coordinator with node_id %s took the ownership lock %s "
                      "while this one was running: stopping",
                      s->o->c->cfg->node_id, s->name);
            _exit(1);
        }
        log_error(s->ctx,
                  "another live coordinator with node_id %s holds the ownership lock %s: "
                  "not using this participant (each coordinator needs its own node_id)",
                  s->o->c->cfg->node_id, s->name);
        drop_conn(s);
        set_owned(s, false, "held by another coordinator with the same node_id");
        later(s, on_retry, RETRY_MS);
        return;
    }
    if (!s->ever_owned)
        log_info(s->ctx, "ownership lock %s taken", s->name);
    s->ever_owned = true;
    set_owned(s, true, ""); /* and recovery scans it now */
    later(s, on_check, CHECK_MS);
}

static void release_handle(owner *o);

/* Why the participant cannot be reached - TLS, authentication, database, refused - goes to
 * /readyz (and so to xactl health and the page) and to the log once per change, not per retry. */
static void connect_failed(lock_slot *s, const px_error *err)
{
    char failure[sizeof s->failure];
    snprintf(failure, sizeof failure, "%s: %s", px_connect_cause(err), err->message);
    if (strcmp(failure, s->failure) != 0) {
        log_warn(s->ctx, "cannot connect: %s", failure);
        snprintf(s->failure, sizeof s->failure, "%s", failure);
        snprintf(s->unreachable, sizeof s->unreachable, "unreachable: %s", failure);
    }
    if (!s->ever_owned)
        set_owned(s, false, s->unreachable);
}

static void connected(lock_slot *s)
{
    if (s->failure[0])
        log_info(s->ctx, "connected again");
    s->failure[0] = '\0';
}

static void on_connected(px_conn *conn, const px_error *err, void *arg)
{
    lock_slot *s = arg;
    s->busy = false;
    s->connecting = false;
    if (s->o->stopping) {
        /* A connect cannot be cancelled; it held the owner alive until now. */
        if (conn)
            px_conn_base(conn)->driver->close(conn);
        release_handle(s->o);
        return;
    }
    if (!conn) {
        connect_failed(s, err);
        later(s, on_retry, RETRY_MS);
        return;
    }
    connected(s);
    s->conn = conn;
    s->busy = true;
    if (px_conn_base(conn)->driver->exec(conn, &s->lock_stmt, 1, on_locked, s) != 0) {
        s->busy = false;
        lost(s, "the driver refused the lock statement");
    }
}

static void slot_connect(lock_slot *s)
{
    const px_driver *drv = px_pool_driver(s->part->pool);
    s->busy = true;
    s->connecting = true;
    if (drv->connect(s->o->c->loop, px_pool_target(s->part->pool), on_connected, s) != 0) {
        s->busy = false;
        s->connecting = false;
        if (!s->ever_owned)
            set_owned(s, false, "ownership lock: cannot connect");
        later(s, on_retry, RETRY_MS);
    }
}

static void slot_init(owner *o, lock_slot *s, coord_part *p)
{
    const char *driver = p->cfg->driver;
    bool pg = strcmp(driver, "postgres") == 0;
    s->o = o;
    s->part = p;
    snprintf(s->ctx, sizeof s->ctx, "participant %s", p->cfg->name);
    snprintf(s->name, sizeof s->name, "xacoord:%s:%s", o->c->cfg->node_id, p->cfg->name);
    s->param = (px_param){.type = PX_P_TEXT, .text = s->name, .len = strlen(s->name)};
    s->lock_stmt =
        (px_stmt){pg ? "SELECT pg_try_advisory_lock(hashtext($1))" : "SELECT GET_LOCK(?, 0)",
                  &s->param, 1, 1, false};
    s->check_stmt = (px_stmt){"SELECT 1", NULL, 0, 1, true};
    uv_timer_init(o->c->loop, &s->timer);
    s->timer.data = s;
    o->open_handles++;
    if (strcmp(driver, "postgres") != 0 && strcmp(driver, "mysql") != 0) {
        set_owned(s, true, ""); /* the in-memory participant lives in this process only */
        return;
    }
    set_owned(s, false, "taking the ownership lock");
    slot_connect(s);
}

int owner_start(coord *c)
{
    owner *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->c = c;
    c->owner = o;
    for (int i = 0; i < c->nparts; i++)
        slot_init(o, &o->slots[i], &c->parts[i]);
    return 0;
}

bool owner_owns(const coord *c, int participant)
{
    return c->owner && c->owner->slots[participant].owned;
}

const char *owner_state(const coord *c, int participant)
{
    return c->owner ? c->owner->slots[participant].state : "";
}

const char *owner_failure(const coord *c, int participant)
{
    return c->owner ? c->owner->slots[participant].failure : "";
}

static void release_handle(owner *o)
{
    if (--o->open_handles > 0)
        return;
    o->c->owner = NULL;
    if (o->stop_cb)
        o->stop_cb(o->stop_arg);
    free(o);
}

static void on_closed(uv_handle_t *h)
{
    release_handle(((lock_slot *)h->data)->o);
}

void owner_stop(coord *c, void (*cb)(void *arg), void *arg)
{
    owner *o = c->owner;
    o->stopping = true;
    o->stop_cb = cb;
    o->stop_arg = arg;
    for (int i = 0; i < c->nparts; i++) {
        lock_slot *s = &o->slots[i];
        drop_conn(s); /* abandons a call in flight: its callback never runs */
        s->busy = false;
        if (s->connecting)
            o->open_handles++; /* released by on_connected */
        uv_close((uv_handle_t *)&s->timer, on_closed);
    }
    if (c->nparts == 0) {
        c->owner = NULL;
        free(o);
        cb(arg);
    }
}
