/*
 * The rules of participant preflight (coordinator/preflight.c, preflight_judge) on facts made up
 * here, so that every rule is checked without a server, and the xacoord schema's DDL
 * (coordinator/schema.c): compiled in from sql/ unchanged, split into the right statements.
 */
#include "testutil.h"

#include "preflight.h"
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const preflight_need need = {8, 256};

static preflight_facts sound_postgres(void)
{
    preflight_facts f = {
        .postgres = true, .schema_version = SCHEMA_VERSION, .max_prepared_transactions = 1100};
    strcpy(f.fsync, "on");
    strcpy(f.synchronous_commit, "on");
    strcpy(f.full_page_writes, "on");
    return f;
}

/* MariaDB 10.11 as scripts/db runs it: no binary log, no super_read_only, no
 * xa_detach_on_prepare. */
static preflight_facts sound_mysql(void)
{
    preflight_facts f = {.postgres = false, .schema_version = SCHEMA_VERSION};
    strcpy(f.flush_log_at_trx_commit, "1");
    strcpy(f.sync_binlog, "0");
    strcpy(f.log_bin, "0");
    strcpy(f.read_only, "0");
    return f;
}

static int judge(const preflight_facts *f, preflight_finding *out)
{
    return preflight_judge(f, &need, out, PREFLIGHT_MAX_FINDINGS);
}

/* Exactly one finding, of that severity and text. */
static void expect_one(const preflight_facts *f, bool unsafe, const char *text)
{
    preflight_finding out[PREFLIGHT_MAX_FINDINGS];
    int n = judge(f, out);
    if (n != 1)
        fail_msg("%d findings, first: %s", n, n > 0 ? out[0].text : "(none)");
    assert_int_equal(out[0].unsafe, unsafe);
    assert_string_equal(out[0].text, text);
}

static void expect_none(const preflight_facts *f)
{
    preflight_finding out[PREFLIGHT_MAX_FINDINGS];
    int n = judge(f, out);
    if (n != 0)
        fail_msg("%d findings, first: %s", n, out[0].text);
}

static void test_sound_servers(void **state)
{
    preflight_facts pg = sound_postgres(), my = sound_mysql();
    expect_none(&pg);
    expect_none(&my);
}

static void test_postgres_durability(void **state)
{
    preflight_facts f = sound_postgres();
    strcpy(f.fsync, "off");
    expect_one(&f, true, "fsync = off (set it to on)");
    f = sound_postgres();
    strcpy(f.full_page_writes, "off");
    expect_one(&f, true, "full_page_writes = off (set it to on)");
    f = sound_postgres();
    strcpy(f.synchronous_commit, "off");
    expect_one(&f, true, "synchronous_commit = off (set it to on)");
    /* Every other level flushes the commit locally before the server answers. */
    static const char *const fine[] = {"on", "local", "remote_write", "remote_apply"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        f = sound_postgres();
        strcpy(f.synchronous_commit, fine[i]);
        expect_none(&f);
    }
}

static void test_postgres_standby(void **state)
{
    preflight_facts f = sound_postgres();
    f.in_recovery = true;
    expect_one(&f, true,
               "the server is a standby in recovery and cannot prepare transactions (use the "
               "primary)");
}

static void test_postgres_max_prepared(void **state)
{
    preflight_facts f = sound_postgres();
    f.max_prepared_transactions = 0;
    expect_one(&f, true,
               "max_prepared_transactions = 0 disables two-phase commit (set it to at least "
               "max_inflight, 256)");
    f.max_prepared_transactions = 7;
    expect_one(&f, true,
               "max_prepared_transactions = 7 is below pool_size (set it to at least "
               "max_inflight, 256)");
    /* From pool_size on it works, but can fail under full load: a warning only. */
    f.max_prepared_transactions = 8;
    expect_one(&f, false,
               "max_prepared_transactions = 8 is below max_inflight 256: PREPARE TRANSACTION "
               "fails (53200) when more transactions are in flight");
    f.max_prepared_transactions = 256;
    expect_none(&f);
}

static void test_mysql_durability(void **state)
{
    preflight_facts f = sound_mysql();
    strcpy(f.flush_log_at_trx_commit, "2");
    expect_one(&f, true, "innodb_flush_log_at_trx_commit = 2 (set it to 1)");
    strcpy(f.flush_log_at_trx_commit, "0");
    expect_one(&f, true, "innodb_flush_log_at_trx_commit = 0 (set it to 1)");
    /* sync_binlog matters only with the binary log on. */
    f = sound_mysql();
    strcpy(f.sync_binlog, "0");
    expect_none(&f);
    strcpy(f.log_bin, "1");
    expect_one(&f, true, "sync_binlog = 0 with the binary log on (set it to 1)");
    strcpy(f.sync_binlog, "1");
    expect_none(&f);
}

static void test_mysql_read_only(void **state)
{
    preflight_facts f = sound_mysql();
    strcpy(f.read_only, "1");
    expect_one(&f, true,
               "read_only = ON: the server takes no writes (use the primary, or set it to OFF)");
    f = sound_mysql();
    strcpy(f.super_read_only, "ON");
    expect_one(&f, true,
               "super_read_only = ON: the server takes no writes (use the primary, or set it to "
               "OFF)");
    strcpy(f.super_read_only, "OFF");
    expect_none(&f);
}

/* MySQL 8: XA RECOVER needs XA_RECOVER_ADMIN; xa_detach_on_prepare either way is fine
 * (docs/operations.md section 9): the coordinator works the same with both. */
static void test_mysql8(void **state)
{
    preflight_facts f = sound_mysql();
    strcpy(f.super_read_only, "0");
    strcpy(f.xa_detach_on_prepare, "1");
    expect_none(&f);
    strcpy(f.xa_detach_on_prepare, "0");
    expect_none(&f);
    f.xa_recover_denied = true;
    expect_one(&f, true,
               "XA RECOVER is denied to the coordinator's user (grant it XA_RECOVER_ADMIN)");
}

static void test_schema(void **state)
{
    preflight_facts f = sound_postgres();
    strcpy(f.schema_missing, "xacoord.marker");
    expect_one(&f, true,
               "table xacoord.marker is missing: run `xacoord --init-participants CONFIG` or "
               "sql/xacoord-postgres.sql");
    f = sound_mysql();
    strcpy(f.schema_missing, "xacoord_marker");
    expect_one(&f, true,
               "table xacoord_marker is missing: run `xacoord --init-participants CONFIG` or "
               "sql/xacoord-mysql.sql");
    f = sound_postgres();
    strcpy(f.schema_denied, "INSERT on xacoord.marker, DELETE on xacoord.marker");
    expect_one(&f, true,
               "the coordinator's role lacks INSERT on xacoord.marker, DELETE on xacoord.marker: "
               "grant what sql/xacoord-postgres.sql lists");
    f = sound_mysql();
    strcpy(f.schema_denied, "SELECT on xacoord_marker");
    expect_one(&f, true,
               "the coordinator's user lacks SELECT on xacoord_marker (or the table is missing): "
               "grant what sql/xacoord-mysql.sql lists");
    f = sound_mysql();
    f.schema_version = 0;
    expect_one(&f, true,
               "the xacoord schema has version 0, this coordinator needs 2: run `xacoord "
               "--init-participants CONFIG` or sql/xacoord-mysql.sql");
}

/* Unsafe findings come first, then warnings; max bounds the list. */
static void test_order_and_limit(void **state)
{
    preflight_facts f = sound_postgres();
    preflight_finding out[PREFLIGHT_MAX_FINDINGS];
    f.max_prepared_transactions = 100; /* a warning, found last */
    strcpy(f.fsync, "off");
    strcpy(f.full_page_writes, "off");
    assert_int_equal(judge(&f, out), 3);
    assert_true(out[0].unsafe && strstr(out[0].text, "fsync"));
    assert_true(out[1].unsafe && strstr(out[1].text, "full_page_writes"));
    assert_false(out[2].unsafe);
    f.max_prepared_transactions = 1100;
    strcpy(f.synchronous_commit, "off");
    f.in_recovery = true;
    assert_int_equal(preflight_judge(&f, &need, out, 2), 2);
    assert_true(strstr(out[1].text, "synchronous_commit") != NULL);
}

static void test_describe_and_on(void **state)
{
    char buf[512];
    preflight_facts f = sound_postgres();
    preflight_describe(&f, buf, sizeof buf);
    assert_string_equal(buf, "fsync=on synchronous_commit=on full_page_writes=on "
                             "max_prepared_transactions=1100 primary; xacoord schema version 2");
    f = sound_mysql();
    strcpy(f.xa_detach_on_prepare, "1");
    preflight_describe(&f, buf, sizeof buf);
    assert_string_equal(buf, "innodb_flush_log_at_trx_commit=1 sync_binlog=0 log_bin=OFF "
                             "read_only=OFF xa_detach_on_prepare=ON; xacoord schema version 2");
    assert_true(preflight_on("1") && preflight_on("ON") && preflight_on("on") &&
                preflight_on("true") && preflight_on("yes"));
    assert_false(preflight_on("0") || preflight_on("OFF") || preflight_on("") || preflight_on("2"));
}

/* ---- the schema's DDL -------------------------------------------------------------------- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;
    if (!f)
        fail_msg("cannot open %s (run the tests from the source root)", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    return buf;
}

/* The build compiles the files in: the binary runs exactly what an administrator would. */
static void test_ddl_is_the_file(void **state)
{
    static const char *const drivers[] = {"postgres", "mysql"};
    for (size_t i = 0; i < 2; i++) {
        const schema_dialect *d = schema_for(drivers[i]);
        char *text;
        assert_non_null(d);
        text = read_text(d->file);
        assert_string_equal(d->ddl, text);
        free(text);
    }
    assert_null(schema_for("memory"));
}

static void expect_statements(const char *driver, int want, const char *const *starts)
{
    char **s = NULL;
    int n = schema_statements(schema_for(driver)->ddl, &s);
    assert_int_equal(n, want);
    for (int i = 0; i < n; i++) {
        if (strncmp(s[i], starts[i], strlen(starts[i])) != 0)
            fail_msg("%s statement %d: %s", driver, i, s[i]);
        assert_null(strstr(s[i], "--"));
        assert_int_not_equal(s[i][strlen(s[i]) - 1], ';');
    }
    schema_statements_free(s, n);
}

static void test_ddl_statements(void **state)
{
    static const char *const pg[] = {
        "CREATE SCHEMA IF NOT EXISTS xacoord",
        "CREATE TABLE IF NOT EXISTS xacoord.marker (",
        "ALTER TABLE xacoord.marker ADD COLUMN IF NOT EXISTS digest",
        "ALTER TABLE xacoord.marker ADD COLUMN IF NOT EXISTS coordinator",
        "CREATE UNIQUE INDEX IF NOT EXISTS marker_client_id",
        "CREATE TABLE IF NOT EXISTS xacoord.schema_version (",
        "INSERT INTO xacoord.schema_version"};
    static const char *const my[] = {"CREATE TABLE IF NOT EXISTS xacoord_marker (",
                                     "CREATE TABLE IF NOT EXISTS xacoord_schema_version (",
                                     "INSERT INTO xacoord_schema_version"};
    expect_statements("postgres", 7, pg);
    expect_statements("mysql", 3, my);
}

static void test_split_rules(void **state)
{
    char **s = NULL;
    int n = schema_statements("-- a comment;\n\n  -- another\nCREATE a (\n  x int -- no\n);\n\n"
                              "SELECT 'a;b';\nINSERT tail",
                              &s);
    assert_int_equal(n, 3);
    assert_string_equal(s[0], "CREATE a (\n  x int -- no\n)");
    assert_string_equal(s[1], "SELECT 'a;b'");
    assert_string_equal(s[2], "INSERT tail"); /* no ';' at the end: still a statement */
    schema_statements_free(s, n);
    assert_int_equal(schema_statements("-- only a comment\n\n", &s), 0);
    schema_statements_free(s, 0);
}

static void test_classify(void **state)
{
    px_error e = {0};
    strcpy(e.sqlstate, "42P01");
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_MISSING);
    strcpy(e.sqlstate, "3F000");
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_MISSING);
    strcpy(e.sqlstate, "42501");
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_DENIED);
    strcpy(e.sqlstate, "42S02");
    e.code = 1146;
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_MISSING);
    strcpy(e.sqlstate, "42000");
    e.code = 1142;
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_DENIED);
    e.code = 1064;
    assert_int_equal(schema_classify(&e), SCHEMA_ERR_OTHER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sound_servers),    cmocka_unit_test(test_postgres_durability),
        cmocka_unit_test(test_postgres_standby), cmocka_unit_test(test_postgres_max_prepared),
        cmocka_unit_test(test_mysql_durability), cmocka_unit_test(test_mysql_read_only),
        cmocka_unit_test(test_mysql8),           cmocka_unit_test(test_schema),
        cmocka_unit_test(test_order_and_limit),  cmocka_unit_test(test_describe_and_on),
        cmocka_unit_test(test_ddl_is_the_file),  cmocka_unit_test(test_ddl_statements),
        cmocka_unit_test(test_split_rules),      cmocka_unit_test(test_classify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
