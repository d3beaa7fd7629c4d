/*
 * The drill's report (report.h).
 */
#include "report.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct spread {
    double min, median, max;
} spread;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static spread spread_of(const double *v, int n)
{
    spread s = {0, 0, 0};
    double sorted[DRILL_MAX_RECOVERIES];
    if (n <= 0)
        return s;
    memcpy(sorted, v, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), cmp_double);
    s.min = sorted[0];
    s.median = sorted[n / 2];
    s.max = sorted[n - 1];
    return s;
}

static int failures(const drill_result *r)
{
    int n = 0;
    for (int i = 0; i < r->nchecks; i++)
        n += !r->checks[i].ok;
    return n;
}

static void tally_row(FILE *out, const drill_tally *t)
{
    fprintf(out, "  %-20s %9d %9d %9d %9d %10d %9d\n", t->name, t->attempted, t->committed,
            t->aborted, t->retryable, t->unanswered, t->unanswered_committed);
}

void drill_report_table(const drill_result *r, FILE *out)
{
    drill_tally all = {.name = "all"};
    spread rec = spread_of(r->recovery_s, r->nrecoveries);
    fprintf(out, "xacoord-drill: %.0f s, %d clients, seed %u\n\n", r->duration_s, r->clients,
            r->seed);
    fprintf(out, "  %-20s %9s %9s %9s %9s %10s %9s\n", "transactions", "attempted", "committed",
            "aborted", "transient", "unanswered", "then ok");
    for (int i = 0; i < r->ntallies; i++) {
        const drill_tally *t = &r->tallies[i];
        tally_row(out, t);
        all.attempted += t->attempted;
        all.committed += t->committed;
        all.aborted += t->aborted;
        all.retryable += t->retryable;
        all.unanswered += t->unanswered;
        all.unanswered_committed += t->unanswered_committed;
    }
    if (r->ntallies > 1)
        tally_row(out, &all);
    fprintf(out, "  (transient: aborted, still retryable after the last try; then ok: unanswered,\n"
                 "  and committed by GET afterwards)\n\n");
    fprintf(out,
            "  faults: %d kill -9 of the coordinator, %d crash-point deaths, %d database "
            "restart(s)\n",
            r->kills, r->crash_deaths, r->db_faults);
    fprintf(out, "  recovery: %d start(s), ready after %.2f s min / %.2f s median / %.2f s max",
            r->starts, rec.min, rec.median, rec.max);
    if (r->settle_s >= 0)
        fprintf(out, "; nothing in doubt %.2f s after the last start\n\n", r->settle_s);
    else
        fprintf(out, "; still in doubt at the end\n\n");
    fprintf(out, "  %-4s  %-46s %s\n", "", "check", "result");
    for (int i = 0; i < r->nchecks; i++) {
        const drill_check *k = &r->checks[i];
        fprintf(out, "  %-4s  %-46s %s\n", k->ok ? "ok" : "FAIL", k->name, k->detail);
    }
    int f = failures(r);
    if (f)
        fprintf(out, "\nresult: FAIL (%d of %d checks failed)\n", f, r->nchecks);
    else
        fprintf(out, "\nresult: ok (%d checks)\n", r->nchecks);
}

void drill_report_json(const drill_result *r, FILE *out)
{
    json_t *root = json_object(), *tx = json_array(), *checks = json_array();
    json_t *rec = json_array();
    char *text;
    for (int i = 0; i < r->ntallies; i++) {
        const drill_tally *t = &r->tallies[i];
        json_array_append_new(
            tx, json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i}", "template", t->name, "attempted",
                          t->attempted, "committed", t->committed, "aborted", t->aborted,
                          "aborted_retryable", t->retryable, "unanswered", t->unanswered,
                          "unanswered_committed", t->unanswered_committed));
    }
    for (int i = 0; i < r->nchecks; i++)
        json_array_append_new(checks, json_pack("{s:s, s:b, s:s}", "check", r->checks[i].name, "ok",
                                                r->checks[i].ok, "detail", r->checks[i].detail));
    for (int i = 0; i < r->nrecoveries; i++)
        json_array_append_new(rec, json_real(r->recovery_s[i]));
    json_object_set_new(root, "duration_s", json_real(r->duration_s));
    json_object_set_new(root, "clients", json_integer(r->clients));
    json_object_set_new(root, "seed", json_integer(r->seed));
    json_object_set_new(root, "transactions", tx);
    json_object_set_new(root, "faults",
                        json_pack("{s:i, s:i, s:i}", "kills", r->kills, "crash_point_deaths",
                                  r->crash_deaths, "database_restarts", r->db_faults));
    json_object_set_new(root, "starts", json_integer(r->starts));
    json_object_set_new(root, "recovery_s", rec);
    json_object_set_new(root, "settle_s", r->settle_s >= 0 ? json_real(r->settle_s) : json_null());
    json_object_set_new(root, "checks", checks);
    json_object_set_new(root, "ok", json_boolean(failures(r) == 0));
    text = json_dumps(root, JSON_INDENT(2));
    fprintf(out, "%s\n", text ? text : "{}");
    free(text);
    json_decref(root);
}
