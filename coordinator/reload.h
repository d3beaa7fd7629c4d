/*
 * SIGHUP: reload what can change safely while transactions run - log level and format, the API
 * token file, max_inflight, the phase-1 and commit-wait timeouts, and each participant's
 * pool_size, connect_timeout_ms and lock_timeout_ms - and log every other change as one that
 * needs a restart (docs/operations.md section 12a). A file that does not load changes nothing.
 */
#ifndef XA_RELOAD_H
#define XA_RELOAD_H

#include "coord.h"

/* Loads live->path again and applies the reloadable differences to live (the configuration c
 * runs with) and to c's pools; logs each change it applied and each it could not. */
void reload_config(coord *c, config *live);

#endif
