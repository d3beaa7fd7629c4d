/*
 * xacoord-drill: a crash-and-restart recovery test for a deployment of xacoord
 * (docs/xacoord-drill.1). Exit codes: 0 every check held, 1 a check failed, 2 bad usage, a bad
 * drill file or configuration, or the drill could not run.
 */
#include "conf.h"
#include "config.h"
#include "report.h"
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: xacoord-drill [--json] [--keep] DRILL_FILE\n"
                 "  Runs the drill DRILL_FILE describes against a coordinator it starts itself\n"
                 "  and prints a report; exit 0 only if every check holds.\n"
                 "  --json   the report as JSON\n"
                 "  --keep   keep the work directory (coordinator log, data directory)\n");
}

/* The coordinator's configuration with ${...} expanded, written into the work directory. 0, or a
 * negative errno with a message: drill_read_file's, -EINVAL (the expansion failed), -EIO. */
static int write_config(const char *src, const char *dst, char *err, size_t errlen)
{
    char *text = NULL, *expanded, msg[256];
    FILE *out;
    int fd, rc;
    if ((rc = drill_read_file(src, &text, err, errlen)) != 0)
        return rc;
    expanded = drill_expand(text, msg, sizeof msg);
    free(text);
    if (!expanded) {
        snprintf(err, errlen, "%s: %s", src, msg);
        return -EINVAL;
    }
    fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out || fputs(expanded, out) < 0 || fclose(out) != 0) {
        snprintf(err, errlen, "%s: %s", dst, strerror(errno));
        free(expanded);
        return -EIO;
    }
    free(expanded);
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* DRILL_DIR: the drill file's directory, for commands that name files beside it. 0, or
 * realpath's negative errno. */
static int set_drill_dir(const char *file)
{
    char *abs = realpath(file, NULL);
    if (!abs) {
        int rc = -errno;
        fprintf(stderr, "xacoord-drill: %s: %s\n", file, strerror(-rc));
        return rc;
    }
    setenv("DRILL_DIR", dirname(abs), 1);
    free(abs);
    return 0;
}

typedef struct options {
    bool json, keep;
    const char *file;
} options;

/* 0, or -EINVAL (said on stderr). */
static int parse_args(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o->json = true;
        else if (strcmp(argv[i], "--keep") == 0)
            o->keep = true;
        else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("xacoord-drill %s\n", XACOORD_VERSION);
            exit(0);
        } else if (argv[i][0] == '-' || o->file) {
            fprintf(stderr, "xacoord-drill: unexpected argument '%s'\n", argv[i]);
            return -EINVAL;
        } else
            o->file = argv[i];
    }
    if (!o->file)
        fprintf(stderr, "xacoord-drill: no drill file given\n");
    return o->file ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
    options o = {0};
    char work[256], cfg_path[300], log_path[300], err[1024];
    const char *tmp = getenv("TMPDIR");
    drill_conf c;
    config cfg;
    static drill_result r;
    int rc = 2;
    bool ran = false;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    snprintf(work, sizeof work, "%.200s/xacoord-drill-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(work)) {
        fprintf(stderr, "xacoord-drill: cannot make a work directory: %s\n", strerror(errno));
        return 2;
    }
    /* the drill file and the configuration may name the work directory (a fresh data_dir) */
    setenv("DRILL_WORK_DIR", work, 1);
    snprintf(cfg_path, sizeof cfg_path, "%s/xacoord.ini", work);
    snprintf(log_path, sizeof log_path, "%s/xacoord.log", work);
    if (set_drill_dir(o.file) != 0)
        goto out;
    if (drill_conf_load(o.file, &c, err, sizeof err) != 0) {
        fprintf(stderr, "xacoord-drill: %s\n", err);
        goto out;
    }
    if (write_config(c.config, cfg_path, err, sizeof err) != 0 ||
        config_load(cfg_path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "xacoord-drill: the coordinator's configuration (%s): %s\n", c.config, err);
        drill_conf_free(&c);
        goto out;
    }
    ran = true;
    if (drill_run(&c, &cfg, cfg_path, log_path, &r, err, sizeof err) != 0)
        fprintf(stderr, "xacoord-drill: %s\n", err);
    else {
        if (o.json)
            drill_report_json(&r, stdout);
        else
            drill_report_table(&r, stdout);
        rc = r.failed ? 1 : 0;
    }
    config_free(&cfg);
    drill_conf_free(&c);
out:
    /* the coordinator's log explains a failed drill; a file that did not load has none */
    if (o.keep || (ran && rc != 0))
        fprintf(stderr, "xacoord-drill: work directory kept: %s (coordinator log: %s)\n", work,
                log_path);
    else if (nftw(work, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "xacoord-drill: could not remove %s\n", work);
    return rc;
}
