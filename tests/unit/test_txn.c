/*
 * The engine (txn.c, coord.c, recovery.c, outcome.c, identity.c) above the driver layer, with
 * in-memory participants: commit and abort paths, phase-2 retries and lost replies, the phase-1
 * timeout, idempotent replay after a restart, recovery of planted in-doubt branches with and
 * without a commit record, gtrids, and the fencing of other data directories' branches.
 */
#include "testutil.h"

#include "config.h"
#include "coord.h"
#include "lifecycle.h"
#include "identity.h"
#include "memory.h"
#include "heuristics.h"
#include "recovery.h"
#include "request.h"
#include "status.h"
#include "txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];
    char ini[96];
    config cfg;
    uv_loop_t loop;
    coord c;
    bool open;
} fixture;

/* The boot a successful journal_start_boot wrote. */
static uint64_t start_boot(journal *j)
{
    char err[512];
    uint64_t boot = 0;
    assert_int_equal(journal_start_boot(j, &boot, err, sizeof err), 0);
    return boot;
}

static void write_config(fixture *f, const char *extra)
{
    FILE *fp = fopen(f->ini, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[coordinator]\nnode_id = t1\ndata_dir = %s/data\ndefault_timeout_ms = 2000\n"
            "commit_wait_ms = 200\nrecovery_interval_ms = 100000\n%s\n"
            "[participant.alpha]\ndriver = memory\npool_size = 4\nlock_timeout_ms = 500\n"
            "[participant.beta]\ndriver = memory\npool_size = 4\nlock_timeout_ms = 500\n",
            f->dir, extra ? extra : "");
    fclose(fp);
}

static bool ready_flag(const coord *c)
{
    return status_ready(c);
}

static void open_coord(fixture *f)
{
    char err[512];
    assert_int_equal(config_load(f->ini, &f->cfg, err, sizeof err), 0);
    uv_loop_init(&f->loop);
    if (lifecycle_open(&f->c, &f->loop, &f->cfg, err, sizeof err) != 0)
        fail_msg("lifecycle_open: %s", err);
    f->open = true;
    for (int i = 0; i < 200 && !ready_flag(&f->c); i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(status_ready(&f->c));
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

static void close_coord(fixture *f)
{
    bool closed = false;
    /* Let transactions finish their phase 2 first. */
    for (int i = 0; i < 2000 && coord_inflight(&f->c) > 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(coord_inflight(&f->c), 0);
    lifecycle_close(&f->c, on_closed, &closed);
    tu_run_until(&f->loop, &closed, 5000);
    tu_loop_close(&f->loop);
    config_free(&f->cfg);
    f->open = false;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/xacoord-txn-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->ini, sizeof f->ini, "%s/t.ini", f->dir);
    write_config(f, NULL);
    px_memory_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->open)
        close_coord(f);
    tu_sh("rm -rf %s", f->dir);
    px_memory_reset();
    free(f);
    return 0;
}

/* ---- submitting -------------------------------------------------------------------------- */

typedef struct result {
    bool settled;
    int status;
    outcome_state state;
    char head[2048];
} result;

static void on_settled(outcome *o, void *arg)
{
    result *r = arg;
    r->settled = true;
    r->status = o->status;
    r->state = o->state;
    snprintf(r->head, sizeof r->head, "%s", o->reply_head ? o->reply_head : "");
}

static bool lookup(const char *name, void *arg, request_participant *out)
{
    const coord *c = arg;
    out->index = coord_part_index(c, name);
    return out->index >= 0 &&
           guard_dialect_of(c->parts[out->index].cfg->driver, &out->dialect) == 0;
}

/* Starts a transaction with one statement per participant; returns its gtrid in gtrid. */
static void start(fixture *f, const char *id, const char *sql_a, const char *sql_b,
                  uint32_t timeout, result *r, char *gtrid)
{
    request_limits lim = {16, 64, 256, 65536, timeout, 60000};
    char body[1024], err[256], g[80];
    txn_request *req;
    outcome *o;
    uint64_t seq;

    snprintf(body, sizeof body,
             "{\"id\":\"%s\",\"branches\":[{\"participant\":\"alpha\",\"statements\":[{\"sql\":"
             "\"%s\"}]},{\"participant\":\"beta\",\"statements\":[{\"sql\":\"%s\"}]}]}",
             id, sql_a, sql_b);
    req = request_parse(body, strlen(body), &lim, lookup, &f->c, err, sizeof err);
    if (!req)
        fail_msg("request: %s", err);
    seq = txn_assign(&f->c, g, sizeof g);
    o = outcome_create(f->c.outcomes, id, g, req->digest);
    assert_non_null(o);
    memset(r, 0, sizeof *r);
    outcome_wait(o, on_settled, r);
    assert_int_equal(txn_start(&f->c, req, o, seq), 0);
    if (gtrid)
        strcpy(gtrid, g);
}

static void run(fixture *f, const char *id, const char *a, const char *b, result *r, char *gtrid)
{
    start(f, id, a, b, 2000, r, gtrid);
    tu_run_until(&f->loop, &r->settled, 10000);
}

static px_xid xid_of(const char *gtrid, const char *bqual)
{
    px_xid x;
    assert_int_equal(px_xid_set(&x, gtrid, bqual), 0);
    return x;
}

static void finish_phase2(fixture *f)
{
    for (int i = 0; i < 5000 && coord_inflight(&f->c) > 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(coord_inflight(&f->c), 0);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_commit(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    px_memory_stats st;
    open_coord(f);
    run(f, "c1", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.state, OUTCOME_COMMITTED);
    assert_non_null(strstr(r.head, "\"outcome\":\"committed\""));
    finish_phase2(f);
    px_xid a = xid_of(g, "alpha"), b = xid_of(g, "beta");
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    px_memory_stats_get("alpha", &st);
    assert_int_equal(st.prepared_now, 0);
}

static void test_business_error_aborts_everything(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    run(f, "e1", "rows 1", "error business", &r, g);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.head, "\"participant\":\"beta\""));
    finish_phase2(f);
    px_xid a = xid_of(g, "alpha");
    assert_int_not_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
    assert_int_equal(px_memory_prepared_count("beta"), 0);
    /* a business abort is replayed for the same id */
    assert_non_null(outcome_find(f->c.outcomes, "e1"));
}

static void test_failed_prepare_rolls_back_prepared_branch(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    px_memory_fail("beta", PX_MEM_PREPARE, PX_BUSINESS, 1);
    run(f, "p1", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 409);
    finish_phase2(f);
    px_xid a = xid_of(g, "alpha");
    assert_int_not_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
}

static void test_commit_retried_until_acknowledged(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    px_memory_fail("beta", PX_MEM_COMMIT_PREPARED, PX_RETRYABLE, 3);
    run(f, "r1", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 200);
    finish_phase2(f);
    px_xid b = xid_of(g, "beta");
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    assert_int_equal(metric_counter_value(f->c.parts[1].commit_retries), 3);
}

static void test_commit_wait_reports_pending(void **state)
{
    fixture *f = *state;
    result r;
    open_coord(f);
    px_memory_fail("beta", PX_MEM_COMMIT_PREPARED, PX_RETRYABLE,
                   6); /* > commit_wait_ms of backoff */
    run(f, "w1", "rows 1", "rows 1", &r, NULL);
    assert_int_equal(r.status, 200);
    outcome *o = outcome_find(f->c.outcomes, "w1");
    assert_non_null(o);
    assert_true(o->pending & (1u << 1)); /* beta not yet acknowledged when answered */
    finish_phase2(f);
    assert_int_equal(o->pending, 0);
}

static void test_lost_commit_reply(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    px_memory_lose_reply("alpha", PX_MEM_COMMIT_PREPARED, 1);
    run(f, "l1", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 200);
    finish_phase2(f);
    px_xid a = xid_of(g, "alpha");
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(metric_counter_value(f->c.parts[0].xid_not_found), 1);
}

/* A DBA rolls back a branch that the journal says to commit: reported, never silent. */
static void test_heuristic_rollback_is_reported(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    outcome *o;
    open_coord(f);
    px_memory_fail("beta", PX_MEM_COMMIT_PREPARED, PX_RETRYABLE, 1);
    start(f, "h1", "rows 1", "rows 1", 2000, &r, g);
    px_xid b = xid_of(g, "beta");
    /* run until the commit decision is durable and beta's first COMMIT failed */
    for (int i = 0; i < 10000 && metric_counter_value(f->c.parts[1].commit_retries) == 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(px_memory_finish_prepared("beta", &b, false), 0);
    finish_phase2(f);
    o = outcome_find(f->c.outcomes, "h1");
    assert_int_equal(o->state, OUTCOME_COMMITTED);
    assert_int_equal(o->heuristic, 1u << 1);
    assert_int_equal(metric_counter_value(f->c.parts[1].heuristic), 1);
    assert_int_equal(metric_counter_value(f->c.parts[1].xid_not_found), 0);
}

static void test_timeout_aborts(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    start(f, "t1", "rows 1", "sleep 1500", 100, &r, g);
    tu_run_until(&f->loop, &r.settled, 5000);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(r.head, "timeout"));
    finish_phase2(f);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
    assert_int_equal(px_memory_prepared_count("beta"), 0);
    /* a transient abort is forgotten: the id may run again */
    assert_null(outcome_find(f->c.outcomes, "t1"));
}

static void test_participant_down_is_503(void **state)
{
    fixture *f = *state;
    result r;
    open_coord(f);
    px_memory_set_down("beta", true);
    run(f, "d1", "rows 1", "rows 1", &r, NULL);
    assert_int_equal(r.status, 503);
    finish_phase2(f);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
    px_memory_set_down("beta", false);
}

/* A pooled connection that died while idle costs a reconnect, not the transaction. */
static void test_stale_connection_is_replaced(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    px_memory_lose_reply("beta", PX_MEM_BEGIN, 1);
    run(f, "s1", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 200);
    finish_phase2(f);
    px_xid b = xid_of(g, "beta");
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    /* but only once: a participant that keeps failing aborts the transaction */
    px_memory_lose_reply("beta", PX_MEM_BEGIN, 2);
    run(f, "s2", "rows 1", "rows 1", &r, NULL);
    assert_int_equal(r.status, 503);
}

static void test_replay_after_restart(void **state)
{
    fixture *f = *state;
    result r;
    open_coord(f);
    run(f, "keep", "rows 1", "rows 1", &r, NULL);
    run(f, "bad", "rows 1", "error business", &r, NULL);
    close_coord(f);
    open_coord(f);
    outcome *o = outcome_find(f->c.outcomes, "keep");
    assert_non_null(o);
    assert_int_equal(o->state, OUTCOME_COMMITTED);
    assert_int_equal(o->status, 200);
    assert_non_null(strstr(o->reply_head, "\"id\":\"keep\""));
    assert_int_equal(o->pending, 0);
    o = outcome_find(f->c.outcomes, "bad");
    assert_non_null(o);
    assert_int_equal(o->state, OUTCOME_ABORTED);
    assert_int_equal(o->status, 409);
    assert_true(f->c.boot >= 2);
}

static void on_journal_closed(void *arg)
{
    *(bool *)arg = true;
}

/* Writes the journal a crash after the commit decision leaves: boot 1 with a commit record for
 * transaction 7 on alpha and beta. */
static void plant_commit_record(fixture *f)
{
    static const char payload[] =
        "crash\n000102030405060708090a0b0c0d0e0f\n200\nalpha,beta\n"
        "{\"id\":\"crash\",\"xid\":\"xa1.t1.1.7\",\"outcome\":\"committed\"";
    char dir[96], err[256];
    uv_loop_t loop;
    journal *j;
    bool closed = false;
    journal_rec rec = {JOURNAL_COMMIT, 1, 7, coord_now_ms(), payload, sizeof payload - 1};
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    uv_loop_init(&loop);
    assert_int_equal(journal_open(&j, &loop, dir, NULL, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(start_boot(j), 1);
    assert_int_equal(journal_append(j, &rec, NULL, NULL), 0);
    journal_close(j, on_journal_closed, &closed);
    tu_run_until(&loop, &closed, 5000);
    tu_loop_close(&loop);
}

/* Recovery must commit the branches of a transaction with a commit record, roll back a prepared
 * branch without one (presumed abort), and touch no branch of another coordinator. */
static void test_recovery_follows_the_journal(void **state)
{
    fixture *f = *state;
    px_xid a = xid_of("xa1.t1.1.7", "alpha"), b = xid_of("xa1.t1.1.7", "beta");
    px_xid orphan = xid_of("xa1.t1.1.9", "alpha"), other = xid_of("xa1.zz.1.7", "alpha");
    outcome *o;
    plant_commit_record(f);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    assert_int_equal(px_memory_add_prepared("beta", &b), 0);
    assert_int_equal(px_memory_add_prepared("alpha", &orphan), 0);
    assert_int_equal(px_memory_add_prepared("alpha", &other), 0);

    open_coord(f);
    assert_int_equal(f->c.boot, 2);
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("alpha", &orphan), PX_MEM_ROLLED_BACK);
    assert_true(px_memory_is_prepared("alpha", &other));
    o = outcome_find(f->c.outcomes, "crash");
    assert_non_null(o);
    assert_int_equal(o->state, OUTCOME_COMMITTED);
    assert_int_equal(o->pending, 0);
}

/* The journal keeps no payload copies: compaction re-encodes outcomes from the engine, and a
 * restart after many compactions still replays every outcome and finishes a pending commit. */
static void test_compaction_asks_the_engine(void **state)
{
    fixture *f = *state;
    enum { N = 600 };
    result r;
    char g[80];
    journal_stats st;
    write_config(f, "journal_segment_bytes = 65536");
    open_coord(f);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        run(f, id, "rows 1", i % 7 == 0 ? "error business" : "rows 1", &r, NULL);
    }
    finish_phase2(f);
    /* one commit left owing its COMMIT to beta across the restart */
    px_memory_fail("beta", PX_MEM_COMMIT_PREPARED, PX_RETRYABLE, 100000);
    run(f, "owed", "rows 1", "rows 1", &r, g);
    assert_int_equal(r.status, 200);
    journal_get_stats(f->c.journal, &st);
    assert_true(st.compactions >= 2);
    for (int i = 0; i < 50 && coord_inflight(&f->c) > 0; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    txn_abandon_all(&f->c, TXN_ASK_LATER); /* the process "dies" with the commit owed */
    close_coord(f);
    px_memory_fail("beta", PX_MEM_COMMIT_PREPARED, PX_RETRYABLE, 0);
    open_coord(f);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "k%d", i);
        outcome *o = outcome_find(f->c.outcomes, id);
        if (!o)
            fail_msg("outcome %s lost in compaction", id);
        assert_int_equal(o->status, i % 7 == 0 ? 409 : 200);
        assert_non_null(strstr(o->reply_head, id));
    }
    px_xid b = xid_of(g, "beta");
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    assert_int_equal(outcome_find(f->c.outcomes, "owed")->pending, 0);
}

/* "Not found" for a branch the scan just listed (on MariaDB: still attached to a dying session)
 * must not count as finished: the branch stays in doubt until a scan resolves it. */
static void test_recovery_does_not_trust_not_found(void **state)
{
    fixture *f = *state;
    px_xid a = xid_of("xa1.t1.1.7", "alpha"), b = xid_of("xa1.t1.1.7", "beta");
    outcome *o;
    plant_commit_record(f);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    assert_int_equal(px_memory_add_prepared("beta", &b), 0);
    px_memory_fail("alpha", PX_MEM_COMMIT_PREPARED, PX_XID_NOT_FOUND, 1);
    open_coord(f);
    o = outcome_find(f->c.outcomes, "crash");
    assert_non_null(o);
    assert_true(px_memory_is_prepared("alpha", &a));
    assert_int_equal(o->pending, 1u << 0); /* alpha still owed its COMMIT */
    recovery_kick(&f->c);
    for (int i = 0; i < 1000 && o->pending; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(o->pending, 0);
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
}

/* The identity of the fixture's data directory, made by a first start (boot 1). */
static dir_identity first_start(fixture *f)
{
    dir_identity id;
    open_coord(f);
    id = f->c.identity;
    close_coord(f);
    return id;
}

/* Many in-doubt branches are resolved (over several connections) before new work is taken. */
static void test_recovery_of_many(void **state)
{
    fixture *f = *state;
    enum { N = 500 };
    dir_identity id = first_start(f);
    for (int i = 0; i < N; i++) {
        char g[64];
        identity_gtrid(&id, "t1", 1, (uint64_t)i + 1, g, sizeof g);
        px_xid a = xid_of(g, "alpha");
        assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    }
    open_coord(f);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
    assert_int_equal(metric_counter_value(f->c.parts[0].recovered_rollback), N);
}

static void test_many_concurrent(void **state)
{
    fixture *f = *state;
    enum { N = 300 };
    static result rs[N];
    int settled = 0;
    open_coord(f);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "m%d", i);
        start(f, id, "rows 1", i % 10 == 0 ? "error business" : "rows 1", 5000, &rs[i], NULL);
    }
    for (int spins = 0; spins < 100000 && settled < N; spins++) {
        uv_run(&f->loop, UV_RUN_ONCE);
        settled = 0;
        for (int i = 0; i < N; i++)
            settled += rs[i].settled;
    }
    assert_int_equal(settled, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(rs[i].status, i % 10 == 0 ? 409 : 200);
    finish_phase2(f);
    assert_int_equal(px_memory_prepared_count("alpha"), 0);
    assert_int_equal(px_memory_prepared_count("beta"), 0);
}

/* Under sustained commits every journal batch holds the COMMIT of a transaction still waiting for
 * that record's fsync; compaction must not give up on it, or the segment grows without bound. */
static void test_compaction_under_sustained_commits(void **state)
{
    fixture *f = *state;
    enum { N = 1500, WINDOW = 24 };
    static result rs[N];
    int started = 0, settled = 0;
    uint64_t max_bytes = 0, max_base = 0;
    journal_stats st;
    write_config(f, "journal_segment_bytes = 65536\noutcome_retention_s = 1");
    open_coord(f);
    while (settled < N) {
        while (started < N && started - settled < WINDOW) {
            char id[16];
            snprintf(id, sizeof id, "s%d", started);
            start(f, id, "rows 1", "rows 1", 5000, &rs[started], NULL);
            started++;
        }
        uv_run(&f->loop, UV_RUN_ONCE);
        settled = 0;
        for (int i = 0; i < started; i++)
            settled += rs[i].settled;
        journal_get_stats(f->c.journal, &st);
        if (st.bytes > max_bytes)
            max_bytes = st.bytes;
        if (st.live_records * 400 > max_base)
            max_base = st.live_records * 400;
    }
    finish_phase2(f);
    journal_get_stats(f->c.journal, &st);
    assert_true(st.compactions >= 2);
    assert_int_equal(st.compactions_skipped, 0);
    /* A rotation starts once the segment passes the limit and twice its compacted base. */
    if (max_bytes > 2 * (65536 + 2 * max_base))
        fail_msg("segment grew to %llu bytes (limit 65536, base <= %llu)",
                 (unsigned long long)max_bytes, (unsigned long long)max_base);
}

/* A shutdown that gives up on a transaction whose commit record is still being written must not
 * leave the journal's completion pointing at freed memory (ASan reports it), and the decision,
 * durable after all, is carried out by the next start. */
static void test_abandon_while_deciding(void **state)
{
    fixture *f = *state;
    result r;
    char g[80];
    open_coord(f);
    start(f, "late", "rows 1", "rows 1", 5000, &r, g);
    for (int i = 0; i < 10000 && f->c.lists[TXN_DECIDING].count == 0; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->c.lists[TXN_DECIDING].count, 1);
    txn_abandon_all(&f->c, TXN_ASK_LATER);
    assert_true(r.settled);
    assert_int_equal(r.status, 503);
    assert_int_equal(coord_inflight(&f->c), 0);
    close_coord(f);
    open_coord(f);
    px_xid a = xid_of(g, "alpha"), b = xid_of(g, "beta");
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    assert_int_equal(outcome_find(f->c.outcomes, "late")->state, OUTCOME_COMMITTED);
}

static void plant_records(fixture *f, const journal_rec *recs, int n)
{
    char dir[96], err[256];
    uv_loop_t loop;
    journal *j;
    bool closed = false;
    snprintf(dir, sizeof dir, "%s/data", f->dir);
    uv_loop_init(&loop);
    assert_int_equal(journal_open(&j, &loop, dir, NULL, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(start_boot(j), 1);
    for (int i = 0; i < n; i++)
        assert_int_equal(journal_append(j, &recs[i], NULL, NULL), 0);
    journal_close(j, on_journal_closed, &closed);
    tu_run_until(&loop, &closed, 5000);
    tu_loop_close(&loop);
}

/* A journal that records one id for two transactions: the later record must not drop the
 * earlier COMMIT, whose branches recovery would then roll back although the client was told
 * "committed". Both decisions stay, the id keeps its first answer, and the conflict is counted. */
static void test_replay_keeps_commit_of_repeated_id(void **state)
{
    fixture *f = *state;
    static const char commit[] = "dup\n000102030405060708090a0b0c0d0e0f\n200\nalpha,beta\n"
                                 "{\"id\":\"dup\",\"xid\":\"xa1.t1.1.7\",\"outcome\":\"committed\"";
    static const char abort_[] = "dup\n0f0e0d0c0b0a09080706050403020100\n409\n\n"
                                 "{\"id\":\"dup\",\"xid\":\"xa1.t1.1.8\",\"outcome\":\"aborted\"";
    int64_t now = coord_now_ms();
    journal_rec recs[2] = {{JOURNAL_COMMIT, 1, 7, now, commit, sizeof commit - 1},
                           {JOURNAL_ABORT, 1, 8, now, abort_, sizeof abort_ - 1}};
    px_xid a = xid_of("xa1.t1.1.7", "alpha"), b = xid_of("xa1.t1.1.7", "beta");
    plant_records(f, recs, 2);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    assert_int_equal(px_memory_add_prepared("beta", &b), 0);
    open_coord(f);
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(px_memory_outcome("beta", &b), PX_MEM_COMMITTED);
    assert_string_equal(outcome_find(f->c.outcomes, "dup")->gtrid, "xa1.t1.1.7");
    assert_non_null(outcome_find_gtrid(f->c.outcomes, "xa1.t1.1.8"));
    assert_int_equal(f->c.journal_conflicts, 1);
}

/* MariaDB answers 1402 (XA_RBROLLBACK) to the COMMIT of a prepared branch the server rolled
 * back: harmless for a branch that only read, a heuristic outcome - reported - for one that
 * changed rows. */
static void commit_gets_1402(fixture *f, const char *id, const char *beta_sql, uint32_t want)
{
    result r;
    char g[80];
    px_memory_fail_code("beta", PX_MEM_COMMIT_PREPARED, PX_BUSINESS, 1402, 1);
    run(f, id, "rows 1", beta_sql, &r, g);
    finish_phase2(f);
    assert_int_equal(r.status, 200);
    assert_int_equal(outcome_find(f->c.outcomes, id)->heuristic, want);
    px_xid b = xid_of(g, "beta");
    assert_int_equal(px_memory_finish_prepared("beta", &b, false), 0); /* what the server did */
}

static void test_1402_after_writes_is_heuristic(void **state)
{
    fixture *f = *state;
    open_coord(f);
    commit_gets_1402(f, "ro", "rows 0", 0);
    assert_int_equal(metric_counter_value(f->c.parts[1].heuristic), 0);
    commit_gets_1402(f, "rw", "rows 1", 1u << 1);
    assert_int_equal(metric_counter_value(f->c.parts[1].heuristic), 1);
}

/* ---- gtrids and identities --------------------------------------------------------------- */

static void round_trip(const gtrid_parts *g, const char *want)
{
    char buf[PX_XID_PART_MAX + 1];
    gtrid_parts back;
    assert_int_equal(gtrid_format(g, buf, sizeof buf), 0);
    assert_string_equal(buf, want);
    assert_true(strlen(buf) <= PX_XID_PART_MAX);
    assert_int_equal(gtrid_parse(buf, &back), 0);
    assert_int_equal(back.version, g->version);
    assert_string_equal(back.node, g->node);
    assert_string_equal(back.identity, g->identity);
    assert_true(back.boot == g->boot && back.seq == g->seq);
}

/* Every boot and seq fits MySQL's 64 bytes, and parse is the exact inverse of format. */
static void test_gtrid_format_and_parse(void **state)
{
    static const char *const bad[] = {
        "xa2.t1.abcdefgh.1",                  /* a field missing */
        "xa2.t1.abcdefgh.1.2.3",              /* one too many */
        "xa2.t1.abcdefg1.1.2",                /* identity outside [a-z2-7] */
        "xa2.t1.abcdefg.1.2",                 /* identity too short */
        "xa2.t1.abcdefgh.01.2",               /* leading zero */
        "xa2.t1.abcdefgh.1.A",                /* upper case */
        "xa2.t1.abcdefgh.3w5e11264sgsg.1",    /* 2^64 */
        "xa2.T1.abcdefgh.1.2",                /* node outside [a-z0-9] */
        "xa2.aaaaaaaaaaaaaaaaa.abcdefgh.1.2", /* node of 17 */
        "xa2..abcdefgh.1.2",
        "xa2.t1.abcdefgh..2",
        "xa2.t1.abcdefgh.1.",
        "xa1.t1.1.z",
        "xa1.t1.1.-1",
        "xa1.t1.18446744073709551616.1",
        "xa3.t1.1.2",
        "xa1.t1.1",
        "",
    };
    gtrid_parts max2 = {2, "abcdefghijklmnop", "zz7zz7zz", UINT64_MAX, UINT64_MAX};
    gtrid_parts max1 = {1, "abcdefghijklmnop", "", UINT64_MAX, UINT64_MAX};
    gtrid_parts small = {2, "c1", "abcdefgh", 3, 35};
    gtrid_parts g;
    char tiny[56];
    round_trip(&max2, "xa2.abcdefghijklmnop.zz7zz7zz.3w5e11264sgsf.3w5e11264sgsf");
    assert_int_equal(strlen("xa2.abcdefghijklmnop.zz7zz7zz.3w5e11264sgsf.3w5e11264sgsf"), 57);
    round_trip(&max1, "xa1.abcdefghijklmnop.18446744073709551615.18446744073709551615");
    round_trip(&small, "xa2.c1.abcdefgh.3.z");
    assert_int_equal(gtrid_format(&max2, tiny, sizeof tiny),
                     -ERANGE); /* 57 bytes do not fit 55 + NUL */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (gtrid_parse(bad[i], &g) == 0)
            fail_msg("'%s' parsed", bad[i]);
    assert_int_equal(gtrid_parse("xa1.t1.3.17", &g), 0);
    assert_string_equal(gtrid_identity(&g), IDENTITY_LEGACY);
    assert_true(identity_valid("abcdefgh", false));
    assert_false(identity_valid(IDENTITY_LEGACY, false));
    assert_true(identity_valid(IDENTITY_LEGACY, true));
    assert_false(identity_valid("abcdefg8", true));
}

typedef struct seen {
    int n;
    char identity[4][16];
    char gtrid[4][PX_XID_PART_MAX + 1];
} seen;

static void on_foreign(const coord_part *p, const px_xid *x, int64_t since, const char *identity,
                       void *arg)
{
    seen *s = arg;
    assert_true(s->n < 4);
    snprintf(s->identity[s->n], sizeof s->identity[0], "%s", identity);
    snprintf(s->gtrid[s->n++], sizeof s->gtrid[0], "%s", x->gtrid);
}

static bool saw(const seen *s, const char *gtrid, const char *identity)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->gtrid[i], gtrid) == 0 && strcmp(s->identity[i], identity) == 0)
            return true;
    return false;
}

/* A new data directory with the same node_id (another identity) rolls back its own dead
 * branches and never touches another identity's - nor an xa1 branch, which only a directory
 * upgraded from before identities may own. Both are listed as foreign and counted. */
static void test_recovery_fences_other_identities(void **state)
{
    fixture *f = *state;
    dir_identity id = first_start(f);
    char own[64];
    seen s = {0};
    identity_gtrid(&id, "t1", 1, 5, own, sizeof own);
    px_xid mine = xid_of(own, "alpha"), theirs = xid_of("xa2.t1.zzzzzzzz.1.5", "alpha");
    px_xid legacy = xid_of("xa1.t1.1.5", "beta"),
           other_node = xid_of("xa2.zz.zzzzzzzz.1.5", "alpha");
    assert_true(id.legacy_boot == 0);
    assert_int_equal(px_memory_add_prepared("alpha", &mine), 0);
    assert_int_equal(px_memory_add_prepared("alpha", &theirs), 0);
    assert_int_equal(px_memory_add_prepared("beta", &legacy), 0);
    assert_int_equal(px_memory_add_prepared("alpha", &other_node), 0);
    open_coord(f);
    assert_string_equal(f->c.identity.id, id.id); /* read back, not made again */
    assert_int_equal(px_memory_outcome("alpha", &mine), PX_MEM_ROLLED_BACK);
    assert_true(px_memory_is_prepared("alpha", &theirs));
    assert_true(px_memory_is_prepared("beta", &legacy));
    assert_true(px_memory_is_prepared("alpha", &other_node));
    recovery_each_foreign(&f->c, on_foreign, &s);
    assert_int_equal(s.n, 2);
    assert_true(saw(&s, "xa2.t1.zzzzzzzz.1.5", "zzzzzzzz"));
    assert_true(saw(&s, "xa1.t1.1.5", IDENTITY_LEGACY));
    assert_int_equal(recovery_foreign_count(&f->c, 0), 1);
    assert_int_equal(recovery_foreign_count(&f->c, 1), 1);
    /* the next scans keep them, untouched */
    recovery_kick(&f->c);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_true(px_memory_is_prepared("alpha", &theirs));
    assert_int_equal(recovery_foreign_count(&f->c, 0), 1);
}

/* A journal written before identities (plant_commit_record writes no identity file): its boots
 * keep their xa1 gtrids - across later restarts too - and the directory still finishes its own
 * xa1 branches; new transactions are xa2, and an xa1 branch of a later boot is foreign. */
static void test_legacy_journal_keeps_xa1_names(void **state)
{
    fixture *f = *state;
    px_xid a = xid_of("xa1.t1.1.7", "alpha"), stray = xid_of("xa1.t1.3.1", "beta");
    char g[80], prefix[32];
    result r;
    seen s = {0};
    plant_commit_record(f);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    assert_int_equal(px_memory_add_prepared("beta", &stray), 0);
    open_coord(f);
    assert_true(f->c.identity.legacy_boot == 1);
    assert_true(f->c.boot == 2);
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_true(px_memory_is_prepared("beta", &stray)); /* boot 3 > legacy_boot 1 */
    recovery_each_foreign(&f->c, on_foreign, &s);
    assert_true(s.n == 1 && saw(&s, "xa1.t1.3.1", IDENTITY_LEGACY));
    run(f, "new", "rows 1", "rows 1", &r, g);
    snprintf(prefix, sizeof prefix, "xa2.t1.%s.2.", f->c.identity.id);
    assert_memory_equal(g, prefix, strlen(prefix));
    finish_phase2(f);
    close_coord(f);
    open_coord(f);
    assert_true(f->c.identity.legacy_boot == 1);
    assert_string_equal(outcome_find(f->c.outcomes, "crash")->gtrid, "xa1.t1.1.7");
    assert_string_equal(outcome_find(f->c.outcomes, "new")->gtrid, g);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* A damaged identity file is an error, never a guess: a new identity would rename every branch
 * (the daemon then refuses to start: tests/integration/test_fencing.c). */
static void test_corrupt_identity_is_refused(void **state)
{
    static const char *const corrupt[] = {"",
                                          "abcdefg\n",
                                          "ABCDEFGH\n",
                                          "abcdefgh",
                                          "abcdefgh\nlegacy_boot x\n",
                                          "abcdefgh\nlegacy_boot 0\n",
                                          "abcdefgh\n\n"};
    fixture *f = *state;
    char path[128], err[512];
    dir_identity id;
    assert_int_equal(identity_load(f->dir, &id, err, sizeof err), 0); /* none yet */
    assert_int_equal(identity_create(f->dir, 0, &id, err, sizeof err), 0);
    assert_int_equal(identity_load(f->dir, &id, err, sizeof err), 1);
    snprintf(path, sizeof path, "%s/identity", f->dir);
    write_file(path, "abcdefgh\nlegacy_boot 12\n");
    assert_int_equal(identity_load(f->dir, &id, err, sizeof err), 1);
    assert_string_equal(id.id, "abcdefgh");
    assert_true(id.legacy_boot == 12);
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        write_file(path, corrupt[i]);
        if (identity_load(f->dir, &id, err, sizeof err) != -EINVAL)
            fail_msg("identity file '%s' accepted", corrupt[i]);
        assert_non_null(strstr(err, "identity is corrupt"));
    }
}

/* After a crash, a committed transaction's branch that is no longer prepared either committed
 * before the crash (its marker is there) or was rolled back by someone else (no marker): the
 * second is a data-loss alarm in the outcome, /metrics and GET /v1/heuristics. */
static void test_recovery_reads_markers_of_vanished_branches(void **state)
{
    fixture *f = *state;
    px_xid a = xid_of("xa1.t1.1.7", "alpha"), b = xid_of("xa1.t1.1.7", "beta");
    outcome *o;
    char *json;
    plant_commit_record(f);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0); /* beta's branch: never seen again */
    open_coord(f);
    o = outcome_find(f->c.outcomes, "crash");
    assert_int_equal(px_memory_outcome("alpha", &a), PX_MEM_COMMITTED);
    assert_int_equal(o->pending, 0);
    assert_int_equal(o->heuristic, 1u << 1);
    assert_int_equal(metric_counter_value(f->c.parts[1].heuristic), 1);
    json = heuristics_json(&f->c.heuristics);
    assert_non_null(strstr(json, "\"participant\":\"beta\""));
    assert_non_null(strstr(json, "\"data_loss\":true"));
    free(json);
    close_coord(f);

    /* The same, but beta's branch committed before the crash: its marker says so. */
    px_memory_reset();
    tu_sh("rm -rf %s/data", f->dir);
    plant_commit_record(f);
    assert_int_equal(px_memory_add_prepared("alpha", &a), 0);
    assert_int_equal(px_memory_add_prepared("beta", &b), 0);
    assert_int_equal(px_memory_finish_prepared("beta", &b, true), 0);
    open_coord(f);
    o = outcome_find(f->c.outcomes, "crash");
    assert_int_equal(o->pending, 0);
    assert_int_equal(o->heuristic, 0);
    assert_int_equal(f->c.heuristics.total, 0);
}

/* A branch that only reads ends at prepare time (one phase) and takes no part in phase 2; one
 * with FOR UPDATE keeps its locks until the decision like any writer. */
static void test_read_only_branch_skips_phase_2(void **state)
{
    fixture *f = *state;
    result r;
    px_memory_stats a, b;
    open_coord(f);
    run(f, "ro1", "SELECT 1", "rows 1", &r, NULL);
    assert_int_equal(r.status, 200);
    finish_phase2(f);
    px_memory_stats_get("alpha", &a);
    px_memory_stats_get("beta", &b);
    assert_int_equal(a.prepared, 0);
    assert_int_equal(a.committed_one_phase, 1);
    assert_int_equal(b.prepared, 1);
    assert_int_equal(b.committed, 1);
    assert_int_equal(outcome_find(f->c.outcomes, "ro1")->pending, 0);

    run(f, "ro2", "SELECT 1", "VALUES (1)", &r, NULL); /* nothing to commit anywhere */
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "\"outcome\":\"committed\""));
    finish_phase2(f);
    run(f, "ro3", "SELECT 1 FOR UPDATE", "rows 1", &r, NULL);
    assert_int_equal(r.status, 200);
    finish_phase2(f);
    px_memory_stats_get("alpha", &a);
    assert_int_equal(a.prepared, 1);
    assert_int_equal(a.committed_one_phase, 2);
    assert_int_equal(px_memory_prepared_count("alpha") + px_memory_prepared_count("beta"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_branch_skips_phase_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_business_error_aborts_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_prepare_rolls_back_prepared_branch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_retried_until_acknowledged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_wait_reports_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_commit_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heuristic_rollback_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_aborts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_participant_down_is_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_connection_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_follows_the_journal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_reads_markers_of_vanished_branches, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compaction_asks_the_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_does_not_trust_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_of_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_under_sustained_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandon_while_deciding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_keeps_commit_of_repeated_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_1402_after_writes_is_heuristic, setup, teardown),
        cmocka_unit_test(test_gtrid_format_and_parse),
        cmocka_unit_test_setup_teardown(test_recovery_fences_other_identities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_journal_keeps_xa1_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_identity_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
