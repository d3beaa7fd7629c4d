/*
 * The outcome table (see outcome.h): two string maps over one list kept in creation order, which
 * is close to outcome order, so pruning walks from the oldest end.
 */
#include "outcome.h"

#include "strmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct outcomes {
    strmap *by_id;
    strmap *by_gtrid; /* every indexed outcome */
    outcome *oldest, *newest;
    int64_t retention_ms;
    size_t count;
};

outcomes *outcomes_new(int64_t retention_s)
{
    outcomes *os = calloc(1, sizeof *os);
    if (!os)
        return NULL;
    os->by_id = strmap_new();
    os->by_gtrid = strmap_new();
    os->retention_ms = retention_s * 1000;
    if (!os->by_id || !os->by_gtrid) {
        outcomes_free(os);
        return NULL;
    }
    return os;
}

static void unlink_outcome(outcomes *os, outcome *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else if (os->oldest == o)
        os->oldest = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else if (os->newest == o)
        os->newest = o->prev;
    o->prev = o->next = NULL;
}

static void free_outcome(outcome *o)
{
    while (o->waiters) {
        outcome_waiter *w = o->waiters;
        o->waiters = w->next;
        free(w);
    }
    free(o->reply_head);
    free(o);
}

void outcomes_free(outcomes *os)
{
    if (!os)
        return;
    while (os->oldest) {
        outcome *o = os->oldest;
        unlink_outcome(os, o);
        free_outcome(o);
    }
    strmap_free(os->by_id);
    strmap_free(os->by_gtrid);
    free(os);
}

static outcome *create(outcomes *os, const char *id, const char *gtrid, const uint8_t *digest,
                       bool by_id)
{
    outcome *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    snprintf(o->id, sizeof o->id, "%s", id);
    snprintf(o->gtrid, sizeof o->gtrid, "%s", gtrid);
    memcpy(o->digest, digest, REQUEST_DIGEST_LEN);
    if (by_id && !strmap_put(os->by_id, o->id, o)) {
        free(o);
        return NULL;
    }
    if (!strmap_put(os->by_gtrid, o->gtrid, o)) {
        if (by_id)
            strmap_del(os->by_id, o->id);
        free(o);
        return NULL;
    }
    o->indexed = true;
    o->prev = os->newest;
    if (os->newest)
        os->newest->next = o;
    else
        os->oldest = o;
    os->newest = o;
    os->count++;
    return o;
}

outcome *outcome_create(outcomes *os, const char *id, const char *gtrid, const uint8_t *digest)
{
    return create(os, id, gtrid, digest, true);
}

outcome *outcome_create_shadowed(outcomes *os, const char *id, const char *gtrid,
                                 const uint8_t *digest)
{
    return create(os, id, gtrid, digest, false);
}

outcome *outcome_find(const outcomes *os, const char *id)
{
    return strmap_get(os->by_id, id);
}

outcome *outcome_find_gtrid(const outcomes *os, const char *gtrid)
{
    return strmap_get(os->by_gtrid, gtrid);
}

outcome *outcome_find_commit(const outcomes *os, const char *gtrid)
{
    outcome *o = strmap_get(os->by_gtrid, gtrid);
    return o && o->state == OUTCOME_COMMITTED ? o : NULL;
}

void outcome_commit(outcomes *os, outcome *o, int64_t time_ms)
{
    (void)os;
    o->state = OUTCOME_COMMITTED;
    o->time_ms = time_ms;
}

void outcome_settle(outcomes *os, outcome *o, outcome_state state, int status, char *reply_head,
                    int64_t time_ms)
{
    (void)os;
    o->state = state;
    o->status = status;
    o->time_ms = time_ms;
    if (reply_head) {
        free(o->reply_head);
        o->reply_head = reply_head;
    }
    while (o->waiters) {
        outcome_waiter *w = o->waiters;
        o->waiters = w->next;
        w->cb(o, w->arg);
        free(w);
    }
}

void outcome_unindex(outcomes *os, outcome *o)
{
    if (!o->indexed)
        return;
    if (strmap_get(os->by_id, o->id) == o)
        strmap_del(os->by_id, o->id);
    if (strmap_get(os->by_gtrid, o->gtrid) == o)
        strmap_del(os->by_gtrid, o->gtrid);
    unlink_outcome(os, o);
    o->indexed = false;
    os->count--;
}

void outcome_release(outcomes *os, outcome *o)
{
    (void)os;
    if (!o->indexed)
        free_outcome(o);
}

void outcome_wait(outcome *o, outcome_waiter_cb cb, void *arg)
{
    outcome_waiter *w = malloc(sizeof *w);
    if (!w)
        abort();
    w->cb = cb;
    w->arg = arg;
    w->next = o->waiters;
    o->waiters = w;
}

void outcome_unwait(outcome *o, outcome_waiter_cb cb, void *arg)
{
    for (outcome_waiter **p = &o->waiters; *p; p = &(*p)->next) {
        if ((*p)->cb == cb && (*p)->arg == arg) {
            outcome_waiter *w = *p;
            *p = w->next;
            free(w);
            return;
        }
    }
}

void outcomes_each_unfinished(outcomes *os, void (*fn)(outcome *o, void *arg), void *arg)
{
    for (outcome *o = os->oldest, *next; o; o = next) {
        next = o->next;
        if (o->state == OUTCOME_COMMITTED && o->pending && !o->live)
            fn(o, arg);
    }
}

/* Whether an outcome reached at time_ms is older than the retention at now_ms. time_ms comes
 * from the journal, so any int64 is possible: compared without an overflowing subtraction. */
static bool past_retention(int64_t now_ms, int64_t time_ms, int64_t retention_ms)
{
    if (time_ms >= now_ms)
        return false;
    return (uint64_t)now_ms - (uint64_t)time_ms > (uint64_t)retention_ms;
}

/* The list is in creation order, close to outcome order: the walk stops at the first settled
 * outcome still within the retention (what follows is younger). Outcomes that cannot go yet - in
 * flight, or committed with a participant still owed its COMMIT - are stepped over. */
void outcomes_prune(outcomes *os, int64_t now_ms, int budget)
{
    outcome *o = os->oldest;
    while (o && budget-- > 0) {
        outcome *next = o->next;
        bool settled = o->state != OUTCOME_IN_PROGRESS && !o->live && !o->waiters;
        if (settled && o->pending == 0) {
            if (!past_retention(now_ms, o->time_ms, os->retention_ms))
                break;
            outcome_unindex(os, o);
            free_outcome(o);
        }
        o = next;
    }
}

size_t outcomes_count(const outcomes *os)
{
    return os->count;
}
