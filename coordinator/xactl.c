/*
 * xactl: the command-line client of the coordinator's HTTP API. Human output by default, the
 * server's JSON with --json. The exit code tells the outcome, so scripts need not parse text:
 *   0 committed / ok, 1 aborted, 2 bad usage, 3 rejected (4xx), 4 unavailable (503 or no answer).
 * The token is read from a file (--token-file or XACOORD_TOKEN_FILE), never from the command line.
 */
#include "httpc.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_ABORTED = 1, EXIT_USAGE = 2, EXIT_REJECTED = 3, EXIT_UNAVAILABLE = 4 };

typedef struct client {
    char host[64];
    int port;
    char *token;
    bool json;
} client;

typedef struct reply {
    int status;
    char *body;
} reply;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: xactl [--url http://HOST:PORT] [--token-file FILE] [--json] COMMAND\n"
            "commands:\n"
            "  submit FILE|-            run the transaction described by a JSON file (or stdin)\n"
            "  show ID                  the outcome of a transaction\n"
            "  in-doubt                 prepared branches this coordinator has not finished\n"
            "  resolve XID commit|rollback   finish an in-doubt branch by hand\n"
            "  takeover IDENTITY --rollback|--commit   finish every foreign branch of a lost\n"
            "                           data directory's identity (the decision is required)\n"
            "  health                   liveness and readiness, per participant\n"
            "  metrics                  a summary of /metrics\n"
            "The default URL is http://127.0.0.1:7070 (or $XACOORD_URL).\n"
            "Exit: 0 committed/ok, 1 aborted, 2 usage, 3 rejected, 4 unavailable.\n");
}

/* ---- HTTP -------------------------------------------------------------------------------- */

/* 0, -EINVAL for no HOST:PORT, -ERANGE for a host too long or a port out of range. */
static int parse_url(client *c, const char *url)
{
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    const char *colon = strrchr(p, ':');
    size_t hl;
    if (!colon || colon == p)
        return -EINVAL;
    hl = (size_t)(colon - p);
    if (hl >= sizeof c->host)
        return -ERANGE;
    memcpy(c->host, p, hl);
    c->host[hl] = '\0';
    c->port = atoi(colon + 1);
    return c->port > 0 && c->port < 65536 ? 0 : -ERANGE;
}

/* 0 with the answer in *r (any HTTP status), or httpc_request's negative errno: no answer. */
static int request(const client *c, const char *method, const char *path, const char *body,
                   reply *r)
{
    r->status = httpc_request(c->host, c->port, method, path, c->token, body, &r->body);
    return r->status < 0 ? r->status : 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static int status_exit(int status, const char *outcome)
{
    if (status == 200)
        return outcome && strcmp(outcome, "aborted") == 0 ? EXIT_ABORTED : EXIT_OK;
    if (status == 409)
        return EXIT_ABORTED;
    if (status == 503 || status < 0)
        return EXIT_UNAVAILABLE;
    return EXIT_REJECTED;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void print_list(const char *label, json_t *arr)
{
    size_t i;
    json_t *v;
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return;
    printf("%s:", label);
    json_array_foreach(arr, i, v) printf(" %s", json_is_string(v) ? json_string_value(v) : "?");
    printf("\n");
}

static void print_outcome(json_t *j)
{
    json_t *failed = json_object_get(j, "failed");
    printf("%s %s", jstr(j, "id") ? jstr(j, "id") : "?",
           jstr(j, "outcome") ? jstr(j, "outcome") : "?");
    if (json_is_true(json_object_get(j, "replayed")))
        printf(" (replayed)");
    printf("\n");
    if (jstr(j, "xid"))
        printf("xid: %s\n", jstr(j, "xid"));
    if (jstr(j, "reason"))
        printf("reason: %s\n", jstr(j, "reason"));
    if (json_is_object(failed)) {
        json_t *st = json_object_get(failed, "statement");
        printf("failed: participant %s",
               jstr(failed, "participant") ? jstr(failed, "participant") : "?");
        if (json_is_integer(st))
            printf(", statement %lld", (long long)json_integer_value(st));
        if (jstr(failed, "sqlstate"))
            printf(", sqlstate %s", jstr(failed, "sqlstate"));
        printf(": %s\n", jstr(failed, "message") ? jstr(failed, "message") : "");
    }
    print_list("pending (will commit)", json_object_get(j, "pending"));
}

/* Prints a reply and returns the exit code. human prints the parsed body for a 2xx/409. */
static int finish(const client *c, const reply *r, void (*human)(json_t *))
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    int code = status_exit(r->status, j ? jstr(j, "outcome") : NULL);
    if (c->json) {
        printf("%s\n", r->body ? r->body : "");
    } else if (j && jstr(j, "error")) {
        fprintf(stderr, "xactl: HTTP %d: %s\n", r->status, jstr(j, "error"));
    } else if (j && human) {
        human(j);
    } else {
        printf("HTTP %d\n%s\n", r->status, r->body ? r->body : "");
    }
    json_decref(j);
    return code;
}

static int unreachable(const client *c)
{
    fprintf(stderr, "xactl: no answer from %s:%d\n", c->host, c->port);
    return EXIT_UNAVAILABLE;
}

/* ---- commands ---------------------------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (!f)
        return NULL;
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    buf[len] = '\0';
    if (f != stdin)
        fclose(f);
    return buf;
}

static int cmd_submit(const client *c, const char *path)
{
    reply r;
    char *body = read_file(path);
    int code;
    if (!body) {
        fprintf(stderr, "xactl: cannot read %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    if (request(c, "POST", "/v1/transactions", body, &r) != 0) {
        free(body);
        return unreachable(c);
    }
    free(body);
    code = finish(c, &r, print_outcome);
    free(r.body);
    return code;
}

static int cmd_get(const client *c, const char *path, void (*human)(json_t *))
{
    reply r;
    int code;
    if (request(c, "GET", path, NULL, &r) != 0)
        return unreachable(c);
    code = finish(c, &r, human);
    free(r.body);
    return code;
}

static void print_health(json_t *j)
{
    const char *name;
    json_t *v;
    printf("ready: %s\n", json_is_true(json_object_get(j, "ready")) ? "yes" : "no");
    json_object_foreach(json_object_get(j, "participants"), name, v)
        printf("  %-20s %s\n", name, json_is_string(v) ? json_string_value(v) : "?");
}

static void print_in_doubt(json_t *j)
{
    size_t i;
    json_t *b, *arr = json_object_get(j, "branches");
    if (json_array_size(arr) == 0) {
        printf("no in-doubt branches\n");
        return;
    }
    printf("%-40s %-16s %8s %s\n", "XID", "PARTICIPANT", "AGE_S", "DECISION");
    json_array_foreach(arr, i, b) printf(
        "%-40s %-16s %8.1f %s%s%s\n", jstr(b, "xid") ? jstr(b, "xid") : "?",
        jstr(b, "participant") ? jstr(b, "participant") : "?",
        json_number_value(json_object_get(b, "age_s")),
        jstr(b, "decision") ? jstr(b, "decision") : "?", jstr(b, "identity") ? " of identity " : "",
        jstr(b, "identity") ? jstr(b, "identity") : "");
}

static int cmd_health(const client *c)
{
    reply r;
    int code;
    if (request(c, "GET", "/healthz", NULL, &r) != 0)
        return unreachable(c);
    free(r.body);
    if (request(c, "GET", "/readyz", NULL, &r) != 0)
        return unreachable(c);
    code = finish(c, &r, print_health);
    free(r.body);
    return code == EXIT_OK ? EXIT_OK : EXIT_UNAVAILABLE;
}

/* Sums the samples of one metric name (all label sets) in Prometheus text. */
static double metric_sum(const char *text, const char *name, const char *label)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) != 0 || (line[nl] != ' ' && line[nl] != '{'))
            continue;
        const char *end = strchr(line, '\n');
        if (label) {
            const char *hit = strstr(line, label);
            if (!hit || (end && hit > end))
                continue;
        }
        const char *sp = line + nl;
        if (*sp == '{')
            sp = strchr(sp, '}') + 1;
        sum += strtod(sp, NULL);
    }
    return sum;
}

static int cmd_metrics(const client *c)
{
    reply r;
    if (request(c, "GET", "/metrics", NULL, &r) != 0)
        return unreachable(c);
    if (r.status != 200 || c->json) {
        printf("%s", r.body);
    } else {
        printf("committed    %.0f\n",
               metric_sum(r.body, "xacoord_transactions_total", "committed"));
        printf("aborted      %.0f\n", metric_sum(r.body, "xacoord_transactions_total", "aborted"));
        printf("rejected     %.0f\n", metric_sum(r.body, "xacoord_transactions_total", "rejected"));
        printf("in flight    %.0f\n", metric_sum(r.body, "xacoord_inflight_transactions", NULL));
        printf("in doubt     %.0f\n", metric_sum(r.body, "xacoord_in_doubt_branches", NULL));
        printf("retries      %.0f\n", metric_sum(r.body, "xacoord_phase2_retries_total", NULL));
    }
    int code = status_exit(r.status, NULL);
    free(r.body);
    return code;
}

static int cmd_resolve(const client *c, const char *xid, const char *action)
{
    char path[256];
    reply r;
    int code;
    if (strcmp(action, "commit") != 0 && strcmp(action, "rollback") != 0) {
        fprintf(stderr, "xactl: resolve takes commit or rollback, not '%s'\n", action);
        return EXIT_USAGE;
    }
    snprintf(path, sizeof path, "/v1/in-doubt/%s/%s", xid, action);
    if (request(c, "POST", path, "", &r) != 0)
        return unreachable(c);
    code = finish(c, &r, NULL);
    free(r.body);
    return code;
}

static void print_branches(const char *label, json_t *arr)
{
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b)
    {
        printf("%s %s %s", label, jstr(b, "xid") ? jstr(b, "xid") : "?",
               jstr(b, "participant") ? jstr(b, "participant") : "?");
        if (jstr(b, "error"))
            printf(": %s", jstr(b, "error"));
        printf("\n");
    }
}

static void print_takeover(json_t *j)
{
    const char *done =
        json_is_string(json_object_get(j, "decision")) && strcmp(jstr(j, "decision"), "commit") == 0
            ? "committed"
            : "rolled back";
    print_branches(done, json_object_get(j, "resolved"));
    print_branches("FAILED", json_object_get(j, "failed"));
}

/* The decision is an option, never a default: a takeover cannot be undone. */
static int cmd_takeover(const client *c, const char *identity, const char *decision)
{
    char path[256];
    reply r;
    int code;
    json_t *j;
    if (!decision) {
        fprintf(stderr, "xactl: takeover needs --rollback (presumed abort) or --commit\n");
        return EXIT_USAGE;
    }
    snprintf(path, sizeof path, "/v1/takeover/%s?decision=%s", identity, decision);
    if (request(c, "POST", path, "", &r) != 0)
        return unreachable(c);
    code = finish(c, &r, print_takeover);
    j = r.status == 200 && r.body ? json_loads(r.body, 0, NULL) : NULL;
    if (j && json_array_size(json_object_get(j, "failed")) > 0)
        code = EXIT_ABORTED; /* some branches are still prepared */
    json_decref(j);
    free(r.body);
    return code;
}

static char *read_token(const char *path)
{
    char *t = read_file(path);
    if (t)
        t[strcspn(t, "\r\n")] = '\0';
    return t;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
                                         {"token-file", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"commit", no_argument, NULL, 'C'},
                                         {"rollback", no_argument, NULL, 'R'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    client c = {.json = false};
    const char *url = getenv("XACOORD_URL"), *token_file = getenv("XACOORD_TOKEN_FILE");
    const char *cmd, *decision = NULL; /* takeover's --commit or --rollback */
    int ch;

    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'j':
            c.json = true;
            break;
        case 'C':
        case 'R':
            if (decision) {
                fprintf(stderr, "xactl: give one of --commit and --rollback\n");
                return EXIT_USAGE;
            }
            decision = ch == 'C' ? "commit" : "rollback";
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (parse_url(&c, url ? url : "http://127.0.0.1:7070") != 0) {
        fprintf(stderr, "xactl: bad URL '%s': want http://HOST:PORT with a numeric host\n", url);
        return EXIT_USAGE;
    }
    if (token_file && !(c.token = read_token(token_file))) {
        fprintf(stderr, "xactl: cannot read token file %s: %s\n", token_file, strerror(errno));
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[optind++];
    if (decision && strcmp(cmd, "takeover") != 0) {
        fprintf(stderr, "xactl: --commit and --rollback belong to takeover\n");
        return EXIT_USAGE;
    }
    int left = argc - optind, code = EXIT_USAGE;
    char path[256];
    if (strcmp(cmd, "submit") == 0 && left == 1) {
        code = cmd_submit(&c, argv[optind]);
    } else if (strcmp(cmd, "show") == 0 && left == 1) {
        snprintf(path, sizeof path, "/v1/transactions/%s", argv[optind]);
        code = cmd_get(&c, path, print_outcome);
    } else if (strcmp(cmd, "in-doubt") == 0 && left == 0) {
        code = cmd_get(&c, "/v1/in-doubt", print_in_doubt);
    } else if (strcmp(cmd, "resolve") == 0 && left == 2) {
        code = cmd_resolve(&c, argv[optind], argv[optind + 1]);
    } else if (strcmp(cmd, "takeover") == 0 && left == 1) {
        code = cmd_takeover(&c, argv[optind], decision);
    } else if (strcmp(cmd, "health") == 0 && left == 0) {
        code = cmd_health(&c);
    } else if (strcmp(cmd, "metrics") == 0 && left == 0) {
        code = cmd_metrics(&c);
    } else {
        usage(stderr);
    }
    free(c.token);
    return code;
}
