/*
 * String-keyed hash map (see strmap.h). FNV-1a hashing, power-of-two bucket counts, chains.
 */
#include "strmap.h"

#include <errno.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    const char *key;
    void *value;
    uint64_t hash;
    struct entry *next;
} entry;

struct strmap {
    entry **buckets;
    size_t nbuckets;
    size_t size;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

strmap *strmap_new(void)
{
    strmap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void strmap_free(strmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry *e = m->buckets[i];
        while (e) {
            entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static entry **find_slot(const strmap *m, const char *key, uint64_t h)
{
    entry **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

static void grow(strmap *m)
{
    size_t n = m->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b)
        return; /* keep the longer chains; still correct */
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry *e = m->buckets[i];
        while (e) {
            entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int strmap_put(strmap *m, const char *key, void *value)
{
    uint64_t h = hash_str(key);
    entry **p = find_slot(m, key, h);
    if (*p) {
        (*p)->key = key;
        (*p)->value = value;
        return 0;
    }
    entry *e = malloc(sizeof *e);
    if (!e)
        return -ENOMEM;
    *e = (entry){key, value, h, NULL};
    *p = e;
    if (++m->size > m->nbuckets)
        grow(m);
    return 0;
}

void *strmap_get(const strmap *m, const char *key)
{
    entry **p = find_slot(m, key, hash_str(key));
    return *p ? (*p)->value : NULL;
}

void *strmap_del(strmap *m, const char *key)
{
    entry **p = find_slot(m, key, hash_str(key));
    entry *e = *p;
    void *v;
    if (!e)
        return NULL;
    v = e->value;
    *p = e->next;
    free(e);
    m->size--;
    return v;
}

size_t strmap_size(const strmap *m)
{
    return m->size;
}

void strmap_each(const strmap *m, void (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, arg);
}
