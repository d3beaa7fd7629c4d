/*
 * The xacoord schema (see schema.h): the two dialects, the statements of their DDL, and how
 * errors on its tables read.
 */
#include "schema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Generated from sql/xacoord-*.sql by CMake (schema_sql.c.in). */
extern const char schema_ddl_postgres[];
extern const char schema_ddl_mysql[];

static const schema_dialect dialects[] = {
    {"postgres", schema_ddl_postgres, "sql/xacoord-postgres.sql", "xacoord.marker",
     "xacoord.schema_version", "SELECT coalesce(max(version), 0) FROM xacoord.schema_version",
     "SELECT 1 FROM xacoord.marker LIMIT 0",
     "INSERT INTO xacoord.marker (gtrid, bqual, client_id, digest, coordinator) "
     "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
     "SELECT gtrid, digest FROM xacoord.marker "
     "WHERE client_id = $1 AND bqual = $2 AND coordinator = $3"},
    {"mysql", schema_ddl_mysql, "sql/xacoord-mysql.sql", "xacoord_marker", "xacoord_schema_version",
     "SELECT COALESCE(MAX(version), 0) FROM xacoord_schema_version",
     "SELECT 1 FROM xacoord_marker LIMIT 0",
     /* IGNORE turns only the duplicate key into "no row": the values are the coordinator's
      * own and fit the columns. */
     "INSERT IGNORE INTO xacoord_marker (gtrid, bqual, client_id, digest, coordinator) "
     "VALUES (?, ?, ?, ?, ?)",
     /* as text: binary columns would come back base64-encoded (participant.h) */
     "SELECT CAST(gtrid AS CHAR), CAST(digest AS CHAR) FROM xacoord_marker "
     "WHERE client_id = ? AND bqual = ? AND coordinator = ?"},
};

const schema_dialect *schema_for(const char *driver)
{
    for (size_t i = 0; i < sizeof dialects / sizeof dialects[0]; i++)
        if (driver && strcmp(dialects[i].driver, driver) == 0)
            return &dialects[i];
    return NULL;
}

static bool comment_line(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i + 1 < len && line[i] == '-' && line[i + 1] == '-';
}

static bool ends_statement(const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    return len > 0 && line[len - 1] == ';';
}

static bool blank(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", text[i]))
            return false;
    return true;
}

/* Appends a statement (without its ';' and trailing blanks); false when out of memory. */
static bool push(char ***out, int *n, const char *text, size_t len)
{
    char **grown = realloc(*out, (size_t)(*n + 1) * sizeof *grown);
    if (!grown)
        return false;
    *out = grown;
    while (len > 0 && strchr(" \t\r\n;", text[len - 1]))
        len--;
    if (!(grown[*n] = strndup(text, len)))
        return false;
    (*n)++;
    return true;
}

int schema_statements(const char *ddl, char ***out)
{
    char *cur = malloc(strlen(ddl) + 2); /* every line and a newline after it */
    size_t used = 0;
    int n = 0;
    bool ok = cur != NULL;
    *out = NULL;
    for (const char *line = ddl; ok && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (!comment_line(line, len) && (used > 0 || !blank(line, len))) {
            memcpy(cur + used, line, len);
            used += len;
            cur[used++] = '\n';
            if (ends_statement(line, len)) {
                ok = push(out, &n, cur, used);
                used = 0;
            }
        }
        line += len + (nl != NULL);
    }
    /* A last statement without its ';' still counts: dropping it would hide a broken file. */
    if (ok && !blank(cur, used))
        ok = push(out, &n, cur, used);
    free(cur);
    if (!ok) {
        schema_statements_free(*out, n);
        *out = NULL;
        return -ENOMEM;
    }
    return n;
}

void schema_statements_free(char **stmts, int n)
{
    for (int i = 0; stmts && i < n; i++)
        free(stmts[i]);
    free(stmts);
}

schema_error schema_classify(const px_error *err)
{
    /* PostgreSQL: 42P01 undefined_table, 3F000 invalid_schema_name, 42501 insufficient_privilege.
     * MySQL: 1146 no such table; 1142 table, 1143 column, 1044 database access denied. */
    if (!strcmp(err->sqlstate, "42P01") || !strcmp(err->sqlstate, "3F000") || err->code == 1146)
        return SCHEMA_ERR_MISSING;
    if (!strcmp(err->sqlstate, "42501") || err->code == 1142 || err->code == 1143 ||
        err->code == 1044)
        return SCHEMA_ERR_DENIED;
    return SCHEMA_ERR_OTHER;
}
