/*
 * The drill file (docs/xacoord-drill.1): an INI file naming the coordinator's configuration and
 * binary, the workload (transaction templates with parameters), the setup statements, the
 * invariants, the cross-database sums and the faults. Every value may name environment variables
 * as ${NAME} or ${NAME:-default}; relative paths are relative to the drill file's directory.
 * Every error names the file, the line, the section and the key.
 */
#ifndef XA_DRILL_CONF_H
#define XA_DRILL_CONF_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>

#define DRILL_MAX_ITEMS 32
#define DRILL_MAX_PARAMS 8
#define DRILL_MAX_CHOICES 16

typedef enum { PARAM_RANGE, PARAM_SEQ, PARAM_CHOICE } drill_param_kind;

/* A template parameter: "range LO HI" (uniform), "seq START" (counts up, each value once) or
 * "choice A B ..." (uniform; words of [A-Za-z0-9_.:-] only, so they can be spliced into SQL). */
typedef struct drill_param {
    char name[33];
    drill_param_kind kind;
    long long lo, hi; /* range: both; seq: lo is the start */
    int nchoices;
    char *choices[DRILL_MAX_CHOICES];
} drill_param;

/* "participant: SQL": one query run on a participant as the coordinator's user. */
typedef struct drill_query {
    char participant[33];
    char *sql;
} drill_query;

typedef struct drill_template {
    char name[33];
    char *file; /* JSON body as POST /v1/transactions takes it, with ${param} placeholders */
    char *body; /* the file's text */
    int weight; /* default 1 */
    int nparams;
    drill_param params[DRILL_MAX_PARAMS];
    /* Counts the rows this transaction leaves; verify_exact: > 0 exactly when it committed,
     * else only "committed implies > 0" is checked. */
    bool has_verify, verify_exact;
    drill_query verify;
} drill_template;

typedef struct drill_invariant {
    char name[33];
    drill_query q; /* returns the rows that violate it */
} drill_invariant;

typedef enum { SUM_EQUAL, SUM_CONSTANT } drill_sum_mode;

typedef struct drill_sum {
    char name[33];
    drill_sum_mode mode; /* equal: every term the same at the end; constant: total as before */
    int nterms;
    drill_query terms[DRILL_MAX_PARAMS];
} drill_sum;

typedef struct drill_dbfault {
    char name[33];
    char *kill_cmd, *restart_cmd; /* run with /bin/sh -c */
    double at_s, down_s;          /* seconds into the run; seconds down */
} drill_dbfault;

typedef struct drill_conf {
    char *path, *dir;
    char *config;  /* the coordinator's configuration (${...} expanded into the work dir) */
    char *xacoord; /* the daemon's binary; default "xacoord" on PATH */
    double duration_s;
    int clients;
    unsigned seed;
    int max_attempts;
    int retries; /* same-id retries of an unanswered request */
    double ready_timeout_s, settle_timeout_s;
    /* faults: kill -9 of the coordinator every kill_min_s..kill_max_s (0: never), and crash
     * points armed one after another at each start (a build with XACOORD_CRASH_POINTS) */
    double kill_min_s, kill_max_s;
    int ncrash_points;
    char *crash_points[DRILL_MAX_ITEMS];
    int crash_skip_max;
    int nsetup;
    drill_query setup[DRILL_MAX_ITEMS];
    int ntemplates, ninvariants, nsums, ndbfaults;
    drill_template templates[DRILL_MAX_ITEMS];
    drill_invariant invariants[DRILL_MAX_ITEMS];
    drill_sum sums[DRILL_MAX_ITEMS];
    drill_dbfault dbfaults[DRILL_MAX_ITEMS];
} drill_conf;

/* Loads and checks path. Returns 0, or a negative errno with a message in err naming what is
 * wrong: drill_read_file's, or -EINVAL for what drill_conf_parse refuses. */
XA_MUST_CHECK int drill_conf_load(const char *path, drill_conf *c, char *err, size_t errlen);
/* Same from text (path names it in messages and gives the directory for relative paths):
 * 0, -EINVAL or -ENOMEM. */
XA_MUST_CHECK int drill_conf_parse(const char *path, const char *text, drill_conf *c, char *err,
                                   size_t errlen);
void drill_conf_free(drill_conf *c);

/* Expands ${NAME} and ${NAME:-default} from the environment (NAME starting with an upper-case
 * letter or '_'; other ${...} stay as they are). Returns a malloc'ed string, or
 * NULL with a message in err (an unset variable without a default, an unterminated ${). */
char *drill_expand(const char *s, char *err, size_t errlen);
/* Reads a whole text file (a NUL byte is an error) into *out (malloc'ed). 0, or a negative errno
 * with a message naming the file: fopen's, -ENOMEM, -EINVAL for a NUL byte. */
XA_MUST_CHECK int drill_read_file(const char *path, char **out, char *err, size_t errlen);
/* Parses "participant: SQL". Returns 0, or -EINVAL (-ENOMEM) with a message. */
XA_MUST_CHECK int drill_query_parse(const char *s, drill_query *q, char *err, size_t errlen);
/* Parses a parameter's value ("range 1 9", "seq 100", "choice a b"): 0, or -EINVAL with a
 * message. */
XA_MUST_CHECK int drill_param_parse(const char *name, const char *s, drill_param *p, char *err,
                                    size_t errlen);

#endif
