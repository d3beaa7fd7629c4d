/*
 * The HTTP API of docs/design.md section 4: routing, the bearer token, idempotency and the JSON
 * replies. Transactions are handed to the engine (txn.h); replies are built from outcomes.
 */
#ifndef XA_API_H
#define XA_API_H

#include "compiler.h"

#include "coord.h"
#include "http.h"

/* Starts the HTTP server on the configured address. Returns 0, or a negative libuv error with a
 * message in err. */
XA_MUST_CHECK int api_start(coord *c, http_server **out, char *err, size_t errlen);

#endif
