/*
 * Rendering of statement results (see results.h). Written by hand rather than through a jansson
 * tree: jansson silently refuses invalid UTF-8 (the value vanished from the reply) and can only
 * render numbers through int64/double, which loses big integers and decimals.
 */
#include "results.h"

#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out_buf {
    char *p;
    size_t len, cap;
    bool oom;
} out_buf;

static void put(out_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (b->len + n + 1 > cap)
            cap *= 2;
        if (!(p = realloc(b->p, cap))) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(out_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A JSON string; the caller checked that s is valid UTF-8. */
static void put_string(out_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(b, run, (size_t)(s - run));
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            put(b, esc, 2);
        } else {
            put(b, esc, 6);
        }
        run = s + 1;
    }
    put(b, run, (size_t)(s - run));
    put(b, "\"", 1);
}

/* An integer's digits as JSON: a number while int64 holds it, else its exact digits as a string. */
static bool put_int(out_buf *b, const char *cell)
{
    const char *d = cell + (cell[0] == '-');
    char *end;
    if (!*d || strspn(d, "0123456789") != strlen(d))
        return false;
    errno = 0;
    (void)strtoll(cell, &end, 10);
    if (errno == ERANGE)
        put_string(b, cell);
    else
        puts_(b, cell);
    return true;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool json_number(const char *s)
{
    size_t n;
    s += *s == '-';
    n = strspn(s, "0123456789");
    if (n == 0 || (s[0] == '0' && n > 1))
        return false;
    s += n;
    if (*s == '.') {
        n = strspn(++s, "0123456789");
        if (n == 0)
            return false;
        s += n;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        s += *s == '+' || *s == '-';
        n = strspn(s, "0123456789");
        if (n == 0)
            return false;
        s += n;
    }
    return *s == '\0';
}

static bool put_real(out_buf *b, const char *cell)
{
    static const char *const special[] = {"NaN", "Infinity", "-Infinity"};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) {
        if (strcmp(cell, special[i]) == 0) {
            put_string(b, cell);
            return true;
        }
    }
    if (!json_number(cell))
        return false;
    puts_(b, cell);
    return true;
}

/* One cell; false when it cannot be carried exactly (why in err). */
static bool put_cell(out_buf *b, const char *cell, px_coltype type, char *err, size_t errlen)
{
    if (!cell) {
        puts_(b, "null");
        return true;
    }
    switch (type) {
    case PX_COL_INT:
        if (put_int(b, cell))
            return true;
        snprintf(err, errlen, "the database returned a malformed integer");
        return false;
    case PX_COL_REAL:
        if (put_real(b, cell))
            return true;
        snprintf(err, errlen, "the database returned a malformed number");
        return false;
    case PX_COL_BOOL:
        puts_(b, strcmp(cell, "true") == 0 || strcmp(cell, "t") == 0 || strcmp(cell, "1") == 0
                     ? "true"
                     : "false");
        return true;
    case PX_COL_DECIMAL:
    case PX_COL_BINARY:
    case PX_COL_TEXT:
        break;
    }
    if (!utf8_valid(cell, strlen(cell))) {
        snprintf(err, errlen,
                 "the value is not valid UTF-8 text (cast it to a binary type to "
                 "receive it as base64)");
        return false;
    }
    put_string(b, cell);
    return true;
}

static bool names_repeat(const px_result *r)
{
    for (int i = 0; i < r->ncols; i++)
        for (int j = i + 1; j < r->ncols; j++)
            if (strcmp(r->colnames[i], r->colnames[j]) == 0)
                return true;
    return false;
}

static bool put_columns(out_buf *b, const px_result *r, char *err, size_t errlen)
{
    puts_(b, ",\"columns\":[");
    for (int col = 0; col < r->ncols; col++) {
        if (!utf8_valid(r->colnames[col], strlen(r->colnames[col]))) {
            snprintf(err, errlen, "column %d: its name is not valid UTF-8", col);
            return false;
        }
        if (col)
            put(b, ",", 1);
        put_string(b, r->colnames[col]);
    }
    put(b, "]", 1);
    return true;
}

static bool put_rows(out_buf *b, const px_result *r, char *err, size_t errlen)
{
    bool arrays = names_repeat(r);
    char why[160];
    puts_(b, ",\"rows\":[");
    for (int row = 0; row < r->nrows; row++) {
        const char *const *cells = (const char *const *)r->cells + (size_t)row * (size_t)r->ncols;
        if (row)
            put(b, ",", 1);
        put(b, arrays ? "[" : "{", 1);
        for (int col = 0; col < r->ncols; col++) {
            if (col)
                put(b, ",", 1);
            if (!arrays) {
                put_string(b, r->colnames[col]);
                put(b, ":", 1);
            }
            if (!put_cell(b, cells[col], r->coltypes[col], why, sizeof why)) {
                snprintf(err, errlen, "row %d, column %d (%s): %s", row, col, r->colnames[col],
                         why);
                return false;
            }
        }
        put(b, arrays ? "]" : "}", 1);
    }
    put(b, "]", 1);
    return true;
}

char *results_render(const px_result *results, int n, int *failed_stmt, char *err, size_t errlen)
{
    out_buf b = {0};
    char num[32];
    put(&b, "[", 1);
    for (int i = 0; i < n; i++) {
        const px_result *r = &results[i];
        snprintf(num, sizeof num, "%" PRId64, r->rows_affected);
        puts_(&b, i ? ",{\"rows_affected\":" : "{\"rows_affected\":");
        puts_(&b, num);
        if (r->ncols > 0 && (!put_columns(&b, r, err, errlen) || !put_rows(&b, r, err, errlen))) {
            *failed_stmt = i;
            free(b.p);
            return NULL;
        }
        put(&b, "}", 1);
    }
    put(&b, "]", 1);
    if (b.oom) {
        *failed_stmt = 0;
        snprintf(err, errlen, "out of memory");
        free(b.p);
        return NULL;
    }
    return b.p;
}
