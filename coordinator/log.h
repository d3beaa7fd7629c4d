/*
 * Logging to stderr: one line per event, with a UTC timestamp, a level and a prefix naming the
 * object the line is about ("txn xa2.c1.k3x7q2ma.3.h", "participant payment"). Secrets never go
 * through here: callers log names, never conninfo strings or passwords.
 */
#ifndef XA_LOG_H
#define XA_LOG_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR } log_level;

/* text: "<time> <LEVEL> [<ctx>] <message>"; json: one object per line,
 * {"time", "level", "ctx"?, "msg"}, whose msg decodes to exactly the text format's message. */
typedef enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON } log_format;

void log_set_format(log_format format);
/* Accepts text, json: 0, or -EINVAL. */
XA_MUST_CHECK int log_parse_format(const char *s, log_format *out);

void log_set_level(log_level level);
bool log_enabled(log_level level);
/* Accepts debug, info, warn, error: 0, or -EINVAL. */
XA_MUST_CHECK int log_parse_level(const char *s, log_level *out);
/* Copies in into out (outlen > 0), escaping what could forge or break a log line: control
 * characters (newlines included), DEL, bytes that are not well-formed UTF-8 become \xNN, and a
 * backslash becomes \\, so every escape is unambiguous. Output stops at a whole character when
 * out is full. Returns the length written. */
size_t log_escape(char *out, size_t outlen, const char *in);
/* ctx may be NULL. The formatted message goes through log_escape. */
void log_write(log_level level, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ctx, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(LOG_LVL_DEBUG))                                                            \
            log_write(LOG_LVL_DEBUG, ctx, __VA_ARGS__);                                            \
    } while (0)
#define log_info(ctx, ...) log_write(LOG_LVL_INFO, ctx, __VA_ARGS__)
#define log_warn(ctx, ...) log_write(LOG_LVL_WARN, ctx, __VA_ARGS__)
#define log_error(ctx, ...) log_write(LOG_LVL_ERROR, ctx, __VA_ARGS__)

#endif
