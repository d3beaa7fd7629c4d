/*
 * The coordinator process (proc.h).
 */
#include "proc.h"

#include "httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double drill_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void drill_sleep(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

int drill_proc_start(drill_proc *p, const char *crash_at, int skip)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        char n[16];
        /* a drill that dies must not leave its coordinator scanning the participants */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        unsetenv("XACOORD_CRASH_AT");
        unsetenv("XACOORD_CRASH_SKIP");
        if (crash_at) {
            snprintf(n, sizeof n, "%d", skip);
            setenv("XACOORD_CRASH_AT", crash_at, 1);
            setenv("XACOORD_CRASH_SKIP", n, 1);
        }
        execlp(p->bin, "xacoord", "--config", p->config, (char *)NULL);
        fprintf(stderr, "xacoord-drill: cannot run %s\n", p->bin);
        _exit(127);
    }
    p->pid = pid;
    return 0;
}

bool drill_proc_exited(drill_proc *p)
{
    if (p->pid <= 0)
        return true;
    if (waitpid(p->pid, &p->status, WNOHANG) != p->pid)
        return false;
    p->pid = 0;
    return true;
}

bool drill_proc_crash_point(const drill_proc *p)
{
    return WIFSIGNALED(p->status) && WTERMSIG(p->status) == SIGKILL;
}

void drill_proc_kill(drill_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

int drill_proc_wait_ready(drill_proc *p, double timeout_s, double *took)
{
    double start = drill_now();
    while (drill_now() - start < timeout_s) {
        char *body = NULL;
        int status;
        if (drill_proc_exited(p))
            return -ECHILD;
        status = httpc_request(p->host, p->port, "GET", "/readyz", NULL, NULL, &body);
        free(body);
        if (status == 200) {
            *took = drill_now() - start;
            return 0;
        }
        drill_sleep(0.02);
    }
    return -ETIMEDOUT;
}

int drill_proc_stop(drill_proc *p)
{
    int status;
    if (p->pid <= 0)
        return -ESRCH;
    kill(p->pid, SIGTERM);
    for (double start = drill_now(); drill_now() - start < 30; drill_sleep(0.02))
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
        }
    drill_proc_kill(p);
    return -ETIMEDOUT;
}
