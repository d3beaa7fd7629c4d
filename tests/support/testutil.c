/*
 * Test helpers (see testutil.h).
 */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void run_until(uv_loop_t *loop, bool (*done)(const void *), const void *arg,
                      unsigned timeout_ms)
{
    uv_timer_t timer;
    bool expired = false;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, timeout_ms, 0);
    while (!done(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (!done(arg))
        fail_msg("condition not reached within %u ms", timeout_ms);
}

static bool flag_done(const void *arg)
{
    return *(const volatile bool *)arg;
}

void tu_run_until(uv_loop_t *loop, const volatile bool *flag, unsigned timeout_ms)
{
    run_until(loop, flag_done, (const void *)flag, timeout_ms);
}

static bool atomic_done(const void *arg)
{
    return atomic_load((const atomic_bool *)arg);
}

void tu_run_until_atomic(uv_loop_t *loop, const atomic_bool *flag, unsigned timeout_ms)
{
    run_until(loop, atomic_done, (const void *)flag, timeout_ms);
}

struct count_arg {
    const volatile int *count;
    int want;
};

static bool count_done(const void *arg)
{
    const struct count_arg *c = arg;
    return *c->count >= c->want;
}

void tu_run_until_count(uv_loop_t *loop, const volatile int *count, int want, unsigned timeout_ms)
{
    struct count_arg c = {count, want};
    run_until(loop, count_done, &c, timeout_ms);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void tu_loop_close(uv_loop_t *loop)
{
    /* Give pending close callbacks a chance, then close whatever is left. */
    uv_run(loop, UV_RUN_NOWAIT);
    uv_walk(loop, close_walk, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set: run the integration tests through scripts/test "
                 "(or export the output of `scripts/db env`)",
                 name);
    return v;
}

static char *read_secret(const char *which)
{
    char path[512], buf[256];
    FILE *f;
    snprintf(path, sizeof path, "%s/secrets/%s.pw", tu_env("XA_DB_DIR"), which);
    f = fopen(path, "r");
    if (!f)
        fail_msg("cannot read %s", path);
    if (!fgets(buf, sizeof buf, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

static const char *port_env(const char *which)
{
    if (strcmp(which, "payment") == 0)
        return "XA_PG_PORT";
    if (strcmp(which, "order") == 0)
        return "XA_ORDER_PORT";
    if (strcmp(which, "warehouse") == 0)
        return "XA_WAREHOUSE_PORT";
    fail_msg("unknown test server %s", which);
    return NULL;
}

void tu_target(px_target *t, const char *which)
{
    const char *port = tu_env(port_env(which));
    memset(t, 0, sizeof *t);
    t->name = which;
    t->password = read_secret(which);
    t->connect_timeout_ms = 3000;
    t->lock_timeout_ms = 2000;
    if (strcmp(which, "payment") == 0) {
        char *ci = malloc(256);
        snprintf(ci, 256,
                 "host=127.0.0.1 port=%s dbname=xatest user=xacoord sslmode=disable "
                 "gssencmode=disable",
                 port);
        t->driver = "postgres";
        t->conninfo = ci;
    } else {
        t->driver = "mysql";
        t->host = "127.0.0.1";
        t->port = atoi(port);
        t->database = "xatest";
        t->user = "xacoord";
    }
}

char *tu_admin_sql(const char *which, const char *db, const char *sql)
{
    char cmd[8192], *out = NULL;
    size_t cap = 0, len = 0;
    FILE *p;
    const char *port = tu_env(port_env(which));
    char tmpl[] = "/tmp/xatest-sql-XXXXXX";
    int fd = mkstemp(tmpl);
    FILE *f = fdopen(fd, "w");
    fputs(sql, f);
    fclose(f);
    if (strcmp(which, "payment") == 0)
        snprintf(cmd, sizeof cmd,
                 "psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %s -U postgres -d %s -At -f %s",
                 port, db, tmpl);
    else
        snprintf(cmd, sizeof cmd,
                 "mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P%s -uroot -N -B %s < %s", port,
                 db, tmpl);
    p = popen(cmd, "r");
    if (p) {
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, p)) > 0) {
            if (len + n + 1 > cap) {
                cap = (len + n + 1) * 2;
                out = realloc(out, cap);
            }
            memcpy(out + len, buf, n);
            len += n;
        }
        if (pclose(p) != 0) {
            free(out);
            out = NULL;
        } else {
            if (!out)
                out = calloc(1, 1);
            while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
                len--;
            out[len] = '\0';
        }
    }
    unlink(tmpl);
    return out;
}

int tu_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int rc;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The child's stderr, up to cap - 1 bytes (the rest is drained and dropped). */
static void read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char sink[512];
    ssize_t n;
    while ((n = read(fd, len + 1 < cap ? buf + len : sink,
                     len + 1 < cap ? cap - 1 - len : sizeof sink)) > 0)
        len += len + 1 < cap ? (size_t)n : 0;
    buf[len] = '\0';
}

void tu_expect_abort(void (*fn)(void *arg), void *arg, ...)
{
    int fds[2], status;
    char out[4096];
    const char *want, *missing = NULL;
    va_list ap;
    pid_t pid;
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGABRT, SIG_DFL);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        fn(arg);
        _exit(0); /* came back: the test below fails */
    }
    close(fds[1]);
    read_all(fds[0], out, sizeof out);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("expected an abort, the child %s %d; stderr: %s",
                 WIFSIGNALED(status) ? "died of signal" : "exited with",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), out);
    va_start(ap, arg);
    while (!missing && (want = va_arg(ap, const char *)))
        if (!strstr(out, want))
            missing = want;
    va_end(ap);
    if (missing)
        fail_msg("the abort message lacks \"%s\": %s", missing, out);
}
