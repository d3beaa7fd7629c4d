/*
 * The workload (workload.h).
 */
#include "workload.h"

#include <jansson.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void add_value(drill_values *v, const char *name, const char *text, bool number)
{
    snprintf(v->name[v->n], sizeof v->name[0], "%s", name);
    snprintf(v->text[v->n], sizeof v->text[0], "%s", text);
    v->number[v->n++] = number;
}

/* The sample values that check a template at start-up: each parameter's first value. */
static void sample(const drill_template *t, drill_values *v)
{
    memset(v, 0, sizeof *v);
    add_value(v, "id", "drill-check", false);
    for (int i = 0; i < t->nparams; i++) {
        const drill_param *p = &t->params[i];
        char num[32];
        snprintf(num, sizeof num, "%lld", p->lo);
        add_value(v, p->name, p->kind == PARAM_CHOICE ? p->choices[0] : num,
                  p->kind != PARAM_CHOICE);
    }
}

int drill_workload_init(drill_workload *w, const drill_conf *c, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    pthread_mutex_init(&w->lock, NULL);
    for (int i = 0; i < c->ntemplates; i++) {
        const drill_template *t = &c->templates[i];
        drill_values v;
        char msg[256], *body, *sql;
        w->total_weight += t->weight;
        for (int j = 0; j < t->nparams; j++)
            w->next[i][j] = t->params[j].lo;
        sample(t, &v);
        body = drill_body(t, &v, msg, sizeof msg);
        sql = t->has_verify ? drill_substitute(t->verify.sql, &v, false, msg, sizeof msg) : NULL;
        free(body);
        free(sql);
        if (!body || (t->has_verify && !sql)) {
            set_err(err, errlen, "[template.%s] %s: %s", t->name, body ? "verify" : t->file, msg);
            drill_workload_destroy(w);
            return -EINVAL;
        }
    }
    return 0;
}

void drill_workload_destroy(drill_workload *w)
{
    pthread_mutex_destroy(&w->lock);
}

int drill_workload_pick(drill_workload *w, unsigned *seed, const char *id, drill_values *v)
{
    const drill_conf *c = w->c;
    int r = (int)(rand_r(seed) % (unsigned)w->total_weight), ti = 0;
    while (r >= c->templates[ti].weight)
        r -= c->templates[ti++].weight;
    const drill_template *t = &c->templates[ti];
    memset(v, 0, sizeof *v);
    add_value(v, "id", id, false);
    for (int i = 0; i < t->nparams; i++) {
        const drill_param *p = &t->params[i];
        char num[32];
        long long x = p->lo;
        switch (p->kind) {
        case PARAM_RANGE:
            /* two draws: RAND_MAX may be below the range's width */
            x = p->lo + (long long)((((unsigned long long)rand_r(seed) << 31) ^
                                     (unsigned long long)rand_r(seed)) %
                                    (unsigned long long)(p->hi - p->lo + 1));
            break;
        case PARAM_SEQ:
            pthread_mutex_lock(&w->lock);
            x = w->next[ti][i]++;
            pthread_mutex_unlock(&w->lock);
            break;
        case PARAM_CHOICE:
            add_value(v, p->name, p->choices[rand_r(seed) % (unsigned)p->nchoices], false);
            continue;
        }
        snprintf(num, sizeof num, "%lld", x);
        add_value(v, p->name, num, true);
    }
    return ti;
}

/* The index of the value named, or -1 for none: a lookup, like a NULL from a find. */
static int find(const drill_values *v, const char *name, size_t len)
{
    for (int i = 0; i < v->n; i++)
        if (strlen(v->name[i]) == len && strncmp(v->name[i], name, len) == 0)
            return i;
    return -1;
}

char *drill_substitute(const char *text, const drill_values *v, bool json, char *err, size_t errlen)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    for (const char *s = text; *s;) {
        const char *open = strstr(s, "${"), *close;
        if (!open) {
            fputs(s, f);
            break;
        }
        close = strchr(open, '}');
        int i = close ? find(v, open + 2, (size_t)(close - open - 2)) : -1;
        if (i < 0) {
            set_err(err, errlen, "unknown parameter %.*s (define it as param.NAME)",
                    close ? (int)(close - open + 1) : 12, open);
            fclose(f);
            free(out);
            return NULL;
        }
        bool whole = json && open > s && open[-1] == '"' && close[1] == '"';
        fwrite(s, 1, (size_t)(open - s) - (whole && v->number[i] ? 1 : 0), f);
        fputs(v->text[i], f);
        s = close + 1 + (whole && v->number[i] ? 1 : 0);
    }
    fclose(f);
    return out;
}

char *drill_body(const drill_template *t, const drill_values *v, char *err, size_t errlen)
{
    char *text = drill_substitute(t->body, v, true, err, errlen), *out = NULL;
    json_error_t je;
    json_t *root;
    if (!text)
        return NULL;
    root = json_loads(text, 0, &je);
    free(text);
    if (!root) {
        set_err(err, errlen, "not JSON after substitution: %s (line %d)", je.text, je.line);
        return NULL;
    }
    if (!json_is_object(root) || !json_is_array(json_object_get(root, "branches"))) {
        set_err(err, errlen, "not a transaction: a JSON object with \"branches\" is expected");
        json_decref(root);
        return NULL;
    }
    /* the drill names every transaction itself, to ask GET about it afterwards */
    json_object_set_new(root, "id", json_string(v->text[0]));
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}
