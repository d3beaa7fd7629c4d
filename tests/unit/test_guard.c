/*
 * The statement guard (coordinator/guard.c): the allow-list of leading keywords per dialect, and
 * the lexing that finds them and a second statement - comments, quotes, Unicode spaces,
 * parentheses - as each server reads them.
 */
#include "testutil.h"

#include "guard.h"

#include <stdio.h>
#include <string.h>

static const guard_dialect dialects[] = {GUARD_POSTGRES, GUARD_MYSQL, GUARD_MEMORY};
#define NDIALECTS (sizeof dialects / sizeof dialects[0])

static const char *dialect_name(guard_dialect d)
{
    return d == GUARD_POSTGRES ? "postgres" : d == GUARD_MYSQL ? "mysql" : "memory";
}

static void allow(guard_dialect d, const char *sql)
{
    char kw[32];
    guard_verdict v = guard_check(sql, d, kw, sizeof kw);
    if (v != GUARD_OK)
        fail_msg("%s refused (%s, \"%s\"): %s", dialect_name(d), guard_verdict_text(v), kw, sql);
}

/* keyword: what the guard must name (GUARD_KEYWORD only). */
static void refuse(guard_dialect d, const char *sql, guard_verdict want, const char *keyword)
{
    char kw[32];
    guard_verdict v = guard_check(sql, d, kw, sizeof kw);
    if (v != want)
        fail_msg("%s: got %s, want %s: %s", dialect_name(d),
                 v == GUARD_OK ? "accepted" : guard_verdict_text(v), guard_verdict_text(want), sql);
    if (strcmp(kw, want == GUARD_KEYWORD ? keyword : "") != 0)
        fail_msg("%s: keyword \"%s\", want \"%s\": %s", dialect_name(d), kw, keyword, sql);
}

static void allow_all(const char *sql)
{
    for (size_t i = 0; i < NDIALECTS; i++)
        allow(dialects[i], sql);
}

static void refuse_all(const char *sql, guard_verdict want, const char *keyword)
{
    for (size_t i = 0; i < NDIALECTS; i++)
        refuse(dialects[i], sql, want, keyword);
}

static void test_allowed_keywords(void **state)
{
    allow_all("SELECT 1");
    allow_all("select * from t where a = $1");
    allow_all("InSeRt INTO t VALUES (1)");
    allow_all("UPDATE t SET a = 1");
    allow_all("delete from t");
    allow_all("WITH x AS (DELETE FROM t RETURNING *) SELECT count(*) FROM x");
    allow_all("VALUES (1), (2)");
    allow_all("TABLE t");
    allow(GUARD_MYSQL, "REPLACE INTO t VALUES (1)");
    refuse(GUARD_POSTGRES, "replace INTO t VALUES (1)", GUARD_KEYWORD, "REPLACE");
    /* The memory driver's own statements (participants/memory.h), on it alone. */
    allow(GUARD_MEMORY, "rows 1");
    allow(GUARD_MEMORY, "error business");
    allow(GUARD_MEMORY, "SLEEP 100");
    allow(GUARD_MEMORY, "echo");
    refuse(GUARD_POSTGRES, "rows 1", GUARD_KEYWORD, "ROWS");
    refuse(GUARD_MYSQL, "sleep 1", GUARD_KEYWORD, "SLEEP");
}

/* Everything that is not on the list, in any case, on every dialect. */
static void test_refused_keywords(void **state)
{
    static const char *const refused[] = {
        "BEGIN",   "START",    "COMMIT",   "END",      "ROLLBACK",   "ABORT",      "SAVEPOINT",
        "RELEASE", "XA",       "PREPARE",  "EXECUTE",  "DEALLOCATE", "COPY",       "SET",
        "RESET",   "SHOW",     "LOCK",     "UNLOCK",   "CALL",       "DO",         "CREATE",
        "ALTER",   "DROP",     "TRUNCATE", "LOAD",     "KILL",       "HANDLER",    "LISTEN",
        "NOTIFY",  "UNLISTEN", "DISCARD",  "VACUUM",   "ANALYZE",    "CHECKPOINT", "GRANT",
        "REVOKE",  "EXPLAIN",  "MERGE",    "FLUSH",    "PURGE",      "CLUSTER",    "REINDEX",
        "COMMENT", "SECURITY", "IMPORT",   "REFRESH",  "FETCH",      "MOVE",       "CLOSE",
        "DECLARE", "USE",      "RENAME",   "OPTIMIZE", "REPAIR",     "INSTALL",    "SHUTDOWN",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char sql[64], lower[32];
        size_t n = strlen(refused[i]);
        for (size_t j = 0; j <= n; j++)
            lower[j] = (char)(refused[i][j] | (refused[i][j] ? 0x20 : 0));
        snprintf(sql, sizeof sql, "%s x", refused[i]);
        refuse_all(sql, GUARD_KEYWORD, refused[i]);
        snprintf(sql, sizeof sql, "%s;", lower);
        refuse_all(sql, GUARD_KEYWORD, refused[i]);
    }
    refuse_all("PREPARE TRANSACTION 'x'", GUARD_KEYWORD, "PREPARE");
    refuse_all("start transaction", GUARD_KEYWORD, "START");
    refuse_all("XA END 'a','b'", GUARD_KEYWORD, "XA");
    refuse_all("CoPy t TO STDOUT", GUARD_KEYWORD, "COPY");
    refuse_all("set session tx_read_only = 1", GUARD_KEYWORD, "SET");
}

/* A keyword ends where an identifier does: SELECTX is not SELECT. */
static void test_keyword_boundary(void **state)
{
    refuse_all("SELECTX 1", GUARD_KEYWORD, "SELECTX");
    refuse_all("SELECT1", GUARD_KEYWORD, "SELECT1");
    refuse_all("select_x", GUARD_KEYWORD, "SELECT_X");
    refuse_all("SELECT$1", GUARD_KEYWORD, "SELECT$1");
    refuse_all("COMMITé", GUARD_KEYWORD, "COMMITé");
    allow_all("SELECT(1)");
    allow_all("SELECT*FROM t");
    allow_all("SELECT\t1");
    allow_all("SELECT\n1");
    allow_all("SELECT'a'");
    allow_all("select-1");
    refuse_all("1", GUARD_KEYWORD, "(no keyword)");
    refuse_all("'SELECT'", GUARD_KEYWORD, "(no keyword)");
    refuse_all("\"SELECT\"", GUARD_KEYWORD, "(no keyword)");
    refuse_all(";", GUARD_KEYWORD, "(no keyword)");
    refuse(GUARD_POSTGRES, "E'x'", GUARD_KEYWORD, "E");
}

static void test_empty(void **state)
{
    refuse_all("", GUARD_KEYWORD, "(empty statement)");
    refuse_all(" \t\r\n\v\f", GUARD_KEYWORD, "(empty statement)");
    refuse_all("-- nothing", GUARD_KEYWORD, "(empty statement)");
    refuse_all("/* nothing */", GUARD_KEYWORD, "(empty statement)");
    refuse_all("((", GUARD_KEYWORD, "(empty statement)");
    refuse_all("()", GUARD_KEYWORD, "(no keyword)");
    refuse(GUARD_MYSQL, "# nothing", GUARD_KEYWORD, "(empty statement)");
}

static void test_parentheses(void **state)
{
    allow_all("((SELECT 1))");
    allow_all("( ( /* c */ SELECT 1) UNION (SELECT 2))");
    allow_all("(VALUES (1))");
    refuse_all("(COMMIT)", GUARD_KEYWORD, "COMMIT");
    refuse_all("((\n-- x\n  rollback))", GUARD_KEYWORD, "ROLLBACK");
}

static void test_line_comments(void **state)
{
    allow_all("-- COMMIT\nSELECT 1");
    allow_all("SELECT 1 -- ; COMMIT");
    allow_all("SELECT 1 --");
    refuse_all("-- SELECT\nCOMMIT", GUARD_KEYWORD, "COMMIT");
    refuse_all("-- SELECT\n;SELECT 1", GUARD_KEYWORD, "(no keyword)");
    /* PostgreSQL ends a line comment at \r too; MySQL only at \n. */
    refuse(GUARD_POSTGRES, "-- SELECT\rCOMMIT", GUARD_KEYWORD, "COMMIT");
    refuse(GUARD_POSTGRES, "SELECT 1 --\r; COMMIT", GUARD_MULTIPLE, NULL);
    allow(GUARD_MYSQL, "-- \rCOMMIT\nSELECT 1");
    allow(GUARD_MYSQL, "SELECT 1 -- \r; COMMIT");
    /* MySQL: '#' comments; "--" only before a space or control character, else two minuses. */
    allow(GUARD_MYSQL, "# COMMIT\nSELECT 1");
    allow(GUARD_MYSQL, "SELECT 1 # ; COMMIT");
    allow(GUARD_MYSQL, "--\tCOMMIT\nSELECT 1");
    refuse(GUARD_MYSQL, "--COMMIT\nSELECT 1", GUARD_KEYWORD, "(no keyword)");
    refuse(GUARD_MYSQL, "SELECT 1 --1; COMMIT", GUARD_MULTIPLE, NULL);
    allow(GUARD_POSTGRES, "SELECT 1 --1; COMMIT");
    refuse(GUARD_POSTGRES, "# x\nSELECT 1", GUARD_KEYWORD, "(no keyword)");
    refuse(GUARD_POSTGRES, "SELECT 1 # x; COMMIT", GUARD_MULTIPLE, NULL);
}

static void test_block_comments(void **state)
{
    allow_all("/* COMMIT */ SELECT 1");
    allow_all("/**/SELECT/**/1");
    allow_all("SELECT 1 /* ; COMMIT */");
    allow_all("SELECT /* ' */ 1");
    refuse_all("/* SELECT */ COMMIT", GUARD_KEYWORD, "COMMIT");
    refuse_all("/* SELECT 1", GUARD_UNTERMINATED, NULL);
    refuse_all("SELECT 1 /* ;", GUARD_UNTERMINATED, NULL);
    refuse_all("SELECT 1 /*/", GUARD_UNTERMINATED, NULL);
    /* Nested on PostgreSQL, not on MySQL. */
    allow(GUARD_POSTGRES, "/* /* */ COMMIT */ SELECT 1");
    refuse(GUARD_MYSQL, "/* /* */ COMMIT */ SELECT 1", GUARD_KEYWORD, "COMMIT");
    allow(GUARD_POSTGRES, "SELECT 1 /* /* */ ; COMMIT */");
    refuse(GUARD_MYSQL, "SELECT 1 /* /* */ ; COMMIT */", GUARD_MULTIPLE, NULL);
    refuse(GUARD_POSTGRES, "/* /* */ SELECT 1", GUARD_UNTERMINATED, NULL);
    allow(GUARD_MYSQL, "/* /* */ SELECT 1");
}

/* MySQL runs the content of executable comments and parses optimizer hints itself. */
static void test_mysql_server_comments(void **state)
{
    refuse(GUARD_MYSQL, "/*!50000 COMMIT */ SELECT 1", GUARD_SERVER_COMMENT, NULL);
    refuse(GUARD_MYSQL, "SELECT 1 /*! ; COMMIT */", GUARD_SERVER_COMMENT, NULL);
    refuse(GUARD_MYSQL, "SELECT 1 /*M!100000 , 2 */", GUARD_SERVER_COMMENT, NULL);
    refuse(GUARD_MYSQL, "SELECT /*+ BKA(t) */ * FROM t", GUARD_SERVER_COMMENT, NULL);
    refuse(GUARD_MYSQL, "(/*!COMMIT*/", GUARD_SERVER_COMMENT, NULL);
    allow(GUARD_MYSQL, "SELECT '/*!', \"/*+\", `/*M!`");
    allow(GUARD_MYSQL, "SELECT 1 -- /*!\n");
    allow(GUARD_MYSQL, "SELECT 1 /* /*! */");
    allow(GUARD_POSTGRES, "/*+ SeqScan(t) */ SELECT 1 /*! x */");
}

static void test_quotes(void **state)
{
    allow_all("SELECT ';'");
    allow_all("SELECT 'COMMIT; ROLLBACK'");
    allow_all("SELECT 'it''s; fine'");
    allow_all("SELECT \"a;b\" FROM t");
    allow_all("SELECT \"a\"\";\" FROM t");
    allow_all("SELECT '-- /*' ; ");
    allow_all("SELECT 'C:\\dir'");
    allow_all("SELECT 'a\\\\'");
    refuse_all("SELECT 'abc", GUARD_UNTERMINATED, NULL);
    refuse_all("SELECT 'it''", GUARD_UNTERMINATED, NULL);
    refuse_all("SELECT \"abc", GUARD_UNTERMINATED, NULL);
    refuse_all("SELECT 'a'; 'b'", GUARD_MULTIPLE, NULL);
    allow(GUARD_MYSQL, "SELECT `a;b`, `x``;` FROM t");
    refuse(GUARD_MYSQL, "SELECT `abc", GUARD_UNTERMINATED, NULL);
    refuse(GUARD_POSTGRES, "SELECT `a;b`", GUARD_MULTIPLE, NULL);
}

/* A backslash before a quote escapes it or not, depending on session settings the guard cannot
 * see: every reading must pass. */
static void test_backslash_readings(void **state)
{
    /* Where a backslash does not escape (standard_conforming_strings, NO_BACKSLASH_ESCAPES), the
     * string ends at a\' and a COMMIT follows. */
    refuse_all("SELECT 'a\\'; COMMIT; --'", GUARD_MULTIPLE, NULL);
    /* Where it does, \' is a quote and the next ' ends the string; without escapes, '' would
     * have kept it open. */
    refuse_all("SELECT 'a\\''; COMMIT; --'", GUARD_MULTIPLE, NULL);
    /* MySQL with and without ANSI_QUOTES. */
    refuse(GUARD_MYSQL, "SELECT \"a\\\"; COMMIT; --\"", GUARD_MULTIPLE, NULL);
    allow(GUARD_POSTGRES, "SELECT \"a\\\" FROM t");
    /* PostgreSQL's E'...' always escapes, also where a string continues on the next line. */
    allow(GUARD_POSTGRES, "SELECT E'it\\'s; fine'");
    allow(GUARD_POSTGRES, "SELECT e'a'\n  -- more\n'\\'; fine'");
    refuse(GUARD_POSTGRES, "SELECT somee'\\'; COMMIT; --'", GUARD_MULTIPLE, NULL);
    refuse(GUARD_MYSQL, "SELECT E'it\\'s; fine'", GUARD_MULTIPLE, NULL);
}

static void test_dollar_quotes(void **state)
{
    allow(GUARD_POSTGRES, "SELECT $$;COMMIT$$");
    allow(GUARD_POSTGRES, "SELECT $tag$ $$ ; $tag$, $t2$'$t2$");
    allow(GUARD_POSTGRES, "SELECT $a$ $b$ ; $a$");
    allow(GUARD_POSTGRES, "SELECT $1, $2 FROM t");
    refuse(GUARD_POSTGRES, "SELECT $$ x", GUARD_UNTERMINATED, NULL);
    refuse(GUARD_POSTGRES, "SELECT $a$ x $A$", GUARD_UNTERMINATED, NULL);
    refuse(GUARD_POSTGRES, "SELECT $1; COMMIT", GUARD_MULTIPLE, NULL);
    refuse(GUARD_POSTGRES, "SELECT a$$b; COMMIT $$", GUARD_MULTIPLE, NULL);
    refuse(GUARD_MYSQL, "SELECT $$;COMMIT$$", GUARD_MULTIPLE, NULL);
}

static void test_multiple_statements(void **state)
{
    allow_all("SELECT 1;");
    allow_all("SELECT 1 ; \n -- done\n /* really */ ");
    refuse_all("SELECT 1; SELECT 2", GUARD_MULTIPLE, NULL);
    refuse_all("UPDATE t SET a = 1;COMMIT", GUARD_MULTIPLE, NULL);
    refuse_all("SELECT 1;;", GUARD_MULTIPLE, NULL);
    refuse_all("SELECT 1; /* x", GUARD_UNTERMINATED, NULL);
    refuse_all("INSERT INTO t VALUES (';'); DELETE FROM t", GUARD_MULTIPLE, NULL);
}

/* Unicode spaces before the keyword are skipped, so the keyword behind them is judged. */
static void test_unicode_spaces(void **state)
{
    static const char *const spaces[] = {"\u00a0", "\u1680", "\u2000", "\u2001", "\u2002",
                                         "\u2003", "\u2004", "\u2005", "\u2006", "\u2007",
                                         "\u2008", "\u2009", "\u200a", "\u2028", "\u2029",
                                         "\u202f", "\u205f", "\u3000", "\ufeff"};
    for (size_t i = 0; i < sizeof spaces / sizeof spaces[0]; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "%sCOPY t TO STDOUT", spaces[i]);
        refuse_all(sql, GUARD_KEYWORD, "COPY");
        snprintf(sql, sizeof sql, "%s(%scommit)", spaces[i], spaces[i]);
        refuse_all(sql, GUARD_KEYWORD, "COMMIT");
        snprintf(sql, sizeof sql, "%sSELECT 1;%s", spaces[i], spaces[i]);
        allow_all(sql);
        snprintf(sql, sizeof sql, "%s", spaces[i]);
        refuse_all(sql, GUARD_KEYWORD, "(empty statement)");
    }
    refuse_all("\ufeff\u00a0\u3000-- x\n\u2028BEGIN", GUARD_KEYWORD, "BEGIN");
    /* After the keyword the servers read them as identifier characters, and so does the guard. */
    refuse_all("SELECT\u00a01", GUARD_KEYWORD, "SELECT\u00a01");
    refuse_all("SELECT 1;\u00a0COMMIT", GUARD_MULTIPLE, NULL);
    /* Other characters beyond ASCII are no spaces. */
    refuse_all("\u200bSELECT 1", GUARD_KEYWORD, "\u200bSELECT");
}

/* The keyword is named upper-cased and cut to the buffer without splitting a character. */
static void test_keyword_name(void **state)
{
    char kw[8];
    assert_int_equal(guard_check("rollBack", GUARD_POSTGRES, kw, sizeof kw), GUARD_KEYWORD);
    assert_string_equal(kw, "ROLLBAC");
    assert_int_equal(guard_check("ab\u00e9c", GUARD_MYSQL, kw, 5), GUARD_KEYWORD);
    assert_string_equal(kw, "AB\u00e9");
    assert_int_equal(guard_check("ab\u00e9c", GUARD_MYSQL, kw, 4), GUARD_KEYWORD);
    assert_string_equal(kw, "AB");
    assert_int_equal(guard_check("", GUARD_MYSQL, kw, 4), GUARD_KEYWORD);
    assert_string_equal(kw, "(em");
    assert_int_equal(guard_check("SELECT 1", GUARD_MYSQL, kw, 1), GUARD_OK);
    assert_string_equal(kw, "");
}

static void test_allowed_lists(void **state)
{
    char buf[128];
    guard_dialect d;
    guard_allowed(GUARD_POSTGRES, buf, sizeof buf);
    assert_string_equal(buf, "SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE");
    guard_allowed(GUARD_MYSQL, buf, sizeof buf);
    assert_string_equal(buf, "SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE, REPLACE");
    guard_allowed(GUARD_MEMORY, buf, sizeof buf);
    assert_string_equal(
        buf, "SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE, ROWS, ERROR, SLEEP, ECHO");
    guard_allowed(GUARD_MYSQL, buf, 10);
    assert_string_equal(buf, "SELECT, I");
    assert_int_equal(guard_dialect_of("postgres", &d), 0);
    assert_int_equal(d, GUARD_POSTGRES);
    assert_int_equal(guard_dialect_of("mysql", &d), 0);
    assert_int_equal(d, GUARD_MYSQL);
    assert_int_equal(guard_dialect_of("memory", &d), 0);
    assert_int_equal(d, GUARD_MEMORY);
    assert_int_equal(guard_dialect_of("sqlite", &d), -EINVAL);
}

/* Statements that provably leave the session alone skip the reset; anything that may call a
 * function with session effects, use a user variable or SELECT ... INTO does not. */
static void test_session_neutral(void **state)
{
    static const char *const neutral_pg[] = {
        "UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1",
        "INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)",
        "INSERT INTO public.payment (order_id) VALUES ($1) ON CONFLICT (order_id) DO NOTHING",
        "INSERT INTO \"Pay\" (a) VALUES (1)",
        "SELECT count(*), max(a) FROM t WHERE a IN (1, 2) AND EXISTS (SELECT 1)",
        "SELECT $1::numeric(12,2), CAST($2 AS varchar(10)), coalesce(a, 0) FROM t",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SELECT 'set_config(' AS s, E'GET_LOCK(\\'' AS e -- set_config(\n",
        "TABLE t",
        "rows 1",
        NULL};
    static const char *const effects_pg[] = {
        "SELECT set_config('search_path', 'pg_catalog', false)",
        "SELECT pg_advisory_lock(42)",
        "SELECT nextval('s')",
        "SELECT \"set_config\"('a', 'b', false)",
        "SELECT U&\"set_config\"('a', 'b', false)",
        "SELECT pg_catalog.set_config('a', 'b', false)",
        "SELECT * INTO TEMP t2 FROM t",
        "INSERT INTO t SELECT f(a) FROM u",
        "INSERT INTO t (a) SELECT f(1)",
        "WITH x(a) AS (SELECT 1) SELECT * FROM x",
        "UPDATE t SET a = f (1)",
        NULL};
    static const char *const neutral_my[] = {
        "UPDATE orders SET status = 'P' WHERE id = ? AND status = 'I'",
        "INSERT IGNORE INTO shipment(order_id, sku) VALUES (?, ?)",
        "REPLACE INTO `t` (a) VALUES (?)",
        "INSERT t (a) VALUES (?) ON DUPLICATE KEY UPDATE a = VALUES(a)",
        "SELECT @@session.tx_read_only, unhex('ff'), concat(a, 'x')",
        NULL};
    static const char *const effects_my[] = {"SELECT @x := 5",
                                             "SELECT GET_LOCK('k', 0)",
                                             "SELECT a INTO @v FROM t",
                                             "SELECT `GET_LOCK`('k', 0)",
                                             "SELECT LAST_INSERT_ID(5)",
                                             "SELECT a FROM t WHERE b = @x",
                                             NULL};
    for (const char *const *p = neutral_pg; *p; p++)
        if (!guard_session_neutral(*p, GUARD_POSTGRES))
            fail_msg("should be neutral on PostgreSQL: %s", *p);
    for (const char *const *p = effects_pg; *p; p++)
        if (guard_session_neutral(*p, GUARD_POSTGRES))
            fail_msg("may change the session on PostgreSQL: %s", *p);
    for (const char *const *p = neutral_my; *p; p++)
        if (!guard_session_neutral(*p, GUARD_MYSQL))
            fail_msg("should be neutral on MySQL: %s", *p);
    for (const char *const *p = effects_my; *p; p++)
        if (guard_session_neutral(*p, GUARD_MYSQL))
            fail_msg("may change the session on MySQL: %s", *p);
}

/* The coordinator's markers decide lost replies: no client statement may name them. */
static void test_reserved_names(void **state)
{
    char kw[32];
    assert_int_equal(guard_check("DELETE FROM xacoord.marker", GUARD_POSTGRES, kw, sizeof kw),
                     GUARD_RESERVED);
    assert_int_equal(guard_check("SELECT * FROM \"XaCoord\".marker", GUARD_POSTGRES, kw, sizeof kw),
                     GUARD_RESERVED);
    assert_int_equal(
        guard_check("INSERT INTO xacoord_marker VALUES ('a','b')", GUARD_MYSQL, kw, sizeof kw),
        GUARD_RESERVED);
    assert_int_equal(
        guard_check("SELECT * FROM U&\"\\0078acoord\".marker", GUARD_POSTGRES, kw, sizeof kw),
        GUARD_RESERVED);
    assert_int_equal(guard_check("SELECT 1 FROM t", GUARD_POSTGRES, kw, sizeof kw), GUARD_OK);
}

static void test_read_only(void **state)
{
    static const char *const ro[] = {"SELECT a FROM t WHERE id = $1",
                                     "VALUES (1, 2)",
                                     "TABLE t",
                                     "(SELECT count(*) FROM t)",
                                     "SELECT 'for update' AS s",
                                     NULL};
    static const char *const rw[] = {"SELECT a FROM t FOR UPDATE",
                                     "SELECT a FROM t FOR SHARE",
                                     "SELECT a FROM t LOCK IN SHARE MODE",
                                     "SELECT nextval('s')",
                                     "SELECT * INTO t2 FROM t",
                                     "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
                                     "UPDATE t SET a = 1",
                                     "INSERT INTO t VALUES (1)",
                                     NULL};
    for (const char *const *p = ro; *p; p++)
        if (!guard_read_only(*p, GUARD_POSTGRES) || !guard_read_only(*p, GUARD_MYSQL))
            fail_msg("should be read-only: %s", *p);
    for (const char *const *p = rw; *p; p++)
        if (guard_read_only(*p, GUARD_POSTGRES) || guard_read_only(*p, GUARD_MYSQL))
            fail_msg("is not read-only: %s", *p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_reserved_names),
        cmocka_unit_test(test_session_neutral),
        cmocka_unit_test(test_allowed_keywords),
        cmocka_unit_test(test_refused_keywords),
        cmocka_unit_test(test_keyword_boundary),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_parentheses),
        cmocka_unit_test(test_line_comments),
        cmocka_unit_test(test_block_comments),
        cmocka_unit_test(test_mysql_server_comments),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_backslash_readings),
        cmocka_unit_test(test_dollar_quotes),
        cmocka_unit_test(test_multiple_statements),
        cmocka_unit_test(test_unicode_spaces),
        cmocka_unit_test(test_keyword_name),
        cmocka_unit_test(test_allowed_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
