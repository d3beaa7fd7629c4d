/*
 * Configuration reload (see reload.h). What changed is found by comparing the effective
 * configurations as config_dump writes them, key by key, so that no key is forgotten: one the
 * list below does not name is reported as needing a restart.
 */
#include "reload.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One "key = value" line of a dump, with the section it is in. */
typedef struct dump_line {
    char section[48]; /* "coordinator" or "participant.<name>" */
    char key[40];
    const char *value; /* into the dump's text */
} dump_line;

typedef struct dump {
    char *text;
    dump_line *lines;
    size_t n;
} dump;

static int dump_make(const config *cfg, dump *d)
{
    size_t len = 0, cap = 0;
    FILE *f = open_memstream(&d->text, &len);
    char section[48] = "", *save = NULL;
    d->lines = NULL;
    d->n = 0;
    if (!f)
        return -ENOMEM;
    config_dump(cfg, f);
    if (fclose(f) != 0)
        return -ENOMEM;
    for (char *line = strtok_r(d->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strstr(line, " = ");
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)strcspn(line + 1, "]"), line + 1);
            continue;
        }
        if (line[0] == ';' || !eq)
            continue;
        if (d->n == cap) {
            dump_line *grown = realloc(d->lines, (cap = cap ? 2 * cap : 64) * sizeof *grown);
            if (!grown)
                return -ENOMEM;
            d->lines = grown;
        }
        *eq = '\0';
        snprintf(d->lines[d->n].section, sizeof d->lines[d->n].section, "%s", section);
        snprintf(d->lines[d->n].key, sizeof d->lines[d->n].key, "%s", line);
        d->lines[d->n++].value = eq + 3;
    }
    return 0;
}

static void dump_free(dump *d)
{
    free(d->text);
    free(d->lines);
}

static const char *dump_get(const dump *d, const char *section, const char *key)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->lines[i].section, section) == 0 && strcmp(d->lines[i].key, key) == 0)
            return d->lines[i].value;
    return NULL;
}

/* ---- what may change ----------------------------------------------------------------------- */

static bool apply_coordinator(config *live, config *next, const char *key)
{
    log_level level;
    log_format format;
    if (strcmp(key, "log_level") == 0 && log_parse_level(next->log_level, &level) == 0) {
        log_set_level(level);
        memcpy(live->log_level, next->log_level, sizeof live->log_level);
    } else if (strcmp(key, "log_format") == 0 && log_parse_format(next->log_format, &format) == 0) {
        log_set_format(format);
        memcpy(live->log_format, next->log_format, sizeof live->log_format);
    } else if (strcmp(key, "max_inflight") == 0) {
        live->max_inflight = next->max_inflight;
    } else if (strcmp(key, "default_timeout_ms") == 0) {
        live->default_timeout_ms = next->default_timeout_ms;
    } else if (strcmp(key, "max_timeout_ms") == 0) {
        live->max_timeout_ms = next->max_timeout_ms;
    } else if (strcmp(key, "commit_wait_ms") == 0) {
        live->commit_wait_ms = next->commit_wait_ms;
    } else if (strcmp(key, "drain_limit_ms") == 0) {
        live->drain_limit_ms = next->drain_limit_ms;
    } else if (strcmp(key, "api_token_file") == 0) {
        char *file = live->api_token_file;
        live->api_token_file = next->api_token_file;
        next->api_token_file = file; /* freed with next */
    } else {
        return false;
    }
    return true;
}

static bool apply_participant(coord *c, config_participant *live, const config_participant *next,
                              const char *key)
{
    int i = coord_part_index(c, live->name);
    if (strcmp(key, "pool_size") == 0) {
        if (i < 0 || px_pool_resize(c->parts[i].pool, next->pool_size) != 0)
            return false;
        live->pool_size = next->pool_size;
    } else if (strcmp(key, "connect_timeout_ms") == 0) {
        live->connect_timeout_ms = live->target.connect_timeout_ms = next->connect_timeout_ms;
    } else if (strcmp(key, "lock_timeout_ms") == 0) {
        live->lock_timeout_ms = live->target.lock_timeout_ms = next->lock_timeout_ms;
    } else {
        return false;
    }
    return true;
}

/* ---- comparing ------------------------------------------------------------------------------ */

static bool apply_key(coord *c, config *live, config *next, const dump_line *l)
{
    const char *part = strncmp(l->section, "participant.", 12) == 0 ? l->section + 12 : NULL;
    config_participant *lp = NULL;
    if (!part)
        return apply_coordinator(live, next, l->key);
    for (int i = 0; i < live->nparticipants; i++)
        if (strcmp(live->participants[i].name, part) == 0)
            lp = &live->participants[i];
    return lp && apply_participant(c, lp, config_find_participant(next, part), l->key);
}

static bool has_section(const dump *d, const char *section)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->lines[i].section, section) == 0)
            return true;
    return false;
}

/* A participant added or removed: reported once, at its first key. */
static bool section_only_in(const dump *d, const dump *other, size_t i)
{
    const char *section = d->lines[i].section;
    return !has_section(other, section) &&
           (i == 0 || strcmp(d->lines[i - 1].section, section) != 0);
}

/* Every key whose value changed, or that is new: applied when it may change, else reported. */
static void changed_keys(coord *c, config *live, config *next, const dump *before,
                         const dump *after, int *applied, int *kept)
{
    for (size_t i = 0; i < after->n; i++) {
        const dump_line *l = &after->lines[i];
        const char *old = dump_get(before, l->section, l->key);
        if (old && strcmp(old, l->value) == 0)
            continue;
        if (!has_section(before, l->section)) {
            if (section_only_in(after, before, i)) {
                log_warn("reload", "[%s] was added: needs a restart", l->section);
                (*kept)++;
            }
        } else if (apply_key(c, live, next, l)) {
            log_info("reload", "[%s] %s: %s -> %s", l->section, l->key, old ? old : "(none)",
                     l->value);
            (*applied)++;
        } else {
            log_warn("reload", "[%s] %s: %s -> %s needs a restart; still %s", l->section, l->key,
                     old ? old : "(none)", l->value, old ? old : "(none)");
            (*kept)++;
        }
    }
}

/* Every key of the running configuration that the file no longer has. */
static void removed_keys(const dump *before, const dump *after, int *kept)
{
    for (size_t i = 0; i < before->n; i++) {
        const dump_line *l = &before->lines[i];
        if (dump_get(after, l->section, l->key))
            continue;
        if (has_section(after, l->section)) {
            log_warn("reload", "[%s] %s removed: needs a restart; still %s", l->section, l->key,
                     l->value);
            (*kept)++;
        } else if (section_only_in(before, after, i)) {
            log_warn("reload", "[%s] was removed: needs a restart; still in use", l->section);
            (*kept)++;
        }
    }
}

/* The token's text is a secret, so it is not in the dumps: compared here, never logged. */
static void swap_token(config *live, config *next, int *applied)
{
    bool same =
        (!live->api_token && !next->api_token) ||
        (live->api_token && next->api_token && strcmp(live->api_token, next->api_token) == 0);
    char *old = live->api_token;
    if (same)
        return;
    live->api_token = next->api_token;
    next->api_token = old; /* cleared and freed with next */
    log_info("reload", "API token %s",
             !live->api_token ? "removed: the API is open to anyone "
                                "who can reach it"
             : old            ? "replaced from api_token_file"
                              : "set: the API now needs it");
    (*applied)++;
}

static void passwords(const config *live, const config *next, int *kept)
{
    for (int i = 0; i < live->nparticipants; i++) {
        const config_participant *lp = &live->participants[i];
        const config_participant *np = config_find_participant(next, lp->name);
        if (np && ((!lp->password) != (!np->password) ||
                   (lp->password && strcmp(lp->password, np->password) != 0))) {
            log_warn("reload", "[participant.%s] the password changed: needs a restart", lp->name);
            (*kept)++;
        }
    }
}

void reload_config(coord *c, config *live)
{
    config next;
    dump before, after;
    char err[512];
    int applied = 0, kept = 0;

    if (config_load(live->path, &next, err, sizeof err) != 0) {
        log_error("reload", "SIGHUP: %s: nothing reloaded", err);
        return;
    }
    next.accept_damaged_tail = live->accept_damaged_tail;
    if (dump_make(live, &before) != 0 || dump_make(&next, &after) != 0) {
        log_error("reload", "SIGHUP: out of memory: nothing reloaded");
        config_free(&next);
        return;
    }
    changed_keys(c, live, &next, &before, &after, &applied, &kept);
    removed_keys(&before, &after, &kept);
    swap_token(live, &next, &applied);
    passwords(live, &next, &kept);
    log_info("reload", "SIGHUP: %s reloaded: %d change%s applied, %d needing a restart", live->path,
             applied, applied == 1 ? "" : "s", kept);
    dump_free(&before);
    dump_free(&after);
    config_free(&next);
}
