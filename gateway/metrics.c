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

#define MX_MAX_CLIENTS    64
#define MX_HEAD_MAX       4096
#define MX_CLIENT_TIMEOUT 5.0
#define MX_ACCEPT_BATCH   16
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

typedef struct {
    char  *p;
    size_t len, cap;
    int    failed;
} mx_buf_t;

static void put(mx_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(mx_buf_t *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = 1; return; }
        if ((size_t)n < room) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap : 8192;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *p = cap <= MX_REPLY_MAX ? realloc(b->p, cap) : NULL;
        if (!p) { b->failed = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

static void family(mx_buf_t *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *mx_state_name(gw_worker_state_t s)
{
    switch (s) {
    case GW_WORKER_SPAWNING: return "starting";
    case GW_WORKER_READY:    return "ready";
    case GW_WORKER_DRAINING: return "draining";
    case GW_WORKER_EXITING:  return "stopping";
    case GW_WORKER_BACKOFF:  return "backoff";
    default:                 return "empty";
    }
}

static int has_process(const gw_worker_t *w) { return w->pid > 0; }

size_t gw_metrics_render(char **out)
{
    mx_buf_t b = { 0 };
    static const char *classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

    family(&b, "gateway_up", "gauge", "1 while the gateway master is running.");
    put(&b, "gateway_up 1\n");
    family(&b, "gateway_info", "gauge", "Build information (always 1).");
    put(&b, "gateway_info{version=\"%s\"} 1\n", GW_VERSION_STRING);

    family(&b, "gateway_requests_total", "counter",
           "Finished requests by response status class (front errors included).");
    for (int i = 0; i < 5; i++)
        put(&b, "gateway_requests_total{class=\"%s\"} %llu\n", classes[i],
            (unsigned long long)mx.by_class[i]);
    if (mx.other)
        put(&b, "gateway_requests_total{class=\"other\"} %llu\n", (unsigned long long)mx.other);

    family(&b, "gateway_request_duration_seconds", "histogram",
           "Time from the parsed request head to the finished response.");
    uint64_t cum = 0;
    for (size_t i = 0; i < MX_NB; i++) {
        cum += mx.buckets[i];
        put(&b, "gateway_request_duration_seconds_bucket{le=\"%g\"} %llu\n", mx_bounds[i],
            (unsigned long long)cum);
    }
    put(&b, "gateway_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
        (unsigned long long)mx.count);
    put(&b, "gateway_request_duration_seconds_sum %.9g\n", mx.sum);
    put(&b, "gateway_request_duration_seconds_count %llu\n", (unsigned long long)mx.count);

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
    put(&b, "gateway_inflight %llu\n", (unsigned long long)inflight);
    family(&b, "gateway_queue_depth", "gauge", "Requests waiting in the master for a worker.");
    put(&b, "gateway_queue_depth %u\n", queued);
    family(&b, "gateway_timeouts_total", "counter",
           "Requests answered 504 because the application exceeded --timeout.");
    put(&b, "gateway_timeouts_total %llu\n", (unsigned long long)gw.timeouts);
    family(&b, "gateway_rejected_total", "counter",
           "Requests rejected with 503 because the queue was full.");
    put(&b, "gateway_rejected_total %llu\n", (unsigned long long)gw.rejected_503);
    family(&b, "gateway_dropped_frames_total", "counter",
           "Worker frames for unknown or cancelled streams (current worker processes).");
    put(&b, "gateway_dropped_frames_total %llu\n", (unsigned long long)dropped);

    family(&b, "gateway_workers", "gauge", "Worker slots by state.");
    for (int s = GW_WORKER_BACKOFF; s <= GW_WORKER_EXITING; s++)
        put(&b, "gateway_workers{state=\"%s\"} %u\n", mx_state_name((gw_worker_state_t)s),
            by_state[s]);

    family(&b, "gateway_worker_served_total", "counter",
           "Requests completed by the worker process.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            put(&b, "gateway_worker_served_total{slot=\"%d\",pid=\"%d\"} %llu\n", w->slot,
                (int)w->pid, (unsigned long long)w->served);
    }
    family(&b, "gateway_worker_inflight", "gauge", "Requests in flight on the worker process.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            put(&b, "gateway_worker_inflight{slot=\"%d\",pid=\"%d\"} %u\n", w->slot,
                (int)w->pid, w->inflight);
    }
    family(&b, "gateway_worker_rss_bytes", "gauge",
           "Resident memory of the worker process (last heartbeat; 0 if unknown).");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w))
            put(&b, "gateway_worker_rss_bytes{slot=\"%d\",pid=\"%d\"} %llu\n", w->slot,
                (int)w->pid, (unsigned long long)w->hb_rss);
    }
    family(&b, "gateway_worker_restarts_total", "counter", "Respawns of the worker slot.");
    for (unsigned i = 0; gw.workers && i < gw.nworkers; i++) {
        const gw_worker_t *w = &gw.workers[i];
        if (has_process(w) || w->state == GW_WORKER_BACKOFF || w->restarts)
            put(&b, "gateway_worker_restarts_total{slot=\"%d\"} %u\n", w->slot, w->restarts);
    }

    if (b.failed) {
        free(b.p);
        *out = NULL;
        return 0;
    }
    *out = b.p;
    return b.len;
}

/* ---- the HTTP endpoint ---- */

typedef struct mx_client_s mx_client_t;
struct mx_client_s {
    ev_io        io;               /* first: read, then write */
    ev_timer     timer;            /* whole-exchange deadline */
    int          fd;
    size_t       head_len;
    char         head[MX_HEAD_MAX + 1];
    char        *reply;
    size_t       reply_len, sent;
    mx_client_t *prev, *next;
};

static struct {
    int             fd;
    gw_listener_t   lst;           /* the bound socket (listener.c owns bind/close) */
    ev_io           io;
    ev_timer        pause;         /* accept paused after EMFILE */
    struct ev_loop *loop;
    mx_client_t    *clients;
    unsigned        nclients;
} srv = { .fd = -1 };

static void client_close(mx_client_t *c)
{
    ev_io_stop(srv.loop, &c->io);
    ev_timer_stop(srv.loop, &c->timer);
    close(c->fd);
    if (c->prev) c->prev->next = c->next; else srv.clients = c->next;
    if (c->next) c->next->prev = c->prev;
    srv.nclients--;
    free(c->reply);
    free(c);
}

static void client_on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    mx_client_t *c = (mx_client_t *)io;
    while (c->sent < c->reply_len) {
        ssize_t n = send(c->fd, c->reply + c->sent, c->reply_len - c->sent, MSG_NOSIGNAL);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        break;
    }
    client_close(c);
}

/* Build the whole response (head + body) into c->reply and start writing. */
static void client_respond(mx_client_t *c, int status, const char *reason, const char *ctype,
                           const char *body, size_t body_len, int head_only)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, reason, ctype, body_len);
    size_t blen = head_only ? 0 : body_len;
    c->reply = malloc((size_t)n + blen);
    if (!c->reply) { client_close(c); return; }
    memcpy(c->reply, hdr, (size_t)n);
    if (blen) memcpy(c->reply + n, body, blen);
    c->reply_len = (size_t)n + blen;
    ev_io_stop(srv.loop, &c->io);
    ev_io_init(&c->io, client_on_writable, c->fd, EV_WRITE);
    ev_io_start(srv.loop, &c->io);
    client_on_writable(srv.loop, &c->io, EV_WRITE);
}

static void client_text(mx_client_t *c, int status, const char *reason, const char *msg,
                        int head_only)
{
    client_respond(c, status, reason, "text/plain; charset=utf-8", msg, strlen(msg), head_only);
}

/* The head is complete in c->head: answer it. */
static void client_handle(mx_client_t *c)
{
    char *eol = strpbrk(c->head, "\r\n");
    if (eol) *eol = '\0';
    char *sp1 = strchr(c->head, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        client_text(c, 400, "Bad Request", "bad request\n", 0);
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    const char *method = c->head, *target = sp1 + 1;
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

static void client_on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    mx_client_t *c = (mx_client_t *)io;
    for (;;) {
        ssize_t n = recv(c->fd, c->head + c->head_len, MX_HEAD_MAX - c->head_len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) { client_close(c); return; }
        size_t from = c->head_len > 3 ? c->head_len - 3 : 0;
        c->head_len += (size_t)n;
        c->head[c->head_len] = '\0';
        if (memmem(c->head + from, c->head_len - from, "\r\n\r\n", 4) ||
            memmem(c->head + from, c->head_len - from, "\n\n", 2)) {
            if (memchr(c->head, '\0', c->head_len)) {
                client_text(c, 400, "Bad Request", "bad request\n", 0);
                return;
            }
            client_handle(c);
            return;
        }
        if (c->head_len == MX_HEAD_MAX) {
            client_text(c, 431, "Request Header Fields Too Large", "request head too large\n", 0);
            return;
        }
    }
}

static void client_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    mx_client_t *c = (mx_client_t *)((char *)t - offsetof(mx_client_t, timer));
    client_close(c);
}

static void on_pause_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    if (srv.fd >= 0) ev_io_start(loop, &srv.io);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    for (int i = 0; i < MX_ACCEPT_BATCH; i++) {
        int fd = accept4(srv.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                gw_warn("metrics: accept: %s; pausing 1s", strerror(errno));
                ev_io_stop(loop, &srv.io);
                ev_timer_set(&srv.pause, 1.0, 0.);
                ev_timer_start(loop, &srv.pause);
            }
            return;
        }
        if (srv.nclients >= MX_MAX_CLIENTS) {
            const char *msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n";
            ssize_t r = send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)r;
            close(fd);
            continue;
        }
        mx_client_t *c = calloc(1, sizeof(*c));
        if (!c) { close(fd); continue; }
        c->fd = fd;
        ev_io_init(&c->io, client_on_readable, fd, EV_READ);
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, client_on_timeout, MX_CLIENT_TIMEOUT, 0.);
        ev_timer_start(loop, &c->timer);
        c->next = srv.clients;
        if (srv.clients) srv.clients->prev = c;
        srv.clients = c;
        srv.nclients++;
    }
}

/* ---- binding: listener.c's, so addresses mean the same everywhere ---- */

int gw_metrics_start(void)
{
    const char *spec = gw.cfg.metrics_bind;
    if (!spec || !*spec) return 0;
    if (gw_listener_bind(&srv.lst, spec, spec, 64, 0660, "metrics") < 0) return -1;
    srv.fd = srv.lst.fd;
    /* main creates the default loop after this; ev_default_loop returns the
     * same loop to both. */
    srv.loop = gw.loop ? gw.loop : ev_default_loop(EVFLAG_AUTO);
    if (!srv.loop) {
        fprintf(stderr, "gateway: cannot bind metrics %s: cannot create the event loop\n", spec);
        gw_metrics_stop();
        return -1;
    }
    ev_io_init(&srv.io, on_accept, srv.fd, EV_READ);
    ev_io_start(srv.loop, &srv.io);
    ev_init(&srv.pause, on_pause_end);
    return 0;
}

void gw_metrics_stop(void)
{
    while (srv.clients) client_close(srv.clients);
    if (srv.fd >= 0) {
        if (srv.loop) {
            ev_io_stop(srv.loop, &srv.io);
            ev_timer_stop(srv.loop, &srv.pause);
        }
        gw_listener_close(&srv.lst);   /* closes and removes a unix socket file */
        srv.fd = -1;
    }
}
