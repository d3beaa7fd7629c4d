/*
 * The blocking one-shot HTTP client (see httpc.h).
 */
#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A connected socket, or a negative errno: -EINVAL for a host that is no numeric address. */
static int connect_to(const char *host, int port)
{
    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    struct sockaddr_in sa4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr *sa = (struct sockaddr *)&sa4;
    socklen_t salen = sizeof sa4;
    char addr[64];
    size_t n = strlen(host);
    int fd;
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        snprintf(addr, sizeof addr, "%.*s", (int)(n - 2), host + 1);
        if (inet_pton(AF_INET6, addr, &sa6.sin6_addr) != 1)
            return -EINVAL;
        sa = (struct sockaddr *)&sa6;
        salen = sizeof sa6;
    } else if (inet_pton(AF_INET, host, &sa4.sin_addr) != 1) {
        return -EINVAL;
    }
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, sa, salen) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/* 0, or the send's negative errno (the caller still reads: see httpc_request). */
static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        /* No SIGPIPE when the server closed early (e.g. after answering 413 to a huge body). */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Everything until the server closes; NULL when out of memory. */
static char *read_all(int fd)
{
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        ssize_t r;
        if (cap - len < 2) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

int httpc_request(const char *host, int port, const char *method, const char *path,
                  const char *token, const char *body, char **resp)
{
    size_t blen = body ? strlen(body) : 0;
    char *head = NULL, *all, *sep;
    int fd = connect_to(host, port), status;
    bool sent;

    *resp = NULL;
    if (fd < 0)
        return fd;
    if (asprintf(&head,
                 "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s%s%s"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 method, path, host, token ? "Authorization: Bearer " : "", token ? token : "",
                 token ? "\r\n" : "", blen) < 0) {
        close(fd);
        return -ENOMEM;
    }
    sent = send_all(fd, head, strlen(head)) == 0 && (blen == 0 || send_all(fd, body, blen) == 0);
    free(head);
    /* A server may answer before it read the whole request (401, 413) and close: its answer is
     * still there to read when the rest could not be sent. */
    if (!sent)
        shutdown(fd, SHUT_WR);
    all = read_all(fd);
    close(fd);
    if (!all)
        return -ENOMEM;
    if (sscanf(all, "HTTP/1.%*d %d", &status) != 1 || status <= 0) {
        free(all);
        return -EPROTO;
    }
    sep = strstr(all, "\r\n\r\n");
    *resp = strdup(sep ? sep + 4 : "");
    free(all);
    return *resp ? status : -ENOMEM;
}
