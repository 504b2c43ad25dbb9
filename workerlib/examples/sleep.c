/*
 * sleep.c - a slow answer that never blocks the loop: GET /?ms=N (default
 * 1000) answers 200 text/plain "slept N ms\n" after N ms, from an ev_timer
 * on the worker's loop, so one worker holds many sleeping requests at once.
 * If the client goes away first the timer is stopped. Header X-Worker-Pid.
 * Used to test concurrency, deadlines (504 + CANCEL) and graceful drain.
 *
 *   curl 'http://127.0.0.1:8000/?ms=250'
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
    long       ms;
} sleep_ctx_t;

static void sleep_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    sleep_ctx_t *c = (sleep_ctx_t *)w;
    char pid[24], body[48];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    int len = snprintf(body, sizeof(body), "slept %ld ms\n", c->ms);
    gwl_resp_header(c->req, "X-Worker-Pid", pid);
    gwl_respond(c->req, 200, "text/plain", body, (size_t)len);
    free(c);
}

/* Client gone: stop the timer and finish (a no-op on the wire). */
static void sleep_on_cancel(gwl_req_t *req, void *arg)
{
    sleep_ctx_t *c = arg;
    ev_timer_stop(gwl_loop(), &c->timer);
    gwl_respond(req, 499, NULL, NULL, 0);
    free(c);
}

static void sleep_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    sleep_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        gwl_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    c->req = req;
    c->ms = qparam(gwl_req_query(req), "ms", 1000);
    ev_timer_init(&c->timer, sleep_on_timer, c->ms / 1000.0, 0.);
    ev_timer_start(gwl_loop(), &c->timer);
    gwl_req_on_cancel(req, sleep_on_cancel, c);
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, sleep_on_request, NULL);
}
