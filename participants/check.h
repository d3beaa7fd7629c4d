/*
 * Checks of the engine's own bookkeeping, shared by the coordinator and the drivers: a node linked
 * twice, an impossible state move. They stay on in every build (one comparison each), because what
 * follows a broken invariant - a corrupted list, a connection lent twice - does its damage far from
 * the cause, while dying loses nothing durable: the next start finishes every decided transaction
 * (docs/design.md section 7, "internal checks").
 */
#ifndef XA_CHECK_H
#define XA_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Says what broke, naming the object and its states, and aborts (a core dump to read). */
__attribute__((noreturn, format(printf, 2, 3))) static inline void
xa_check_failed(const char *func, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "xacoord: internal error in %s: ", func);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* XA_CHECK(cond, "printf format", ...): aborts with the message when cond is false. */
#define XA_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                          \
            xa_check_failed(__func__, __VA_ARGS__);                                                \
    } while (0)

#endif
