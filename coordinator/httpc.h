/*
 * A blocking, one-shot HTTP/1.1 client (one request per connection, Connection: close) for the
 * programs that talk to the daemon from outside its loop: xactl, the tests and the benchmark's
 * control requests. Never used inside the daemon.
 */
#ifndef XA_HTTPC_H
#define XA_HTTPC_H

#include "compiler.h"

/* Sends one request to host:port (a numeric IPv4 address, or an IPv6 one in brackets) and reads
 * the whole answer. body and token may be NULL. Returns the HTTP status and puts the response body
 * (malloc'ed, NUL-terminated, may be empty) in *resp; returns a negative errno when no answer
 * could be had, with *resp NULL: -EINVAL for a host that is no numeric address, the connect's
 * error (-ECONNREFUSED, -ETIMEDOUT, ...), -ENOMEM, -EPROTO when the reply was not HTTP (an empty
 * one included: the server closed without answering). A status is always > 0, so callers test
 * `< 0` for "no answer". */
XA_MUST_CHECK int httpc_request(const char *host, int port, const char *method, const char *path,
                                const char *token, const char *body, char **resp);

#endif
