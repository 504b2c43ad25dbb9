/*
 * hello.c - the smallest gateway app: every request gets 200, Content-Type
 * text/plain, body "Hello, World!" (13 bytes) through the one-call
 * gwl_respond() fast path, plus an X-Worker-Pid header. The benchmark app.
 *
 *   make && build/gateway -w 2 -b 127.0.0.1:8000 build/examples/hello.so
 *   curl -i http://127.0.0.1:8000/
 *
 * Runs in a worker process, on its loop thread.
 */
#include "gwl.h"

#include <stdio.h>
#include <unistd.h>

static char pid_str[24];   /* formatted once: the handler is the hot path */

static void hello_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    if (pid_str[0] == '\0') snprintf(pid_str, sizeof(pid_str), "%ld", (long)getpid());
    gwl_resp_header(req, "X-Worker-Pid", pid_str);
    gwl_respond(req, 200, "text/plain", "Hello, World!", 13);
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, hello_on_request, NULL);
}
