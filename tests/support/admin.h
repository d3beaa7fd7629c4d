/*
 * SQL run as a server's administrator (tu_admin_sql on database xatest) where the test cannot go
 * on without it: each call fails the test when the client does.
 */
#ifndef XA_ADMIN_H
#define XA_ADMIN_H

/* which: "payment" (PostgreSQL), "order" or "warehouse" (MariaDB). Returns the client's output
 * (malloc'ed, trimmed). */
char *adm_sql(const char *which, const char *sql);
/* The same, output discarded. */
void adm_run(const char *which, const char *sql);
/* Fails the test unless the output is exactly want (the message names the query and both). */
void adm_expect(const char *which, const char *sql, const char *want);

#endif
