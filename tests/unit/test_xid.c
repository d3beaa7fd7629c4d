/*
 * XID construction and PostgreSQL gid parsing (participants/participant.c).
 */
#include "testutil.h"

#include <string.h>

static void test_valid_xid(void **state)
{
    px_xid x;
    char gid[160];
    assert_int_equal(px_xid_set(&x, "xa1.c1.3.17", "payment"), 0);
    px_xid_gid(&x, gid, sizeof gid);
    assert_string_equal(gid, "xa1.c1.3.17.payment");
}

static void test_rejects_bad_charset(void **state)
{
    px_xid x;
    assert_int_equal(px_xid_set(&x, "xa1.c1'; DROP", "payment"), -EINVAL);
    assert_int_equal(px_xid_set(&x, "xa1.c1.3.17", "pay.ment"), -EINVAL); /* bqual has no dot */
    assert_int_equal(px_xid_set(&x, "XA1", "payment"), -EINVAL);
    assert_int_equal(px_xid_set(&x, "", "payment"), -EINVAL);
    assert_int_equal(px_xid_set(&x, "xa1", ""), -EINVAL);
}

static void test_length_limits(void **state)
{
    px_xid x;
    char part[80];
    memset(part, 'a', 64);
    part[64] = '\0';
    assert_int_equal(px_xid_set(&x, part, part), 0);
    part[64] = 'a';
    part[65] = '\0';
    assert_int_equal(px_xid_set(&x, part, "b"), -EINVAL);
    assert_int_equal(px_xid_set(&x, "a", part), -EINVAL);
}

static void test_parse_gid(void **state)
{
    px_xid x;
    assert_int_equal(px_xid_parse_gid(&x, "xa1.c1.3.17.order_db"), 0);
    assert_string_equal(x.gtrid, "xa1.c1.3.17");
    assert_string_equal(x.bqual, "order_db");
    assert_int_equal(px_xid_parse_gid(&x, "nodot"), -EINVAL);
    assert_int_equal(px_xid_parse_gid(&x, ".payment"), -EINVAL);
    assert_int_equal(px_xid_parse_gid(&x, "xa1.c1."), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_xid),
        cmocka_unit_test(test_rejects_bad_charset),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_parse_gid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
