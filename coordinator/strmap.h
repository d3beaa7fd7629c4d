/*
 * A string-keyed hash map with chaining, used for the transaction and outcome indexes. Keys are
 * borrowed: the caller keeps each key alive while its entry is in the map (values usually embed
 * their own key). Grows by doubling; lookups are O(1) on average.
 */
#ifndef XA_STRMAP_H
#define XA_STRMAP_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct strmap strmap;

XA_MUST_CHECK strmap *strmap_new(void);
void strmap_free(strmap *m);
/* Inserts or replaces: 0, or -ENOMEM. */
XA_MUST_CHECK int strmap_put(strmap *m, const char *key, void *value);
void *strmap_get(const strmap *m, const char *key);
/* Removes key; returns its value or NULL. */
void *strmap_del(strmap *m, const char *key);
size_t strmap_size(const strmap *m);
/* Calls fn for every entry; fn must not change the map. */
void strmap_each(const strmap *m, void (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
