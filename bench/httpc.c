/*
 * The HTTP client kind: one keep-alive HTTP/1.1 connection per client to the daemon, on the loop,
 * non-blocking, one request at a time (closed loop). Replies are parsed with http-parser; the
 * status is the outcome (200 committed, 409 aborted, anything else an error). Also a small
 * blocking GET for /metrics and /readyz, used between runs only.
 */
#include "bench.h"
#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct hclient {
    bench_client *cl;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    http_parser parser;
    char *req;
    char body[256];
    size_t body_len;
    bool complete, open;
    char rbuf[16384];
} hclient;

/* ---- request bodies ---------------------------------------------------------------------- */

/* The checkout's payment branch; parameters: user, order, user. */
#define PAYMENT_BRANCH                                                                             \
    "{\"participant\":\"payment\",\"statements\":["                                                \
    "{\"sql\":\"UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND "                 \
    "balance >= $1\",\"params\":[1,%lld],\"expect_rows\":1,"                                       \
    "\"abort_reason\":\"insufficient balance\"},"                                                  \
    "{\"sql\":\"INSERT INTO payment(order_id, user_id, amount) VALUES ($1, $2, $3)\","             \
    "\"params\":[%lld,%lld,1]}]}"

static char *shop_body(const bench_client *cl)
{
    char *s = NULL;
    long long o = (long long)cl->order, u = (long long)cl->user;
    if (asprintf(&s,
                 "{\"branches\":[" PAYMENT_BRANCH ","
                 "{\"participant\":\"order\",\"statements\":["
                 "{\"sql\":\"UPDATE orders SET status = 'P' WHERE id = ? AND status = 'I'\","
                 "\"params\":[%lld],\"expect_rows\":1,"
                 "\"abort_reason\":\"order is not awaiting payment\"}]},"
                 "{\"participant\":\"warehouse\",\"statements\":["
                 "{\"sql\":\"UPDATE stock SET qty = qty - ? WHERE sku = ? AND qty >= ?\","
                 "\"params\":[1,\"B%lld\",1],\"expect_rows\":1,\"abort_reason\":\"out of stock\"},"
                 "{\"sql\":\"INSERT INTO shipment(order_id, sku, qty, status) VALUES (?, ?, ?, "
                 "'R')\",\"params\":[%lld,\"B%lld\",1]}]}]}",
                 u, o, u, o, u, o, u) < 0)
        return NULL;
    return s;
}

/* The payment branch alone: a single-branch transaction, committed in one phase. */
static char *payment_body(const bench_client *cl)
{
    char *s = NULL;
    long long o = (long long)cl->order, u = (long long)cl->user;
    return asprintf(&s, "{\"branches\":[" PAYMENT_BRANCH "]}", u, o, u) < 0 ? NULL : s;
}

static char *memory_body(const char *stmt)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\"branches\":["
                 "{\"participant\":\"payment\",\"statements\":[{\"sql\":\"%s\"},{\"sql\":\"%s\"}]},"
                 "{\"participant\":\"order\",\"statements\":[{\"sql\":\"%s\"}]},"
                 "{\"participant\":\"warehouse\",\"statements\":[{\"sql\":\"%s\"},"
                 "{\"sql\":\"%s\"}]}]}",
                 stmt, stmt, stmt, stmt, stmt) < 0)
        return NULL;
    return s;
}

char *bench_http_request(const bench_run *run, const bench_client *cl, size_t *len)
{
    char *body = run->body == BENCH_BODY_MEMORY ? memory_body(run->mem_stmt)
                 : run->single                  ? payment_body(cl)
                                                : shop_body(cl);
    char *req = NULL;
    int n;
    if (!body)
        return NULL;
    n = asprintf(&req,
                 "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
    free(body);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return req;
}

/* Between runs, or from a timer while the daemon works: blocking is harmless there. */
int bench_http_get(int port, const char *path, char **body)
{
    return httpc_request("127.0.0.1", port, "GET", path, NULL, NULL, body);
}

/* ---- the client kind --------------------------------------------------------------------- */

static int on_body(http_parser *p, const char *at, size_t len)
{
    hclient *h = p->data;
    size_t room = sizeof h->body - 1 - h->body_len;
    if (len > room)
        len = room;
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    h->body[h->body_len] = '\0';
    return 0;
}

static int on_complete(http_parser *p)
{
    ((hclient *)p->data)->complete = true;
    return 0;
}

static const http_parser_settings parser_settings = {.on_body = on_body,
                                                     .on_message_complete = on_complete};

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    hclient *h = handle->data;
    *buf = uv_buf_init(h->rbuf, sizeof h->rbuf);
}

static void fail_conn(hclient *h, const char *why)
{
    bench_client *cl = h->cl;
    cl->dead = true;
    if (h->open) {
        uv_read_stop((uv_stream_t *)&h->tcp);
        h->open = false;
    }
    if (cl->busy)
        bench_client_done(cl, BENCH_ERROR, why);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hclient *h = s->data;
    size_t used;
    char why[320];
    if (nread < 0) {
        fail_conn(h, nread == UV_EOF ? "daemon closed the connection" : uv_strerror((int)nread));
        return;
    }
    used = http_parser_execute(&h->parser, &parser_settings, buf->base, (size_t)nread);
    if (used != (size_t)nread || HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) {
        fail_conn(h, "bad HTTP reply");
        return;
    }
    if (!h->complete || !h->cl->busy)
        return;
    h->complete = false;
    switch (h->parser.status_code) {
    case 200:
        bench_client_done(h->cl, BENCH_COMMITTED, NULL);
        break;
    case 409:
        bench_client_done(h->cl, BENCH_ABORTED, NULL);
        break;
    default:
        snprintf(why, sizeof why, "HTTP %u: %s", h->parser.status_code, h->body);
        bench_client_done(h->cl, BENCH_ERROR, why);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    hclient *h = req->data;
    if (status < 0) {
        bench_client_failed(h->cl, uv_strerror(status));
        return;
    }
    h->open = true;
    uv_read_start((uv_stream_t *)&h->tcp, on_alloc, on_read);
    bench_client_ready(h->cl);
}

static void http_open(bench_client *cl)
{
    struct sockaddr_in sa;
    hclient *h = calloc(1, sizeof *h);
    int rc;
    if (!h) {
        bench_client_failed(cl, "out of memory");
        return;
    }
    cl->impl = h;
    h->cl = cl;
    uv_tcp_init(cl->run->loop, &h->tcp);
    h->tcp.data = h;
    h->connect.data = h;
    uv_tcp_nodelay(&h->tcp, 1);
    uv_ip4_addr("127.0.0.1",
                cl->run->kind == &bench_http_store_kind ? cl->run->store_port : cl->run->http_port,
                &sa);
    rc = uv_tcp_connect(&h->connect, &h->tcp, (const struct sockaddr *)&sa, on_connect);
    if (rc < 0)
        bench_client_failed(cl, uv_strerror(rc));
}

static void on_written(uv_write_t *w, int status)
{
    hclient *h = w->data;
    free(h->req);
    h->req = NULL;
    if (status < 0)
        fail_conn(h, uv_strerror(status));
}

static void http_start(bench_client *cl)
{
    hclient *h = cl->impl;
    uv_buf_t buf;
    size_t len;
    int rc;
    if (!h->open) {
        bench_client_done(cl, BENCH_ERROR, "connection closed");
        return;
    }
    h->req = bench_http_request(cl->run, cl, &len);
    if (!h->req) {
        bench_client_done(cl, BENCH_ERROR, "out of memory");
        return;
    }
    http_parser_init(&h->parser, HTTP_RESPONSE);
    h->parser.data = h;
    h->complete = false;
    h->body_len = 0;
    h->body[0] = '\0';
    buf = uv_buf_init(h->req, (unsigned)len);
    h->write.data = h;
    rc = uv_write(&h->write, (uv_stream_t *)&h->tcp, &buf, 1, on_written);
    if (rc < 0) {
        free(h->req);
        h->req = NULL;
        fail_conn(h, uv_strerror(rc));
    }
}

static void on_closed(uv_handle_t *handle)
{
    hclient *h = handle->data;
    free(h->req);
    free(h);
}

static void http_close(bench_client *cl)
{
    hclient *h = cl->impl;
    if (!h)
        return;
    cl->impl = NULL;
    uv_close((uv_handle_t *)&h->tcp, on_closed);
}

const bench_kind bench_http_kind = {"xacoord", http_open, http_start, http_close};
const bench_kind bench_http_store_kind = {"xacoord-store-lr", http_open, http_start, http_close};
