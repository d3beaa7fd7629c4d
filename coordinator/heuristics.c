/*
 * The heuristic outcomes kept for GET /v1/heuristics (see heuristics.h): a ring of the most
 * recent ones.
 */
#include "heuristics.h"

#include <jansson.h>
#include <stdlib.h>
#include <time.h>

void heuristics_add(heuristics *h, const heuristic *e)
{
    h->ring[h->next] = *e;
    h->next = (h->next + 1) % HEURISTICS_KEPT;
    h->total++;
}

static json_t *one(const heuristic *e)
{
    char stamp[32];
    time_t secs = (time_t)(e->time_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s}", "time", stamp, "xid", e->gtrid, "id",
                     e->id, "participant", e->participant, "decision",
                     e->committed ? "commit" : "rollback", "data_loss", e->data_loss, "what",
                     e->what);
}

char *heuristics_json(const heuristics *h)
{
    size_t kept = h->total < HEURISTICS_KEPT ? (size_t)h->total : HEURISTICS_KEPT;
    json_t *list = json_array(), *obj;
    char *text;
    for (size_t i = 1; list && i <= kept; i++) {
        const heuristic *e = &h->ring[(h->next + HEURISTICS_KEPT - i) % HEURISTICS_KEPT];
        json_array_append_new(list, one(e));
    }
    obj = json_pack("{s:o, s:I}", "heuristics", list, "total", (json_int_t)h->total);
    text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    return text;
}
