/*
 * Heuristic outcomes: branches that ended against the coordinator's decision (a DBA's ROLLBACK
 * PREPARED of a committed transaction is lost money or goods). Each one is logged as an error,
 * counted per participant in /metrics and named in the transaction's replies; the most recent
 * ones are also kept here for GET /v1/heuristics, so that an operator paged at night finds them
 * without reading logs.
 */
#ifndef XA_HEURISTICS_H
#define XA_HEURISTICS_H

#include "compiler.h"
#include "participant.h"
#include "request.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HEURISTICS_KEPT 256

typedef struct heuristic {
    int64_t time_ms; /* wall clock */
    char gtrid[PX_XID_PART_MAX + 1];
    char id[REQUEST_ID_MAX + 1];
    char participant[PX_XID_PART_MAX + 1];
    bool committed; /* the decision */
    bool data_loss; /* the branch's work was rolled back against a commit decision */
    char what[160];
} heuristic;

typedef struct heuristics {
    heuristic ring[HEURISTICS_KEPT];
    size_t next; /* where the next one goes */
    uint64_t total;
} heuristics;

/* Records one; the oldest is dropped once HEURISTICS_KEPT are kept. */
void heuristics_add(heuristics *h, const heuristic *e);

/* The kept ones, newest first, as a JSON text {"heuristics":[...]} (malloc'ed; NULL when out of
 * memory). */
XA_MUST_CHECK char *heuristics_json(const heuristics *h);

#endif
