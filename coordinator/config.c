/*
 * Configuration loading: one typed key table per section kind drives parsing, defaults,
 * validation and config_dump, so the three can never disagree. inih splits the file into
 * sections and key = value pairs; a reader of our own feeds it line by line so that every error
 * can name "<file>:<line>: [<section>] <key>: <problem>", and it also sees the section headers,
 * which inih never reports (an empty or misspelled section would otherwise pass unnoticed).
 * Cross-key rules (driver-specific keys, required keys, timeout ordering) run once the whole file
 * is read. Secrets are read from their files here and never appear in a message or in the dump.
 */
#include "config.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The gtrid is "xa2.<node_id>.<identity>.<boot>.<seq>" with an 8-character identity and boot and
 * seq up to 13 base-36 digits each (identity.h), and the bqual is the participant name; MySQL caps
 * both at 64 bytes and PostgreSQL's gid "<gtrid>.<bqual>" at 199. The name limits enforced below
 * keep every XID within those bounds. */
#define NODE_ID_MAX 16
#define PART_NAME_MAX 32
#define GTRID_FIXED_LEN (sizeof "xa2." - 1 + 1 + 8 + 1 + 13 + 1 + 13)
_Static_assert(GTRID_FIXED_LEN + NODE_ID_MAX <= PX_XID_PART_MAX, "node_id too long for a gtrid");
_Static_assert(PART_NAME_MAX <= PX_XID_PART_MAX, "participant name too long for a bqual");
_Static_assert(GTRID_FIXED_LEN + NODE_ID_MAX + 1 + PART_NAME_MAX <= 199, "gid too long");

#define SECRET_MAX 4096
#define PROBLEM_MAX 256
#define MS_HOUR 3600000
#define MS_DAY 86400000

/* Drivers that accept a participant key. */
#define DRV_PG 1u
#define DRV_MY 2u
#define DRV_MEM 4u
#define DRV_ALL (DRV_PG | DRV_MY | DRV_MEM)

typedef enum key_kind {
    K_STR,          /* char * */
    K_FILE,         /* char *: a file that must exist (TLS material) */
    K_SECRET,       /* char * path at off, char * content at off2 */
    K_INT,          /* int */
    K_U32,          /* uint32_t */
    K_I64,          /* int64_t */
    K_SIZE,         /* size_t */
    K_BOOL,         /* bool: true | false */
    K_NODE_ID,      /* char[NODE_ID_MAX + 1] */
    K_LISTEN,       /* listen_host + listen_port */
    K_LOG_LEVEL,    /* char[8] */
    K_LOG_FORMAT,   /* char[8] */
    K_DRIVER,       /* char * */
    K_CONNINFO,     /* char * */
    K_HOST,         /* char *: numeric address */
    K_DECISION_LOG, /* decision_log */
} key_kind;

typedef struct key_desc {
    const char *name;
    key_kind kind;
    size_t off;
    size_t off2;        /* K_SECRET: where the content goes */
    int64_t min, max;   /* numeric kinds */
    const char *defval; /* applied through the same parser; NULL: none or derived */
    bool required;
    unsigned drivers; /* participant keys only */
} key_desc;

#define CO(f) offsetof(config, f)
#define PO(f) offsetof(config_participant, f)
#define SO(f) offsetof(config_store, f)

static const key_desc coord_keys[] = {
    {"node_id", K_NODE_ID, CO(node_id), 0, 0, 0, NULL, true, 0},
    {"listen", K_LISTEN, 0, 0, 0, 0, "127.0.0.1:7070", false, 0},
    {"data_dir", K_STR, CO(data_dir), 0, 0, 0, NULL, true, 0},
    {"api_token_file", K_SECRET, CO(api_token_file), CO(api_token), 0, 0, NULL, false, 0},
    {"max_inflight", K_INT, CO(max_inflight), 0, 1, 100000, "256", false, 0},
    {"default_timeout_ms", K_U32, CO(default_timeout_ms), 0, 10, MS_HOUR, "5000", false, 0},
    {"max_timeout_ms", K_U32, CO(max_timeout_ms), 0, 10, MS_HOUR, "60000", false, 0},
    {"commit_wait_ms", K_U32, CO(commit_wait_ms), 0, 0, MS_HOUR, "2000", false, 0},
    {"drain_limit_ms", K_U32, CO(drain_limit_ms), 0, 0, MS_HOUR, "30000", false, 0},
    {"recovery_interval_ms", K_U32, CO(recovery_interval_ms), 0, 100, MS_DAY, "10000", false, 0},
    {"outcome_retention_s", K_I64, CO(outcome_retention_s), 0, 1, 315360000, "86400", false, 0},
    {"max_body_bytes", K_SIZE, CO(max_body_bytes), 0, 1024, 64 << 20, "1048576", false, 0},
    {"http_max_connections", K_INT, CO(http_max_connections), 0, 16, 1000000, "1024", false, 0},
    {"http_max_buffered_bytes", K_SIZE, CO(http_max_buffered_bytes), 0, 1 << 20, INT64_C(1) << 40,
     "67108864", false, 0},
    {"http_header_timeout_ms", K_U32, CO(http_header_timeout_ms), 0, 100, MS_HOUR, "10000", false,
     0},
    {"http_body_timeout_ms", K_U32, CO(http_body_timeout_ms), 0, 100, MS_HOUR, "30000", false, 0},
    {"http_idle_timeout_ms", K_U32, CO(http_idle_timeout_ms), 0, 100, MS_DAY, "60000", false, 0},
    {"journal_segment_bytes", K_SIZE, CO(journal_segment_bytes), 0, 64 << 10, 1 << 30, "67108864",
     false, 0},
    {"max_branches", K_INT, CO(max_branches), 0, 1, 64, "16", false, 0},
    {"max_statements", K_INT, CO(max_statements), 0, 1, 1024, "64", false, 0},
    {"log_level", K_LOG_LEVEL, CO(log_level), 0, 0, 0, "info", false, 0},
    {"log_format", K_LOG_FORMAT, CO(log_format), 0, 0, 0, "text", false, 0},
    {"decision_log", K_DECISION_LOG, CO(decision_log), 0, 0, 0, "journal", false, 0},
};

/* [decision_store]; renew_ms defaults to a quarter of lease_ms (check_store). */
static const key_desc store_keys[] = {
    {"conninfo", K_CONNINFO, SO(conninfo), 0, 0, 0, NULL, true, 0},
    {"password_file", K_SECRET, SO(password_file), SO(password), 0, 0, NULL, false, 0},
    {"pool_size", K_INT, SO(pool_size), 0, 1, 1024, "4", false, 0},
    {"lease_ms", K_U32, SO(lease_ms), 0, 200, MS_HOUR, "10000", false, 0},
    {"renew_ms", K_U32, SO(renew_ms), 0, 20, MS_HOUR, NULL, false, 0},
    {"connect_timeout_ms", K_U32, SO(connect_timeout_ms), 0, 1, MS_HOUR, "3000", false, 0},
    {"participant", K_STR, SO(participant), 0, 0, 0, NULL, false, 0},
};

/* Which participant keys are required depends on the driver: see check_driver_keys. */
static const key_desc part_keys[] = {
    {"driver", K_DRIVER, PO(driver), 0, 0, 0, NULL, true, DRV_ALL},
    {"conninfo", K_CONNINFO, PO(conninfo), 0, 0, 0, NULL, false, DRV_PG},
    {"host", K_HOST, PO(host), 0, 0, 0, NULL, false, DRV_MY},
    {"port", K_INT, PO(port), 0, 1, 65535, "3306", false, DRV_MY},
    {"database", K_STR, PO(database), 0, 0, 0, NULL, false, DRV_MY},
    {"user", K_STR, PO(user), 0, 0, 0, NULL, false, DRV_MY},
    {"password_file", K_SECRET, PO(password_file), PO(password), 0, 0, NULL, false,
     DRV_PG | DRV_MY},
    {"ssl_ca", K_FILE, PO(ssl_ca), 0, 0, 0, NULL, false, DRV_MY},
    {"ssl_cert", K_FILE, PO(ssl_cert), 0, 0, 0, NULL, false, DRV_MY},
    {"ssl_key", K_FILE, PO(ssl_key), 0, 0, 0, NULL, false, DRV_MY},
    {"ssl_verify_server_cert", K_BOOL, PO(ssl_verify_server_cert), 0, 0, 0, NULL, false, DRV_MY},
    {"pool_size", K_INT, PO(pool_size), 0, 1, 1024, "8", false, DRV_ALL},
    {"connect_timeout_ms", K_U32, PO(connect_timeout_ms), 0, 1, MS_HOUR, "3000", false, DRV_ALL},
    {"lock_timeout_ms", K_U32, PO(lock_timeout_ms), 0, 1, MS_HOUR, NULL, false, DRV_ALL},
    {"allow_unsafe", K_BOOL, PO(allow_unsafe), 0, 0, 0, "false", false, DRV_PG | DRV_MY},
};

#define N_COORD_KEYS (sizeof coord_keys / sizeof coord_keys[0])
#define N_PART_KEYS (sizeof part_keys / sizeof part_keys[0])
#define N_STORE_KEYS (sizeof store_keys / sizeof store_keys[0])

typedef enum sec_kind { SEC_NONE, SEC_COORD, SEC_PART, SEC_STORE, SEC_BAD } sec_kind;

/* Where each key and section was given, for duplicate detection and for messages about rules
 * that are checked only after the whole file is read. 0 means "not given". */
typedef struct part_lines {
    int section;
    int key[N_PART_KEYS];
} part_lines;

typedef struct parse_ctx {
    config *cfg;
    FILE *fp;
    const char *path;
    int lineno;
    bool failed;
    int err_line;
    char *err;
    size_t errlen;
    sec_kind cur;
    char cur_name[128]; /* current section as written between the brackets */
    config_participant *cur_part;
    int coord_section_line;
    int coord_key_line[N_COORD_KEYS];
    int store_section_line;
    int store_key_line[N_STORE_KEYS];
    part_lines part[CONFIG_MAX_PARTICIPANTS];
} parse_ctx;

/* ---------------------------------------------------------------------------------------------
 * Errors: only the first one is kept; parsing stops right after it.
 */

static void fail(parse_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(parse_ctx *ctx, int line, const char *fmt, ...)
{
    if (ctx->failed)
        return;
    ctx->failed = true;
    ctx->err_line = line;
    int n = line > 0 ? snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->path, line)
                     : snprintf(ctx->err, ctx->errlen, "%s: ", ctx->path);
    if (n < 0 || (size_t)n >= ctx->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------------
 * Value parsers. Each returns 0, or a negative errno code (-EINVAL, -EIO or -ENOMEM) with the
 * problem (without file/line/key) in prob. Problems never quote a value that could carry a secret.
 */

static int parse_uint(const char *v, int64_t min, int64_t max, int64_t *out, char *prob)
{
    uint64_t n = 0;
    if (*v == '\0') {
        snprintf(prob, PROBLEM_MAX, "must be an integer in %" PRId64 "..%" PRId64, min, max);
        return -EINVAL;
    }
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9') {
            snprintf(prob, PROBLEM_MAX,
                     "\"%.40s\" is not a decimal integer (%" PRId64 "..%" PRId64 ")", v, min, max);
            return -EINVAL;
        }
        if (n > (UINT64_MAX - 9) / 10) {
            n = UINT64_MAX;
            break;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (n < (uint64_t)min || n > (uint64_t)max) {
        snprintf(prob, PROBLEM_MAX, "%.40s is out of range (must be %" PRId64 "..%" PRId64 ")", v,
                 min, max);
        return -EINVAL;
    }
    *out = (int64_t)n;
    return 0;
}

static bool is_numeric_host(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int parse_listen(const char *v, config *cfg, char *prob)
{
    static const char usage[] = "must be <IPv4>:<port> or [<IPv6>]:<port> with a numeric address";
    char host[sizeof cfg->listen_host];
    const char *port;
    unsigned char buf[sizeof(struct in6_addr)];
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (!end || end[1] != ':' || (size_t)(end - v - 1) >= sizeof host)
            goto bad;
        memcpy(host, v + 1, (size_t)(end - v - 1));
        host[end - v - 1] = '\0';
        if (inet_pton(AF_INET6, host, buf) != 1)
            goto bad;
        port = end + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof host)
            goto bad;
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        if (inet_pton(AF_INET, host, buf) != 1)
            goto bad;
        port = colon + 1;
    }
    int64_t p;
    if (parse_uint(port, 1, 65535, &p, prob) < 0) {
        snprintf(prob, PROBLEM_MAX, "port must be 1..65535 (%s)", usage);
        return -EINVAL;
    }
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", host);
    cfg->listen_port = (int)p;
    return 0;
bad:
    snprintf(prob, PROBLEM_MAX, "\"%.64s\" %s (name lookup is not done)", v, usage);
    return -EINVAL;
}

static bool all_of(const char *s, const char *extra)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr(extra, *s)))
            return false;
    return true;
}

static int parse_node_id(const char *v, char *out, char *prob)
{
    size_t n = strlen(v);
    if (n == 0 || n > NODE_ID_MAX || !all_of(v, "")) {
        snprintf(prob, PROBLEM_MAX,
                 "must be 1..%d characters of [a-z0-9] (it goes into every XID: gtrid "
                 "xa2.<node_id>.<identity>.<boot>.<seq> must fit MySQL's %d bytes)",
                 NODE_ID_MAX, PX_XID_PART_MAX);
        return -EINVAL;
    }
    memcpy(out, v, n + 1);
    return 0;
}

/* A conninfo is read by libpq's own parser, so that the rules below see what libpq will use:
 * keys and values after unquoting, and after percent-decoding in a postgres:// URI (where
 * "?pass%77ord=x" is a password and the authority is a host list). A password in it would end up
 * in logs and ps-like tools: refuse it. A host name would be resolved by a blocking call inside
 * the asynchronous connect: refuse that too, unless hostaddr gives the address. */
static int check_conninfo_hosts(const char *hosts, char *prob)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", hosts);
    char *save = NULL;
    for (char *h = strtok_r(buf, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        if (h[0] != '/' && h[0] != '@' && !is_numeric_host(h)) {
            snprintf(prob, PROBLEM_MAX,
                     "host %.64s is not a numeric address or socket directory (name lookup "
                     "would block the event loop; add hostaddr= or use the address)",
                     h);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_conninfo_options(const PQconninfoOption *opts, char *prob)
{
    const char *hosts = NULL;
    bool hostaddr = false;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "password") == 0) {
            snprintf(prob, PROBLEM_MAX, "must not contain a password: use password_file");
            return -EINVAL;
        }
        if (strcmp(o->keyword, "hostaddr") == 0 && o->val[0])
            hostaddr = true;
        if (strcmp(o->keyword, "host") == 0)
            hosts = o->val;
    }
    if (!hostaddr && hosts && strlen(hosts) >= 256) {
        snprintf(prob, PROBLEM_MAX, "host list longer than 255 characters");
        return -EINVAL;
    }
    return !hostaddr && hosts && hosts[0] ? check_conninfo_hosts(hosts, prob) : 0;
}

static int parse_conninfo(const char *v, char *prob)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(v, &perr);
    int rc;
    if (!opts) {
        /* Not libpq's message: it quotes the text, which may hold a password. */
        PQfreemem(perr);
        snprintf(prob, PROBLEM_MAX,
                 "malformed: expected key=value pairs separated by spaces or a postgresql:// URI "
                 "with known keys");
        return -EINVAL;
    }
    rc = check_conninfo_options(opts, prob);
    PQconninfoFree(opts);
    return rc;
}

/* Reads a secret file: opened first and then checked through the descriptor, so the checks
 * and the read concern the same file. */
static int read_secret(const char *path, char **out, char *prob)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(prob, PROBLEM_MAX, "%.160s: %s", path, strerror(errno));
        return -EIO;
    }
    struct stat st;
    char *buf = NULL;
    int rc = -EINVAL;
    if (fstat(fd, &st) < 0) {
        snprintf(prob, PROBLEM_MAX, "%.160s: %s", path, strerror(errno));
        rc = -EIO;
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(prob, PROBLEM_MAX, "%.160s is not a regular file", path);
        goto fail;
    }
    if (st.st_mode & 077) {
        snprintf(prob, PROBLEM_MAX, "%.160s is %s by group or others (chmod 600)", path,
                 (st.st_mode & 044)   ? "readable"
                 : (st.st_mode & 022) ? "writable"
                                      : "usable");
        goto fail;
    }
    buf = malloc(SECRET_MAX + 1);
    if (!buf) {
        snprintf(prob, PROBLEM_MAX, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, SECRET_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(prob, PROBLEM_MAX, "%.160s: %s", path, strerror(errno));
            rc = -EIO;
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > SECRET_MAX) {
            snprintf(prob, PROBLEM_MAX, "%.160s is larger than %d bytes", path, SECRET_MAX);
            goto fail;
        }
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (len == 0) {
        snprintf(prob, PROBLEM_MAX, "%.160s is empty", path);
        goto fail;
    }
    if (strlen(buf) != len || strchr(buf, '\n')) {
        snprintf(prob, PROBLEM_MAX, "%.160s must hold one line without NUL bytes", path);
        goto fail;
    }
    close(fd);
    *out = buf;
    return 0;
fail:
    if (buf) {
        explicit_bzero(buf, SECRET_MAX + 1);
        free(buf);
    }
    close(fd);
    return rc;
}

static int check_file(const char *path, char *prob)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(prob, PROBLEM_MAX, "%.160s: %s", path, strerror(errno));
        return -EINVAL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(prob, PROBLEM_MAX, "%.160s is not a regular file", path);
        return -EINVAL;
    }
    return 0;
}

static int dup_into(char **dst, const char *v, char *prob)
{
    *dst = strdup(v);
    if (!*dst) {
        snprintf(prob, PROBLEM_MAX, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static int store_int(const key_desc *k, void *field, const char *v, char *prob)
{
    int64_t n;
    if (parse_uint(v, k->min, k->max, &n, prob) < 0)
        return -EINVAL;
    switch (k->kind) {
    case K_INT:
        *(int *)field = (int)n;
        break;
    case K_U32:
        *(uint32_t *)field = (uint32_t)n;
        break;
    case K_I64:
        *(int64_t *)field = n;
        break;
    default:
        *(size_t *)field = (size_t)n;
        break;
    }
    return 0;
}

/* The longest line the reader takes: inih's INI_MAX_LINE (200) less the newline and the NUL. */
#define LINE_MAX_CHARS 198
/* What config_dump adds after a secret's file name. */
#define SECRET_NOTE "   ; content: (set)"

/* Parses v for key k into obj (a config or a config_participant); cfg is the whole config. */
static int set_value(const key_desc *k, void *obj, config *cfg, const char *v, char *prob)
{
    void *field = (char *)obj + k->off;
    size_t room = LINE_MAX_CHARS - strlen(k->name) - strlen(" = ") -
                  (k->kind == K_SECRET ? strlen(SECRET_NOTE) : 0);
    if (*v == '\0') {
        snprintf(prob, PROBLEM_MAX, "is empty");
        return -EINVAL;
    }
    /* "key=v" fits where "key = v" (how config_dump writes it) would not load back. */
    if (strlen(v) > room) {
        snprintf(prob, PROBLEM_MAX, "is %zu characters long; at most %zu fit on its line",
                 strlen(v), room);
        return -EINVAL;
    }
    /* "key =;x" reads as ";x", but "key = ;x" (how config_dump writes it) as a comment. */
    if (*v == ';') {
        snprintf(prob, PROBLEM_MAX, "must not start with ';' (it reads as a comment)");
        return -EINVAL;
    }
    switch (k->kind) {
    case K_STR:
        return dup_into(field, v, prob);
    case K_FILE:
        return check_file(v, prob) < 0 ? -EINVAL : dup_into(field, v, prob);
    case K_SECRET: {
        int rc = read_secret(v, (char **)((char *)obj + k->off2), prob);
        return rc < 0 ? rc : dup_into(field, v, prob);
    }
    case K_INT:
    case K_U32:
    case K_I64:
    case K_SIZE:
        return store_int(k, field, v, prob);
    case K_BOOL:
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
            snprintf(prob, PROBLEM_MAX, "must be true or false");
            return -EINVAL;
        }
        *(bool *)field = strcmp(v, "true") == 0;
        return 0;
    case K_NODE_ID:
        return parse_node_id(v, field, prob);
    case K_LISTEN:
        return parse_listen(v, cfg, prob);
    case K_LOG_LEVEL: {
        log_level lvl;
        if (log_parse_level(v, &lvl) != 0) {
            snprintf(prob, PROBLEM_MAX, "must be debug, info, warn or error");
            return -EINVAL;
        }
        snprintf(field, sizeof cfg->log_level, "%s", v);
        return 0;
    }
    case K_LOG_FORMAT: {
        log_format fmt;
        if (log_parse_format(v, &fmt) != 0) {
            snprintf(prob, PROBLEM_MAX, "must be text or json");
            return -EINVAL;
        }
        snprintf(field, sizeof cfg->log_format, "%s", v);
        return 0;
    }
    case K_DRIVER:
        if (strcmp(v, "postgres") != 0 && strcmp(v, "mysql") != 0 && strcmp(v, "memory") != 0) {
            snprintf(prob, PROBLEM_MAX, "\"%.32s\" is not a driver (postgres, mysql or memory)", v);
            return -EINVAL;
        }
        return dup_into(field, v, prob);
    case K_CONNINFO:
        return parse_conninfo(v, prob) < 0 ? -EINVAL : dup_into(field, v, prob);
    case K_HOST:
        if (!is_numeric_host(v)) {
            snprintf(prob, PROBLEM_MAX,
                     "\"%.64s\" is not a numeric IPv4/IPv6 address (name lookup would block "
                     "the event loop)",
                     v);
            return -EINVAL;
        }
        return dup_into(field, v, prob);
    case K_DECISION_LOG:
        if (strcmp(v, "journal") != 0 && strcmp(v, "postgres") != 0) {
            snprintf(prob, PROBLEM_MAX, "\"%.32s\" is not a decision log (journal or postgres)", v);
            return -EINVAL;
        }
        *(decision_log *)field =
            strcmp(v, "postgres") == 0 ? DECISION_LOG_POSTGRES : DECISION_LOG_JOURNAL;
        return 0;
    }
    return -EINVAL;
}

static void apply_defaults(const key_desc *keys, size_t n, void *obj, config *cfg)
{
    char prob[PROBLEM_MAX];
    for (size_t i = 0; i < n; i++)
        if (keys[i].defval)
            (void)set_value(&keys[i], obj, cfg, keys[i].defval, prob);
}

/* ---------------------------------------------------------------------------------------------
 * Sections and keys, as the reader and inih deliver them.
 */

static const char *driver_label(unsigned d)
{
    return d == DRV_PG ? "postgres" : d == DRV_MY ? "mysql" : "memory";
}

static unsigned driver_bit(const char *driver)
{
    if (!driver)
        return 0;
    if (strcmp(driver, "postgres") == 0)
        return DRV_PG;
    if (strcmp(driver, "mysql") == 0)
        return DRV_MY;
    return DRV_MEM;
}

static void begin_participant(parse_ctx *ctx, const char *name)
{
    config *cfg = ctx->cfg;
    size_t n = strlen(name);
    if (n == 0 || n > PART_NAME_MAX || !all_of(name, "_")) {
        fail(ctx, ctx->lineno,
             "[%s]: participant name must be 1..%d characters of [a-z0-9_] (it is the bqual of "
             "the participant's XA branches, at most %d bytes)",
             ctx->cur_name, PART_NAME_MAX, PX_XID_PART_MAX);
        return;
    }
    for (int i = 0; i < cfg->nparticipants; i++) {
        if (strcmp(cfg->participants[i].name, name) == 0) {
            fail(ctx, ctx->lineno, "[%s]: participant given twice (first at line %d)",
                 ctx->cur_name, ctx->part[i].section);
            return;
        }
    }
    if (cfg->nparticipants == CONFIG_MAX_PARTICIPANTS) {
        fail(ctx, ctx->lineno, "[%s]: more than %d participants", ctx->cur_name,
             CONFIG_MAX_PARTICIPANTS);
        return;
    }
    config_participant *p = &cfg->participants[cfg->nparticipants];
    ctx->part[cfg->nparticipants].section = ctx->lineno;
    cfg->nparticipants++;
    memcpy(p->name, name, n + 1);
    apply_defaults(part_keys, N_PART_KEYS, p, cfg);
    ctx->cur = SEC_PART;
    ctx->cur_part = p;
}

static void begin_section(parse_ctx *ctx, const char *name)
{
    snprintf(ctx->cur_name, sizeof ctx->cur_name, "%s", name);
    ctx->cur = SEC_BAD;
    ctx->cur_part = NULL;
    if (strcmp(name, "coordinator") == 0) {
        if (ctx->coord_section_line) {
            fail(ctx, ctx->lineno, "[coordinator]: section given twice (first at line %d)",
                 ctx->coord_section_line);
            return;
        }
        ctx->coord_section_line = ctx->lineno;
        ctx->cur = SEC_COORD;
    } else if (strcmp(name, "decision_store") == 0) {
        if (ctx->store_section_line) {
            fail(ctx, ctx->lineno, "[decision_store]: section given twice (first at line %d)",
                 ctx->store_section_line);
            return;
        }
        ctx->store_section_line = ctx->lineno;
        ctx->cfg->has_store = true;
        apply_defaults(store_keys, N_STORE_KEYS, &ctx->cfg->store, ctx->cfg);
        ctx->cur = SEC_STORE;
    } else if (strncmp(name, "participant.", 12) == 0) {
        begin_participant(ctx, name + 12);
    } else {
        fail(ctx, ctx->lineno,
             "[%.64s]: unknown section (expected [coordinator], [decision_store] or "
             "[participant.<name>])",
             name);
    }
}

static int find_key(const key_desc *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *ctx = user;
    const key_desc *keys = ctx->cur == SEC_COORD   ? coord_keys
                           : ctx->cur == SEC_STORE ? store_keys
                                                   : part_keys;
    size_t nkeys = ctx->cur == SEC_COORD   ? N_COORD_KEYS
                   : ctx->cur == SEC_STORE ? N_STORE_KEYS
                                           : N_PART_KEYS;
    void *obj = ctx->cur == SEC_COORD   ? (void *)ctx->cfg
                : ctx->cur == SEC_STORE ? (void *)&ctx->cfg->store
                                        : (void *)ctx->cur_part;
    char prob[PROBLEM_MAX];

    (void)section; /* ours is tracked by the reader and is never truncated */
    if (ctx->failed || ctx->cur == SEC_BAD)
        return 0;
    if (ctx->cur == SEC_NONE) {
        fail(ctx, ctx->lineno, "%.64s: key outside any section", name);
        return 0;
    }
    int i = find_key(keys, nkeys, name);
    if (i < 0) {
        fail(ctx, ctx->lineno, "[%s] %.64s: unknown key", ctx->cur_name, name);
        return 0;
    }
    int *line = ctx->cur == SEC_COORD   ? &ctx->coord_key_line[i]
                : ctx->cur == SEC_STORE ? &ctx->store_key_line[i]
                                        : &ctx->part[ctx->cur_part - ctx->cfg->participants].key[i];
    if (*line) {
        fail(ctx, ctx->lineno, "[%s] %s: given twice (first at line %d)", ctx->cur_name, name,
             *line);
        return 0;
    }
    *line = ctx->lineno;
    if (set_value(&keys[i], obj, ctx->cfg, value, prob) < 0) {
        fail(ctx, ctx->lineno, "[%s] %s: %s", ctx->cur_name, name, prob);
        return 0;
    }
    return 1;
}

/* Recognizes a section header on a line whose leading blanks are already gone. */
static void scan_section_header(parse_ctx *ctx, const char *line)
{
    const char *end = strchr(line, ']');
    if (!end) {
        fail(ctx, ctx->lineno, "section header without ']'");
        return;
    }
    const char *rest = end + 1 + strspn(end + 1, " \t\r\n");
    if (*rest && *rest != ';' && *rest != '#') {
        fail(ctx, ctx->lineno, "unexpected text after the section header");
        return;
    }
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(end - line - 1), line + 1);
    begin_section(ctx, name);
}

/* Reads one line (with its newline) into str; 1 read, 0 at the end of the file, < 0 with the
 * error set (a NUL byte, which would end the string early and turn the rest of the line into a
 * line of its own - a comment could then set a key - or a line longer than inih's buffer). */
static int read_line(parse_ctx *ctx, char *str, int num)
{
    int ch, n = 0;
    while ((ch = getc(ctx->fp)) != EOF) {
        if (ch == '\0') {
            fail(ctx, ctx->lineno + 1, "NUL byte in the line");
            return -EINVAL;
        }
        if (n == num - 2 && ch != '\n') {
            fail(ctx, ctx->lineno + 1, "line longer than %d characters", num - 2);
            return -ERANGE;
        }
        str[n++] = (char)ch;
        if (ch == '\n')
            break;
    }
    str[n] = '\0';
    return n > 0;
}

/* The line reader for inih: counts lines, drops leading blanks (inih would take an indented line
 * as the continuation of the previous value), sees section headers, and refuses lines inih would
 * split or misread. Returning NULL ends the parse at the first error. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *ctx = stream;
    if (ctx->failed || read_line(ctx, str, num) <= 0)
        return NULL;
    ctx->lineno++;
    size_t len = strlen(str);
    size_t skip = strspn(str, " \t");
    memmove(str, str + skip, len - skip + 1);
    if (str[0] == '[')
        scan_section_header(ctx, str);
    return ctx->failed ? NULL : str;
}

/* ---------------------------------------------------------------------------------------------
 * Whole-file rules.
 */

static bool check_coordinator(parse_ctx *ctx)
{
    config *cfg = ctx->cfg;
    if (!ctx->coord_section_line) {
        fail(ctx, 0, "no [coordinator] section");
        return false;
    }
    for (size_t i = 0; i < N_COORD_KEYS; i++) {
        if (coord_keys[i].required && !ctx->coord_key_line[i]) {
            fail(ctx, ctx->coord_section_line, "[coordinator] %s: is required", coord_keys[i].name);
            return false;
        }
    }
    int max_line = ctx->coord_key_line[find_key(coord_keys, N_COORD_KEYS, "max_timeout_ms")];
    int def_line = ctx->coord_key_line[find_key(coord_keys, N_COORD_KEYS, "default_timeout_ms")];
    if (cfg->max_timeout_ms < cfg->default_timeout_ms) {
        fail(ctx, max_line ? max_line : def_line,
             "[coordinator] %s: max_timeout_ms (%" PRIu32
             ") must be >= default_timeout_ms (%" PRIu32 ")",
             max_line ? "max_timeout_ms" : "default_timeout_ms", cfg->max_timeout_ms,
             cfg->default_timeout_ms);
        return false;
    }
    if (cfg->nparticipants == 0) {
        fail(ctx, 0, "no participant (add a [participant.<name>] section)");
        return false;
    }
    return true;
}

static bool check_driver_keys(parse_ctx *ctx, int idx)
{
    config_participant *p = &ctx->cfg->participants[idx];
    const part_lines *pl = &ctx->part[idx];
    unsigned drv = driver_bit(p->driver);
    if (!drv) {
        fail(ctx, pl->section, "[participant.%s] driver: is required (postgres, mysql or memory)",
             p->name);
        return false;
    }
    for (size_t i = 0; i < N_PART_KEYS; i++) {
        if (pl->key[i] && !(part_keys[i].drivers & drv)) {
            fail(ctx, pl->key[i], "[participant.%s] %s: %s is not a %s key", p->name,
                 part_keys[i].name, part_keys[i].name, driver_label(drv));
            return false;
        }
    }
    if (drv != DRV_MY)
        p->port = 0; /* PostgreSQL takes its port from conninfo */
    static const char *const pg_required[] = {"conninfo", NULL};
    static const char *const my_required[] = {"host", "database", "user", NULL};
    const char *const *req = drv == DRV_PG ? pg_required : drv == DRV_MY ? my_required : NULL;
    for (; req && *req; req++) {
        if (!pl->key[find_key(part_keys, N_PART_KEYS, *req)]) {
            fail(ctx, pl->section, "[participant.%s] %s: is required for driver %s", p->name, *req,
                 p->driver);
            return false;
        }
    }
    return true;
}

static bool check_tls(parse_ctx *ctx, int idx)
{
    config_participant *p = &ctx->cfg->participants[idx];
    const part_lines *pl = &ctx->part[idx];
    int verify_line = pl->key[find_key(part_keys, N_PART_KEYS, "ssl_verify_server_cert")];
    int cert_line = pl->key[find_key(part_keys, N_PART_KEYS, "ssl_cert")];
    int key_line = pl->key[find_key(part_keys, N_PART_KEYS, "ssl_key")];
    const char *what = cert_line ? "ssl_cert" : key_line ? "ssl_key" : "ssl_verify_server_cert";
    int line = cert_line ? cert_line : key_line ? key_line : verify_line;
    if (!p->ssl_ca && line) {
        fail(ctx, line, "[participant.%s] %s: needs ssl_ca (setting ssl_ca turns TLS on)", p->name,
             what);
        return false;
    }
    if (!p->ssl_cert != !p->ssl_key) {
        fail(ctx, line, "[participant.%s] %s: ssl_cert and ssl_key go together", p->name, what);
        return false;
    }
    if (p->ssl_ca && !verify_line)
        p->ssl_verify_server_cert = true;
    return true;
}

/* Only the phase-1 timeout can end a lock cycle that spans two databases (docs/design.md section
 * 3), so every session's own lock wait must give up first. MySQL counts it in whole seconds. */
static bool check_lock_timeout(parse_ctx *ctx, int idx)
{
    config *cfg = ctx->cfg;
    config_participant *p = &cfg->participants[idx];
    int line = ctx->part[idx].key[find_key(part_keys, N_PART_KEYS, "lock_timeout_ms")];
    if (!line)
        p->lock_timeout_ms = cfg->default_timeout_ms / 2;
    uint32_t effective = p->lock_timeout_ms;
    if (driver_bit(p->driver) == DRV_MY)
        effective = (p->lock_timeout_ms + 999) / 1000 * 1000;
    if (effective >= cfg->default_timeout_ms) {
        char rounded[64] = "";
        if (effective != p->lock_timeout_ms)
            snprintf(rounded, sizeof rounded,
                     ", which MySQL rounds up to whole seconds: %" PRIu32 " ms,", effective);
        fail(ctx, line ? line : ctx->part[idx].section,
             "[participant.%s] lock_timeout_ms: %s%" PRIu32 " ms%s must be below "
             "default_timeout_ms (%" PRIu32 "): only the phase-1 timeout may end a lock cycle "
             "across databases",
             p->name, line ? "" : "the default (half of default_timeout_ms), ", p->lock_timeout_ms,
             rounded, cfg->default_timeout_ms);
        return false;
    }
    return true;
}

static void fill_target(config_participant *p)
{
    px_target *t = &p->target;
    memset(t, 0, sizeof *t);
    t->name = p->name;
    t->driver = p->driver;
    t->conninfo = p->conninfo;
    t->host = p->host;
    t->port = p->port;
    t->database = p->database;
    t->user = p->user;
    t->ssl_ca = p->ssl_ca;
    t->ssl_cert = p->ssl_cert;
    t->ssl_key = p->ssl_key;
    t->ssl_verify_server_cert = p->ssl_verify_server_cert;
    t->password = p->password;
    t->connect_timeout_ms = p->connect_timeout_ms;
    t->lock_timeout_ms = p->lock_timeout_ms;
}

/* decision_log = postgres and [decision_store] go together; the lease outlives several renews. */
static bool check_store(parse_ctx *ctx)
{
    config *cfg = ctx->cfg;
    config_store *st = &cfg->store;
    int log_line = ctx->coord_key_line[find_key(coord_keys, N_COORD_KEYS, "decision_log")];
    if (cfg->decision_log == DECISION_LOG_POSTGRES && !cfg->has_store) {
        fail(ctx, log_line,
             "[coordinator] decision_log: postgres needs a [decision_store] section");
        return false;
    }
    if (!cfg->has_store)
        return true;
    if (cfg->decision_log != DECISION_LOG_POSTGRES) {
        fail(ctx, ctx->store_section_line,
             "[decision_store]: used only with decision_log = postgres in [coordinator]");
        return false;
    }
    for (size_t i = 0; i < N_STORE_KEYS; i++) {
        if (store_keys[i].required && !ctx->store_key_line[i]) {
            fail(ctx, ctx->store_section_line, "[decision_store] %s: is required",
                 store_keys[i].name);
            return false;
        }
    }
    if (!st->renew_ms)
        st->renew_ms = st->lease_ms / 4;
    if (st->renew_ms * 2 > st->lease_ms) {
        int line = ctx->store_key_line[find_key(store_keys, N_STORE_KEYS, "renew_ms")];
        fail(ctx, line ? line : ctx->store_section_line,
             "[decision_store] renew_ms: (%" PRIu32 ") must be at most half of lease_ms (%" PRIu32
             "), so that one lost renew does not lose the lease",
             st->renew_ms, st->lease_ms);
        return false;
    }
    st->participant_index = -1;
    if (st->participant) {
        const config_participant *p = config_find_participant(cfg, st->participant);
        int line = ctx->store_key_line[find_key(store_keys, N_STORE_KEYS, "participant")];
        if (!p || strcmp(p->driver, "postgres") != 0) {
            fail(ctx, line, "[decision_store] participant: \"%.32s\" is not a postgres participant",
                 st->participant);
            return false;
        }
        st->participant_index = (int)(p - cfg->participants);
    }
    st->target = (px_target){.name = "decision_store",
                             .driver = "postgres",
                             .conninfo = st->conninfo,
                             .password = st->password,
                             .connect_timeout_ms = st->connect_timeout_ms};
    return true;
}

static bool check_all(parse_ctx *ctx)
{
    if (!check_coordinator(ctx) || !check_store(ctx))
        return false;
    for (int i = 0; i < ctx->cfg->nparticipants; i++) {
        if (!check_driver_keys(ctx, i) || !check_tls(ctx, i) || !check_lock_timeout(ctx, i))
            return false;
        fill_target(&ctx->cfg->participants[i]);
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Public API.
 */

int config_load(const char *path, config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    parse_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    ctx->cfg = cfg;
    ctx->path = path;
    ctx->err = err;
    ctx->errlen = errlen;
    cfg->path = strdup(path);
    apply_defaults(coord_keys, N_COORD_KEYS, cfg, cfg);
    ctx->fp = fopen(path, "re");
    if (!cfg->path || !ctx->fp) {
        fail(ctx, 0, "cannot open: %s", cfg->path ? strerror(errno) : "out of memory");
    } else {
        int r = ini_parse_stream(reader, ctx, on_key, ctx);
        if (r < 0)
            fail(ctx, 0, "out of memory");
        /* inih reports the first line it could not parse; ours may come from a later line. */
        else if (r > 0 && (!ctx->failed || r < ctx->err_line)) {
            ctx->failed = false;
            fail(ctx, r, "syntax error (expected [section], key = value or a comment)");
        } else if (!ctx->failed && ferror(ctx->fp))
            fail(ctx, 0, "read error");
    }
    if (ctx->fp)
        fclose(ctx->fp);
    bool ok = !ctx->failed && check_all(ctx);
    free(ctx);
    if (!ok) {
        config_free(cfg);
        return -EINVAL;
    }
    return 0;
}

static void free_secret(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void config_free(config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->data_dir);
    free(cfg->api_token_file);
    free_secret(&cfg->api_token);
    for (int i = 0; i < cfg->nparticipants; i++) {
        config_participant *p = &cfg->participants[i];
        free(p->driver);
        free(p->conninfo);
        free(p->host);
        free(p->database);
        free(p->user);
        free(p->password_file);
        free_secret(&p->password);
        free(p->ssl_ca);
        free(p->ssl_cert);
        free(p->ssl_key);
    }
    free(cfg->store.conninfo);
    free(cfg->store.participant);
    free(cfg->store.password_file);
    free_secret(&cfg->store.password);
    memset(cfg, 0, sizeof *cfg);
}

const config_participant *config_find_participant(const config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nparticipants; i++)
        if (strcmp(cfg->participants[i].name, name) == 0)
            return &cfg->participants[i];
    return NULL;
}

/* Prints one key, or nothing when an optional string is unset. */
static void dump_key(FILE *out, const key_desc *k, const void *obj, const config *cfg)
{
    const void *field = (const char *)obj + k->off;
    switch (k->kind) {
    case K_STR:
    case K_FILE:
    case K_DRIVER:
    case K_CONNINFO:
    case K_HOST:
        if (*(char *const *)field)
            fprintf(out, "%s = %s\n", k->name, *(char *const *)field);
        break;
    case K_SECRET:
        if (*(char *const *)field)
            fprintf(out, "%s = %s" SECRET_NOTE "\n", k->name, *(char *const *)field);
        break;
    case K_INT:
        fprintf(out, "%s = %d\n", k->name, *(const int *)field);
        break;
    case K_U32:
        fprintf(out, "%s = %" PRIu32 "\n", k->name, *(const uint32_t *)field);
        break;
    case K_I64:
        fprintf(out, "%s = %" PRId64 "\n", k->name, *(const int64_t *)field);
        break;
    case K_SIZE:
        fprintf(out, "%s = %zu\n", k->name, *(const size_t *)field);
        break;
    case K_BOOL:
        fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "true" : "false");
        break;
    case K_NODE_ID:
    case K_LOG_LEVEL:
    case K_LOG_FORMAT:
        fprintf(out, "%s = %s\n", k->name, (const char *)field);
        break;
    case K_DECISION_LOG:
        fprintf(out, "%s = %s\n", k->name,
                *(const decision_log *)field == DECISION_LOG_POSTGRES ? "postgres" : "journal");
        break;
    case K_LISTEN:
        if (strchr(cfg->listen_host, ':'))
            fprintf(out, "%s = [%s]:%d\n", k->name, cfg->listen_host, cfg->listen_port);
        else
            fprintf(out, "%s = %s:%d\n", k->name, cfg->listen_host, cfg->listen_port);
        break;
    }
}

void config_dump(const config *cfg, FILE *out)
{
    fprintf(out, "; effective configuration of %s\n[coordinator]\n", cfg->path);
    for (size_t i = 0; i < N_COORD_KEYS; i++)
        dump_key(out, &coord_keys[i], cfg, cfg);
    if (cfg->has_store) {
        fprintf(out, "\n[decision_store]\n");
        for (size_t i = 0; i < N_STORE_KEYS; i++)
            dump_key(out, &store_keys[i], &cfg->store, cfg);
    }
    for (int i = 0; i < cfg->nparticipants; i++) {
        const config_participant *p = &cfg->participants[i];
        unsigned drv = driver_bit(p->driver);
        fprintf(out, "\n[participant.%s]\n", p->name);
        for (size_t k = 0; k < N_PART_KEYS; k++) {
            if (!(part_keys[k].drivers & drv))
                continue;
            /* Meaningless without TLS, and refused there. */
            if (strcmp(part_keys[k].name, "ssl_verify_server_cert") == 0 && !p->ssl_ca)
                continue;
            dump_key(out, &part_keys[k], p, cfg);
        }
    }
}
