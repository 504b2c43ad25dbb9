/*
 * misbehave.c - an app that breaks the rules on purpose, to exercise the
 * gateway's defences (tests and demos only):
 *
 *   GET /stall?ms=N   blocks the worker's loop thread for N ms (default 5000)
 *                     with usleep(): no heartbeats, no other requests; past
 *                     --timeout the master logs WORKER TIMEOUT and aborts it.
 *   GET /hog?mb=N     allocates and keeps N MB (default 64), touching every
 *                     page, so resident memory grows (--max-worker-memory).
 *   GET /badheader    a response head the front refuses (a control byte in a
 *                     value, which workerlib lets through): the client gets 502.
 *   GET /badlength    a Content-Length that is not a number: 502 as well.
 *   anything else     200 "ok\n" at once.
 *
 * Every answer carries X-Worker-Pid. Runs in a worker, on its loop thread.
 */
#include "gwl.h"
#include "example.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char pid_buf[16];
static char *hoard[256];     /* kept reachable, or the compiler drops the leak */
static unsigned nhoard;

static void answer(gwl_req_t *req, const char *body)
{
    gwl_resp_header(req, "X-Worker-Pid", pid_buf);
    gwl_respond(req, 200, "text/plain", body, strlen(body));
}

static void misbehave(gwl_req_t *req, void *data)
{
    (void)data;
    const char *path = gwl_req_path(req);
    const char *query = gwl_req_query(req);
    char body[64];
    if (strcmp(path, "/stall") == 0) {
        long ms = qparam(query, "ms", 5000);
        usleep((useconds_t)(ms * 1000));          /* the point: the loop stops */
        snprintf(body, sizeof(body), "stalled %ld ms\n", ms);
        answer(req, body);
    } else if (strcmp(path, "/hog") == 0) {
        long mb = qparam(query, "mb", 64);
        char *p = nhoard < 256 ? malloc((size_t)mb << 20) : NULL;   /* a leak, on purpose */
        if (p) {
            /* Write every page through a volatile pointer: the compiler may
             * not drop stores it cannot see the end of. */
            volatile char *v = p;
            for (size_t i = 0; i < ((size_t)mb << 20); i += 4096) v[i] = 1;
            hoard[nhoard++] = p;
        }
        snprintf(body, sizeof(body), "holding %ld MB more\n", p ? mb : 0);
        answer(req, body);
    } else if (strcmp(path, "/badheader") == 0 || strcmp(path, "/badlength") == 0) {
        if (path[4] == 'h') gwl_resp_header(req, "X-Bad", "a\001b");
        else gwl_resp_header(req, "Content-Length", "12x");
        gwl_respond(req, 200, "text/plain", "never seen\n", 11);
    } else {
        answer(req, "ok\n");
    }
}

/* In the worker, after fork (with --preload the entry point ran in the master). */
static int remember_pid(void *data)
{
    (void)data;
    snprintf(pid_buf, sizeof(pid_buf), "%ld", (long)getpid());
    return 0;
}

int gateway_app(gwl_app_t *app)
{
    gwl_on_startup(app, remember_pid, NULL);
    return gwl_on_request(app, misbehave, NULL);
}
