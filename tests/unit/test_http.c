/*
 * The HTTP server (coordinator/http.c) against a raw TCP client. The server runs on 127.0.0.1,
 * port 0, in the test's loop; each client is a thread with a blocking socket that follows a
 * script (send, pause, read n responses, wait for the server to close) and wakes the loop through
 * a uv_async_t when it is done. The handler answers according to the path: /hold* requests are
 * kept for the test to answer, /defer* requests are answered from a timer, /error answers through
 * http_respond_error, anything else is answered at once with "<path>|<body>".
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http.h"

#define MAX_CALLS 8
#define CLIENT_BUF 65536

/* ---------------------------------------------------------------- server side */

typedef struct record {
    char method[16], path[256], query[256], auth[256], ctype[128], body[4096];
    bool has_auth, has_ctype;
    size_t body_len;
    int pending_at_call;
} record;

typedef struct ctx {
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t defer_timer;
    http_server *srv;
    int calls;
    record rec[MAX_CALLS];
    http_request *held[MAX_CALLS];
    int nheld;
    http_request *deferred[MAX_CALLS];
    int ndeferred;
    bool stopped;
} ctx;

static void copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static void answer_with_path(http_request *req)
{
    char body[8192];
    int n = snprintf(body, sizeof body, "%s|%.*s", req->path, (int)req->body_len, req->body);
    http_respond(req, 200, "text/plain", body, n < (int)sizeof body ? (size_t)n : sizeof body - 1);
}

static void on_defer_timer(uv_timer_t *t)
{
    ctx *c = t->data;
    for (int i = 0; i < c->ndeferred; i++)
        answer_with_path(c->deferred[i]);
    c->ndeferred = 0;
}

static void handler(http_request *req, void *arg)
{
    ctx *c = arg;
    record *r = &c->rec[c->calls < MAX_CALLS ? c->calls : MAX_CALLS - 1];

    copy_str(r->method, sizeof r->method, req->method);
    copy_str(r->path, sizeof r->path, req->path);
    copy_str(r->query, sizeof r->query, req->query);
    copy_str(r->auth, sizeof r->auth, req->authorization);
    copy_str(r->ctype, sizeof r->ctype, req->content_type);
    r->has_auth = req->authorization != NULL;
    r->has_ctype = req->content_type != NULL;
    r->body_len = req->body_len;
    memcpy(r->body, req->body, req->body_len < sizeof r->body ? req->body_len + 1 : 0);
    r->pending_at_call = http_server_pending(c->srv);
    c->calls++;

    if (strncmp(req->path, "/hold", 5) == 0) {
        c->held[c->nheld++] = req;
    } else if (strncmp(req->path, "/defer", 6) == 0) {
        c->deferred[c->ndeferred++] = req;
        uv_timer_start(&c->defer_timer, on_defer_timer, 30, 0);
    } else if (strcmp(req->path, "/error") == 0) {
        http_respond_error(req, 422, "bad \"id\"\n\\ \xc3\xa9");
    } else {
        answer_with_path(req);
    }
}

static void on_wake(uv_async_t *a) {}

static void start_server(ctx *c, const http_limits *limits)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    uv_async_init(&c->loop, &c->wake, on_wake);
    uv_timer_init(&c->loop, &c->defer_timer);
    c->defer_timer.data = c;
    assert_int_equal(http_server_start(&c->srv, &c->loop, "127.0.0.1", 0, limits, handler, c), 0);
    assert_true(http_server_port(c->srv) > 0);
}

static void on_stopped(void *arg)
{
    *(bool *)arg = true;
}

static void stop_server(ctx *c)
{
    if (!c->stopped)
        http_server_stop(c->srv, on_stopped, &c->stopped);
    tu_run_until(&c->loop, &c->stopped, 5000);
    uv_close((uv_handle_t *)&c->wake, NULL);
    uv_close((uv_handle_t *)&c->defer_timer, NULL);
    tu_loop_close(&c->loop);
}

static void on_run_for(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void run_for(uv_loop_t *loop, unsigned ms)
{
    uv_timer_t t;
    bool fired = false;
    uv_timer_init(loop, &t);
    t.data = &fired;
    uv_timer_start(&t, on_run_for, ms, 0);
    tu_run_until(loop, &fired, ms + 5000);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* ---------------------------------------------------------------- client side */

enum step_kind { STEP_END, STEP_SEND, STEP_SLEEP, STEP_READ, STEP_EOF, STEP_SIGNAL };

typedef struct step {
    enum step_kind kind;
    const char *data; /* STEP_SEND */
    int n;            /* STEP_SLEEP: ms; STEP_READ: total responses wanted */
} step;

/* clang-format off */
#define SEND(s) {STEP_SEND, (s), 0}
#define SLEEP(ms) {STEP_SLEEP, NULL, (ms)}
#define READ(n) {STEP_READ, NULL, (n)}
#define WAIT_EOF {STEP_EOF, NULL, 0}
#define SIGNAL {STEP_SIGNAL, NULL, 0}
#define END {STEP_END, NULL, 0}
/* clang-format on */

typedef struct client {
    int port;
    const step *steps;
    uv_async_t *wake;
    pthread_t thread;
    char buf[CLIENT_BUF];
    size_t len;
    bool connect_failed, eof, reset;
    atomic_bool signaled, done; /* written by the client thread, read by the loop's */
} client;

typedef struct response {
    int status;
    char headers[2048];
    char body[8192];
    size_t body_len;
} response;

/* Splits buf into complete responses; returns how many there are. out may be NULL. */
static int parse_responses(const char *buf, size_t len, response *out, int max)
{
    size_t off = 0;
    int n = 0;
    for (;;) {
        const char *end = memmem(buf + off, len - off, "\r\n\r\n", 4);
        size_t hlen, clen = 0;
        const char *cl;
        char headers[2048];
        if (!end)
            return n;
        hlen = (size_t)(end - (buf + off)) + 4;
        snprintf(headers, sizeof headers, "%.*s", (int)hlen, buf + off);
        cl = strcasestr(headers, "\r\ncontent-length:");
        if (cl)
            clen = strtoul(cl + 17, NULL, 10);
        if (off + hlen + clen > len)
            return n;
        if (out && n < max) {
            out[n].status = atoi(headers + 9);
            memcpy(out[n].headers, headers, sizeof headers);
            out[n].body_len = clen;
            snprintf(out[n].body, sizeof out[n].body, "%.*s", (int)clen, buf + off + hlen);
        }
        n++;
        off += hlen + clen;
    }
}

static void *client_main(void *arg)
{
    client *cl = arg;
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)cl->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        cl->connect_failed = true;
        goto out;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (const step *s = cl->steps; s->kind != STEP_END; s++) {
        ssize_t r = 1;
        switch (s->kind) {
        case STEP_SEND:
            for (size_t off = 0, len = strlen(s->data); off < len && r > 0; off += (size_t)r)
                r = send(fd, s->data + off, len - off, MSG_NOSIGNAL);
            break;
        case STEP_SLEEP:
            usleep((useconds_t)s->n * 1000);
            break;
        case STEP_READ:
        case STEP_EOF:
            while (s->kind == STEP_EOF || parse_responses(cl->buf, cl->len, NULL, 0) < s->n) {
                r = recv(fd, cl->buf + cl->len, sizeof cl->buf - cl->len, 0);
                if (r <= 0)
                    break;
                cl->len += (size_t)r;
            }
            if (r == 0)
                cl->eof = true;
            else if (r < 0 && errno == ECONNRESET)
                cl->reset = true;
            break;
        case STEP_SIGNAL:
            atomic_store(&cl->signaled, true);
            uv_async_send(cl->wake);
            break;
        case STEP_END:
            break;
        }
    }
out:
    close(fd);
    atomic_store(&cl->done, true);
    uv_async_send(cl->wake);
    return NULL;
}

static void client_start(client *cl, ctx *c, const step *steps)
{
    memset(cl, 0, sizeof *cl);
    cl->port = http_server_port(c->srv);
    cl->steps = steps;
    cl->wake = &c->wake;
    assert_int_equal(pthread_create(&cl->thread, NULL, client_main, cl), 0);
}

static void client_wait(client *cl, ctx *c)
{
    tu_run_until_atomic(&c->loop, &cl->done, 10000);
    pthread_join(cl->thread, NULL);
}

static int client_responses(const client *cl, response *out, int max)
{
    return parse_responses(cl->buf, cl->len, out, max);
}

static bool has_header(const response *r, const char *line)
{
    return strcasestr(r->headers, line) != NULL;
}

/* ---------------------------------------------------------------- tests */

/* Also keep-alive: the second request travels on the connection of the first. */
static void test_get_and_post_on_one_connection(void **state)
{
    ctx c;
    client cl;
    response rs[2];
    const step steps[] = {
        SEND("GET /v1/transactions/abc?x=1&y=%20 HTTP/1.1\r\nHost: t\r\naUtHoRiZaTiOn: Bear"),
        SLEEP(50),
        SEND("er tok123\r\n\r\n"),
        READ(1),
        SEND("POST /v1/transactions HTTP/1.1\r\nHost: t\r\nContent-Type: application/"),
        SLEEP(50),
        SEND("json\r\nContent-Length: 13\r\n\r\n{\"a\": "),
        SLEEP(50),
        SEND("[1, 2]}"),
        READ(2),
        END,
    };

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);

    assert_int_equal(c.calls, 2);
    assert_string_equal(c.rec[0].method, "GET");
    assert_string_equal(c.rec[0].path, "/v1/transactions/abc");
    assert_string_equal(c.rec[0].query, "x=1&y=%20");
    assert_true(c.rec[0].has_auth);
    assert_string_equal(c.rec[0].auth, "Bearer tok123");
    assert_false(c.rec[0].has_ctype);
    assert_int_equal(c.rec[0].body_len, 0);
    assert_string_equal(c.rec[0].body, "");

    assert_string_equal(c.rec[1].method, "POST");
    assert_string_equal(c.rec[1].path, "/v1/transactions");
    assert_string_equal(c.rec[1].query, "");
    assert_false(c.rec[1].has_auth);
    assert_string_equal(c.rec[1].ctype, "application/json");
    assert_int_equal(c.rec[1].body_len, 13);
    assert_string_equal(c.rec[1].body, "{\"a\": [1, 2]}");

    assert_int_equal(client_responses(&cl, rs, 2), 2);
    assert_int_equal(rs[0].status, 200);
    assert_string_equal(rs[0].body, "/v1/transactions/abc|");
    assert_true(has_header(&rs[0], "\r\nContent-Type: text/plain\r\n"));
    assert_false(has_header(&rs[0], "Connection: close"));
    assert_int_equal(rs[1].status, 200);
    assert_string_equal(rs[1].body, "/v1/transactions|{\"a\": [1, 2]}");
    stop_server(&c);
}

static void test_pipelined_answered_in_order(void **state)
{
    ctx c;
    client cl;
    response rs[3];
    const step steps[] = {
        SEND("GET /defer/a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
             "POST /defer/c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"),
        READ(3),
        END,
    };

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);

    assert_int_equal(c.calls, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.rec[i].pending_at_call, 1); /* one request at a time */
    assert_int_equal(client_responses(&cl, rs, 3), 3);
    assert_string_equal(rs[0].body, "/defer/a|");
    assert_string_equal(rs[1].body, "/b|");
    assert_string_equal(rs[2].body, "/defer/c|xyz");
    stop_server(&c);
}

static void test_deferred_answer(void **state)
{
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND("GET /defer/x?q HTTP/1.1\r\n\r\n"), READ(1), END};

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.rec[0].pending_at_call, 1);
    assert_int_equal(http_server_pending(c.srv), 0);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "/defer/x|");
    stop_server(&c);
}

static void assert_json_error(const response *r, int status)
{
    json_t *j;
    assert_int_equal(r->status, status);
    assert_true(has_header(r, "\r\nContent-Type: application/json\r\n"));
    assert_true(has_header(r, "\r\nConnection: close\r\n"));
    j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
}

static void test_content_length_over_limit(void **state)
{
    http_limits lim = {.max_body_bytes = 1024};
    char *req = malloc(4096);
    int n = snprintf(req, 4096, "POST /x HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND(req), READ(1), WAIT_EOF, END};

    memset(req + n, 'a', 2000); /* part of the body: the server must not wait for the rest */
    req[n + 2000] = '\0';
    start_server(&c, &lim);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 0);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_json_error(&r, 413);
    assert_true(cl.eof);
    free(req);
    stop_server(&c);
}

static void test_chunked_body(void **state)
{
    ctx c;
    client cl;
    response r;
    const step steps[] = {
        SEND("POST /chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        SLEEP(50),
        SEND("6\r\n world\r\n0\r\n\r\n"),
        READ(1),
        END,
    };

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.rec[0].body_len, 11);
    assert_string_equal(c.rec[0].body, "hello world");
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_string_equal(r.body, "/chunked|hello world");
    stop_server(&c);
}

static void test_chunked_body_over_limit(void **state)
{
    http_limits lim = {.max_body_bytes = 16};
    ctx c;
    client cl;
    response r;
    const step steps[] = {
        SEND("POST /chunked HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             "a\r\n0123456789\r\n"),
        SLEEP(20),
        SEND("a\r\n0123456789\r\n0\r\n\r\n"),
        READ(1),
        WAIT_EOF,
        END,
    };

    start_server(&c, &lim);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 0);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_json_error(&r, 413);
    assert_true(cl.eof);
    stop_server(&c);
}

static void test_headers_over_limit(void **state)
{
    http_limits lim = {.max_header_bytes = 1024};
    char *req = malloc(8192);
    int n = snprintf(req, 8192, "GET / HTTP/1.1\r\nX-Big: ");
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND(req), READ(1), WAIT_EOF, END};

    memset(req + n, 'b', 4000);
    strcpy(req + n + 4000, "\r\n\r\n");
    start_server(&c, &lim);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 0);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_json_error(&r, 431);
    assert_true(cl.eof);
    free(req);
    stop_server(&c);
}

static void test_garbage_is_400(void **state)
{
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND("HELLO \x01 WORLD\r\n\r\n"), READ(1), WAIT_EOF, END};

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(c.calls, 0);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_json_error(&r, 400);
    assert_true(cl.eof);
    stop_server(&c);
}

/* The answer to a request whose client is gone is dropped, and the request is freed by it: the
 * stop callback, waiting for that request only, runs inside http_respond. */
static void test_client_gone_before_answer(void **state)
{
    ctx c;
    client cl;
    const step steps[] = {SEND("POST /hold HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"), END};

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    tu_run_until_count(&c.loop, &c.calls, 1, 5000);
    run_for(&c.loop, 100); /* the server notices the disconnect */
    assert_int_equal(http_server_pending(c.srv), 1);
    http_server_stop(c.srv, on_stopped, &c.stopped);
    run_for(&c.loop, 50);
    assert_false(c.stopped);
    assert_string_equal(c.held[0]->body, "hi");
    http_respond(c.held[0], 200, NULL, "{}", 2);
    assert_true(c.stopped);
    stop_server(&c);
}

static void test_stop_with_pending_request(void **state)
{
    ctx c;
    client held, idle, late;
    response r;
    const step held_steps[] = {SEND("GET /hold HTTP/1.1\r\n\r\n"), READ(1), WAIT_EOF, END};
    const step idle_steps[] = {SEND("GET /quick HTTP/1.1\r\n\r\n"), READ(1), SIGNAL, WAIT_EOF, END};
    const step late_steps[] = {END};

    start_server(&c, NULL);
    client_start(&held, &c, held_steps);
    client_start(&idle, &c, idle_steps);
    tu_run_until_atomic(&c.loop, &idle.signaled, 5000);
    tu_run_until_count(&c.loop, &c.calls, 2, 5000);

    http_server_stop(c.srv, on_stopped, &c.stopped);
    client_wait(&idle, &c); /* the idle keep-alive connection is closed */
    assert_true(idle.eof);
    client_start(&late, &c, late_steps);
    client_wait(&late, &c); /* no longer accepting */
    assert_true(late.connect_failed);
    assert_false(c.stopped);
    assert_int_equal(http_server_pending(c.srv), 1);

    assert_int_equal(c.nheld, 1);
    http_respond(c.held[0], 200, NULL, "{\"ok\": true}", 12);
    client_wait(&held, &c);
    assert_int_equal(client_responses(&held, &r, 1), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\": true}");
    assert_true(has_header(&r, "\r\nContent-Type: application/json\r\n"));
    assert_true(has_header(&r, "\r\nConnection: close\r\n"));
    assert_true(held.eof);
    tu_run_until(&c.loop, &c.stopped, 5000);
    stop_server(&c);
}

static void test_idle_keep_alive_closes(void **state)
{
    http_limits lim = {.idle_timeout_ms = 100};
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND("GET /quick HTTP/1.1\r\n\r\n"), READ(1), WAIT_EOF, END};
    uint64_t t0 = uv_hrtime();

    start_server(&c, &lim);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_false(has_header(&r, "Connection: close"));
    assert_true(cl.eof);
    assert_true(uv_hrtime() - t0 < 3000000000ull); /* well before the client's own timeout */
    stop_server(&c);
}

static void test_http10(void **state)
{
    ctx c;
    client plain, ka;
    response rs[2];
    const step plain_steps[] = {SEND("GET /one HTTP/1.0\r\n\r\n"), READ(1), WAIT_EOF, END};
    const step ka_steps[] = {
        SEND("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        READ(1),
        SEND("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        READ(2),
        END,
    };

    start_server(&c, NULL);
    client_start(&plain, &c, plain_steps);
    client_wait(&plain, &c);
    assert_int_equal(client_responses(&plain, rs, 1), 1);
    assert_true(has_header(&rs[0], "\r\nConnection: close\r\n"));
    assert_true(plain.eof);

    client_start(&ka, &c, ka_steps);
    client_wait(&ka, &c);
    assert_int_equal(client_responses(&ka, rs, 2), 2);
    assert_true(has_header(&rs[0], "\r\nConnection: keep-alive\r\n"));
    assert_string_equal(rs[1].body, "/b|");
    stop_server(&c);
}

/* At the limit a connection the handler works for is never closed for a newcomer (the newcomer
 * is turned away), but an idle one is: it makes room. */
static void test_max_connections(void **state)
{
    http_limits lim = {.max_connections = 1};
    ctx c;
    client first, second, third;
    response rs[2];
    const step first_steps[] = {SEND("GET /hold HTTP/1.1\r\n\r\n"), READ(1), SIGNAL, WAIT_EOF, END};
    const step second_steps[] = {WAIT_EOF, END};
    const step third_steps[] = {SEND("GET /c HTTP/1.1\r\n\r\n"), READ(1), END};

    start_server(&c, &lim);
    client_start(&first, &c, first_steps);
    tu_run_until_count(&c.loop, &c.calls, 1, 5000);
    client_start(&second, &c, second_steps);
    client_wait(&second, &c);
    assert_false(second.connect_failed);
    assert_true(second.eof || second.reset);
    assert_int_equal(second.len, 0);

    http_respond(c.held[0], 200, NULL, "{}", 2);
    tu_run_until_atomic(&c.loop, &first.signaled, 5000);
    client_start(&third, &c, third_steps);
    client_wait(&third, &c);
    client_wait(&first, &c);
    assert_true(first.eof); /* idle: closed to make room */
    assert_int_equal(client_responses(&third, rs, 2), 1);
    assert_string_equal(rs[0].body, "/c|");
    assert_int_equal(c.calls, 2);
    stop_server(&c);
}

/* The header deadline runs from the request's first byte: bytes trickling in do not extend it. */
static void test_trickle_cannot_extend_deadline(void **state)
{
    http_limits lim = {.header_timeout_ms = 300, .idle_timeout_ms = 60000};
    ctx c;
    client cl;
    response r;
    /* 700 ms of trickle, then the rest at once: a deadline re-armed by reads would let it in. */
    const step steps[] = {SEND("G"),  SLEEP(100), SEND("E"),  SLEEP(100), SEND("T"),
                          SLEEP(100), SEND(" "),  SLEEP(100), SEND("/"),  SLEEP(100),
                          SEND("x"),  SLEEP(100), SEND(" "),  SLEEP(100), SEND("HTTP/1.1\r\n\r\n"),
                          WAIT_EOF,   END};

    start_server(&c, &lim);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_int_equal(r.status, 408);
    assert_true(cl.eof || cl.reset);
    assert_int_equal(c.calls, 0);
    stop_server(&c);
}

static bool authorize_good(const http_request *head, void *arg)
{
    return head->authorization && strcmp(head->authorization, "Bearer good") == 0;
}

/* A request without the token is answered 401 from its headers: its body is never read (here it
 * is never even sent) nor buffered. */
static void test_token_checked_before_body(void **state)
{
    http_limits lim = {.authorize = authorize_good};
    ctx c;
    client bad, good;
    response r;
    const step bad_steps[] = {
        SEND("POST /x HTTP/1.1\r\nAuthorization: Bearer bad\r\nContent-Length: 900000\r\n\r\n"),
        READ(1), WAIT_EOF, END};
    const step good_steps[] = {
        SEND("POST /y HTTP/1.1\r\nAuthorization: Bearer good\r\nContent-Length: 2\r\n\r\nok"),
        READ(1), END};

    start_server(&c, &lim);
    client_start(&bad, &c, bad_steps);
    client_wait(&bad, &c);
    assert_int_equal(client_responses(&bad, &r, 1), 1);
    assert_int_equal(r.status, 401);
    assert_true(has_header(&r, "Connection: close"));
    assert_true(bad.eof || bad.reset);
    assert_int_equal(c.calls, 0);
    client_start(&good, &c, good_steps);
    client_wait(&good, &c);
    assert_int_equal(client_responses(&good, &r, 1), 1);
    assert_string_equal(r.body, "/y|ok");
    stop_server(&c);
}

/* A target that is neither "/..." nor "*" is refused (found by fuzz/fuzz_http). */
static void test_odd_request_target(void **state)
{
    ctx c;
    client cl;
    response r;
    const step steps[] = {SEND("POST *1.1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), READ(1), END};
    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_int_equal(r.status, 400);
    assert_int_equal(c.calls, 0);
    stop_server(&c);
}

/* Bodies are buffered within max_buffered_bytes (503 past it), except small ones. */
static void test_buffered_bytes_budget(void **state)
{
    http_limits lim = {.max_buffered_bytes = 100000};
    ctx c;
    client big, small;
    response r;
    static char big_req[128 + 80000], small_req[128 + 60000];
    const step big_steps[] = {SEND(big_req), READ(1), END};
    const step small_steps[] = {SEND(small_req), READ(1), END};
    int n =
        snprintf(big_req, sizeof big_req, "POST /big HTTP/1.1\r\nContent-Length: 80000\r\n\r\n");
    memset(big_req + n, 'b', 80000);
    big_req[n + 80000] = '\0';
    n = snprintf(small_req, sizeof small_req, "POST /s HTTP/1.1\r\nContent-Length: 60000\r\n\r\n");
    memset(small_req + n, 's', 60000);
    small_req[n + 60000] = '\0';

    start_server(&c, &lim);
    client_start(&big, &c, big_steps);
    client_wait(&big, &c);
    assert_int_equal(client_responses(&big, &r, 1), 1);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "too many request bytes buffered"));
    client_start(&small, &c, small_steps);
    client_wait(&small, &c);
    assert_int_equal(client_responses(&small, &r, 1), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(c.calls, 1);
    stop_server(&c);
}

static void test_respond_error_escapes(void **state)
{
    ctx c;
    client cl;
    response r;
    json_t *j;
    const step steps[] = {SEND("GET /error HTTP/1.1\r\n\r\n"), READ(1), END};

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(client_responses(&cl, &r, 1), 1);
    assert_int_equal(r.status, 422);
    assert_false(has_header(&r, "Connection: close"));
    j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "bad \"id\"\n\\ \xc3\xa9");
    json_decref(j);
    stop_server(&c);
}

static void test_expect_continue(void **state)
{
    ctx c;
    client cl;
    response rs[2];
    const step steps[] = {
        SEND("POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
        READ(1),
        SEND("hello"),
        READ(2),
        END,
    };

    start_server(&c, NULL);
    client_start(&cl, &c, steps);
    client_wait(&cl, &c);
    assert_int_equal(client_responses(&cl, rs, 2), 2);
    assert_int_equal(rs[0].status, 100);
    assert_int_equal(rs[1].status, 200);
    assert_string_equal(rs[1].body, "/up|hello");
    stop_server(&c);
}

static void test_bad_address(void **state)
{
    uv_loop_t loop;
    http_server *srv = (http_server *)&loop;
    ctx c;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(http_server_start(&srv, &loop, "localhost", 0, NULL, handler, NULL),
                     UV_EINVAL);
    assert_null(srv);
    /* A port in use: the error may only show at listen; the handle is released by the loop. */
    start_server(&c, NULL);
    assert_int_not_equal(
        http_server_start(&srv, &loop, "127.0.0.1", http_server_port(c.srv), NULL, handler, NULL),
        0);
    tu_loop_close(&loop);
    stop_server(&c);
}

int main(void)
{
    /* A write to a client that has gone must fail with EPIPE, not kill the test (the daemon's
     * main does the same). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post_on_one_connection),
        cmocka_unit_test(test_pipelined_answered_in_order),
        cmocka_unit_test(test_deferred_answer),
        cmocka_unit_test(test_content_length_over_limit),
        cmocka_unit_test(test_chunked_body),
        cmocka_unit_test(test_chunked_body_over_limit),
        cmocka_unit_test(test_headers_over_limit),
        cmocka_unit_test(test_garbage_is_400),
        cmocka_unit_test(test_client_gone_before_answer),
        cmocka_unit_test(test_stop_with_pending_request),
        cmocka_unit_test(test_idle_keep_alive_closes),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_trickle_cannot_extend_deadline),
        cmocka_unit_test(test_token_checked_before_body),
        cmocka_unit_test(test_buffered_bytes_budget),
        cmocka_unit_test(test_odd_request_target),
        cmocka_unit_test(test_respond_error_escapes),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_bad_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
