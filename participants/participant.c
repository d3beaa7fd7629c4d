/*
 * Driver-independent helpers: XID formatting and parsing, errors, results, driver lookup.
 */
#include "participant.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const px_driver *px_driver_find(const char *name)
{
    static const px_driver *const drivers[] = {&px_postgres_driver, &px_mysql_driver,
                                               &px_memory_driver};
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (name && strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

void px_error_set(px_error *err, px_errclass cls, bool conn_broken, int code, const char *sqlstate,
                  const char *fmt, ...)
{
    va_list ap;
    err->cls = cls;
    err->conn_broken = conn_broken;
    err->rows_mismatch = false;
    err->code = code;
    snprintf(err->sqlstate, sizeof err->sqlstate, "%s", sqlstate ? sqlstate : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

const char *px_errclass_name(px_errclass cls)
{
    switch (cls) {
    case PX_OK:
        return "ok";
    case PX_BUSINESS:
        return "business";
    case PX_RETRYABLE:
        return "retryable";
    case PX_XID_NOT_FOUND:
        return "xid-not-found";
    case PX_FATAL:
        return "fatal";
    }
    return "unknown";
}

const char *px_connect_cause(const px_error *err)
{
    const char *m = err->message, *st = err->sqlstate;
    int code = err->code;
    /* MySQL: 1045 access denied, 1044 no access to the database, 1698 plugin refused the user,
     * 1049 unknown database, 2026 TLS/SSL error, 2002/2003 no server, 2005 unknown host. */
    if (code == 2026 || strstr(m, "certificate") || strstr(m, "SSL") || strstr(m, "TLS"))
        return "TLS verification failed";
    if (!strcmp(st, "28P01") || !strcmp(st, "28000") || code == 1045 || code == 1044 ||
        code == 1698 || strstr(m, "password authentication failed"))
        return "authentication failed";
    if (!strcmp(st, "3D000") || code == 1049)
        return "unknown database";
    if (strstr(m, "refused") || ((code == 2002 || code == 2003) && strstr(m, "(111)")))
        return "connection refused"; /* 111: ECONNREFUSED, which MySQL names only by number */
    if (code == 2005 || strstr(m, "could not translate host name") ||
        strstr(m, "Unknown server host"))
        return "unknown host";
    if (strstr(m, "timeout") || strstr(m, "timed out"))
        return "timed out";
    return "cannot connect";
}

void px_result_free(px_result *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->ncols; i++)
        free(r->colnames ? r->colnames[i] : NULL);
    for (long i = 0; r->cells && i < (long)r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->colnames);
    free(r->coltypes);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

/* XIDs are built only from [a-z0-9._]: safe to place inside SQL string literals. Reads at most
 * PX_XID_PART_MAX + 1 bytes, so a px_xid whose field lacks its terminator is refused, not
 * overrun. */
static bool xid_part_ok(const char *s, bool allow_dot)
{
    size_t n = 0;
    for (; n <= PX_XID_PART_MAX && s[n]; n++) {
        char ch = s[n];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                  (allow_dot && ch == '.');
        if (!ok)
            return false;
    }
    return n >= 1 && n <= PX_XID_PART_MAX;
}

int px_xid_set(px_xid *x, const char *gtrid, const char *bqual)
{
    if (!gtrid || !bqual || !xid_part_ok(gtrid, true) || !xid_part_ok(bqual, false))
        return -EINVAL;
    snprintf(x->gtrid, sizeof x->gtrid, "%s", gtrid);
    snprintf(x->bqual, sizeof x->bqual, "%s", bqual);
    return 0;
}

int px_xid_check(const px_xid *x)
{
    px_xid copy;
    return x ? px_xid_set(&copy, x->gtrid, x->bqual) : -EINVAL;
}

void px_xid_gid(const px_xid *x, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%s", x->gtrid, x->bqual);
}

int px_xid_parse_gid(px_xid *x, const char *gid)
{
    const char *dot = strrchr(gid, '.');
    char gtrid[PX_XID_PART_MAX + 1];
    size_t glen;
    if (!dot)
        return -EINVAL;
    glen = (size_t)(dot - gid);
    if (glen == 0 || glen > PX_XID_PART_MAX)
        return -EINVAL;
    memcpy(gtrid, gid, glen);
    gtrid[glen] = '\0';
    return px_xid_set(x, gtrid, dot + 1);
}

char *px_base64(const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        *o++ = alphabet[(v >> 18) & 63];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? alphabet[v & 63] : '=';
    }
    *o = '\0';
    return out;
}
