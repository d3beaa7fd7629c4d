/*
 * Data directory identities and gtrids (see identity.h).
 *
 * Length: the longest xa2 gtrid is "xa2." (4) + node_id (16) + "." + identity (8) + "." + boot +
 * "." + seq. In decimal, two uint64 values need up to 20 digits each: 71 bytes, beyond MySQL's 64.
 * In base 36 they need at most 13 each (36^13 > 2^64): 57 bytes, so every boot and every seq fits
 * and no cap or special case exists. The PostgreSQL gid adds "." and a participant name of at most
 * 32: 90 <= 199. (xa1: 4 + 16 + 1 + 20 + 1 + 20 = 62.)
 */
#include "identity.h"

#include "config.h"
#include "participant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define DIGITS "0123456789abcdefghijklmnopqrstuvwxyz"
#define BASE32 "abcdefghijklmnopqrstuvwxyz234567"
#define U64_BASE36_MAX 13
#define GTRID_MAX_LEN                                                                              \
    (4 + GTRID_NODE_MAX + 1 + IDENTITY_LEN + 1 + U64_BASE36_MAX + 1 + U64_BASE36_MAX)
#define FILE_MAX 128

_Static_assert(GTRID_MAX_LEN <= PX_XID_PART_MAX, "an xa2 gtrid must fit MySQL's 64 bytes");
_Static_assert(GTRID_MAX_LEN + 1 + 32 <= 199, "a PostgreSQL gid must fit 199 bytes");
_Static_assert(sizeof(((config *)0)->node_id) == GTRID_NODE_MAX + 1, "node_id length");

/* ---- gtrids ------------------------------------------------------------------------------ */

/* v in base (10 or 36) into out (>= 21 bytes). */
static void put_num(uint64_t v, unsigned base, char *out)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = DIGITS[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

int gtrid_format(const gtrid_parts *g, char *buf, size_t len)
{
    unsigned base = g->version == 1 ? 10 : 36;
    char boot[24], seq[24];
    int n;
    put_num(g->boot, base, boot);
    put_num(g->seq, base, seq);
    if (g->version == 1)
        n = snprintf(buf, len, "xa1.%s.%s.%s", g->node, boot, seq);
    else
        n = snprintf(buf, len, "xa2.%s.%s.%s.%s", g->node, g->identity, boot, seq);
    return n > 0 && (size_t)n < len ? 0 : -ERANGE;
}

/* Splits s at its dots into at most max fields; returns the count, or -E2BIG when there are
 * more. */
static int split(const char *s, const char **field, size_t *flen, int max)
{
    for (int n = 0; n < max; n++) {
        const char *dot = strchr(s, '.');
        field[n] = s;
        flen[n] = dot ? (size_t)(dot - s) : strlen(s);
        if (!dot)
            return n + 1;
        s = dot + 1;
    }
    return -E2BIG;
}

/* A number without sign, leading zero or overflow, so that parse and format are inverses. */
static int parse_num(const char *s, size_t n, unsigned base, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || (n > 1 && s[0] == '0'))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const char *d = memchr(DIGITS, s[i], base);
        if (!d || v > (UINT64_MAX - (uint64_t)(d - DIGITS)) / base)
            return -EINVAL;
        v = v * base + (uint64_t)(d - DIGITS);
    }
    *out = v;
    return 0;
}

static bool all_in(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

int gtrid_parse(const char *s, gtrid_parts *g)
{
    const char *f[5];
    size_t len[5];
    int n = split(s, f, len, 5);
    int v = n == 4 && len[0] == 3 && memcmp(f[0], "xa1", 3) == 0   ? 1
            : n == 5 && len[0] == 3 && memcmp(f[0], "xa2", 3) == 0 ? 2
                                                                   : 0;
    unsigned base = v == 1 ? 10 : 36;
    if (!v || len[1] < 1 || len[1] > GTRID_NODE_MAX || !all_in(f[1], len[1], DIGITS))
        return -EINVAL;
    if (v == 2 && (len[2] != IDENTITY_LEN || !all_in(f[2], len[2], BASE32)))
        return -EINVAL;
    if (parse_num(f[n - 2], len[n - 2], base, &g->boot) != 0 ||
        parse_num(f[n - 1], len[n - 1], base, &g->seq) != 0)
        return -EINVAL;
    g->version = v;
    memcpy(g->node, f[1], len[1]);
    g->node[len[1]] = '\0';
    memcpy(g->identity, f[2], v == 2 ? IDENTITY_LEN : 0);
    g->identity[v == 2 ? IDENTITY_LEN : 0] = '\0';
    return 0;
}

void gtrid_prefix(int version, const char *node, const char *identity, char *buf, size_t len)
{
    snprintf(buf, len, "xa%d.%s.%s%s", version, node, identity ? identity : "",
             identity ? "." : "");
}

const char *gtrid_identity(const gtrid_parts *g)
{
    return g->version == 1 ? IDENTITY_LEGACY : g->identity;
}

/* ---- ownership --------------------------------------------------------------------------- */

void identity_gtrid(const dir_identity *id, const char *node, uint64_t boot, uint64_t seq,
                    char *buf, size_t len)
{
    /* No identity yet: a journal from before identities is being replayed, all of it xa1. */
    gtrid_parts g = {
        .version = !id->id[0] || boot <= id->legacy_boot ? 1 : 2, .boot = boot, .seq = seq};
    snprintf(g.node, sizeof g.node, "%s", node);
    snprintf(g.identity, sizeof g.identity, "%s", g.version == 2 ? id->id : "");
    if (gtrid_format(&g, buf, len) != 0)
        buf[0] = '\0'; /* only with a buffer below PX_XID_PART_MAX + 1: matches nothing */
}

bool identity_owns(const dir_identity *id, const char *node, const gtrid_parts *g)
{
    if (strcmp(g->node, node) != 0)
        return false;
    if (g->version == 2)
        return strcmp(g->identity, id->id) == 0;
    /* xa1: only a directory from before identities, and only its boots before the upgrade. */
    return id->legacy_boot > 0 && g->boot <= id->legacy_boot;
}

bool identity_valid(const char *s, bool legacy)
{
    if (legacy && strcmp(s, IDENTITY_LEGACY) == 0)
        return true;
    return strlen(s) == IDENTITY_LEN && all_in(s, IDENTITY_LEN, BASE32);
}

/* ---- the identity file ------------------------------------------------------------------- */

/* "<identity>\n" and, after an upgrade, "legacy_boot <n>\n": nothing else. */
static int parse_file(const char *text, dir_identity *out)
{
    const char *nl = strchr(text, '\n'), *rest;
    size_t n;
    if (!nl || nl - text != IDENTITY_LEN || !all_in(text, IDENTITY_LEN, BASE32))
        return -EINVAL;
    memcpy(out->id, text, IDENTITY_LEN);
    out->id[IDENTITY_LEN] = '\0';
    out->legacy_boot = 0;
    rest = nl + 1;
    if (!*rest)
        return 0;
    nl = strchr(rest, '\n');
    if (!nl || nl[1] || strncmp(rest, "legacy_boot ", 12) != 0)
        return -EINVAL;
    n = (size_t)(nl - rest) - 12;
    if (parse_num(rest + 12, n, 10, &out->legacy_boot) != 0 || out->legacy_boot == 0)
        return -EINVAL;
    return 0;
}

int identity_load(const char *dir, dir_identity *out, char *err, size_t errlen)
{
    char path[4096], text[FILE_MAX + 1];
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "%s/identity", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
        return -e;
    }
    n = read(fd, text, FILE_MAX + 1);
    close(fd);
    if (n >= 0 && n <= FILE_MAX && memchr(text, '\0', (size_t)n) == NULL) {
        text[n] = '\0';
        if (parse_file(text, out) == 0)
            return 1;
    }
    snprintf(err, errlen,
             "%s is corrupt (want 8 characters of [a-z2-7] on the first line, and optionally "
             "'legacy_boot N' on the second): every prepared branch of this data directory is "
             "named after it - restore it from a backup or see docs/operations.md, section 1",
             path);
    return -EINVAL;
}

static int random_identity(char *out, char *err, size_t errlen)
{
    unsigned char r[5]; /* 40 bits: 8 characters of base 32 */
    uint64_t bits = 0;
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = getrandom(r + got, sizeof r - got, 0);
        if (n < 0 && errno != EINTR) {
            snprintf(err, errlen, "cannot make a data directory identity: getrandom: %s",
                     strerror(errno));
            return -EIO;
        }
        got += n > 0 ? (size_t)n : 0;
    }
    for (size_t i = 0; i < sizeof r; i++)
        bits = bits << 8 | r[i];
    for (int i = 0; i < IDENTITY_LEN; i++)
        out[i] = BASE32[(bits >> (5 * (IDENTITY_LEN - 1 - i))) & 31];
    out[IDENTITY_LEN] = '\0';
    return 0;
}

static int write_durably(const char *dir, const char *text, char *err, size_t errlen)
{
    char tmp[4096], path[4096];
    size_t len = strlen(text);
    int fd, dfd, rc = 0;
    snprintf(tmp, sizeof tmp, "%s/identity.tmp", dir);
    snprintf(path, sizeof path, "%s/identity", dir);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0)
        rc = -EIO;
    if (fd >= 0 && close(fd) != 0)
        rc = -EIO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -EIO;
    dfd = rc == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (rc == 0 && (dfd < 0 || fsync(dfd) != 0))
        rc = -EIO;
    if (dfd >= 0)
        close(dfd);
    if (rc != 0)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

int identity_create(const char *dir, uint64_t legacy_boot, dir_identity *out, char *err,
                    size_t errlen)
{
    char text[FILE_MAX];
    dir_identity id = {.legacy_boot = legacy_boot};
    int rc;
    if ((rc = random_identity(id.id, err, errlen)) != 0)
        return rc;
    if (legacy_boot)
        snprintf(text, sizeof text, "%s\nlegacy_boot %llu\n", id.id,
                 (unsigned long long)legacy_boot);
    else
        snprintf(text, sizeof text, "%s\n", id.id);
    if ((rc = write_durably(dir, text, err, errlen)) != 0)
        return rc;
    *out = id;
    return 0;
}
