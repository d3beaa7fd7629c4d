/*
 * Administrator SQL that the test needs (admin.h).
 */
#include "admin.h"

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *adm_sql(const char *which, const char *sql)
{
    char *out = tu_admin_sql(which, "xatest", sql);
    if (!out)
        fail_msg("admin SQL failed on %s: %s", which, sql);
    return out;
}

void adm_run(const char *which, const char *sql)
{
    free(adm_sql(which, sql));
}

void adm_expect(const char *which, const char *sql, const char *want)
{
    char *out = adm_sql(which, sql);
    if (strcmp(out, want) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s -> '%s', expected '%s'", sql, out, want);
        free(out);
        fail_msg("%s", msg);
    }
    free(out);
}
