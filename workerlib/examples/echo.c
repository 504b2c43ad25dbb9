/*
 * echo.c - echoes the request back, to test the body path end to end.
 *
 *   curl -i http://127.0.0.1:8000/some/path?x=1          (no body)
 *   curl -i --data-binary @file http://127.0.0.1:8000/   (body)
 *
 * Response headers: X-Echo-Method, X-Echo-Target, X-Echo-Version ("1.0" or
 * "1.1"), X-Echo-Header-Count, X-Worker-Pid.
 *  - No body (no Content-Length, or 0): 200 text/plain whose body is the
 *    request head as received, one item per line: "METHOD TARGET HTTP/1.x\n"
 *    then "name: value\n" per header in wire order.
 *  - With a body: 200 application/octet-stream whose body is exactly the
 *    request body, streamed back piece by piece as it arrives
 *    (gwl_resp_start / gwl_resp_write / gwl_resp_finish), with the request's
 *    Content-Length when it had one, chunked otherwise. Memory stays bounded
 *    for any upload size: while the response backs up, workerlib holds back
 *    the request-body credit, so the client is slowed down instead.
 *
 * Runs in a worker process, on its loop thread.
 */
#include "gwl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char pid_str[24];

static void echo_headers(gwl_req_t *req)
{
    char count[24];
    snprintf(count, sizeof(count), "%zu", gwl_req_header_count(req));
    gwl_resp_header(req, "X-Echo-Method", gwl_req_method(req));
    gwl_resp_header(req, "X-Echo-Target", gwl_req_target(req));
    gwl_resp_header(req, "X-Echo-Version", gwl_req_http_minor(req) ? "1.1" : "1.0");
    gwl_resp_header(req, "X-Echo-Header-Count", count);
    gwl_resp_header(req, "X-Worker-Pid", pid_str);
}

static void echo_on_body(gwl_req_t *req, const char *data, size_t len, int last, void *arg)
{
    (void)arg;
    if (len > 0) gwl_resp_write(req, data, len);
    if (last) gwl_resp_finish(req);
}

/* Client gone: the body callback will not be called again, so finish here
 * (a no-op on the wire) to let workerlib free the request. */
static void echo_on_cancel(gwl_req_t *req, void *arg)
{
    (void)arg;
    gwl_resp_finish(req);
}

/* The request head, rebuilt from what the worker received. */
static void echo_head(gwl_req_t *req)
{
    size_t n = gwl_req_header_count(req), size = 64;
    const char *name, *value;
    size += strlen(gwl_req_method(req)) + strlen(gwl_req_target(req));
    for (size_t i = 0; i < n; i++) {
        gwl_req_header_at(req, i, &name, &value);
        size += strlen(name) + strlen(value) + 3;
    }
    char *buf = malloc(size);
    if (buf == NULL) {
        gwl_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    size_t len = (size_t)snprintf(buf, size, "%s %s HTTP/1.%d\n", gwl_req_method(req),
                                  gwl_req_target(req), gwl_req_http_minor(req));
    for (size_t i = 0; i < n; i++) {
        gwl_req_header_at(req, i, &name, &value);
        len += (size_t)snprintf(buf + len, size - len, "%s: %s\n", name, value);
    }
    gwl_respond(req, 200, "text/plain", buf, len);
    free(buf);
}

static void echo_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    if (pid_str[0] == '\0') snprintf(pid_str, sizeof(pid_str), "%ld", (long)getpid());
    int64_t cl = gwl_req_content_length(req);
    echo_headers(req);
    if (cl == 0) {
        echo_head(req);
        return;
    }
    gwl_resp_start(req, 200);
    gwl_resp_header(req, "Content-Type", "application/octet-stream");
    if (cl > 0) {
        char len[24];
        snprintf(len, sizeof(len), "%" PRId64, cl);
        gwl_resp_header(req, "Content-Length", len);
    }
    gwl_req_on_cancel(req, echo_on_cancel, NULL);
    gwl_req_read_body(req, echo_on_body, NULL);
}

int gateway_app(gwl_app_t *app)
{
    return gwl_on_request(app, echo_on_request, NULL);
}
