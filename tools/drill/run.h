/*
 * One drill: setup, the clients against the coordinator while faults are injected, the final
 * restart and recovery, then every check. The result is what report.h prints.
 */
#ifndef XA_DRILL_RUN_H
#define XA_DRILL_RUN_H

#include "conf.h"
#include "config.h"

#include <stdbool.h>

#define DRILL_MAX_CHECKS 160
#define DRILL_MAX_RECOVERIES 512

typedef struct drill_check {
    char name[96];
    bool ok;
    char detail[512];
} drill_check;

typedef struct drill_tally {
    char name[33];
    int attempted, committed, aborted, unanswered;
    int retryable;            /* of the aborted: transient (lock wait, database down, ...) */
    int unanswered_committed; /* of the unanswered: what GET said afterwards */
} drill_tally;

typedef struct drill_result {
    double duration_s;
    int clients;
    unsigned seed;
    int ntallies;
    drill_tally tallies[DRILL_MAX_ITEMS];
    int kills, crash_deaths, db_faults, starts;
    int bad_exits;      /* exits that were no crash point's: a failure */
    char bad_exit[160]; /* the first of them */
    int nrecoveries;
    double recovery_s[DRILL_MAX_RECOVERIES]; /* start to /readyz 200, every start */
    double settle_s;                         /* last start to nothing in doubt */
    int nchecks;
    drill_check checks[DRILL_MAX_CHECKS];
    bool failed;
} drill_result;

/* Runs the drill against the daemon of cfg (already loaded from the expanded configuration at
 * config_path); the daemon's output goes to log. Returns 0 when the drill ran (the checks say
 * whether everything held), a negative errno with a message in err when it could not run. */
XA_MUST_CHECK int drill_run(const drill_conf *c, const config *cfg, const char *config_path,
                            const char *log, drill_result *r, char *err, size_t errlen);

#endif
