/*
 * The outcome table (coordinator/outcome.c): lookups by id and gtrid, waiters, unindexing, and
 * pruning by retention - never a commit still owed to a participant.
 */
#include "testutil.h"

#include "outcome.h"

#include <stdio.h>
#include <string.h>

static const uint8_t digest[REQUEST_DIGEST_LEN] = {1, 2, 3};

static outcome *add(outcomes *os, int i, outcome_state st, int64_t time_ms)
{
    char id[16], gtrid[32];
    outcome *o;
    snprintf(id, sizeof id, "id%d", i);
    snprintf(gtrid, sizeof gtrid, "xa1.t.1.%d", i);
    o = outcome_create(os, id, gtrid, digest);
    assert_non_null(o);
    if (st == OUTCOME_COMMITTED)
        outcome_commit(os, o, time_ms);
    if (st != OUTCOME_IN_PROGRESS)
        outcome_settle(os, o, st, st == OUTCOME_COMMITTED ? 200 : 409, strdup("{\"x\":1"), time_ms);
    return o;
}

static void test_lookups(void **state)
{
    outcomes *os = outcomes_new(60);
    outcome *c = add(os, 1, OUTCOME_COMMITTED, 1000), *a = add(os, 2, OUTCOME_ABORTED, 1000);
    assert_ptr_equal(outcome_find(os, "id1"), c);
    assert_ptr_equal(outcome_find_gtrid(os, "xa1.t.1.2"), a);
    assert_ptr_equal(outcome_find_commit(os, "xa1.t.1.1"), c);
    assert_null(outcome_find_commit(os, "xa1.t.1.2")); /* aborted: presumed abort applies */
    outcome_unindex(os, a);
    assert_null(outcome_find(os, "id2"));
    assert_null(outcome_find_gtrid(os, "xa1.t.1.2"));
    outcome_release(os, a);
    assert_int_equal(outcomes_count(os), 1);
    outcomes_free(os);
}

static void on_settled(outcome *o, void *arg)
{
    ++*(int *)arg;
}

static void test_waiters(void **state)
{
    outcomes *os = outcomes_new(60);
    outcome *o = add(os, 1, OUTCOME_IN_PROGRESS, 0);
    int calls = 0, other = 0;
    outcome_wait(o, on_settled, &calls);
    outcome_wait(o, on_settled, &other);
    outcome_unwait(o, on_settled, &other);
    outcome_settle(os, o, OUTCOME_ABORTED, 409, strdup("{\"x\":1"), 5);
    assert_int_equal(calls, 1);
    assert_int_equal(other, 0);
    outcomes_free(os);
}

static void test_prune(void **state)
{
    outcomes *os = outcomes_new(10); /* 10 s */
    outcome *owed = add(os, 1, OUTCOME_COMMITTED, 0);
    outcome_set_pending(os, owed, 1); /* a participant still owed its COMMIT */
    add(os, 2, OUTCOME_COMMITTED, 0);
    add(os, 3, OUTCOME_IN_PROGRESS, 0);
    add(os, 4, OUTCOME_ABORTED, 5000);
    add(os, 5, OUTCOME_COMMITTED, 20000);
    outcomes_prune(os, 16000, 1000);
    assert_non_null(outcome_find(os, "id1")); /* owed: kept whatever its age */
    assert_null(outcome_find(os, "id2"));     /* 16 s old */
    assert_non_null(outcome_find(os, "id3")); /* in flight */
    assert_null(outcome_find(os, "id4"));     /* 11 s old */
    assert_non_null(outcome_find(os, "id5"));
    assert_int_equal(outcomes_count(os), 3);
    outcome_set_pending(os, owed, 0);
    outcomes_prune(os, 16000, 1000);
    assert_null(outcome_find(os, "id1"));
    outcomes_free(os);
}

typedef struct walk {
    outcomes *os;
    char seen[128];
} walk;

static void collect(outcome *o, void *arg)
{
    walk *w = arg;
    strcat(w->seen, o->id);
    strcat(w->seen, " ");
    if (strcmp(o->id, "id3") == 0)
        outcome_set_pending(w->os, o, 0); /* acknowledged while walked: off the list */
}

/* The walk of unfinished outcomes visits exactly the committed ones with pending branches and no
 * live transaction, whatever else is retained, and follows every change of pending. */
static void test_unfinished(void **state)
{
    outcomes *os = outcomes_new(10);
    walk w = {os, ""};
    outcome *o[7];
    for (int i = 1; i <= 6; i++)
        o[i] = add(os, i, i == 5 ? OUTCOME_ABORTED : OUTCOME_COMMITTED, 0);
    outcome_set_pending(os, o[2], 3);
    outcome_set_pending(os, o[3], 1);
    outcome_set_pending(os, o[4], 2);
    outcome_set_pending(os, o[6], 1);
    o[4]->live = o[4]; /* its transaction finishes it */
    outcome_set_pending(os, o[6], 0);
    outcomes_each_unfinished(os, collect, &w);
    assert_string_equal(w.seen, "id2 id3 ");
    w.seen[0] = '\0';
    outcomes_each_unfinished(os, collect, &w);
    assert_string_equal(w.seen, "id2 "); /* id3 left the list in the first walk */
    outcome_unindex(os, o[2]);
    w.seen[0] = '\0';
    outcomes_each_unfinished(os, collect, &w);
    assert_string_equal(w.seen, "");
    outcome_release(os, o[2]);
    o[4]->live = NULL;
    outcomes_free(os);
}

/* Times come from the journal and may be anything: the extremes neither overflow (UBSan) nor
 * stop the walk for good. */
static void test_prune_extreme_times(void **state)
{
    outcomes *os = outcomes_new(10);
    add(os, 1, OUTCOME_ABORTED, INT64_MIN);
    add(os, 2, OUTCOME_COMMITTED, INT64_MIN + 1);
    add(os, 3, OUTCOME_ABORTED, INT64_MAX);
    outcomes_prune(os, INT64_MAX, 1000);
    assert_null(outcome_find(os, "id1"));
    assert_null(outcome_find(os, "id2"));
    assert_non_null(outcome_find(os, "id3")); /* reached "now": within the retention */
    outcomes_prune(os, INT64_MIN, 1000);      /* a clock before everything prunes nothing */
    assert_int_equal(outcomes_count(os), 1);
    add(os, 4, OUTCOME_ABORTED, INT64_MIN);
    /* id3 is in the future: the walk stops there, as for a young outcome. */
    outcomes_prune(os, 0, 1000);
    assert_non_null(outcome_find(os, "id3"));
    outcomes_free(os);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups),    cmocka_unit_test(test_waiters),
        cmocka_unit_test(test_prune),      cmocka_unit_test(test_prune_extreme_times),
        cmocka_unit_test(test_unfinished),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
