/*
 * The fault proxy of the tests (see faultproxy.h). Each accepted connection gets an upstream
 * connection; bytes each way are buffered and forwarded one whole protocol message at a time, so
 * that a rule can stop, delay or cut the stream exactly at a message. Everything below runs on
 * the proxy's own loop thread except the public control functions, which only change fields under
 * the lock and wake the loop.
 */
#include "faultproxy.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef struct bytes {
    char *data;
    size_t len, cap;
} bytes;

/* C_ORPHAN: the client is gone, the server's session is kept open until the fault heals. */
typedef enum conn_state { C_FLOWING, C_HELD, C_ORPHAN, C_CLOSED } conn_state;

/* Where the MySQL reply parser is within one reply. */
typedef enum reply_state { R_START, R_SKIP, R_ROWS } reply_state;

#define STMT_SLOTS 64

typedef struct fp_conn {
    struct fp_proxy *p;
    struct fp_conn *next;
    uv_tcp_t client, server;
    uv_connect_t connect_req;
    uv_timer_t timer; /* FP_DELAY */
    int open_handles;
    conn_state state;
    bool server_up;
    bytes cin, sout; /* client bytes for the server, server bytes for the client */
    bool greeted;    /* the client's connect message went through the rule */
    size_t pass_len; /* a held message that already went through the rule */
    /* Replies: the sync points sent (messages that end with a reply) and the replies seen. */
    unsigned syncs_sent, replies_seen;
    bool losing, lose_any; /* FP_LOSE_REPLY: drop server bytes, close at reply lose_at */
    unsigned lose_at;
    /* MySQL: the reply parser, the statement texts by id, capabilities. */
    reply_state rstate;
    long skip;
    bool after_skip_rows;
    bool deprecate_eof;
    char *pending_prepare;
    struct {
        uint32_t id;
        char *sql;
    } stmts[STMT_SLOTS];
    int next_slot;
} fp_conn;

struct fp_proxy {
    fp_protocol proto;
    int listen_port, upstream_port;
    uv_thread_t thread;
    uv_sem_t ready;
    int start_error;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    fp_conn *conns;
    /* Shared with the control functions, under lock. */
    uv_mutex_t lock;
    fp_rule rule;
    int hits;
    bool partitioned, heal, reset_all, stopping;
    uv_sem_t reset_done;
};

typedef struct write_req {
    uv_write_t req;
    char data[];
} write_req;

/* --- Buffers and wire integers ---------------------------------------------------------- */

static void bytes_add(bytes *b, const char *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            abort();
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void bytes_consume(bytes *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static uint32_t be32(const unsigned char *s)
{
    return (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | s[3];
}

static uint32_t le_n(const unsigned char *s, int n)
{
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | s[i];
    return v;
}

/* A MySQL length-encoded integer at *pos within n bytes; -1 when it does not fit. */
static long long lenenc(const unsigned char *s, size_t n, size_t *pos)
{
    unsigned char b;
    int width;
    if (*pos >= n)
        return -1;
    b = s[(*pos)++];
    width = b < 0xfb ? 0 : b == 0xfc ? 2 : b == 0xfd ? 3 : b == 0xfe ? 8 : -1;
    if (width == 0)
        return b;
    if (width < 0 || *pos + (size_t)width > n)
        return -1;
    long long v = width == 8 ? (long long)le_n(s + *pos, 4) : (long long)le_n(s + *pos, width);
    *pos += (size_t)width;
    return v;
}

/* --- Framing ----------------------------------------------------------------------------- */

/* The length of the whole message at the start of b, or 0 while it is incomplete. A frame
 * that claims an absurd length is taken as it is: the proxy forwards bytes, it does not judge. */
static size_t frame_len(const fp_conn *c, const bytes *b, bool from_client)
{
    const unsigned char *s = (const unsigned char *)b->data;
    size_t n;
    if (c->p->proto == FP_MYSQL) {
        if (b->len < 4)
            return 0;
        n = 4 + le_n(s, 3);
    } else if (from_client && !c->greeted) {
        if (b->len < 4)
            return 0;
        n = be32(s); /* the startup packet: length, no type byte */
        if (n < 4)
            n = 4;
    } else {
        if (b->len < 5)
            return 0;
        n = 1 + (size_t)be32(s + 1);
        if (n < 5)
            n = 5;
    }
    return n <= b->len ? n : 0;
}

static const char *stmt_sql(const fp_conn *c, uint32_t id)
{
    for (int i = 0; i < STMT_SLOTS; i++)
        if (c->stmts[i].sql && c->stmts[i].id == id)
            return c->stmts[i].sql;
    return NULL;
}

/* The SQL text a client message carries (not NUL-terminated), or NULL. */
static const char *message_sql(const fp_conn *c, const char *m, size_t n, size_t *len)
{
    const unsigned char *s = (const unsigned char *)m;
    if (c->p->proto == FP_POSTGRES) {
        const char *text = m + 5, *end = m + n, *nul;
        if (n < 6 || (m[0] != 'Q' && m[0] != 'P'))
            return NULL;
        if (m[0] == 'P') { /* statement name, then the query */
            nul = memchr(text, '\0', (size_t)(end - text));
            if (!nul)
                return NULL;
            text = nul + 1;
        }
        nul = memchr(text, '\0', (size_t)(end - text));
        *len = (size_t)((nul ? nul : end) - text);
        return text;
    }
    if (n < 5 || s[3] != 0)
        return NULL;
    if (s[4] == 0x03 || s[4] == 0x16) { /* COM_QUERY, COM_STMT_PREPARE */
        *len = n - 5;
        return m + 5;
    }
    if (s[4] == 0x17 && n >= 9) { /* COM_STMT_EXECUTE */
        const char *sql = stmt_sql(c, le_n(s + 5, 4));
        if (sql)
            *len = strlen(sql);
        return sql;
    }
    return NULL;
}

/* Does the client message end with a reply (a point where the server answers)? */
static bool is_sync_point(const fp_conn *c, const char *m, size_t n)
{
    const unsigned char *s = (const unsigned char *)m;
    if (c->p->proto == FP_POSTGRES)
        return !c->greeted || m[0] == 'Q' || m[0] == 'S';
    /* After the handshake every command (sequence 0) is answered but QUIT, STMT_CLOSE and
     * STMT_SEND_LONG_DATA. */
    return c->greeted && n >= 5 && s[3] == 0 && s[4] != 0x01 && s[4] != 0x19 && s[4] != 0x18;
}

/* Remembers what a MySQL client message tells the proxy: capabilities, a statement to prepare. */
static void note_client_message(fp_conn *c, const char *m, size_t n)
{
    const unsigned char *s = (const unsigned char *)m;
    if (c->p->proto != FP_MYSQL)
        return;
    if (!c->greeted && n >= 8)
        c->deprecate_eof = (le_n(s + 4, 4) & (1u << 24)) != 0; /* CLIENT_DEPRECATE_EOF */
    if (c->greeted && n >= 5 && s[3] == 0 && s[4] == 0x16) {
        free(c->pending_prepare);
        c->pending_prepare = strndup(m + 5, n - 5);
    }
}

/* --- MySQL replies ----------------------------------------------------------------------- */

/* Status flags of an OK or EOF packet payload; has_more: SERVER_MORE_RESULTS_EXISTS. */
static bool mysql_more_results(const unsigned char *s, size_t n)
{
    size_t pos = 1;
    uint32_t status = 0;
    if (s[0] == 0xfe && n < 9) {
        if (n >= 5)
            status = le_n(s + 3, 2);
    } else if (lenenc(s, n, &pos) >= 0 && lenenc(s, n, &pos) >= 0 && pos + 2 <= n) {
        status = le_n(s + pos, 2);
    }
    return (status & 0x0008) != 0;
}

static void remember_stmt(fp_conn *c, uint32_t id)
{
    int slot = c->next_slot++ % STMT_SLOTS;
    free(c->stmts[slot].sql);
    c->stmts[slot].id = id;
    c->stmts[slot].sql = c->pending_prepare;
    c->pending_prepare = NULL;
}

/* Follows one server packet through a reply; true when it ends the reply. */
static bool mysql_reply_packet(fp_conn *c, const unsigned char *s, size_t n)
{
    size_t pos = 0;
    if (n == 0)
        return false;
    switch (c->rstate) {
    case R_START:
        if (c->pending_prepare && s[0] == 0x00 && n >= 12) { /* COM_STMT_PREPARE_OK */
            long cols = (long)le_n(s + 5, 2), params = (long)le_n(s + 7, 2);
            remember_stmt(c, le_n(s + 1, 4));
            c->skip = cols + params + (c->deprecate_eof ? 0 : (cols > 0) + (params > 0));
            c->after_skip_rows = false;
            c->rstate = c->skip ? R_SKIP : R_START;
            return c->skip == 0;
        }
        if (s[0] == 0xff || s[0] == 0xfb) {
            free(c->pending_prepare);
            c->pending_prepare = NULL;
            return true;
        }
        if (s[0] == 0x00 || s[0] == 0xfe)
            return !mysql_more_results(s, n);
        /* A result set: its column count, then the column definitions - unless the count
         * packet carries MariaDB's "metadata follows" byte as 0 (the client caches them) -
         * and an EOF. */
        c->skip = (long)lenenc(s, n, &pos);
        if (pos < n && s[pos] == 0)
            c->skip = 0;
        c->skip += c->deprecate_eof ? 0 : 1;
        c->after_skip_rows = true;
        c->rstate = c->skip > 0 ? R_SKIP : R_ROWS;
        return false;
    case R_SKIP:
        if (--c->skip <= 0)
            c->rstate = c->after_skip_rows ? R_ROWS : R_START;
        return c->skip <= 0 && !c->after_skip_rows;
    case R_ROWS:
        if (s[0] == 0xff) {
            c->rstate = R_START;
            return true;
        }
        if (s[0] == 0xfe && n < 0xffffff) {
            c->rstate = R_START;
            return !mysql_more_results(s, n);
        }
        return false;
    }
    return false;
}

/* Does this server message end a reply the client waits for? */
static bool ends_reply(fp_conn *c, const char *m, size_t n)
{
    if (c->replies_seen >= c->syncs_sent)
        return false; /* unsolicited: the handshake, a notice */
    if (c->p->proto == FP_POSTGRES)
        return m[0] == 'Z';
    return mysql_reply_packet(c, (const unsigned char *)m + 4, n - 4);
}

/* --- Rules ------------------------------------------------------------------------------- */

static bool partitioned(fp_proxy *p)
{
    bool v;
    uv_mutex_lock(&p->lock);
    v = p->partitioned;
    uv_mutex_unlock(&p->lock);
    return v;
}

/* The action of the rule for the message at the head of c->cin (counted as a hit). */
static fp_action rule_for(fp_conn *c, const char *m, size_t n, unsigned *delay_ms)
{
    fp_proxy *p = c->p;
    fp_action a = FP_PASS;
    size_t len = 0;
    const char *sql = c->greeted ? message_sql(c, m, n, &len) : NULL;
    uv_mutex_lock(&p->lock);
    if (p->rule.action != FP_PASS && (p->rule.times == 0 || p->hits < p->rule.times)) {
        bool hit = p->rule.match ? sql && memmem(sql, len, p->rule.match, strlen(p->rule.match))
                                 : !c->greeted;
        if (hit) {
            p->hits++;
            a = p->rule.action;
            *delay_ms = p->rule.delay_ms;
        }
    }
    uv_mutex_unlock(&p->lock);
    return a;
}

/* --- Connections ------------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    fp_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    free(c->cin.data);
    free(c->sout.data);
    free(c->pending_prepare);
    for (int i = 0; i < STMT_SLOTS; i++)
        free(c->stmts[i].sql);
    free(c);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

/* Closes both sides: the client's with a reset when asked, the server's plainly. */
static void conn_close(fp_conn *c, bool reset)
{
    fp_conn **pp;
    if (c->state == C_CLOSED)
        return;
    c->state = C_CLOSED;
    for (pp = &c->p->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (reset && !uv_is_closing((uv_handle_t *)&c->client))
        uv_tcp_close_reset(&c->client, on_handle_closed);
    else
        close_handle((uv_handle_t *)&c->client);
    close_handle((uv_handle_t *)&c->server);
    close_handle((uv_handle_t *)&c->timer);
}

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error or EOF on the same socket */
    free(req);
}

static void send_bytes(uv_tcp_t *to, const char *data, size_t n)
{
    write_req *w;
    uv_buf_t buf;
    if (uv_is_closing((uv_handle_t *)to))
        return;
    w = malloc(sizeof *w + n);
    if (!w)
        abort();
    memcpy(w->data, data, n);
    buf = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)to, &buf, 1, on_written) != 0)
        free(w);
}

static void on_delay_over(uv_timer_t *t);

/* Forwards the client's complete messages to the server until a rule stops the stream. */
static void pump_client(fp_conn *c)
{
    while (c->state == C_FLOWING && c->server_up && !partitioned(c->p)) {
        unsigned delay_ms = 0;
        fp_action a = FP_PASS;
        size_t n = c->pass_len;
        if (n) {
            c->pass_len = 0;
        } else {
            n = frame_len(c, &c->cin, true);
            if (!n)
                return;
            a = rule_for(c, c->cin.data, n, &delay_ms);
        }
        switch (a) {
        case FP_DELAY:
        case FP_HANG:
            c->state = C_HELD;
            c->pass_len = n;
            if (a == FP_DELAY)
                uv_timer_start(&c->timer, on_delay_over, delay_ms, 0);
            return;
        case FP_RESET:
            conn_close(c, true);
            return;
        case FP_RESET_HALF:
            c->state = C_ORPHAN;
            uv_tcp_close_reset(&c->client, on_handle_closed);
            return;
        case FP_LOSE_REPLY:
            c->losing = true;
            c->lose_any = !c->greeted; /* the connect message: whatever the server says first */
            c->lose_at = c->syncs_sent + 1;
            break;
        case FP_PASS:
            break;
        }
        note_client_message(c, c->cin.data, n);
        if (is_sync_point(c, c->cin.data, n))
            c->syncs_sent++;
        c->greeted = true;
        send_bytes(&c->server, c->cin.data, n);
        bytes_consume(&c->cin, n);
    }
}

/* Forwards the server's complete messages to the client, or drops them for a lost reply. */
static void pump_server(fp_conn *c)
{
    while (c->state != C_CLOSED && !partitioned(c->p)) {
        size_t n = frame_len(c, &c->sout, false);
        bool ends;
        if (!n)
            return;
        ends = ends_reply(c, c->sout.data, n);
        if (ends)
            c->replies_seen++;
        if (c->state == C_ORPHAN) {
            bytes_consume(&c->sout, n);
            continue;
        }
        if (c->losing) {
            bytes_consume(&c->sout, n);
            if (c->lose_any || c->replies_seen >= c->lose_at)
                conn_close(c, true);
            continue;
        }
        send_bytes(&c->client, c->sout.data, n);
        bytes_consume(&c->sout, n);
    }
}

static void on_delay_over(uv_timer_t *t)
{
    fp_conn *c = t->data;
    if (c->state != C_HELD)
        return;
    c->state = C_FLOWING;
    pump_client(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fp_conn *c = s->data;
    if (n > 0 && c->state != C_CLOSED) {
        bytes_add(&c->cin, buf->base, (size_t)n);
        pump_client(c);
    } else if (n < 0) {
        conn_close(c, false);
    }
    free(buf->base);
}

static void on_server_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    fp_conn *c = s->data;
    if (n > 0 && c->state != C_CLOSED) {
        bytes_add(&c->sout, buf->base, (size_t)n);
        pump_server(c);
    } else if (n < 0) {
        conn_close(c, false);
    }
    free(buf->base);
}

static void on_upstream(uv_connect_t *req, int status)
{
    fp_conn *c = req->data;
    if (c->state == C_CLOSED)
        return;
    if (status != 0) {
        conn_close(c, true);
        return;
    }
    c->server_up = true;
    uv_read_start((uv_stream_t *)&c->server, on_alloc, on_server_read);
    pump_client(c);
}

static void on_accept(uv_stream_t *listener, int status)
{
    fp_proxy *p = listener->data;
    struct sockaddr_in up;
    fp_conn *c;
    if (status != 0 || !(c = calloc(1, sizeof *c)))
        return;
    c->p = p;
    uv_tcp_init(&p->loop, &c->client);
    uv_tcp_init(&p->loop, &c->server);
    uv_timer_init(&p->loop, &c->timer);
    c->client.data = c->server.data = c->timer.data = c->connect_req.data = c;
    c->open_handles = 3;
    c->next = p->conns;
    p->conns = c;
    if (uv_accept(listener, (uv_stream_t *)&c->client) != 0) {
        conn_close(c, false);
        return;
    }
    uv_tcp_nodelay(&c->client, 1);
    uv_tcp_nodelay(&c->server, 1);
    uv_ip4_addr("127.0.0.1", p->upstream_port, &up);
    if (uv_tcp_connect(&c->connect_req, &c->server, (struct sockaddr *)&up, on_upstream) != 0) {
        conn_close(c, true);
        return;
    }
    uv_read_start((uv_stream_t *)&c->client, on_alloc, on_client_read);
}

/* --- The loop thread ----------------------------------------------------------------------- */

static void on_wake(uv_async_t *a)
{
    fp_proxy *p = a->data;
    bool heal, stopping, reset_all;
    uv_mutex_lock(&p->lock);
    heal = p->heal;
    stopping = p->stopping;
    reset_all = p->reset_all;
    p->heal = p->reset_all = false;
    uv_mutex_unlock(&p->lock);
    if (reset_all) {
        while (p->conns)
            conn_close(p->conns, true);
        uv_sem_post(&p->reset_done);
    }
    if (stopping) {
        while (p->conns)
            conn_close(p->conns, false);
        uv_close((uv_handle_t *)&p->listener, NULL);
        uv_close((uv_handle_t *)&p->wake, NULL);
        return;
    }
    for (fp_conn *c = p->conns, *next; c; c = next) {
        next = c->next; /* pumping may close c */
        if (heal && c->state == C_ORPHAN) {
            conn_close(c, false);
            continue;
        }
        if (heal && c->state == C_HELD) {
            uv_timer_stop(&c->timer);
            c->state = C_FLOWING;
        }
        pump_client(c);
        if (c->state != C_CLOSED)
            pump_server(c);
    }
}

static void proxy_thread(void *arg)
{
    fp_proxy *p = arg;
    struct sockaddr_in sa;
    uv_loop_init(&p->loop);
    uv_async_init(&p->loop, &p->wake, on_wake);
    uv_tcp_init(&p->loop, &p->listener);
    p->wake.data = p->listener.data = p;
    uv_ip4_addr("127.0.0.1", p->listen_port, &sa);
    p->start_error = uv_tcp_bind(&p->listener, (struct sockaddr *)&sa, 0);
    if (!p->start_error)
        p->start_error = uv_listen((uv_stream_t *)&p->listener, 128, on_accept);
    if (p->start_error) {
        uv_close((uv_handle_t *)&p->listener, NULL);
        uv_close((uv_handle_t *)&p->wake, NULL);
    }
    uv_sem_post(&p->ready);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    uv_loop_close(&p->loop);
}

/* --- Control ------------------------------------------------------------------------------- */

static void wake(fp_proxy *p)
{
    uv_async_send(&p->wake);
}

fp_proxy *fp_start(fp_protocol proto, int listen_port, int upstream_port)
{
    fp_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->proto = proto;
    p->listen_port = listen_port;
    p->upstream_port = upstream_port;
    /* A write to a connection the other side reset must not kill the test process. */
    signal(SIGPIPE, SIG_IGN);
    uv_mutex_init(&p->lock);
    uv_sem_init(&p->ready, 0);
    uv_sem_init(&p->reset_done, 0);
    if (uv_thread_create(&p->thread, proxy_thread, p) != 0) {
        free(p);
        return NULL;
    }
    uv_sem_wait(&p->ready);
    if (p->start_error) {
        fprintf(stderr, "faultproxy: 127.0.0.1:%d: %s\n", listen_port, uv_strerror(p->start_error));
        uv_thread_join(&p->thread);
        uv_sem_destroy(&p->ready);
        uv_sem_destroy(&p->reset_done);
        uv_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

void fp_set(fp_proxy *p, const fp_rule *rule)
{
    uv_mutex_lock(&p->lock);
    free((char *)p->rule.match);
    p->rule = *rule;
    p->rule.match = rule->match ? strdup(rule->match) : NULL;
    p->hits = 0;
    uv_mutex_unlock(&p->lock);
}

int fp_hits(fp_proxy *p)
{
    int n;
    uv_mutex_lock(&p->lock);
    n = p->hits;
    uv_mutex_unlock(&p->lock);
    return n;
}

int fp_wait_hits(fp_proxy *p, int n, unsigned timeout_ms)
{
    for (unsigned waited = 0; fp_hits(p) < n; waited += 10) {
        struct timespec ts = {0, 10 * 1000000L};
        if (waited >= timeout_ms)
            return -ETIMEDOUT;
        nanosleep(&ts, NULL);
    }
    return 0;
}

void fp_partition(fp_proxy *p)
{
    uv_mutex_lock(&p->lock);
    p->partitioned = true;
    uv_mutex_unlock(&p->lock);
}

void fp_heal(fp_proxy *p)
{
    uv_mutex_lock(&p->lock);
    p->rule.action = FP_PASS;
    p->partitioned = false;
    p->heal = true;
    uv_mutex_unlock(&p->lock);
    wake(p);
}

void fp_reset_all(fp_proxy *p)
{
    uv_mutex_lock(&p->lock);
    p->reset_all = true;
    uv_mutex_unlock(&p->lock);
    wake(p);
    uv_sem_wait(&p->reset_done);
}

void fp_stop(fp_proxy *p)
{
    uv_mutex_lock(&p->lock);
    p->stopping = true;
    uv_mutex_unlock(&p->lock);
    wake(p);
    uv_thread_join(&p->thread);
    free((char *)p->rule.match);
    uv_sem_destroy(&p->ready);
    uv_sem_destroy(&p->reset_done);
    uv_mutex_destroy(&p->lock);
    free(p);
}
