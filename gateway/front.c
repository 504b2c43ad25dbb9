/*
 * front.c - the HTTP/1.x front (master process, default loop): accept,
 * read and parse requests strictly, dispatch them to workers as streams,
 * forward request bodies under flow control, frame responses for the client,
 * enforce timeouts, and answer errors itself.
 *
 * One request per connection is in progress at a time; pipelined requests
 * wait, unparsed, in the connection's input buffer, so responses leave in
 * request order by construction (nginx does the same).
 *
 * Connection states:
 *
 *   accept -> HEAD --head parsed--> REQUEST --response done, keep-alive--> IDLE
 *               ^                      |                                   |
 *               +------ first byte ----+--------------- first byte --------+
 *   error, close, Connection: close, stop  ->  CLOSING (flush) -> LINGER -> freed
 *
 * Output to clients and to workers is queued and written once per loop
 * iteration (ev_prepare in main.c), which batches many frames per syscall.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"

#define IN_INIT        (16 * 1024)
#define OUT_LOW_WATER  (64 * 1024)      /* return response credit below this */
#define LINGER_SECONDS 2.0
/* On graceful stop an idle keep-alive connection gets this long (at most
 * --keep-alive) to send its next request, which is then served with
 * Connection: close; closing it at once races with a client that is
 * sending, and the request would be lost. */
#define STOP_IDLE_GRACE 1.0
#define ACCEPT_BATCH   64
/* A body the app left unread is read and dropped so the connection can
 * carry the next request (as nginx does), up to this much; beyond it the
 * response says Connection: close instead. */
#define DISCARD_MAX    (1024 * 1024)

typedef enum {
    CONN_IDLE = 0,   /* keep-alive: waiting for the next request */
    CONN_HEAD,       /* reading a request head */
    CONN_REQUEST,    /* a request is queued, at a worker, or responding */
    CONN_CLOSING,    /* last bytes being written, then LINGER */
    CONN_LINGER      /* write side shut; discarding input until EOF/timer */
} conn_state_t;

struct gw_conn_s {
    ev_io          rio, wio;
    ev_timer       timer;
    int            fd;
    conn_state_t   state;
    gw_listener_t *lst;
    uint64_t       id;
    char           peer[64];
    char          *in;              /* unconsumed input is in[in_pos..in_len) */
    size_t         in_pos, in_len, in_cap;
    char          *out;             /* unsent output is out[out_pos..out_len) */
    size_t         out_pos, out_len, out_cap;
    gw_req_t      *req;             /* the request in progress, if any */
    uint64_t       nreq;            /* requests started on this connection */
    size_t         head_again_len;  /* buffered head bytes at the last AGAIN */
    uint64_t       discard_left;    /* unread body still to drop (length) */
    uint64_t       discarded;       /* dropped so far (chunked cap) */
    gw_http1_chunked_t discard_chunked;
    unsigned       discarding:1, discard_is_chunked:1;
    double         timer_for;       /* current timeout length (0 = none) */
    ev_tstamp      deadline;        /* when it expires (0 = none) */
    ev_tstamp      armed_for;       /* when the libev timer will fire */
    int            timer_state;     /* state the timer was armed for */
    unsigned       closed:1, flush_queued:1, reading:1, writing:1;
    gw_conn_t     *flush_next;
    gw_conn_t     *prev, *next;     /* all live connections */
    gw_conn_t     *free_next;       /* closed, freed in the prepare hook */
};

/* What the access log needs, captured while the bytes exist (only when
 * the access log is on). Strings live in buf at the recorded offsets. */
typedef struct {
    double   start;
    uint64_t req_no;
    long     worker_pid;
    int      worker_slot, status, minor;
    uint64_t bytes;
    size_t   method_off, method_len, target_off, target_len;
    size_t   req_off[GW_ACCESS_MAX_HEADERS], req_len[GW_ACCESS_MAX_HEADERS];
    size_t   resp_off[GW_ACCESS_MAX_HEADERS], resp_len[GW_ACCESS_MAX_HEADERS];
    uint8_t  req_have[GW_ACCESS_MAX_HEADERS], resp_have[GW_ACCESS_MAX_HEADERS];
    char    *buf;
    size_t   used, cap;
} alog_t;

struct gw_req_s {
    gw_conn_t         *conn;        /* NULL once the client is gone */
    alog_t            *alog;        /* access-log capture, NULL when off */
    gw_worker_t       *worker;      /* NULL while queued */
    uint32_t           stream;
    gw_req_t          *qnext, *qprev;
    gw_http1_body_t    body_kind;
    uint64_t           body_left;   /* Content-Length bytes not yet forwarded */
    gw_http1_chunked_t chunked;
    ev_tstamp          started;     /* head parsed (for metrics) */
    ev_tstamp          dispatched;  /* handed to its worker (service time) */
    int                status;      /* response status from the worker */
    uint32_t           req_window;  /* body bytes we may still send */
    uint64_t           resp_unacked;/* response data taken, not yet credited */
    uint64_t           resp_left;   /* declared response length left, if known */
    unsigned           queued:1, head_only:1, keepalive:1, body_done:1,
                       resp_started:1, resp_done:1, resp_chunked:1,
                       resp_has_length:1, resp_no_body:1, expect_continue:1,
                       http10:1;
};

static gw_conn_t *conns;            /* all live connections */
static gw_conn_t *flush_head;
static gw_conn_t *free_head;
static gw_req_t  *queue_head, *queue_tail;
static unsigned   queue_len;
static unsigned   nconns;
static uint64_t   next_conn_id = 1;

/* Parser output storage: the front is single-threaded. */
static gw_http1_header_t parse_hdrs[1024];
static gwp_header_t      wire_hdrs[1024];

static void conn_process(gw_conn_t *c);
static void conn_close(gw_conn_t *c);
static void conn_schedule_flush(gw_conn_t *c);
static void conn_update_io(gw_conn_t *c);
static void req_send(gw_req_t *r, gw_worker_t *w);
static void req_forward_body(gw_req_t *r);
static void req_detach_worker(gw_req_t *r, int cancel, const char *reason);
static void req_free(gw_req_t *r);
static void queue_remove(gw_req_t *r);
static gw_req_t *req_alloc(void);
static void alog_write(gw_req_t *r, gw_conn_t *c, int status);

/* ---- small buffer helpers ---- */

static int out_reserve(gw_conn_t *c, size_t n)
{
    if (c->out_pos == c->out_len) c->out_pos = c->out_len = 0;
    if (c->out_cap - c->out_len >= n) return 0;
    if (c->out_pos > 0) {
        memmove(c->out, c->out + c->out_pos, c->out_len - c->out_pos);
        c->out_len -= c->out_pos;
        c->out_pos = 0;
        if (c->out_cap - c->out_len >= n) return 0;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap - c->out_len < n) cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) return -1;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

static inline void out_put(gw_conn_t *c, const void *p, size_t n)
{
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

#define OUT_LIT(c, s) out_put((c), (s), sizeof(s) - 1)

static size_t out_pending(const gw_conn_t *c) { return c->out_len - c->out_pos; }

/* The Date header, formatted at most once a second. */
static const char *http_date(size_t *len)
{
    static char buf[40];
    static time_t cached = -1;
    static size_t blen;
    time_t now = (time_t)ev_now(gw.loop);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        blen = strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    *len = blen;
    return buf;
}

static size_t fmt_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    return n;
}

/* ---- timers ---- */

/*
 * Every connection changes its timeout several times per request (idle,
 * head, waiting, idle again). Moving a libev timer each time costs heap
 * work; instead the connection keeps a deadline, the timer is re-armed only
 * when the deadline moves earlier than where it is set to fire, and an
 * early firing re-arms for the remainder (libev's "be smart about
 * timeouts"). Progress just pushes the deadline.
 */
static void conn_set_timer(gw_conn_t *c, double seconds)
{
    c->timer_for = seconds > 0 ? seconds : 0;
    if (seconds <= 0) { c->deadline = 0; return; }   /* a pending firing finds nothing */
    c->deadline = ev_now(gw.loop) + seconds;
    if (!ev_is_active(&c->timer) || c->armed_for > c->deadline) {
        ev_timer_stop(gw.loop, &c->timer);
        ev_timer_set(&c->timer, seconds, 0.);
        ev_timer_start(gw.loop, &c->timer);
        c->armed_for = c->deadline;
    }
}

/* Progress on the connection restarts the current timeout. */
static inline void conn_touch(gw_conn_t *c)
{
    if (c->timer_for > 0) c->deadline = ev_now(gw.loop) + c->timer_for;
}

/* ---- error responses from the front itself ---- */

static void write_simple(gw_conn_t *c, int status, const char *why,
                         const char *extra, int keepalive)
{
    char body[256];
    const char *reason = gw_http1_reason(status);
    int blen = snprintf(body, sizeof(body), "%d %s%s%s\n", status, reason,
                        why ? ": " : "", why ? why : "");
    if (blen < 0) blen = 0;
    if ((size_t)blen >= sizeof(body)) blen = sizeof(body) - 1;
    size_t dlen;
    const char *date = http_date(&dlen);
    char head[512];
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 %d %s\r\nServer: " GW_SERVER_HEADER "\r\nDate: %.*s\r\n"
                        "Content-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n",
                        status, reason, (int)dlen, date, blen, extra ? extra : "",
                        keepalive ? "" : "Connection: close\r\n");
    if (out_reserve(c, (size_t)hlen + (size_t)blen) < 0) return;
    out_put(c, head, (size_t)hlen);
    out_put(c, body, (size_t)blen);
    if (status >= 500) gw.responses_5xx++;
    else if (status >= 400) gw.responses_4xx++;
}

/* Answer with an error and close: the request's framing is not trusted. */
/* The connection gives up its request: out of the wait queue, or out of its
 * worker's stream table (with CANCEL and this reason, unless NULL: the
 * worker dropped it itself), then freed. */
static void conn_drop_req(gw_conn_t *c, const char *cancel_reason)
{
    gw_req_t *r = c->req;
    if (!r) return;
    c->req = NULL;
    r->conn = NULL;
    if (r->queued) queue_remove(r);
    if (r->worker) req_detach_worker(r, cancel_reason != NULL, cancel_reason);
    req_free(r);
}

static void conn_fail(gw_conn_t *c, int status, const char *why, const char *extra)
{
    if (status >= 500 || gw_log_get_level() <= GW_LOG_DEBUG)
        gw_log(status >= 500 ? GW_LOG_INFO : GW_LOG_DEBUG, "#%llu %s: %d %s",
               (unsigned long long)c->id, c->peer, status, why ? why : "");
    conn_drop_req(c, "client-error");
    write_simple(c, status, why, extra, 0);
    c->state = CONN_CLOSING;
    conn_schedule_flush(c);
    conn_update_io(c);
}

/* A started response cannot complete (the worker cancelled it or died):
 * the client gets the bytes already produced, then the connection closes
 * without the end of the body, so it sees a truncated response, never a
 * complete-looking one. */
static void conn_cut(gw_conn_t *c)
{
    conn_drop_req(c, NULL);     /* the worker has already dropped it */
    c->state = CONN_CLOSING;
    conn_schedule_flush(c);
    conn_update_io(c);
}

/* ---- connection lifecycle ---- */

static void conn_free_now(gw_conn_t *c)
{
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_close(gw_conn_t *c)
{
    if (c->closed) return;
    c->closed = 1;
    ev_io_stop(gw.loop, &c->rio);
    ev_io_stop(gw.loop, &c->wio);
    ev_timer_stop(gw.loop, &c->timer);
    conn_drop_req(c, "client-gone");
    close(c->fd);
    c->fd = -1;
    if (c->prev) c->prev->next = c->next; else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    nconns--;
    /* Freed after this loop iteration: it may still be on the call stack. */
    c->free_next = free_head;
    free_head = c;
}

/* Everything written: close, or after an error, shut down and linger so
 * the client reads the answer before it sees a reset. */
static void conn_closing_done(gw_conn_t *c)
{
    if (shutdown(c->fd, SHUT_WR) < 0) { conn_close(c); return; }
    c->state = CONN_LINGER;
    c->in_pos = c->in_len = 0;
    conn_set_timer(c, LINGER_SECONDS);
    conn_update_io(c);
}

static void conn_flush(gw_conn_t *c)
{
    while (out_pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_pos, out_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_pos += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(c);   /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    gw_req_t *r = c->req;
    if (out_pending(c) == 0) {
        c->out_pos = c->out_len = 0;
        if (c->out_cap > 256 * 1024) {   /* give burst buffers back */
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
    /* Return response credit once the client has taken the bytes. */
    if (r && r->worker && r->resp_unacked > 0 && out_pending(c) < OUT_LOW_WATER) {
        uint32_t credit = r->resp_unacked > UINT32_MAX ? UINT32_MAX : (uint32_t)r->resp_unacked;
        if (gwp_encode_window(&r->worker->out, r->stream, credit) == 0) {
            r->resp_unacked -= credit;
            gw_worker_schedule_flush(r->worker);
        }
    }
    if (out_pending(c) == 0 && c->state == CONN_CLOSING) {
        conn_closing_done(c);
        return;
    }
    conn_update_io(c);
}

static void conn_schedule_flush(gw_conn_t *c)
{
    if (c->flush_queued || c->closed) return;
    c->flush_queued = 1;
    c->flush_next = flush_head;
    flush_head = c;
}

void gw_front_flush_all(void)
{
    while (flush_head) {
        gw_conn_t *c = flush_head;
        flush_head = c->flush_next;
        c->flush_queued = 0;
        if (!c->closed) conn_flush(c);
    }
    while (free_head) {
        gw_conn_t *c = free_head;
        free_head = c->free_next;
        conn_free_now(c);
    }
}

/* What a connection with a request in progress is waiting for; each phase
 * has its own timeout. */
typedef enum { PH_DISCARD = 1, PH_QUEUED, PH_SENDING, PH_BODY, PH_APP } req_phase_t;

static req_phase_t conn_phase(const gw_conn_t *c)
{
    const gw_req_t *r = c->req;
    if (c->discarding) return PH_DISCARD;
    if (r && r->queued) return PH_QUEUED;
    if (out_pending(c) > 0) return PH_SENDING;
    if (r && !r->body_done && r->req_window > 0) return PH_BODY;
    return PH_APP;   /* the app owes a response (or its next piece) */
}

/* Read when there is room and a reason to; write when output waits. Also
 * picks the timer for the state the connection is in. */
static void conn_update_io(gw_conn_t *c)
{
    if (c->closed) return;
    int want_read;
    size_t buffered = c->in_len - c->in_pos;
    size_t cap_max = gw.cfg.limits.head + 1 > IN_INIT * 4 ? gw.cfg.limits.head + 1 : IN_INIT * 4;
    switch (c->state) {
    case CONN_CLOSING: want_read = 0; break;
    case CONN_LINGER:  want_read = 1; break;
    default:           want_read = buffered < cap_max; break;
    }
    if (want_read && !c->reading) { ev_io_start(gw.loop, &c->rio); c->reading = 1; }
    if (!want_read && c->reading) { ev_io_stop(gw.loop, &c->rio); c->reading = 0; }
    int want_write = out_pending(c) > 0;
    if (want_write && !c->writing) { ev_io_start(gw.loop, &c->wio); c->writing = 1; }
    if (!want_write && c->writing) { ev_io_stop(gw.loop, &c->wio); c->writing = 0; }

    double t = 0;
    int phase = 0;
    switch (c->state) {
    case CONN_IDLE:
        t = gw.stopping == 1 && STOP_IDLE_GRACE < gw.cfg.keepalive ? STOP_IDLE_GRACE
                                                                   : gw.cfg.keepalive;
        break;
    case CONN_HEAD:    t = gw.cfg.header_timeout; break;
    case CONN_CLOSING: t = gw.cfg.send_timeout; break;
    case CONN_LINGER:  t = c->timer_for > 0 ? c->timer_for : LINGER_SECONDS; break;
    case CONN_REQUEST:
        phase = conn_phase(c);
        switch (phase) {
        case PH_DISCARD: t = gw.cfg.body_timeout; break;
        case PH_QUEUED:  t = gw.cfg.queue_timeout; break;
        case PH_SENDING: t = gw.cfg.send_timeout; break;
        case PH_BODY:    t = gw.cfg.body_timeout; break;
        default:         t = gw.cfg.timeout; break;   /* --timeout: the app's silence */
        }
        break;
    }
    /* A running timer measures silence and is pushed on progress by the
     * callers; it restarts only when the state or phase changes. */
    int ts = (int)c->state * 16 + phase;
    if (t != c->timer_for || ts != c->timer_state) {
        c->timer_state = ts;
        conn_set_timer(c, t);
    }
}

/* --timeout: the app owed a response (or its next piece) for too long. The
 * stream is cancelled at the worker (a later reply is dropped and counted)
 * and the client gets 504, or a closed connection if the response began. */
static void req_timed_out(gw_conn_t *c)
{
    gw_req_t *r = c->req;
    gw.timeouts++;
    gw_warn("#%llu %s: worker %d did not answer stream %u within %.0f s: %s",
            (unsigned long long)c->id, c->peer, r && r->worker ? r->worker->slot : -1,
            r ? r->stream : 0, gw.cfg.timeout, r && r->resp_started ? "closing" : "504");
    if (!r) { conn_close(c); return; }
    if (r->resp_started) { conn_close(c); return; }   /* conn_close cancels */
    int keep = r->body_done && r->keepalive && !gw.stopping;
    c->req = NULL;
    r->conn = NULL;
    if (r->worker) req_detach_worker(r, 1, "timeout");
    if (r->alog) alog_write(r, c, 504);
    gw_metrics_observe(504, ev_now(gw.loop) - r->started);
    req_free(r);
    write_simple(c, 504, "the application did not answer in time", NULL, keep);
    conn_schedule_flush(c);
    if (keep) { c->state = CONN_IDLE; conn_process(c); }
    else { c->state = CONN_CLOSING; conn_update_io(c); }
}

static void conn_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    gw_conn_t *c = (gw_conn_t *)((char *)t - offsetof(gw_conn_t, timer));
    if (c->deadline == 0) return;                  /* timeout was cleared */
    ev_tstamp left = c->deadline - ev_now(loop);
    if (left > 0.001) {                            /* moved later: sleep on */
        ev_timer_set(&c->timer, left, 0.);
        ev_timer_start(loop, &c->timer);
        c->armed_for = c->deadline;
        return;
    }
    c->deadline = 0;
    switch (c->state) {
    case CONN_IDLE:
    case CONN_LINGER:
        conn_close(c);
        return;
    case CONN_HEAD:
        if (c->in_len > c->in_pos) conn_fail(c, 408, "request head not received in time", NULL);
        else conn_close(c);
        return;
    case CONN_CLOSING:
        conn_close(c);
        return;
    case CONN_REQUEST:
        switch (conn_phase(c)) {
        case PH_DISCARD:
            conn_close(c);
            break;
        case PH_QUEUED:
            gw.rejected_503++;
            conn_fail(c, 503, "no worker available", "Retry-After: 1\r\n");
            break;
        case PH_SENDING:
            gw_info("#%llu %s: client accepted no data for %.0f s; closing",
                    (unsigned long long)c->id, c->peer, gw.cfg.send_timeout);
            conn_close(c);
            break;
        case PH_BODY:
            conn_fail(c, 408, "request body not received in time", NULL);
            break;
        case PH_APP:
            req_timed_out(c);
            break;
        }
        return;
    }
}

static void conn_on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_conn_t *c = (gw_conn_t *)((char *)io - offsetof(gw_conn_t, wio));
    size_t before = out_pending(c);
    conn_flush(c);
    if (!c->closed && out_pending(c) < before) conn_touch(c);   /* progress resets the send timer */
}

static void conn_on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_conn_t *c = (gw_conn_t *)((char *)io - offsetof(gw_conn_t, rio));

    if (c->state == CONN_LINGER) {
        char sink[16384];
        ssize_t n = read(c->fd, sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c);
        return;
    }
    /* Compact, then grow up to the cap. */
    if (c->in_pos > 0) {
        if (c->in_pos == c->in_len) c->in_pos = c->in_len = 0;
        else if (c->in_cap - c->in_len < 4096) {
            memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
            c->in_len -= c->in_pos;
            c->in_pos = 0;
        }
    }
    size_t cap_max = gw.cfg.limits.head + 1 > IN_INIT * 4 ? gw.cfg.limits.head + 1 : IN_INIT * 4;
    if (c->in_cap - c->in_len < 2048 && c->in_cap < cap_max) {
        size_t ncap = c->in_cap ? c->in_cap * 2 : IN_INIT;
        if (ncap > cap_max) ncap = cap_max;
        char *p = realloc(c->in, ncap);
        if (!p) { conn_close(c); return; }
        c->in = p;
        c->in_cap = ncap;
    }
    size_t room = c->in_cap - c->in_len;
    if (room == 0) { conn_update_io(c); return; }
    ssize_t n = read(c->fd, c->in + c->in_len, room);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        conn_close(c);
        return;
    }
    if (n == 0) {
        /* The client closed (or half-closed). A request in progress is
         * abandoned: its worker is told with CANCEL (conn_close). */
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == CONN_IDLE) c->state = CONN_HEAD;
    else if (c->state == CONN_REQUEST) conn_touch(c);
    conn_process(c);
}

/* ---- requests ---- */

/* Requests are recycled: one calloc per request was measurable. */
static gw_req_t *req_pool;
static unsigned  req_pool_len;
#define REQ_POOL_MAX 1024

static gw_req_t *req_alloc(void)
{
    gw_req_t *r = req_pool;
    if (!r) return calloc(1, sizeof(*r));
    req_pool = r->qnext;
    req_pool_len--;
    memset(r, 0, sizeof(*r));
    return r;
}

static void req_free(gw_req_t *r)
{
    if (r->alog) { free(r->alog->buf); free(r->alog); r->alog = NULL; }
    if (req_pool_len >= REQ_POOL_MAX) { free(r); return; }
    r->qnext = req_pool;
    req_pool = r;
    req_pool_len++;
}

/* Remove r from its worker's stream table; CANCEL tells the worker. */
static void req_detach_worker(gw_req_t *r, int cancel, const char *reason)
{
    gw_worker_t *w = r->worker;
    if (!w) return;
    gw_streams_del(&w->streams, r->stream);
    if (w->inflight > 0) w->inflight--;
    /* recent service time (dispatch to end), for the prefetch rule in balance.c */
    double svc = ev_now(gw.loop) - r->dispatched;
    w->svc_avg = w->svc_avg > 0 ? 0.8 * w->svc_avg + 0.2 * svc : svc;
    if (cancel && w->fd >= 0 && gwp_encode_cancel(&w->out, r->stream, reason) == 0)
        gw_worker_schedule_flush(w);
    r->worker = NULL;
    /* capacity freed: a waiting request may go */
    if (queue_head) gw_front_dispatch_queue();
}

static void queue_push(gw_req_t *r)
{
    r->queued = 1;
    r->qnext = NULL;
    r->qprev = queue_tail;
    if (queue_tail) queue_tail->qnext = r; else queue_head = r;
    queue_tail = r;
    queue_len++;
}

static void queue_remove(gw_req_t *r)
{
    if (r->qprev) r->qprev->qnext = r->qnext; else queue_head = r->qnext;
    if (r->qnext) r->qnext->qprev = r->qprev; else queue_tail = r->qprev;
    queue_len--;
    r->queued = 0;
    r->qnext = r->qprev = NULL;
}

static gw_req_t *queue_pop(void)
{
    gw_req_t *r = queue_head;
    if (r) queue_remove(r);
    return r;
}

void gw_front_dispatch_queue(void)
{
    static int running;
    if (running) return;     /* req_send may free capacity re-entrantly */
    running = 1;
    while (queue_head) {
        gw_worker_t *w = gw_balance_pick(gw.cfg.balance, gw.workers, gw.nworkers,
                                         gw.cfg.max_inflight, gw.cfg.prefetch_ms / 1000.0,
                                         &gw.rr_cursor);
        if (!w) break;
        gw_req_t *r = queue_pop();
        gw_conn_t *c = r->conn;   /* r may be freed by req_send; c lives to the prepare hook */
        req_send(r, w);
        if (c && !c->closed) conn_update_io(c);
    }
    running = 0;
}

static void req_encode(gw_req_t *r, gw_worker_t *w, const gw_http1_request_t *h, size_t hl);

static size_t alog_put(alog_t *a, const char *p, size_t n)
{
    if (a->used + n > a->cap) {
        size_t cap = a->cap ? a->cap : 256;
        while (cap < a->used + n) cap *= 2;
        char *b = realloc(a->buf, cap);
        if (!b) return a->used;   /* best effort: an empty field */
        a->buf = b;
        a->cap = cap;
    }
    size_t off = a->used;
    if (n) memcpy(a->buf + off, p, n);
    a->used += n;
    return off;
}

static void alog_capture_request(gw_req_t *r, gw_conn_t *c, const gw_http1_request_t *h)
{
    alog_t *a = calloc(1, sizeof(*a));
    if (!a) return;
    r->alog = a;
    a->start = ev_now(gw.loop);
    a->req_no = c->nreq;
    a->worker_slot = -1;
    a->minor = h->minor;
    a->method_len = h->method.len;
    a->method_off = alog_put(a, h->method.ptr, h->method.len);
    a->target_len = h->target.len;
    a->target_off = alog_put(a, h->target.ptr, h->target.len);
    size_t n;
    const char *const *names = gw_access_req_headers(&n);
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < h->nheaders; i++)
            if (h->headers[i].name.len == strlen(names[k]) &&
                strncasecmp(h->headers[i].name.ptr, names[k], h->headers[i].name.len) == 0) {
                a->req_have[k] = 1;
                a->req_len[k] = h->headers[i].value.len;
                a->req_off[k] = alog_put(a, h->headers[i].value.ptr, h->headers[i].value.len);
                break;
            }
}

static void alog_capture_response(gw_req_t *r, const gwp_response_t *resp)
{
    alog_t *a = r->alog;
    size_t n;
    const char *const *names = gw_access_resp_headers(&n);
    a->status = (int)resp->status;
    for (size_t k = 0; k < n; k++)
        for (uint32_t i = 0; i < resp->nheaders; i++)
            if (resp->headers[i].name.len == strlen(names[k]) &&
                strncasecmp(resp->headers[i].name.ptr, names[k], resp->headers[i].name.len) == 0) {
                a->resp_have[k] = 1;
                a->resp_len[k] = resp->headers[i].value.len;
                a->resp_off[k] = alog_put(a, resp->headers[i].value.ptr, resp->headers[i].value.len);
                break;
            }
}

/* One access-log line for r; status overrides what the worker said (the
 * front's own 502/504). */
static void alog_write(gw_req_t *r, gw_conn_t *c, int status)
{
    alog_t *a = r->alog;
    if (!a || !c) return;
    gw_access_entry_t e;
    memset(&e, 0, sizeof(e));
    e.peer = c->peer;
    e.peer_len = strlen(c->peer);
    e.method = a->buf + a->method_off;
    e.method_len = a->method_len;
    e.target = a->buf + a->target_off;
    e.target_len = a->target_len;
    e.http_minor = a->minor;
    e.status = status ? status : a->status;
    e.bytes = a->bytes;
    e.start = a->start;
    e.end = ev_time();
    e.worker_pid = a->worker_pid;
    e.worker_slot = a->worker_slot;
    e.conn_id = c->id;
    e.req_no = a->req_no;
    for (int k = 0; k < GW_ACCESS_MAX_HEADERS; k++) {
        if (a->req_have[k]) { e.req_val[k] = a->buf + a->req_off[k]; e.req_len[k] = a->req_len[k]; }
        if (a->resp_have[k]) { e.resp_val[k] = a->buf + a->resp_off[k]; e.resp_len[k] = a->resp_len[k]; }
    }
    gw_access_log(&e);
}

/* A parsed head: pick a worker (or queue) and send REQUEST. */
static void req_start(gw_conn_t *c, const gw_http1_request_t *h, size_t hl)
{
    gw_req_t *r = req_alloc();
    if (!r) { conn_fail(c, 503, "out of memory", "Retry-After: 1\r\n"); return; }
    r->conn = c;
    r->body_kind = h->body;
    r->body_left = h->body == GW_HTTP1_BODY_LENGTH ? h->content_length : 0;
    r->body_done = h->body == GW_HTTP1_BODY_NONE;
    r->keepalive = h->keepalive && !gw.stopping;
    r->expect_continue = h->expect_continue;
    r->http10 = h->minor == 0;
    r->head_only = h->method.len == 4 && memcmp(h->method.ptr, "HEAD", 4) == 0;
    r->req_window = gw.cfg.window;
    if (h->body == GW_HTTP1_BODY_CHUNKED) gw_http1_chunked_init(&r->chunked);
    c->req = r;
    c->state = CONN_REQUEST;
    c->nreq++;
    r->started = ev_now(gw.loop);
    gw.requests++;
    if (gw_access_enabled()) alog_capture_request(r, c, h);

    gw_worker_t *w = NULL;
    if (!queue_head)
        w = gw_balance_pick(gw.cfg.balance, gw.workers, gw.nworkers, gw.cfg.max_inflight,
                            gw.cfg.prefetch_ms / 1000.0, &gw.rr_cursor);
    if (w) { req_encode(r, w, h, hl); return; }
    if (queue_len >= gw.cfg.max_queue) {
        gw.rejected_503++;
        conn_fail(c, 503, "all workers busy", "Retry-After: 1\r\n");
        return;
    }
    queue_push(r);
}

/* A queued request leaves the queue: its head is still unconsumed at
 * in[in_pos..], so it is parsed again for the borrowed strings. */
static void req_send(gw_req_t *r, gw_worker_t *w)
{
    gw_conn_t *c = r->conn;
    if (!c) { req_free(r); return; }
    gw_http1_request_t h;
    gw_http1_error_t err;
    memset(&h, 0, sizeof(h));
    h.headers = parse_hdrs;
    h.max_headers = sizeof(parse_hdrs) / sizeof(parse_hdrs[0]);
    ssize_t hl = gw_http1_parse_request(c->in + c->in_pos, c->in_len - c->in_pos,
                                        &gw.cfg.limits, &h, &err);
    if (hl <= 0) {   /* cannot happen: it parsed before */
        conn_fail(c, 500, "internal error", NULL);
        return;
    }
    req_encode(r, w, &h, (size_t)hl);
}

static void req_encode(gw_req_t *r, gw_worker_t *w, const gw_http1_request_t *h, size_t hl)
{
    gw_conn_t *c = r->conn;
    for (size_t i = 0; i < h->nheaders; i++) {
        wire_hdrs[i].name.ptr = h->headers[i].name.ptr;
        wire_hdrs[i].name.len = h->headers[i].name.len;
        wire_hdrs[i].value.ptr = h->headers[i].value.ptr;
        wire_hdrs[i].value.len = h->headers[i].value.len;
    }
    gwp_request_t m = {
        .method = { h->method.ptr, h->method.len },
        .target = { h->target.ptr, h->target.len },
        .path = { h->path.ptr, h->path.len },
        .query = { h->query.ptr, h->query.len },
        .http_minor = (uint8_t)h->minor,
        .headers = wire_hdrs,
        .nheaders = (uint32_t)h->nheaders,
        .peer = { c->peer, strlen(c->peer) },
        .server = { c->lst->addr, strlen(c->lst->addr) },
        .scheme = { "http", 4 },
        .content_length = h->body == GW_HTTP1_BODY_CHUNKED ? -1
                        : h->body == GW_HTTP1_BODY_LENGTH ? (int64_t)h->content_length : 0,
        .keepalive = (uint8_t)h->keepalive,
    };
    uint32_t stream = w->next_stream++;
    /* Ids are never reused on a channel (PROTOCOL.md §6): the last one
     * retires the worker; its replacement starts a fresh channel. */
    if (w->next_stream == 0) gw_worker_retire(w, "stream ids exhausted");
    int rc = gwp_encode_request(&w->out, stream, r->body_done ? GWP_F_END : 0, &m);
    if (rc < 0 || gw_streams_put(&w->streams, stream, r) < 0) {
        conn_fail(c, rc == -EMSGSIZE ? 431 : 503, "request too large to forward", NULL);
        return;
    }
    c->in_pos += hl;
    r->worker = w;
    r->stream = stream;
    if (r->alog) { r->alog->worker_pid = (long)w->pid; r->alog->worker_slot = w->slot; }
    w->inflight++;
    r->dispatched = ev_now(gw.loop);
    gw_worker_schedule_flush(w);

    if (!r->body_done) {
        if (r->expect_continue && !r->http10 && c->in_len == c->in_pos &&
            out_reserve(c, 25) == 0) {
            OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
            conn_schedule_flush(c);
        }
        req_forward_body(r);
    }
}

/* Move body bytes from the connection's buffer to the worker, within the
 * stream's window. Chunked coding is decoded here; the worker gets data. */
static void req_forward_body(gw_req_t *r)
{
    gw_conn_t *c = r->conn;
    gw_worker_t *w = r->worker;
    if (!c || !w) return;
    int sent = 0;
    while (!r->body_done && r->req_window > 0 && c->in_len > c->in_pos) {
        size_t avail = c->in_len - c->in_pos;
        size_t lim = avail;
        if (lim > r->req_window) lim = r->req_window;
        if (lim > GWP_MAX_DATA) lim = GWP_MAX_DATA;
        if (r->body_kind == GW_HTTP1_BODY_LENGTH) {
            if (lim > r->body_left) lim = (size_t)r->body_left;
            int last = lim == r->body_left;
            if (gwp_encode_data(&w->out, GWP_MSG_BODY, r->stream, last ? GWP_F_END : 0,
                                c->in + c->in_pos, lim) < 0) break;
            c->in_pos += lim;
            r->body_left -= lim;
            r->req_window -= (uint32_t)lim;
            r->body_done = last;
            sent = 1;
        } else {
            gw_str_t data = { NULL, 0 };
            gw_http1_error_t err;
            ssize_t used = gw_http1_chunked_decode(&r->chunked, c->in + c->in_pos, lim,
                                                   &gw.cfg.limits, &data, &err);
            if (used < 0) {
                if (r->resp_started) { conn_close(c); return; }
                conn_fail(c, err.status, err.why, NULL);
                return;
            }
            c->in_pos += (size_t)used;
            if (data.len > 0 || r->chunked.done) {
                if (gwp_encode_data(&w->out, GWP_MSG_BODY, r->stream,
                                    r->chunked.done ? GWP_F_END : 0, data.ptr, data.len) < 0)
                    break;
                r->req_window -= (uint32_t)data.len;
                sent = 1;
            }
            if (r->chunked.done) r->body_done = 1;
            else if (used == 0) break;   /* need more bytes */
        }
    }
    if (sent) gw_worker_schedule_flush(w);
}

/* Drop body bytes the app did not read. 0 when done, 1 for more, -1 when
 * the connection was closed (bad chunked coding, or over DISCARD_MAX). */
static int conn_discard(gw_conn_t *c)
{
    while (c->in_len > c->in_pos) {
        size_t avail = c->in_len - c->in_pos;
        if (!c->discard_is_chunked) {
            size_t n = avail < c->discard_left ? avail : (size_t)c->discard_left;
            c->in_pos += n;
            c->discard_left -= n;
            if (c->discard_left == 0) break;
            continue;
        }
        gw_str_t data;
        gw_http1_error_t err;
        ssize_t used = gw_http1_chunked_decode(&c->discard_chunked, c->in + c->in_pos, avail,
                                               &gw.cfg.limits, &data, &err);
        if (used < 0) { conn_close(c); return -1; }
        c->in_pos += (size_t)used;
        c->discarded += data.len;
        if (c->discarded > DISCARD_MAX) { conn_close(c); return -1; }
        if (c->discard_chunked.done) break;
        if (used == 0) break;
    }
    int done = c->discard_is_chunked ? c->discard_chunked.done : c->discard_left == 0;
    if (!done) return 1;
    c->discarding = 0;
    return 0;
}

/* --health-path: answered here, never forwarded. 200 while a worker is
 * READY and the gateway neither drains nor stops; 503 otherwise. */
static int health_match(const gw_http1_request_t *h)
{
    const char *p = gw.cfg.health_path;
    size_t n = strlen(p);
    int get = h->method.len == 3 && memcmp(h->method.ptr, "GET", 3) == 0;
    int head = h->method.len == 4 && memcmp(h->method.ptr, "HEAD", 4) == 0;
    return (get || head) && h->path.len == n && memcmp(h->path.ptr, p, n) == 0;
}

static void health_answer(gw_conn_t *c, const gw_http1_request_t *h, size_t hl)
{
    int ready = 0;
    for (unsigned i = 0; i < gw.nworkers && !ready; i++)
        ready = gw.workers[i].state == GW_WORKER_READY;
    const char *why = gw.stopping ? "stopping\n" : gw.draining ? "draining\n"
                    : !ready ? "no worker ready\n" : "ok\n";
    int status = why[0] == 'o' ? 200 : 503;
    int keep = h->keepalive && h->body == GW_HTTP1_BODY_NONE && !gw.stopping;
    int head = h->method.len == 4;
    size_t dlen;
    const char *date = http_date(&dlen);
    char buf[384];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nServer: " GW_SERVER_HEADER "\r\nDate: %.*s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s\r\n%s",
                     status, gw_http1_reason(status), (int)dlen, date, strlen(why),
                     keep ? (h->minor == 0 ? "Connection: keep-alive\r\n" : "")
                          : "Connection: close\r\n",
                     head ? "" : why);
    c->in_pos += hl;
    if (n > 0 && out_reserve(c, (size_t)n) == 0) out_put(c, buf, (size_t)n);
    conn_schedule_flush(c);
    if (!keep) c->state = CONN_CLOSING;
}

/* Parse heads from the buffer and drive the request in progress. */
static void conn_process(gw_conn_t *c)
{
    while (!c->closed) {
        if (c->state == CONN_CLOSING || c->state == CONN_LINGER) break;
        if (c->req) {
            gw_req_t *r = c->req;
            if (r->worker && !r->body_done) req_forward_body(r);
            break;
        }
        if (c->discarding && conn_discard(c) != 0) {
            if (c->closed) return;
            break;   /* more body to drop first */
        }
        if (c->in_len == c->in_pos) {
            if (c->discarding) break;
            c->state = CONN_IDLE;
            if (c->in_cap > IN_INIT) {   /* idle connections give buffers back */
                free(c->in);
                c->in = NULL;
                c->in_cap = c->in_pos = c->in_len = 0;
            }
            if (gw.stopping) { conn_close(c); return; }
            break;
        }
        c->state = CONN_HEAD;
        /* The parser re-scans from the head's start, so a client dribbling
         * bytes would cost O(n^2). Re-parse only when a new line arrived or
         * the buffer doubled since the last incomplete parse: limits are
         * still caught (at most one doubling late), bytes once each. */
        size_t len = c->in_len - c->in_pos, seen = c->head_again_len;
        if (seen && len > seen && len < 2 * seen &&
            !memchr(c->in + c->in_pos + seen, '\n', len - seen))
            break;
        gw_http1_request_t h;
        gw_http1_error_t err;
        memset(&h, 0, sizeof(h));
        h.headers = parse_hdrs;
        h.max_headers = sizeof(parse_hdrs) / sizeof(parse_hdrs[0]);
        ssize_t hl = gw_http1_parse_request(c->in + c->in_pos, len, &gw.cfg.limits, &h, &err);
        if (hl == GW_HTTP1_AGAIN) { c->head_again_len = len; break; }
        c->head_again_len = 0;
        if (hl < 0) {
            conn_fail(c, err.status, err.why, NULL);
            return;
        }
        if (gw.cfg.health_path && health_match(&h)) {
            health_answer(c, &h, (size_t)hl);
            continue;
        }
        req_start(c, &h, (size_t)hl);
    }
    conn_update_io(c);
}

/* ---- responses from workers ---- */

/* What the front does with a response field from a worker. */
enum { HF_PASS = 0, HF_DROP, HF_LENGTH, HF_SERVER, HF_DATE };

static int header_class(const gwp_str_t *n)
{
#define IS(lit) (strncasecmp(n->ptr, lit, sizeof(lit) - 1) == 0)
    switch (n->len) {   /* length first: most fields cost one switch */
    case 2:  return IS("te") ? HF_DROP : HF_PASS;
    case 4:  return IS("date") ? HF_DATE : HF_PASS;
    case 6:  return IS("server") ? HF_SERVER : HF_PASS;
    case 7:  return IS("upgrade") || IS("trailer") ? HF_DROP : HF_PASS;
    case 10: return IS("connection") || IS("keep-alive") ? HF_DROP : HF_PASS;
    case 14: return IS("content-length") ? HF_LENGTH : HF_PASS;
    case 16: return IS("proxy-connection") ? HF_DROP : HF_PASS;
    case 17: return IS("transfer-encoding") ? HF_DROP : HF_PASS;
    default: return HF_PASS;
    }
#undef IS
}

static uint8_t resp_class[GWP_MAX_HEADERS];

static gw_req_t *stream_lookup(gw_worker_t *w, const gwp_msg_t *m)
{
    gw_req_t *r = gw_streams_get(&w->streams, m->frame.stream);
    if (!r) {
        /* Late reply for a cancelled stream, or a bogus id: never another's. */
        w->dropped++;
        gw_debug("worker %d: dropped %s for unknown stream %u", w->slot,
                 gwp_type_name(m->frame.type), m->frame.stream);
    }
    return r;
}

/* The worker finished its side of the stream. */
static void req_complete(gw_req_t *r)
{
    gw_conn_t *c = r->conn;
    gw_worker_t *w = r->worker;
    r->resp_done = 1;
    if (w) {
        w->served++;
        if (w->retire_after && w->served >= w->retire_after && w->state == GW_WORKER_READY)
            gw_worker_retire(w, "max-requests reached");
        /* Unread request body: the worker no longer needs it (CANCEL); the
         * front drops the rest itself to find the next request's start. */
        req_detach_worker(r, !r->body_done, "response-done");
    }
    if (!c) { req_free(r); return; }
    c->req = NULL;
    if (r->alog) alog_write(r, c, 0);
    gw_metrics_observe(r->status, ev_now(gw.loop) - r->started);
    int keep = r->keepalive && !gw.stopping;
    if (keep && !r->body_done) {
        c->discarding = 1;
        c->discarded = 0;
        c->discard_is_chunked = r->body_kind == GW_HTTP1_BODY_CHUNKED;
        c->discard_left = r->body_left;
        if (c->discard_is_chunked) c->discard_chunked = r->chunked;
    }
    req_free(r);
    conn_schedule_flush(c);
    if (!keep) {
        c->state = CONN_CLOSING;
        conn_update_io(c);
        return;
    }
    c->state = c->discarding ? CONN_REQUEST : CONN_IDLE;
    conn_process(c);   /* a pipelined request may be waiting */
}

static void resp_append_data(gw_req_t *r, const char *p, size_t n)
{
    gw_conn_t *c = r->conn;
    if (n == 0) return;
    if (r->resp_no_body || !c) {   /* HEAD, 204, 304: discard, credit now */
        r->resp_unacked += n;
        return;
    }
    if (r->resp_has_length) {
        if (n > r->resp_left) n = (size_t)r->resp_left;   /* app overran its length */
        r->resp_left -= n;
    }
    if (r->alog) r->alog->bytes += n;
    if (out_reserve(c, n + 32) < 0) { conn_close(c); return; }
    if (r->resp_chunked) {
        char hex[20];
        size_t hn = 0, v = n;
        char tmp[16];
        do { tmp[hn++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
        for (size_t k = 0; k < hn; k++) hex[k] = tmp[hn - 1 - k];
        hex[hn++] = '\r';
        hex[hn++] = '\n';
        out_put(c, hex, hn);
        out_put(c, p, n);
        OUT_LIT(c, "\r\n");
    } else {
        out_put(c, p, n);
    }
    r->resp_unacked += n;
    conn_touch(c);
    conn_schedule_flush(c);
}

static void resp_end(gw_req_t *r)
{
    gw_conn_t *c = r->conn;
    if (c && r->resp_chunked && !r->resp_no_body) {
        if (out_reserve(c, 5) == 0) OUT_LIT(c, "0\r\n\r\n");
    }
    if (c && r->resp_has_length && r->resp_left > 0 && !r->resp_no_body) {
        /* Fewer bytes than declared: the client cannot reuse this connection. */
        gw_warn("#%llu: worker %d sent %llu bytes fewer than its Content-Length",
                (unsigned long long)c->id, r->worker ? r->worker->slot : -1,
                (unsigned long long)r->resp_left);
        r->keepalive = 0;
    }
    req_complete(r);
}

/* The worker sent something we cannot pass on: 502, stream cancelled. */
static void resp_bad(gw_req_t *r, const char *why)
{
    gw_conn_t *c = r->conn;
    gw_error("worker %d: bad response on stream %u: %s", r->worker ? r->worker->slot : -1,
             r->stream, why);
    req_detach_worker(r, 1, "bad-response");
    if (!c) { req_free(r); return; }
    if (r->resp_started) conn_close(c);
    else conn_fail(c, 502, "bad response from the application", NULL);
}

/* The response counts as started (resp_bad then cuts instead of a 502). */
static void resp_begin(gw_req_t *r, const gwp_response_t *resp)
{
    r->resp_started = 1;
    r->status = (int)resp->status;
    if (r->alog) alog_capture_response(r, resp);
}

void gw_front_on_response(gw_worker_t *w, const gwp_msg_t *m)
{
    gw_req_t *r = stream_lookup(w, m);
    if (!r) return;
    const gwp_response_t *resp = &m->u.response;
    if (r->resp_started) { resp_bad(r, "second RESPONSE"); return; }
    if (resp->status < 200 || resp->status > 999) { resp_bad(r, "status out of range"); return; }
    gw_conn_t *c = r->conn;
    int end = (m->frame.flags & GWP_F_END) != 0;
    if (!c) {   /* the client is gone: nothing to check, nothing to send */
        resp_begin(r, resp);
        if (end) req_complete(r);
        return;
    }

    /* Framing: a complete response gets Content-Length; a streamed one the
     * app's Content-Length, else chunked (1.1) or close-delimited (1.0). */
    int st = (int)resp->status;
    int bodyless_status = st == 204 || st == 304;
    r->resp_no_body = r->head_only || bodyless_status;
    int64_t app_len = -1;
    int has_server = 0, has_date = 0;
    for (uint32_t i = 0; i < resp->nheaders; i++) {
        const gwp_header_t *hd = &resp->headers[i];
        if (!gwp_header_valid(hd)) { resp_bad(r, "invalid header field"); return; }
        int cls = resp_class[i] = (uint8_t)header_class(&hd->name);
        if (cls == HF_LENGTH) {
            uint64_t v = 0;
            if (hd->value.len == 0 || hd->value.len > 18) { resp_bad(r, "bad Content-Length"); return; }
            for (size_t k = 0; k < hd->value.len; k++) {
                char ch = hd->value.ptr[k];
                if (ch < '0' || ch > '9') { resp_bad(r, "bad Content-Length"); return; }
                v = v * 10 + (uint64_t)(ch - '0');
            }
            if (app_len >= 0 && (uint64_t)app_len != v) { resp_bad(r, "conflicting Content-Length"); return; }
            app_len = (int64_t)v;
        } else if (cls == HF_SERVER) has_server = 1;
        else if (cls == HF_DATE) has_date = 1;
    }
    resp_begin(r, resp);   /* only once checked: a refused head still gets a 502 */
    uint64_t length = 0;
    int known = 0;
    if (end) { length = resp->body.len; known = 1; }
    else if (app_len >= 0) { length = (uint64_t)app_len; known = 1; }
    if (end && app_len >= 0 && r->head_only) { length = (uint64_t)app_len; }

    if (!known && !r->resp_no_body) {
        if (r->http10) r->keepalive = 0;   /* close-delimited */
        else r->resp_chunked = 1;
    }
    if (known && !r->resp_no_body) {
        r->resp_has_length = 1;
        r->resp_left = length;
    }
    if (gw.stopping || gw.draining) r->keepalive = 0;   /* let clients move on */
    /* Too much body left to drop later: say so now, while we still can. */
    if (!r->body_done && r->body_kind == GW_HTTP1_BODY_LENGTH && r->body_left > DISCARD_MAX)
        r->keepalive = 0;

    /* status line + headers */
    size_t need = 128 + 64;
    for (uint32_t i = 0; i < resp->nheaders; i++)
        need += resp->headers[i].name.len + resp->headers[i].value.len + 4;
    if (out_reserve(c, need) < 0) { conn_close(c); return; }
    if (st == 200) {
        OUT_LIT(c, "HTTP/1.1 200 OK\r\n");
    } else {
        const char *reason = gw_http1_reason(st);
        char line[16] = "HTTP/1.1 ";
        line[9] = (char)('0' + st / 100);
        line[10] = (char)('0' + st / 10 % 10);
        line[11] = (char)('0' + st % 10);
        line[12] = ' ';
        out_put(c, line, 13);
        out_put(c, reason, strlen(reason));
        OUT_LIT(c, "\r\n");
    }
    if (!has_server) OUT_LIT(c, "Server: " GW_SERVER_HEADER "\r\n");
    if (!has_date) {
        size_t dl;
        const char *d = http_date(&dl);
        OUT_LIT(c, "Date: ");
        out_put(c, d, dl);
        OUT_LIT(c, "\r\n");
    }
    for (uint32_t i = 0; i < resp->nheaders; i++) {
        const gwp_header_t *hd = &resp->headers[i];
        const gwp_str_t *n = &hd->name;
        /* hop-by-hop and framing headers are ours to decide */
        if (resp_class[i] == HF_DROP || resp_class[i] == HF_LENGTH) continue;
        out_put(c, n->ptr, n->len);
        OUT_LIT(c, ": ");
        out_put(c, hd->value.ptr, hd->value.len);
        OUT_LIT(c, "\r\n");
    }
    if (known && !bodyless_status) {
        char num[24];
        OUT_LIT(c, "Content-Length: ");
        out_put(c, num, fmt_u64(num, length));
        OUT_LIT(c, "\r\n");
    } else if (r->resp_chunked) {
        OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
    }
    if (!r->keepalive) OUT_LIT(c, "Connection: close\r\n");
    else if (r->http10) OUT_LIT(c, "Connection: keep-alive\r\n");
    OUT_LIT(c, "\r\n");
    if (st >= 500) gw.responses_5xx++;
    else if (st >= 400) gw.responses_4xx++;

    if (resp->body.len) resp_append_data(r, resp->body.ptr, resp->body.len);
    conn_schedule_flush(c);
    if (end) resp_end(r);
}

void gw_front_on_resp_body(gw_worker_t *w, const gwp_msg_t *m)
{
    gw_req_t *r = stream_lookup(w, m);
    if (!r) return;
    if (!r->resp_started) { resp_bad(r, "RESP_BODY before RESPONSE"); return; }
    resp_append_data(r, m->u.data.data.ptr, m->u.data.data.len);
    if (m->frame.flags & GWP_F_END) resp_end(r);
}

void gw_front_on_window(gw_worker_t *w, const gwp_msg_t *m)
{
    gw_req_t *r = stream_lookup(w, m);
    if (!r) return;
    uint64_t win = (uint64_t)r->req_window + m->u.window.bytes;
    r->req_window = win > UINT32_MAX ? UINT32_MAX : (uint32_t)win;
    if (r->conn && !r->body_done) {
        req_forward_body(r);
        if (r->conn) conn_update_io(r->conn);
    }
}

void gw_front_on_cancel(gw_worker_t *w, const gwp_msg_t *m)
{
    gw_req_t *r = stream_lookup(w, m);
    if (!r) return;
    gw_conn_t *c = r->conn;
    req_detach_worker(r, 0, NULL);   /* the worker dropped it already */
    if (!c) { req_free(r); return; }
    if (r->resp_started) conn_cut(c);
    else conn_fail(c, 502, "the application aborted the request", NULL);
}

void gw_front_worker_lost(gw_worker_t *w)
{
    /* Collect first: failing a request edits the table we walk. */
    uint32_t n = w->streams.count, k = 0;
    if (n == 0) { w->inflight = 0; return; }
    gw_req_t **list = malloc(n * sizeof(*list));
    if (!list) n = 0;
    for (uint32_t i = 0; list && i <= w->streams.mask && k < n; i++)
        if (w->streams.keys[i]) list[k++] = w->streams.vals[i];
    for (uint32_t i = 0; i < k; i++) {
        gw_req_t *r = list[i];
        gw_conn_t *c = r->conn;
        gw_streams_del(&w->streams, r->stream);
        r->worker = NULL;
        if (!c) { req_free(r); continue; }
        if (r->resp_started) {
            conn_cut(c);          /* the client sees a truncated response */
            continue;
        }
        /* 502 for exactly this request; keep the connection only if its
         * body was fully read (framing known). */
        c->req = NULL;
        int keep = r->body_done && r->keepalive && !gw.stopping;
        if (r->alog) alog_write(r, c, 502);
        gw_metrics_observe(502, ev_now(gw.loop) - r->started);
        req_free(r);
        gw_log(GW_LOG_INFO, "#%llu %s: 502: worker %d died with the request in flight",
               (unsigned long long)c->id, c->peer, w->slot);
        write_simple(c, 502, "the worker handling the request died", NULL, keep);
        conn_schedule_flush(c);
        if (keep) { c->state = CONN_IDLE; conn_process(c); }
        else { c->state = CONN_CLOSING; conn_update_io(c); }
    }
    free(list);
    w->inflight = 0;
    gw_streams_free(&w->streams);
    gw_streams_init(&w->streams, GW_INFLIGHT_HINT(gw.cfg.max_inflight));
}

/* ---- accepting ---- */

static void peer_format(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)ss;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        snprintf(out, n, "%s:%u", host, ntohs(s->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        snprintf(out, n, "[%s]:%u", host, ntohs(s->sin6_port));
    } else {
        snprintf(out, n, "unix");
    }
}

static void listener_on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_listener_t *l = (gw_listener_t *)io;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            gw_error("accept on %s: %s", l->name, strerror(errno));
            return;   /* EMFILE and friends: retried on the next readiness */
        }
        gw_conn_t *c = calloc(1, sizeof(*c));
        if (!c) { close(fd); gw_error("accept: out of memory"); return; }
        if (!l->is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        c->fd = fd;
        c->lst = l;
        c->id = next_conn_id++;
        c->state = CONN_HEAD;
        if (l->is_unix) snprintf(c->peer, sizeof(c->peer), "unix");
        else peer_format(&ss, c->peer, sizeof(c->peer));
        ev_io_init(&c->rio, conn_on_readable, fd, EV_READ);
        ev_io_init(&c->wio, conn_on_writable, fd, EV_WRITE);
        ev_init(&c->timer, conn_on_timeout);
        c->next = conns;
        if (conns) conns->prev = c;
        conns = c;
        nconns++;
        gw.accepted++;
        conn_update_io(c);
        /* Stopping: this one came from the backlog; take what it already
         * sent now, so it is answered rather than closed as idle. */
        if (gw.stopping) conn_on_readable(loop, &c->rio, EV_READ);
    }
}

int gw_front_start(void)
{
    size_t off = 0;
    gw.bind_list[0] = '\0';
    for (size_t i = 0; i < gw.nlisteners; i++) {
        gw_listener_t *l = &gw.listeners[i];
        ev_io_init(&l->io, listener_on_accept, l->fd, EV_READ);
        ev_io_start(gw.loop, &l->io);
        int n = snprintf(gw.bind_list + off, sizeof(gw.bind_list) - off, "%s%s",
                         i ? ", " : "", l->addr);
        if (n > 0 && off + (size_t)n < sizeof(gw.bind_list)) off += (size_t)n;
    }
    return 0;
}

void gw_front_stop_accepting(void)
{
    if (!gw.listeners) return;
    /* Graceful: connections already in the kernel's accept queues are
     * accepted and, if they sent a request, served (Connection: close);
     * closing the listener instead would reset them. */
    if (gw.stopping == 1)
        for (size_t i = 0; i < gw.nlisteners; i++)
            for (int k = 0; k < 64; k++) {
                unsigned before = nconns;
                listener_on_accept(gw.loop, &gw.listeners[i].io, EV_READ);
                if (nconns == before) break;
            }
    for (size_t i = 0; i < gw.nlisteners; i++)
        ev_io_stop(gw.loop, &gw.listeners[i].io);
    gw_listeners_close(gw.listeners, gw.nlisteners);
    gw.listeners = NULL;
    gw.nlisteners = 0;
}

void gw_front_close_idle(void)
{
    gw_conn_t *c = conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (gw.stopping == 2) { conn_close(c); continue; }
        if (c->state != CONN_IDLE && !(c->state == CONN_HEAD && c->in_len == c->in_pos))
            continue;
        /* A request may be waiting unread in the socket: take it first, so
         * it is answered (with Connection: close) instead of dropped. */
        conn_on_readable(gw.loop, &c->rio, EV_READ);
        if (c->closed) continue;
        if (c->state == CONN_HEAD && c->in_len == c->in_pos) c->state = CONN_IDLE;
        if (c->state == CONN_IDLE) conn_update_io(c);   /* the short stop grace */
    }
}

unsigned gw_front_queued(void)
{
    return queue_len;
}

unsigned gw_front_active(void)
{
    unsigned n = 0;
    if (gw.stopping == 1) return nconns;   /* idle ones are in their stop grace */
    for (gw_conn_t *c = conns; c; c = c->next)
        if (c->state == CONN_REQUEST || c->state == CONN_CLOSING ||
            (c->state == CONN_HEAD && c->in_len > c->in_pos))
            n++;
    return n;
}
