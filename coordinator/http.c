/*
 * The HTTP/1.1 server behind the JSON API (see http.h): a libuv listener, one http_parser per
 * connection, and a strict one-request-at-a-time discipline. Every connection owns one fixed input
 * buffer; bytes that arrive while a request waits for its answer stay there (reading pauses when it
 * is full), so pipelining costs no extra memory and a disconnect is still noticed while the handler
 * works. Limits are checked in the parser callbacks, before anything is handed out. Responses that
 * end a connection are followed by a lingering close (shutdown, then drain the peer for a moment),
 * so that a client still sending an oversized body reads the 413 instead of a reset.
 *
 * Against hostile clients: one timer per connection runs the phase deadline - idle between
 * requests, then the header deadline from a request's first byte, then the body deadline from its
 * last header - armed at the start of the phase and never on a read, so a trickle of bytes cannot
 * keep a connection. Body buffers grow as bytes arrive (never from Content-Length) and are counted
 * server-wide; the credentials are checked before the body is read. When the connection limit is
 * reached, the connection that serves nobody the longest makes room for the new one.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "list.h"
#include "log.h"

/* Per-connection input buffer: one read's worth plus pipelined requests waiting their turn. */
#define HTTP_IN_CAP 16384
/* How long a closing connection drains the peer so that it can read our last response. */
#define HTTP_LINGER_MS 2000
/* ... and at most this many bytes: a client still sending past it gets a reset. */
#define HTTP_LINGER_MAX_BYTES (1u << 20)
#define HTTP_DISCARD_CAP 65536
#define HTTP_BACKLOG 511
/* http_parser_url stores offsets in 16 bits. */
#define HTTP_MAX_URL 65535
/* Descriptors kept for everything but client connections (journal, databases, listener). */
#define HTTP_FD_RESERVE 256
/* After the bodies buffered reached this much, memory is handed back to the system once they are
 * all gone (glibc keeps freed heap otherwise, and raises its mmap threshold after big frees). */
#define HTTP_TRIM_MARK (8u << 20)

typedef struct http_conn http_conn;

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

enum hdr_target { HDR_NONE, HDR_AUTH, HDR_CTYPE, HDR_EXPECT };

/* A connection's state; conn_move is its only writer and checks each move against conn_moves.
 * The states that receive a request each run their deadline on the connection's timer. */
enum conn_state {
    CS_NEW = 0,    /* allocated, not yet accepted */
    CS_IDLE,       /* between requests: the idle deadline */
    CS_HEADERS,    /* a request's headers are arriving: the header deadline */
    CS_BODY,       /* its body is arriving: the body deadline */
    CS_SERVED,     /* the handler has the request */
    CS_WRITING,    /* the answer is being written; the connection stays for the next request */
    CS_LAST_WRITE, /* the answer is being written; the connection ends after it */
    CS_LINGERING,  /* half-closed after the last answer, draining the peer for a moment */
    CS_CLOSING,    /* its handles are closing; freed once both are closed */
    CS_NSTATES
};

static const char *const conn_state_names[CS_NSTATES] = {
    "new", "idle", "headers", "body", "served", "writing", "last write", "lingering", "closing"};

/* The moves conn_move allows: forward through one request, back to IDLE after a kept answer, and
 * closing from anywhere (a peer that left, a failed write, eviction, the server stopping).
 *   NEW        -> IDLE                       accepted
 *   IDLE       -> HEADERS                    a request's first byte
 *   HEADERS    -> BODY                       headers complete and accepted
 *   BODY       -> SERVED                     request complete, handed to the handler
 *   SERVED     -> WRITING or LAST_WRITE      the handler answered (keep-alive or not)
 *   IDLE, HEADERS, BODY -> LAST_WRITE        the server refuses the request (4xx, 408, 503)
 *   WRITING    -> IDLE                       answer written, the connection is kept
 *   LAST_WRITE -> LINGERING                  answer written, the peer is drained
 *   any but CLOSING -> CLOSING */
#define CS_TO(s) (1u << (s))
static const unsigned conn_moves[CS_NSTATES] = {
    [CS_NEW] = CS_TO(CS_IDLE) | CS_TO(CS_CLOSING),
    [CS_IDLE] = CS_TO(CS_HEADERS) | CS_TO(CS_LAST_WRITE) | CS_TO(CS_CLOSING),
    [CS_HEADERS] = CS_TO(CS_BODY) | CS_TO(CS_LAST_WRITE) | CS_TO(CS_CLOSING),
    [CS_BODY] = CS_TO(CS_SERVED) | CS_TO(CS_LAST_WRITE) | CS_TO(CS_CLOSING),
    [CS_SERVED] = CS_TO(CS_WRITING) | CS_TO(CS_LAST_WRITE) | CS_TO(CS_CLOSING),
    [CS_WRITING] = CS_TO(CS_IDLE) | CS_TO(CS_CLOSING),
    [CS_LAST_WRITE] = CS_TO(CS_LINGERING) | CS_TO(CS_CLOSING),
    [CS_LINGERING] = CS_TO(CS_CLOSING),
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    http_limits lim;
    http_handler handler;
    void *arg;
    int port;
    list_head live;    /* http_conn not closing: what the connection limit counts */
    list_head closing; /* http_conn whose handles are closing */
    int pending;
    size_t buffered, buffered_peak; /* bytes of body buffers, all connections */
    char discard[HTTP_DISCARD_CAP]; /* where lingering connections read: no buffer of their own */
    bool stopping;
    bool listener_closed;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

/* What the handler sees is the first member; the rest ties the request to its connection. */
typedef struct http_req_priv {
    http_request pub;
    http_server *srv;
    http_conn *conn; /* NULL once the client is gone */
    bool keep_alive;
    bool http10;
    bool head;
    char *body;
    size_t body_cap; /* counted in srv->buffered until freed */
    char strings[];
} http_req_priv;

typedef struct http_write {
    uv_write_t req;
    http_conn *conn;
    char data[];
} http_write;

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    http_parser parser;
    http_server *srv;
    list_node node; /* on srv->live, then srv->closing */
    int handles_open;
    enum conn_state state;
    uint64_t since;   /* uv_now() when the state began: the oldest idle one goes first */
    bool reading;     /* reads are started on tcp (follows the input buffer's room) */
    size_t discarded; /* bytes drained while lingering */

    /* The request being received. */
    sbuf url, auth, ctype, expect;
    char field[32];
    size_t field_len;
    bool field_long, in_value, has_auth, has_ctype;
    enum hdr_target target;
    size_t header_bytes;
    struct http_parser_url url_parts;
    char *body;
    size_t body_len, body_cap;
    int fail_status;
    const char *fail_msg;

    http_req_priv *building; /* headers complete, body still arriving */
    http_req_priv *ready;    /* complete, not yet handed to the handler */
    http_req_priv *current;  /* handed to the handler, not yet answered */

    size_t in_len;
    char *in; /* HTTP_IN_CAP bytes while unparsed input is held, else NULL: an idle or waiting
                 connection (a transaction in flight) then costs no input buffer */
};

/* ---------------------------------------------------------------- small helpers */

/* 0, or -ENOMEM. */
static int sbuf_add(sbuf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *np = realloc(b->p, cap < 64 ? 64 : cap);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->cap = cap < 64 ? 64 : cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Gives back a body buffer and its share of the server-wide count. */
static void body_free(http_server *srv, char *body, size_t cap)
{
    free(body);
    srv->buffered -= cap;
    if (srv->buffered == 0 && srv->buffered_peak >= HTTP_TRIM_MARK) {
        srv->buffered_peak = 0;
        malloc_trim(0);
    }
}

static void req_free(http_req_priv *r)
{
    body_free(r->srv, r->body, r->body_cap);
    free(r);
}

static void srv_maybe_done(http_server *srv)
{
    void (*cb)(void *);
    void *arg;
    if (!srv->stopping || !srv->listener_closed || !list_empty(&srv->live) ||
        !list_empty(&srv->closing) || srv->pending > 0)
        return;
    cb = srv->stop_cb;
    arg = srv->stop_arg;
    free(srv);
    if (cb)
        cb(arg);
}

/* ---------------------------------------------------------------- connection lifecycle */

/* The only place a connection changes state. */
static void conn_move(http_conn *c, enum conn_state to)
{
    XA_CHECK(conn_moves[c->state] & CS_TO(to), "http connection %p: %s -> %s", (void *)c,
             conn_state_names[c->state], conn_state_names[to]);
    if (to == CS_CLOSING) {
        list_remove(&c->srv->live, &c->node);
        list_push_tail(&c->srv->closing, &c->node);
    }
    c->state = to;
    c->since = uv_now(c->srv->loop);
}

/* Whether the connection reads a request now (the parser may run). */
static bool conn_receiving(const http_conn *c)
{
    return c->state == CS_IDLE || c->state == CS_HEADERS || c->state == CS_BODY;
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    http_conn *c = h->data;
    http_server *srv = c->srv;
    if (--c->handles_open > 0)
        return;
    list_remove(&srv->closing, &c->node);
    free(c->url.p);
    free(c->auth.p);
    free(c->ctype.p);
    free(c->expect.p);
    body_free(srv, c->body, c->body_cap);
    free(c->in);
    free(c);
    srv_maybe_done(srv);
}

/* The request in the handler's hands (if any) outlives the connection: it is only detached. */
static void conn_close(http_conn *c)
{
    if (c->state == CS_CLOSING)
        return;
    conn_move(c, CS_CLOSING);
    if (c->building) {
        req_free(c->building);
        c->building = NULL;
    }
    if (c->current) {
        c->current->conn = NULL;
        c->current = NULL;
    }
    if (c->ready) {
        req_free(c->ready);
        c->ready = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    http_conn *c = h->data;
    if (c->state == CS_LINGERING) {
        *buf = uv_buf_init(c->srv->discard, sizeof c->srv->discard);
        return;
    }
    if (!c->in && !(c->in = malloc(HTTP_IN_CAP))) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: the connection closes */
        return;
    }
    buf->base = c->in + c->in_len;
    buf->len = HTTP_IN_CAP - c->in_len;
}

/* Gives the input buffer back once everything in it was parsed. */
static void conn_trim_input(http_conn *c)
{
    if (c->in_len == 0 && c->in) {
        free(c->in);
        c->in = NULL;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Reads go on while there is room, also while a request is being handled, so that a client that
 * disconnects is noticed; a full buffer stops them until the parser has consumed some. */
static void conn_update_reading(http_conn *c)
{
    bool want = c->state == CS_LINGERING || c->in_len < HTTP_IN_CAP;
    if (c->state == CS_CLOSING || want == c->reading)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

static void conn_fail(http_conn *c, int status, const char *message);

/* A request that missed its deadline is told so; an idle or lingering connection just ends. */
static void on_timer(uv_timer_t *t)
{
    http_conn *c = t->data;
    if (c->state == CS_LINGERING || c->state == CS_IDLE)
        conn_close(c);
    else if (c->state == CS_HEADERS || c->state == CS_BODY)
        conn_fail(c, 408,
                  c->state == CS_HEADERS ? "request headers not received in time"
                                         : "request body not received in time");
}

/* Moves to a state of the request flow (IDLE, HEADERS, BODY, SERVED) and starts its deadline;
 * reads never re-arm it. */
static void conn_enter(http_conn *c, enum conn_state state)
{
    const http_limits *lim = &c->srv->lim;
    conn_move(c, state);
    if (state == CS_SERVED)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer,
                       state == CS_IDLE      ? lim->idle_timeout_ms
                       : state == CS_HEADERS ? lim->header_timeout_ms
                                             : lim->body_timeout_ms,
                       0);
}

static void conn_arm_idle(http_conn *c)
{
    conn_enter(c, CS_IDLE);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    http_conn *c = req->data;
    if (status < 0)
        conn_close(c);
}

/* Half-close and drain: closing with unread input would send a reset that can destroy the
 * response the peer has not read yet. */
static void conn_linger(http_conn *c)
{
    conn_move(c, CS_LINGERING);
    c->in_len = 0;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, HTTP_LINGER_MS, 0);
    conn_update_reading(c);
}

/* ---------------------------------------------------------------- writing */

static void conn_process(http_conn *c);

static void on_response_written(uv_write_t *w, int status)
{
    http_write *hw = (http_write *)w;
    http_conn *c = hw->conn;
    free(hw);
    if (c->state == CS_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
    } else if (c->state == CS_LAST_WRITE) {
        conn_linger(c);
    } else if (c->srv->stopping) {
        conn_close(c);
    } else {
        conn_arm_idle(c);
        conn_process(c);
        if (c->state != CS_CLOSING)
            conn_trim_input(c);
        conn_update_reading(c);
    }
}

static void on_interim_written(uv_write_t *w, int status)
{
    http_write *hw = (http_write *)w;
    http_conn *c = hw->conn;
    free(hw);
    if (status < 0 && c->state != CS_CLOSING)
        conn_close(c);
}

static int conn_write(http_conn *c, const char *head, size_t hlen, const char *body, size_t blen,
                      uv_write_cb cb)
{
    http_write *hw = malloc(sizeof *hw + hlen + blen);
    uv_buf_t buf;
    int rc;
    if (!hw)
        return UV_ENOMEM;
    hw->conn = c;
    memcpy(hw->data, head, hlen);
    if (blen)
        memcpy(hw->data + hlen, body, blen);
    buf = uv_buf_init(hw->data, (unsigned)(hlen + blen));
    rc = uv_write(&hw->req, (uv_stream_t *)&c->tcp, &buf, 1, cb);
    if (rc != 0)
        free(hw);
    return rc;
}

static const char *reason_phrase(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return strcmp(s, "<unknown>") == 0 ? "Unknown" : s;
}

/* On every reply, harmless for JSON and what the operator page (ui.h) needs: no script, style or
 * request to anywhere but this server, no framing by another site, no type sniffing, no caching
 * of replies that carry data. */
#define SECURITY_HEADERS                                                                           \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "          \
    "form-action 'none'\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"

/* body_len bytes are sent; content_length is announced (they differ only for HEAD). */
static void conn_send(http_conn *c, int status, const char *content_type, const char *body,
                      size_t body_len, size_t content_length, bool keep, bool say_keep_alive)
{
    char head[768];
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                        status, reason_phrase(status),
                        content_type ? content_type : "application/json", content_length,
                        !keep            ? "Connection: close\r\n"
                        : say_keep_alive ? "Connection: keep-alive\r\n"
                                         : "",
                        SECURITY_HEADERS);
    if (hlen < 0 || (size_t)hlen >= sizeof head) {
        conn_close(c);
        return;
    }
    if (conn_write(c, head, (size_t)hlen, body, body_len, on_response_written) != 0) {
        conn_close(c);
        return;
    }
    conn_move(c, keep ? CS_WRITING : CS_LAST_WRITE);
    uv_timer_stop(&c->timer);
}

static char *error_body(const char *message)
{
    json_t *j = json_pack("{s:s}", "error", message);
    char *s = j ? json_dumps(j, 0) : NULL;
    json_decref(j);
    return s ? s : strdup("{\"error\": \"unprintable error message\"}");
}

/* A protocol error answered by the server itself; the connection ends after the answer. */
static void conn_fail(http_conn *c, int status, const char *message)
{
    char *body = error_body(message);
    if (!body) {
        conn_close(c);
        return;
    }
    log_debug("http", "answering %d: %s", status, message);
    conn_send(c, status, NULL, body, strlen(body), strlen(body), false, false);
    free(body);
}

/* ---------------------------------------------------------------- parser callbacks */

/* What a parser callback - and each helper below that decides for one - returns to stop
 * http_parser_execute. These keep http-parser's contract, not the errno convention: 0 goes on,
 * non-zero stops (the library then reports HPE_CB_*), except that on_headers_complete's 1 and 2
 * mean "no body" and "upgrade, no body" - hence -1, the one value that stops every callback. Why
 * it stopped is in c->fail_status and c->fail_msg, which conn_process answers. */
#define PARSER_STOP (-1)

static int fail_cb(http_conn *c, int status, const char *message)
{
    if (!c->fail_status) {
        c->fail_status = status;
        c->fail_msg = message;
    }
    return PARSER_STOP;
}

static int count_header(http_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->lim.max_header_bytes)
        return fail_cb(c, 431, "request header fields too large");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;
    c->url.len = c->auth.len = c->ctype.len = c->expect.len = 0;
    c->field_len = 0;
    c->field_long = c->in_value = c->has_auth = c->has_ctype = false;
    c->target = HDR_NONE;
    c->header_bytes = 0;
    body_free(c->srv, c->body, c->body_cap);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    conn_enter(c, CS_HEADERS);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header(c, n) != 0)
        return PARSER_STOP;
    if (c->url.len + n > HTTP_MAX_URL)
        return fail_cb(c, 414, "request target too long");
    return sbuf_add(&c->url, at, n) == 0 ? 0 : fail_cb(c, 503, "out of memory");
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header(c, n) != 0)
        return PARSER_STOP;
    if (c->in_value) {
        c->in_value = false;
        c->field_len = 0;
        c->field_long = false;
    }
    if (c->field_len + n >= sizeof c->field) {
        c->field_long = true;
    } else {
        memcpy(c->field + c->field_len, at, n);
        c->field_len += n;
    }
    return 0;
}

/* Picks where the value of the header just named goes; repeated credentials are refused rather
 * than guessed at. */
static int begin_value(http_conn *c)
{
    c->in_value = true;
    c->target = HDR_NONE;
    if (c->field_long)
        return 0;
    c->field[c->field_len] = '\0';
    if (strcasecmp(c->field, "authorization") == 0) {
        if (c->has_auth)
            return fail_cb(c, 400, "duplicate Authorization header");
        c->has_auth = true;
        c->target = HDR_AUTH;
    } else if (strcasecmp(c->field, "content-type") == 0) {
        if (c->has_ctype)
            return fail_cb(c, 400, "duplicate Content-Type header");
        c->has_ctype = true;
        c->target = HDR_CTYPE;
    } else if (strcasecmp(c->field, "expect") == 0) {
        c->expect.len = 0;
        c->target = HDR_EXPECT;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    sbuf *dst = NULL;
    if (count_header(c, n) != 0)
        return PARSER_STOP;
    if (!c->in_value && begin_value(c) != 0)
        return PARSER_STOP;
    switch (c->target) {
    case HDR_AUTH:
        dst = &c->auth;
        break;
    case HDR_CTYPE:
        dst = &c->ctype;
        break;
    case HDR_EXPECT:
        dst = &c->expect;
        break;
    case HDR_NONE:
        return 0;
    }
    /* An empty value still has to exist as "" rather than NULL. */
    if (sbuf_add(dst, at, n) != 0)
        return fail_cb(c, 503, "out of memory");
    return 0;
}

static size_t url_part(const http_conn *c, int field, const char **at)
{
    if (!(c->url_parts.field_set & (1u << field))) {
        *at = "";
        return 0;
    }
    *at = c->url.p + c->url_parts.field_data[field].off;
    return c->url_parts.field_data[field].len;
}

static char *put_string(char **cursor, const char *s, size_t n)
{
    char *start = *cursor;
    memcpy(start, s, n);
    start[n] = '\0';
    *cursor += n + 1;
    return start;
}

/* The request as the handler will see it, minus the body: made once the headers are complete,
 * so that the credentials can be checked before a body byte is read. */
static http_req_priv *request_head(http_conn *c, const http_parser *p)
{
    const char *path, *query;
    size_t plen = url_part(c, UF_PATH, &path), qlen = url_part(c, UF_QUERY, &query);
    size_t alen = c->has_auth ? c->auth.len : 0, clen = c->has_ctype ? c->ctype.len : 0;
    http_req_priv *r;
    char *cursor;

    if (plen == 0) {
        path = "/";
        plen = 1;
    }
    r = calloc(1, sizeof *r + plen + qlen + alen + clen + 4);
    if (!r)
        return NULL;
    cursor = r->strings;
    r->srv = c->srv;
    r->conn = c;
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->head = p->method == HTTP_HEAD;
    r->pub.method = http_method_str((enum http_method)p->method);
    r->pub.path = put_string(&cursor, path, plen);
    r->pub.query = put_string(&cursor, query, qlen);
    r->pub.authorization =
        c->has_auth ? put_string(&cursor, c->auth.p ? c->auth.p : "", alen) : NULL;
    r->pub.content_type =
        c->has_ctype ? put_string(&cursor, c->ctype.p ? c->ctype.p : "", clen) : NULL;
    r->pub.body = "";
    return r;
}

/* The path is "/..." (origin or absolute form) or "*" (asterisk form): http_parser also takes
 * "*1.1" or "x/y" as a path, which no handler should have to expect (found by fuzz/fuzz_http). */
static bool target_form_ok(const http_conn *c)
{
    const char *path;
    size_t plen = url_part(c, UF_PATH, &path);
    return plen == 0 || path[0] == '/' || (plen == 1 && path[0] == '*');
}

/* Everything about the body is decided here, before a byte of it is read. */
static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    const http_limits *lim = &c->srv->lim;
    bool has_length = (p->flags & F_CONTENTLENGTH) != 0;

    if (p->method == HTTP_CONNECT)
        return fail_cb(c, 405, "CONNECT is not supported");
    http_parser_url_init(&c->url_parts);
    if (!c->url.p || http_parser_parse_url(c->url.p, c->url.len, 0, &c->url_parts) != 0 ||
        !target_form_ok(c))
        return fail_cb(c, 400, "invalid request target");
    if (has_length && p->content_length > lim->max_body_bytes)
        return fail_cb(c, 413, "request body too large");
    if (!(c->building = request_head(c, p)))
        return fail_cb(c, 503, "out of memory");
    if (lim->authorize && !lim->authorize(&c->building->pub, c->srv->arg))
        return fail_cb(c, 401, "missing or invalid bearer token");
    conn_enter(c, CS_BODY);
    if (c->expect.len > 0 && strcasecmp(c->expect.p, "100-continue") == 0 && p->http_minor >= 1 &&
        ((has_length && p->content_length > 0) || (p->flags & F_CHUNKED))) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (conn_write(c, cont, sizeof cont - 1, NULL, 0, on_interim_written) != 0)
            return fail_cb(c, 503, "cannot write");
    }
    return 0;
}

/* Grows the body buffer to hold `need` bytes (and a NUL), doubling up to the body limit, within
 * the server-wide budget unless the body stays small. */
static int body_reserve(http_conn *c, size_t need)
{
    http_server *srv = c->srv;
    size_t max = srv->lim.max_body_bytes, cap = need * 2;
    char *nb;
    if (need + 1 <= c->body_cap)
        return 0;
    if (cap > max + 1)
        cap = max + 1;
    if (need <= HTTP_SMALL_BODY && cap > HTTP_SMALL_BODY + 1)
        cap = HTTP_SMALL_BODY + 1; /* a small body stays exempt from the budget */
    if (cap > HTTP_SMALL_BODY + 1 &&
        srv->buffered + (cap - c->body_cap) > srv->lim.max_buffered_bytes)
        return fail_cb(c, 503, "server busy: too many request bytes buffered, retry later");
    if (!(nb = realloc(c->body, cap)))
        return fail_cb(c, 503, "out of memory");
    srv->buffered += cap - c->body_cap;
    if (srv->buffered > srv->buffered_peak)
        srv->buffered_peak = srv->buffered;
    c->body = nb;
    c->body_cap = cap;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (c->body_len + n > c->srv->lim.max_body_bytes)
        return fail_cb(c, 413, "request body too large");
    if (body_reserve(c, c->body_len + n) != 0)
        return PARSER_STOP;
    memcpy(c->body + c->body_len, at, n);
    c->body_len += n;
    return 0;
}

/* The request is complete: move the body into it and pause the parser, so that pipelined bytes
 * wait until this one is answered. */
static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;
    http_req_priv *r = c->building;

    if (!r)
        return fail_cb(c, 503, "out of memory");
    c->building = NULL;
    r->body = c->body;
    r->body_cap = c->body_cap;
    c->body = NULL;
    c->body_cap = 0;
    if (r->body)
        r->body[c->body_len] = '\0';
    r->pub.body = r->body ? r->body : "";
    r->pub.body_len = c->body_len;
    r->pub.received_ns = uv_hrtime();
    c->ready = r;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------------------------------------- request flow */

static void conn_dispatch(http_conn *c)
{
    http_server *srv = c->srv;
    http_req_priv *r = c->ready;
    c->ready = NULL;
    c->current = r;
    srv->pending++;
    conn_enter(c, CS_SERVED);
    srv->handler(&r->pub, srv->arg);
}

/* Parses buffered input until one request is complete (handed to the handler) or the input runs
 * out; never while a request is outstanding, which keeps answers in request order. */
static void conn_process(http_conn *c)
{
    size_t n;
    enum http_errno err;

    if (!conn_receiving(c) || c->in_len == 0)
        return;
    http_parser_pause(&c->parser, 0);
    n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
    err = HTTP_PARSER_ERRNO(&c->parser);
    if (n < c->in_len)
        memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    if (c->ready) {
        conn_dispatch(c);
    } else if (c->fail_status) {
        conn_fail(c, c->fail_status, c->fail_msg);
    } else if (err == HPE_HEADER_OVERFLOW) {
        conn_fail(c, 431, "request header fields too large");
    } else if (err != HPE_OK && err != HPE_PAUSED) {
        conn_fail(c, 400, http_errno_description(err));
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    http_conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->state == CS_LINGERING) {
        c->in_len = c->state == CS_LINGERING ? 0 : c->in_len; /* lingering input is discarded */
        conn_trim_input(c);
        c->discarded += (size_t)nread;
        if (c->discarded > HTTP_LINGER_MAX_BYTES)
            conn_close(c);
        return;
    }
    c->in_len += (size_t)nread;
    conn_process(c); /* no deadline is re-armed here: a trickle cannot extend one */
    if (c->state != CS_CLOSING)
        conn_trim_input(c);
    conn_update_reading(c);
}

/* ---------------------------------------------------------------- accepting */

static void on_rejected_closed(uv_handle_t *h)
{
    free(h);
}

/* Out of room (or memory): accept and close at once, so that the client learns it immediately
 * and the listen queue does not fill with connections nobody serves. */
static void reject_connection(uv_stream_t *server)
{
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
        return;
    uv_tcp_init(server->loop, t);
    uv_accept(server, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_rejected_closed);
}

/* Ranks of a connection as the one to close for a newcomer, the first closed first. */
enum evict_rank { EVICT_LINGERING, EVICT_IDLE, EVICT_SENDING, EVICT_NEVER };

/* Lingering first, then idle, then still sending its request; never one the handler is working
 * for (or whose answer is on its way). */
static enum evict_rank evict_rank(const http_conn *c)
{
    switch (c->state) {
    case CS_LINGERING:
        return EVICT_LINGERING;
    case CS_IDLE:
        return EVICT_IDLE;
    case CS_HEADERS:
    case CS_BODY:
        return EVICT_SENDING;
    default:
        return EVICT_NEVER;
    }
}

/* At the connection limit: closes the connection that serves nobody the longest (a slow or idle
 * client loses its place before a new one is turned away). 0, or -EBUSY when every one is busy. */
static int make_room(http_server *srv)
{
    http_conn *victim = NULL;
    enum evict_rank best = EVICT_NEVER;
    list_each(n, &srv->live) {
        http_conn *c = list_entry(n, http_conn, node);
        enum evict_rank rank = evict_rank(c);
        if (rank == EVICT_NEVER)
            continue;
        if (rank < best || (rank == best && c->since < victim->since)) {
            victim = c;
            best = rank;
        }
    }
    if (!victim)
        return -EBUSY;
    log_debug("http", "connection limit (%zu) reached: closing the %s connection",
              list_count(&srv->live),
              best == EVICT_LINGERING ? "lingering"
              : best == EVICT_IDLE    ? "longest idle"
                                      : "slowest");
    conn_close(victim);
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    http_server *srv = server->data;
    http_conn *c;

    if (status < 0) {
        log_warn("http", "accept failed: %s", uv_strerror(status));
        return;
    }
    if (srv->stopping)
        return;
    if ((list_count(&srv->live) >= (size_t)srv->lim.max_connections && make_room(srv) != 0) ||
        !(c = calloc(1, sizeof *c))) {
        reject_connection(server);
        return;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    list_push_head(&srv->live, &c->node);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_arm_idle(c);
    conn_update_reading(c);
}

/* ---------------------------------------------------------------- public API */

static void on_failed_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

static void apply_limits(http_limits *dst, const http_limits *src)
{
    static const http_limits defaults = {
        .max_header_bytes = 16 * 1024,
        .max_body_bytes = 1024 * 1024,
        .max_connections = 1024,
        .idle_timeout_ms = 60000,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .max_buffered_bytes = 64u << 20,
    };
    *dst = defaults;
    if (!src)
        return;
    dst->authorize = src->authorize;
    if (src->header_timeout_ms)
        dst->header_timeout_ms = src->header_timeout_ms;
    if (src->body_timeout_ms)
        dst->body_timeout_ms = src->body_timeout_ms;
    if (src->max_buffered_bytes)
        dst->max_buffered_bytes = src->max_buffered_bytes;
    if (src->max_header_bytes)
        dst->max_header_bytes = src->max_header_bytes;
    if (src->max_body_bytes)
        dst->max_body_bytes = src->max_body_bytes;
    if (src->max_connections > 0)
        dst->max_connections = src->max_connections;
    if (src->idle_timeout_ms)
        dst->idle_timeout_ms = src->idle_timeout_ms;
}

/* Every connection holds a descriptor: raise the soft limit as far as needed and allowed, and
 * lower the connection limit to what remains, so that accept never fails with EMFILE (which
 * would reset new clients instead of making room for them). */
static void fit_descriptor_limit(http_limits *lim)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)lim->max_connections + HTTP_FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    lim->max_connections =
        rl.rlim_cur > 2 * HTTP_FD_RESERVE ? (int)(rl.rlim_cur - HTTP_FD_RESERVE) : HTTP_FD_RESERVE;
    log_warn("http", "open file limit %llu: at most %d connections (raise LimitNOFILE)",
             (unsigned long long)rl.rlim_cur, lim->max_connections);
}

static int bind_and_listen(http_server *srv, const char *host, int port)
{
    struct sockaddr_storage ss;
    int namelen = sizeof ss;
    int rc;

    if (port < 0 || port > 65535 || !host)
        return UV_EINVAL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return UV_EINVAL;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, HTTP_BACKLOG, on_connection);
    if (rc == 0)
        rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &namelen);
    if (rc != 0)
        return rc;
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int http_server_start(http_server **out, uv_loop_t *loop, const char *host, int port,
                      const http_limits *limits, http_handler handler, void *arg)
{
    http_server *srv;
    int rc;

    *out = NULL;
    if (!handler)
        return UV_EINVAL;
    srv = calloc(1, sizeof *srv);
    if (!srv)
        return UV_ENOMEM;
    srv->loop = loop;
    srv->handler = handler;
    srv->arg = arg;
    apply_limits(&srv->lim, limits);
    fit_descriptor_limit(&srv->lim);
    rc = uv_tcp_init(loop, &srv->listener);
    if (rc != 0) {
        free(srv);
        return rc;
    }
    srv->listener.data = srv;
    rc = bind_and_listen(srv, host, port);
    if (rc != 0) {
        /* The handle is on the loop now: its memory can go only in the close callback. */
        uv_close((uv_handle_t *)&srv->listener, on_failed_listener_closed);
        return rc;
    }
    *out = srv;
    return 0;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

int http_server_pending(const http_server *srv)
{
    return srv->pending;
}

void http_respond(http_request *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    http_req_priv *r = (http_req_priv *)req;
    http_server *srv = r->srv;
    http_conn *c = r->conn;

    srv->pending--;
    if (c) {
        bool keep = r->keep_alive && !srv->stopping;
        c->current = NULL;
        conn_send(c, status, content_type, body, r->head ? 0 : len, len, keep, keep && r->http10);
    }
    req_free(r);
    if (!c)
        srv_maybe_done(srv);
}

void http_respond_error(http_request *req, int status, const char *message)
{
    char *body = error_body(message);
    if (!body) {
        static const char oom[] = "{\"error\": \"out of memory\"}";
        http_respond(req, status, NULL, oom, sizeof oom - 1);
        return;
    }
    http_respond(req, status, NULL, body, strlen(body));
    free(body);
}

static void on_listener_closed(uv_handle_t *h)
{
    http_server *srv = h->data;
    srv->listener_closed = true;
    srv_maybe_done(srv);
}

void http_server_stop(http_server *srv, void (*cb)(void *arg), void *arg)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    srv->stop_cb = cb;
    srv->stop_arg = arg;
    /* A connection that receives a request closes now; one the handler works for, or whose
     * answer is on its way, closes after its answer. conn_close moves c to srv->closing. */
    list_each_safe(n, next, &srv->live) {
        http_conn *c = list_entry(n, http_conn, node);
        if (conn_receiving(c))
            conn_close(c);
    }
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
}
