/*
 * The statement guard (see guard.h): a lexer just large enough to find a statement's leading
 * keyword and, in the rest, a second statement, a comment the server reads or an open quote. It
 * never needs to understand SQL, only where quotes and comments begin and end - exactly as the
 * server sees them, since a ';' the guard wrongly takes for quoted text would go unnoticed.
 */
#include "guard.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* ---- dialects ---------------------------------------------------------------------------- */

/* The allow-lists: leading keywords, upper case. The memory driver (engine tests, benchmark) has
 * a language of its own (participants/memory.h): PostgreSQL's list and its verbs. */
static const char *const postgres_allowed[] = {"SELECT", "INSERT", "UPDATE", "DELETE",
                                               "WITH",   "VALUES", "TABLE",  NULL};
static const char *const mysql_allowed[] = {"SELECT", "INSERT", "UPDATE",  "DELETE", "WITH",
                                            "VALUES", "TABLE",  "REPLACE", NULL};
static const char *const memory_allowed[] = {"SELECT", "INSERT", "UPDATE", "DELETE",
                                             "WITH",   "VALUES", "TABLE",  "ROWS",
                                             "ERROR",  "SLEEP",  "ECHO",   NULL};

/* Whether a backslash escapes in quotes, under one combination of the server's settings. */
typedef struct quoting {
    bool single; /* in '...' */
    bool dbl;    /* in "..." */
} quoting;

/* PostgreSQL: standard_conforming_strings on, then off. "..." is always an identifier. */
static const quoting postgres_quoting[] = {{false, false}, {true, false}};
/* MySQL: default, ANSI_QUOTES ("..." is an identifier), NO_BACKSLASH_ESCAPES. */
static const quoting mysql_quoting[] = {{true, true}, {true, false}, {false, false}};

typedef struct dialect {
    const char *driver;
    const char *const *allowed;
    bool mysql; /* MySQL's lexical rules; PostgreSQL's otherwise */
    const quoting *quotings;
    size_t nquotings;
} dialect;

static const dialect dialects[] = {
    [GUARD_POSTGRES] = {"postgres", postgres_allowed, false, postgres_quoting, 2},
    [GUARD_MYSQL] = {"mysql", mysql_allowed, true, mysql_quoting, 3},
    [GUARD_MEMORY] = {"memory", memory_allowed, false, postgres_quoting, 2},
};

#define NDIALECTS (sizeof dialects / sizeof dialects[0])

/* ---- characters -------------------------------------------------------------------------- */

static bool ascii_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Both servers take every byte of a multi-byte UTF-8 character as an identifier character. */
static bool ident_start(char c)
{
    unsigned char u = (unsigned char)c;
    return ((u | 0x20) >= 'a' && (u | 0x20) <= 'z') || u == '_' || u >= 0x80;
}

static bool ident_char(char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* The length of the Unicode space encoded at s, or 0. */
static size_t unicode_space(const char *s)
{
    static const char *const spaces[] = {"\u00a0", "\u1680", "\u2000", "\u2001", "\u2002",
                                         "\u2003", "\u2004", "\u2005", "\u2006", "\u2007",
                                         "\u2008", "\u2009", "\u200a", "\u2028", "\u2029",
                                         "\u202f", "\u205f", "\u3000", "\ufeff"};
    if ((unsigned char)*s < 0x80)
        return 0;
    for (size_t i = 0; i < sizeof spaces / sizeof spaces[0]; i++)
        if (strncmp(s, spaces[i], strlen(spaces[i])) == 0)
            return strlen(spaces[i]);
    return 0;
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* ---- the lexer --------------------------------------------------------------------------- */

typedef struct lexer {
    const char *p;
    const dialect *d;
    quoting q;
    guard_verdict verdict; /* why a function returned false */
} lexer;

static bool stop(lexer *l, guard_verdict v)
{
    l->verdict = v;
    return false;
}

/* "--" (on MySQL only before a space, a control character or the end), or MySQL's "#". */
static bool line_comment_at(const lexer *l, const char *p)
{
    if (l->d->mysql && p[0] == '#')
        return true;
    if (p[0] != '-' || p[1] != '-')
        return false;
    return !l->d->mysql || (unsigned char)p[2] <= ' ' || p[2] == 0x7f;
}

static bool comment_at(const lexer *l)
{
    return line_comment_at(l, l->p) || (l->p[0] == '/' && l->p[1] == '*');
}

/* PostgreSQL nests block comments, MySQL does not; a MySQL comment opened by '!', 'M!' or '+' is
 * read by the server. */
static bool skip_block_comment(lexer *l)
{
    const char *p = l->p + 2;
    int depth = 1;
    if (l->d->mysql && (*p == '!' || *p == '+' || (p[0] == 'M' && p[1] == '!')))
        return stop(l, GUARD_SERVER_COMMENT);
    while (depth > 0) {
        if (!*p)
            return stop(l, GUARD_UNTERMINATED);
        if (p[0] == '*' && p[1] == '/') {
            depth--;
            p += 2;
        } else if (!l->d->mysql && p[0] == '/' && p[1] == '*') {
            depth++;
            p += 2;
        } else {
            p++;
        }
    }
    l->p = p;
    return true;
}

/* A line comment ends at a newline: "\n" or "\r" on PostgreSQL, only "\n" on MySQL. */
static bool skip_comment(lexer *l)
{
    if (l->p[0] == '/')
        return skip_block_comment(l);
    l->p += strcspn(l->p, l->d->mysql ? "\n" : "\n\r");
    return true;
}

/* Whitespace (Unicode spaces too) and comments. */
static bool skip_gap(lexer *l)
{
    for (;;) {
        size_t n = ascii_space(*l->p) ? 1 : unicode_space(l->p);
        if (n)
            l->p += n;
        else if (!comment_at(l))
            return true;
        else if (!skip_comment(l))
            return false;
    }
}

/* Quoted text opened by the character at l->p: a doubled quote stands for itself, and with
 * backslash a backslash escapes the next character. */
static bool skip_quoted(lexer *l, bool backslash)
{
    char q = *l->p;
    const char *p = l->p + 1;
    for (;;) {
        if (!*p)
            return stop(l, GUARD_UNTERMINATED);
        if (backslash && p[0] == '\\' && p[1]) {
            p += 2;
        } else if (p[0] == q && p[1] == q) {
            p += 2;
        } else if (p[0] == q) {
            l->p = p + 1;
            return true;
        } else {
            p++;
        }
    }
}

/* PostgreSQL's E'...', whose backslashes always escape. A string continued over whitespace and --
 * comments with a newline ('a'\n'b' is 'ab') keeps them. The guard continues without asking for
 * the newline: where PostgreSQL does not, two strings side by side are a syntax error, and
 * PostgreSQL parses the whole text before it runs any of it. */
static bool skip_escape_string(lexer *l)
{
    do {
        if (!skip_quoted(l, true))
            return false;
        while (ascii_space(*l->p) || line_comment_at(l, l->p))
            l->p += ascii_space(*l->p) ? 1 : strcspn(l->p, "\n\r");
    } while (*l->p == '\'');
    return true;
}

/* A word, as the server reads it: a lone E before a quote opens a PostgreSQL escape string. */
static bool skip_word(lexer *l)
{
    const char *start = l->p;
    while (ident_char(*l->p))
        l->p++;
    if (!l->d->mysql && l->p - start == 1 && upper(*start) == 'E' && *l->p == '\'')
        return skip_escape_string(l);
    return true;
}

/* PostgreSQL's $tag$...$tag$ (tag optional); any other '$' is a parameter's or an error. */
static bool skip_dollar(lexer *l)
{
    const char *open = l->p, *t = open + 1;
    size_t len;
    if (ident_start(*t))
        while (ident_char(*t) && *t != '$')
            t++;
    if (*t != '$') {
        l->p++;
        return true;
    }
    len = (size_t)(t - open) + 1;
    for (const char *c = strchr(t + 1, '$'); c; c = strchr(c + 1, '$'))
        if (strncmp(c, open, len) == 0) {
            l->p = c + len;
            return true;
        }
    return stop(l, GUARD_UNTERMINATED);
}

/* After a ';' only whitespace and comments may follow. */
static bool skip_semicolon(lexer *l)
{
    l->p++;
    if (!skip_gap(l))
        return false;
    return !*l->p || stop(l, GUARD_MULTIPLE);
}

/* One token, or one character of one. */
static bool step(lexer *l)
{
    char c = *l->p;
    if (comment_at(l))
        return skip_comment(l);
    if (c == '\'')
        return skip_quoted(l, l->q.single);
    if (c == '"')
        return skip_quoted(l, l->q.dbl);
    if (c == '`' && l->d->mysql)
        return skip_quoted(l, false);
    if (c == '$' && !l->d->mysql)
        return skip_dollar(l);
    if (c == ';')
        return skip_semicolon(l);
    if (ident_start(c))
        return skip_word(l);
    l->p++;
    return true;
}

/* The text after the keyword, under every quoting the server may use. */
static guard_verdict check_rest(const dialect *d, const char *rest)
{
    for (size_t i = 0; i < d->nquotings; i++) {
        lexer l = {rest, d, d->quotings[i], GUARD_OK};
        while (*l.p)
            if (!step(&l))
                return l.verdict;
    }
    return GUARD_OK;
}

/* ---- the leading keyword ----------------------------------------------------------------- */

/* Skips whitespace, comments and '('; *len is the keyword's length at l->p, 0 when none. */
static bool find_keyword(lexer *l, size_t *len)
{
    for (;;) {
        if (!skip_gap(l))
            return false;
        if (*l->p != '(')
            break;
        l->p++;
    }
    *len = 0;
    if (ident_start(*l->p))
        while (ident_char(l->p[*len]))
            (*len)++;
    return true;
}

static bool allowed(const dialect *d, const char *kw, size_t len)
{
    for (const char *const *a = d->allowed; *a; a++) {
        size_t i = 0;
        while (i < len && (*a)[i] == upper(kw[i]))
            i++;
        if (i == len && !(*a)[i])
            return true;
    }
    return false;
}

/* Upper-cased, cut before a UTF-8 continuation byte so that no character is split. */
static void name_keyword(char *out, size_t outlen, const char *kw, size_t len)
{
    size_t n = len < outlen ? len : outlen - 1;
    while (n > 0 && n < len && ((unsigned char)kw[n] & 0xc0) == 0x80)
        n--;
    for (size_t i = 0; i < n; i++)
        out[i] = upper(kw[i]);
    out[n] = '\0';
}

/* ---- session effects --------------------------------------------------------------------- */

/* Words that may stand before '(' without calling a function: keywords, type names with a
 * length, and pure built-in functions (their result depends only on their arguments or the
 * clock; none touches the session). Anything else before '(' may be a function with session
 * effects - set_config, pg_advisory_lock, GET_LOCK, nextval, a stored function - and so is
 * assumed to have them. */
static const char *const neutral_before_paren[] = {
    /* keywords */
    "ALL", "AND", "ANY", "ARRAY", "AS", "BETWEEN", "BY", "CASE", "CONFLICT", "DISTINCT", "ELSE",
    "END", "EXCEPT", "EXISTS", "FILTER", "FROM", "IN", "INTERSECT", "IS", "JOIN", "LATERAL", "LIKE",
    "LIMIT", "NOT", "OFFSET", "ON", "OR", "OVER", "RETURNING", "ROW", "SELECT", "SET", "SOME",
    "THEN", "UNION", "USING", "VALUE", "VALUES", "WHEN", "WHERE", "WITHIN",
    /* types */
    "BIT", "CHAR", "CHARACTER", "DECIMAL", "DOUBLE", "FLOAT", "INTERVAL", "NUMERIC", "TIME",
    "TIMESTAMP", "VARBINARY", "VARCHAR",
    /* pure built-in functions */
    "ABS", "AVG", "CAST", "CEIL", "CEILING", "CHAR_LENGTH", "COALESCE", "CONCAT", "CONCAT_WS",
    "CONVERT", "COUNT", "CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE", "EXTRACT", "FLOOR", "GREATEST",
    "HEX", "IF", "IFNULL", "LEAST", "LEFT", "LENGTH", "LOWER", "LPAD", "LTRIM", "MAX", "MD5", "MIN",
    "MOD", "NOW", "NULLIF", "POSITION", "POWER", "REPLACE", "RIGHT", "ROUND", "RPAD", "RTRIM",
    "SQRT", "SUBSTR", "SUBSTRING", "SUM", "TRIM", "UNHEX", "UPPER", NULL};

/* Words between INSERT/REPLACE and the target table, whose column list is not a call. */
static const char *const insert_modifiers[] = {"INTO",    "IGNORE",        "LOW_PRIORITY",
                                               "DELAYED", "HIGH_PRIORITY", NULL};

static bool word_in(const char *const *list, const char *w, size_t len)
{
    for (const char *const *a = list; *a; a++) {
        size_t i = 0;
        while (i < len && (*a)[i] == upper(w[i]))
            i++;
        if (i == len && !(*a)[i])
            return true;
    }
    return false;
}

/* Where a scan is in "INSERT [INTO] table (columns)": the column list is not a call. */
enum { TGT_NONE, TGT_EXPECT, TGT_NAME };

typedef struct effects_scan {
    const char *word; /* the last word, while only gaps (and '.' in a name) followed it */
    size_t len;
    int target;
    bool dot; /* the last token was '.', inside a qualified name */
} effects_scan;

static bool is_word(const char *w, size_t len, const char *kw)
{
    return word_in((const char *const[]){kw, NULL}, w, len);
}

/* One word. INSERT/REPLACE open a target; INTO anywhere else is SELECT ... INTO, which makes a
 * table or sets variables. Returns false when the word shows a session effect. */
static bool effects_word(effects_scan *s, const char *w, size_t len)
{
    bool qualified = s->dot;
    s->word = w;
    s->len = len;
    s->dot = false;
    if (s->target == TGT_EXPECT) {
        if (!word_in(insert_modifiers, w, len))
            s->target = TGT_NAME;
        return true;
    }
    if (s->target == TGT_NAME && qualified)
        return true;
    s->target = TGT_NONE;
    if (is_word(w, len, "INSERT") || is_word(w, len, "REPLACE")) {
        s->target = TGT_EXPECT;
        return true;
    }
    return !is_word(w, len, "INTO");
}

/* '(' after a word that is not known to be neutral may call a function with session effects. */
static bool effects_paren(effects_scan *s)
{
    bool ok = !s->word || s->target == TGT_NAME || word_in(neutral_before_paren, s->word, s->len);
    s->target = TGT_NONE;
    return ok;
}

/* Any other token. A quoted name counts as a word no list knows ("set_config"(...) is a call),
 * except as the target of an INSERT. */
static bool step_token(lexer *l, effects_scan *s, const char *start)
{
    bool quoted = *start == '"' || *start == '`' || *start == '\'';
    bool dot = *start == '.';
    if (!step(l))
        return false;
    if (quoted) {
        s->target =
            s->target == TGT_EXPECT || (s->target == TGT_NAME && s->dot) ? TGT_NAME : TGT_NONE;
        s->word = start;
        s->len = (size_t)(l->p - start);
    } else if (!dot) {
        s->word = NULL;
    }
    s->dot = dot;
    return true;
}

/* The text under one quoting; true when nothing in it can change the session. */
static bool neutral_under(const dialect *d, quoting q, const char *sql)
{
    lexer l = {sql, d, q, GUARD_OK};
    effects_scan s = {NULL, 0, TGT_NONE, false};
    while (*l.p) {
        const char *start = l.p;
        if (ascii_space(*l.p) || unicode_space(l.p) || comment_at(&l)) {
            if (!skip_gap(&l))
                return false;
            continue;
        }
        if (ident_start(*l.p)) {
            if (!skip_word(&l))
                return false;
            if (memchr(start, '\'', (size_t)(l.p - start))) /* an E'...' string */
                s.word = NULL;
            else if (!effects_word(&s, start, (size_t)(l.p - start)))
                return false;
            continue;
        }
        if (*l.p == '@') {
            /* @name is a user variable; MySQL's @@name only reads a setting. */
            if (!d->mysql || l.p[1] != '@')
                return false;
            l.p += 2;
            s.word = NULL;
            continue;
        }
        if (*l.p == '(' && !effects_paren(&s))
            return false;
        if (!step_token(&l, &s, start))
            return false;
    }
    return true;
}

bool guard_session_neutral(const char *sql, guard_dialect dl)
{
    const dialect *d = &dialects[dl];
    for (size_t i = 0; i < d->nquotings; i++)
        if (!neutral_under(d, d->quotings[i], sql))
            return false;
    return true;
}

/* ---- read-only statements ----------------------------------------------------------------- */

/* Whether one of words stands in the text as a word (not in a quote or comment), under q. */
static bool has_word_under(const dialect *d, quoting q, const char *sql, const char *const *words)
{
    lexer l = {sql, d, q, GUARD_OK};
    while (*l.p) {
        const char *start = l.p;
        if (ident_start(*l.p)) {
            if (!skip_word(&l))
                return true; /* unsure: as if it did */
            if (word_in(words, start, (size_t)(l.p - start)))
                return true;
            continue;
        }
        if (!step(&l))
            return true;
    }
    return false;
}

/* A reading keyword first and no lasting lock; session neutrality is the caller's part. */
static bool reads_without_locks(const char *sql, guard_dialect dl)
{
    static const char *const reading[] = {"SELECT", "VALUES", "TABLE", NULL};
    /* FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE take locks that must last until the
     * decision; a read-only branch lets go of everything before it. */
    static const char *const locking[] = {"FOR", "LOCK", NULL};
    const dialect *d = &dialects[dl];
    lexer l = {sql, d, d->quotings[0], GUARD_OK};
    size_t len;
    if (!find_keyword(&l, &len) || len == 0 || !word_in(reading, l.p, len))
        return false;
    for (size_t i = 0; i < d->nquotings; i++)
        if (has_word_under(d, d->quotings[i], sql, locking))
            return false;
    return true;
}

bool guard_read_only(const char *sql, guard_dialect dl)
{
    return guard_session_neutral(sql, dl) && reads_without_locks(sql, dl);
}

void guard_classify(const char *sql, guard_dialect dl, bool *session_neutral, bool *read_only)
{
    *session_neutral = guard_session_neutral(sql, dl);
    *read_only = *session_neutral && reads_without_locks(sql, dl);
}

/* ---- interface --------------------------------------------------------------------------- */

/* Case-insensitive search for needle (upper case) in hay. */
static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && upper(hay[i]) == needle[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* The markers of xacoord.marker / xacoord_marker decide what became of a branch whose reply was
 * lost: no client may read or write them. Matching the name anywhere in the text, literals and
 * comments included, is crude and safe; PostgreSQL's U&"..." could spell it without its letters. */
static bool reserved(const dialect *d, const char *sql)
{
    return contains_ci(sql, "XACOORD") ||
           (!d->mysql && (contains_ci(sql, "U&\"") || contains_ci(sql, "U&'")));
}

guard_verdict guard_check(const char *sql, guard_dialect dl, char *keyword, size_t keyword_len)
{
    const dialect *d = &dialects[dl];
    lexer l = {sql, d, d->quotings[0], GUARD_OK};
    size_t len;

    keyword[0] = '\0';
    if (!find_keyword(&l, &len))
        return l.verdict;
    if (len == 0) {
        snprintf(keyword, keyword_len, "%s", *l.p ? "(no keyword)" : "(empty statement)");
        return GUARD_KEYWORD;
    }
    if (!allowed(d, l.p, len)) {
        name_keyword(keyword, keyword_len, l.p, len);
        return GUARD_KEYWORD;
    }
    if (reserved(d, sql))
        return GUARD_RESERVED;
    return check_rest(d, l.p + len);
}

const char *guard_verdict_text(guard_verdict v)
{
    switch (v) {
    case GUARD_OK:
        return "an accepted statement";
    case GUARD_KEYWORD:
        return "a kind of statement that is not accepted";
    case GUARD_MULTIPLE:
        return "more than one statement";
    case GUARD_SERVER_COMMENT:
        return "an executable comment or optimizer hint";
    case GUARD_UNTERMINATED:
        return "an unterminated comment or quote";
    case GUARD_RESERVED:
        return "a reference to the coordinator's own tables (xacoord) or a U& escape";
    }
    return "an unknown verdict";
}

void guard_allowed(guard_dialect d, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = '\0';
    for (const char *const *a = dialects[d].allowed; *a && pos < len; a++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", pos ? ", " : "", *a);
}

int guard_dialect_of(const char *driver, guard_dialect *d)
{
    for (size_t i = 0; i < NDIALECTS; i++)
        if (strcmp(dialects[i].driver, driver) == 0) {
            *d = (guard_dialect)i;
            return 0;
        }
    return -EINVAL;
}
