/*
 * The intrusive list (participants/list.h): insertion and removal at either end and in the middle,
 * counts, removal while iterating, a node moved between lists, and the misuses that abort.
 */
#include "testutil.h"

#include "list.h"

typedef struct item {
    int id;
    list_node node;
} item;

/* The ids of l in order, then -1; and the links read backwards agree with them. */
static void expect_ids(const list_head *l, const int *want)
{
    size_t n = 0;
    const list_node *back = NULL;
    list_each(it, l) {
        assert_int_equal(list_entry(it, item, node)->id, want[n]);
        assert_ptr_equal(it->on, l);
        assert_ptr_equal(it->prev, back);
        back = it;
        n++;
    }
    assert_int_equal(want[n], -1);
    assert_int_equal(list_count(l), n);
    assert_ptr_equal(list_last(l), back);
    assert_int_equal(list_empty(l), n == 0);
}

static void fill(list_head *l, item *items, int n)
{
    list_init(l);
    for (int i = 0; i < n; i++) {
        items[i] = (item){.id = i};
        list_push_tail(l, &items[i].node);
    }
}

static void test_zero_bytes_are_empty(void **state)
{
    list_head l = {0};
    item a = {.id = 7};
    expect_ids(&l, (const int[]){-1});
    assert_null(list_first(&l));
    assert_false(list_linked(&a.node));
    list_push_head(&l, &a.node);
    assert_true(list_linked(&a.node));
    expect_ids(&l, (const int[]){7, -1});
}

static void test_push_head_and_tail(void **state)
{
    list_head l;
    item a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    list_init(&l);
    list_push_head(&l, &b.node);
    list_push_head(&l, &a.node);
    list_push_tail(&l, &c.node);
    expect_ids(&l, (const int[]){1, 2, 3, -1});
    assert_ptr_equal(list_entry(list_first(&l), item, node), &a);
}

static void test_remove_head_middle_tail(void **state)
{
    list_head l;
    item it[5];
    fill(&l, it, 5);
    list_remove(&l, &it[2].node); /* middle */
    expect_ids(&l, (const int[]){0, 1, 3, 4, -1});
    list_remove(&l, &it[0].node); /* head */
    expect_ids(&l, (const int[]){1, 3, 4, -1});
    list_remove(&l, &it[4].node); /* tail */
    expect_ids(&l, (const int[]){1, 3, -1});
    assert_false(list_linked(&it[4].node));
    list_remove(&l, &it[1].node);
    list_remove(&l, &it[3].node);
    expect_ids(&l, (const int[]){-1});
    assert_null(list_first(&l));
    assert_null(list_last(&l));
    list_push_tail(&l, &it[2].node); /* an emptied list takes nodes again */
    expect_ids(&l, (const int[]){2, -1});
}

static void test_remove_while_iterating(void **state)
{
    list_head l;
    item it[6];
    int seen = 0;
    fill(&l, it, 6);
    list_each_safe(n, tmp, &l) {
        item *x = list_entry(n, item, node);
        seen++;
        if (x->id % 2 == 0)
            list_remove(&l, n);
    }
    assert_int_equal(seen, 6);
    expect_ids(&l, (const int[]){1, 3, 5, -1});
    list_each_safe(n, tmp, &l)
        list_remove(&l, n); /* every one, the last included */
    expect_ids(&l, (const int[]){-1});
}

static void test_node_moves_between_lists(void **state)
{
    list_head a, b;
    item it[3];
    fill(&a, it, 3);
    list_init(&b);
    list_remove(&a, &it[1].node);
    list_push_head(&b, &it[1].node);
    expect_ids(&a, (const int[]){0, 2, -1});
    expect_ids(&b, (const int[]){1, -1});
    list_remove(&b, &it[1].node);
    list_push_tail(&a, &it[1].node);
    expect_ids(&a, (const int[]){0, 2, 1, -1});
    expect_ids(&b, (const int[]){-1});
}

static list_head misuse_l, misuse_other;
static item misuse_item;

static void insert_twice(void *arg)
{
    list_push_tail(&misuse_l, &misuse_item.node);
    list_push_head(&misuse_other, &misuse_item.node);
}

static void remove_twice(void *arg)
{
    list_push_tail(&misuse_l, &misuse_item.node);
    list_remove(&misuse_l, &misuse_item.node);
    list_remove(&misuse_l, &misuse_item.node);
}

static void remove_from_wrong_list(void *arg)
{
    list_push_tail(&misuse_l, &misuse_item.node);
    list_remove(&misuse_other, &misuse_item.node);
}

static void test_misuse_aborts(void **state)
{
    tu_expect_abort(insert_twice, NULL, "inserted into list", "already on list", NULL);
    tu_expect_abort(remove_twice, NULL, "removed from list", "is on list (nil)", NULL);
    tu_expect_abort(remove_from_wrong_list, NULL, "removed from list", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_bytes_are_empty),
        cmocka_unit_test(test_push_head_and_tail),
        cmocka_unit_test(test_remove_head_middle_tail),
        cmocka_unit_test(test_remove_while_iterating),
        cmocka_unit_test(test_node_moves_between_lists),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
