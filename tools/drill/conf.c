/*
 * The drill file's parser (conf.h). Its own small INI reader rather than inih: values are SQL and
 * JSON paths that run long and continue on indented lines, keys repeat on purpose (one "term" or
 * setup statement per line), and inih's shared library caps lines at 200 bytes and reports a
 * continuation like a repeated key.
 */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SEC_NONE, SEC_DRILL, SEC_FAULTS, SEC_SETUP, SEC_TEMPLATE, SEC_INVARIANT, SEC_SUM, SEC_DB };

typedef struct parser {
    drill_conf *c;
    const char *path;
    int line, section;
    char section_name[80];
    char *err;
    size_t errlen;
} parser;

__attribute__((format(printf, 2, 3))) static int fail(parser *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->section != SEC_NONE)
        snprintf(p->err, p->errlen, "%s:%d: [%s] %s", p->path, p->line, p->section_name, msg);
    else
        snprintf(p->err, p->errlen, "%s:%d: %s", p->path, p->line, msg);
    return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- Values ---------------------------------------------------------------------------- */

char *drill_expand(const char *s, char *err, size_t errlen)
{
    size_t cap = strlen(s) + 64, len = 0;
    char *out = malloc(cap);
    while (out && *s) {
        const char *add = s, *end;
        size_t n = 1;
        char name[128];
        /* ${UPPER_CASE} is the environment's; ${lower} a template parameter, left alone */
        if (s[0] == '$' && s[1] == '{' && (isupper((unsigned char)s[2]) || s[2] == '_')) {
            const char *def = NULL, *val;
            end = strchr(s + 2, '}');
            if (!end) {
                set_err(err, errlen, "unterminated ${ in \"%.60s\"", s);
                free(out);
                return NULL;
            }
            n = (size_t)(end - s - 2);
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, s + 2, n);
            name[n] = '\0';
            char *colon = strstr(name, ":-");
            if (colon) {
                *colon = '\0';
                def = colon + 2;
            }
            val = getenv(name);
            if (!val || (!*val && def))
                val = def;
            if (!val) {
                set_err(err, errlen, "environment variable %s is not set (use ${%s:-default})",
                        name, name);
                free(out);
                return NULL;
            }
            add = val;
            n = strlen(val);
            s = end + 1;
        } else {
            s++;
        }
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(out);
                return NULL;
            }
            out = bigger;
        }
        memcpy(out + len, add, n);
        len += n;
    }
    if (out)
        out[len] = '\0';
    return out;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

int drill_query_parse(const char *s, drill_query *q, char *err, size_t errlen)
{
    const char *colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : 0;
    memset(q, 0, sizeof *q);
    if (!colon || n == 0 || n > 32) {
        set_err(err, errlen, "expected \"participant: SQL\", got \"%.60s\"", s);
        return -EINVAL;
    }
    memcpy(q->participant, s, n);
    if (!valid_name(q->participant)) {
        set_err(err, errlen, "participant name \"%s\" is not 1-32 chars of [a-z0-9_]",
                q->participant);
        return -EINVAL;
    }
    for (s = colon + 1; isspace((unsigned char)*s); s++)
        ;
    if (!*s) {
        set_err(err, errlen, "no SQL after \"%s:\"", q->participant);
        return -EINVAL;
    }
    q->sql = strdup(s);
    return q->sql ? 0 : -ENOMEM;
}

static bool parse_ll(const char *s, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return end != s && errno == 0 && (*end == '\0' || isspace((unsigned char)*end));
}

static bool parse_num(const char *s, double lo, double hi, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    return end != s && *end == '\0' && errno == 0 && *v >= lo && *v <= hi;
}

static bool choice_word(const char *w)
{
    if (!*w || strlen(w) > 64)
        return false;
    for (; *w; w++)
        if (!(isalnum((unsigned char)*w) || strchr("_.:-", *w)))
            return false;
    return true;
}

/* Splits s at whitespace into at most max words (copied into buf): their count, or -E2BIG. */
static int words(const char *s, char *buf, size_t buflen, char **w, int max)
{
    int n = 0;
    snprintf(buf, buflen, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return -E2BIG;
        w[n++] = t;
    }
    return n;
}

int drill_param_parse(const char *name, const char *s, drill_param *p, char *err, size_t errlen)
{
    char buf[1024], *w[DRILL_MAX_CHOICES + 2];
    int n = words(s, buf, sizeof buf, w, DRILL_MAX_CHOICES + 1);
    memset(p, 0, sizeof *p);
    if (!valid_name(name)) {
        set_err(err, errlen, "parameter name \"%.40s\" is not 1-32 chars of [a-z0-9_]", name);
        return -EINVAL;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    if (n >= 3 && n <= 3 && strcmp(w[0], "range") == 0) {
        p->kind = PARAM_RANGE;
        if (!parse_ll(w[1], &p->lo) || !parse_ll(w[2], &p->hi) || p->lo > p->hi) {
            set_err(err, errlen, "param.%s: \"range LO HI\" needs integers with LO <= HI", name);
            return -EINVAL;
        }
        return 0;
    }
    if (n == 2 && strcmp(w[0], "seq") == 0) {
        p->kind = PARAM_SEQ;
        if (!parse_ll(w[1], &p->lo) || p->lo < 0 || p->lo > (1LL << 53)) {
            set_err(err, errlen, "param.%s: \"seq START\" needs an integer 0..2^53", name);
            return -EINVAL;
        }
        return 0;
    }
    if (n >= 2 && n <= DRILL_MAX_CHOICES + 1 && strcmp(w[0], "choice") == 0) {
        p->kind = PARAM_CHOICE;
        for (int i = 1; i < n; i++) {
            if (!choice_word(w[i])) {
                set_err(err, errlen,
                        "param.%s: choice \"%.40s\" must be 1-64 chars of [A-Za-z0-9_.:-]", name,
                        w[i]);
                return -EINVAL;
            }
            p->choices[p->nchoices++] = strdup(w[i]);
        }
        return 0;
    }
    set_err(err, errlen,
            "param.%s: expected \"range LO HI\", \"seq START\" or \"choice A B ...\" (at most %d "
            "choices), got \"%.60s\"",
            name, DRILL_MAX_CHOICES, s);
    return -EINVAL;
}

/* --- Keys ------------------------------------------------------------------------------- */

static char *resolve_path(parser *p, const char *v)
{
    char *out = NULL;
    if (v[0] == '/' || !p->c->dir)
        return strdup(v);
    if (asprintf(&out, "%s/%s", p->c->dir, v) < 0)
        return NULL;
    return out;
}

static int set_num(parser *p, const char *key, const char *v, double lo, double hi, double *out)
{
    if (!parse_num(v, lo, hi, out))
        return fail(p, "%s: expected a number %g..%g, got \"%.40s\"", key, lo, hi, v);
    return 0;
}

static int set_int(parser *p, const char *key, const char *v, int lo, int hi, int *out)
{
    double d;
    if (set_num(p, key, v, lo, hi, &d) != 0)
        return -EINVAL;
    if (d != (int)d)
        return fail(p, "%s: expected a whole number, got \"%.40s\"", key, v);
    *out = (int)d;
    return 0;
}

/* The numeric keys of [drill]: name, range, and where the value goes. */
typedef enum { NUM_REAL, NUM_INT, NUM_UNSIGNED } number_type;

typedef struct number_key {
    const char *name;
    double lo, hi;
    number_type type;
    size_t offset;
} number_key;

static const number_key drill_numbers[] = {
    {"duration_s", 1, 86400, NUM_REAL, offsetof(drill_conf, duration_s)},
    {"ready_timeout_s", 1, 3600, NUM_REAL, offsetof(drill_conf, ready_timeout_s)},
    {"settle_timeout_s", 1, 3600, NUM_REAL, offsetof(drill_conf, settle_timeout_s)},
    {"clients", 1, 256, NUM_INT, offsetof(drill_conf, clients)},
    {"max_attempts", 1, 1000000, NUM_INT, offsetof(drill_conf, max_attempts)},
    {"retries", 0, 1000, NUM_INT, offsetof(drill_conf, retries)},
    {"seed", 0, 4294967295.0, NUM_UNSIGNED, offsetof(drill_conf, seed)},
};

static int drill_key(parser *p, const char *k, const char *v)
{
    drill_conf *c = p->c;
    if (strcmp(k, "config") == 0) {
        free(c->config);
        c->config = resolve_path(p, v);
        return 0;
    }
    if (strcmp(k, "xacoord") == 0) {
        free(c->xacoord);
        c->xacoord = strchr(v, '/') ? resolve_path(p, v) : strdup(v);
        return 0;
    }
    for (size_t i = 0; i < sizeof drill_numbers / sizeof drill_numbers[0]; i++) {
        const number_key *n = &drill_numbers[i];
        void *field = (char *)c + n->offset;
        double d;
        if (strcmp(k, n->name) != 0)
            continue;
        if (set_num(p, k, v, n->lo, n->hi, &d) != 0)
            return -EINVAL;
        if (n->type != NUM_REAL && d != (double)(long long)d)
            return fail(p, "%s: expected a whole number, got \"%.40s\"", k, v);
        if (n->type == NUM_REAL)
            *(double *)field = d;
        else if (n->type == NUM_INT)
            *(int *)field = (int)d;
        else
            *(unsigned *)field = (unsigned)d;
        return 0;
    }
    return fail(p, "%s: unknown key", k);
}

static int faults_key(parser *p, const char *k, const char *v)
{
    drill_conf *c = p->c;
    if (strcmp(k, "kill_interval_s") == 0) {
        char buf[128], *w[3];
        int n = words(v, buf, sizeof buf, w, 2);
        if (n < 1 || !parse_num(w[0], 0.1, 86400, &c->kill_min_s) ||
            !parse_num(n == 2 ? w[1] : w[0], c->kill_min_s, 86400, &c->kill_max_s))
            return fail(p, "%s: expected \"MIN MAX\" seconds (0.1 <= MIN <= MAX), got \"%.40s\"", k,
                        v);
        return 0;
    }
    if (strcmp(k, "crash_points") == 0) {
        char buf[1024], *w[DRILL_MAX_ITEMS];
        int n = words(v, buf, sizeof buf, w, DRILL_MAX_ITEMS);
        if (n <= 0)
            return fail(p, "%s: expected 1-%d names of crash points", k, DRILL_MAX_ITEMS);
        for (int i = 0; i < n; i++) {
            if (!choice_word(w[i]))
                return fail(p, "%s: \"%.40s\" is not a crash point name", k, w[i]);
            c->crash_points[c->ncrash_points++] = strdup(w[i]);
            if (c->ncrash_points == DRILL_MAX_ITEMS)
                break;
        }
        return 0;
    }
    if (strcmp(k, "crash_skip_max") == 0)
        return set_int(p, k, v, 0, 100000, &c->crash_skip_max);
    return fail(p, "%s: unknown key", k);
}

static int query_key(parser *p, const char *k, const char *v, drill_query *q)
{
    char msg[256];
    if (drill_query_parse(v, q, msg, sizeof msg) != 0)
        return fail(p, "%s: %s", k, msg);
    return 0;
}

/* "participant = SQL": the key names the participant. */
static int setup_key(parser *p, const char *k, const char *v, drill_query *q)
{
    char *joined = NULL;
    int rc;
    if (asprintf(&joined, "%s: %s", k, v) < 0)
        return fail(p, "out of memory");
    rc = query_key(p, k, joined, q);
    free(joined);
    return rc;
}

static int template_key(parser *p, const char *k, const char *v)
{
    drill_template *t = &p->c->templates[p->c->ntemplates - 1];
    char msg[256];
    if (strcmp(k, "file") == 0) {
        free(t->file);
        t->file = resolve_path(p, v);
        return 0;
    }
    if (strcmp(k, "weight") == 0)
        return set_int(p, k, v, 1, 1000, &t->weight);
    if (strncmp(k, "param.", 6) == 0) {
        for (int i = 0; i < t->nparams; i++)
            if (strcmp(t->params[i].name, k + 6) == 0)
                return fail(p, "%s: given twice", k);
        if (t->nparams == DRILL_MAX_PARAMS)
            return fail(p, "%s: more than %d parameters", k, DRILL_MAX_PARAMS);
        if (drill_param_parse(k + 6, v, &t->params[t->nparams], msg, sizeof msg) != 0)
            return fail(p, "%s", msg);
        t->nparams++;
        return 0;
    }
    if (strcmp(k, "verify") == 0 || strcmp(k, "verify_committed") == 0) {
        if (t->has_verify)
            return fail(p, "%s: only one of verify and verify_committed", k);
        t->has_verify = true;
        t->verify_exact = strcmp(k, "verify") == 0;
        return query_key(p, k, v, &t->verify);
    }
    return fail(p, "%s: unknown key", k);
}

static int sum_key(parser *p, const char *k, const char *v)
{
    drill_sum *s = &p->c->sums[p->c->nsums - 1];
    if (strcmp(k, "term") == 0) {
        if (s->nterms == DRILL_MAX_PARAMS)
            return fail(p, "term: more than %d terms", DRILL_MAX_PARAMS);
        return query_key(p, k, v, &s->terms[s->nterms++]);
    }
    if (strcmp(k, "check") == 0) {
        if (strcmp(v, "equal") == 0)
            s->mode = SUM_EQUAL;
        else if (strcmp(v, "constant") == 0)
            s->mode = SUM_CONSTANT;
        else
            return fail(p, "check: expected \"equal\" or \"constant\", got \"%.40s\"", v);
        return 0;
    }
    return fail(p, "%s: unknown key", k);
}

static int db_key(parser *p, const char *k, const char *v)
{
    drill_dbfault *f = &p->c->dbfaults[p->c->ndbfaults - 1];
    if (strcmp(k, "kill") == 0 || strcmp(k, "restart") == 0) {
        char **dst = k[0] == 'k' ? &f->kill_cmd : &f->restart_cmd;
        free(*dst);
        *dst = strdup(v);
        return 0;
    }
    if (strcmp(k, "at_s") == 0)
        return set_num(p, k, v, 0, 86400, &f->at_s);
    if (strcmp(k, "down_s") == 0)
        return set_num(p, k, v, 0, 3600, &f->down_s);
    return fail(p, "%s: unknown key", k);
}

static int on_key(parser *p, const char *k, const char *raw)
{
    char msg[256];
    char *v = drill_expand(raw, msg, sizeof msg);
    int rc;
    if (!v)
        return fail(p, "%s: %s", k, msg);
    if (!*v) {
        free(v);
        return fail(p, "%s: empty value", k);
    }
    switch (p->section) {
    case SEC_DRILL:
        rc = drill_key(p, k, v);
        break;
    case SEC_FAULTS:
        rc = faults_key(p, k, v);
        break;
    case SEC_SETUP:
        if (p->c->nsetup == DRILL_MAX_ITEMS)
            rc = fail(p, "more than %d statements", DRILL_MAX_ITEMS);
        else
            rc = setup_key(p, k, v, &p->c->setup[p->c->nsetup++]);
        break;
    case SEC_TEMPLATE:
        rc = template_key(p, k, v);
        break;
    case SEC_INVARIANT:
        if (strcmp(k, "check") != 0)
            rc = fail(p, "%s: unknown key (an invariant has \"check = participant: SQL\")", k);
        else
            rc = query_key(p, k, v, &p->c->invariants[p->c->ninvariants - 1].q);
        break;
    case SEC_SUM:
        rc = sum_key(p, k, v);
        break;
    case SEC_DB:
        rc = db_key(p, k, v);
        break;
    default:
        rc = fail(p, "%s: key outside any section", k);
    }
    free(v);
    return rc;
}

/* --- Sections --------------------------------------------------------------------------- */

typedef struct section_kind {
    const char *prefix;
    int kind;
    bool named;
} section_kind;

static const section_kind sections[] = {
    {"drill", SEC_DRILL, false},         {"faults", SEC_FAULTS, false},
    {"setup", SEC_SETUP, false},         {"template.", SEC_TEMPLATE, true},
    {"invariant.", SEC_INVARIANT, true}, {"sum.", SEC_SUM, true},
    {"database.", SEC_DB, true},
};

/* The name of the i-th named section of a kind, and the count of that kind. */
static char *item_name(drill_conf *c, int kind, int i)
{
    switch (kind) {
    case SEC_TEMPLATE:
        return c->templates[i].name;
    case SEC_INVARIANT:
        return c->invariants[i].name;
    case SEC_SUM:
        return c->sums[i].name;
    default:
        return c->dbfaults[i].name;
    }
}

static int *item_count(drill_conf *c, int kind)
{
    switch (kind) {
    case SEC_TEMPLATE:
        return &c->ntemplates;
    case SEC_INVARIANT:
        return &c->ninvariants;
    case SEC_SUM:
        return &c->nsums;
    default:
        return &c->ndbfaults;
    }
}

static int new_item(parser *p, int kind, const char *prefix, const char *sub)
{
    drill_conf *c = p->c;
    int *count = item_count(c, kind);
    if (!valid_name(sub))
        return fail(p, "the name after \"%s\" must be 1-32 chars of [a-z0-9_]", prefix);
    for (int j = 0; j < *count; j++)
        if (strcmp(item_name(c, kind, j), sub) == 0)
            return fail(p, "given twice");
    if (*count == DRILL_MAX_ITEMS)
        return fail(p, "more than %d sections of this kind", DRILL_MAX_ITEMS);
    strcpy(item_name(c, kind, *count), sub);
    if (kind == SEC_TEMPLATE)
        c->templates[*count].weight = 1;
    (*count)++;
    return 0;
}

static int on_section(parser *p, const char *name)
{
    snprintf(p->section_name, sizeof p->section_name, "%s", name);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        const section_kind *s = &sections[i];
        size_t n = strlen(s->prefix);
        if (s->named ? strncmp(name, s->prefix, n) != 0 : strcmp(name, s->prefix) != 0)
            continue;
        p->section = s->kind;
        return s->named ? new_item(p, s->kind, s->prefix, name + n) : 0;
    }
    p->section = SEC_NONE;
    return fail(p,
                "unknown section [%.40s] (drill, faults, setup, template.NAME, "
                "invariant.NAME, sum.NAME, database.NAME)",
                name);
}

static char *trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* --- Whole file ------------------------------------------------------------------------- */

int drill_read_file(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    size_t len = 0;
    char *text = NULL;
    FILE *mem;
    char buf[4096];
    size_t n;
    if (!f) {
        int rc = -errno;
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    mem = open_memstream(&text, &len);
    while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(f);
    if (!mem || fclose(mem) != 0) {
        set_err(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    if (strlen(text) != len) {
        set_err(err, errlen, "%s: NUL byte in the file", path);
        free(text);
        return -EINVAL;
    }
    *out = text;
    return 0;
}

/* A key's value continues on the following lines that start with whitespace (joined with one
 * space); whole lines starting with ';' or '#' are comments. */
static int parse_lines(parser *p, char *text)
{
    char *key = NULL, *val = NULL;
    int key_line = 0, rc = 0;
    for (char *line = text, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        p->line++;
        bool cont = line[0] == ' ' || line[0] == '\t';
        char *t = trim(line);
        if (*t == ';' || *t == '#' || (!*t && !cont))
            continue;
        if (cont && key && *t) {
            char *joined = NULL;
            if (asprintf(&joined, "%s %s", val, t) < 0)
                return fail(p, "out of memory");
            free(val);
            val = joined;
            continue;
        }
        if (key) {
            int here = p->line;
            p->line = key_line;
            rc = on_key(p, key, val);
            p->line = here;
            free(key);
            free(val);
            key = val = NULL;
            if (rc)
                break;
        }
        if (!*t)
            continue;
        if (*t == '[') {
            char *end = strchr(t, ']');
            if (!end || end[1])
                return fail(p, "a section header is \"[name]\"");
            *end = '\0';
            rc = on_section(p, trim(t + 1));
            continue;
        }
        char *eq = strchr(t, '=');
        if (!eq)
            return fail(p, "expected \"key = value\"");
        *eq = '\0';
        key = strdup(trim(t));
        val = strdup(trim(eq + 1));
        key_line = p->line;
        if (!*key)
            rc = fail(p, "empty key");
    }
    if (key && rc == 0) {
        p->line = key_line;
        rc = on_key(p, key, val);
    }
    free(key);
    free(val);
    return rc;
}

static int check_whole(parser *p)
{
    drill_conf *c = p->c;
    char msg[256];
    p->section = SEC_NONE;
    p->line = 0;
    if (!c->config)
        return fail(p, "[drill] config: required (the coordinator's configuration file)");
    if (c->ntemplates == 0)
        return fail(p, "at least one [template.NAME] is required");
    for (int i = 0; i < c->ntemplates; i++) {
        drill_template *t = &c->templates[i];
        if (!t->file)
            return fail(p, "[template.%s] file: required", t->name);
        if (drill_read_file(t->file, &t->body, msg, sizeof msg) != 0)
            return fail(p, "[template.%s] file: %s", t->name, msg);
    }
    for (int i = 0; i < c->ninvariants; i++)
        if (!c->invariants[i].q.sql)
            return fail(p, "[invariant.%s] check: required", c->invariants[i].name);
    for (int i = 0; i < c->nsums; i++)
        if (c->sums[i].nterms < (c->sums[i].mode == SUM_EQUAL ? 2 : 1))
            return fail(p, "[sum.%s]: check = equal needs two terms or more, constant one",
                        c->sums[i].name);
    for (int i = 0; i < c->ndbfaults; i++)
        if (!c->dbfaults[i].kill_cmd || !c->dbfaults[i].restart_cmd)
            return fail(p, "[database.%s]: kill and restart are required", c->dbfaults[i].name);
    return 0;
}

int drill_conf_parse(const char *path, const char *text, drill_conf *c, char *err, size_t errlen)
{
    parser p = {.c = c, .path = path, .err = err, .errlen = errlen};
    char *copy = strdup(text), *pc = strdup(path);
    int rc;
    memset(c, 0, sizeof *c);
    c->path = strdup(path);
    c->dir = pc ? strdup(dirname(pc)) : NULL;
    free(pc);
    c->xacoord = strdup("xacoord");
    c->duration_s = 20;
    c->clients = 4;
    c->seed = 1;
    c->max_attempts = 5000;
    c->retries = 40;
    c->ready_timeout_s = 30;
    c->settle_timeout_s = 60;
    rc = copy ? parse_lines(&p, copy) : -ENOMEM;
    free(copy);
    if (rc == 0)
        rc = check_whole(&p);
    if (rc != 0)
        drill_conf_free(c);
    return rc;
}

int drill_conf_load(const char *path, drill_conf *c, char *err, size_t errlen)
{
    char *text = NULL;
    int rc;
    memset(c, 0, sizeof *c);
    if ((rc = drill_read_file(path, &text, err, errlen)) != 0)
        return rc;
    rc = drill_conf_parse(path, text, c, err, errlen);
    free(text);
    return rc;
}

void drill_conf_free(drill_conf *c)
{
    free(c->path);
    free(c->dir);
    free(c->config);
    free(c->xacoord);
    for (int i = 0; i < c->ncrash_points; i++)
        free(c->crash_points[i]);
    for (int i = 0; i < c->nsetup; i++)
        free(c->setup[i].sql);
    for (int i = 0; i < c->ntemplates; i++) {
        drill_template *t = &c->templates[i];
        free(t->file);
        free(t->body);
        free(t->verify.sql);
        for (int j = 0; j < t->nparams; j++)
            for (int k = 0; k < t->params[j].nchoices; k++)
                free(t->params[j].choices[k]);
    }
    for (int i = 0; i < c->ninvariants; i++)
        free(c->invariants[i].q.sql);
    for (int i = 0; i < c->nsums; i++)
        for (int j = 0; j < c->sums[i].nterms; j++)
            free(c->sums[i].terms[j].sql);
    for (int i = 0; i < c->ndbfaults; i++) {
        free(c->dbfaults[i].kill_cmd);
        free(c->dbfaults[i].restart_cmd);
    }
    memset(c, 0, sizeof *c);
}
