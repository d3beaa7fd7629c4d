/*
 * Rendering of statement results into the reply (results.c): every value is carried exactly or
 * refused with a reason - never dropped, rounded or merged.
 */
#include "testutil.h"

#include "results.h"

#include <stdlib.h>
#include <string.h>

/* One result of ncols columns and nrows rows from a flat cell list. */
static px_result one(int ncols, int nrows, char **names, px_coltype *types, char **cells)
{
    px_result r = {nrows, ncols, nrows, names, types, cells};
    return r;
}

static char *render1(px_result *r, char *err, size_t errlen, int *stmt)
{
    *stmt = -1;
    return results_render(r, 1, stmt, err, errlen);
}

static void expect(px_result *r, const char *want)
{
    char err[256] = "";
    int stmt;
    char *got = render1(r, err, sizeof err, &stmt);
    if (!got)
        fail_msg("refused: %s", err);
    assert_string_equal(got, want);
    free(got);
}

static void test_scalars_exact(void **state)
{
    char *names[] = {"i", "big", "neg", "f", "nan", "inf", "minf", "d", "b", "t", "n"};
    px_coltype types[] = {PX_COL_INT,  PX_COL_INT,    PX_COL_INT,  PX_COL_REAL,
                          PX_COL_REAL, PX_COL_REAL,   PX_COL_REAL, PX_COL_DECIMAL,
                          PX_COL_BOOL, PX_COL_BINARY, PX_COL_TEXT};
    char *cells[] = {"42",
                     "18446744073709551615",
                     "-9223372036854775808",
                     "1.5e+300",
                     "NaN",
                     "Infinity",
                     "-Infinity",
                     "12345678901234567.89",
                     "t",
                     "/w==",
                     NULL};
    px_result r = one(11, 1, names, types, cells);
    expect(&r, "[{\"rows_affected\":1,\"columns\":[\"i\",\"big\",\"neg\",\"f\",\"nan\",\"inf\","
               "\"minf\",\"d\",\"b\",\"t\",\"n\"],\"rows\":[{\"i\":42,\"big\":"
               "\"18446744073709551615\",\"neg\":-9223372036854775808,\"f\":1.5e+300,\"nan\":"
               "\"NaN\",\"inf\":\"Infinity\",\"minf\":\"-Infinity\",\"d\":"
               "\"12345678901234567.89\",\"b\":true,\"t\":\"/w==\",\"n\":null}]}]");
}

static void test_repeated_names_give_arrays(void **state)
{
    char *names[] = {"a", "a"};
    px_coltype types[] = {PX_COL_INT, PX_COL_INT};
    char *cells[] = {"1", "2", "3", "4"};
    px_result r = one(2, 2, names, types, cells);
    expect(&r, "[{\"rows_affected\":2,\"columns\":[\"a\",\"a\"],\"rows\":[[1,2],[3,4]]}]");
}

static void test_text_is_escaped(void **state)
{
    char *names[] = {"q\"\n"};
    px_coltype types[] = {PX_COL_TEXT};
    char *cells[] = {"a\"b\\c\n\x01 \xc3\xa9"};
    px_result r = one(1, 1, names, types, cells);
    expect(&r, "[{\"rows_affected\":1,\"columns\":[\"q\\\"\\u000a\"],\"rows\":[{\"q\\\"\\u000a\":"
               "\"a\\\"b\\\\c\\u000a\\u0001 \xc3\xa9\"}]}]");
}

static void test_invalid_utf8_is_refused(void **state)
{
    char *names[] = {"ok", "bad"};
    px_coltype types[] = {PX_COL_TEXT, PX_COL_TEXT};
    char *cells[] = {"x", "\xff"};
    px_result rs[2] = {{3, 0, 0, NULL, NULL, NULL}, one(2, 1, names, types, cells)};
    char err[256] = "";
    int stmt = -1;
    assert_null(results_render(rs, 2, &stmt, err, sizeof err));
    assert_int_equal(stmt, 1);
    assert_non_null(strstr(err, "row 0, column 1 (bad)"));
    assert_non_null(strstr(err, "UTF-8"));
}

static void test_malformed_numbers_are_refused(void **state)
{
    static const char *const bad_ints[] = {"", "-", "1.5", "12a", " 1"};
    static const char *const bad_reals[] = {"nan", "1.", ".5", "01", "1e", "inf"};
    char *names[] = {"v"};
    px_coltype types[1];
    char *cells[1];
    char err[256];
    int stmt;
    px_result r = one(1, 1, names, types, cells);
    types[0] = PX_COL_INT;
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        cells[0] = (char *)bad_ints[i];
        assert_null(render1(&r, err, sizeof err, &stmt));
    }
    types[0] = PX_COL_REAL;
    for (size_t i = 0; i < sizeof bad_reals / sizeof bad_reals[0]; i++) {
        cells[0] = (char *)bad_reals[i];
        assert_null(render1(&r, err, sizeof err, &stmt));
    }
}

static void test_no_columns(void **state)
{
    px_result rs[2] = {{1, 0, 0, NULL, NULL, NULL}, {0, 0, 0, NULL, NULL, NULL}};
    char err[64];
    int stmt;
    char *got = results_render(rs, 2, &stmt, err, sizeof err);
    assert_string_equal(got, "[{\"rows_affected\":1},{\"rows_affected\":0}]");
    free(got);
    got = results_render(rs, 0, &stmt, err, sizeof err);
    assert_string_equal(got, "[]");
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_exact),
        cmocka_unit_test(test_repeated_names_give_arrays),
        cmocka_unit_test(test_text_is_escaped),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_malformed_numbers_are_refused),
        cmocka_unit_test(test_no_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
