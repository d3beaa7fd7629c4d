/*
 * The decision log (see journal.h): segment files of CRC-checked records in data_dir, group commit
 * through the libuv threadpool, and an in-memory live set that lets the journal rewrite itself into
 * a small new segment instead of growing forever.
 *
 * Record format, version 1 (every integer little-endian, encoded byte by byte):
 *
 *   offset size  field
 *        0    1  magic 0xA7
 *        1    1  version 1
 *        2    1  type (journal_type)
 *        3    1  flags, always 0
 *        4    4  payload length, at most JOURNAL_MAX_PAYLOAD
 *        8    4  CRC-32 (zlib) of the whole record, header and payload, with this field as zero
 *       12    8  boot
 *       20    8  seq
 *       28    8  time_ms (two's complement)
 *       36    n  payload
 *
 * Segments are data_dir/journal-<16 lowercase hex digits>.log, replayed in numeric order; the last
 * one is appended to. Torn tail versus corruption: a record that cannot be decoded (short, wrong
 * magic or type, impossible length, CRC mismatch) is a torn tail only when it is in the last
 * segment and no valid record starts anywhere after it (a write cut short leaves a prefix, zeros or
 * stale bytes, never a valid record behind the damage). Then the file is cut at its start. A bad
 * record anywhere else, or with a valid record after it, is corruption and journal_open fails.
 * One crash the rule cannot tell from corruption: a filesystem that persists a later page of an
 * unsynced write but not an earlier one; that stops start-up for an operator to look at, which is
 * the safe side. And one damage the rule must not take for a torn write: a COMMIT record whose
 * frame is complete but whose CRC fails may be a synced decision damaged later, so start-up stops
 * there too unless the operator accepts the cut (journal_opts.accept_damaged_tail).
 *
 * Compaction copies live records into the new segment, so after a crash between writing it and
 * deleting the old ones the same record is replayed twice; replay therefore passes each outcome,
 * each DONE and each BOOT to the callback once.
 */
#include "journal.h"

#include "crash.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define REC_MAGIC 0xA7
#define REC_VERSION 1
#define REC_HDR 36
#define SEG_NAME_LEN 28 /* "journal-" + 16 hex + ".log" */
#define DEFAULT_SEGMENT_BYTES (64u << 20)
#define DEFAULT_RETENTION_S (24 * 3600)
#define TAB_MIN_CAP 1024
#define BUF_KEEP_MAX (8u << 20) /* a batch buffer grown past this is released after use */

static const char *const LOG_CTX = "journal";

/* ------------------------------------------------------------------------------------------ */
/* Byte buffers and little-endian encoding                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct jbuf {
    unsigned char *p;
    size_t len, cap;
} jbuf;

static int jbuf_reserve(jbuf *b, size_t more)
{
    size_t want = b->len + more, cap = b->cap ? b->cap : 4096;
    unsigned char *p;
    if (want <= b->cap)
        return 0;
    while (cap < want)
        cap *= 2;
    p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t rec_crc(const unsigned char *p, size_t payload_len)
{
    static const unsigned char zero[4] = {0};
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p, 8);
    crc = crc32(crc, zero, 4);
    crc = crc32(crc, p + 12, (uInt)(REC_HDR - 12 + payload_len));
    return (uint32_t)crc;
}

/* Appends one encoded record to b; the caller reserved REC_HDR + payload_len bytes. */
static void rec_encode(jbuf *b, const journal_rec *r)
{
    unsigned char *p = b->p + b->len;
    p[0] = REC_MAGIC;
    p[1] = REC_VERSION;
    p[2] = (unsigned char)r->type;
    p[3] = 0;
    put_u32(p + 4, (uint32_t)r->payload_len);
    put_u64(p + 12, r->boot);
    put_u64(p + 20, r->seq);
    put_u64(p + 28, (uint64_t)r->time_ms);
    if (r->payload_len)
        memcpy(p + REC_HDR, r->payload, r->payload_len);
    put_u32(p + 8, rec_crc(p, r->payload_len));
    b->len += REC_HDR + r->payload_len;
}

static int rec_append(jbuf *b, const journal_rec *r)
{
    if (jbuf_reserve(b, REC_HDR + r->payload_len) != 0)
        return -ENOMEM;
    rec_encode(b, r);
    return 0;
}

/* Decodes the record at p (avail bytes left in the file). Returns its size, or 0 with *why set. */
static size_t rec_decode(const unsigned char *p, size_t avail, journal_rec *r, const char **why)
{
    uint32_t len;
    if (avail < REC_HDR) {
        *why = "incomplete record header";
        return 0;
    }
    if (p[0] != REC_MAGIC || p[1] != REC_VERSION || p[3] != 0) {
        *why = "bad magic, version or flags";
        return 0;
    }
    if (p[2] < JOURNAL_BOOT || p[2] > JOURNAL_DONE) {
        *why = "unknown record type";
        return 0;
    }
    len = get_u32(p + 4);
    if (len > JOURNAL_MAX_PAYLOAD) {
        *why = "impossible length";
        return 0;
    }
    if (avail - REC_HDR < len) {
        *why = "incomplete record";
        return 0;
    }
    if (get_u32(p + 8) != rec_crc(p, len)) {
        *why = "CRC mismatch";
        return 0;
    }
    r->type = (journal_type)p[2];
    r->payload_len = len;
    r->boot = get_u64(p + 12);
    r->seq = get_u64(p + 20);
    r->time_ms = (int64_t)get_u64(p + 28);
    r->payload = len ? p + REC_HDR : NULL;
    return REC_HDR + len;
}

/* Whether a valid record starts anywhere in p[from, n): what separates damage in the middle
 * of a segment from a torn tail. */
static bool valid_record_after(const unsigned char *p, size_t n, size_t from)
{
    journal_rec r;
    const char *why;
    while (from < n) {
        const unsigned char *m = memchr(p + from, REC_MAGIC, n - from);
        if (!m)
            return false;
        from = (size_t)(m - p);
        if (rec_decode(m, n - from, &r, &why) != 0)
            return true;
        from++;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* The live set: open addressing keyed by (boot, seq); entries are only removed by a rebuild.  */
/* ------------------------------------------------------------------------------------------ */

typedef struct jent {
    uint64_t boot, seq;
    uint64_t ord; /* log order of the outcome: compaction keeps it */
    int64_t time_ms;
    unsigned char *payload;
    uint32_t len;
    uint8_t type; /* 0: empty slot */
    bool done;
} jent;

typedef struct jtab {
    jent *slot;
    size_t mask, n;
} jtab;

static size_t key_hash(uint64_t boot, uint64_t seq)
{
    uint64_t x = boot * 0x9E3779B97F4A7C15ull ^ seq;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (size_t)x;
}

static int tab_init(jtab *t, size_t cap)
{
    t->slot = calloc(cap, sizeof *t->slot);
    t->mask = cap - 1;
    t->n = 0;
    return t->slot ? 0 : -1;
}

/* The entry for the key, or the empty slot where it belongs. */
static jent *tab_slot(const jtab *t, uint64_t boot, uint64_t seq)
{
    size_t i = key_hash(boot, seq) & t->mask;
    while (t->slot[i].type && (t->slot[i].boot != boot || t->slot[i].seq != seq))
        i = (i + 1) & t->mask;
    return &t->slot[i];
}

static void tab_move_in(jtab *t, const jent *e)
{
    *tab_slot(t, e->boot, e->seq) = *e;
    t->n++;
}

/* Makes room for one more entry (load factor at most 3/4). */
static int tab_reserve(jtab *t)
{
    jtab bigger;
    if ((t->n + 1) * 4 <= (t->mask + 1) * 3)
        return 0;
    if (tab_init(&bigger, (t->mask + 1) * 2) != 0)
        return -ENOMEM;
    for (size_t i = 0; i <= t->mask; i++)
        if (t->slot[i].type)
            tab_move_in(&bigger, &t->slot[i]);
    free(t->slot);
    *t = bigger;
    return 0;
}

static void tab_free(jtab *t)
{
    if (!t->slot)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slot[i].payload);
    free(t->slot);
    t->slot = NULL;
}

static bool ent_live(const jent *e, int64_t cutoff_ms)
{
    return (e->type == JOURNAL_COMMIT && !e->done) || e->time_ms >= cutoff_ms;
}

/* ------------------------------------------------------------------------------------------ */
/* The journal                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct jwaiter {
    journal_durable_cb cb;
    void *arg;
} jwaiter;

typedef struct jbatch {
    jbuf buf;
    jwaiter *w;
    size_t nw, capw;
    unsigned nrec;
    bool forced;
} jbatch;

/* What the worker thread does with one batch. The loop does not touch it while in flight. */
typedef struct jjob {
    uv_work_t req;
    journal *j;
    jbatch *b;
    int fd;
    bool sync;
    bool rotate;     /* write b into a new segment new_no, then delete old[] */
    bool sync_old;   /* the segment being replaced holds unsynced writes */
    bool old_closed; /* the worker closed the replaced segment: fd is the new one (or -1) */
    uint64_t new_no;
    uint64_t *old;
    size_t nold;
    int err;          /* errno of the failed step, 0 when all went well */
    const char *step; /* the failed step */
    char file[SEG_NAME_LEN + 1];
    double sync_seconds;
} jjob;

struct journal {
    uv_loop_t *loop;
    char *dir;
    int dirfd, lockfd, fd;
    journal_opts opts;
    journal_fileops ops;
    uint64_t *segs; /* existing segment numbers, ascending; the last one is active */
    size_t nsegs;
    uint64_t seg_size;  /* bytes in the active segment */
    uint64_t base_size; /* bytes of the compacted copy the active segment starts with */
    bool dirty;         /* the active segment has writes not yet fdatasynced */
    uint64_t last_boot;
    int64_t last_boot_time;
    jtab tab;
    uint64_t next_ord;
    jbatch batch[2];
    jbatch *queued;
    jjob job;
    bool inflight, running_cbs, armed, failed, closing, close_started;
    int handles_open;
    uv_check_t check; /* flushes the queued batch at the end of the loop turn */
    uv_idle_t idle;   /* keeps poll from blocking while a batch waits for that check */
    void (*close_cb)(void *arg);
    void *close_arg;
    journal_stats st;
};

static const journal_fileops real_ops = {write, fdatasync};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void seg_name(char *out, uint64_t no)
{
    snprintf(out, SEG_NAME_LEN + 1, "journal-%016" PRIx64 ".log", no);
}

static int64_t retention_cutoff(const journal *j)
{
    return now_ms() - j->opts.retention_s * 1000;
}

/* ------------------------------------------------------------------------------------------ */
/* Opening: directory, lock, segment list                                                     */
/* ------------------------------------------------------------------------------------------ */

static void fsync_parent(const char *dir)
{
    char *copy = strdup(dir), *slash;
    int fd;
    if (!copy)
        return;
    slash = strrchr(copy, '/');
    if (slash == copy)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(copy, ".");
    fd = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

/* mkdir -p with mode 0700; the new directory entry is made durable. */
static int make_dir(const char *dir, char *err, size_t errlen)
{
    char *path = strdup(dir);
    int rc = 0;
    if (!path || !*path) {
        snprintf(err, errlen, "journal: bad data directory \"%s\"", dir);
        free(path);
        return -EINVAL;
    }
    for (char *s = path + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            rc = -EIO;
        *s = '/';
        if (rc)
            break;
    }
    if (rc == 0) {
        if (mkdir(path, 0700) == 0)
            fsync_parent(path);
        else if (errno != EEXIST)
            rc = -EIO;
    }
    if (rc)
        snprintf(err, errlen, "journal: cannot create data directory %s: %s", dir, strerror(errno));
    free(path);
    return rc;
}

static int lock_dir(journal *j, char *err, size_t errlen)
{
    j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        snprintf(err, errlen, "journal: cannot open %s: %s", j->dir, strerror(errno));
        return -EIO;
    }
    j->lockfd = openat(j->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (j->lockfd < 0) {
        snprintf(err, errlen, "journal: cannot open %s/lock: %s", j->dir, strerror(errno));
        return -EIO;
    }
    if (flock(j->lockfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            snprintf(err, errlen, "data directory %s is in use by another xacoord process", j->dir);
            return -EBUSY;
        }
        snprintf(err, errlen, "journal: cannot lock %s/lock: %s", j->dir, strerror(errno));
        return -EIO;
    }
    return 0;
}

static bool parse_seg_name(const char *name, uint64_t *no)
{
    char *end;
    if (strlen(name) != SEG_NAME_LEN || strncmp(name, "journal-", 8) != 0 ||
        strcmp(name + 24, ".log") != 0)
        return false;
    for (int i = 8; i < 24; i++)
        if (!strchr("0123456789abcdef", name[i]))
            return false;
    *no = strtoull(name + 8, &end, 16);
    return end == name + 24;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_segments(journal *j, char *err, size_t errlen)
{
    int fd = dup(j->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    size_t cap = 0;
    if (!d) {
        snprintf(err, errlen, "journal: cannot list %s: %s", j->dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    while ((de = readdir(d)) != NULL) {
        uint64_t no;
        if (!parse_seg_name(de->d_name, &no))
            continue;
        if (j->nsegs == cap) {
            uint64_t *s = realloc(j->segs, (cap = cap ? cap * 2 : 8) * sizeof *s);
            if (!s) {
                closedir(d);
                snprintf(err, errlen, "journal: out of memory");
                return -ENOMEM;
            }
            j->segs = s;
        }
        j->segs[j->nsegs++] = no;
    }
    closedir(d);
    if (j->nsegs > 1)
        qsort(j->segs, j->nsegs, sizeof *j->segs, cmp_u64);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Replay                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct replay_ctx {
    journal_replay_cb cb;
    void *arg;
} replay_ctx;

/* Folds a COMMIT or ABORT into the live set. Returns 1 if new, 0 if a duplicate, -ENOMEM. */
static int live_put(journal *j, const journal_rec *r)
{
    jent *e;
    unsigned char *copy = NULL;
    if (tab_reserve(&j->tab) != 0)
        return -ENOMEM;
    e = tab_slot(&j->tab, r->boot, r->seq);
    if (e->type == (uint8_t)r->type)
        return 0;
    /* With a payload callback the owner keeps what the payload says: no second copy here. */
    if (r->payload_len && !j->opts.payload && !(copy = malloc(r->payload_len)))
        return -ENOMEM;
    if (r->payload_len && !j->opts.payload)
        memcpy(copy, r->payload, r->payload_len);
    if (!e->type)
        j->tab.n++;
    free(e->payload);
    e->boot = r->boot;
    e->seq = r->seq;
    e->ord = j->next_ord++;
    e->time_ms = r->time_ms;
    e->payload = copy;
    e->len = (uint32_t)r->payload_len;
    e->type = (uint8_t)r->type;
    e->done = false;
    return 1;
}

/* Folds a DONE into its COMMIT. Returns whether it changed anything. */
static bool live_done(journal *j, const journal_rec *r)
{
    jent *e = tab_slot(&j->tab, r->boot, r->seq);
    if (e->type == JOURNAL_COMMIT) {
        if (e->done)
            return false;
        e->done = true;
    }
    return true;
}

static int replay_apply(journal *j, const journal_rec *r, const replay_ctx *rc)
{
    int fresh = 1;
    switch (r->type) {
    case JOURNAL_BOOT:
        fresh = r->boot > j->last_boot;
        if (fresh) {
            j->last_boot = r->boot;
            j->last_boot_time = r->time_ms;
        }
        break;
    case JOURNAL_COMMIT:
    case JOURNAL_ABORT:
        fresh = live_put(j, r);
        break;
    case JOURNAL_DONE:
        fresh = live_done(j, r);
        break;
    }
    if (fresh < 0)
        return fresh;
    if (fresh && rc->cb)
        rc->cb(r, rc->arg);
    return 0;
}

static int read_whole(int fd, unsigned char **out, size_t *n)
{
    struct stat st;
    size_t got = 0;
    if (fstat(fd, &st) != 0)
        return -EIO;
    *n = (size_t)st.st_size;
    *out = malloc(*n ? *n : 1);
    if (!*out)
        return -ENOMEM;
    while (got < *n) {
        ssize_t r = pread(fd, *out + got, *n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(*out);
            return -EIO;
        }
        got += (size_t)r;
    }
    return 0;
}

static int cut_tail(journal *j, int fd, const char *name, size_t off, size_t n, const char *why,
                    char *err, size_t errlen)
{
    if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "journal: cannot truncate the torn tail of %s/%s: %s", j->dir, name,
                 strerror(errno));
        return -EIO;
    }
    log_warn(LOG_CTX, "%s/%s: torn tail at offset %zu (%s): cut %zu bytes", j->dir, name, off, why,
             n - off);
    return 0;
}

/* v in base 36, as gtrids spell boot and seq (coordinator/identity.h); out >= 14 bytes. */
static void b36(uint64_t v, char *out)
{
    char tmp[14];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
        v /= 36;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* A COMMIT record whose frame is whole - header plausible and every payload byte there - but
 * whose CRC fails. A write cut short leaves a short frame; this may instead be a decision that was
 * synced, acted on and damaged afterwards, and cutting it would presume abort against it. Returns
 * the offset of the first one in p[off, n), or n. */
static size_t whole_commit_frame(const unsigned char *p, size_t n, size_t off)
{
    while (n - off >= REC_HDR && p[off] == REC_MAGIC && p[off + 1] == REC_VERSION &&
           p[off + 3] == 0 && p[off + 2] >= JOURNAL_BOOT && p[off + 2] <= JOURNAL_DONE) {
        uint32_t len = get_u32(p + off + 4);
        if (len > JOURNAL_MAX_PAYLOAD || n - off - REC_HDR < len)
            break;
        if (p[off + 2] == JOURNAL_COMMIT && get_u32(p + off + 8) != rec_crc(p + off, len))
            return off;
        off += REC_HDR + len;
    }
    return n;
}

/* The tail from off is damaged: a torn write is cut; a whole COMMIT frame stops start-up unless
 * the operator said it was dealt with (docs/operations.md, "A damaged journal"). */
static int damaged_tail(journal *j, int fd, const char *name, const unsigned char *p, size_t n,
                        size_t off, const char *why, char *err, size_t errlen)
{
    size_t at = whole_commit_frame(p, n, off);
    char boot[16], seq[16];
    if (at == n)
        return cut_tail(j, fd, name, off, n, why, err, errlen);
    b36(get_u64(p + at + 12), boot);
    b36(get_u64(p + at + 20), seq);
    if (!j->opts.accept_damaged_tail) {
        snprintf(err, errlen,
                 "journal damaged, not torn: %s/%s at offset %zu holds a complete COMMIT record "
                 "(boot %s, seq %s: gtrid xa2.<node_id>.<identity>.%s.%s) whose checksum fails; "
                 "it may be a commit decision that was acted on. Resolve that transaction's "
                 "branches by hand (docs/operations.md, \"A damaged journal\"), then start once "
                 "with --accept-damaged-tail",
                 j->dir, name, at, boot, seq, boot, seq);
        return -EINVAL;
    }
    log_error(LOG_CTX,
              "%s/%s: a complete COMMIT record (boot %s, seq %s) at offset %zu fails its "
              "checksum; cut as the operator accepted (--accept-damaged-tail)",
              j->dir, name, boot, seq, at);
    return cut_tail(j, fd, name, off, n, why, err, errlen);
}

static int replay_buf(journal *j, int fd, const char *name, bool last, const unsigned char *p,
                      size_t n, const replay_ctx *rc, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < n) {
        journal_rec r;
        const char *why = NULL;
        size_t len = rec_decode(p + off, n - off, &r, &why);
        if (len == 0) {
            if (last && !valid_record_after(p, n, off + 1))
                return damaged_tail(j, fd, name, p, n, off, why, err, errlen);
            snprintf(err, errlen, "journal corrupt: %s/%s at offset %zu: %s", j->dir, name, off,
                     why);
            return -EINVAL;
        }
        if (replay_apply(j, &r, rc) != 0) {
            snprintf(err, errlen, "journal: out of memory during replay");
            return -ENOMEM;
        }
        off += len;
    }
    return 0;
}

static int replay_segment(journal *j, size_t i, const replay_ctx *rc, char *err, size_t errlen)
{
    char name[SEG_NAME_LEN + 1];
    bool last = i + 1 == j->nsegs;
    unsigned char *p;
    size_t n;
    int fd, rv;
    seg_name(name, j->segs[i]);
    fd = openat(j->dirfd, name, (last ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0 || read_whole(fd, &p, &n) != 0) {
        snprintf(err, errlen, "journal: cannot read %s/%s: %s", j->dir, name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    rv = replay_buf(j, fd, name, last, p, n, rc, err, errlen);
    free(p);
    close(fd);
    return rv;
}

/* Opens the last segment for appending, or creates the first one. */
static int open_active(journal *j, char *err, size_t errlen)
{
    char name[SEG_NAME_LEN + 1];
    struct stat st;
    bool create = j->nsegs == 0;
    if (create) {
        j->segs = realloc(j->segs, sizeof *j->segs);
        if (!j->segs) {
            snprintf(err, errlen, "journal: out of memory");
            return -ENOMEM;
        }
        j->segs[0] = 1;
        j->nsegs = 1;
    }
    seg_name(name, j->segs[j->nsegs - 1]);
    j->fd = openat(j->dirfd, name, O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (j->fd < 0 || fstat(j->fd, &st) != 0 || (create && fsync(j->dirfd) != 0)) {
        snprintf(err, errlen, "journal: cannot open %s/%s: %s", j->dir, name, strerror(errno));
        return -EIO;
    }
    j->seg_size = (uint64_t)st.st_size;
    return 0;
}

static void on_check(uv_check_t *h);
static void on_idle(uv_idle_t *h) {}

static void journal_free(journal *j)
{
    if (j->fd >= 0)
        close(j->fd);
    if (j->lockfd >= 0)
        close(j->lockfd); /* releases the flock */
    if (j->dirfd >= 0)
        close(j->dirfd);
    tab_free(&j->tab);
    for (int i = 0; i < 2; i++) {
        free(j->batch[i].buf.p);
        free(j->batch[i].w);
    }
    free(j->job.old);
    free(j->segs);
    free(j->dir);
    free(j);
}

int journal_open(journal **out, uv_loop_t *loop, const char *dir, const journal_opts *opts,
                 journal_replay_cb cb, void *arg, char *err, size_t errlen)
{
    journal *j = calloc(1, sizeof *j);
    replay_ctx rc_replay = {cb, arg};
    int rc;
    *out = NULL;
    if (!j || !(j->dir = strdup(dir)) || tab_init(&j->tab, TAB_MIN_CAP) != 0) {
        snprintf(err, errlen, "journal: out of memory");
        if (j)
            free(j->dir);
        free(j);
        return -ENOMEM;
    }
    j->loop = loop;
    j->fd = j->dirfd = j->lockfd = -1;
    if (opts)
        j->opts = *opts;
    if (!j->opts.segment_bytes)
        j->opts.segment_bytes = DEFAULT_SEGMENT_BYTES;
    if (j->opts.retention_s <= 0)
        j->opts.retention_s = DEFAULT_RETENTION_S;
    j->ops = j->opts.ops ? *j->opts.ops : real_ops;
    if ((rc = make_dir(dir, err, errlen)) != 0 || (rc = lock_dir(j, err, errlen)) != 0)
        goto fail;
    /* The owner's check says why in err; its code is not ours to pass on. */
    if (j->opts.locked && j->opts.locked(dir, j->opts.arg, err, errlen) != 0) {
        rc = -EIO;
        goto fail;
    }
    if ((rc = list_segments(j, err, errlen)) != 0)
        goto fail;
    for (size_t i = 0; i < j->nsegs; i++)
        if ((rc = replay_segment(j, i, &rc_replay, err, errlen)) != 0)
            goto fail;
    if ((rc = open_active(j, err, errlen)) != 0)
        goto fail;
    j->queued = &j->batch[0];
    j->job.j = j;
    uv_check_init(loop, &j->check);
    uv_idle_init(loop, &j->idle);
    j->check.data = j->idle.data = j;
    j->handles_open = 2;
    *out = j;
    return 0;
fail:
    journal_free(j);
    return rc;
}

uint64_t journal_last_boot(const journal *j)
{
    return j->last_boot;
}

/* ------------------------------------------------------------------------------------------ */
/* Worker side: runs in the threadpool                                                        */
/* ------------------------------------------------------------------------------------------ */

static int write_all(const journal_fileops *ops, int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = ops->write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno ? errno : EIO;
        if (w == 0)
            return ENOSPC;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static bool job_fail(jjob *job, const char *step, int err)
{
    job->step = step;
    job->err = err ? err : EIO;
    return false;
}

/* Makes the segment being replaced durable, then creates the new one (job->fd). */
static bool rotate_begin(jjob *job)
{
    const journal *j = job->j;
    if (job->sync_old && j->ops.fdatasync(job->fd) != 0)
        return job_fail(job, "fdatasync", errno);
    close(job->fd);
    job->old_closed = true;
    seg_name(job->file, job->new_no);
    job->fd = openat(j->dirfd, job->file, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (job->fd < 0)
        return job_fail(job, "create", errno);
    return true;
}

/* The new segment is durable: make its name durable, then drop the old segments. */
static bool rotate_end(jjob *job)
{
    const journal *j = job->j;
    char name[SEG_NAME_LEN + 1];
    if (fsync(j->dirfd) != 0)
        return job_fail(job, "fsync of the directory", errno);
    for (size_t i = 0; i < job->nold; i++) {
        seg_name(name, job->old[i]);
        if (unlinkat(j->dirfd, name, 0) != 0)
            log_warn(LOG_CTX, "cannot delete %s/%s: %s", j->dir, name, strerror(errno));
    }
    if (fsync(j->dirfd) != 0)
        log_warn(LOG_CTX, "fsync of %s after deleting segments: %s", j->dir, strerror(errno));
    return true;
}

static void work_cb(uv_work_t *req)
{
    jjob *job = req->data;
    const journal *j = job->j;
    struct timespec t0, t1;
    int e;
    if (job->rotate && !rotate_begin(job))
        return;
    if ((e = write_all(&j->ops, job->fd, job->b->buf.p, job->b->buf.len)) != 0) {
        job_fail(job, "write", e);
        return;
    }
    crash_point("journal-after-write");
    if (job->sync) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (j->ops.fdatasync(job->fd) != 0) {
            job_fail(job, "fdatasync", errno);
            return;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        job->sync_seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        crash_point("journal-after-sync");
    }
    if (job->rotate)
        rotate_end(job);
}

/* ------------------------------------------------------------------------------------------ */
/* Loop side: batching, completion, failure                                                   */
/* ------------------------------------------------------------------------------------------ */

static void arm(journal *j)
{
    if (j->armed || j->inflight || j->close_started)
        return;
    uv_check_start(&j->check, on_check);
    uv_idle_start(&j->idle, on_idle);
    j->armed = true;
}

static void disarm(journal *j)
{
    if (!j->armed)
        return;
    uv_check_stop(&j->check);
    uv_idle_stop(&j->idle);
    j->armed = false;
}

static void batch_reset(jbatch *b)
{
    if (b->buf.cap > BUF_KEEP_MAX) {
        free(b->buf.p);
        b->buf = (jbuf){0};
    }
    b->buf.len = 0;
    b->nw = 0;
    b->nrec = 0;
    b->forced = false;
}

static bool batch_empty(const jbatch *b)
{
    return b->nrec == 0;
}

static int cmp_ord(const void *a, const void *b)
{
    uint64_t x = (*(const jent *const *)a)->ord, y = (*(const jent *const *)b)->ord;
    return x < y ? -1 : x > y;
}

static int dump_entry(const journal *j, jbuf *out, const jent *e)
{
    journal_rec r = {(journal_type)e->type, e->boot, e->seq, e->time_ms, e->payload, e->len};
    void *asked = NULL;
    size_t len = 0;
    int rc;
    if (j->opts.payload) {
        if (j->opts.payload(r.type, r.boot, r.seq, &asked, &len, j->opts.arg) != 0) {
            free(asked);
            /* A commit still owed to a participant must never be lost: give up compacting. */
            return r.type == JOURNAL_COMMIT && !e->done ? -EIO : 0;
        }
        r.payload = asked;
        r.payload_len = len;
    }
    rc = rec_append(out, &r);
    free(asked);
    if (rc != 0)
        return -ENOMEM;
    r.type = JOURNAL_DONE;
    r.payload = NULL;
    r.payload_len = 0;
    return e->done ? rec_append(out, &r) : 0;
}

/* Encodes BOOT(last) and every live record into out, in log order: the engine lets a later
 * outcome of the same client id win, so a compacted journal must keep the order. *live counts
 * the live outcomes. */
static int dump_live(const journal *j, int64_t cutoff, jbuf *out, size_t *live)
{
    const jent **v = malloc((j->tab.n ? j->tab.n : 1) * sizeof *v);
    size_t n = 0;
    int rc = 0;
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i <= j->tab.mask; i++)
        if (j->tab.slot[i].type && ent_live(&j->tab.slot[i], cutoff))
            v[n++] = &j->tab.slot[i];
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_ord);
    if (j->last_boot) {
        journal_rec boot = {JOURNAL_BOOT, j->last_boot, 0, j->last_boot_time, NULL, 0};
        rc = rec_append(out, &boot);
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = dump_entry(j, out, v[i]);
    free(v);
    *live = n;
    return rc;
}

/* Replaces the live set by a table holding only its live entries. */
static int rebuild_live(journal *j, int64_t cutoff, size_t live)
{
    size_t cap = TAB_MIN_CAP;
    jtab fresh;
    while (cap < live * 2)
        cap *= 2;
    if (tab_init(&fresh, cap) != 0)
        return -ENOMEM;
    for (size_t i = 0; i <= j->tab.mask; i++) {
        jent *e = &j->tab.slot[i];
        if (e->type && ent_live(e, cutoff))
            tab_move_in(&fresh, e);
        else
            free(e->payload);
    }
    free(j->tab.slot);
    j->tab = fresh;
    return 0;
}

/* Rewrites the live set into b (replacing the batch, whose records are already folded into
 * the live set) and drops everything else from memory. */
static int build_compacted(journal *j, jbatch *b)
{
    int64_t cutoff = retention_cutoff(j);
    size_t live = 0;
    jbuf out = {0};
    if (dump_live(j, cutoff, &out, &live) != 0 || rebuild_live(j, cutoff, live) != 0) {
        free(out.p);
        return -ENOMEM;
    }
    free(b->buf.p);
    b->buf = out;
    return 0;
}

static bool want_rotation(const journal *j)
{
    return j->seg_size > j->opts.segment_bytes && j->seg_size >= 2 * j->base_size;
}

static int prepare_rotation(journal *j, jjob *job)
{
    uint64_t *old = realloc(job->old, j->nsegs * sizeof *old);
    if (!old)
        return -ENOMEM;
    job->old = old;
    memcpy(old, j->segs, j->nsegs * sizeof *old);
    job->nold = j->nsegs;
    if (build_compacted(j, job->b) != 0)
        return -ENOMEM;
    job->rotate = true;
    job->sync = true;
    job->sync_old = j->dirty;
    job->new_no = j->segs[j->nsegs - 1] + 1;
    return 0;
}

static void on_after_work(uv_work_t *req, int status);

static void dispatch(journal *j)
{
    jjob *job = &j->job;
    jbatch *b = j->queued;
    disarm(j);
    if (j->inflight || j->running_cbs || j->failed || batch_empty(b))
        return;
    job->b = b;
    job->fd = j->fd;
    job->sync = b->forced;
    job->rotate = false;
    job->old_closed = false;
    job->err = 0;
    job->sync_seconds = 0;
    seg_name(job->file, j->segs[j->nsegs - 1]);
    if (want_rotation(j) && prepare_rotation(j, job) != 0) {
        /* Out of memory, or a pending commit's payload was not available: keep appending to the
         * current segment; nothing is lost. */
        log_warn(LOG_CTX, "compaction skipped: out of memory or a payload was unavailable");
        j->st.compactions_skipped++;
        job->rotate = false;
    }
    j->queued = (b == &j->batch[0]) ? &j->batch[1] : &j->batch[0];
    j->inflight = true;
    job->req.data = job;
    uv_queue_work(j->loop, &job->req, work_cb, on_after_work);
}

static void on_check(uv_check_t *h)
{
    dispatch(h->data);
}

static void handle_closed(uv_handle_t *h)
{
    journal *j = h->data;
    if (--j->handles_open > 0)
        return;
    void (*cb)(void *) = j->close_cb;
    void *arg = j->close_arg;
    journal_free(j);
    if (cb)
        cb(arg);
}

static void maybe_finish_close(journal *j)
{
    if (!j->closing || j->close_started || j->inflight || j->running_cbs)
        return;
    if (!j->failed && !batch_empty(j->queued)) {
        dispatch(j);
        return;
    }
    disarm(j);
    j->close_started = true;
    uv_close((uv_handle_t *)&j->check, handle_closed);
    uv_close((uv_handle_t *)&j->idle, handle_closed);
}

static void journal_fail(journal *j, const char *msg)
{
    j->failed = true;
    disarm(j);
    batch_reset(j->queued); /* those decisions are not durable: nobody may act on them */
    if (j->opts.on_fatal) {
        j->opts.on_fatal(msg, j->opts.arg);
        return;
    }
    /* As PostgreSQL does on a failed fsync: the page cache may have dropped the record, so no
     * later success could prove it durable. Waiting requests get no answer: their outcome is
     * whatever the journal holds at the next start (docs/operations.md section 8c). */
    log_error(LOG_CTX,
              "%s; exiting: no decision is taken on a journal that cannot be made "
              "durable (restart once the disk works: recovery finishes every branch)",
              msg);
    exit(1);
}

static void job_applied(journal *j, jjob *job)
{
    uint64_t len = job->b->buf.len;
    j->st.batches++;
    if (job->rotate) {
        j->fd = job->fd;
        j->segs[0] = job->new_no;
        j->nsegs = 1;
        j->seg_size = j->base_size = len;
        j->st.compactions++;
    } else {
        j->seg_size += len;
    }
    j->dirty = !job->sync;
    if (job->sync) {
        j->st.syncs++;
        if (j->opts.on_sync)
            j->opts.on_sync(job->sync_seconds, job->b->nrec, j->opts.arg);
    }
}

static void on_after_work(uv_work_t *req, int status)
{
    jjob *job = req->data;
    journal *j = job->j;
    jbatch *b = job->b;
    j->inflight = false;
    if (job->err) {
        char msg[512];
        if (job->old_closed)
            j->fd = job->fd;
        snprintf(msg, sizeof msg, "journal: %s of %s/%s failed: %s", job->step, j->dir, job->file,
                 strerror(job->err));
        batch_reset(b);
        journal_fail(j, msg);
        maybe_finish_close(j);
        return;
    }
    job_applied(j, job);
    j->running_cbs = true;
    for (size_t i = 0; i < b->nw; i++)
        b->w[i].cb(b->w[i].arg);
    j->running_cbs = false;
    batch_reset(b);
    if (!batch_empty(j->queued) && !j->closing)
        arm(j);
    maybe_finish_close(j);
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                 */
/* ------------------------------------------------------------------------------------------ */

int journal_start_boot(journal *j, uint64_t *boot, char *err, size_t errlen)
{
    journal_rec r = {JOURNAL_BOOT, j->last_boot + 1, 0, now_ms(), NULL, 0};
    jbuf b = {0};
    int e;
    if (j->failed || j->closing || j->inflight) {
        snprintf(err, errlen, "journal: not idle, cannot start a boot");
        return -EBUSY;
    }
    /* Refused before anything is written: a wrapped counter would reuse the names of old
     * branches, and a record per attempt would grow the journal on every retry. */
    if (j->last_boot == UINT64_MAX) {
        snprintf(err, errlen,
                 "journal: the boot counter of %s is at its maximum (%" PRIu64
                 "); the journal is damaged or forged - restore it from a backup",
                 j->dir, j->last_boot);
        return -EOVERFLOW;
    }
    if (rec_append(&b, &r) != 0) {
        snprintf(err, errlen, "journal: out of memory");
        return -ENOMEM;
    }
    e = write_all(&j->ops, j->fd, b.p, b.len);
    if (e == 0 && j->ops.fdatasync(j->fd) != 0)
        e = errno ? errno : EIO;
    free(b.p);
    if (e != 0) {
        j->failed = true;
        snprintf(err, errlen, "journal: writing the boot record to %s failed: %s", j->dir,
                 strerror(e));
        return -e;
    }
    j->seg_size += REC_HDR;
    j->dirty = false;
    j->last_boot = r.boot;
    j->last_boot_time = r.time_ms;
    j->st.records++;
    j->st.forced++;
    j->st.batches++;
    j->st.syncs++;
    *boot = r.boot;
    return 0;
}

/* Reflects an appended record in the live set; -ENOMEM (nothing changed) when out of memory. */
static int live_append(journal *j, const journal_rec *r)
{
    if (r->type == JOURNAL_DONE) {
        live_done(j, r);
        return 0;
    }
    return live_put(j, r) < 0 ? -ENOMEM : 0;
}

static int waiter_reserve(jbatch *b)
{
    jwaiter *w;
    size_t cap;
    if (b->nw < b->capw)
        return 0;
    cap = b->capw ? b->capw * 2 : 64;
    w = realloc(b->w, cap * sizeof *w);
    if (!w)
        return -ENOMEM;
    b->w = w;
    b->capw = cap;
    return 0;
}

int journal_append(journal *j, const journal_rec *rec, journal_durable_cb cb, void *arg)
{
    jbatch *b = j->queued;
    if (!rec)
        return -EINVAL;
    if (j->failed)
        return -EIO;
    if (j->closing)
        return -ESHUTDOWN;
    if (rec->type < JOURNAL_COMMIT || rec->type > JOURNAL_DONE)
        return -EINVAL;
    if (rec->payload_len > JOURNAL_MAX_PAYLOAD)
        return -ERANGE;
    if (rec->payload_len && !rec->payload)
        return -EINVAL;
    if (jbuf_reserve(&b->buf, REC_HDR + rec->payload_len) != 0)
        return -ENOMEM;
    if (cb && waiter_reserve(b) != 0)
        return -ENOMEM;
    if (live_append(j, rec) != 0)
        return -ENOMEM;
    rec_encode(&b->buf, rec);
    b->nrec++;
    j->st.records++;
    if (cb) {
        b->w[b->nw++] = (jwaiter){cb, arg};
        b->forced = true;
        j->st.forced++;
    }
    arm(j);
    return 0;
}

void journal_get_stats(const journal *j, journal_stats *out)
{
    int64_t cutoff = retention_cutoff(j);
    *out = j->st;
    out->live_records = 0;
    for (size_t i = 0; i <= j->tab.mask; i++)
        if (j->tab.slot[i].type && ent_live(&j->tab.slot[i], cutoff))
            out->live_records++;
    out->bytes = j->seg_size;
    out->segments = (int)j->nsegs;
}

void journal_close(journal *j, void (*cb)(void *arg), void *arg)
{
    if (j->closing)
        return;
    j->closing = true;
    j->close_cb = cb;
    j->close_arg = arg;
    maybe_finish_close(j);
}
