/*
 * In-doubt branches for operators (docs/design.md section 4): the list of prepared branches this
 * coordinator owns and has not finished, and manual resolution of one transaction's branches -
 * refused when it contradicts the journal (a commit record allows only COMMIT; no commit record
 * means presumed abort and allows only ROLLBACK) or when the transaction is live in this process.
 */
#ifndef XA_INDOUBT_H
#define XA_INDOUBT_H

#include "coord.h"
#include "http.h"

/* GET /v1/in-doubt */
void indoubt_list(coord *c, http_request *req);
/* POST /v1/in-doubt/{gtrid}/commit|rollback; participant may be NULL (all of them). */
void indoubt_resolve(coord *c, http_request *req, const char *gtrid, const char *action,
                     const char *participant);

#endif
