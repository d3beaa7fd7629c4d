/*
 * xacoord-drill's parsing: the drill file (sections, keys, continuation lines, environment
 * variables, errors naming file, line and key), parameters, template substitution, the workload's
 * draws, and the JSON report.
 */
#include "conf.h"
#include "report.h"
#include "workload.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpl_path[64];
static char drill_path[128];

static int make_template(void **state)
{
    FILE *f;
    int fd;
    snprintf(tmpl_path, sizeof tmpl_path, "/tmp/test-drill-XXXXXX");
    fd = mkstemp(tmpl_path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs("{\"branches\": [{\"participant\": \"payment\", \"statements\": [{\"sql\": "
          "\"UPDATE t SET v = v - $1 WHERE k = $2 AND note = 'o${order}'\", "
          "\"params\": [\"${n}\", \"${sku}\"]}]}]}",
          f);
    fclose(f);
    /* the drill file "lives" in /tmp, so relative paths resolve there */
    snprintf(drill_path, sizeof drill_path, "/tmp/drill.ini");
    return 0;
}

static int remove_template(void **state)
{
    unlink(tmpl_path);
    return 0;
}

static const char *base_text(void)
{
    static char text[2048];
    snprintf(text, sizeof text,
             "; a comment\n"
             "[drill]\nconfig = xacoord.ini\nduration_s = 7\nclients = 3\n"
             "[setup]\npayment = DELETE FROM t\n    WHERE k > 5\n"
             "[template.pay]\nfile = %s\nweight = 2\nparam.n = range 1 9\n"
             "param.sku = choice A-1 B_2\nparam.order = seq 100\n"
             "verify = payment: SELECT count(*) FROM t WHERE k = ${order}\n"
             "[invariant.pos]\ncheck = payment: SELECT k FROM t WHERE v < 0\n"
             "[sum.money]\ncheck = constant\nterm = payment: SELECT sum(v) FROM t\n"
             "[faults]\nkill_interval_s = 2 4\ncrash_points = a-b c\ncrash_skip_max = 5\n"
             "[database.order]\nkill = echo k\nrestart = echo r\nat_s = 3\n",
             tmpl_path);
    return text;
}

static void test_conf_whole(void **state)
{
    drill_conf c;
    char err[512];
    assert_int_equal(drill_conf_parse(drill_path, base_text(), &c, err, sizeof err), 0);
    assert_string_equal(c.config, "/tmp/xacoord.ini");
    assert_string_equal(c.xacoord, "xacoord");
    assert_true(c.duration_s == 7);
    assert_int_equal(c.clients, 3);
    assert_int_equal(c.nsetup, 1);
    assert_string_equal(c.setup[0].participant, "payment");
    assert_string_equal(c.setup[0].sql, "DELETE FROM t WHERE k > 5"); /* continuation joined */
    assert_int_equal(c.ntemplates, 1);
    assert_int_equal(c.templates[0].weight, 2);
    assert_int_equal(c.templates[0].nparams, 3);
    assert_int_equal(c.templates[0].params[0].kind, PARAM_RANGE);
    assert_int_equal(c.templates[0].params[1].nchoices, 2);
    assert_int_equal(c.templates[0].params[2].kind, PARAM_SEQ);
    assert_true(c.templates[0].verify_exact);
    assert_non_null(strstr(c.templates[0].verify.sql, "${order}")); /* a parameter, not env */
    assert_int_equal(c.ninvariants, 1);
    assert_int_equal(c.sums[0].mode, SUM_CONSTANT);
    assert_true(c.kill_min_s == 2 && c.kill_max_s == 4);
    assert_int_equal(c.ncrash_points, 2);
    assert_string_equal(c.crash_points[1], "c");
    assert_int_equal(c.crash_skip_max, 5);
    assert_int_equal(c.ndbfaults, 1);
    assert_true(c.dbfaults[0].at_s == 3);
    drill_conf_free(&c);
}

/* Parses base_text() with one line replaced (or added at the end); expects an error with want. */
static void expect_error(const char *from, const char *to, const char *want)
{
    drill_conf c;
    char err[512], text[4096];
    const char *base = base_text(), *at = from ? strstr(base, from) : NULL;
    if (from)
        assert_non_null(at);
    if (at)
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    else
        snprintf(text, sizeof text, "%s%s", base, to);
    err[0] = '\0';
    assert_int_equal(drill_conf_parse(drill_path, text, &c, err, sizeof err), -EINVAL);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

/* A line of base_text() replaced (or, from NULL, one added at the end) and what the error must
 * say. */
static const struct {
    const char *from, *to, *want;
} bad_files[] = {
    {"clients = 3", "clients = many", "/tmp/drill.ini:5: [drill] clients: expected"},
    {"clients = 3", "colour = red", "[drill] colour: unknown key"},
    {NULL, "[nonsense]\n", "unknown section [nonsense]"},
    {NULL, "[template.pay]\n", "[template.pay] given twice"},
    {NULL, "[template.Bad]\n", "must be 1-32 chars"},
    {"param.n = range 1 9", "param.n = range 9 1", "LO <= HI"},
    {"param.n = range 1 9", "param.n = between 1 9", "expected \"range LO HI\""},
    {"param.sku = choice A-1 B_2", "param.sku = choice A'1", "must be 1-64 chars"},
    {"verify = payment:", "verify = payment", "expected \"participant: SQL\""},
    {"config = xacoord.ini", "config = ${DRILL_TEST_UNSET}", "DRILL_TEST_UNSET is not set"},
    {"config = xacoord.ini\n", "", "[drill] config: required"},
    {"check = constant", "check = sometimes", "expected \"equal\" or \"constant\""},
    {"check = constant", "check = equal", "equal needs two terms"},
    {"restart = echo r\n", "", "[database.order]: kill and restart are required"},
    {"kill_interval_s = 2 4", "kill_interval_s = 4 2", "MIN MAX"},
    {"[invariant.pos]\ncheck", "[invariant.pos]\nsql", "[invariant.pos] sql: unknown"},
    {NULL, "[template.two]\nweight = 1\n", "[template.two] file: required"},
    {NULL, "[template.two]\nfile = /nonexistent/t.json\n", "/nonexistent/t.json"},
    {NULL, "nokey\n", "expected \"key = value\""},
    {"config = xacoord.ini", "config =", "[drill] config: empty value"},
    {"config = xacoord.ini", "config = ${DRILL_TEST_EMPTY}", "config: empty value"},
};

static void test_conf_errors(void **state)
{
    setenv("DRILL_TEST_EMPTY", "", 1);
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++)
        expect_error(bad_files[i].from, bad_files[i].to, bad_files[i].want);
}

static void test_expand(void **state)
{
    char err[256], *s;
    setenv("DRILL_TEST_PORT", "5432", 1);
    unsetenv("DRILL_TEST_UNSET");
    s = drill_expand("port=${DRILL_TEST_PORT} x=${DRILL_TEST_UNSET:-7} ${lower} $ {", err,
                     sizeof err);
    assert_non_null(s);
    assert_string_equal(s, "port=5432 x=7 ${lower} $ {");
    free(s);
    assert_null(drill_expand("a ${DRILL_TEST_PORT", err, sizeof err));
    assert_non_null(strstr(err, "unterminated"));
    assert_null(drill_expand("${DRILL_TEST_UNSET}", err, sizeof err));
}

static void test_query_and_params(void **state)
{
    drill_query q;
    drill_param p;
    char err[256];
    assert_int_equal(drill_query_parse("order:   SELECT 1", &q, err, sizeof err), 0);
    assert_string_equal(q.participant, "order");
    assert_string_equal(q.sql, "SELECT 1");
    free(q.sql);
    assert_int_equal(drill_query_parse("Order: SELECT 1", &q, err, sizeof err), -EINVAL);
    assert_int_equal(drill_query_parse("order:   ", &q, err, sizeof err), -EINVAL);
    assert_int_equal(drill_param_parse("x", "seq 10", &p, err, sizeof err), 0);
    assert_true(p.kind == PARAM_SEQ && p.lo == 10);
    assert_int_equal(drill_param_parse("x", "seq -1", &p, err, sizeof err), -EINVAL);
    assert_int_equal(drill_param_parse("x", "range 1 2 3", &p, err, sizeof err), -EINVAL);
    assert_int_equal(drill_param_parse("x", "range 1 x", &p, err, sizeof err), -EINVAL);
    assert_int_equal(drill_param_parse("x", "choice", &p, err, sizeof err), -EINVAL);
}

static void test_substitute_and_body(void **state)
{
    drill_conf c;
    drill_values v = {0};
    char err[512], *s;
    json_t *root;
    assert_int_equal(drill_conf_parse(drill_path, base_text(), &c, err, sizeof err), 0);
    v.n = 4;
    strcpy(v.name[0], "id"), strcpy(v.text[0], "drill-x-1");
    strcpy(v.name[1], "n"), strcpy(v.text[1], "42"), v.number[1] = true;
    strcpy(v.name[2], "sku"), strcpy(v.text[2], "A-1");
    strcpy(v.name[3], "order"), strcpy(v.text[3], "100"), v.number[3] = true;
    s = drill_body(&c.templates[0], &v, err, sizeof err);
    assert_non_null(s);
    root = json_loads(s, 0, NULL);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "id")), "drill-x-1");
    json_t *st = json_array_get(
        json_object_get(json_array_get(json_object_get(root, "branches"), 0), "statements"), 0);
    /* a whole "${n}" of a number becomes the number; a choice stays a string; inside text the
     * value is spliced */
    assert_int_equal(json_integer_value(json_array_get(json_object_get(st, "params"), 0)), 42);
    assert_string_equal(json_string_value(json_array_get(json_object_get(st, "params"), 1)), "A-1");
    assert_non_null(strstr(json_string_value(json_object_get(st, "sql")), "note = 'o100'"));
    json_decref(root);
    free(s);
    s = drill_substitute("k = ${order} AND ${nope}", &v, false, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, "unknown parameter ${nope}"));
    s = drill_substitute("\"${n}\" \"${sku}\"", &v, true, err, sizeof err);
    assert_string_equal(s, "42 \"A-1\"");
    free(s);
    drill_conf_free(&c);
}

static void test_workload(void **state)
{
    drill_conf c;
    drill_workload w;
    drill_values v;
    char err[512];
    unsigned seed = 3;
    assert_int_equal(drill_conf_parse(drill_path, base_text(), &c, err, sizeof err), 0);
    assert_int_equal(drill_workload_init(&w, &c, err, sizeof err), 0);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(drill_workload_pick(&w, &seed, "drill-1", &v), 0);
        long n = strtol(v.text[1], NULL, 10), order = strtol(v.text[3], NULL, 10);
        assert_true(n >= 1 && n <= 9);
        assert_true(strcmp(v.text[2], "A-1") == 0 || strcmp(v.text[2], "B_2") == 0);
        assert_int_equal(order, 100 + i); /* a sequence hands out each value once */
    }
    drill_workload_destroy(&w);
    /* a template that is not a transaction is refused at start, naming it */
    free(c.templates[0].body);
    c.templates[0].body = strdup("[1, 2]");
    assert_int_equal(drill_workload_init(&w, &c, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "[template.pay]"));
    drill_conf_free(&c);
}

static void test_report_json(void **state)
{
    static drill_result r;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    json_t *root;
    memset(&r, 0, sizeof r);
    r.duration_s = 5;
    r.ntallies = 1;
    strcpy(r.tallies[0].name, "pay");
    r.tallies[0].attempted = 10;
    r.tallies[0].committed = 7;
    r.nchecks = 2;
    strcpy(r.checks[0].name, "a");
    r.checks[0].ok = true;
    strcpy(r.checks[1].name, "b");
    strcpy(r.checks[1].detail, "1 \"wrong\"\n");
    r.nrecoveries = 1;
    r.recovery_s[0] = 0.25;
    drill_report_json(&r, f);
    fclose(f);
    root = json_loads(text, 0, NULL);
    assert_non_null(root);
    assert_false(json_is_true(json_object_get(root, "ok")));
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(root, "transactions"), 0), "committed")),
                     7);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(root, "checks"), 1), "detail")),
                        "1 \"wrong\"\n");
    json_decref(root);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_whole),
        cmocka_unit_test(test_conf_errors),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_query_and_params),
        cmocka_unit_test(test_substitute_and_body),
        cmocka_unit_test(test_workload),
        cmocka_unit_test(test_report_json),
    };
    return cmocka_run_group_tests(tests, make_template, remove_template);
}
