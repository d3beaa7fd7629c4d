/*
 * A small HTTP/1.1 server on libuv and Debian's http-parser, for the JSON API.
 *
 * Keep-alive, one request at a time per connection (a pipelined request waits until the previous
 * one is answered). Limits are enforced before the handler sees anything: URL + header bytes
 * (431), the header and body deadlines (408), the credentials (401, before any body byte is
 * read), body size decided from Content-Length before the body is read (413, then the connection
 * closes), chunked bodies counted as they arrive (413), the bytes buffered for all bodies (503).
 * A request is handed to the handler only once its body is complete.
 *
 * The handler must answer every request exactly once with http_respond, now or later. If the client
 * goes away first, the request stays valid until answered, and the answer is dropped. (A client
 * that half-closes after its request counts as gone.) The process must ignore SIGPIPE.
 */
#ifndef XA_HTTP_H
#define XA_HTTP_H

#include "compiler.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct http_server http_server;

typedef struct http_request {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* the raw path (not percent-decoded), no query */
    const char *query;         /* the raw query string after '?', or "" */
    const char *authorization; /* the Authorization header value, or NULL */
    const char *content_type;  /* or NULL */
    const char *body;          /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    uint64_t received_ns; /* uv_hrtime() when the request was complete */
    void *user;           /* free for the handler */
} http_request;

typedef void (*http_handler)(http_request *req, void *arg);

/* A zero field (or limits == NULL) takes the default. Every limit holds against a client that
 * sends as slowly as it likes: deadlines run from a fixed point and are not extended by reads. */
typedef struct http_limits {
    size_t max_header_bytes;    /* request line + headers; default 16 KiB */
    size_t max_body_bytes;      /* default 1 MiB */
    int max_connections;        /* default 1024; see below */
    uint32_t idle_timeout_ms;   /* close a keep-alive connection idle this long; default 60000 */
    uint32_t header_timeout_ms; /* first byte of a request to its last header; default 10000 */
    uint32_t body_timeout_ms;   /* last header to the last body byte; default 30000 */
    size_t max_buffered_bytes;  /* request bodies of all connections together; default 64 MiB */
    /* Called once a request's headers are complete (body still empty): false answers 401 and
     * closes the connection without reading the body. NULL: every request may send its body. */
    bool (*authorize)(const http_request *head, void *arg);
} http_limits;

/* At max_connections a new connection still gets in: the server closes a lingering one, else
 * the connection idle the longest, else the one that has been sending its request the longest
 * (never one whose request is with the handler); only when every connection is with the handler
 * is the new one closed at once. A body that would take the bytes buffered for all bodies past
 * max_buffered_bytes gets 503, unless the body is at most HTTP_SMALL_BODY bytes: small requests
 * always fit (their total is bounded by the connection limit). */
#define HTTP_SMALL_BODY (64u * 1024)

/* Binds host:port (numeric) and starts accepting. Returns 0 or a negative libuv error. */
XA_MUST_CHECK int http_server_start(http_server **out, uv_loop_t *loop, const char *host, int port,
                                    const http_limits *limits, http_handler handler, void *arg);

/* The port actually bound (useful with port 0 in tests). */
int http_server_port(const http_server *srv);

/* Answers req (Content-Length is set; keep-alive unless the client asked to close). content_type
 * NULL means "application/json". Frees req. */
void http_respond(http_request *req, int status, const char *content_type, const char *body,
                  size_t len);
/* http_respond with the body {"error": message} (JSON-escaped). */
void http_respond_error(http_request *req, int status, const char *message);

/* Number of requests handed to the handler and not yet answered. */
int http_server_pending(const http_server *srv);

/* Stops accepting, closes idle connections, lets pending requests be answered (their connections
 * close after the answer); cb runs once every handle is closed and the server is freed. */
void http_server_stop(http_server *srv, void (*cb)(void *arg), void *arg);

#endif
