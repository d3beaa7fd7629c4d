/*
 * An intrusive doubly linked list that keeps its length, shared by the coordinator and the drivers.
 *
 * An object joins a list through a list_node embedded in it, and list_entry turns the node back
 * into the object, as with libuv's queue.h; the list counts its nodes, as pgbouncer's statlist, so
 * that a gauge of objects in a state is the count of that state's list. A node also remembers the
 * list it is on: inserting a node that is linked, or removing one from a list it is not on, is a
 * bug caught at once (XA_CHECK, check.h) rather than a corrupted list found much later.
 * All-zero bytes are an empty list and an unlinked node, so calloc'ed objects need no set-up.
 */
#ifndef XA_LIST_H
#define XA_LIST_H

#include "check.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct list_node {
    struct list_node *prev, *next;
    const struct list_head *on; /* the list holding the node; NULL while unlinked */
} list_node;

typedef struct list_head {
    list_node *first, *last;
    size_t count;
} list_head;

/* The object of type `type` whose member `member` is the node n. */
#define list_entry(n, type, member) ((type *)(void *)((char *)(n)-offsetof(type, member)))

/* Visits every node of l in order, n naming the current one (no insertion or removal meanwhile). */
#define list_each(n, l) for (list_node *n = (l)->first; n; n = n->next)

/* The same, but the body may remove n (or free its object): the next node is read beforehand. */
#define list_each_safe(n, tmp, l)                                                                  \
    for (list_node *n = (l)->first, *tmp = n ? n->next : NULL; n; n = tmp, tmp = n ? n->next : NULL)

static inline void list_init(list_head *l)
{
    l->first = l->last = NULL;
    l->count = 0;
}

static inline bool list_linked(const list_node *n)
{
    return n->on != NULL;
}

static inline bool list_empty(const list_head *l)
{
    return l->first == NULL;
}

static inline size_t list_count(const list_head *l)
{
    return l->count;
}

static inline list_node *list_first(const list_head *l)
{
    return l->first;
}

static inline list_node *list_last(const list_head *l)
{
    return l->last;
}

/* Links n between prev and next (either NULL at an end). */
static inline void list_link_between(list_head *l, list_node *n, list_node *prev, list_node *next)
{
    XA_CHECK(!n->on, "list node %p inserted into list %p but already on list %p", (void *)n,
             (void *)l, (const void *)n->on);
    n->prev = prev;
    n->next = next;
    if (prev)
        prev->next = n;
    else
        l->first = n;
    if (next)
        next->prev = n;
    else
        l->last = n;
    n->on = l;
    l->count++;
}

static inline void list_push_head(list_head *l, list_node *n)
{
    list_link_between(l, n, NULL, l->first);
}

static inline void list_push_tail(list_head *l, list_node *n)
{
    list_link_between(l, n, l->last, NULL);
}

static inline void list_remove(list_head *l, list_node *n)
{
    XA_CHECK(n->on == l, "list node %p removed from list %p but is on list %p", (void *)n,
             (void *)l, (const void *)n->on);
    if (n->prev)
        n->prev->next = n->next;
    else
        l->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->last = n->prev;
    n->prev = n->next = NULL;
    n->on = NULL;
    l->count--;
}

#endif
