/*
 * The HTTP server (coordinator/http.c) on an arbitrary byte stream, through the real socket path
 * and the real parser callbacks: each input is sent on a fresh loopback connection, which is then
 * half-closed, and the loop runs until the server has closed it. Every request that reaches the
 * handler is within the limits, and every one is answered.
 */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BODY 4096
#define MAX_HEADER 2048

static uv_loop_t loop;
static http_server *srv;
static int calls;

static bool authorize(const http_request *head, void *arg)
{
    (void)arg;
    return strcmp(head->path, "/secret") != 0;
}

static void handler(http_request *req, void *arg)
{
    (void)arg;
    assert(req->body_len <= MAX_BODY);
    assert(req->body[req->body_len] == '\0');
    assert(req->path[0] == '/' || strcmp(req->path, "*") == 0);
    assert(strcmp(req->path, "/secret") != 0);
    calls++;
    http_respond(req, 200, "text/plain", req->path, strlen(req->path));
}

static void start(void)
{
    static const http_limits lim = {.max_header_bytes = MAX_HEADER,
                                    .max_body_bytes = MAX_BODY,
                                    .max_connections = 16,
                                    .header_timeout_ms = 1000,
                                    .body_timeout_ms = 1000,
                                    .authorize = authorize};
    assert(uv_loop_init(&loop) == 0);
    assert(http_server_start(&srv, &loop, "127.0.0.1", 0, &lim, handler, NULL) == 0);
}

static int dial(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_server_port(srv)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* No TIME_WAIT left behind by close(): a campaign makes millions of connections, more than
     * there are local ports to pair with the server's one. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert(fd >= 0);
    assert(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    /* Blocking: on loopback the kernel completes it from the backlog at once. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("fuzz_http: connect"); /* the harness's failure, not the server's */
        abort();
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Runs the loop until the server closed fd (its answers are read and dropped meanwhile). */
static void drain(int fd, const uint8_t *data, size_t size)
{
    size_t sent = 0;
    bool shut = false;
    char buf[65536];
    for (int turns = 0; turns < 10000000; turns++) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent < size ? POLLOUT : 0)};
        if (sent == size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        if (poll(&p, 1, 0) <= 0)
            continue;
        if ((p.revents & POLLOUT) && sent < size) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else
                sent = size;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0 && !(r < 0 && errno == EAGAIN))
                return;
        }
    }
    abort(); /* the server never closed the connection: a hang */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd;
    if (!srv)
        start();
    fd = dial();
    drain(fd, data, size);
    close(fd);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert(http_server_pending(srv) == 0);
    return 0;
}
