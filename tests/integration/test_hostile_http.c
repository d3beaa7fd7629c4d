/*
 * Hostile HTTP clients against a running daemon (docs/design.md section 4, "HTTP limits"): floods
 * of idle and slow connections, oversized headers, bodies that are never finished, malformed JSON
 * of every kind. Each gets a clear 4xx (or a bounded close), the daemon's memory stays bounded,
 * and meanwhile a well-behaved client is answered within 1 s (a bounded wait, not a speed claim).
 *
 * The daemon runs with memory participants (no database is needed for what is tested here) and
 * small limits, so that every limit is reached quickly: 256 connections, 2 s header and body
 * deadlines, 8 MiB of buffered bodies.
 */
#include "daemon.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "hostile-http-token"
#define MAX_CONNS 256
#define DEADLINE_MS 2000
#define BUFFERED_MIB 8
#define SERVED_WITHIN_MS 1000

static tu_daemon daemon_;

/* ---------------------------------------------------------------- raw client */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected socket (blocking), or -1. */
static int dial(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)daemon_.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r <= 0)
            return; /* the server may close first: what it answered is read afterwards */
        p += r;
        n -= (size_t)r;
    }
}

/* Reads until the peer closes, `want` complete responses are in, or deadline_ms passes. Returns the
 * bytes read (NUL-terminated, malloc'ed) and sets *closed when the peer closed or reset. */
static char *read_responses(int fd, int want, int deadline_ms, bool *closed)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int64_t end = mono_ms() + deadline_ms;
    *closed = false;
    assert_non_null(buf);
    for (;;) {
        int n = 0;
        buf[len] = '\0';
        for (const char *p = buf; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
            n++;
        if (want > 0 && n >= want && strstr(buf, "\r\n\r\n")) {
            /* the last body is complete once its Content-Length bytes are in */
            const char *last = buf, *p;
            while ((p = strstr(last + 1, "HTTP/1.1 ")) != NULL)
                last = p;
            const char *cl = strcasestr(last, "content-length:"), *hend = strstr(last, "\r\n\r\n");
            if (cl && hend && (size_t)(buf + len - (hend + 4)) >= strtoul(cl + 15, NULL, 10))
                return buf;
        }
        int64_t left = end - mono_ms();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, left > 0 ? (int)left : 0) <= 0)
            return buf;
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0) {
            *closed = true;
            buf[len] = '\0';
            return buf;
        }
        len += (size_t)r;
    }
}

static int status_of(const char *resp)
{
    return strncmp(resp, "HTTP/1.1 ", 9) == 0 ? atoi(resp + 9) : -1;
}

/* One request on a new connection; the status, or -1 without a complete answer in deadline_ms.
 * *body gets the response (malloc'ed) when body is not NULL. */
static int request(const char *text, size_t len, int deadline_ms, char **body)
{
    int fd = dial(), status;
    bool closed;
    char *resp;
    if (fd < 0)
        return -1;
    send_all(fd, text, len);
    resp = read_responses(fd, 1, deadline_ms, &closed);
    close(fd);
    status = status_of(resp);
    if (body)
        *body = resp;
    else
        free(resp);
    return status;
}

static char *post_text(const char *json, const char *token)
{
    char *s = NULL;
    assert_true(asprintf(&s,
                         "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                         token, strlen(json), json) > 0);
    return s;
}

/* The status of one POST /v1/transactions with body json (a bounded wait of 10 s). */
static int post(const char *json, char **resp)
{
    char *text = post_text(json, TOKEN);
    int status = request(text, strlen(text), 10000, resp);
    free(text);
    return status;
}

#define GOOD_TXN                                                                                   \
    "{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": \"UPDATE t SET v = "  \
    "$1\", "                                                                                       \
    "\"params\": [1]}]}, {\"participant\": \"beta\", \"statements\": [{\"sql\": \"UPDATE t SET v " \
    "= "                                                                                           \
    "$1\", \"params\": [2]}]}]}"

/* A well-behaved client: a transaction committed within SERVED_WITHIN_MS. */
static void assert_served(const char *during)
{
    char *text = post_text(GOOD_TXN, TOKEN), *resp = NULL;
    int status = request(text, strlen(text), SERVED_WITHIN_MS, &resp);
    if (status != 200)
        fail_msg("during %s a well-behaved client got %d within %d ms: %.200s", during, status,
                 SERVED_WITHIN_MS, resp ? resp : "");
    free(text);
    free(resp);
}

static long rss_kib(void)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)daemon_.pid);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Opens n connections (fds[i] = -1 where connect failed); returns how many are open. */
static int open_many(int *fds, int n)
{
    int open_n = 0;
    for (int i = 0; i < n; i++)
        if ((fds[i] = dial()) >= 0)
            open_n++;
    return open_n;
}

static void close_many(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Whether the server ended fd (EOF, reset or an error answer) within deadline_ms. */
static bool ended_by_server(int fd, int deadline_ms)
{
    bool closed;
    char *resp = read_responses(fd, 0, deadline_ms, &closed);
    free(resp);
    return closed;
}

/* ---------------------------------------------------------------- fixture */

static int group_setup(void **state)
{
    struct rlimit rl;
    char path[512];
    FILE *f;
    /* The floods below need more descriptors than a shell's default 1024. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    tu_daemon_init(&daemon_, "hhttp", NULL);
    snprintf(path, sizeof path, "%s/token", daemon_.dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(TOKEN "\n", f);
    fclose(f);
    chmod(path, 0600);
    f = fopen(daemon_.config, "w");
    assert_non_null(f);
    fprintf(f,
            "[coordinator]\nnode_id = hhttp\nlisten = 127.0.0.1:%d\ndata_dir = %s/data\n"
            "api_token_file = %s\nhttp_max_connections = %d\nhttp_header_timeout_ms = %d\n"
            "http_body_timeout_ms = %d\nhttp_max_buffered_bytes = %d\n"
            "[participant.alpha]\ndriver = memory\n[participant.beta]\ndriver = memory\n",
            daemon_.port, daemon_.dir, path, MAX_CONNS, DEADLINE_MS, DEADLINE_MS,
            BUFFERED_MIB << 20);
    fclose(f);
    snprintf(daemon_.token, sizeof daemon_.token, "%s", TOKEN);
    /* ASan keeps freed memory in a quarantine (256 MiB by default): bounded here so that RSS
     * measures the daemon's buffers, not the sanitizer's. */
    static char asan[512];
    const char *prev = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%squarantine_size_mb=4", prev ? prev : "",
             prev && *prev ? ":" : "");
    const char *const env[] = {asan, NULL};
    tu_daemon_start(&daemon_, env);
    return 0;
}

static int group_teardown(void **state)
{
    assert_int_equal(tu_daemon_stop(&daemon_), 0);
    tu_daemon_cleanup(&daemon_);
    return 0;
}

/* ---------------------------------------------------------------- connection floods */

/* Thousands of idle connections: each newcomer closes the longest idle one, so a client that
 * sends a request is served while the flood holds every slot. */
static void test_idle_flood(void **state)
{
    enum { N = 3000 };
    static int fds[N];
    int open_n = open_many(fds, N), ended = 0;
    assert_true(open_n >= N - 10);
    assert_served("an idle flood");
    usleep(200 * 1000);
    /* At most MAX_CONNS of them can still be open at the server. */
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0 && ended_by_server(fds[i], 0))
            ended++;
    if (ended < N - MAX_CONNS - 10)
        fail_msg("only %d of %d idle connections were closed by the server", ended, N);
    close_many(fds, N);
}

/* Slowloris: connections that send one header byte a second. The header deadline runs from the
 * first byte, so each is answered 408 (or closed to make room) within DEADLINE_MS plus slack,
 * however long it would go on trickling; a well-behaved client is served every second. */
static void test_slowloris(void **state)
{
    enum { N = 400, SECONDS = 5 };
    static int fds[N];
    int ended = 0;
    assert_true(open_many(fds, N) >= N - 10);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            send_all(fds[i], "POST /v1/transactions HTTP/1.1\r\nX-Slow: ", 41);
    for (int s = 0; s < SECONDS; s++) {
        for (int i = 0; i < N; i++)
            if (fds[i] >= 0)
                send_all(fds[i], "a", 1);
        assert_served("slowloris");
        usleep(1000 * 1000);
    }
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0 && ended_by_server(fds[i], DEADLINE_MS))
            ended++;
    if (ended < N - 10)
        fail_msg("%d of %d trickling connections were still open after %d s", N - ended, N,
                 SECONDS);
    close_many(fds, N);
}

/* ---------------------------------------------------------------- request framing */

static void test_huge_headers(void **state)
{
    size_t n = 1 << 20;
    char *text = malloc(n + 128), *resp = NULL;
    int len = snprintf(text, 128, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(text + len, 'h', n);
    memcpy(text + len + n, "\r\n\r\n", 4);
    assert_int_equal(request(text, (size_t)len + n + 4, 10000, &resp), 431);
    free(resp);
    free(text);
    assert_served("after huge headers");
}

static void test_pipelined(void **state)
{
    char *post1 = post_text(GOOD_TXN, TOKEN), *all = NULL, *resp;
    int fd = dial();
    bool closed;
    assert_true(
        asprintf(&all, "GET /healthz HTTP/1.1\r\n\r\n%sGET /healthz HTTP/1.1\r\n\r\n", post1) > 0);
    assert_true(fd >= 0);
    send_all(fd, all, strlen(all));
    resp = read_responses(fd, 3, 10000, &closed);
    const char *second = strstr(resp + 1, "HTTP/1.1 "),
               *third = second ? strstr(second + 1, "HTTP/1.1 ") : NULL;
    assert_int_equal(status_of(resp), 200);
    assert_non_null(second);
    assert_non_null(strstr(second, "\"committed\""));
    assert_non_null(third);
    assert_int_equal(status_of(third), 200);
    close(fd);
    free(resp);
    free(all);
    free(post1);
}

static void test_chunked(void **state)
{
    const char *json = GOOD_TXN;
    size_t half = strlen(json) / 2;
    char *text = NULL, *big = malloc(2 << 20);
    assert_true(
        asprintf(&text,
                 "POST /v1/transactions HTTP/1.1\r\nAuthorization: Bearer " TOKEN
                 "\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                 half, (int)half, json, strlen(json) - half, json + half) > 0);
    assert_int_equal(request(text, strlen(text), 10000, NULL), 200);
    /* Chunks past max_body_bytes (1 MiB): 413. */
    int n = sprintf(big, "POST /v1/transactions HTTP/1.1\r\nAuthorization: Bearer " TOKEN
                         "\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 40; i++) {
        n += sprintf(big + n, "8000\r\n");
        memset(big + n, ' ', 0x8000);
        n += 0x8000;
        n += sprintf(big + n, "\r\n");
    }
    assert_int_equal(request(big, (size_t)n, 10000, NULL), 413);
    free(text);
    free(big);
}

/* ---------------------------------------------------------------- hostile JSON */

typedef struct json_case {
    const char *what;
    const char *body;
    int status; /* the exact 4xx expected */
} json_case;

static void test_hostile_json(void **state)
{
    static const json_case cases[] = {
        {"NUL in id", "{\"id\": \"a\\u0000b\", \"branches\": []}", 400},
        {"invalid UTF-8 in id", "{\"id\": \"a\xff\xfe\", \"branches\": []}", 400},
        {"NUL in sql",
         "{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": \"UPDATE "
         "t\\u0000; "
         "DROP\"}]}]}",
         400},
        {"invalid UTF-8 in sql",
         "{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": \"UPDATE "
         "\xc3\x28\"}]}]}",
         400},
        {"1e999 in params",
         "{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": \"UPDATE t SET v "
         "= "
         "$1\", \"params\": [1e999]}]}]}",
         400},
        {"2^64 in params",
         "{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": \"UPDATE t SET v "
         "= "
         "$1\", \"params\": [18446744073709551616]}]}]}",
         400},
        {"1e999 timeout_ms", "{\"timeout_ms\": 1e999, \"branches\": []}", 400},
        {"-0 timeout_ms",
         "{\"timeout_ms\": -0, \"branches\": [{\"participant\": \"alpha\", \"statements\": "
         "[{\"sql\": \"UPDATE t SET v = 1\"}]}]}",
         400},
        {"2^64 timeout_ms",
         "{\"timeout_ms\": 18446744073709551616, \"branches\": [{\"participant\": \"alpha\", "
         "\"statements\": [{\"sql\": \"UPDATE t SET v = 1\"}]}]}",
         400},
        {"duplicate keys",
         "{\"id\": \"dup-a\", \"id\": \"dup-b\", \"branches\": [{\"participant\": \"alpha\", "
         "\"statements\": [{\"sql\": \"UPDATE t SET v = 1\"}]}]}",
         400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *resp = NULL;
        int status = post(cases[i].body, &resp);
        if (status != cases[i].status || !strstr(resp, "\"error\""))
            fail_msg("%s: want %d with an error, got %d: %.300s", cases[i].what, cases[i].status,
                     status, resp);
        free(resp);
    }
    /* -0 is a number like any other as a parameter: bound, committed. */
    char *resp = NULL;
    int status = post("{\"branches\": [{\"participant\": \"alpha\", \"statements\": [{\"sql\": "
                      "\"UPDATE t SET v = $1\", \"params\": [-0, -0.0]}]}]}",
                      &resp);
    if (status != 200)
        fail_msg("-0 as a parameter: got %d: %.300s", status, resp);
    free(resp);
}

/* A JSON body of n copies of item (separated by commas) inside head ... tail. */
static char *repeat_json(const char *head, const char *item, int n, const char *tail)
{
    size_t il = strlen(item), len = strlen(head) + (il + 1) * (size_t)n + strlen(tail) + 1;
    char *s = malloc(len), *p = s;
    assert_non_null(s);
    p += sprintf(p, "%s", head);
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", item);
    sprintf(p, "%s", tail);
    return s;
}

static void test_huge_counts(void **state)
{
    char *branches = repeat_json(
        "{\"branches\": [", "{\"participant\":\"alpha\",\"statements\":[{\"sql\":\"SELECT 1\"}]}",
        10000, "]}");
    char *statements = repeat_json("{\"branches\": [{\"participant\":\"alpha\",\"statements\":[",
                                   "{\"sql\":\"SELECT 1\"}", 100000, "]}]}");
    char *resp = NULL;
    int status = post(branches, &resp);
    /* 10,000 branches fit in 1 MiB: refused by the branch limit; 100,000 statements do not fit. */
    if (status != 400 || !strstr(resp, "branches"))
        fail_msg("10,000 branches: got %d: %.300s", status, resp);
    free(resp);
    status = post(statements, &resp);
    if (status != 413 && status != 400)
        fail_msg("100,000 statements: got %d: %.300s", status, resp);
    free(resp);
    free(branches);
    free(statements);
    assert_served("after huge requests");
}

/* ---------------------------------------------------------------- memory */

/* Sends the headers of a 1,000,000-byte POST and most of its body, never the end. */
static int start_big_body(const char *token)
{
    static char chunk[64 << 10];
    char head[256];
    int fd = dial();
    if (fd < 0)
        return -1;
    memset(chunk, '[', sizeof chunk);
    int n = snprintf(head, sizeof head,
                     "POST /v1/transactions HTTP/1.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: 1000000\r\n\r\n",
                     token);
    send_all(fd, head, (size_t)n);
    /* Non-blocking from here: a refused body is not read, and the socket buffers fill. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < 14; i++)
        if (send(fd, chunk, sizeof chunk, MSG_NOSIGNAL) <= 0)
            break;
    return fd;
}

/* 100 connections each start a ~1 MB body with the token and 100 without: RSS grows by no more
 * than the buffered budget and the per-connection buffers allow, the client without the token
 * gets 401 from its headers, and RSS is measured again after they are gone. */
static void test_body_flood_memory(void **state)
{
    enum { N = 100 }; /* 2 N stays below MAX_CONNS: no 401 is lost to a connection made room */
    static int with[N], without[N];
    long before = rss_kib(), during, after, bound_kib;
    int unauthorized = 0;
    for (int i = 0; i < N; i++) {
        with[i] = start_big_body(TOKEN);
        without[i] = start_big_body("wrong");
    }
    usleep(500 * 1000);
    assert_served("a body flood");
    during = rss_kib();
    for (int i = 0; i < N; i++) {
        bool closed;
        char *resp = without[i] >= 0 ? read_responses(without[i], 1, 2000, &closed) : NULL;
        if (resp && status_of(resp) == 401)
            unauthorized++;
        free(resp);
    }
    close_many(with, N);
    close_many(without, N);
    usleep(DEADLINE_MS * 1000);
    assert_served("after a body flood");
    after = rss_kib();
    /* Budget + per-connection input and small-body buffers, doubled for allocator and sanitizer
     * overhead; without the bounds the flood buffers 100 MB. */
    bound_kib = 2 * ((BUFFERED_MIB << 10) + MAX_CONNS * (16 + 16 + 64));
    printf("# RSS before %ld KiB, during the flood %ld KiB, after %ld KiB (bound +%ld KiB)\n",
           before, during, after, bound_kib);
    if (during - before > bound_kib)
        fail_msg("RSS grew by %ld KiB during the flood (bound %ld KiB)", during - before,
                 bound_kib);
    if (unauthorized < N - 10)
        fail_msg("only %d of %d requests without the token got 401", unauthorized, N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_flood),   cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_huge_headers), cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_chunked),      cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_huge_counts),  cmocka_unit_test(test_body_flood_memory),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
