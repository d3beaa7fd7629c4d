/*
 * The journal and the outcome table: at start-up every COMMIT and ABORT record becomes an
 * outcome again (for idempotent replay and for recovery's decisions) and every DONE record
 * clears its commit's pending branches; at compaction the journal, which keeps no copy of
 * payloads, asks for the payload of each record it carries over.
 */
#ifndef XA_REPLAY_H
#define XA_REPLAY_H

#include "coord.h"

/* journal_open's replay callback; arg is the coord. */
void replay_record(const journal_rec *rec, void *arg);
/* journal_opts.payload: the payload of (type, boot, seq) as the outcome table now has it, or
 * -ENOENT when the outcome is gone or no longer that record's. arg is the coord. */
XA_MUST_CHECK int replay_payload(journal_type type, uint64_t boot, uint64_t seq, void **out,
                                 size_t *len, void *arg);

#endif
