/*
 * The daemon's context (see coord.h): what every loop-side module may ask of it. It calls no
 * module above it; the start and stop that fill and empty it are lifecycle.c's.
 */
#include "coord.h"

#include "log.h"
#include "outcome_codec.h"
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t coord_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int coord_part_index(const coord *c, const char *name)
{
    for (int i = 0; i < c->nparts; i++)
        if (strcmp(c->parts[i].cfg->name, name) == 0)
            return i;
    return -1;
}

int coord_inflight(const coord *c)
{
    int n = 0;
    for (int s = 0; s < TXN_NSTATES; s++)
        n += c->lists[s].count;
    return n;
}

void coord_gtrid(const coord *c, uint64_t boot, uint64_t seq, char *buf, size_t len)
{
    identity_gtrid(&c->identity, c->cfg->node_id, boot, seq, buf, len);
}

/* ---- participants by name ------------------------------------------------------------------ */

uint32_t coord_names_mask(const coord *c, const char *names, const char *gtrid)
{
    char *copy = strdup(names), *save = NULL;
    uint32_t mask = 0;
    if (!copy)
        abort(); /* read at start-up or on a GET: a process out of memory loses nothing by dying */
    for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int i = coord_part_index(c, name);
        if (i < 0) {
            log_error("journal",
                      "transaction %s names participant '%s', which is not in the "
                      "configuration: its branch there cannot be resolved",
                      gtrid, name);
            continue;
        }
        mask |= 1u << i;
    }
    free(copy);
    return mask;
}

int coord_encode_outcome(const coord *c, const outcome *o, char **out, size_t *len)
{
    char names[CONFIG_MAX_PARTICIPANTS * 34] = ""; /* 32 names of <= 32 characters, commas */
    size_t pos = 0;
    for (int i = 0; i < c->nparts; i++) {
        if (o->pending & (1u << i))
            pos += (size_t)snprintf(names + pos, sizeof names - pos, "%s%s", pos ? "," : "",
                                    c->parts[i].cfg->name);
    }
    return outcome_encode(o, names, out, len);
}

/* ---- heuristic outcomes ------------------------------------------------------------------ */

void coord_heuristic(coord *c, outcome *o, const coord_part *p, bool data_loss, const char *what,
                     const char *ctx)
{
    bool committed = o->state == OUTCOME_COMMITTED;
    heuristic e = {coord_now_ms(), "", "", "", committed, data_loss, ""};
    metric_counter_add(p->heuristic, 1);
    o->heuristic |= 1u << p->index;
    snprintf(e.gtrid, sizeof e.gtrid, "%s", o->gtrid);
    snprintf(e.id, sizeof e.id, "%s", o->id);
    snprintf(e.participant, sizeof e.participant, "%s", p->cfg->name);
    snprintf(e.what, sizeof e.what, "%s", what);
    heuristics_add(&c->heuristics, &e);
    log_error(ctx, "%s: %s: %s; the decision was %s (transaction %s, id %s)", p->cfg->name,
              data_loss ? "DATA LOSS" : "HEURISTIC HAZARD", what, committed ? "COMMIT" : "ROLLBACK",
              o->gtrid, o->id);
}

/* ---- decision rows ------------------------------------------------------------------------ */

outcome *coord_outcome_from_row(coord *c, const store_row *r, bool ours)
{
    outcome *o = outcome_find(c->outcomes, r->client_id);
    char *head = strdup(r->reply);
    if (o || !head || !(o = outcome_create(c->outcomes, r->client_id, r->gtrid, r->digest))) {
        free(head);
        return o;
    }
    if (r->commit) {
        outcome_commit(c->outcomes, o, r->time_ms);
        outcome_set_pending(c->outcomes, o, ours ? coord_names_mask(c, r->pending, r->gtrid) : 0);
    }
    outcome_settle(c->outcomes, o, r->commit ? OUTCOME_COMMITTED : OUTCOME_ABORTED, r->status, head,
                   r->time_ms);
    return o;
}
