/*
 * Journal replay (coordinator/journal.c) of a whole segment directory made of arbitrary bytes: the
 * first input byte says how many segments (1-3) the rest is split into. Replay either fails with a
 * message or hands over records that decode within the format's limits, and the journal it opened
 * takes a boot record and closes cleanly.
 */
#include "journal.h"
#include "scratch.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void on_replay(const journal_rec *r, void *arg)
{
    (void)arg;
    assert(r->type >= JOURNAL_BOOT && r->type <= JOURNAL_DONE);
    assert(r->payload_len <= JOURNAL_MAX_PAYLOAD);
    assert(r->payload_len == 0 || r->payload != NULL);
}

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[320];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void write_segment(int no, const uint8_t *data, size_t n)
{
    char p[320];
    FILE *f;
    snprintf(p, sizeof p, "%s/journal-%016x.log", dir, no);
    f = fopen(p, "w");
    assert(f);
    assert(fwrite(data, 1, n, f) == n);
    fclose(f);
}

/* Durability is not what is fuzzed: no fdatasync, so that replay gets the time. */
static int no_sync(int fd)
{
    (void)fd;
    return 0;
}

static void on_closed(void *arg)
{
    *(bool *)arg = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uv_loop_t loop;
    journal *j = NULL;
    char err[512] = "";
    bool closed = false;
    int segs;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/xacoord-fuzz-journal-%d", scratch_dir(), (int)getpid());
        mkdir(dir, 0700);
    }
    if (size == 0)
        return 0;
    segs = 1 + data[0] % 3;
    data++;
    size--;
    empty_dir();
    for (int i = 0; i < segs; i++) {
        size_t from = size * (size_t)i / (size_t)segs, to = size * (size_t)(i + 1) / (size_t)segs;
        write_segment(i + 1, data + from, to - from);
    }
    assert(uv_loop_init(&loop) == 0);
    static const journal_fileops ops = {write, no_sync};
    static const journal_opts opts = {.ops = &ops};
    if (journal_open(&j, &loop, dir, &opts, on_replay, NULL, err, sizeof err) != 0) {
        assert(err[0] != '\0' && j == NULL);
    } else {
        uint64_t last = journal_last_boot(j), boot = 0;
        int rc = journal_start_boot(j, &boot, err, sizeof err);
        assert(rc < 0 ? err[0] != '\0' : rc == 0 && boot == last + 1);
        journal_close(j, on_closed, &closed);
        while (!closed)
            uv_run(&loop, UV_RUN_ONCE);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    assert(uv_loop_close(&loop) == 0);
    return 0;
}
