/*
 * Parsing and validation of transaction requests (see request.h). The JSON document is walked once;
 * everything the engine keeps is copied into a chunked arena owned by the request, and the jansson
 * tree is freed before the transaction starts.
 */
#include "request.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) unsigned char data[];
} chunk;

typedef struct request_impl {
    txn_request pub; /* first: request_free casts back */
    chunk *chunks;
} request_impl;

static void *arena_alloc(request_impl *r, size_t n)
{
    chunk *c = r->chunks;
    n = (n + 15) & ~(size_t)15;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 1024 ? n : 1024;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = r->chunks;
        r->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static char *arena_strndup(request_impl *r, const char *s, size_t len)
{
    char *p = arena_alloc(r, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

void request_free(txn_request *req)
{
    request_impl *r = (request_impl *)req;
    if (!r)
        return;
    while (r->chunks) {
        chunk *next = r->chunks->next;
        free(r->chunks);
        r->chunks = next;
    }
    free(r);
}

/* ---- digest: FNV-1a 128 over a length-prefixed canonical form ---------------------------- */

typedef unsigned __int128 u128;

typedef struct digest_state {
    u128 h;
} digest_state;

static void digest_bytes(digest_state *d, const void *p, size_t n)
{
    const u128 prime = ((u128)0x0000000001000000ULL << 64) | 0x000000000000013BULL;
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        d->h ^= b[i];
        d->h *= prime;
    }
}

static void digest_u64(digest_state *d, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    digest_bytes(d, b, sizeof b);
}

static void digest_str(digest_state *d, const char *s, size_t len)
{
    digest_u64(d, s ? len : UINT64_MAX);
    if (s)
        digest_bytes(d, s, len);
}

static void digest_request(txn_request *req)
{
    digest_state d = {((u128)0x6c62272e07bb0142ULL << 64) | 0x62b821756295c58dULL};
    digest_u64(&d, (uint64_t)req->nbranches);
    for (int b = 0; b < req->nbranches; b++) {
        const req_branch *br = &req->branches[b];
        digest_str(&d, br->name, strlen(br->name));
        digest_u64(&d, (uint64_t)br->nstmts);
        for (int s = 0; s < br->nstmts; s++) {
            const px_stmt *st = &br->stmts[s];
            const char *reason = br->abort_reasons ? br->abort_reasons[s] : NULL;
            digest_str(&d, st->sql, strlen(st->sql));
            digest_u64(&d, (uint64_t)st->expect_rows);
            digest_str(&d, reason, reason ? strlen(reason) : 0);
            digest_u64(&d, (uint64_t)st->nparams);
            for (int p = 0; p < st->nparams; p++) {
                const px_param *pa = &st->params[p];
                uint64_t bits;
                digest_u64(&d, (uint64_t)pa->type);
                switch (pa->type) {
                case PX_P_BOOL:
                    digest_u64(&d, pa->b);
                    break;
                case PX_P_INT:
                    digest_u64(&d, (uint64_t)pa->i);
                    break;
                case PX_P_REAL:
                    memcpy(&bits, &pa->r, sizeof bits);
                    digest_u64(&d, bits);
                    break;
                case PX_P_TEXT:
                    digest_str(&d, pa->text, pa->len);
                    break;
                case PX_P_NULL:
                    break;
                }
            }
        }
    }
    for (int i = 0; i < REQUEST_DIGEST_LEN; i++)
        req->digest[i] = (uint8_t)(d.h >> (8 * i));
}

void request_digest_hex(const uint8_t *digest, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < REQUEST_DIGEST_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[2 * REQUEST_DIGEST_LEN] = '\0';
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Strict where sscanf("%2x") is not: no sign, no space, no short or long text - the digest comes
 * from the journal or the store, never trusted. */
int request_digest_parse(const char *hex, uint8_t *out)
{
    if (!hex || strlen(hex) != 2 * REQUEST_DIGEST_LEN)
        return -EINVAL;
    for (int i = 0; i < REQUEST_DIGEST_LEN; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- scratch memory for jansson's parse tree ---------------------------------------------- */

/* jansson allocates every value, key and string of a document separately; on the hot path that
 * made the allocator the daemon's largest cost. While a request is parsed, jansson allocates from
 * a bump arena instead, and the whole tree is dropped at once. Outside a parse the functions
 * pass through to malloc/free, so every other use of jansson is unaffected. The loop thread is the
 * only user of jansson in the daemon. */
#define SCRATCH_CHUNK (64 * 1024)

typedef struct scratch_chunk {
    struct scratch_chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) unsigned char data[];
} scratch_chunk;

static scratch_chunk *scratch; /* chunks of the current parse; the last one is kept */
static bool scratch_on;

static void *scratch_malloc(size_t n)
{
    scratch_chunk *c = scratch;
    if (!scratch_on)
        return malloc(n);
    n = (n + 15) & ~(size_t)15;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > SCRATCH_CHUNK ? n : SCRATCH_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = scratch;
        scratch = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static bool in_scratch(const void *p)
{
    for (const scratch_chunk *c = scratch; c; c = c->next)
        if ((const unsigned char *)p >= c->data && (const unsigned char *)p < c->data + c->cap)
            return true;
    return false;
}

static void scratch_free(void *p)
{
    if (p && !(scratch_on && in_scratch(p)))
        free(p);
}

static void scratch_begin(void)
{
    static bool installed;
    if (!installed) {
        json_set_alloc_funcs(scratch_malloc, scratch_free);
        installed = true;
    }
    scratch_on = true;
}

/* Everything of the parse is gone: keep one chunk for the next request. */
static void scratch_end(void)
{
    scratch_on = false;
    while (scratch && scratch->next) {
        scratch_chunk *next = scratch->next;
        free(scratch);
        scratch = next;
    }
    if (scratch && scratch->cap > SCRATCH_CHUNK) {
        free(scratch);
        scratch = NULL;
    }
    if (scratch)
        scratch->used = 0;
}

/* ---- validation -------------------------------------------------------------------------- */

bool request_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n >= 1 && n <= REQUEST_ID_MAX;
}

bool request_id_reserved(const char *id)
{
    return (id[0] == 'x' || id[0] == 'X') && (id[1] == 'a' || id[1] == 'A') && id[2] >= '0' &&
           id[2] <= '9';
}

typedef struct parse_ctx {
    request_impl *r;
    const request_limits *lim;
    request_lookup_fn lookup;
    void *lookup_arg;
    char *err;
    size_t errlen;
} parse_ctx;

__attribute__((format(printf, 2, 3))) static bool fail(parse_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* Rejects keys outside `allowed` (a NULL-terminated list): a typo must not be ignored. */
static bool only_keys(parse_ctx *c, json_t *obj, const char *where, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, key) == 0;
        if (!ok)
            return fail(c, "%s%sunknown field '%s'", where, *where ? ": " : "", key);
    }
    return true;
}

static bool parse_param(parse_ctx *c, json_t *v, px_param *p, const char *where)
{
    memset(p, 0, sizeof *p);
    switch (json_typeof(v)) {
    case JSON_NULL:
        p->type = PX_P_NULL;
        return true;
    case JSON_TRUE:
    case JSON_FALSE:
        p->type = PX_P_BOOL;
        p->b = json_is_true(v);
        return true;
    case JSON_INTEGER:
        p->type = PX_P_INT;
        p->i = json_integer_value(v);
        return true;
    case JSON_REAL:
        p->type = PX_P_REAL;
        p->r = json_real_value(v);
        return true;
    case JSON_STRING:
        p->type = PX_P_TEXT;
        p->len = json_string_length(v);
        p->text = arena_strndup(c->r, json_string_value(v), p->len);
        return p->text || fail(c, "out of memory");
    default:
        return fail(c, "%s: must be a string, number, boolean or null", where);
    }
}

/* The statement guard (guard.h): nothing of a request runs when one statement is refused. */
static bool guard_statement(parse_ctx *c, const char *sql, guard_dialect d, const char *where,
                            const char *participant)
{
    char keyword[32], allowed[128];
    guard_verdict v = guard_check(sql, d, keyword, sizeof keyword);
    if (v == GUARD_OK)
        return true;
    if (v != GUARD_KEYWORD)
        return fail(c, "%s: %s is not accepted on participant '%s'", where, guard_verdict_text(v),
                    participant);
    guard_allowed(d, allowed, sizeof allowed);
    return fail(c,
                "%s: \"%s\" statements are not accepted on participant '%s': only %s run inside "
                "a branch",
                where, keyword, participant, allowed);
}

static bool parse_statement(parse_ctx *c, json_t *s, req_branch *br, int idx, const char *bwhere,
                            guard_dialect dialect)
{
    static const char *const keys[] = {"sql", "params", "expect_rows", "abort_reason", NULL};
    char where[96];
    json_t *sql, *params, *expect, *reason;
    px_stmt *st = &br->stmts[idx];
    px_param *ps;

    snprintf(where, sizeof where, "%s.statements[%d]", bwhere, idx);
    if (!json_is_object(s))
        return fail(c, "%s: must be an object", where);
    if (!only_keys(c, s, where, keys))
        return false;
    sql = json_object_get(s, "sql");
    if (!json_is_string(sql) || json_string_length(sql) == 0)
        return fail(c, "%s.sql: must be a non-empty string", where);
    if (json_string_length(sql) > c->lim->max_sql_bytes)
        return fail(c, "%s.sql: longer than %zu bytes", where, c->lim->max_sql_bytes);
    if (strlen(json_string_value(sql)) != json_string_length(sql))
        return fail(c, "%s.sql: contains a NUL character", where);
    if (!guard_statement(c, json_string_value(sql), dialect, where, br->name))
        return false;
    st->sql = arena_strndup(c->r, json_string_value(sql), json_string_length(sql));
    st->expect_rows = -1;
    expect = json_object_get(s, "expect_rows");
    if (expect) {
        if (!json_is_integer(expect) || json_integer_value(expect) < 0)
            return fail(c, "%s.expect_rows: must be an integer >= 0", where);
        st->expect_rows = json_integer_value(expect);
    }
    reason = json_object_get(s, "abort_reason");
    if (reason) {
        if (!json_is_string(reason) || json_string_length(reason) > 512)
            return fail(c, "%s.abort_reason: must be a string of at most 512 bytes", where);
        if (!br->abort_reasons) {
            br->abort_reasons = arena_alloc(c->r, sizeof(char *) * (size_t)br->nstmts);
            if (!br->abort_reasons)
                return fail(c, "out of memory");
            memset(br->abort_reasons, 0, sizeof(char *) * (size_t)br->nstmts);
        }
        br->abort_reasons[idx] =
            arena_strndup(c->r, json_string_value(reason), json_string_length(reason));
    }

    params = json_object_get(s, "params");
    if (!params)
        return st->sql || fail(c, "out of memory");
    if (!json_is_array(params))
        return fail(c, "%s.params: must be an array", where);
    if (json_array_size(params) > (size_t)c->lim->max_params)
        return fail(c, "%s.params: more than %d parameters", where, c->lim->max_params);
    st->nparams = (int)json_array_size(params);
    ps = arena_alloc(c->r, sizeof *ps * (size_t)(st->nparams ? st->nparams : 1));
    if (!ps || !st->sql)
        return fail(c, "out of memory");
    for (int i = 0; i < st->nparams; i++) {
        char pwhere[128];
        snprintf(pwhere, sizeof pwhere, "%s.params[%d]", where, i);
        if (!parse_param(c, json_array_get(params, (size_t)i), &ps[i], pwhere))
            return false;
    }
    st->params = ps;
    return true;
}

static bool parse_branch(parse_ctx *c, json_t *b, req_branch *br, int idx)
{
    static const char *const keys[] = {"participant", "statements", NULL};
    char where[48];
    json_t *name, *stmts;
    request_participant part;

    snprintf(where, sizeof where, "branches[%d]", idx);
    if (!json_is_object(b))
        return fail(c, "%s: must be an object", where);
    if (!only_keys(c, b, where, keys))
        return false;
    name = json_object_get(b, "participant");
    if (!json_is_string(name))
        return fail(c, "%s.participant: must be a string", where);
    if (!c->lookup(json_string_value(name), c->lookup_arg, &part))
        return fail(c, "%s.participant: unknown participant '%.64s'", where,
                    json_string_value(name));
    br->participant = part.index;
    br->name = arena_strndup(c->r, json_string_value(name), json_string_length(name));
    stmts = json_object_get(b, "statements");
    if (!json_is_array(stmts))
        return fail(c, "%s.statements: must be an array", where);
    if (json_array_size(stmts) == 0)
        return fail(c, "%s.statements: must not be empty", where);
    if (json_array_size(stmts) > (size_t)c->lim->max_statements)
        return fail(c, "%s.statements: more than %d statements", where, c->lim->max_statements);
    br->nstmts = (int)json_array_size(stmts);
    br->stmts = arena_alloc(c->r, sizeof *br->stmts * (size_t)br->nstmts);
    if (!br->stmts || !br->name)
        return fail(c, "out of memory");
    memset(br->stmts, 0, sizeof *br->stmts * (size_t)br->nstmts);
    br->read_only = true;
    for (int i = 0; i < br->nstmts; i++) {
        bool ro;
        if (!parse_statement(c, json_array_get(stmts, (size_t)i), br, i, where, part.dialect))
            return false;
        guard_classify(br->stmts[i].sql, part.dialect, &br->stmts[i].session_neutral, &ro);
        br->read_only &= ro;
    }
    return true;
}

static int by_participant(const void *a, const void *b)
{
    return ((const req_branch *)a)->participant - ((const req_branch *)b)->participant;
}

static bool parse_top(parse_ctx *c, json_t *root)
{
    static const char *const keys[] = {"id", "timeout_ms", "branches", NULL};
    txn_request *req = &c->r->pub;
    json_t *id, *timeout, *branches;

    if (!json_is_object(root))
        return fail(c, "the request must be a JSON object");
    if (!only_keys(c, root, "", keys))
        return false;
    id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id) || !request_id_valid(json_string_value(id)))
            return fail(c, "id: must be 1-64 characters of [A-Za-z0-9._:-]");
        if (request_id_reserved(json_string_value(id)))
            return fail(c, "id: \"xa\" followed by a digit is reserved for generated ids");
        snprintf(req->id, sizeof req->id, "%s", json_string_value(id));
        req->id_given = true;
    }
    req->timeout_ms = c->lim->default_timeout_ms;
    timeout = json_object_get(root, "timeout_ms");
    if (timeout) {
        if (!json_is_integer(timeout) || json_integer_value(timeout) < 1 ||
            json_integer_value(timeout) > (json_int_t)c->lim->max_timeout_ms)
            return fail(c, "timeout_ms: must be an integer from 1 to %u", c->lim->max_timeout_ms);
        req->timeout_ms = (uint32_t)json_integer_value(timeout);
    }
    branches = json_object_get(root, "branches");
    if (!json_is_array(branches))
        return fail(c, "branches: must be an array");
    if (json_array_size(branches) == 0)
        return fail(c, "branches: must not be empty");
    if (json_array_size(branches) > (size_t)c->lim->max_branches)
        return fail(c, "branches: more than %d branches", c->lim->max_branches);
    req->nbranches = (int)json_array_size(branches);
    req->branches = arena_alloc(c->r, sizeof *req->branches * (size_t)req->nbranches);
    if (!req->branches)
        return fail(c, "out of memory");
    memset(req->branches, 0, sizeof *req->branches * (size_t)req->nbranches);
    for (int i = 0; i < req->nbranches; i++)
        if (!parse_branch(c, json_array_get(branches, (size_t)i), &req->branches[i], i))
            return false;
    qsort(req->branches, (size_t)req->nbranches, sizeof *req->branches, by_participant);
    for (int i = 1; i < req->nbranches; i++)
        if (req->branches[i].participant == req->branches[i - 1].participant)
            return fail(c, "branches: participant '%s' appears more than once",
                        req->branches[i].name);
    return true;
}

txn_request *request_parse(const char *body, size_t len, const request_limits *limits,
                           request_lookup_fn lookup, void *arg, char *err, size_t errlen)
{
    json_error_t jerr;
    parse_ctx c = {NULL, limits, lookup, arg, err, errlen};
    json_t *root;
    bool ok;

    c.r = calloc(1, sizeof *c.r);
    if (!c.r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    scratch_begin();
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        scratch_end();
        snprintf(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        request_free(&c.r->pub);
        return NULL;
    }
    /* Everything kept is copied into the request's own arena, so the tree can go. */
    ok = parse_top(&c, root);
    json_decref(root);
    scratch_end();
    if (!ok) {
        request_free(&c.r->pub);
        return NULL;
    }
    digest_request(&c.r->pub);
    return &c.r->pub;
}
