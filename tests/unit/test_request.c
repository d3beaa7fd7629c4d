/*
 * Request parsing and validation (coordinator/request.c): the compact form the engine runs, the
 * digest that tells a repeated id's request apart, and an error naming the field for every kind of
 * malformed input.
 */
#include "testutil.h"

#include "request.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const request_limits lim = {4, 3, 5, 64, 5000, 60000};

static bool lookup(const char *name, void *arg, request_participant *out)
{
    static const char *const names[] = {"payment", "order", "warehouse"};
    static const guard_dialect dialects[] = {GUARD_POSTGRES, GUARD_MYSQL, GUARD_MEMORY};
    for (int i = 0; i < 3; i++)
        if (strcmp(names[i], name) == 0) {
            out->index = i;
            out->dialect = dialects[i];
            return true;
        }
    return false;
}

static txn_request *parse(const char *body, char *err)
{
    return request_parse(body, strlen(body), &lim, lookup, NULL, err, 256);
}

static void expect_error(const char *body, const char *fragment)
{
    char err[256] = "";
    txn_request *r = parse(body, err);
    if (r)
        fail_msg("accepted: %s", body);
    if (!strstr(err, fragment))
        fail_msg("error '%s' does not mention '%s'", err, fragment);
}

static void test_valid_request(void **state)
{
    char err[256];
    txn_request *r =
        parse("{\"id\":\"a-1\",\"timeout_ms\":900,\"branches\":["
              "{\"participant\":\"warehouse\",\"statements\":[{\"sql\":\"rows 1\"}]},"
              "{\"participant\":\"payment\",\"statements\":[{\"sql\":\"UPDATE t SET a = $1\","
              "\"params\":[7,2.5,\"x'y\",true,null],\"expect_rows\":1,"
              "\"abort_reason\":\"poor\"}]}]}",
              err);
    assert_non_null(r);
    assert_string_equal(r->id, "a-1");
    assert_true(r->id_given);
    assert_int_equal(r->timeout_ms, 900);
    assert_int_equal(r->nbranches, 2);
    /* sorted by participant index: the global order of acquisition */
    assert_string_equal(r->branches[0].name, "payment");
    assert_string_equal(r->branches[1].name, "warehouse");
    const px_stmt *st = &r->branches[0].stmts[0];
    assert_string_equal(st->sql, "UPDATE t SET a = $1");
    assert_int_equal(st->expect_rows, 1);
    assert_int_equal(st->nparams, 5);
    assert_int_equal(st->params[0].type, PX_P_INT);
    assert_int_equal(st->params[0].i, 7);
    assert_int_equal(st->params[1].type, PX_P_REAL);
    assert_int_equal(st->params[2].type, PX_P_TEXT);
    assert_int_equal(st->params[2].len, 3);
    assert_memory_equal(st->params[2].text, "x'y", 3);
    assert_int_equal(st->params[3].type, PX_P_BOOL);
    assert_int_equal(st->params[4].type, PX_P_NULL);
    assert_string_equal(r->branches[0].abort_reasons[0], "poor");
    assert_null(r->branches[1].abort_reasons);
    assert_int_equal(r->branches[1].stmts[0].expect_rows, -1);
    request_free(r);
}

static void test_defaults(void **state)
{
    char err[256];
    txn_request *r = parse(
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\"}]}]}",
        err);
    assert_non_null(r);
    assert_false(r->id_given);
    assert_int_equal(r->timeout_ms, 5000);
    request_free(r);
}

/* The digest ignores id, timeout and key order, and sees every part of the work. */
static void test_digest(void **state)
{
    static const char *const same[] = {
        "{\"id\":\"a\",\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":"
        "\"SELECT x\",\"params\":[1,\"b\"],\"expect_rows\":1}]}]}",
        "{\"timeout_ms\":7,\"branches\":[{\"statements\":[{\"expect_rows\":1,\"params\":[1,\"b\"],"
        "\"sql\":\"SELECT x\"}],\"participant\":\"order\"}],\"id\":\"zz\"}",
    };
    static const char *const different[] = {
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[1,\"c\"],\"expect_rows\":1}]}]}",
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[\"1\",\"b\"],\"expect_rows\":1}]}]}",
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[1,\"b\"],\"expect_rows\":2}]}]}",
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[1,\"b\"]}]}]}",
        "{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[1,\"b\"],\"expect_rows\":1}]}]}",
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
        "\"params\":[1,\"b\"],\"expect_rows\":1,\"abort_reason\":\"r\"}]}]}",
    };
    char err[256];
    txn_request *a = parse(same[0], err), *b = parse(same[1], err);
    assert_non_null(a);
    assert_non_null(b);
    assert_memory_equal(a->digest, b->digest, REQUEST_DIGEST_LEN);
    for (size_t i = 0; i < sizeof different / sizeof different[0]; i++) {
        txn_request *d = parse(different[i], err);
        assert_non_null(d);
        if (memcmp(a->digest, d->digest, REQUEST_DIGEST_LEN) == 0)
            fail_msg("same digest for %s", different[i]);
        request_free(d);
    }
    request_free(a);
    request_free(b);
}

static void test_errors_name_the_field(void **state)
{
    expect_error("{", "invalid JSON");
    expect_error("[1]", "must be a JSON object");
    expect_error("{\"branches\":[]}", "branches: must not be empty");
    expect_error("{\"branches\":{}}", "branches: must be an array");
    expect_error("{\"extra\":1,\"branches\":[]}", "unknown field 'extra'");
    expect_error("{\"id\":\"has space\",\"branches\":[]}", "id:");
    expect_error("{\"id\":\"" /* 65 characters */
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
                 "id:");
    expect_error("{\"timeout_ms\":0,\"branches\":[]}", "timeout_ms");
    expect_error("{\"timeout_ms\":60001,\"branches\":[]}", "timeout_ms");
    expect_error(
        "{\"branches\":[{\"participant\":\"nope\",\"statements\":[{\"sql\":\"SELECT x\"}]}]}",
        "branches[0].participant: unknown participant 'nope'");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[]}]}",
                 "branches[0].statements: must not be empty");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"\"}]}]}",
                 "branches[0].statements[0].sql");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
                 "\"params\":[{}]}]}]}",
                 "branches[0].statements[0].params[0]: must be a string, number, boolean or null");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
                 "\"expect_rows\":-1}]}]}",
                 "expect_rows");
    expect_error(
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\"}]},"
        "{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT y\"}]}]}",
        "appears more than once");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
                 "\"bogus\":1}]}]}",
                 "branches[0].statements[0]: unknown field 'bogus'");
    expect_error(
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"x\\u0000y\"}]}]}",
        "NUL");
    expect_error("{\"id\":\"a\",\"id\":\"b\",\"branches\":[]}", "invalid JSON");
}

static void test_limits(void **state)
{
    char sql[100];
    char body[512];
    memset(sql, 'x', 65);
    sql[65] = '\0';
    snprintf(body, sizeof body,
             "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"%s\"}]}]}", sql);
    expect_error(body, "longer than 64 bytes");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\"},"
                 "{\"sql\":\"SELECT x\"},{\"sql\":\"SELECT x\"},{\"sql\":\"SELECT x\"}]}]}",
                 "more than 3 statements");
    expect_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
                 "\"params\":[1,2,3,4,5,6]}]}]}",
                 "more than 5 parameters");
    expect_error("{\"branches\":[{},{},{},{},{}]}", "more than 4 branches");
}

static void expect_exact_error(const char *body, const char *want)
{
    char err[256] = "";
    txn_request *r = parse(body, err);
    if (r)
        fail_msg("accepted: %s", body);
    assert_string_equal(err, want);
}

/* Every statement passes its participant's guard (guard.h); one refused statement refuses the
 * request, and the error names branch, statement, participant and keyword. */
static void test_statement_guard(void **state)
{
    char err[256];
    txn_request *r;
    expect_exact_error(
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT 1\"}]},"
        "{\"participant\":\"payment\",\"statements\":[{\"sql\":\"SELECT 1\"},{\"sql\":"
        "\"UPDATE t SET a = 1\"},{\"sql\":\" commit\"}]}]}",
        "branches[1].statements[2]: \"COMMIT\" statements are not accepted on participant "
        "'payment': only SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE run inside a branch");
    expect_exact_error(
        "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"-- x\"}]}]}",
        "branches[0].statements[0]: \"(empty statement)\" statements are not accepted on "
        "participant 'order': only SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE, REPLACE "
        "run inside a branch");
    expect_exact_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":"
                       "\"SELECT 1; XA END 'a'\"}]}]}",
                       "branches[0].statements[0]: more than one statement is not accepted on "
                       "participant 'order'");
    expect_exact_error("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":"
                       "\"SELECT 1 /*!, 2 */\"}]}]}",
                       "branches[0].statements[0]: an executable comment or optimizer hint is not "
                       "accepted on participant 'order'");
    expect_exact_error("{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":"
                       "\"SELECT 'x\"}]}]}",
                       "branches[0].statements[0]: an unterminated comment or quote is not "
                       "accepted on participant 'payment'");
    /* Each participant is judged by its own dialect. */
    expect_error("{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":"
                 "\"REPLACE INTO t VALUES (1)\"}]}]}",
                 "\"REPLACE\" statements are not accepted on participant 'payment'");
    expect_error("{\"branches\":[{\"participant\":\"payment\",\"statements\":[{\"sql\":"
                 "\"rows 1\"}]}]}",
                 "\"ROWS\" statements are not accepted on participant 'payment'");
    r = parse("{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":"
              "\"REPLACE INTO t VALUES (1)\"}]},{\"participant\":\"warehouse\",\"statements\":"
              "[{\"sql\":\"sleep 5\"}]}]}",
              err);
    assert_non_null(r);
    request_free(r);
}

/* Generated ids ("xa1.<node>.<boot>.<seq>") are never a client's. */
static void test_reserved_ids(void **state)
{
    char err[256];
    txn_request *r;
    assert_true(request_id_reserved("xa1.c1.3.7"));
    assert_true(request_id_reserved("XA9"));
    assert_true(request_id_reserved("xA0-mine"));
    assert_false(request_id_reserved("xa"));
    assert_false(request_id_reserved("xavier"));
    assert_false(request_id_reserved("xa.1"));
    assert_false(request_id_reserved("x1"));
    assert_false(request_id_reserved("axa1"));
    assert_false(request_id_reserved(""));
    /* GET /v1/transactions/{id} still takes them. */
    assert_true(request_id_valid("xa1.c1.3.7"));
    expect_error("{\"id\":\"xa1.c1.3.7\",\"branches\":[{\"participant\":\"order\",\"statements\":"
                 "[{\"sql\":\"SELECT 1\"}]}]}",
                 "id: \"xa\" followed by a digit is reserved for generated ids");
    expect_error("{\"id\":\"Xa2\",\"branches\":[]}", "id: ");
    r = parse("{\"id\":\"xavier-1\",\"branches\":[{\"participant\":\"order\",\"statements\":"
              "[{\"sql\":\"SELECT 1\"}]}]}",
              err);
    assert_non_null(r);
    assert_string_equal(r->id, "xavier-1");
    request_free(r);
}

/* Many requests in a row, large and small, through the parser's scratch memory. */
/* The digest's text form, read back from the journal and the store: exact, or refused. */
static void test_digest_parse(void **state)
{
    uint8_t d[REQUEST_DIGEST_LEN], back[REQUEST_DIGEST_LEN];
    char hex[2 * REQUEST_DIGEST_LEN + 1], bad[2 * REQUEST_DIGEST_LEN + 2];
    (void)state;
    for (int i = 0; i < REQUEST_DIGEST_LEN; i++)
        d[i] = (uint8_t)(i * 37 + 5);
    request_digest_hex(d, hex);
    assert_int_equal(request_digest_parse(hex, back), 0);
    assert_memory_equal(d, back, REQUEST_DIGEST_LEN);
    for (char *p = hex; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    assert_int_equal(request_digest_parse(hex, back), 0);
    assert_memory_equal(d, back, REQUEST_DIGEST_LEN);
    assert_int_equal(request_digest_parse(NULL, back), -EINVAL);
    assert_int_equal(request_digest_parse("", back), -EINVAL);
    hex[2 * REQUEST_DIGEST_LEN - 1] = '\0'; /* one digit short */
    assert_int_equal(request_digest_parse(hex, back), -EINVAL);
    request_digest_hex(d, hex);
    snprintf(bad, sizeof bad, "%s0", hex); /* one digit long */
    assert_int_equal(request_digest_parse(bad, back), -EINVAL);
    for (const char *junk = " +-gx"; *junk; junk++) { /* what sscanf("%2x") would let through */
        snprintf(bad, sizeof bad, "%s", hex);
        bad[4] = *junk;
        assert_int_equal(request_digest_parse(bad, back), -EINVAL);
    }
}

static void test_repeated_parses(void **state)
{
    size_t n = 300000;
    char *big = malloc(n + 200), err[256];
    int pos =
        snprintf(big, n + 200,
                 "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\","
                 "\"params\":[\"");
    memset(big + pos, 'p', n);
    snprintf(big + pos + n, 200, "\"]}]}]}");
    for (int i = 0; i < 50; i++) {
        request_limits wide = lim;
        txn_request *r;
        wide.max_sql_bytes = 64;
        r = request_parse(big, strlen(big), &wide, lookup, NULL, err, sizeof err);
        assert_non_null(r);
        assert_int_equal(r->branches[0].stmts[0].params[0].len, n);
        request_free(r);
        r = parse(
            "{\"branches\":[{\"participant\":\"order\",\"statements\":[{\"sql\":\"SELECT x\"}]}]}",
            err);
        assert_non_null(r);
        request_free(r);
    }
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_request), cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_digest),        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_limits),        cmocka_unit_test(test_statement_guard),
        cmocka_unit_test(test_reserved_ids),  cmocka_unit_test(test_repeated_parses),
        cmocka_unit_test(test_digest_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
