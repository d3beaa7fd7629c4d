/*
 * The workload: picks a transaction template by weight, draws its parameters and turns the
 * template into the body of one POST /v1/transactions with the drill's own id. Shared by all
 * client threads (a sequence hands out each value once).
 */
#ifndef XA_DRILL_WORKLOAD_H
#define XA_DRILL_WORKLOAD_H

#include "conf.h"

#include <pthread.h>

/* The drawn parameters of one transaction, as text (integers in decimal). */
typedef struct drill_values {
    int n;
    char name[DRILL_MAX_PARAMS + 1][33];
    char text[DRILL_MAX_PARAMS + 1][72];
    bool number[DRILL_MAX_PARAMS + 1];
} drill_values;

typedef struct drill_workload {
    const drill_conf *c;
    pthread_mutex_t lock;
    long long next[DRILL_MAX_ITEMS][DRILL_MAX_PARAMS]; /* each seq parameter's next value */
    int total_weight;
} drill_workload;

/* Checks every template once with sample values (each must become a JSON object with
 * "branches"). Returns 0, or -EINVAL with a message naming the template. */
XA_MUST_CHECK int drill_workload_init(drill_workload *w, const drill_conf *c, char *err,
                                      size_t errlen);
void drill_workload_destroy(drill_workload *w);

/* Picks a template (returns its index) and draws its parameters into v, with "id" = id. */
int drill_workload_pick(drill_workload *w, unsigned *seed, const char *id, drill_values *v);

/* Replaces ${name} in text by the drawn value. In JSON mode a whole string "${name}" becomes
 * the value itself (a number stays a number). Returns a malloc'ed string, or NULL with a message
 * naming an unknown parameter. */
char *drill_substitute(const char *text, const drill_values *v, bool json, char *err,
                       size_t errlen);
/* The request body: the substituted template with "id" set. NULL with a message on error. */
char *drill_body(const drill_template *t, const drill_values *v, char *err, size_t errlen);

#endif
