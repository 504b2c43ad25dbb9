/*
 * crash.c - a worker that dies on demand, to test respawn and isolation:
 *  - GET /ok answers 200 text/plain "ok\n" (with ?ms=N after N ms, from an
 *    ev_timer, so healthy requests can be in flight on other workers while
 *    one crashes);
 *  - any other path calls abort(): the worker dies with SIGABRT, the master
 *    answers that request with an error and respawns the slot.
 * Header X-Worker-Pid.
 *
 *   curl http://127.0.0.1:8000/ok?ms=200 & curl http://127.0.0.1:8000/boom
 *
 * Runs in a worker process, on its loop thread.
 */
#include "gwl.h"
#include "example.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    ev_timer   timer;      /* first member: the watcher is the context */
    gwl_req_t *req;
} crash_ctx_t;

static void crash_ok(gwl_req_t *req)
{
    char pid[24];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    gwl_resp_header(req, "X-Worker-Pid", pid);
    gwl_respond(req, 200, "text/plain", "ok\n", 3);
}

static void crash_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    crash_ctx_t *c = (crash_ctx_t *)w;
    crash_ok(c->req);
    free(c);
}

static void crash_on_cancel(gwl_req_t *req, void *arg)
{
    crash_ctx_t *c = arg;
    ev_timer_stop(gwl_loop(), &c->timer);
    gwl_respond(req, 499, NULL, NULL, 0);
    free(c);
}

static void crash_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    if (strcmp(gwl_req_path(req), "/ok") != 0) {
        gwl_log("warning", "crash app: aborting on %s %s as asked",
                gwl_req_method(req), gwl_req_target(req));
        abort();
    }
    long ms = qparam(gwl_req_query(req), "ms", 0);
    if (ms == 0) {
        crash_ok(req);
        return;
    }
    crash_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        gwl_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    c->req = req;
    ev_timer_init(&c->timer, crash_on_timer, ms / 1000.0, 0.);
    ev_timer_start(gwl_loop(), &c->timer);
    gwl_req_on_cancel(req, crash_on_cancel, c);
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, crash_on_request, NULL);
}
