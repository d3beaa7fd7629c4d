/*
 * Test-only crash points. A build with XACOORD_CRASH_POINTS kills the process with SIGKILL at the
 * named step of the protocol when the environment says so:
 *   XACOORD_CRASH_AT=<point>      the point's name (see docs/ and tests/crash)
 *   XACOORD_CRASH_SKIP=<n>        pass the point n times first (default 0)
 *   XACOORD_FAULT_AT=<point>      inject the named fault once (e.g. cut-after-prepare)
 * A release build compiles every crash point to nothing, so no operator can trip one.
 */
#ifndef XA_CRASH_H
#define XA_CRASH_H

#include <stdbool.h>

#ifdef XACOORD_CRASH_POINTS
void crash_point(const char *name);
/* A fault point: true when XACOORD_FAULT_AT names it (then the caller injects the fault). It fires
 * once per process, so a test sees exactly one fault. */
bool fault_point(const char *name);
#else
static inline void crash_point(const char *name)
{
    (void)name;
}
static inline bool fault_point(const char *name)
{
    (void)name;
    return false;
}
#endif

#endif
