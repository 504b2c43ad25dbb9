/*
 * metrics.c - Prometheus metrics, aggregated and served by the master.
 *
 * gw_metrics_observe() counts every finished request (by status class) and
 * its latency in a histogram with Prometheus-style cumulative buckets.
 * gw_metrics_render() writes text exposition format 0.0.4 from those and
 * from the master's own state (gw: workers[], counters, the front's queue).
 *
 * --metrics-bind ADDR (HOST:PORT, [IPv6]:PORT or unix:/path) serves
 * GET /metrics with a minimal HTTP/1.1 responder on the master's libev loop:
 * one request per connection, bounded head (MX_HEAD_MAX), MX_CLIENT_TIMEOUT
 * seconds for the whole exchange, at most MX_MAX_CLIENTS at once, every
 * socket non-blocking and close-on-exec. Anything but GET/HEAD /metrics
 * gets 404 (405 for other methods on /metrics); then the connection closes.
 * The same text is available as `gatewayctl metrics` (ctl.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "oneshot.h"

#define MX_MAX_CLIENTS    64
#define MX_HEAD_MAX       4096
#define MX_CLIENT_TIMEOUT 5.0
#define MX_REPLY_MAX      (8u << 20)

/* ---- collection ---- */

static const double mx_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25, 0.5, 1, 2.5, 5, 10 };
#define MX_NB (sizeof(mx_bounds) / sizeof(mx_bounds[0]))

static struct {
    uint64_t by_class[5];          /* 1xx .. 5xx */
    uint64_t other;                /* a status outside 100..599 */
    uint64_t buckets[MX_NB];       /* non-cumulative; +Inf is count */
    uint64_t count;
    double   sum;
} mx;

void gw_metrics_observe(int status, double seconds)
{
    if (status >= 100 && status <= 599) mx.by_class[status / 100 - 1]++;
    else mx.other++;
    if (!(seconds >= 0)) seconds = 0;          /* also NaN */
    for (size_t i = 0; i < MX_NB; i++)
        if (seconds <= mx_bounds[i]) { mx.buckets[i]++; break; }
    mx.count++;
    mx.sum += seconds;
}

/* ---- rendering ---- */

typedef gw_text_t mx_buf_t;   /* oneshot.c's text buffer, capped at MX_REPLY_MAX */

static void family(mx_buf_t *b, const char *name, const char *type, const char *help)
{
    gw_text_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int has_process(const gw_worker_t *w) { return w->pid > 0; }

size_t gw_metrics_render(char **out)
{
    mx_buf_t b = { .max = MX_REPLY_MAX };
    static const char *classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    family(&b, "gateway_up", "gauge", "1 while the gateway master is running.");
    gw_text_printf(&b, "gateway_up 1\n");
    family(&b, "gateway_info", "gauge", "Build information (always 1).");
    gw_text_printf(&b, "gateway_info{version=\"%s\"} 1\n", GW_VERSION_STRING);

    family(&b, "gateway_requests_total", "counter",
           "Finished requests by response status class (front errors included).");
    for (int i = 0; i < 5; i++)
        gw_text_printf(&b, "gateway_requests_total{class=\"%s\"} %llu\n", classes[i],
            (unsigned long long)mx.by_class[i]);
    if (mx.other)
        gw_text_printf(&b, "gateway_requests_total{class=\"other\"} %llu\n", (unsigned long long)mx.other);

    family(&b, "gateway_request_duration_seconds", "histogram",
           "Time from the parsed request head to the finished response.");
    uint64_t cum = 0;
    for (size_t i = 0; i < MX_NB; i++) {
        cum += mx.buckets[i];
        gw_text_printf(&b, "gateway_request_duration_seconds_bucket{le=\"%g\"} %llu\n", mx_bounds[i],
            (unsigned long long)cum);
    }
    gw_text_printf(&b, "gateway_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)mx.count);
    gw_text_printf(&b, "gateway_request_duration_seconds_sum %.9g\n", mx.sum);
    gw_text_printf(&b, "gateway_request_duration_seconds_count %llu\n", (unsigned long long)mx.count);

    uint64_t inflight = 0, dropped = 0;
    unsigned by_state[GW_WORKER_EXITING + 1] = { 0 };
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        inflight += w->inflight;
        dropped += w->dropped;
        if ((unsigned)w->state <= GW_WORKER_EXITING) by_state[w->state]++;
    }
    unsigned queued = gw.workers ? gw_front_queued() : 0;

    family(&b, "gateway_inflight", "gauge", "Requests dispatched to workers and not finished.");
    gw_text_printf(&b, "gateway_inflight %llu\n", (unsigned long long)inflight);
    family(&b, "gateway_queue_depth", "gauge", "Requests waiting in the master for a worker.");
    gw_text_printf(&b, "gateway_queue_depth %u\n", queued);
    family(&b, "gateway_timeouts_total", "counter",
           "Requests answered 504 because the application exceeded --timeout.");
    gw_text_printf(&b, "gateway_timeouts_total %llu\n", (unsigned long long)gw.timeouts);
    family(&b, "gateway_rejected_total", "counter",
           "Requests rejected with 503 because the queue was full.");
    gw_text_printf(&b, "gateway_rejected_total %llu\n", (unsigned long long)gw.rejected_503);
    family(&b, "gateway_dropped_frames_total", "counter",
           "Worker frames for unknown or cancelled streams (current worker processes).");
    gw_text_printf(&b, "gateway_dropped_frames_total %llu\n", (unsigned long long)dropped);

    family(&b, "gateway_workers", "gauge", "Worker slots by state.");
    for (int s = GW_WORKER_BACKOFF; s <= GW_WORKER_EXITING; s++)
        gw_text_printf(&b, "gateway_workers{state=\"%s\"} %u\n", gw_worker_state_name((gw_worker_state_t)s),
            by_state[s]);

    family(&b, "gateway_worker_served_total", "counter",
           "Requests completed by the worker process.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            gw_text_printf(&b, "gateway_worker_served_total{slot=\"%d\",pid=\"%d\"} %llu\n", w->slot,
                (int)w->pid, (unsigned long long)w->served);
    }
    family(&b, "gateway_worker_inflight", "gauge", "Requests in flight on the worker process.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            gw_text_printf(&b, "gateway_worker_inflight{slot=\"%d\",pid=\"%d\"} %u\n", w->slot,
                (int)w->pid, w->inflight);
    }
    family(&b, "gateway_worker_rss_bytes", "gauge",
           "Resident memory of the worker process (last heartbeat; 0 if unknown).");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            gw_text_printf(&b, "gateway_worker_rss_bytes{slot=\"%d\",pid=\"%d\"} %llu\n", w->slot,
                (int)w->pid, (unsigned long long)w->hb_rss);
    }
    family(&b, "gateway_worker_restarts_total", "counter", "Respawns of the worker slot.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w) || w->state == GW_WORKER_BACKOFF || w->restarts)
            gw_text_printf(&b, "gateway_worker_restarts_total{slot=\"%d\"} %u\n", w->slot, w->restarts);
    }

    if (b.overflow) {
        free(b.p);
        *out = NULL;
        return 0;
    }
    *out = b.p;
    return b.len;
}

/* ---- the HTTP endpoint ---- */

/* ---- the HTTP endpoint: one request per connection (oneshot.c) ---- */

static int mx_on_data(gw_oneshot_client_t *c, char *head, size_t len, size_t from, int eof,
                      int full);

static gw_oneshot_t srv = {
    .what = "metrics", .max_request = MX_HEAD_MAX, .max_clients = MX_MAX_CLIENTS,
    .timeout = MX_CLIENT_TIMEOUT, .on_data = mx_on_data, .fd = -1,
    .busy_reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                  "Connection: close\r\n\r\n",
};

/* Build the whole response (head + body) and hand it to the server. */
static void client_respond(gw_oneshot_client_t *c, int status, const char *reason,
                           const char *ctype, const char *body, size_t body_len, int head_only)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, reason, ctype, body_len);
    size_t blen = head_only ? 0 : body_len;
    char *reply = malloc((size_t)n + blen);
    if (reply) {
        memcpy(reply, hdr, (size_t)n);
        if (blen) memcpy(reply + n, body, blen);
    }
    gw_oneshot_reply(c, reply, (size_t)n + blen);   /* NULL: just closes */
}

static void client_text(gw_oneshot_client_t *c, int status, const char *reason, const char *msg,
                        int head_only)
{
    client_respond(c, status, reason, "text/plain; charset=utf-8", msg, strlen(msg), head_only);
}

/* The head is complete: answer it. */
static void client_handle(gw_oneshot_client_t *c, char *head)
{
    char *eol = strpbrk(head, "\r\n");
    if (eol) *eol = '\0';
    char *sp1 = strchr(head, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        client_text(c, 400, "Bad Request", "bad request\n", 0);
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    const char *method = head, *target = sp1 + 1;
    size_t plen = strcspn(target, "?");
    int is_metrics = plen == 8 && memcmp(target, "/metrics", 8) == 0;
    int head_only = strcmp(method, "HEAD") == 0;
    if (!is_metrics) {
        client_text(c, 404, "Not Found", "not found\n", head_only);
        return;
    }
    if (strcmp(method, "GET") != 0 && !head_only) {
        client_text(c, 405, "Method Not Allowed", "method not allowed\n", 0);
        return;
    }
    char *text = NULL;
    size_t len = gw_metrics_render(&text);
    if (!len) {
        free(text);
        client_text(c, 500, "Internal Server Error", "cannot render metrics\n", head_only);
        return;
    }
    client_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len,
                   head_only);
    free(text);
}

static int mx_on_data(gw_oneshot_client_t *c, char *head, size_t len, size_t from, int eof,
                      int full)
{
    if (eof) return -1;                       /* closed before a whole head */
    from = from > 3 ? from - 3 : 0;           /* a terminator may straddle reads */
    if (memmem(head + from, len - from, "\r\n\r\n", 4) ||
        memmem(head + from, len - from, "\n\n", 2)) {
        if (memchr(head, '\0', len)) client_text(c, 400, "Bad Request", "bad request\n", 0);
        else client_handle(c, head);
        return 1;
    }
    if (full) {
        client_text(c, 431, "Request Header Fields Too Large", "request head too large\n", 0);
        return 1;
    }
    return 0;
}

int gw_metrics_start(void)
{
    const char *spec = gw.cfg.metrics_bind;
    if (!spec || !*spec) return 0;
    return gw_oneshot_start(&srv, spec, spec, 0660, "metrics");
}

void gw_metrics_stop(void)
{
    gw_oneshot_stop(&srv);
}
