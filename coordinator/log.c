/*
 * stderr logger. One fprintf per line so lines from the threadpool never interleave mid-line, and
 * every message is escaped (log_escape) so that one event is always exactly one line.
 */
#include "log.h"

#include "utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_level min_level = LOG_LVL_INFO;
static log_format format = LOG_FMT_TEXT;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_set_level(log_level level)
{
    min_level = level;
}

bool log_enabled(log_level level)
{
    return level >= min_level;
}

void log_set_format(log_format f)
{
    format = f;
}

int log_parse_format(const char *s, log_format *out)
{
    if (strcmp(s, "text") == 0 || strcmp(s, "json") == 0) {
        *out = strcmp(s, "json") == 0 ? LOG_FMT_JSON : LOG_FMT_TEXT;
        return 0;
    }
    return -EINVAL;
}

int log_parse_level(const char *s, log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

size_t log_escape(char *out, size_t outlen, const char *in)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)in;
    size_t n = strlen(in), o = 0;
    if (outlen == 0)
        return 0;
    for (size_t i = 0; i < n;) {
        size_t seq = p[i] >= 0x80 ? utf8_char_len(p + i, n - i) : 0;
        char buf[4];
        size_t w;
        if (seq > 0) {
            if (o + seq >= outlen)
                break;
            memcpy(out + o, p + i, seq);
            o += seq;
            i += seq;
            continue;
        }
        if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\') {
            buf[0] = (char)p[i];
            w = 1;
        } else if (p[i] == '\\') {
            buf[0] = buf[1] = '\\';
            w = 2;
        } else {
            buf[0] = '\\';
            buf[1] = 'x';
            buf[2] = hex[p[i] >> 4];
            buf[3] = hex[p[i] & 15];
            w = 4;
        }
        if (o + w >= outlen)
            break;
        memcpy(out + o, buf, w);
        o += w;
        i++;
    }
    out[o] = '\0';
    return o;
}

/* Text that log_escape produced is printable and valid UTF-8: as a JSON string it needs only '"'
 * and '\\' escaped. */
static void json_quote(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; *in && o + 3 < outlen; in++) {
        if (*in == '"' || *in == '\\')
            out[o++] = '\\';
        out[o++] = *in;
    }
    out[o] = '\0';
}

static void write_json(const char *stamp, long ms, log_level level, const char *ctx,
                       const char *msg)
{
    char qmsg[2 * 4 * 1024 + 1], qctx[2 * 256 + 1] = "";
    if (ctx) {
        char ectx[256];
        log_escape(ectx, sizeof ectx, ctx);
        json_quote(qctx, sizeof qctx, ectx);
    }
    json_quote(qmsg, sizeof qmsg, msg);
    fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",%s%s%s\"msg\":\"%s\"}\n", stamp, ms,
            level_names[level], ctx ? "\"ctx\":\"" : "", qctx, ctx ? "\"," : "", qmsg);
}

void log_write(log_level level, const char *ctx, const char *fmt, ...)
{
    char raw[1024], msg[4 * sizeof raw], stamp[32];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (!log_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* Messages carry text from clients and databases (SQL errors echo identifiers and values):
     * escaped, no byte of it can end the line or pose as another entry. */
    log_escape(msg, sizeof msg, raw);
    if (format == LOG_FMT_JSON)
        write_json(stamp, ts.tv_nsec / 1000000L, level, ctx, msg);
    else if (ctx)
        fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", stamp, ts.tv_nsec / 1000000L,
                level_names[level], ctx, msg);
    else
        fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, ts.tv_nsec / 1000000L, level_names[level],
                msg);
}
