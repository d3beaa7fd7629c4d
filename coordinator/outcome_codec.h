/*
 * The journal payload of an outcome (its COMMIT and ABORT records): what replay needs to answer
 * a repeated id and to finish a commit after a restart. Text, one field per line (ids, digests
 * and participant names never contain a newline):
 *
 *   id \n digest-hex \n status \n participant,participant,... \n reply-head
 *
 * The participants are those whose branches a commit still had to finish when it was decided.
 * The codec knows names only; which participant a name means is the configuration's business
 * (coord_names_mask).
 */
#ifndef XA_OUTCOME_CODEC_H
#define XA_OUTCOME_CODEC_H

#include "compiler.h"

#include "outcome.h"

#include <stddef.h>

typedef struct outcome_fields {
    char id[REQUEST_ID_MAX + 1];
    uint8_t digest[REQUEST_DIGEST_LEN];
    int status;         /* as recorded, 0 when not a number: the caller judges its range */
    char *participants; /* "a,b" (malloc'ed) */
    char *head;         /* the reply head (malloc'ed) */
} outcome_fields;

/* Encodes o, whose pending branches are on the participants named in participants ("a,b").
 * 0 with a malloc'ed buffer in *out, or -ENOMEM. */
XA_MUST_CHECK int outcome_encode(const outcome *o, const char *participants, char **out,
                                 size_t *len);
/* Decodes payload (len bytes, no terminator needed). 0 with f filled (outcome_fields_free), or
 * -EINVAL when payload is not an outcome's (a missing line, an invalid id or digest), -ENOMEM. */
XA_MUST_CHECK int outcome_decode(const void *payload, size_t len, outcome_fields *f);
void outcome_fields_free(outcome_fields *f);

#endif
