/*
 * stream.c - a slow streaming response driven by a timer on the worker's
 * loop: GET /?n=5&ms=100 answers 200 text/plain without Content-Length
 * (chunked for HTTP/1.1) and sends n lines "chunk 0\n" .. "chunk <n-1>\n",
 * one every ms milliseconds (the first after ms), then finishes. Defaults
 * n=5, ms=100. The head goes out at once. If the client goes away the timer
 * is stopped. Headers: X-Worker-Pid.
 *
 *   curl -N 'http://127.0.0.1:8000/?n=10&ms=200'
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
    long       i, n;
} stream_ctx_t;

/* Integer query parameter `name`, or def when absent or not a number. */
static void stream_end(stream_ctx_t *c)
{
    ev_timer_stop(gwl_loop(), &c->timer);
    gwl_resp_finish(c->req);
    free(c);
}

static void stream_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    stream_ctx_t *c = (stream_ctx_t *)w;
    char line[32];
    int len = snprintf(line, sizeof(line), "chunk %ld\n", c->i);
    gwl_resp_write(c->req, line, (size_t)len);
    if (++c->i >= c->n) stream_end(c);
}

static void stream_on_cancel(gwl_req_t *req, void *arg)
{
    (void)req;
    stream_end(arg);
}

static void stream_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    char pid[24];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    long n = qparam(gwl_req_query(req), "n", 5);
    long ms = qparam(gwl_req_query(req), "ms", 100);
    stream_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        gwl_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    gwl_resp_start(req, 200);
    gwl_resp_header(req, "Content-Type", "text/plain");
    gwl_resp_header(req, "X-Worker-Pid", pid);
    if (n == 0 || ms == 0) {          /* nothing to pace: all at once */
        char line[32];
        for (long i = 0; i < n; i++) {
            int len = snprintf(line, sizeof(line), "chunk %ld\n", i);
            gwl_resp_write(req, line, (size_t)len);
        }
        free(c);
        gwl_resp_finish(req);
        return;
    }
    c->req = req;
    c->n = n;
    ev_timer_init(&c->timer, stream_on_timer, ms / 1000.0, ms / 1000.0);
    ev_timer_start(gwl_loop(), &c->timer);
    gwl_req_on_cancel(req, stream_on_cancel, c);
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, stream_on_request, NULL);
}
