/*
 * The configuration loader (coordinator/config.c) on arbitrary files: it loads or names the
 * problem, and what it loads, config_dump writes back in a form that loads to the same dump.
 */
#include "config.h"
#include "scratch.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void write_file(const char *p, const void *data, size_t n)
{
    FILE *f = fopen(p, "w");
    assert(f);
    assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static char *dump(const config *cfg, size_t *n)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, n);
    assert(f);
    config_dump(cfg, f);
    fclose(f);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    config cfg, again;
    char err[1024] = "";
    size_t n1, n2;
    if (!path[0])
        snprintf(path, sizeof path, "%s/xacoord-fuzz-config-%d.ini", scratch_dir(), (int)getpid());
    write_file(path, data, size);
    if (config_load(path, &cfg, err, sizeof err) != 0) {
        assert(err[0] != '\0');
        return 0;
    }
    char *first = dump(&cfg, &n1);
    config_free(&cfg);
    write_file(path, first, n1);
    if (config_load(path, &again, err, sizeof err) != 0) {
        fprintf(stderr, "the dump does not load back: %s\n%s", err, first);
        abort();
    }
    char *second = dump(&again, &n2);
    config_free(&again);
    /* The first line names the file, the same one both times. */
    assert(n1 == n2 && memcmp(first, second, n1) == 0);
    free(first);
    free(second);
    return 0;
}
