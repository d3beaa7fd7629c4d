/*
 * Blocking SQL on the participants (sqlc.h), with libpq and MariaDB Connector/C.
 */
#include "sqlc.h"

#include <errno.h>
#include <libpq-fe.h>
#include <mysql.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct drill_db {
    const config *cfg;
    PGconn *pg[CONFIG_MAX_PARTICIPANTS];
    MYSQL *my[CONFIG_MAX_PARTICIPANTS];
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

drill_db *drill_db_new(const config *cfg)
{
    drill_db *db = calloc(1, sizeof *db);
    if (db)
        db->cfg = cfg;
    return db;
}

static void close_one(drill_db *db, int i)
{
    if (db->pg[i])
        PQfinish(db->pg[i]);
    if (db->my[i])
        mysql_close(db->my[i]);
    db->pg[i] = NULL;
    db->my[i] = NULL;
}

void drill_db_free(drill_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->cfg->nparticipants; i++)
        close_one(db, i);
    free(db);
}

/* Appends one row (cells joined by " | ") to out's sample while it has room. */
static void add_row(drill_rows *out, const char *const *cells, int ncells)
{
    size_t len = strlen(out->sample);
    if (out->nrows == 0)
        snprintf(out->first, sizeof out->first, "%.63s", ncells > 0 && cells[0] ? cells[0] : "");
    out->nrows++;
    for (int i = 0; i < ncells && len + 8 < sizeof out->sample; i++) {
        len += (size_t)snprintf(out->sample + len, sizeof out->sample - len, "%s%s",
                                i ? " | " : (len ? "; " : ""), cells[i] ? cells[i] : "NULL");
        if (len >= sizeof out->sample)
            len = sizeof out->sample - 1;
    }
}

/* --- PostgreSQL -------------------------------------------------------------------------- */

static PGconn *pg_open(const config_participant *p, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "password", "connect_timeout", NULL};
    const char *vals[] = {p->conninfo, p->password, "5", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        set_err(err, errlen, "%s: %s", p->name, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int pg_query(PGconn *c, const char *sql, drill_rows *out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        set_err(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return -EIO;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *cells[16];
        int n = PQnfields(r) < 16 ? PQnfields(r) : 16;
        for (int j = 0; j < n; j++)
            cells[j] = PQgetisnull(r, i, j) ? NULL : PQgetvalue(r, i, j);
        add_row(out, cells, n);
    }
    if (st == PGRES_COMMAND_OK)
        out->nrows = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

/* --- MySQL / MariaDB --------------------------------------------------------------------- */

static MYSQL *my_open(const config_participant *p, char *err, size_t errlen)
{
    MYSQL *m = mysql_init(NULL);
    unsigned timeout = 5;
    if (!m)
        return NULL;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (p->ssl_ca) {
        my_bool verify = p->ssl_verify_server_cert;
        mysql_options(m, MYSQL_OPT_SSL_CA, p->ssl_ca);
        if (p->ssl_cert)
            mysql_options(m, MYSQL_OPT_SSL_CERT, p->ssl_cert);
        if (p->ssl_key)
            mysql_options(m, MYSQL_OPT_SSL_KEY, p->ssl_key);
        mysql_options(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    }
    if (!mysql_real_connect(m, p->host, p->user, p->password, p->database, (unsigned)p->port, NULL,
                            0)) {
        set_err(err, errlen, "%s: %s", p->name, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static int my_query(MYSQL *m, const char *sql, drill_rows *out, char *err, size_t errlen)
{
    MYSQL_RES *res;
    MYSQL_ROW row;
    if (mysql_query(m, sql) != 0) {
        set_err(err, errlen, "%s (%u)", mysql_error(m), mysql_errno(m));
        return -EIO;
    }
    res = mysql_store_result(m);
    if (!res) {
        if (mysql_field_count(m) != 0) {
            set_err(err, errlen, "%s (%u)", mysql_error(m), mysql_errno(m));
            return -EIO;
        }
        out->nrows = (long)mysql_affected_rows(m);
        return 0;
    }
    while ((row = mysql_fetch_row(res))) {
        unsigned n = mysql_num_fields(res) < 16 ? mysql_num_fields(res) : 16;
        add_row(out, (const char *const *)row, (int)n);
    }
    mysql_free_result(res);
    return 0;
}

/* --- Dispatch ---------------------------------------------------------------------------- */

/* The participant's index (a lookup), or a negative errno with a message: -ENOENT when the
 * configuration has no such participant, -EINVAL when its driver speaks no SQL. */
static int find(drill_db *db, const char *participant, char *err, size_t errlen)
{
    for (int i = 0; i < db->cfg->nparticipants; i++) {
        const config_participant *p = &db->cfg->participants[i];
        if (strcmp(p->name, participant) != 0)
            continue;
        if (strcmp(p->driver, "postgres") != 0 && strcmp(p->driver, "mysql") != 0) {
            set_err(err, errlen, "participant %s: driver %s has no SQL to ask", participant,
                    p->driver);
            return -EINVAL;
        }
        return i;
    }
    set_err(err, errlen, "participant %s is not in %s", participant, db->cfg->path);
    return -ENOENT;
}

/* One try on the open (or a new) connection: 0, or -EIO (no connection, or the query failed). */
static int attempt(drill_db *db, int i, const char *sql, drill_rows *out, char *err, size_t errlen)
{
    const config_participant *p = &db->cfg->participants[i];
    bool pg = strcmp(p->driver, "postgres") == 0;
    memset(out, 0, sizeof *out);
    if (pg && !db->pg[i] && !(db->pg[i] = pg_open(p, err, errlen)))
        return -EIO;
    if (!pg && !db->my[i] && !(db->my[i] = my_open(p, err, errlen)))
        return -EIO;
    return pg ? pg_query(db->pg[i], sql, out, err, errlen)
              : my_query(db->my[i], sql, out, err, errlen);
}

int drill_db_query(drill_db *db, const char *participant, const char *sql, drill_rows *out,
                   char *err, size_t errlen)
{
    int i = find(db, participant, err, errlen), rc;
    if (i < 0)
        return i;
    if ((rc = attempt(db, i, sql, out, err, errlen)) == 0)
        return 0;
    /* the server may have been restarted under the connection: once more on a new one */
    bool dead = (db->pg[i] && PQstatus(db->pg[i]) != CONNECTION_OK) ||
                (db->my[i] && mysql_ping(db->my[i]) != 0) || (!db->pg[i] && !db->my[i]);
    if (!dead)
        return rc;
    close_one(db, i);
    return attempt(db, i, sql, out, err, errlen);
}

int drill_db_number(drill_db *db, const char *participant, const char *sql, double *out, char *err,
                    size_t errlen)
{
    drill_rows r;
    char *end;
    int rc = drill_db_query(db, participant, sql, &r, err, errlen);
    if (rc != 0)
        return rc;
    *out = strtod(r.first, &end);
    if (r.nrows != 1 || end == r.first || *end) {
        set_err(err, errlen, "expected one row with a number, got %ld row(s): %.80s", r.nrows,
                r.sample);
        return -EINVAL;
    }
    return 0;
}

int drill_db_prepared(drill_db *db, const char *participant, const char *prefix, drill_rows *out,
                      char *err, size_t errlen)
{
    char sql[512];
    drill_rows all;
    int i = find(db, participant, err, errlen), rc;
    if (i < 0)
        return i;
    if (strcmp(db->cfg->participants[i].driver, "postgres") == 0) {
        /* the prefix is a node's gtrid prefix: [a-z0-9.] only, safe to splice */
        snprintf(sql, sizeof sql,
                 "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() "
                 "AND starts_with(gid, '%s') ORDER BY gid",
                 prefix);
        return drill_db_query(db, participant, sql, out, err, errlen);
    }
    /* XA RECOVER: formatID, gtrid_length, bqual_length, data (gtrid then bqual) */
    if ((rc = drill_db_query(db, participant, "SELECT 1", &all, err, errlen)) != 0)
        return rc;
    memset(out, 0, sizeof *out);
    MYSQL *m = db->my[i];
    MYSQL_RES *res;
    MYSQL_ROW row;
    if (mysql_query(m, "XA RECOVER") != 0 || !(res = mysql_store_result(m))) {
        set_err(err, errlen, "XA RECOVER: %s (%u)", mysql_error(m), mysql_errno(m));
        return -EIO;
    }
    while ((row = mysql_fetch_row(res))) {
        unsigned long *len = mysql_fetch_lengths(res);
        long glen = row[1] ? strtol(row[1], NULL, 10) : -1;
        long blen = row[2] ? strtol(row[2], NULL, 10) : -1;
        size_t plen = strlen(prefix), nlen = strlen(participant);
        const char *name = participant;
        if (glen < 0 || blen < 0 || (unsigned long)(glen + blen) > len[3] || (size_t)glen < plen)
            continue;
        if (memcmp(row[3], prefix, plen) != 0 || (size_t)blen != nlen ||
            memcmp(row[3] + glen, name, nlen) != 0)
            continue;
        char gtrid[80];
        snprintf(gtrid, sizeof gtrid, "%.*s", (int)(glen < 79 ? glen : 79), row[3]);
        const char *cell = gtrid;
        add_row(out, &cell, 1);
    }
    mysql_free_result(res);
    return 0;
}
