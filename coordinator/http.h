/*
 * A small HTTP/1.1 server on libuv and Debian's http-parser, for the JSON API.
 *
 * Keep-alive, one request at a time per connection (a pipelined request waits until the previous
 * one is answered). Limits are enforced before the handler sees anything: URL + header bytes
 * (431), body size decided from Content-Length before the body is read (413, then the connection
 * closes), chunked bodies counted as they arrive (413). A request is handed to the handler only
 * once its body is complete.
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
    const char *method;   /* "GET", "POST", ... */
    const char *path;     /* the raw path (not percent-decoded), no query */
    const char *query;    /* the raw query string after '?', or "" */
    const char *authorization; /* the Authorization header value, or NULL */
    const char *content_type;  /* or NULL */
    const char *body;     /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    uint64_t received_ns; /* uv_hrtime() when the request was complete */
    void *user;           /* free for the handler */
} http_request;

typedef void (*http_handler)(http_request *req, void *arg);

/* A zero field (or limits == NULL) takes the default. */
typedef struct http_limits {
    size_t max_header_bytes;  /* request line + headers; default 16 KiB */
    size_t max_body_bytes;    /* default 1 MiB */
    int max_connections;      /* default 1024; more are accepted and closed at once */
    uint32_t idle_timeout_ms; /* close a keep-alive connection idle this long; default 60000 */
} http_limits;

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
