/*
 * The journal payload of an outcome (see outcome_codec.h).
 */
#include "outcome_codec.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int outcome_encode(const outcome *o, const char *participants, char **out, size_t *len)
{
    char digest[2 * REQUEST_DIGEST_LEN + 1];
    const char *head = o->reply_head ? o->reply_head : "";
    int n;
    request_digest_hex(o->digest, digest);
    n = asprintf(out, "%s\n%s\n%d\n%s\n%s", o->id, digest, o->status, participants, head);
    if (n < 0)
        return -ENOMEM;
    *len = (size_t)n;
    return 0;
}

/* Splits off the next line of a payload; NULL when there is none. */
static char *next_line(char **p)
{
    char *s = *p, *nl;
    if (!s)
        return NULL;
    nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = NULL;
    }
    return s;
}

/* A recorded status, or 0 when the line is not a decimal int (the caller replaces it). */
static int parse_status(const char *s)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    return errno || end == s || *end || v < INT_MIN || v > INT_MAX ? 0 : (int)v;
}

int outcome_decode(const void *payload, size_t len, outcome_fields *f)
{
    char *copy = strndup(payload ? (const char *)payload : "", payload ? len : 0), *p = copy;
    char *id, *digest, *status, *parts;
    int rc = -EINVAL;
    memset(f, 0, sizeof *f);
    if (!copy)
        return -ENOMEM;
    id = next_line(&p);
    digest = next_line(&p);
    status = next_line(&p);
    parts = next_line(&p);
    if (id && digest && status && parts && request_id_valid(id) &&
        request_digest_parse(digest, f->digest) == 0) {
        snprintf(f->id, sizeof f->id, "%s", id);
        f->status = parse_status(status);
        f->participants = strdup(parts);
        f->head = strdup(p ? p : "");
        rc = f->participants && f->head ? 0 : -ENOMEM;
    }
    free(copy);
    if (rc != 0)
        outcome_fields_free(f);
    return rc;
}

void outcome_fields_free(outcome_fields *f)
{
    free(f->participants);
    free(f->head);
    f->participants = f->head = NULL;
}
