/*
 * One drill (run.h). Clients are threads doing blocking HTTP (coordinator/httpc.c): each request
 * is independent and waits for its answer, so a thread per client is the plain way to keep a
 * bounded number in flight, and the fault loop runs on the main thread beside them. Everything
 * after the run - GET of every id, the data checks, invariants - runs on the main thread alone.
 */
#include "run.h"

#include "httpc.h"
#include "proc.h"
#include "sqlc.h"
#include "workload.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef enum { ANS_NONE, ANS_COMMITTED, ANS_ABORTED, ANS_REJECTED } answer;

typedef struct attempt {
    char id[64];
    int tmpl;
    drill_values v;
    answer ans;
    bool retryable;   /* an abort the coordinator called transient */
    char reject[160]; /* what a rejected request was told */
} attempt;

typedef struct run {
    const drill_conf *c;
    const config *cfg;
    drill_result *r;
    drill_workload w;
    drill_proc proc;
    drill_db *db;
    attempt *attempts;
    atomic_int nattempts, active, nclients;
    atomic_bool stop;
    char tag[16];
    int crash_next;
    double baseline[DRILL_MAX_ITEMS]; /* constant sums before the run */
    char *err;
    size_t errlen;
} run;

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void add_check(drill_result *r, bool ok,
                                                            const char *name, const char *fmt, ...)
{
    drill_check *k;
    va_list ap;
    if (r->nchecks == DRILL_MAX_CHECKS)
        return;
    k = &r->checks[r->nchecks++];
    snprintf(k->name, sizeof k->name, "%s", name);
    k->ok = ok;
    va_start(ap, fmt);
    vsnprintf(k->detail, sizeof k->detail, fmt, ap);
    va_end(ap);
    r->failed |= !ok;
}

/* The "outcome" of a reply body ("" when there is none), and whether it says "retryable". */
static bool outcome_of(const char *body, char *out, size_t outlen)
{
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(root, "outcome"));
    bool retryable = json_is_true(json_object_get(root, "retryable"));
    snprintf(out, outlen, "%s", s ? s : "");
    json_decref(root);
    return retryable;
}

static int http(run *u, const char *method, const char *path, const char *body, char **resp)
{
    return httpc_request(u->proc.host, u->proc.port, method, path, u->proc.token, body, resp);
}

/* --- Clients ----------------------------------------------------------------------------- */

/* Sends one transaction; an unanswered request (the coordinator down, or overloaded) and a
 * transient abort are sent again with the same id, as a careful client does. */
static void post(run *u, attempt *a, unsigned *seed)
{
    char msg[256], *body = drill_body(&u->c->templates[a->tmpl], &a->v, msg, sizeof msg);
    if (!body) {
        a->ans = ANS_REJECTED;
        snprintf(a->reject, sizeof a->reject, "%.150s", msg);
        return;
    }
    for (int tries = 0; tries <= u->c->retries && a->ans == ANS_NONE; tries++) {
        char *resp = NULL, outcome[32];
        int status = http(u, "POST", "/v1/transactions", body, &resp);
        a->retryable = outcome_of(resp, outcome, sizeof outcome);
        if (status == 200 && strcmp(outcome, "committed") == 0)
            a->ans = ANS_COMMITTED;
        else if ((status == 409 || status == 503) && strcmp(outcome, "aborted") == 0)
            /* a transient abort leaves the id free: a careful client sends it again */
            a->ans = a->retryable && tries < u->c->retries ? ANS_NONE : ANS_ABORTED;
        else if (status >= 400 && status < 500) {
            a->ans = ANS_REJECTED;
            snprintf(a->reject, sizeof a->reject, "%d %.150s", status, resp ? resp : "");
        }
        free(resp);
        if (a->ans == ANS_NONE)
            drill_sleep(0.1 + (double)(rand_r(seed) % 200) / 1000.0);
    }
    free(body);
}

static void *client(void *arg)
{
    run *u = arg;
    unsigned seed = u->c->seed * 7919u + (unsigned)atomic_fetch_add(&u->nclients, 1);
    while (!atomic_load(&u->stop)) {
        int i = atomic_fetch_add(&u->nattempts, 1);
        if (i >= u->c->max_attempts)
            break;
        attempt *a = &u->attempts[i];
        seed += (unsigned)i;
        snprintf(a->id, sizeof a->id, "drill-%s-%d", u->tag, i);
        a->tmpl = drill_workload_pick(&u->w, &seed, a->id, &a->v);
        post(u, a, &seed);
    }
    atomic_fetch_sub(&u->active, 1);
    return NULL;
}

/* --- Faults ------------------------------------------------------------------------------ */

/* Starts the coordinator (with the next crash point armed while the run lasts) and waits for
 * it. Returns 0, or a negative errno with a message when it cannot become ready. */
static int start(run *u, bool arm);

/* The coordinator died without being killed by the drill: at a crash point, or by a failure of
 * its own that the report must show. */
static void count_exit(run *u)
{
    drill_result *r = u->r;
    int st = u->proc.status;
    if (drill_proc_crash_point(&u->proc)) {
        r->crash_deaths++;
        return;
    }
    if (r->bad_exits++ == 0)
        snprintf(r->bad_exit, sizeof r->bad_exit, "%s %d (its log: %s)",
                 WIFSIGNALED(st) ? "killed by signal" : "exit code",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), u->proc.log);
}

/* Starts the coordinator (with the next crash point armed while the run lasts) and waits for
 * it; a crash point on the way up (recovery-after-resolve) means one more start. Returns 0, or a
 * negative errno with a message when it cannot become ready: fork's, -ECHILD (it exited, or died
 * at a crash point in 100 starts in a row), -ETIMEDOUT (not ready in time). */
static int start(run *u, bool arm)
{
    const drill_conf *c = u->c;
    for (int tries = 0; tries < 100; tries++) {
        const char *point = NULL;
        int skip = 0, rc;
        double took;
        if (arm && c->ncrash_points > 0) {
            point = c->crash_points[u->crash_next++ % c->ncrash_points];
            skip = c->crash_skip_max ? (int)(random() % (c->crash_skip_max + 1)) : 0;
        }
        if ((rc = drill_proc_start(&u->proc, point, skip)) != 0) {
            set_err(u->err, u->errlen, "cannot start %s", c->xacoord);
            return rc;
        }
        u->r->starts++;
        rc = drill_proc_wait_ready(&u->proc, c->ready_timeout_s, &took);
        if (rc == 0) {
            if (u->r->nrecoveries < DRILL_MAX_RECOVERIES)
                u->r->recovery_s[u->r->nrecoveries++] = took;
            return 0;
        }
        if (rc == -ECHILD && point && drill_proc_crash_point(&u->proc)) {
            u->r->crash_deaths++;
            continue;
        }
        set_err(u->err, u->errlen, "the coordinator %s (its log: %s)",
                rc == -ECHILD ? "exited during start-up" : "was not ready in time", u->proc.log);
        drill_proc_kill(&u->proc);
        return rc;
    }
    set_err(u->err, u->errlen, "the coordinator died at a crash point in 100 starts in a row");
    return -ECHILD;
}

static void db_fault(run *u, const drill_dbfault *f)
{
    fprintf(stderr, "xacoord-drill: database %s: kill\n", f->name);
    if (system(f->kill_cmd) != 0)
        fprintf(stderr, "xacoord-drill: database %s: kill command failed\n", f->name);
    drill_sleep(f->down_s);
    fprintf(stderr, "xacoord-drill: database %s: restart\n", f->name);
    if (system(f->restart_cmd) != 0)
        fprintf(stderr, "xacoord-drill: database %s: restart command failed\n", f->name);
    u->r->db_faults++;
}

static double next_kill(const drill_conf *c, double now)
{
    if (c->kill_max_s <= 0)
        return 1e300;
    return now + c->kill_min_s + (c->kill_max_s - c->kill_min_s) * (double)random() / RAND_MAX;
}

/* Until the run's time is up and every client has finished its last request: kill the
 * coordinator at random, restart it whenever it is down, and run the database faults. */
static int faults(run *u)
{
    const drill_conf *c = u->c;
    double t0 = drill_now(), kill_at = next_kill(c, t0);
    bool done[DRILL_MAX_ITEMS] = {false};
    int rc;
    while (atomic_load(&u->active) > 0) {
        double now = drill_now();
        bool running = now - t0 < c->duration_s;
        if (!running)
            atomic_store(&u->stop, true);
        if (drill_proc_exited(&u->proc)) {
            count_exit(u);
            if ((rc = start(u, running)) != 0)
                return rc;
            continue;
        }
        if (running && now >= kill_at) {
            drill_proc_kill(&u->proc);
            u->r->kills++;
            if ((rc = start(u, true)) != 0)
                return rc;
            kill_at = next_kill(c, drill_now());
            continue;
        }
        for (int i = 0; i < c->ndbfaults; i++)
            if (running && !done[i] && now - t0 >= c->dbfaults[i].at_s) {
                done[i] = true;
                db_fault(u, &c->dbfaults[i]);
            }
        drill_sleep(0.02);
    }
    return 0;
}

/* --- After the run ----------------------------------------------------------------------- */

/* Nothing in doubt: GET /v1/in-doubt empty and no prepared branch of this node on any
 * participant. Returns the seconds it took, or -1 (a sentinel no time can be, not an error code:
 * the caller reports the time; what is left is in left). */
static double settle(run *u, char *left, size_t leftlen)
{
    double start = drill_now();
    while (drill_now() - start < u->c->settle_timeout_s) {
        char *resp = NULL, msg[256];
        json_t *root = NULL;
        size_t pos = 0, n;
        bool clear = http(u, "GET", "/v1/in-doubt", NULL, &resp) == 200 &&
                     (root = json_loads(resp, 0, NULL)) &&
                     (n = json_array_size(json_object_get(root, "branches"))) == 0;
        if (!clear)
            pos += (size_t)snprintf(left, leftlen, "GET /v1/in-doubt: %.200s; ",
                                    resp ? resp : "no answer");
        json_decref(root);
        free(resp);
        for (int i = 0; i < u->cfg->nparticipants && pos < leftlen; i++) {
            const char *name = u->cfg->participants[i].name;
            for (int v = 1; v <= 2; v++) {
                char prefix[40];
                drill_rows rows;
                snprintf(prefix, sizeof prefix, "xa%d.%s.", v, u->cfg->node_id);
                if (strcmp(u->cfg->participants[i].driver, "memory") == 0)
                    continue;
                if (drill_db_prepared(u->db, name, prefix, &rows, msg, sizeof msg) != 0) {
                    clear = false;
                    pos += (size_t)snprintf(left + pos, leftlen - pos, "%s: %s; ", name, msg);
                } else if (rows.nrows > 0) {
                    clear = false;
                    pos += (size_t)snprintf(left + pos, leftlen - pos, "%s: %ld prepared (%s); ",
                                            name, rows.nrows, rows.sample);
                }
                if (pos >= leftlen)
                    pos = leftlen - 1;
            }
        }
        if (clear)
            return drill_now() - start;
        drill_sleep(0.25);
    }
    return -1;
}

/* What GET says of an id now: 1 committed, 0 not (aborted, or unknown = never committed),
 * -1 anything else (in progress, no answer), with the answer in msg. */
static int truth(run *u, const char *id, char *msg, size_t msglen)
{
    char path[96], *resp = NULL, outcome[32];
    int status, t = -1;
    snprintf(path, sizeof path, "/v1/transactions/%s", id);
    status = http(u, "GET", path, NULL, &resp);
    outcome_of(resp, outcome, sizeof outcome);
    if (status == 200 && strcmp(outcome, "committed") == 0)
        t = 1;
    else if ((status == 200 && strcmp(outcome, "aborted") == 0) || status == 404)
        t = 0;
    snprintf(msg, msglen, "GET %d %.100s", status, resp ? resp : "");
    free(resp);
    return t;
}

/* A check's failures: how many, and the first few in the detail. */
typedef struct misses {
    int n;
    char text[480];
} misses;

__attribute__((format(printf, 2, 3))) static void miss(misses *m, const char *fmt, ...)
{
    size_t len = strlen(m->text);
    va_list ap;
    if (m->n++ < 3 && len + 4 < sizeof m->text) {
        if (len)
            len += (size_t)snprintf(m->text + len, sizeof m->text - len, "; ");
        va_start(ap, fmt);
        vsnprintf(m->text + len, sizeof m->text - len, fmt, ap);
        va_end(ap);
    }
}

/* Every answer against GET, and every transaction's rows against its outcome. */
static void check_answers(run *u, int n)
{
    drill_result *r = u->r;
    misses get = {0}, data = {0}, rejected = {0};
    int answered = 0, verified = 0;
    for (int i = 0; i < n; i++) {
        attempt *a = &u->attempts[i];
        const drill_template *t = &u->c->templates[a->tmpl];
        drill_tally *ty = &r->tallies[a->tmpl];
        char msg[256];
        int now = truth(u, a->id, msg, sizeof msg);
        ty->attempted++;
        ty->committed += a->ans == ANS_COMMITTED;
        ty->aborted += a->ans == ANS_ABORTED;
        ty->retryable += a->ans == ANS_ABORTED && a->retryable;
        ty->unanswered += a->ans == ANS_NONE;
        ty->unanswered_committed += a->ans == ANS_NONE && now == 1;
        answered += a->ans == ANS_COMMITTED || a->ans == ANS_ABORTED;
        if (a->ans == ANS_REJECTED)
            miss(&rejected, "%s (%s): %s", a->id, t->name, a->reject);
        if (now < 0)
            miss(&get, "%s (%s): %s", a->id, t->name, msg);
        else if ((a->ans == ANS_COMMITTED && now != 1) || (a->ans == ANS_ABORTED && now != 0))
            miss(&get, "%s (%s) answered %s, %s", a->id, t->name,
                 a->ans == ANS_COMMITTED ? "committed" : "aborted", msg);
        if (!t->has_verify || now < 0)
            continue;
        char *sql = drill_substitute(t->verify.sql, &a->v, false, msg, sizeof msg);
        drill_rows rows;
        verified++;
        if (!sql || drill_db_query(u->db, t->verify.participant, sql, &rows, msg, sizeof msg))
            miss(&data, "%s (%s): verify: %s", a->id, t->name, msg);
        else if (now == 1 && strtod(rows.first, NULL) <= 0)
            miss(&data, "%s (%s) committed, but verify finds %s", a->id, t->name, rows.first);
        else if (now == 0 && t->verify_exact && strtod(rows.first, NULL) > 0)
            miss(&data, "%s (%s) did not commit, but verify finds %s", a->id, t->name, rows.first);
        free(sql);
    }
    if (rejected.n)
        add_check(r, false, "requests accepted", "%d rejected: %s", rejected.n, rejected.text);
    else
        add_check(r, true, "requests accepted", "%d sent", n);
    if (get.n)
        add_check(r, false, "replies agree with GET", "%d of %d disagree: %s", get.n, n, get.text);
    else
        add_check(r, true, "replies agree with GET", "%d answers, %d ids asked", answered, n);
    if (data.n)
        add_check(r, false, "data agrees with outcomes", "%d of %d wrong: %s", data.n, verified,
                  data.text);
    else
        add_check(r, true, "data agrees with outcomes", "%d transactions verified", verified);
    if (answered == 0)
        add_check(r, false, "transactions answered", "no request got an answer");
}

static void check_heuristics(run *u)
{
    char *resp = NULL;
    json_t *root = NULL;
    int status = http(u, "GET", "/v1/heuristics", NULL, &resp);
    json_int_t total = -1;
    if (status == 200 && (root = json_loads(resp, 0, NULL)))
        total = json_integer_value(json_object_get(root, "total"));
    add_check(u->r, total == 0, "no heuristic outcome",
              total == 0 ? "GET /v1/heuristics: total 0" : "GET /v1/heuristics %d: %.300s", status,
              resp ? resp : "");
    json_decref(root);
    free(resp);
}

static void check_invariants(run *u)
{
    for (int i = 0; i < u->c->ninvariants; i++) {
        const drill_invariant *inv = &u->c->invariants[i];
        char name[96], msg[256];
        drill_rows rows;
        snprintf(name, sizeof name, "invariant %s (%s)", inv->name, inv->q.participant);
        if (drill_db_query(u->db, inv->q.participant, inv->q.sql, &rows, msg, sizeof msg) != 0)
            add_check(u->r, false, name, "the query failed: %s", msg);
        else
            add_check(u->r, rows.nrows == 0, name,
                      rows.nrows ? "%ld violating row(s): %s" : "no violating row", rows.nrows,
                      rows.sample);
    }
}

/* The terms of a sum, each into v; the total into *total. 0, or drill_db_number's error. */
static int sum_terms(run *u, const drill_sum *s, double *v, double *total, char *err, size_t errlen)
{
    *total = 0;
    for (int j = 0; j < s->nterms; j++) {
        char msg[256];
        int rc = drill_db_number(u->db, s->terms[j].participant, s->terms[j].sql, &v[j], msg,
                                 sizeof msg);
        if (rc != 0) {
            set_err(err, errlen, "term %d (%s): %s", j + 1, s->terms[j].participant, msg);
            return rc;
        }
        *total += v[j];
    }
    return 0;
}

static void check_sums(run *u)
{
    for (int i = 0; i < u->c->nsums; i++) {
        const drill_sum *s = &u->c->sums[i];
        double v[DRILL_MAX_PARAMS], total;
        char name[96], msg[300], terms[300] = "";
        size_t pos = 0;
        bool ok = true;
        snprintf(name, sizeof name, "sum %s (%s)", s->name,
                 s->mode == SUM_EQUAL ? "equal" : "constant");
        if (sum_terms(u, s, v, &total, msg, sizeof msg) != 0) {
            add_check(u->r, false, name, "%s", msg);
            continue;
        }
        for (int j = 0; j < s->nterms; j++) {
            pos += (size_t)snprintf(terms + pos, sizeof terms - pos, "%s%s %.17g",
                                    j ? (s->mode == SUM_EQUAL ? " = " : " + ") : "",
                                    s->terms[j].participant, v[j]);
            ok &= s->mode != SUM_EQUAL || v[j] == v[0];
            if (pos >= sizeof terms)
                pos = sizeof terms - 1;
        }
        if (s->mode == SUM_CONSTANT) {
            ok = total == u->baseline[i];
            add_check(u->r, ok, name, "%s = %.17g, before the run %.17g", terms, total,
                      u->baseline[i]);
        } else {
            add_check(u->r, ok, name, "%s", terms);
        }
    }
}

/* --- Before the run ---------------------------------------------------------------------- */

/* Every query names a participant of the coordinator's configuration: 0, or -ENOENT. */
static int known(run *u, const char *what, const drill_query *q)
{
    if (config_find_participant(u->cfg, q->participant))
        return 0;
    set_err(u->err, u->errlen, "%s: participant %s is not in %s", what, q->participant,
            u->c->config);
    return -ENOENT;
}

static int check_participants(run *u)
{
    const drill_conf *c = u->c;
    char what[96];
    int rc;
    for (int i = 0; i < c->nsetup; i++)
        if ((rc = known(u, "[setup]", &c->setup[i])) != 0)
            return rc;
    for (int i = 0; i < c->ntemplates; i++) {
        snprintf(what, sizeof what, "[template.%s] verify", c->templates[i].name);
        if (c->templates[i].has_verify && (rc = known(u, what, &c->templates[i].verify)) != 0)
            return rc;
    }
    for (int i = 0; i < c->ninvariants; i++) {
        snprintf(what, sizeof what, "[invariant.%s] check", c->invariants[i].name);
        if ((rc = known(u, what, &c->invariants[i].q)) != 0)
            return rc;
    }
    for (int i = 0; i < c->nsums; i++)
        for (int j = 0; j < c->sums[i].nterms; j++) {
            snprintf(what, sizeof what, "[sum.%s] term %d", c->sums[i].name, j + 1);
            if ((rc = known(u, what, &c->sums[i].terms[j])) != 0)
                return rc;
        }
    return 0;
}

static int setup(run *u)
{
    char msg[256];
    for (int i = 0; i < u->c->nsetup; i++) {
        drill_rows rows;
        const drill_query *q = &u->c->setup[i];
        int rc = drill_db_query(u->db, q->participant, q->sql, &rows, msg, sizeof msg);
        if (rc != 0) {
            set_err(u->err, u->errlen, "[setup] statement %d on %s: %s", i + 1, q->participant,
                    msg);
            return rc;
        }
    }
    for (int i = 0; i < u->c->nsums; i++) {
        double v[DRILL_MAX_PARAMS];
        int rc = u->c->sums[i].mode == SUM_CONSTANT
                     ? sum_terms(u, &u->c->sums[i], v, &u->baseline[i], msg, sizeof msg)
                     : 0;
        if (rc != 0) {
            set_err(u->err, u->errlen, "[sum.%s] before the run: %s", u->c->sums[i].name, msg);
            return rc;
        }
    }
    return 0;
}

/* Before the setup touches any row: a first start whose recovery finishes what an earlier,
 * interrupted drill on this data directory left prepared (its locks would block the setup), and
 * stops on branches of another data directory, which no start here can finish (-EBUSY). */
static int clean_start(run *u)
{
    char left[1024] = "";
    int rc = start(u, false);
    if (rc != 0)
        return rc;
    bool clear = settle(u, left, sizeof left) >= 0;
    if (drill_proc_stop(&u->proc) != 0) {
        /* Whatever its exit, it is gone: the drill's own start is next, and an exit that was
         * no crash point's is what the run's checks count, not this preparation. */
    }
    u->r->starts = u->r->nrecoveries = 0;
    if (clear)
        return 0;
    set_err(u->err, u->errlen,
            "before the run, prepared branches of node_id %s are left that the coordinator does "
            "not finish (from another data directory? see GET /v1/in-doubt and "
            "POST /v1/takeover): %s",
            u->cfg->node_id, left);
    return -EBUSY;
}

static int drive(run *u, pthread_t *th)
{
    int started = 0, rc = start(u, true);
    if (rc != 0)
        return rc;
    atomic_store(&u->active, u->c->clients);
    for (; started < u->c->clients; started++)
        if ((rc = pthread_create(&th[started], NULL, client, u)) != 0)
            break;
    atomic_fetch_sub(&u->active, u->c->clients - started);
    if (started < u->c->clients) {
        atomic_store(&u->stop, true);
        set_err(u->err, u->errlen, "cannot start client threads");
        rc = -rc; /* pthread_create returns a positive errno */
    }
    if (rc == 0)
        rc = faults(u);
    atomic_store(&u->stop, true);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return rc;
}

static void checks(run *u)
{
    char left[1024] = "";
    int n = atomic_load(&u->nattempts);
    if (n > u->c->max_attempts)
        n = u->c->max_attempts;
    add_check(u->r, u->r->bad_exits == 0, "coordinator never failed",
              u->r->bad_exits ? "%d exit(s) not at a crash point; the first: %s"
                              : "every exit was a kill or a crash point",
              u->r->bad_exits, u->r->bad_exit);
    u->r->settle_s = settle(u, left, sizeof left);
    add_check(u->r, u->r->settle_s >= 0, "no prepared branch left",
              u->r->settle_s >= 0 ? "in-doubt list and participants clear after %.2f s"
                                  : "after %.0f s: %s",
              u->r->settle_s >= 0 ? u->r->settle_s : u->c->settle_timeout_s, left);
    check_answers(u, n);
    check_heuristics(u);
    check_invariants(u);
    check_sums(u);
}

int drill_run(const drill_conf *c, const config *cfg, const char *config_path, const char *log,
              drill_result *r, char *err, size_t errlen)
{
    run u = {.c = c, .cfg = cfg, .r = r, .err = err, .errlen = errlen};
    pthread_t th[256];
    int rc = -ENOMEM;
    memset(r, 0, sizeof *r);
    r->duration_s = c->duration_s;
    r->clients = c->clients;
    r->seed = c->seed;
    r->ntallies = c->ntemplates;
    for (int i = 0; i < c->ntemplates; i++)
        snprintf(r->tallies[i].name, sizeof r->tallies[i].name, "%s", c->templates[i].name);
    srandom(c->seed);
    /* ids unique across drills on one data directory, and readable */
    snprintf(u.tag, sizeof u.tag, "%lx", (unsigned long)time(NULL) % 0xfffffff);
    u.proc = (drill_proc){.bin = c->xacoord,
                          .config = config_path,
                          .log = log,
                          .host = cfg->listen_host,
                          .port = cfg->listen_port,
                          .token = cfg->api_token};
    u.attempts = calloc((size_t)c->max_attempts, sizeof *u.attempts);
    u.db = drill_db_new(cfg);
    if (!u.attempts || !u.db) {
        set_err(err, errlen, "out of memory");
        goto out;
    }
    if ((rc = check_participants(&u)) != 0)
        goto out;
    if ((rc = drill_workload_init(&u.w, c, err, errlen)) != 0)
        goto out;
    if ((rc = clean_start(&u)) == 0 && (rc = setup(&u)) == 0 && (rc = drive(&u, th)) == 0) {
        /* a last kill, then recovery from a clean start must leave everything consistent */
        drill_proc_kill(&u.proc);
        r->kills++;
        if ((rc = start(&u, false)) == 0)
            checks(&u);
        if (drill_proc_stop(&u.proc) != 0) {
            /* The checks are taken: how the coordinator ends after them changes none of them. */
        }
    }
    drill_proc_kill(&u.proc);
    drill_workload_destroy(&u.w);
out:
    drill_db_free(u.db);
    free(u.attempts);
    return rc;
}
