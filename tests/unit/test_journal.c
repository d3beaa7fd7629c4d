/*
 * The decision log (coordinator/journal.c): record round trips, group commit and its ordering
 * against write/fdatasync, torn tails and mid-file corruption, the data directory lock, the boot
 * counter, fatal I/O errors, short writes and compaction. Every test runs in its own temporary
 * directory and file operations are observed through journal_fileops.
 */
#include "testutil.h"

#include "journal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define SEG1 "journal-0000000000000001.log"
#define HDR 36

/* ------------------------------------------------------------------------------------------ */
/* Observed file operations (they run in the threadpool, hence the mutex)                     */
/* ------------------------------------------------------------------------------------------ */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static int n_writes, n_syncs;
static char last_op;   /* 'w' or 's' */
static bool fail_sync; /* fdatasync fails with EIO */
static bool one_byte;  /* write writes at most one byte */

static ssize_t obs_write(int fd, const void *buf, size_t len)
{
    pthread_mutex_lock(&ev_mu);
    n_writes++;
    last_op = 'w';
    pthread_mutex_unlock(&ev_mu);
    return write(fd, buf, one_byte && len > 1 ? 1 : len);
}

static int obs_fdatasync(int fd)
{
    bool fail;
    pthread_mutex_lock(&ev_mu);
    n_syncs++;
    last_op = 's';
    fail = fail_sync;
    pthread_mutex_unlock(&ev_mu);
    if (fail) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static const journal_fileops obs_ops = {obs_write, obs_fdatasync};

static void ops_reset(void)
{
    pthread_mutex_lock(&ev_mu);
    n_writes = n_syncs = 0;
    last_op = 0;
    fail_sync = one_byte = false;
    pthread_mutex_unlock(&ev_mu);
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture and helpers                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct fx {
    uv_loop_t loop;
    char dir[64];
    char seg[128]; /* path of the first segment */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/xatest-journal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->seg, sizeof f->seg, "%s/%s", f->dir, SEG1);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    ops_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    tu_loop_close(&f->loop);
    assert_int_equal(tu_sh("rm -rf '%s'", f->dir), 0);
    free(f);
    return 0;
}

typedef struct seen {
    journal_type type;
    uint64_t boot, seq;
    int64_t time_ms;
    size_t len;
    unsigned char *payload;
} seen;

typedef struct collect {
    seen r[1024];
    size_t n;
} collect;

static void on_replay(const journal_rec *r, void *arg)
{
    collect *c = arg;
    seen *s;
    assert_true(c->n < 1024);
    s = &c->r[c->n++];
    *s = (seen){r->type, r->boot, r->seq, r->time_ms, r->payload_len, NULL};
    if (r->payload_len) {
        s->payload = malloc(r->payload_len);
        memcpy(s->payload, r->payload, r->payload_len);
    }
}

static void collect_reset(collect *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->r[i].payload);
    c->n = 0;
}

static const seen *find_rec(const collect *c, journal_type type, uint64_t boot, uint64_t seq)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->r[i].type == type && c->r[i].boot == boot && c->r[i].seq == seq)
            return &c->r[i];
    return NULL;
}

/* The boot a successful journal_start_boot wrote. */
static uint64_t start_boot(journal *j)
{
    char err[512];
    uint64_t boot = 0;
    assert_int_equal(journal_start_boot(j, &boot, err, sizeof err), 0);
    return boot;
}

static journal *open_ok(fx *f, const journal_opts *opts, collect *c)
{
    journal *j = NULL;
    char err[512] = "";
    if (c)
        collect_reset(c);
    if (journal_open(&j, &f->loop, f->dir, opts, c ? on_replay : NULL, c, err, sizeof err) != 0)
        fail_msg("journal_open: %s", err);
    assert_non_null(j);
    return j;
}

static void set_flag(void *arg)
{
    *(bool *)arg = true;
}

static void close_ok(fx *f, journal *j)
{
    bool closed = false;
    journal_close(j, set_flag, &closed);
    tu_run_until(&f->loop, &closed, 10000);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static journal_rec mkrec(journal_type t, uint64_t boot, uint64_t seq, const void *p, size_t len)
{
    return (journal_rec){t, boot, seq, wall_ms(), p, len};
}

static void count_cb(void *arg)
{
    (*(int *)arg)++;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *p;
    assert_non_null(fp);
    *n = (size_t)file_size(path);
    p = malloc(*n + 1);
    assert_int_equal(fread(p, 1, *n, fp), *n);
    fclose(fp);
    return p;
}

static void spit(const char *path, const unsigned char *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

static void run_until_batches(fx *f, journal *j, uint64_t want)
{
    journal_stats st;
    for (int i = 0; i < 100000; i++) {
        journal_get_stats(j, &st);
        if (st.batches >= want)
            return;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    fail_msg("batch %llu never completed", (unsigned long long)want);
}

/* ------------------------------------------------------------------------------------------ */
/* Round trip                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    fx *f = *state;
    collect *c = calloc(1, sizeof *c);
    size_t big_len = JOURNAL_MAX_PAYLOAD;
    unsigned char *big = malloc(big_len + 1);
    int durable = 0;
    journal *j = open_ok(f, NULL, c);
    journal_rec recs[5], bad;

    for (size_t i = 0; i < big_len + 1; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    assert_int_equal(c->n, 0);
    assert_int_equal(journal_last_boot(j), 0);
    assert_int_equal(start_boot(j), 1);
    recs[0] = mkrec(JOURNAL_COMMIT, 1, 1, "abc", 3);
    recs[1] = mkrec(JOURNAL_ABORT, 1, 2, NULL, 0);
    recs[2] = mkrec(JOURNAL_COMMIT, 1, 3, big, big_len);
    recs[3] = mkrec(JOURNAL_DONE, 1, 1, NULL, 0);
    recs[4] = mkrec(JOURNAL_ABORT, UINT64_MAX, UINT64_MAX - 1, "\0x\0", 3);
    recs[4].time_ms = -5;
    for (int i = 0; i < 5; i++) {
        bool forced = recs[i].type == JOURNAL_COMMIT;
        assert_int_equal(journal_append(j, &recs[i], forced ? count_cb : NULL, &durable), 0);
    }
    /* Not appendable: BOOT (journal_start_boot owns it), oversized payloads, a NULL payload. */
    bad = mkrec(JOURNAL_BOOT, 2, 0, NULL, 0);
    assert_int_equal(journal_append(j, &bad, NULL, NULL), -EINVAL);
    bad = mkrec(JOURNAL_COMMIT, 1, 9, big, big_len + 1);
    assert_int_equal(journal_append(j, &bad, count_cb, &durable), -ERANGE);
    bad.payload = NULL;
    bad.payload_len = 3;
    assert_int_equal(journal_append(j, &bad, NULL, NULL), -EINVAL);
    tu_run_until_count(&f->loop, &durable, 2, 10000);
    close_ok(f, j);

    j = open_ok(f, NULL, c);
    assert_int_equal(journal_last_boot(j), 1);
    assert_int_equal(c->n, 6);
    assert_int_equal(c->r[0].type, JOURNAL_BOOT);
    assert_int_equal(c->r[0].boot, 1);
    for (int i = 0; i < 5; i++) {
        const seen *s = &c->r[i + 1];
        assert_int_equal(s->type, recs[i].type);
        assert_true(s->boot == recs[i].boot && s->seq == recs[i].seq);
        assert_true(s->time_ms == recs[i].time_ms);
        assert_int_equal(s->len, recs[i].payload_len);
        if (s->len)
            assert_memory_equal(s->payload, recs[i].payload, s->len);
        else
            assert_null(s->payload);
    }
    close_ok(f, j);
    collect_reset(c);
    free(c);
    free(big);
}

/* ------------------------------------------------------------------------------------------ */
/* Group commit                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct order_check {
    int next;        /* the index the next callback must carry */
    int bad_order;   /* callbacks out of order */
    int not_durable; /* callbacks that ran before an fdatasync followed the last write */
} order_check;

typedef struct waiter {
    order_check *oc;
    int index;
} waiter;

static void ordered_cb(void *arg)
{
    waiter *w = arg;
    pthread_mutex_lock(&ev_mu);
    if (last_op != 's' || n_syncs == 0)
        w->oc->not_durable++;
    pthread_mutex_unlock(&ev_mu);
    if (w->index != w->oc->next)
        w->oc->bad_order++;
    w->oc->next++;
}

static void test_group_commit(void **state)
{
    fx *f = *state;
    journal_opts o = {.ops = &obs_ops};
    order_check oc = {0};
    waiter w[102];
    journal_stats st;
    journal *j = open_ok(f, &o, NULL);

    assert_int_equal(start_boot(j), 1);
    ops_reset();
    for (int i = 0; i < 100; i++) {
        journal_rec r = mkrec(JOURNAL_COMMIT, 1, (uint64_t)i + 1, "payload", 7);
        w[i] = (waiter){&oc, i};
        assert_int_equal(journal_append(j, &r, ordered_cb, &w[i]), 0);
    }
    assert_int_equal(oc.next, 0); /* never called from inside append */
    tu_run_until_count(&f->loop, &oc.next, 100, 10000);
    assert_int_equal(oc.bad_order, 0);
    assert_int_equal(oc.not_durable, 0);
    assert_int_equal(n_writes, 1);
    assert_int_equal(n_syncs, 1);

    /* A record appended while a batch is in flight waits for the next batch. */
    {
        journal_rec a = mkrec(JOURNAL_COMMIT, 1, 200, NULL, 0);
        journal_rec b = mkrec(JOURNAL_COMMIT, 1, 201, NULL, 0);
        w[100] = (waiter){&oc, 100};
        w[101] = (waiter){&oc, 101};
        assert_int_equal(journal_append(j, &a, ordered_cb, &w[100]), 0);
        uv_run(&f->loop, UV_RUN_NOWAIT); /* the end of this turn sends the batch */
        assert_int_equal(journal_append(j, &b, ordered_cb, &w[101]), 0);
        tu_run_until_count(&f->loop, &oc.next, 102, 10000);
    }
    assert_int_equal(oc.bad_order, 0);
    assert_int_equal(oc.not_durable, 0);
    assert_int_equal(n_syncs, 3);
    journal_get_stats(j, &st);
    assert_int_equal(st.batches, 4); /* boot, 100 records, one, one */
    assert_int_equal(st.syncs, 4);
    assert_int_equal(st.records, 103);
    assert_int_equal(st.forced, 103);
    assert_int_equal(st.segments, 1);
    assert_int_equal(st.bytes, file_size(f->seg));
    close_ok(f, j);
}

static void test_lazy_batch_no_sync(void **state)
{
    fx *f = *state;
    journal_opts o = {.ops = &obs_ops};
    collect *c = calloc(1, sizeof *c);
    journal_stats st;
    journal *j = open_ok(f, &o, NULL);

    for (int i = 0; i < 5; i++) {
        journal_rec r = mkrec(JOURNAL_ABORT, 1, (uint64_t)i + 1, "x", 1);
        assert_int_equal(journal_append(j, &r, NULL, NULL), 0);
    }
    run_until_batches(f, j, 1);
    journal_get_stats(j, &st);
    assert_int_equal(n_writes, 1);
    assert_int_equal(n_syncs, 0);
    assert_int_equal(st.syncs, 0);
    assert_int_equal(st.forced, 0);
    assert_int_equal(st.bytes, 5 * (HDR + 1));
    close_ok(f, j);
    assert_int_equal(n_syncs, 0);
    j = open_ok(f, NULL, c);
    assert_int_equal(c->n, 5);
    close_ok(f, j);
    collect_reset(c);
    free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Torn tails and corruption                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* BOOT(1), COMMIT(1,1) with 50 bytes, COMMIT(1,2) with 100 bytes; returns the file size. */
static size_t write_three(fx *f)
{
    char pay[100];
    int durable = 0;
    journal *j = open_ok(f, NULL, NULL);
    journal_rec a, b;
    memset(pay, 'p', sizeof pay);
    a = mkrec(JOURNAL_COMMIT, 1, 1, pay, 50);
    b = mkrec(JOURNAL_COMMIT, 1, 2, pay, 100);
    assert_int_equal(start_boot(j), 1);
    assert_int_equal(journal_append(j, &a, count_cb, &durable), 0);
    assert_int_equal(journal_append(j, &b, count_cb, &durable), 0);
    tu_run_until_count(&f->loop, &durable, 2, 10000);
    close_ok(f, j);
    assert_int_equal(file_size(f->seg), 3 * HDR + 150);
    return 3 * HDR + 150;
}

static void expect_two_then_append(fx *f, collect *c, size_t good)
{
    int durable = 0;
    journal_rec r = mkrec(JOURNAL_COMMIT, 1, 3, "after", 5);
    journal *j = open_ok(f, NULL, c);
    assert_int_equal(c->n, 2);
    assert_non_null(find_rec(c, JOURNAL_COMMIT, 1, 1));
    assert_null(find_rec(c, JOURNAL_COMMIT, 1, 2));
    assert_int_equal(file_size(f->seg), good);
    assert_int_equal(journal_append(j, &r, count_cb, &durable), 0);
    tu_run_until_count(&f->loop, &durable, 1, 10000);
    close_ok(f, j);
    j = open_ok(f, NULL, c);
    assert_int_equal(c->n, 3);
    assert_non_null(find_rec(c, JOURNAL_COMMIT, 1, 3));
    close_ok(f, j);
}

static void test_torn_tail(void **state)
{
    fx *f = *state;
    collect *c = calloc(1, sizeof *c);
    size_t n = write_three(f), last = n - (HDR + 100);
    unsigned char *orig = slurp(f->seg, &n);
    unsigned char *zeros = calloc(1, n + 4096);

    for (size_t cut = last + 1; cut < n; cut++) {
        spit(f->seg, orig, cut);
        expect_two_then_append(f, c, last);
    }
    /* A zero-filled tail after the last good record. */
    memcpy(zeros, orig, last);
    spit(f->seg, zeros, last + 4096);
    expect_two_then_append(f, c, last);
    collect_reset(c);
    free(c);
    free(orig);
    free(zeros);
}

/* A complete COMMIT record with a flipped byte is not a torn write: it may be a decision that was
 * acted on, so start-up stops and names it, until the operator accepts the cut. */
static void test_damaged_commit_at_the_tail(void **state)
{
    fx *f = *state;
    collect *c = calloc(1, sizeof *c);
    size_t n = write_three(f), last = n - (HDR + 100);
    unsigned char *orig = slurp(f->seg, &n);
    journal_opts accept = {.accept_damaged_tail = true};
    journal *j = NULL;
    char err[512] = "";

    orig[n - 1] ^= 0x40;
    spit(f->seg, orig, n);
    assert_int_equal(journal_open(&j, &f->loop, f->dir, NULL, NULL, NULL, err, sizeof err),
                     -EINVAL);
    assert_null(j);
    assert_non_null(strstr(err, "journal damaged, not torn"));
    assert_non_null(strstr(err, "boot 1, seq 2"));
    assert_int_equal(file_size(f->seg), n); /* nothing was cut */
    j = open_ok(f, &accept, c);
    assert_int_equal(c->n, 2);
    assert_null(find_rec(c, JOURNAL_COMMIT, 1, 2));
    assert_int_equal(file_size(f->seg), last);
    close_ok(f, j);
    /* an ABORT record so damaged is cut as before: presumed abort agrees with it */
    orig[last + 2] = JOURNAL_ABORT;
    spit(f->seg, orig, n);
    expect_two_then_append(f, c, last);
    collect_reset(c);
    free(c);
    free(orig);
}

static void expect_corrupt(fx *f, const char *at)
{
    journal *j = NULL;
    char err[512] = "";
    assert_int_equal(journal_open(&j, &f->loop, f->dir, NULL, NULL, NULL, err, sizeof err),
                     -EINVAL);
    assert_null(j);
    assert_non_null(strstr(err, "journal corrupt: "));
    assert_non_null(strstr(err, at));
}

static void test_corruption_in_the_middle(void **state)
{
    fx *f = *state;
    size_t n = write_three(f), rec1 = HDR; /* COMMIT(1,1) follows BOOT */
    unsigned char *orig = slurp(f->seg, &n);
    char at[160];

    snprintf(at, sizeof at, "%s at offset %zu: CRC mismatch", SEG1, rec1);
    orig[rec1 + HDR + 10] ^= 0x01; /* a payload byte */
    spit(f->seg, orig, n);
    expect_corrupt(f, at);
    assert_int_equal(file_size(f->seg), n); /* nothing was cut */
    orig[rec1 + HDR + 10] ^= 0x01;

    orig[rec1 + 6] = 0x7f; /* the length field */
    spit(f->seg, orig, n);
    snprintf(at, sizeof at, "%s at offset %zu: impossible length", SEG1, rec1);
    expect_corrupt(f, at);
    orig[rec1 + 6] = 0;

    orig[0] = 0; /* the very first record */
    spit(f->seg, orig, n);
    snprintf(at, sizeof at, "%s at offset 0: bad magic", SEG1);
    expect_corrupt(f, at);
    free(orig);
}

/* A segment that is not the last one gets no torn-tail benefit. */
static void test_torn_non_last_segment_is_corrupt(void **state)
{
    fx *f = *state;
    size_t n = write_three(f);
    unsigned char *orig = slurp(f->seg, &n);
    char second[160];
    snprintf(second, sizeof second, "%s/journal-0000000000000002.log", f->dir);
    spit(second, orig, n);
    spit(f->seg, orig, n - 3);
    expect_corrupt(f, SEG1 " at offset 122: incomplete record");
    free(orig);
}

/* A crash after compaction wrote its new segment but before it deleted the old one leaves the
 * same records in two segments: each is replayed once. */
static void test_replay_after_interrupted_compaction(void **state)
{
    fx *f = *state;
    collect *c = calloc(1, sizeof *c);
    size_t n = write_three(f);
    unsigned char *orig = slurp(f->seg, &n);
    char second[160];
    journal_stats st;
    journal *j;
    snprintf(second, sizeof second, "%s/journal-0000000000000002.log", f->dir);
    spit(second, orig, n);
    j = open_ok(f, NULL, c);
    assert_int_equal(c->n, 3);
    assert_int_equal(c->r[0].type, JOURNAL_BOOT);
    assert_int_equal(c->r[2].seq, 2);
    journal_get_stats(j, &st);
    assert_int_equal(st.segments, 2);
    assert_int_equal(st.live_records, 2);
    close_ok(f, j);
    collect_reset(c);
    free(c);
    free(orig);
}

/* ------------------------------------------------------------------------------------------ */
/* Lock and boot counter                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void test_lock(void **state)
{
    fx *f = *state;
    journal *j = open_ok(f, NULL, NULL), *j2 = NULL;
    char err[512] = "", want[160];
    snprintf(want, sizeof want, "data directory %s is in use by another xacoord process", f->dir);
    assert_int_equal(journal_open(&j2, &f->loop, f->dir, NULL, NULL, NULL, err, sizeof err),
                     -EBUSY);
    assert_null(j2);
    assert_string_equal(err, want);
    close_ok(f, j);
    j = open_ok(f, NULL, NULL);
    close_ok(f, j);
}

static void test_creates_dir_and_counts_boots(void **state)
{
    fx *f = *state;
    collect *c = calloc(1, sizeof *c);
    struct stat st;
    journal *j;

    strcat(f->dir, "/sub/data"); /* teardown removes the parent anyway */
    snprintf(f->seg, sizeof f->seg, "%s/%s", f->dir, SEG1);
    j = open_ok(f, NULL, c);
    assert_int_equal(stat(f->dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(start_boot(j), 1);
    close_ok(f, j);
    j = open_ok(f, NULL, c);
    assert_int_equal(journal_last_boot(j), 1);
    assert_int_equal(start_boot(j), 2);
    close_ok(f, j);
    j = open_ok(f, NULL, c);
    assert_int_equal(journal_last_boot(j), 2);
    assert_int_equal(c->n, 2);
    assert_int_equal(c->r[0].boot, 1);
    assert_int_equal(c->r[1].boot, 2);
    close_ok(f, j);
    *strstr(f->dir, "/sub/data") = '\0';
    collect_reset(c);
    free(c);
}

/* Rewrites the boot field of the record at off and its CRC (journal.c's record format). */
static void patch_boot(const char *seg, size_t off, uint64_t boot)
{
    size_t n;
    unsigned char *p = slurp(seg, &n);
    uint32_t len = p[off + 4] | (uint32_t)p[off + 5] << 8, crc;
    for (int i = 0; i < 8; i++)
        p[off + 12 + i] = (unsigned char)(boot >> (8 * i));
    memset(p + off + 8, 0, 4);
    crc = (uint32_t)crc32(0L, p + off, (uInt)(HDR + len));
    for (int i = 0; i < 4; i++)
        p[off + 8 + i] = (unsigned char)(crc >> (8 * i));
    spit(seg, p, n);
    free(p);
}

/* A boot counter at its maximum cannot be bumped: refused with a message, and nothing is
 * written, however often start-up is retried. */
static void test_boot_counter_exhausted(void **state)
{
    fx *f = *state;
    char err[512];
    journal *j = open_ok(f, NULL, NULL);
    uint64_t boot = 0;
    off_t size;
    assert_int_equal(start_boot(j), 1);
    close_ok(f, j);
    patch_boot(f->seg, 0, UINT64_MAX);
    size = file_size(f->seg);
    for (int attempt = 0; attempt < 2; attempt++) {
        j = open_ok(f, NULL, NULL);
        assert_true(journal_last_boot(j) == UINT64_MAX);
        err[0] = '\0';
        assert_int_equal(journal_start_boot(j, &boot, err, sizeof err), -EOVERFLOW);
        assert_non_null(strstr(err, "boot counter"));
        assert_non_null(strstr(err, f->dir));
        close_ok(f, j);
        assert_int_equal(file_size(f->seg), size);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* I/O errors and short writes                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct fatal_seen {
    bool called;
    char msg[512];
} fatal_seen;

static void on_fatal(const char *msg, void *arg)
{
    fatal_seen *fs = arg;
    fs->called = true;
    snprintf(fs->msg, sizeof fs->msg, "%s", msg);
}

static void test_fdatasync_error_is_fatal(void **state)
{
    fx *f = *state;
    fatal_seen fs = {0};
    journal_opts o = {.ops = &obs_ops, .on_fatal = on_fatal, .arg = &fs};
    int durable = 0;
    journal_rec r = mkrec(JOURNAL_COMMIT, 1, 1, "x", 1);
    journal *j = open_ok(f, &o, NULL);

    fail_sync = true;
    for (int i = 0; i < 3; i++)
        assert_int_equal(journal_append(j, &r, count_cb, &durable), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);                                /* batch sent */
    assert_int_equal(journal_append(j, &r, count_cb, &durable), 0); /* queued behind it */
    tu_run_until(&f->loop, &fs.called, 10000);
    assert_non_null(strstr(fs.msg, "fdatasync"));
    assert_non_null(strstr(fs.msg, SEG1));
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(durable, 0);
    assert_int_equal(journal_append(j, &r, count_cb, &durable), -EIO);
    close_ok(f, j);
    assert_int_equal(durable, 0);
    assert_int_equal(n_syncs, 1);
}

static void test_short_writes(void **state)
{
    fx *f = *state;
    journal_opts o = {.ops = &obs_ops};
    collect *c = calloc(1, sizeof *c);
    unsigned char pay[500];
    int durable = 0;
    journal *j = open_ok(f, &o, NULL);

    one_byte = true;
    for (size_t i = 0; i < sizeof pay; i++)
        pay[i] = (unsigned char)i;
    for (int i = 0; i < 20; i++) {
        journal_rec r = mkrec(i % 2 ? JOURNAL_ABORT : JOURNAL_COMMIT, 1, (uint64_t)i, pay,
                              sizeof pay - (size_t)i);
        assert_int_equal(journal_append(j, &r, i % 2 ? NULL : count_cb, &durable), 0);
    }
    tu_run_until_count(&f->loop, &durable, 10, 20000);
    assert_true(n_writes >= 20 * HDR);
    close_ok(f, j);
    j = open_ok(f, NULL, c);
    assert_int_equal(c->n, 20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(c->r[i].seq, i);
        assert_int_equal(c->r[i].len, sizeof pay - (size_t)i);
        assert_memory_equal(c->r[i].payload, pay, c->r[i].len);
    }
    close_ok(f, j);
    collect_reset(c);
    free(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Compaction                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#define SEGMENT_BYTES (16 * 1024)
#define TXNS 10000
#define CHUNK 100

typedef struct driver {
    fx *f;
    journal *j;
    int64_t old_ms; /* older than the retention */
    int sent, committed;
    int max_segments;
    uint64_t max_bytes;
} driver;

static void chunk_durable(void *arg);

static void send_chunk(driver *d)
{
    static const char pay[64] = "a finished transaction, long forgotten";
    for (int i = 0; i < CHUNK; i++) {
        journal_rec r = {JOURNAL_COMMIT, 1, 1000 + (uint64_t)d->sent++, d->old_ms, pay, 64};
        assert_int_equal(journal_append(d->j, &r, i == CHUNK - 1 ? chunk_durable : NULL, d), 0);
    }
}

static void chunk_durable(void *arg)
{
    driver *d = arg;
    journal_stats st;
    journal_get_stats(d->j, &st);
    if (st.segments > d->max_segments)
        d->max_segments = st.segments;
    if (st.bytes > d->max_bytes)
        d->max_bytes = st.bytes;
    for (int i = d->committed; i < d->sent; i++) {
        journal_rec r = {JOURNAL_DONE, 1, 1000 + (uint64_t)i, d->old_ms, NULL, 0};
        assert_int_equal(journal_append(d->j, &r, NULL, NULL), 0);
    }
    d->committed = d->sent;
    if (d->sent < TXNS)
        send_chunk(d);
}

static void test_compaction(void **state)
{
    fx *f = *state;
    journal_opts o = {.segment_bytes = SEGMENT_BYTES, .retention_s = 60};
    collect *c = calloc(1, sizeof *c);
    driver d = {.f = f, .old_ms = wall_ms() - 3600 * 1000};
    journal_rec undone = {JOURNAL_COMMIT, 1, 1, d.old_ms, "undone", 6};
    journal_rec recent = mkrec(JOURNAL_ABORT, 1, 2, "recent", 6);
    journal_rec expired = {JOURNAL_ABORT, 1, 3, d.old_ms, "expired", 7};
    journal_rec finished = mkrec(JOURNAL_COMMIT, 1, 4, "finished", 8);
    journal_rec finished_done = mkrec(JOURNAL_DONE, 1, 4, NULL, 0);
    journal_rec early = mkrec(JOURNAL_COMMIT, 1, 5, NULL, 0);
    journal_stats st;
    int durable = 0;
    const seen *s;

    d.j = open_ok(f, &o, NULL);
    assert_int_equal(start_boot(d.j), 1);
    assert_int_equal(journal_append(d.j, &undone, count_cb, &durable), 0);
    assert_int_equal(journal_append(d.j, &recent, NULL, NULL), 0);
    assert_int_equal(journal_append(d.j, &expired, NULL, NULL), 0);
    assert_int_equal(journal_append(d.j, &finished, count_cb, &durable), 0);
    assert_int_equal(journal_append(d.j, &finished_done, NULL, NULL), 0);
    for (int i = 0; i < 20; i++) { /* outcomes logged in descending seq order */
        journal_rec late = mkrec(JOURNAL_ABORT, 1, 300 - (uint64_t)i, NULL, 0);
        assert_int_equal(journal_append(d.j, &late, NULL, NULL), 0);
    }
    assert_int_equal(journal_append(d.j, &early, count_cb, &durable), 0);
    send_chunk(&d);
    tu_run_until_count(&f->loop, &d.committed, TXNS, 60000);
    assert_int_equal(durable, 3);
    journal_get_stats(d.j, &st);
    assert_true(st.compactions >= 10);
    assert_int_equal(d.max_segments, 1);
    assert_true(d.max_bytes < 2 * SEGMENT_BYTES);
    assert_int_equal(st.live_records, 24);
    assert_int_equal(tu_sh("test $(du -sk '%s' | cut -f1) -lt 100", f->dir), 0);
    close_ok(f, d.j);

    d.j = open_ok(f, &o, c);
    assert_int_equal(journal_last_boot(d.j), 1);
    assert_true(c->n < 2 * SEGMENT_BYTES / HDR);
    s = find_rec(c, JOURNAL_COMMIT, 1, 1);
    assert_non_null(s);
    assert_int_equal(s->len, 6);
    assert_memory_equal(s->payload, "undone", 6);
    assert_null(find_rec(c, JOURNAL_DONE, 1, 1));
    assert_non_null(find_rec(c, JOURNAL_ABORT, 1, 2));
    assert_null(find_rec(c, JOURNAL_ABORT, 1, 3));
    /* A finished COMMIT within retention stays finished: no recovery would touch it. */
    assert_non_null(find_rec(c, JOURNAL_COMMIT, 1, 4));
    assert_non_null(find_rec(c, JOURNAL_DONE, 1, 4));
    /* Compaction keeps log order, not key order. */
    for (int i = 1; i < 20; i++)
        assert_true(find_rec(c, JOURNAL_ABORT, 1, 300 - (uint64_t)i) >
                    find_rec(c, JOURNAL_ABORT, 1, 301 - (uint64_t)i));
    assert_true(find_rec(c, JOURNAL_ABORT, 1, 281) < find_rec(c, JOURNAL_COMMIT, 1, 5));
    assert_true(find_rec(c, JOURNAL_COMMIT, 1, 1) < find_rec(c, JOURNAL_ABORT, 1, 2));
    assert_true(find_rec(c, JOURNAL_COMMIT, 1, 4) < find_rec(c, JOURNAL_DONE, 1, 4));
    assert_null(find_rec(c, JOURNAL_COMMIT, 1, 1000)); /* the first transactions are gone */
    journal_get_stats(d.j, &st);
    assert_int_equal(st.live_records, 24);
    close_ok(f, d.j);
    collect_reset(c);
    free(c);
}

/* ---- payloads asked of the owner at compaction ------------------------------------------- */

typedef struct owner_state {
    bool commit_gone; /* answer -1 for the owed COMMIT (1, 1) */
    int asked;
} owner_state;

static int owner_payload(journal_type type, uint64_t boot, uint64_t seq, void **out, size_t *len,
                         void *arg)
{
    owner_state *o = arg;
    o->asked++;
    if (seq == 3 || (seq == 1 && o->commit_gone))
        return -ENOENT; /* the owner no longer has it */
    *len = (size_t)asprintf((char **)out, "owner-%d-%llu", (int)type, (unsigned long long)seq);
    return 0;
}

/* Keeps only the first transactions' records: the others are the filler that drives rotation. */
static void on_replay_first(const journal_rec *r, void *arg)
{
    if (r->seq < 10)
        on_replay(r, arg);
}

/* Compacts with the owner's payloads (or not at all) and reopens in self-contained mode. */
static void compact_with_owner(fx *f, owner_state *os, collect *c, journal_stats *st)
{
    journal_opts o = {
        .segment_bytes = SEGMENT_BYTES, .retention_s = 60, .payload = owner_payload, .arg = os};
    driver d = {.f = f, .old_ms = wall_ms() - 3600 * 1000};
    journal_rec owed = {JOURNAL_COMMIT, 1, 1, wall_ms(), "original", 8};
    journal_rec kept = mkrec(JOURNAL_ABORT, 1, 2, "original", 8);
    journal_rec gone = mkrec(JOURNAL_ABORT, 1, 3, "original", 8);
    char err[256];
    int durable = 0;
    d.j = open_ok(f, &o, NULL);
    assert_int_equal(start_boot(d.j), 1);
    assert_int_equal(journal_append(d.j, &owed, count_cb, &durable), 0);
    assert_int_equal(journal_append(d.j, &kept, NULL, NULL), 0);
    assert_int_equal(journal_append(d.j, &gone, NULL, NULL), 0);
    send_chunk(&d);
    tu_run_until_count(&f->loop, &d.committed, TXNS, 60000);
    journal_get_stats(d.j, st);
    close_ok(f, d.j);
    assert_int_equal(
        journal_open(&d.j, &f->loop, f->dir, NULL, on_replay_first, c, err, sizeof err), 0);
    close_ok(f, d.j);
}

static void test_payloads_from_the_owner(void **state)
{
    fx *f = *state;
    owner_state os = {false, 0};
    collect *c = calloc(1, sizeof *c);
    journal_stats st;
    const seen *s;
    compact_with_owner(f, &os, c, &st);
    assert_true(st.compactions >= 10);
    assert_true(os.asked > 0);
    s = find_rec(c, JOURNAL_COMMIT, 1, 1);
    assert_non_null(s);
    assert_int_equal(s->len, strlen("owner-2-1"));
    assert_memory_equal(s->payload, "owner-2-1", s->len); /* the owner's, not a kept copy */
    s = find_rec(c, JOURNAL_ABORT, 1, 2);
    assert_non_null(s);
    assert_memory_equal(s->payload, "owner-3-2", s->len);
    assert_null(find_rec(c, JOURNAL_ABORT, 1, 3)); /* gone from the owner: dropped */
    collect_reset(c);
    free(c);
}

/* A commit still owed must never be dropped: without its payload, no compaction happens. */
static void test_owed_commit_blocks_compaction(void **state)
{
    fx *f = *state;
    owner_state os = {true, 0};
    collect *c = calloc(1, sizeof *c);
    journal_stats st;
    const seen *s;
    compact_with_owner(f, &os, c, &st);
    assert_int_equal(st.compactions, 0);
    s = find_rec(c, JOURNAL_COMMIT, 1, 1);
    assert_non_null(s);
    assert_memory_equal(s->payload, "original", 8);
    collect_reset(c);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_payloads_from_the_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owed_commit_blocks_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_batch_no_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_commit_at_the_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_in_the_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_non_last_segment_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_interrupted_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_creates_dir_and_counts_boots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_boot_counter_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fdatasync_error_is_fatal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
