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
    strmap *by_gtrid;     /* every indexed outcome */
    list_head all;        /* every indexed outcome, oldest first */
    list_head unfinished; /* the indexed outcomes with pending branches (outcome_set_pending) */
    int64_t retention_ms;
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

static outcome *oldest(const outcomes *os)
{
    return list_entry(list_first(&os->all), outcome, node);
}

/* Takes the first waiter off o's list; the caller frees it. */
static outcome_waiter *pop_waiter(outcome *o)
{
    outcome_waiter *w = list_entry(list_first(&o->waiters), outcome_waiter, node);
    list_remove(&o->waiters, &w->node);
    return w;
}

static void free_outcome(outcome *o)
{
    while (!list_empty(&o->waiters))
        free(pop_waiter(o));
    free(o->reply_head);
    free(o);
}

void outcomes_free(outcomes *os)
{
    if (!os)
        return;
    while (!list_empty(&os->all)) {
        outcome *o = oldest(os);
        list_remove(&os->all, &o->node);
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
    if (by_id && strmap_put(os->by_id, o->id, o) != 0) {
        free(o);
        return NULL;
    }
    if (strmap_put(os->by_gtrid, o->gtrid, o) != 0) {
        if (by_id)
            strmap_del(os->by_id, o->id);
        free(o);
        return NULL;
    }
    o->indexed = true;
    list_push_tail(&os->all, &o->node);
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
    while (!list_empty(&o->waiters)) {
        outcome_waiter *w = pop_waiter(o);
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
    list_remove(&os->all, &o->node);
    if (list_linked(&o->unfinished_node))
        list_remove(&os->unfinished, &o->unfinished_node);
    o->indexed = false;
}

void outcome_set_pending(outcomes *os, outcome *o, uint32_t pending)
{
    bool linked = list_linked(&o->unfinished_node);
    o->pending = pending;
    if (pending && o->indexed && !linked)
        list_push_tail(&os->unfinished, &o->unfinished_node);
    else if (!pending && linked)
        list_remove(&os->unfinished, &o->unfinished_node);
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
    w->node = (list_node){0};
    list_push_head(&o->waiters, &w->node);
}

void outcome_unwait(outcome *o, outcome_waiter_cb cb, void *arg)
{
    list_each(n, &o->waiters) {
        outcome_waiter *w = list_entry(n, outcome_waiter, node);
        if (w->cb == cb && w->arg == arg) {
            list_remove(&o->waiters, n);
            free(w);
            return;
        }
    }
}

void outcomes_each_unfinished(outcomes *os, void (*fn)(outcome *o, void *arg), void *arg)
{
    list_each_safe(n, next, &os->unfinished) {
        outcome *o = list_entry(n, outcome, unfinished_node);
        if (o->state == OUTCOME_COMMITTED && !o->live)
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
    list_each_safe(n, next, &os->all) {
        outcome *o = list_entry(n, outcome, node);
        bool settled = o->state != OUTCOME_IN_PROGRESS && !o->live && list_empty(&o->waiters);
        if (budget-- <= 0)
            break;
        if (settled && o->pending == 0) {
            if (!past_retention(now_ms, o->time_ms, os->retention_ms))
                break;
            outcome_unindex(os, o);
            free_outcome(o);
        }
    }
}

size_t outcomes_count(const outcomes *os)
{
    return list_count(&os->all);
}
