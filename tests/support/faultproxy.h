/*
 * A fault proxy for the tests (docs/design.md section 8, "Faults"): a TCP forwarder on loopback
 * between the daemon and one database server that understands just enough of the wire protocol
 * to act at a chosen message.
 *
 * PostgreSQL: the startup packet (length, no type byte) and then type byte + length frames; the
 * SQL of a message is the text of a simple Query ('Q') or of a Parse ('P'), so pipelined
 * extended-protocol statements match one by one. The reply to a message is complete at the
 * next ReadyForQuery ('Z').
 * MySQL/MariaDB: 3-byte length + sequence id packets; the SQL of a command is the text of
 * COM_QUERY or COM_STMT_PREPARE, and a COM_STMT_EXECUTE carries the text its statement id was
 * prepared with (read from the server's COM_STMT_PREPARE_OK). The reply is complete at an OK,
 * EOF or ERR packet without SERVER_MORE_RESULTS_EXISTS.
 * In both, the first message a client sends on a connection is its "connect" message (the
 * startup packet, the handshake response).
 *
 * It runs its own libuv loop on its own thread, so a test can block in an HTTP call to the
 * daemon while the proxy acts. The control API is these functions, called from the test's
 * thread: the proxy lives in the test's process, so a control socket would only add a protocol
 * to parse and a way for the two to disagree.
 */
#ifndef XA_TEST_FAULTPROXY_H
#define XA_TEST_FAULTPROXY_H

#include "compiler.h"

#include <stdbool.h>

typedef enum fp_protocol { FP_POSTGRES, FP_MYSQL } fp_protocol;

typedef enum fp_action {
    FP_PASS,       /* no fault */
    FP_DELAY,      /* hold the message for delay_ms, then forward it and all after it */
    FP_HANG,       /* hold the message and everything after it, socket open, until fp_heal */
    FP_RESET,      /* reset the client's connection (and close the server's) instead */
    FP_RESET_HALF, /* reset the client's connection only: the server's session lives on, unaware,
                      until fp_heal (as behind a middlebox that reset one side) */
    FP_LOSE_REPLY, /* forward it; once the server's reply is complete, drop the reply and
                      reset the client's connection (and close the server's) */
} fp_action;

typedef struct fp_rule {
    fp_action action;
    /* The message to act at: NULL for a connection's connect message, else a substring of the
     * SQL of a statement message. */
    const char *match;
    unsigned delay_ms; /* FP_DELAY */
    int times;         /* act on this many matching messages, then pass; 0: every one */
} fp_rule;

typedef struct fp_proxy fp_proxy;

/* Listens on 127.0.0.1:listen_port and forwards to 127.0.0.1:upstream_port. */
fp_proxy *fp_start(fp_protocol proto, int listen_port, int upstream_port);
/* Replaces the rule (copied, match included); counts from zero again. */
void fp_set(fp_proxy *p, const fp_rule *rule);
/* How many messages the current rule acted on. */
int fp_hits(fp_proxy *p);
/* Waits until the rule acted at least n times: 0, or -ETIMEDOUT after timeout_ms. */
XA_MUST_CHECK int fp_wait_hits(fp_proxy *p, int n, unsigned timeout_ms);
/* Partitions the server away: nothing passes either way, new connections wait (open, silent). */
void fp_partition(fp_proxy *p);
/* Ends the rule and any partition: what was held is forwarded as if the network had only been
 * slow (TCP would have retransmitted it); connections already reset stay gone. */
void fp_heal(fp_proxy *p);
/* Resets every connection open now (returns once they are closed): the next use of a pooled
 * connection finds it dead, and the pool connects anew. */
void fp_reset_all(fp_proxy *p);
/* Closes every connection and the listener, and frees p. */
void fp_stop(fp_proxy *p);

#endif
