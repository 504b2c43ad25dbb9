/*
 * hooks.c - registers every lifecycle hook (gwl_on_hook) and logs each call
 * as one line appended to the file named by $GW_HOOKS_LOG:
 *
 *   HOOK <name> pid=<getpid()> slot=<n> arg=<arg> arg2=<arg2> wpid=<info pid> src=<app|hooks>
 *
 * (pre_request / post_request add " path=<request path>"). Each line is one
 * write() to an O_APPEND descriptor, formatted without stdio or malloc, so
 * the worker_abort hook (run inside the SIGABRT handler) is
 * async-signal-safe too.
 *
 * Usable two ways:
 *   as the app:   build/gateway --preload build/examples/hooks.so
 *                 (entry point gateway_app; --preload adds the master hooks)
 *   as --hooks:   build/gateway --hooks build/examples/hooks.so build/examples/hello.so
 *                 (entry point gateway_hooks)
 *
 * Requests get 200 "ok\n" with X-Worker-Pid. GET /stall?ms=N blocks the
 * worker's loop for N ms (default 30000), so --timeout makes the master
 * abort the worker (worker_abort).
 */
#include "gwl.h"
#include "example.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_path[1024];   /* copied from $GW_HOOKS_LOG at registration */

static size_t put_str(char *b, size_t at, size_t cap, const char *s)
{
    while (s && *s && at < cap) b[at++] = *s++;
    return at;
}

static size_t put_long(char *b, size_t at, size_t cap, long v)
{
    char tmp[24];
    int n = 0;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && n < (int)sizeof(tmp));
    if (v < 0 && at < cap) b[at++] = '-';
    while (n > 0 && at < cap) b[at++] = tmp[--n];
    return at;
}

/* Async-signal-safe: open, write, close and the formatting above only. */
static void on_any_hook(const gwl_hook_info_t *info, void *data)
{
    if (log_path[0] == '\0') return;
    int saved = errno;
    char line[1400];
    size_t cap = sizeof(line) - 1, n = 0;
    n = put_str(line, n, cap, "HOOK ");
    n = put_str(line, n, cap, gwl_hook_name(info->kind));
    n = put_str(line, n, cap, " pid=");
    n = put_long(line, n, cap, (long)getpid());
    n = put_str(line, n, cap, " slot=");
    n = put_long(line, n, cap, info->slot);
    n = put_str(line, n, cap, " arg=");
    n = put_long(line, n, cap, info->arg);
    n = put_str(line, n, cap, " arg2=");
    n = put_long(line, n, cap, info->arg2);
    n = put_str(line, n, cap, " wpid=");
    n = put_long(line, n, cap, info->pid);
    n = put_str(line, n, cap, " src=");
    n = put_str(line, n, cap, (const char *)data);
    if (info->req != NULL && info->kind != GWL_HOOK_WORKER_ABORT) {
        n = put_str(line, n, cap, " path=");
        n = put_str(line, n, cap, gwl_req_path(info->req));
    }
    line[n++] = '\n';
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, line, n);
        (void)w;
        close(fd);
    }
    errno = saved;
}

static int register_all(gwl_app_t *app, const char *src)
{
    const char *p = getenv("GW_HOOKS_LOG");
    if (p != NULL) {
        size_t l = strlen(p);
        if (l >= sizeof(log_path)) l = sizeof(log_path) - 1;
        memcpy(log_path, p, l);
        log_path[l] = '\0';
    }
    for (int k = 0; k < GWL_HOOK_COUNT; k++)
        if (gwl_on_hook(app, (gwl_hook_kind_t)k, on_any_hook, (void *)src) != GWL_OK)
            return GWL_ERROR;
    return GWL_OK;
}

static void hooks_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    char pid[24];
    size_t n = put_long(pid, 0, sizeof(pid) - 1, (long)getpid());
    pid[n] = '\0';
    if (strcmp(gwl_req_path(req), "/stall") == 0) {
        long ms = qparam(gwl_req_query(req), "ms", 30000);
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
    }
    gwl_resp_header(req, "X-Worker-Pid", pid);
    gwl_respond(req, 200, "text/plain", "ok\n", 3);
}

int gateway_app(gwl_app_t *app)
{
    if (gwl_on_request(app, hooks_on_request, NULL) != GWL_OK) return GWL_ERROR;
    return register_all(app, "app");
}

int gateway_hooks(gwl_app_t *app)
{
    return register_all(app, "hooks");
}
