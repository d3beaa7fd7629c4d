/*
 * Log lines cannot be forged (log.c): text from clients and databases is escaped, so one event is
 * one line and no byte of it can pose as another entry.
 */
#include "testutil.h"

#include "log.h"
#include "utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void expect_escape(const char *in, const char *want)
{
    char out[256];
    log_escape(out, sizeof out, in);
    assert_string_equal(out, want);
}

static void test_escape(void **state)
{
    expect_escape("plain text", "plain text");
    expect_escape("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d");
    expect_escape("back\\slash", "back\\\\slash");
    expect_escape("\x1b[31mred\x7f", "\\x1b[31mred\\x7f");
    expect_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* Invalid UTF-8: a stray continuation byte, an overlong '/', a surrogate, a cut sequence. */
    expect_escape("\x80", "\\x80");
    expect_escape("\xc0\xaf", "\\xc0\\xaf");
    expect_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");
    expect_escape("\xe2\x82", "\\xe2\\x82");
}

static void test_escape_truncates_whole(void **state)
{
    char out[6];
    assert_int_equal(log_escape(out, sizeof out, "ab\ncd"), 2); /* "\x0a" does not fit after "ab" */
    assert_string_equal(out, "ab");
    assert_int_equal(log_escape(out, sizeof out, "\xc3\xa9\xc3\xa9\xc3\xa9"), 4);
    assert_string_equal(out, "\xc3\xa9\xc3\xa9");
}

static void test_utf8_valid(void **state)
{
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(utf8_valid("\xe0\x80\x80", 3));     /* overlong */
    assert_false(utf8_valid("\xed\xbf\xbf", 3));     /* surrogate */
}

/* A whole line written through log_write, read back from stderr. */
static void test_forged_line_stays_one_line(void **state)
{
    char path[] = "/tmp/xacoord-log-XXXXXX", buf[1024];
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;
    int lines = 0;
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, 2);
    log_write(LOG_LVL_ERROR, "txn t", "statement failed: relation \"%s\" does not exist",
              "x\n2030-01-01T00:00:00.000Z ERROR forged-by-client");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    f = fdopen(fd, "r");
    rewind(f);
    while (fgets(buf, sizeof buf, f)) {
        lines++;
        assert_null(strstr(buf, "\n2030"));
        assert_true(strncmp(buf, "2030-01-01", 10) != 0);
        assert_non_null(strstr(buf, "x\\x0a2030-01-01T00:00:00.000Z ERROR forged-by-client"));
    }
    fclose(f);
    unlink(path);
    assert_int_equal(lines, 1);
}

/* log_format = json: one object per line; its msg decodes to the text format's escaped message,
 * so a quote, a backslash or a newline from a client cannot break the object either. */
static void test_json_line(void **state)
{
    char path[] = "/tmp/xacoord-log-XXXXXX", buf[2048];
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;
    json_t *j;
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, 2);
    log_set_format(LOG_FMT_JSON);
    log_write(LOG_LVL_WARN, "participant \"p\"", "said %s", "a\"b\\c\nd");
    log_set_format(LOG_FMT_TEXT);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    f = fdopen(fd, "r");
    rewind(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    assert_null(fgets(buf + strlen(buf), (int)(sizeof buf - strlen(buf)), f)); /* one line */
    fclose(f);
    unlink(path);
    j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "WARN");
    assert_string_equal(json_string_value(json_object_get(j, "ctx")), "participant \"p\"");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "said a\"b\\\\c\\x0ad");
    assert_true(json_is_string(json_object_get(j, "time")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),     cmocka_unit_test(test_escape_truncates_whole),
        cmocka_unit_test(test_utf8_valid), cmocka_unit_test(test_forged_line_stays_one_line),
        cmocka_unit_test(test_json_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
