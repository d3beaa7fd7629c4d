/*
 * Crash points for the crash-and-restart tests (see crash.h). SIGKILL, not exit(): nothing may be
 * flushed or cleaned up, exactly as when the machine dies.
 */
#include "crash.h"

#ifdef XACOORD_CRASH_POINTS
#include "log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void crash_point(const char *name)
{
    static long passes = -1;
    const char *at = getenv("XACOORD_CRASH_AT");
    if (!at || strcmp(at, name) != 0)
        return;
    if (passes < 0) {
        const char *skip = getenv("XACOORD_CRASH_SKIP");
        passes = skip ? strtol(skip, NULL, 10) : 0;
    }
    if (passes-- > 0)
        return;
    log_error("crash", "crash point %s reached: killing the process", name);
    kill(getpid(), SIGKILL);
}

bool fault_point(const char *name)
{
    static bool fired;
    const char *at = getenv("XACOORD_FAULT_AT");
    if (fired || !at || strcmp(at, name) != 0)
        return false;
    fired = true;
    log_warn("fault", "injecting fault %s", name);
    return true;
}
#else
typedef int crash_points_disabled; /* ISO C forbids an empty translation unit */
#endif
