/*
 * The coordinator the drill runs: started as a child with its log in the work directory, killed
 * with SIGKILL, optionally started with a crash point armed (a build with XACOORD_CRASH_POINTS
 * then kills itself there), and watched until /readyz answers.
 */
#ifndef XA_DRILL_PROC_H
#define XA_DRILL_PROC_H

#include "compiler.h"

#include <stdbool.h>
#include <sys/types.h>

typedef struct drill_proc {
    const char *bin, *config, *log;
    const char *host, *token;
    int port;
    pid_t pid;
    int status; /* the wait status of the last exit */
} drill_proc;

/* Starts the daemon; crash_at (NULL: none) and skip arm a crash point. 0, or fork's negative
 * errno. */
XA_MUST_CHECK int drill_proc_start(drill_proc *p, const char *crash_at, int skip);
/* True when the daemon has exited on its own (reaped; pid is 0 then, status set). */
bool drill_proc_exited(drill_proc *p);
/* Whether the last exit was a crash point's: the process killed itself with SIGKILL. Anything
 * else (an abort, a sanitizer's report, an exit code) is a failure of the coordinator. */
bool drill_proc_crash_point(const drill_proc *p);
/* SIGKILL and reap. */
void drill_proc_kill(drill_proc *p);
/* Waits until /readyz answers 200. Returns 0 with the seconds it took in *took, -ECHILD when the
 * process exited first (reaped: see drill_proc_crash_point), -ETIMEDOUT when it was not ready
 * within timeout_s. */
XA_MUST_CHECK int drill_proc_wait_ready(drill_proc *p, double timeout_s, double *took);
/* SIGTERM and wait (SIGKILL after 30 s). Returns the exit code (0..255), or a negative errno:
 * -EINTR when a signal ended it, -ETIMEDOUT when it had to be killed, -ESRCH when it was not
 * running. */
XA_MUST_CHECK int drill_proc_stop(drill_proc *p);

/* Seconds on the monotonic clock. */
double drill_now(void);
void drill_sleep(double s);

#endif
