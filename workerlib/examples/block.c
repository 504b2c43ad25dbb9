/*
 * block.c - blocking work done right: GET /?ms=N (default 100) runs
 * usleep(N ms) on the worker's offload pool (gwl_offload), then answers 200
 * text/plain "blocked N ms\n" from the done callback on the loop thread. The
 * loop stays free meanwhile: other requests on the same worker are served.
 * With the default pool of 4 threads, a fifth concurrent request waits for a
 * thread. Header X-Worker-Pid. If the client goes away the sleep still runs
 * to its end; the answer is then dropped by workerlib.
 *
 *   curl 'http://127.0.0.1:8000/?ms=500'
 *
 * Work runs on a pool thread; everything else on the loop thread.
 */
#include "gwl.h"
#include "example.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    gwl_req_t *req;
    long       ms;
} block_ctx_t;

/* Pool thread: must not touch the request. */
static void block_work(void *arg)
{
    block_ctx_t *c = arg;
    usleep((useconds_t)(c->ms * 1000));
}

/* Loop thread. */
static void block_done(void *arg)
{
    block_ctx_t *c = arg;
    char pid[24], body[48];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    int len = snprintf(body, sizeof(body), "blocked %ld ms\n", c->ms);
    gwl_resp_header(c->req, "X-Worker-Pid", pid);
    gwl_respond(c->req, 200, "text/plain", body, (size_t)len);
    free(c);
}

static void block_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    block_ctx_t *c = malloc(sizeof(*c));
    if (c == NULL) {
        gwl_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    c->req = req;
    c->ms = qparam(gwl_req_query(req), "ms", 100);
    if (gwl_offload(block_work, block_done, c) != GWL_OK) {
        free(c);
        gwl_respond(req, 503, "text/plain", "cannot offload\n", 15);
    }
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, block_on_request, NULL);
}
