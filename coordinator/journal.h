/*
 * The decision log: append-only segments of CRC-checked binary records in data_dir.
 *
 * Records are batched: everything appended during one loop turn goes out in one write and, if any
 * record in the batch is forced, one fdatasync - both run in the libuv threadpool, never on the
 * loop. Records appended while a batch is in flight wait for the next batch. A forced record's
 * callback runs on the loop only after its batch is durable; a lazy record (no callback) is written
 * with the next batch but never waited for. A failed write or fdatasync is fatal (opts.on_fatal),
 * because the page cache state after a failed fsync is unknowable.
 *
 * The journal knows which records still matter and keeps itself bounded: when the active segment
 * grows past opts.segment_bytes it writes a new segment holding only the live records, forces it,
 * and deletes the older ones. Live: a COMMIT whose DONE is not yet logged; and any COMMIT or ABORT
 * younger than opts.retention_s (for idempotent replay). DONE is folded into its COMMIT.
 *
 * On open, the directory is locked (flock on data_dir/lock) so that a second daemon refuses to
 * start; every segment is replayed in order; a torn tail of the last segment (a short or
 * CRC-failing final record) is truncated; a bad record before the tail stops start-up with an
 * error that names the file and offset.
 */
#ifndef XA_JOURNAL_H
#define XA_JOURNAL_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef enum journal_type {
    JOURNAL_BOOT = 1,   /* boot: a new incarnation; no payload */
    JOURNAL_COMMIT = 2, /* the commit decision of (boot, seq): always forced */
    JOURNAL_ABORT = 3,  /* an abort outcome, kept for idempotent replay: lazy */
    JOURNAL_DONE = 4,   /* every branch of committed (boot, seq) acknowledged: lazy */
} journal_type;

#define JOURNAL_MAX_PAYLOAD (1u << 20)

typedef struct journal_rec {
    journal_type type;
    uint64_t boot;       /* the transaction's boot (for BOOT: the new boot number) */
    uint64_t seq;        /* the transaction's sequence within its boot (0 for BOOT) */
    int64_t time_ms;     /* wall clock when the outcome was reached (retention) */
    const void *payload; /* engine-defined bytes (COMMIT/ABORT); may be NULL */
    size_t payload_len;  /* <= JOURNAL_MAX_PAYLOAD */
} journal_rec;

/* Called once per record during journal_open, in log order. The record and its payload are valid
 * only during the call. A compaction cut short by a crash leaves copies of live records in two
 * segments: each outcome, each DONE and each BOOT is still passed only once. */
typedef void (*journal_replay_cb)(const journal_rec *rec, void *arg);
/* Called on the loop once the record's batch is durable. */
typedef void (*journal_durable_cb)(void *arg);

/* File operations under the journal, replaceable by tests to inject short writes and fsync
 * errors. They run in the threadpool. Each returns what the libc call returns (-1 + errno). */
typedef struct journal_fileops {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fdatasync)(int fd);
} journal_fileops;

typedef struct journal_opts {
    size_t segment_bytes;       /* rotate + compact past this size; 0: 64 MiB */
    int64_t retention_s;        /* how long finished outcomes stay; 0: keep 24 h */
    const journal_fileops *ops; /* NULL: the real write/fdatasync */
    /* Called with a message when a write or fdatasync fails; NULL: log it and exit(1).
     * After it the journal accepts nothing more. */
    void (*on_fatal)(const char *msg, void *arg);
    /* Called on the loop after every batch that was synced: its fdatasync time and record count. */
    void (*on_sync)(double seconds, unsigned records, void *arg);
    /* When set, the journal keeps no copy of COMMIT/ABORT payloads in memory (the owner already
     * holds what they say): compaction asks for each live record's payload instead, on the loop.
     * Return 0 with a malloc'ed buffer in *out (or NULL and *len 0), or < 0 when the outcome is
     * gone - that record is then dropped, unless it is a COMMIT still waiting for acknowledgements,
     * in which case the compaction is abandoned and the journal keeps appending as before.
     * NULL: payloads are copied and the journal is self-contained. */
    int (*payload)(journal_type type, uint64_t boot, uint64_t seq, void **out, size_t *len,
                   void *arg);
    /* Called once the directory is locked, before the first record is replayed, so that the
     * owner can read what else it keeps in the directory (coordinator/identity.h) safe from a
     * second process. Returns 0, or < 0 with a message in err: journal_open fails (-EIO). NULL:
     * none. */
    int (*locked)(const char *dir, void *arg, char *err, size_t errlen);
    void *arg; /* passed to on_fatal, on_sync, payload and locked */
    /* A complete COMMIT record whose checksum fails at the tail may be a decision that was acted
     * on: journal_open refuses it unless the operator resolved its transaction and said so. */
    bool accept_damaged_tail;
} journal_opts;

typedef struct journal journal;

typedef struct journal_stats {
    uint64_t batches; /* writes done */
    uint64_t syncs;   /* fdatasyncs done */
    uint64_t records; /* records appended since open */
    uint64_t forced;  /* records that were waited for */
    uint64_t compactions;
    uint64_t compactions_skipped; /* due but given up (out of memory, a payload not available) */
    uint64_t live_records;        /* outcomes (COMMIT/ABORT) the next compaction would keep */
    uint64_t bytes;               /* size of the active segment */
    int segments;
} journal_stats;

/* Locks dir (created if missing), replays every record through cb, truncates a torn tail.
 * Returns 0, or a negative errno code with a message in err naming the file (and offset, for
 * corruption): -EBUSY (another process holds the lock), -EINVAL (a corrupt or damaged journal,
 * a bad directory), -EIO, -ENOMEM. */
XA_MUST_CHECK int journal_open(journal **out, uv_loop_t *loop, const char *dir,
                               const journal_opts *opts, journal_replay_cb cb, void *arg, char *err,
                               size_t errlen);

/* The highest boot number replayed (0 for a new journal). */
uint64_t journal_last_boot(const journal *j);

/* Writes BOOT(last_boot + 1) and fdatasyncs it synchronously (start-up, before the loop serves
 * anything and before the first append). 0 with the new boot in *boot, or with err set -EBUSY
 * (not idle), -EOVERFLOW (the counter is at its maximum), -ENOMEM, or the write's or
 * fdatasync's error; after a failed write or fdatasync the journal accepts nothing more. */
XA_MUST_CHECK int journal_start_boot(journal *j, uint64_t *boot, char *err, size_t errlen);

/* Queues a record: COMMIT, ABORT or DONE (BOOT belongs to journal_start_boot). cb != NULL forces
 * it (cb runs once durable); cb == NULL is lazy. The payload is copied. Returns 0, or (cb not
 * called) -EINVAL (an invalid record), -ERANGE (a payload over JOURNAL_MAX_PAYLOAD), -ENOMEM,
 * -ESHUTDOWN (closing) or -EIO (the journal failed). */
XA_MUST_CHECK int journal_append(journal *j, const journal_rec *rec, journal_durable_cb cb,
                                 void *arg);

void journal_get_stats(const journal *j, journal_stats *out);

/* Writes what is queued, waits for the batch in flight, releases the lock and frees j; cb runs on
 * the loop when all that is done (the journal's handles are closed). */
void journal_close(journal *j, void (*cb)(void *arg), void *arg);

#endif
