/*
 * A transaction request: the body of POST /v1/transactions, parsed and validated into the compact
 * form the engine runs. One allocation holds the whole request (statements, parameters, strings),
 * so an in-flight transaction costs little memory and frees in one call.
 *
 * Every error names the field ("branches[1].statements[0].params[2]: must be a string, number,
 * boolean or null"). Branches come out sorted by participant index: connections are acquired in
 * that global order, so two transactions never wait for each other's pools in a cycle.
 *
 * Every statement passes the statement guard (guard.h) of its participant's dialect before anything
 * runs: a refused one fails the whole request, its error naming the statement, the participant and
 * the keyword. Ids share one namespace: a client's id may not look like a generated one (a gtrid,
 * "xa1.<node>.<boot>.<seq>"), so "xa" followed by a digit is reserved.
 */
#ifndef XA_REQUEST_H
#define XA_REQUEST_H

#include "compiler.h"
#include "guard.h"
#include "participant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQUEST_ID_MAX 64
#define REQUEST_DIGEST_LEN 16

typedef struct req_branch {
    int participant;  /* index into the configuration's participants */
    const char *name; /* the participant's name */
    int nstmts;
    px_stmt *stmts;
    const char **abort_reasons; /* per statement; NULL when the request gave none */
    bool read_only;             /* every statement only reads (guard_read_only) */
} req_branch;

typedef struct txn_request {
    char id[REQUEST_ID_MAX + 1];
    bool id_given; /* false: the coordinator generated the id */
    uint32_t timeout_ms;
    int nbranches;
    req_branch *branches;
    /* Identifies the work (branches, statements, parameters, expectations - not id or timeout):
     * a repeated id with another digest is a different request (422). */
    uint8_t digest[REQUEST_DIGEST_LEN];
} txn_request;

typedef struct request_limits {
    int max_branches;
    int max_statements;   /* per branch */
    int max_params;       /* per statement */
    size_t max_sql_bytes; /* per statement */
    uint32_t default_timeout_ms;
    uint32_t max_timeout_ms;
} request_limits;

/* What the parser needs to know of a participant. */
typedef struct request_participant {
    int index;             /* into the configuration's participants */
    guard_dialect dialect; /* how its statements are checked */
} request_participant;

/* Fills *out for the participant called name; false when there is no such participant. */
typedef bool (*request_lookup_fn)(const char *name, void *arg, request_participant *out);

/* Parses body. Returns NULL with a message in err when the request is malformed. */
XA_MUST_CHECK txn_request *request_parse(const char *body, size_t len, const request_limits *limits,
                                         request_lookup_fn lookup, void *arg, char *err,
                                         size_t errlen);
void request_free(txn_request *req);

/* 1-64 chars of [A-Za-z0-9._:-]: any id, generated ones included. */
bool request_id_valid(const char *id);
/* "xa" (any case) and a digit: the shape of generated ids, refused from clients. */
bool request_id_reserved(const char *id);

/* Lower-case hex of a digest into out (2 * REQUEST_DIGEST_LEN + 1 bytes). */
void request_digest_hex(const uint8_t *digest, char *out);
/* The digest of exactly 2 * REQUEST_DIGEST_LEN hex digits (what request_digest_hex writes, in
 * either case) into out: 0, or -EINVAL for anything else, out then undefined. hex may be NULL. */
XA_MUST_CHECK int request_digest_parse(const char *hex, uint8_t *out);

#endif
