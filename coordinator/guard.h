/*
 * The statement guard: decides, before anything runs, whether a client's statement may run inside
 * a branch. A branch is a transaction the coordinator owns; a statement that ends, replaces or
 * escapes it (COMMIT, ROLLBACK, BEGIN, PREPARE TRANSACTION, XA ...), changes the session for later
 * transactions (SET, LISTEN, PREPARE) or leaves the connection in a state the driver does not
 * expect (COPY) breaks the protocol - PostgreSQL runs a client's COMMIT, and the driver's PREPARE
 * TRANSACTION then prepares nothing. Such statements are many, differ by server and version, and
 * new ones appear, so the guard keeps an allow-list: the statement's leading keyword must be on its
 * dialect's list, everything else is refused. To accept another kind of statement, add its keyword
 * (upper case) to the dialect's table in guard.c; error messages list the table, so they follow.
 *
 * The leading keyword comes after whitespace, comments and opening parentheses and ends where the
 * server's identifier ends (SELECTX is not SELECT). Unicode spaces (U+00A0, U+1680, U+2000-U+200A,
 * U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF) are skipped like ASCII whitespace before it and
 * after a final ';', so "\u00a0COPY" is refused and named as COPY. The servers themselves read
 * these characters as part of an identifier, so such a statement would fail there anyway; after
 * the keyword the guard reads them as the servers do.
 *
 * One entry of "statements" holds one statement: anything but whitespace and comments after a ';'
 * is refused. The drivers' protocols (PostgreSQL's extended protocol, MySQL prepared statements)
 * refuse several statements too; the guard does not rely on them. To find a ';' outside quotes and
 * comments it lexes like the server: '' and "" doubling; on PostgreSQL nested block comments,
 * E'...' strings and $tag$ quotes; on MySQL # comments, "--" comments only before a space or
 * control character, backquotes and unnested block comments. Whether a backslash escapes depends
 * on settings the guard cannot see (standard_conforming_strings, NO_BACKSLASH_ESCAPES,
 * ANSI_QUOTES), so the text is lexed under each and every reading must pass. An unterminated
 * comment or quote is refused. So is, on MySQL, any comment the server reads: executable comments
 * (opened by a slash, a star and '!', or 'M!' on MariaDB), whose content runs, and optimizer hints
 * (slash, star, '+'), which MySQL lexes by other rules. Text is UTF-8, the drivers' encoding.
 *
 * The guard judges the kind of statement, not what it touches: a SELECT may call functions
 * (set_config, pg_advisory_lock, GET_LOCK, pg_terminate_backend), and MySQL's SELECT ... INTO
 * OUTFILE writes files; those are left to the database's privileges and the pool's session reset.
 * WITH is allowed: inside it the servers accept only SELECT, INSERT, UPDATE, DELETE (and MERGE on
 * PostgreSQL), so a WITH cannot hide transaction control.
 */
#ifndef XA_GUARD_H
#define XA_GUARD_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum guard_dialect {
    GUARD_POSTGRES,
    GUARD_MYSQL, /* MySQL and MariaDB */
    /* The in-memory test driver: lexed like PostgreSQL; its allow-list is PostgreSQL's plus the
     * driver's own statements (ROWS, ERROR, SLEEP, ECHO; see participants/memory.h). */
    GUARD_MEMORY,
} guard_dialect;

typedef enum guard_verdict {
    GUARD_OK = 0,
    GUARD_KEYWORD,        /* the leading keyword is not allowed, or there is none */
    GUARD_MULTIPLE,       /* something follows a ';' */
    GUARD_SERVER_COMMENT, /* MySQL: an executable comment or an optimizer hint */
    GUARD_UNTERMINATED,   /* a comment or quote runs to the end of the text */
    GUARD_RESERVED,       /* names the coordinator's own objects ("xacoord" anywhere, any case),
                             or - PostgreSQL - spells a name with U& escapes that could hide it */
} guard_verdict;

/* Judges one statement. On GUARD_KEYWORD, keyword (keyword_len >= 1) receives the leading keyword
 * as written, upper-cased and cut at a character boundary to fit, or "(empty statement)" or
 * "(no keyword)"; on any other verdict it receives "". */
guard_verdict guard_check(const char *sql, guard_dialect d, char *keyword, size_t keyword_len);

/* Whether the statement provably leaves the database session as it found it: it calls no
 * function outside a short list of keywords, type names and pure built-ins (an unknown name
 * before '(' may be set_config, pg_advisory_lock, GET_LOCK, nextval or a stored function), uses
 * no user variable (@name) and is no SELECT ... INTO. Conservative: false whenever unsure, under
 * every quoting the server may use. A connection whose transaction ran only neutral statements
 * skips the session reset (docs/design.md). Call it on a statement guard_check accepted. */
bool guard_session_neutral(const char *sql, guard_dialect d);

/* Whether the statement only reads: it starts with SELECT, VALUES or TABLE, is session-neutral
 * (so it calls no function that could write) and takes no lock that must last (no FOR UPDATE /
 * FOR SHARE / LOCK IN SHARE MODE: no word FOR or LOCK at all). A branch of such statements is
 * finished at prepare time and takes no part in phase 2 (docs/design.md). */
bool guard_read_only(const char *sql, guard_dialect d);

/* Both of the above, lexing for session effects once (request parsing). */
void guard_classify(const char *sql, guard_dialect d, bool *session_neutral, bool *read_only);

/* A verdict as a noun phrase ("more than one statement"), for error messages. */
const char *guard_verdict_text(guard_verdict v);

/* The dialect's allowed keywords, comma-separated, into buf (len >= 1). */
void guard_allowed(guard_dialect d, char *buf, size_t len);

/* The dialect of a participant driver ("postgres", "mysql", "memory"): 0, or -EINVAL when
 * unknown. */
XA_MUST_CHECK int guard_dialect_of(const char *driver, guard_dialect *d);

#endif
