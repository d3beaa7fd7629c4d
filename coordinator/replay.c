/*
 * Journal records to outcomes and back (see replay.h).
 */
#include "replay.h"

#include "log.h"
#include "outcome_codec.h"

#include <errno.h>
#include <stdlib.h>

/* An older outcome that is past its retention and owes nothing: a client may reuse its id. */
static bool expired(const coord *c, const outcome *o, const journal_rec *rec)
{
    return o->state != OUTCOME_IN_PROGRESS && o->pending == 0 &&
           rec->time_ms - o->time_ms > (int64_t)c->cfg->outcome_retention_s * 1000;
}

/* Ids are unique (generated ones have a prefix clients may not use, and a repeated id replays
 * instead of running), so an id recorded twice within its retention means the journal is not what
 * this coordinator wrote. The first outcome keeps answering for the id; the later one stays
 * reachable by its gtrid, so that neither decision is lost for recovery. */
static outcome *replay_create(coord *c, const outcome_fields *f, const char *gtrid,
                              const journal_rec *rec)
{
    outcome *o = outcome_find(c->outcomes, f->id);
    if (!o)
        return outcome_create(c->outcomes, f->id, gtrid, f->digest);
    if (expired(c, o, rec)) {
        outcome_unindex(c->outcomes, o);
        outcome_release(c->outcomes, o);
        return outcome_create(c->outcomes, f->id, gtrid, f->digest);
    }
    c->journal_conflicts++;
    log_error("journal",
              "CORRUPTION: id '%s' is recorded for transaction %s and again for %s; "
              "the id keeps answering with %s, and both decisions are kept for "
              "recovery",
              f->id, o->gtrid, gtrid, o->gtrid);
    return outcome_create_shadowed(c->outcomes, f->id, gtrid, f->digest);
}

static void replay_outcome(coord *c, const journal_rec *rec)
{
    char gtrid[PX_XID_PART_MAX + 1];
    bool commit = rec->type == JOURNAL_COMMIT;
    outcome_fields f;
    outcome *o;
    int rc;

    coord_gtrid(c, rec->boot, rec->seq, gtrid, sizeof gtrid);
    rc = outcome_decode(rec->payload, rec->payload_len, &f);
    if (rc == -ENOMEM)
        abort(); /* start-up: nothing is lost by dying */
    if (rc != 0) {
        log_error("journal", "unreadable outcome payload for %s: ignored", gtrid);
        return;
    }
    if (f.status < 200 || f.status > 599) {
        /* The decision stands whatever the stored reply says; the reply gets a real status. */
        log_warn("journal", "outcome of %s has HTTP status %d: answering with %d", gtrid, f.status,
                 commit ? 200 : 409);
        f.status = commit ? 200 : 409;
    }
    o = replay_create(c, &f, gtrid, rec);
    if (!o)
        abort();
    if (commit) {
        outcome_commit(c->outcomes, o, rec->time_ms);
        outcome_set_pending(c->outcomes, o, coord_names_mask(c, f.participants, gtrid));
    }
    outcome_settle(c->outcomes, o, commit ? OUTCOME_COMMITTED : OUTCOME_ABORTED, f.status, f.head,
                   rec->time_ms);
    f.head = NULL; /* the outcome's now */
    outcome_fields_free(&f);
}

void replay_record(const journal_rec *rec, void *arg)
{
    coord *c = arg;
    char gtrid[PX_XID_PART_MAX + 1];
    outcome *o;
    switch (rec->type) {
    case JOURNAL_BOOT:
        break;
    case JOURNAL_COMMIT:
    case JOURNAL_ABORT:
        replay_outcome(c, rec);
        break;
    case JOURNAL_DONE:
        coord_gtrid(c, rec->boot, rec->seq, gtrid, sizeof gtrid);
        o = outcome_find_commit(c->outcomes, gtrid);
        if (o)
            outcome_set_pending(c->outcomes, o, 0);
        break;
    }
}

int replay_payload(journal_type type, uint64_t boot, uint64_t seq, void **out, size_t *len,
                   void *arg)
{
    coord *c = arg;
    char gtrid[PX_XID_PART_MAX + 1];
    outcome *o;
    coord_gtrid(c, boot, seq, gtrid, sizeof gtrid);
    o = outcome_find_gtrid(c->outcomes, gtrid);
    /* A COMMIT record is asked for while its transaction still waits for the record's own
     * fsync (outcome in progress, reply already fixed): under sustained commits every batch holds
     * one, and refusing them would stop compaction for good. (A status other than 200 is the
     * shutdown's "unknown" answer to a commit whose record was still being written.) */
    if (!o || !o->reply_head || (type == JOURNAL_COMMIT && o->status != 200))
        return -ENOENT;
    if (type == JOURNAL_COMMIT ? o->state == OUTCOME_ABORTED : o->state != OUTCOME_ABORTED)
        return -ENOENT;
    return coord_encode_outcome(c, o, (char **)out, len);
}
