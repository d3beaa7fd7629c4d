/*
 * In-doubt branches for operators (docs/design.md section 4): the list of prepared branches this
 * coordinator owns and has not finished, plus the foreign ones of its node_id (another data
 * directory's identity, identity.h); manual resolution of one transaction's branches - refused
 * when it contradicts the journal (a commit record allows only COMMIT; no commit record means
 * presumed abort and allows only ROLLBACK) or when the transaction is live in this process, and
 * allowed either way on a foreign branch, which no journal here knows; and the takeover of every
 * listed foreign branch of one identity.
 */
#ifndef XA_INDOUBT_H
#define XA_INDOUBT_H

#include "coord.h"
#include "http.h"

/* One branch as GET /v1/in-doubt lists it. decision: "commit", "abort" (presumed), "foreign" or
 * what a live transaction's state says; identity: the foreign identity, else NULL. */
typedef struct indoubt_branch {
    const coord_part *part;
    const char *gtrid;
    double age_s;
    const char *decision;
    const char *identity;
} indoubt_branch;

typedef void (*indoubt_fn)(const indoubt_branch *b, void *arg);
/* Calls fn once for each listed branch (live transactions' prepared branches, committed ones
 * awaiting phase 2, those left by recovery scans, foreign ones). 0, or -ENOMEM with the walk
 * cut short. */
XA_MUST_CHECK int indoubt_each(coord *c, indoubt_fn fn, void *arg);

/* Per participant index: how many branches are listed and the age of the oldest. */
typedef struct indoubt_stats {
    int count[CONFIG_MAX_PARTICIPANTS];
    double oldest_s[CONFIG_MAX_PARTICIPANTS];
} indoubt_stats;
XA_MUST_CHECK int indoubt_get_stats(coord *c, indoubt_stats *st);

/* GET /v1/in-doubt */
void indoubt_list(coord *c, http_request *req);
/* POST /v1/in-doubt/{gtrid}/commit|rollback; participant may be NULL (all of them). */
void indoubt_resolve(coord *c, http_request *req, const char *gtrid, const char *action,
                     const char *participant);
/* POST /v1/takeover/{identity}?decision=commit|rollback: resolves every foreign branch of that
 * identity that the last scans listed, on every participant; refuses this coordinator's own. */
void indoubt_takeover(coord *c, http_request *req, const char *identity, const char *query);

#endif
