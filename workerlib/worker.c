/*
 * worker.c - the worker side of the gateway protocol: a forked worker's own
 * libev loop, its channel to the master, the stream table and the request /
 * response API an app calls (gwl_req_*, gwl_resp_*, gwl_respond).
 *
 * Runs in a worker process, on its loop thread only (the one that called
 * gwl__worker_main). One worker per process, so the state is one static.
 *
 * Channel I/O is batched, because the hop is only cheap that way: reads go
 * into one large buffer and every whole frame in it is decoded per wakeup;
 * frames are encoded into one output buffer and written once per loop
 * iteration from an ev_prepare watcher (an ev_io write watcher takes over
 * only while the socket says EAGAIN).
 *
 * Flow control, per stream and direction, both starting at HELLO.window:
 *  - response: at most send_credit bytes of body data go out; the rest waits
 *    in the request's queue until the master's WINDOW adds credit;
 *  - request: body bytes handed to the app (or discarded) are returned as
 *    WINDOW credit, but held back while the stream's queued response exceeds
 *    the window, so an echoing app pushes back on its client instead of
 *    buffering without bound.
 *
 * Request lifetime: created on REQUEST, freed when the app has finished AND
 * the request body ended (or the stream was cancelled) AND the response END
 * went out (or was dropped by a cancel), in whatever order those happen.
 * Never freed while a callback into the app for it is running (in_cb) or
 * while it sits on the flush list (dirty): the flush pass frees it.
 */
#include "gwl_int.h"
#include "gwp.h"
#include "log.h"

#include <ev.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Seam between workerlib's files (the owner list allows no private header;
 * these are the whole of it). app.c: */
void     gwl__app_handler(const gwl_app_t *app, gwl_request_cb *cb, void **data);
unsigned gwl__app_threads(const gwl_app_t *app);
int      gwl__app_run_hooks(gwl_app_t *app, int startup, char *err, size_t errlen);
/* pool.c: */
int      gwl__pool_init(struct ev_loop *loop, unsigned threads);
void     gwl__pool_done(void);
unsigned gwl__pool_pending(void);

#define GWL_RBUF_SIZE        (256u * 1024)  /* channel read buffer, grows to one max frame */
#define GWL_TERM_GRACE_MS    30000          /* SIGTERM / master gone: graceful budget */
#define GWL_FINAL_FLUSH_MS   2000           /* blocking flush of the channel at exit */
#define GWL_RH_INLINE        160            /* response-header bytes kept inside the request */
#define GWL_STACK_HEADERS    32
#define GWL_REQ_BLOCK        2048           /* pooled request allocation size */
#define GWL_REQ_POOL         32             /* freed blocks kept for reuse */

/* Request state, ordered by lifecycle so each misuse check is one comparison
 * (libunit's NXT_UNIT_RS_*). */
typedef enum {
    GWL_RS_NEW = 0,    /* handler called, nothing answered yet */
    GWL_RS_HEAD,       /* gwl_resp_start: status set, headers may follow */
    GWL_RS_BODY,       /* a body piece was written: no more headers */
    GWL_RS_DONE        /* the app finished; it must not touch req again */
} gwl_req_state_t;

/* Worker phase, same idea. */
typedef enum {
    GWL_W_HELLO = 0,   /* loop up, waiting for the master's HELLO */
    GWL_W_RUN,         /* READY sent, serving */
    GWL_W_DRAIN,       /* QUIT/TERM/EOF: no new requests, waiting for in-flight */
    GWL_W_EXIT         /* leaving ev_run */
} gwl_worker_phase_t;

typedef struct {
    const char *name;
    const char *value;
} gwl_req_header_t;

struct gwl_req_s {
    uint32_t          stream;
    uint8_t           state;          /* gwl_req_state_t */
    uint8_t           cancelled;      /* no frame for this stream ever again */
    uint8_t           cancel_pending; /* cancel_cb to run from the flush pass */
    uint8_t           cancel_called;
    uint8_t           body_done;      /* request body END seen (or there was none) */
    uint8_t           head_sent;
    uint8_t           end_sent;
    uint8_t           dirty;          /* on the flush list */
    uint8_t           http_minor;
    uint8_t           keepalive;
    uint8_t           pooled;         /* a GWL_REQ_BLOCK allocation */
    uint16_t          status;
    uint32_t          in_cb;          /* callbacks into the app running for it */
    uint32_t          owed;           /* body bytes consumed, credit not yet returned */
    int64_t           content_length;
    int64_t           send_credit;    /* response data bytes we may still send */

    const char       *method, *target, *path, *query, *peer, *server, *scheme;
    gwl_req_header_t *headers;
    size_t            nheaders;

    gwl_body_cb       body_cb;
    void             *body_data;
    gwl_cancel_cb     cancel_cb;
    void             *cancel_data;
    void             *data;

    /* Response headers, each as a rh_ent_t (the lengths) followed by the
     * name and value bytes, no separators; rh points at rh_inline until it
     * outgrows it. */
    char             *rh;
    uint32_t          rh_len, rh_cap, rh_count;
    /* Response body waiting for credit: bytes q[q_off..q_len). */
    uint8_t          *q;
    size_t            q_off, q_len, q_cap;

    gwl_req_t        *next_dirty;
    char              rh_inline[GWL_RH_INLINE];
    /* Followed, in the same allocation, by the request header array and
     * every request string, NUL-terminated. */
};

/* Head of one response header in gwl_req_s.rh; name and value follow. */
typedef struct {
    uint32_t nl, vl;
} rh_ent_t;

typedef struct {
    uint32_t   key;
    gwl_req_t *val;
} gwl_slot_t;

typedef struct {
    struct ev_loop *loop;
    gwl_app_t      *app;
    const char     *app_path;       /* load after fork when not preloaded */
    const char     *app_symbol;
    gwl_request_cb  on_request;
    void           *on_request_data;
    int             slot;
    int             fd;
    uint8_t         phase;          /* gwl_worker_phase_t */
    uint8_t         chan_dead;      /* EOF or write error: nothing more to send */
    uint8_t         ready_sent;
    uint8_t         graceful;       /* exit through drain: run shutdown hooks */
    int             exit_code;
    volatile sig_atomic_t sig_term, sig_quit, sig_int;

    ev_io           rio, wio;
    ev_prepare      prep;
    ev_async        sig;
    ev_timer        hb;
    ev_timer        grace;

    uint8_t        *rbuf;
    size_t          rlen, rcap;
    gwp_buf_t       out;
    gwp_decoder_t   dec;

    /* From HELLO. */
    uint32_t        window;
    uint32_t        peer_cap;       /* the master's decoder cap */
    uint32_t        max_data;       /* data bytes per frame */
    uint32_t        heartbeat_ms;

    /* Stream table: open addressing, linear probing, backward-shift delete. */
    gwl_slot_t     *tab;
    uint32_t        tab_mask;
    uint32_t        nreq;           /* live request objects */
    uint32_t        ncancelled;     /* of which cancelled */
    uint32_t        active;         /* the app has not finished them */
    gwl_req_t      *dirty;          /* flush list */

    uint64_t        served;
    uint64_t        dropped;        /* frames for unknown/cancelled streams */
    void           *pool[GWL_REQ_POOL];   /* free GWL_REQ_BLOCK request blocks */
    uint32_t        npool;
    char            loop_id[128];
} gwl_worker_t;

static gwl_worker_t W = { .slot = -1, .fd = -1 };

/* ------------------------------------------------------------------ */
/* stream table */

static inline uint32_t tab_hash(uint32_t k)
{
    k *= 0x9E3779B1u;
    return k ^ (k >> 15);
}

static gwl_req_t *tab_get(uint32_t key)
{
    for (uint32_t i = tab_hash(key) & W.tab_mask; W.tab[i].val; i = (i + 1) & W.tab_mask)
        if (W.tab[i].key == key) return W.tab[i].val;
    return NULL;
}

static int tab_grow(void)
{
    uint32_t ncap = (W.tab_mask + 1) * 2;
    gwl_slot_t *nt = calloc(ncap, sizeof(*nt));
    if (nt == NULL) return GWL_ERROR;
    for (uint32_t i = 0; i <= W.tab_mask; i++) {
        if (W.tab[i].val == NULL) continue;
        uint32_t j = tab_hash(W.tab[i].key) & (ncap - 1);
        while (nt[j].val) j = (j + 1) & (ncap - 1);
        nt[j] = W.tab[i];
    }
    free(W.tab);
    W.tab = nt;
    W.tab_mask = ncap - 1;
    return GWL_OK;
}

static int tab_put(uint32_t key, gwl_req_t *val)
{
    if ((W.nreq + 1) * 2 > W.tab_mask + 1 && tab_grow() != GWL_OK) return GWL_ERROR;
    uint32_t i = tab_hash(key) & W.tab_mask;
    while (W.tab[i].val) i = (i + 1) & W.tab_mask;
    W.tab[i].key = key;
    W.tab[i].val = val;
    return GWL_OK;
}

static void tab_del(uint32_t key)
{
    uint32_t i = tab_hash(key) & W.tab_mask;
    while (W.tab[i].val && W.tab[i].key != key) i = (i + 1) & W.tab_mask;
    if (W.tab[i].val == NULL) return;
    /* Backward shift: pull later entries of the probe run into the hole
     * unless their home slot lies cyclically in (hole, j]. */
    for (uint32_t j = i;;) {
        j = (j + 1) & W.tab_mask;
        if (W.tab[j].val == NULL) break;
        uint32_t home = tab_hash(W.tab[j].key) & W.tab_mask;
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) continue;
        W.tab[i] = W.tab[j];
        i = j;
    }
    W.tab[i].val = NULL;
}

/* ------------------------------------------------------------------ */
/* channel output */

static void chan_broken(void);

/* Roll back a frame the master could not decode (over its HELLO cap). */
static int out_check_cap(size_t before)
{
    if (W.out.len - before - GWP_HEADER_SIZE <= W.peer_cap) return 0;
    W.out.len = before;
    return -EMSGSIZE;
}

/*
 * Write what the output buffer holds; on EAGAIN leave the rest to the write
 * watcher. Returns GWL_OK, GWL_AGAIN (data left) or GWL_ERROR (channel gone).
 */
static int chan_flush(void)
{
    while (W.out.len > 0) {
        ssize_t n = send(W.fd, W.out.data, W.out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            gwp_buf_consume(&W.out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!ev_is_active(&W.wio)) ev_io_start(W.loop, &W.wio);
            return GWL_AGAIN;
        }
        gw_error("channel write failed: %s", n < 0 ? strerror(errno) : "0 bytes");
        chan_broken();
        return GWL_ERROR;
    }
    if (ev_is_active(&W.wio)) ev_io_stop(W.loop, &W.wio);
    return GWL_OK;
}

/* At exit: push out what is left, waiting at most timeout_ms. */
static void chan_flush_blocking(int timeout_ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!W.chan_dead && W.out.len > 0) {
        if (chan_flush() != GWL_AGAIN) break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= timeout_ms) {
            gw_warn("channel: %zu bytes not flushed at exit", W.out.len);
            break;
        }
        struct pollfd p = { .fd = W.fd, .events = POLLOUT };
        poll(&p, 1, (int)(timeout_ms - spent));
    }
}

static void send_error(const char *message, int code)
{
    gwp_error_t e = { .message = { message, strlen(message) }, .code = code };
    if (gwp_encode_error(&W.out, &e) != 0) gw_error("cannot encode ERROR frame");
}

static void send_cancel(uint32_t stream, const char *reason)
{
    if (W.chan_dead) return;
    if (gwp_encode_cancel(&W.out, stream, reason) != 0)
        gw_error("#%" PRIu32 ": cannot encode CANCEL", stream);
}

/* ------------------------------------------------------------------ */
/* requests */

static void req_mark(gwl_req_t *r)
{
    if (r->dirty) return;
    r->dirty = 1;
    r->next_dirty = W.dirty;
    W.dirty = r;
}

static void req_free(gwl_req_t *r)
{
    tab_del(r->stream);
    W.nreq--;
    if (r->cancelled) W.ncancelled--;
    if (r->state < GWL_RS_DONE) W.active--;   /* only at exit */
    if (r->rh != r->rh_inline) free(r->rh);
    if (r->q) free(r->q);
    if (r->pooled && W.npool < GWL_REQ_POOL) W.pool[W.npool++] = r;
    else free(r);
}

static void req_maybe_free(gwl_req_t *r)
{
    if (r->in_cb || r->dirty) return;
    if (r->cancelled) {
        if (r->state == GWL_RS_DONE) req_free(r);
        return;
    }
    if (r->state == GWL_RS_DONE && r->body_done && r->end_sent) req_free(r);
}

/*
 * Abandon stream r: drop its queued output, tell the master when we are the
 * ones giving up (notify), and have the app's cancel callback run from the
 * flush pass (never from inside a gwl_ call the app is making).
 */
static void req_cancel(gwl_req_t *r, int notify, const char *reason)
{
    if (r->cancelled) return;
    r->cancelled = 1;
    W.ncancelled++;
    if (notify) send_cancel(r->stream, reason);
    free(r->q);
    r->q = NULL;
    r->q_off = r->q_len = r->q_cap = 0;
    r->owed = 0;
    if (r->cancel_cb && r->state < GWL_RS_DONE) r->cancel_pending = 1;
    req_mark(r);
}

/* Encoding failed for r (too large for the master, or ENOMEM). */
static void req_fail(gwl_req_t *r, int err, const char *what)
{
    gw_error("#%" PRIu32 ": cannot encode %s: %s; abandoning the stream",
             r->stream, what, strerror(-err));
    req_cancel(r, 1, "worker-error");
}

static size_t req_queued(const gwl_req_t *r)
{
    return r->q_len - r->q_off;
}

static int req_queue(gwl_req_t *r, const void *data, size_t len)
{
    if (r->q_off > 0 && r->q_off == r->q_len) r->q_off = r->q_len = 0;
    if (r->q_len + len > r->q_cap) {
        if (r->q_off > 0) {        /* reclaim the sent prefix first */
            memmove(r->q, r->q + r->q_off, r->q_len - r->q_off);
            r->q_len -= r->q_off;
            r->q_off = 0;
        }
        if (r->q_len + len > r->q_cap) {
            size_t cap = r->q_cap ? r->q_cap : 4096;
            while (cap < r->q_len + len) cap *= 2;
            uint8_t *q = realloc(r->q, cap);
            if (q == NULL) {
                gw_error("#%" PRIu32 ": out of memory queueing %zu response bytes",
                         r->stream, len);
                return GWL_ERROR;
            }
            r->q = q;
            r->q_cap = cap;
        }
    }
    memcpy(r->q + r->q_len, data, len);
    r->q_len += len;
    return GWL_OK;
}

/* Build the gwp header array for r's response headers (+ one extra). */
static gwp_header_t *req_resp_headers(gwl_req_t *r, gwp_header_t *stack, size_t nstack,
                                      const gwp_header_t *extra, uint32_t *n)
{
    uint32_t total = r->rh_count + (extra ? 1 : 0);
    gwp_header_t *h = stack;
    if (total > nstack && (h = malloc(total * sizeof(*h))) == NULL) return NULL;
    uint32_t i = 0;
    if (extra) h[i++] = *extra;
    for (const char *p = r->rh, *end = r->rh + r->rh_len; p < end; i++) {
        rh_ent_t e;
        memcpy(&e, p, sizeof(e));
        p += sizeof(e);
        h[i].name.ptr = p;
        h[i].name.len = e.nl;
        p += e.nl;
        h[i].value.ptr = p;
        h[i].value.len = e.vl;
        p += e.vl;
    }
    *n = total;
    return h;
}

/* Encode the RESPONSE head of r with up to `take` queued body bytes. */
static int req_send_head(gwl_req_t *r, size_t take, int fin)
{
    gwp_header_t stack[GWL_STACK_HEADERS];
    gwp_response_t m;
    m.status = r->status;
    m.headers = req_resp_headers(r, stack, GWL_STACK_HEADERS, NULL, &m.nheaders);
    if (m.headers == NULL) return -ENOMEM;
    m.body.ptr = take ? (const char *)r->q + r->q_off : "";
    m.body.len = take;
    m.has_body = take > 0;
    size_t before = W.out.len;
    int rc = gwp_encode_response(&W.out, r->stream, fin ? GWP_F_END : 0, &m);
    if (rc == 0) rc = out_check_cap(before);
    if (m.headers != stack) free((void *)m.headers);
    return rc;
}

/*
 * Turn r's pending state into frames: the head (with as much queued body as
 * fits), body pieces within the credit, END once the app finished and the
 * queue is empty, and the request-body credit we owe unless the queued
 * response says to hold it.
 */
static void req_flush(gwl_req_t *r)
{
    int rc;
    if (W.chan_dead) return;
    if (r->state >= GWL_RS_HEAD && !r->head_sent) {
        size_t take = req_queued(r);
        if ((int64_t)take > r->send_credit) take = r->send_credit > 0 ? (size_t)r->send_credit : 0;
        if (take > W.max_data) take = W.max_data;
        int fin = r->state == GWL_RS_DONE && take == req_queued(r);
        if ((rc = req_send_head(r, take, fin)) != 0) { req_fail(r, rc, "RESPONSE"); return; }
        r->head_sent = 1;
        r->end_sent = (uint8_t)fin;
        r->send_credit -= take;
        r->q_off += take;
    }
    if (r->head_sent) {
        while (!r->end_sent && req_queued(r) > 0 && r->send_credit > 0) {
            size_t take = req_queued(r);
            if ((int64_t)take > r->send_credit) take = (size_t)r->send_credit;
            if (take > W.max_data) take = W.max_data;
            int fin = r->state == GWL_RS_DONE && take == req_queued(r);
            rc = gwp_encode_data(&W.out, GWP_MSG_RESP_BODY, r->stream, fin ? GWP_F_END : 0,
                                 r->q + r->q_off, take);
            if (rc != 0) { req_fail(r, rc, "RESP_BODY"); return; }
            r->send_credit -= take;
            r->q_off += take;
            r->end_sent = (uint8_t)fin;
        }
        if (!r->end_sent && r->state == GWL_RS_DONE && req_queued(r) == 0) {
            rc = gwp_encode_data(&W.out, GWP_MSG_RESP_BODY, r->stream, GWP_F_END, "", 0);
            if (rc != 0) { req_fail(r, rc, "RESP_BODY"); return; }
            r->end_sent = 1;
        }
        if (req_queued(r) == 0 && r->q_cap > 0) {   /* idle stream: give memory back */
            free(r->q);
            r->q = NULL;
            r->q_off = r->q_len = r->q_cap = 0;
        }
    }
    if (r->owed > 0 && !r->body_done && req_queued(r) <= W.window) {
        if ((rc = gwp_encode_window(&W.out, r->stream, r->owed)) != 0) {
            req_fail(r, rc, "WINDOW");
            return;
        }
        r->owed = 0;
    }
}

/* The flush pass: every request touched during this loop iteration. */
static void flush_dirty(void)
{
    gwl_req_t *r;
    while ((r = W.dirty) != NULL) {
        W.dirty = r->next_dirty;
        r->next_dirty = NULL;
        r->dirty = 0;
        if (!r->cancelled) req_flush(r);
        if (r->cancel_pending) {
            r->cancel_pending = 0;
            if (!r->cancel_called && r->state < GWL_RS_DONE) {
                r->cancel_called = 1;
                r->in_cb++;
                r->cancel_cb(r, r->cancel_data);
                r->in_cb--;
            }
        }
        req_maybe_free(r);
    }
}

/* Copy n bytes; most request strings are a few bytes long, so those go
 * as overlapping word moves instead of a memcpy call each. Reads stay in
 * [s, s + n). */
static inline void copy_bytes(char *d, const char *s, size_t n)
{
    if (n > 16) {
        memcpy(d, s, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8); memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8); memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4); memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4); memcpy(d + n - 4, &b, 4);
    } else if (n) {
        d[0] = s[0]; d[n / 2] = s[n / 2]; d[n - 1] = s[n - 1];
    }
}

static inline const char *copy_str(char **p, gwp_str_t s)
{
    char *d = *p;
    copy_bytes(d, s.ptr, s.len);
    d[s.len] = '\0';
    *p = d + s.len + 1;
    return d;
}

/* One allocation holds the request, its header array and every string.
 * Heads that fit a GWL_REQ_BLOCK reuse a freed block when there is one. */
static gwl_req_t *req_create(uint32_t stream, const gwp_request_t *m)
{
    const gwp_header_t *mh = m->headers;
    uint32_t nh = m->nheaders;
    size_t strs = m->method.len + m->target.len + m->path.len + m->query.len
                + m->peer.len + m->server.len + m->scheme.len + 7;
    for (uint32_t i = 0; i < nh; i++)
        strs += mh[i].name.len + mh[i].value.len + 2;
    size_t size = sizeof(gwl_req_t) + nh * sizeof(gwl_req_header_t) + strs;
    int pooled = size <= GWL_REQ_BLOCK;
    gwl_req_t *r;
    if (pooled && W.npool > 0) r = W.pool[--W.npool];
    else r = malloc(pooled ? GWL_REQ_BLOCK : size);
    if (r == NULL) {
        gw_error("#%" PRIu32 ": out of memory for a %zu-byte request", stream, size);
        return NULL;
    }
    memset(r, 0, offsetof(gwl_req_t, rh_inline));
    r->pooled = (uint8_t)pooled;
    r->stream = stream;
    r->http_minor = m->http_minor;
    r->keepalive = m->keepalive;
    r->content_length = m->content_length;
    r->send_credit = W.window;
    r->rh = r->rh_inline;
    r->rh_cap = GWL_RH_INLINE;
    gwl_req_header_t *h = (gwl_req_header_t *)(r + 1);
    r->headers = h;
    r->nheaders = nh;
    char *p = (char *)(h + nh);
    r->method = copy_str(&p, m->method);
    r->target = copy_str(&p, m->target);
    r->path = copy_str(&p, m->path);
    r->query = copy_str(&p, m->query);
    r->peer = copy_str(&p, m->peer);
    r->server = copy_str(&p, m->server);
    r->scheme = copy_str(&p, m->scheme);
    for (uint32_t i = 0; i < nh; i++) {
        h[i].name = copy_str(&p, mh[i].name);
        h[i].value = copy_str(&p, mh[i].value);
    }
    return r;
}

/* Cancel every live request (master gone, graceful budget spent). The
 * stream ids are collected first: cancel callbacks may finish and free
 * other requests. */
static void cancel_all(int notify, const char *reason)
{
    if (W.nreq == 0) return;
    uint32_t n = 0, *ids = malloc(W.nreq * sizeof(*ids));
    if (ids == NULL) return;
    for (uint32_t i = 0; i <= W.tab_mask && n < W.nreq; i++)
        if (W.tab[i].val) ids[n++] = W.tab[i].key;
    for (uint32_t i = 0; i < n; i++) {
        gwl_req_t *r = tab_get(ids[i]);
        if (r) req_cancel(r, notify, reason);
    }
    free(ids);
    flush_dirty();
}

/* ------------------------------------------------------------------ */
/* lifecycle */

static void begin_drain(uint32_t timeout_ms, const char *why)
{
    if (W.phase >= GWL_W_DRAIN) return;
    if (W.phase == GWL_W_HELLO) {     /* nothing started: just leave */
        W.phase = GWL_W_EXIT;
        ev_break(W.loop, EVBREAK_ALL);
        return;
    }
    gw_info("draining (%s): %" PRIu32 " requests in flight, %u tasks",
            why, W.active, gwl__pool_pending());
    W.phase = GWL_W_DRAIN;
    if (timeout_ms > 0) {
        ev_timer_set(&W.grace, timeout_ms / 1000.0, 0.);
        ev_timer_start(W.loop, &W.grace);
    }
}

/* Run the lifecycle hooks of kind in this worker (the --hooks registry's,
 * then the app's). */
static void run_hook(gwl_hook_kind_t kind, gwl_req_t *req, long arg)
{
    gwl_hook_info_t info = { .kind = kind, .slot = W.slot, .pid = (long)getpid(),
                             .arg = arg, .arg2 = 0, .req = req };
    gwl__hooks_run(W.app, &info);
}

static void exit_now(int code)
{
    W.phase = GWL_W_EXIT;
    W.exit_code = code;
    ev_break(W.loop, EVBREAK_ALL);
}

/* Master gone (EOF, reset, write error): nobody can take a response. */
static void chan_broken(void)
{
    if (W.chan_dead) return;
    W.chan_dead = 1;
    W.out.len = 0;
    ev_io_stop(W.loop, &W.rio);
    ev_io_stop(W.loop, &W.wio);
    ev_timer_stop(W.loop, &W.hb);
    cancel_all(0, NULL);
    begin_drain(GWL_TERM_GRACE_MS, "master gone");
}

static void on_grace_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    gw_warn("graceful timeout: giving up on %" PRIu32 " requests and %u tasks",
            W.active, gwl__pool_pending());
    cancel_all(1, "shutdown");
    exit_now(GWL_EXIT_OK);
    W.graceful = 1;
}

/* In-flight work that graceful exit waits for. Cancelled requests the app
 * never finishes do not count: nothing can come of them. */
static int drained(void)
{
    return W.nreq == W.ncancelled && gwl__pool_pending() == 0;
}

static void rss_read(uint64_t *rss)
{
    char buf[128];
    *rss = 0;
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    unsigned long size, resident;
    if (sscanf(buf, "%lu %lu", &size, &resident) == 2)
        *rss = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
    gwp_heartbeat_t hb = {
        .served = W.served,
        .inflight = W.active,
        .tasks = gwl_background_count(),
        .loop = { W.loop_id, strlen(W.loop_id) },
    };
    rss_read(&hb.rss);
    if (gwp_encode_heartbeat(&W.out, &hb) != 0) gw_error("cannot encode HEARTBEAT");
}

/* ------------------------------------------------------------------ */
/* incoming frames */

static void drop_frame(const gwp_msg_t *m, const char *why)
{
    W.dropped++;
    gw_debug("dropped %s on stream %" PRIu32 " (%s); %" PRIu64 " dropped so far",
             gwp_type_name(m->frame.type), m->frame.stream, why, W.dropped);
}

static void boot_fail(const char *why)
{
    gw_error("start-up failed: %s", why);
    send_error(why, GWL_EXIT_BOOT);
    exit_now(GWL_EXIT_BOOT);
}

static void on_hello(const gwp_hello_t *h)
{
    char err[512];
    if (W.phase != GWL_W_HELLO) {
        gw_warn("second HELLO ignored");
        return;
    }
    if (h->version != GWP_VERSION) {
        snprintf(err, sizeof(err), "protocol version %" PRIu32 " from the master, worker speaks %d",
                 h->version, GWP_VERSION);
        gw_error("%s", err);
        send_error(err, GWL_EXIT_PROTO);
        exit_now(GWL_EXIT_PROTO);
        return;
    }
    W.window = h->window ? h->window : GWP_DEFAULT_WINDOW;
    W.peer_cap = (h->max_payload && h->max_payload < GWP_MAX_PAYLOAD) ? h->max_payload
                                                                     : GWP_MAX_PAYLOAD;
    W.max_data = GWP_MAX_DATA;
    if (W.max_data + 64 > W.peer_cap) W.max_data = W.peer_cap > 128 ? W.peer_cap - 64 : 64;
    W.heartbeat_ms = h->heartbeat_ms;

    /* Without a path the registry was filled in-process (preloaded, or
     * built through the public API by an embedding program or a test). */
    if (!gwl__app_loaded(W.app) && W.app_path != NULL
        && gwl__app_load(W.app, W.app_path, W.app_symbol, err, sizeof(err)) != GWL_OK) {
        boot_fail(err);
        return;
    }
    gwl__app_handler(W.app, &W.on_request, &W.on_request_data);
    if (W.on_request == NULL) {
        boot_fail("the app registered no request handler (gwl_on_request)");
        return;
    }
    if (gwl__pool_init(W.loop, gwl__app_threads(W.app)) != GWL_OK) {
        boot_fail("cannot set up the offload pool");
        return;
    }
    if (gwl__app_run_hooks(W.app, 1, err, sizeof(err)) != GWL_OK) {
        boot_fail(err);
        return;
    }

    run_hook(GWL_HOOK_POST_WORKER_INIT, NULL, 0);

    gwp_ready_t ready = {
        .version = GWP_VERSION,
        .pid = getpid(),
        .runtime = { "native", 6 },
        .loop = { W.loop_id, strlen(W.loop_id) },
    };
    if (gwp_encode_ready(&W.out, &ready) != 0) {
        boot_fail("cannot encode READY");
        return;
    }
    W.ready_sent = 1;
    W.phase = GWL_W_RUN;
    if (W.heartbeat_ms > 0) {
        ev_timer_set(&W.hb, W.heartbeat_ms / 1000.0, W.heartbeat_ms / 1000.0);
        ev_timer_start(W.loop, &W.hb);
    }
    gw_info("ready: slot %d, generation %" PRIu32 ", window %" PRIu32 ", loop %s",
            W.slot, h->generation, W.window, W.loop_id);
}

static void on_request(uint32_t s, uint16_t flags, const gwp_request_t *m)
{
    if (W.phase != GWL_W_RUN) {
        /* Draining: the master should not send any; give it back. */
        gw_warn("#%" PRIu32 ": REQUEST while draining, refused", s);
        send_cancel(s, "shutdown");
        return;
    }
    if (tab_get(s) != NULL) {
        W.dropped++;
        gw_warn("#%" PRIu32 ": REQUEST for a stream already open, dropped", s);
        return;
    }
    gwl_req_t *r = req_create(s, m);
    if (r == NULL || tab_put(s, r) != GWL_OK) {
        if (r) gw_error("#%" PRIu32 ": out of memory for the stream table", s);
        free(r);
        send_cancel(s, "worker-error");
        return;
    }
    r->body_done = (flags & GWP_F_END) != 0;
    W.nreq++;
    W.active++;
    r->in_cb++;
    run_hook(GWL_HOOK_PRE_REQUEST, r, 0);
    W.on_request(r, W.on_request_data);
    r->in_cb--;
    req_maybe_free(r);
}

static void on_body(gwl_req_t *r, uint16_t flags, const gwp_data_t *d)
{
    int last = (flags & GWP_F_END) != 0;
    if (r->body_done) {
        W.dropped++;
        gw_warn("#%" PRIu32 ": BODY after the request body ended, dropped", r->stream);
        return;
    }
    if (last) r->body_done = 1;
    /* After the app finished it must not see the request again: the rest
     * of the body is read and discarded. */
    if (r->body_cb && r->state < GWL_RS_DONE) {
        r->in_cb++;
        r->body_cb(r, d->data.ptr, d->data.len, last, r->body_data);
        r->in_cb--;
    }
    if (!last && d->data.len > 0 && !r->cancelled) {
        r->owed += (uint32_t)d->data.len;
        req_mark(r);
    }
    req_maybe_free(r);
}

/* One decoded frame from the master. */
static void dispatch(const gwp_msg_t *m)
{
    uint32_t s = m->frame.stream;
    gwl_req_t *r;

    if (W.phase == GWL_W_HELLO && m->frame.type != GWP_MSG_HELLO
        && m->frame.type != GWP_MSG_QUIT) {
        char err[128];
        snprintf(err, sizeof(err), "%s before HELLO", gwp_type_name(m->frame.type));
        gw_error("protocol error: %s", err);
        send_error(err, GWL_EXIT_PROTO);
        exit_now(GWL_EXIT_PROTO);
        return;
    }

    switch (m->frame.type) {
    case GWP_MSG_HELLO:
        on_hello(&m->u.hello);
        return;
    case GWP_MSG_REQUEST:
        on_request(s, m->frame.flags, &m->u.request);
        return;
    case GWP_MSG_BODY:
        if ((r = tab_get(s)) == NULL) { drop_frame(m, "unknown stream"); return; }
        if (r->cancelled) { drop_frame(m, "cancelled stream"); return; }
        on_body(r, m->frame.flags, &m->u.data);
        return;
    case GWP_MSG_WINDOW:
        if ((r = tab_get(s)) == NULL) { drop_frame(m, "unknown stream"); return; }
        if (r->cancelled) { drop_frame(m, "cancelled stream"); return; }
        r->send_credit += m->u.window.bytes;
        req_mark(r);
        return;
    case GWP_MSG_CANCEL:
        if ((r = tab_get(s)) == NULL) { drop_frame(m, "unknown stream"); return; }
        if (r->cancelled) { drop_frame(m, "cancelled stream"); return; }
        gw_debug("#%" PRIu32 ": cancelled by the master (%.*s)", s,
                 (int)m->u.cancel.reason.len, m->u.cancel.reason.ptr);
        req_cancel(r, 0, NULL);
        return;
    case GWP_MSG_QUIT:
        if (m->u.quit.graceful) {
            begin_drain(m->u.quit.timeout_ms, "QUIT");
        } else {
            gw_info("quit now (QUIT)");
            exit_now(GWL_EXIT_OK);
        }
        return;
    default:
        drop_frame(m, "not a master-to-worker message");
        return;
    }
}

/* Decode every whole frame in the read buffer. Returns GWL_ERROR on a
 * protocol error (the worker is exiting). */
static int chan_process(void)
{
    size_t off = 0;
    int rc = GWL_OK;
    while (off < W.rlen && W.phase != GWL_W_EXIT) {
        gwp_msg_t m;
        const char *why = NULL;
        ssize_t n = gwp_decode(&W.dec, W.rbuf + off, W.rlen - off, &m, &why);
        if (n == GWP_AGAIN) break;
        if (n < 0) {
            char err[160];
            snprintf(err, sizeof(err), "bad frame from the master: %s", why ? why : "?");
            gw_error("protocol error: %s", err);
            send_error(err, GWL_EXIT_PROTO);
            exit_now(GWL_EXIT_PROTO);
            rc = GWL_ERROR;
            break;
        }
        off += (size_t)n;
        dispatch(&m);
    }
    if (off == W.rlen) {
        W.rlen = 0;
    } else if (off > 0) {
        memmove(W.rbuf, W.rbuf + off, W.rlen - off);
        W.rlen -= off;
    }
    /* A frame larger than the buffer: grow to hold it (the decoder's cap
     * bounds the size). */
    if (rc == GWL_OK && W.rlen >= GWP_HEADER_SIZE) {
        gwp_frame_t f;
        const char *why;
        if (gwp_frame_peek(&W.dec, W.rbuf, W.rlen, &f, &why) == GWP_OK
            && GWP_HEADER_SIZE + (size_t)f.length > W.rcap) {
            size_t cap = GWP_HEADER_SIZE + (size_t)f.length;
            uint8_t *nb = realloc(W.rbuf, cap);
            if (nb == NULL) {
                gw_error("out of memory for a %zu-byte frame", cap);
                exit_now(GWL_EXIT_PROTO);
                return GWL_ERROR;
            }
            W.rbuf = nb;
            W.rcap = cap;
        }
    }
    return rc;
}

static void chan_on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    /* A few reads per wakeup: enough to drain a burst, bounded so output
     * and timers get their turn. */
    for (int i = 0; i < 4 && W.phase != GWL_W_EXIT && !W.chan_dead; i++) {
        size_t room = W.rcap - W.rlen;
        if (room == 0) return;      /* cannot happen: chan_process grows rbuf */
        ssize_t n = read(W.fd, W.rbuf + W.rlen, room);
        if (n > 0) {
            W.rlen += (size_t)n;
            if (chan_process() != GWL_OK) return;
            if ((size_t)n < room) return;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n == 0) gw_info("channel closed by the master");
        else gw_error("channel read failed: %s", strerror(errno));
        if (W.phase == GWL_W_HELLO) {
            W.chan_dead = 1;
            exit_now(GWL_EXIT_OK);
            return;
        }
        chan_broken();
        return;
    }
}

static void chan_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    chan_flush();
}

/* Once per loop iteration, before blocking: turn the iteration's response
 * work into frames, write the channel once, and see whether draining is
 * over. */
static void loop_on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    flush_dirty();
    if (W.phase == GWL_W_DRAIN && drained()) {
        exit_now(GWL_EXIT_OK);
        W.graceful = 1;
    }
    if (W.out.len > 0 && !W.chan_dead && !ev_is_active(&W.wio)) chan_flush();
}

/* ------------------------------------------------------------------ */
/* signals: the handler only records intent and wakes the loop */

static void worker_on_signal(int signo)
{
    if (signo == SIGTERM) W.sig_term = 1;
    else if (signo == SIGINT) W.sig_int = 1;
    else W.sig_quit = 1;
    ev_async_send(W.loop, &W.sig);
}

static void loop_on_signal(struct ev_loop *loop, ev_async *w, int revents)
{
    if (W.sig_int) {
        /* Ctrl-C hits the whole group: the master decides; only the
         * worker_int hooks run here. */
        W.sig_int = 0;
        run_hook(GWL_HOOK_WORKER_INT, NULL, SIGINT);
    }
    if (W.sig_quit) {
        if (W.sig_quit == 1) {
            W.sig_quit = 2;
            run_hook(GWL_HOOK_WORKER_INT, NULL, SIGQUIT);
        }
        gw_info("quit now (SIGQUIT)");
        exit_now(GWL_EXIT_OK);
        return;
    }
    if (W.sig_term) {
        W.sig_term = 0;
        begin_drain(GWL_TERM_GRACE_MS, "SIGTERM");
    }
}

/* libev's ev_signal keeps process-global state that the master's default
 * loop owns in the copy we were forked from; a plain handler plus ev_async
 * avoids depending on it. */
/* SIGABRT (the master's WORKER TIMEOUT, or abort()): the loop may be stuck,
 * so the worker_abort hooks run right here, in the handler (they must be
 * async-signal-safe); then the default action ends the process with SIGABRT
 * (SA_RESETHAND restored it; the re-raised signal is delivered on return). */
static void worker_on_abort(int signo)
{
    int saved = errno;
    run_hook(GWL_HOOK_WORKER_ABORT, NULL, signo);
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
    errno = saved;
}

static void signals_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = worker_on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    /* Ctrl-C hits the group; the master decides. The worker keeps running
     * and only its worker_int hooks see it. */
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = worker_on_abort;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGABRT, &sa, NULL);
}

static void signals_done(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGINT, &sa, NULL);
}

static const char *backend_name(unsigned b)
{
    switch (b) {
    case EVBACKEND_SELECT:   return "select";
    case EVBACKEND_POLL:     return "poll";
    case EVBACKEND_EPOLL:    return "epoll";
    case EVBACKEND_KQUEUE:   return "kqueue";
    case EVBACKEND_DEVPOLL:  return "devpoll";
    case EVBACKEND_PORT:     return "port";
#ifdef EVBACKEND_LINUXAIO
    case EVBACKEND_LINUXAIO: return "linuxaio";
#endif
#ifdef EVBACKEND_IOURING
    case EVBACKEND_IOURING:  return "iouring";
#endif
    default:                 return "unknown";
    }
}

/* ------------------------------------------------------------------ */
/* entry point */

int gwl__worker_main(gwl_app_t *app, int chan_fd, const gwl__worker_opts_t *opts)
{
    char role[32];
    int code;

    memset(&W, 0, sizeof(W));
    W.app = app;
    W.fd = chan_fd;
    W.slot = opts ? opts->slot : 0;
    W.app_path = opts ? opts->app_path : NULL;
    W.app_symbol = opts && opts->app_symbol ? opts->app_symbol : GWL_DEFAULT_SYMBOL;
    W.window = GWP_DEFAULT_WINDOW;
    W.peer_cap = GWP_MAX_PAYLOAD;
    W.max_data = GWP_MAX_DATA;
    snprintf(role, sizeof(role), "worker %d", W.slot);
    gw_log_set_role(role);
    gwp_buf_init(&W.out);
    gwp_decoder_init(&W.dec, 0);

    if (app == NULL) {
        gw_error("no app registry given");
        send_error("no app registry given", GWL_EXIT_BOOT);
        goto boot_fail_early;
    }
    W.loop = ev_loop_new(EVFLAG_AUTO);
    if (W.loop == NULL) {
        gw_error("ev_loop_new failed");
        send_error("cannot create the worker's event loop", GWL_EXIT_BOOT);
        goto boot_fail_early;
    }
    W.rcap = GWL_RBUF_SIZE;
    W.rbuf = malloc(W.rcap);
    W.tab_mask = 63;
    W.tab = calloc(W.tab_mask + 1, sizeof(*W.tab));
    if (W.rbuf == NULL || W.tab == NULL) {
        gw_error("out of memory setting up the worker");
        send_error("out of memory setting up the worker", GWL_EXIT_BOOT);
        goto boot_fail_early;
    }

    /* Unique per loop even across forks (same heap addresses in every
     * child): backend, address, pid and the creation time. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(W.loop_id, sizeof(W.loop_id), "ev:%s:%p:%ld:%lld%09ld",
             backend_name(ev_backend(W.loop)), (void *)W.loop, (long)getpid(),
             (long long)ts.tv_sec, (long)ts.tv_nsec);

    ev_io_init(&W.rio, chan_on_readable, W.fd, EV_READ);
    ev_io_init(&W.wio, chan_on_writable, W.fd, EV_WRITE);
    ev_prepare_init(&W.prep, loop_on_prepare);
    ev_async_init(&W.sig, loop_on_signal);
    ev_timer_init(&W.hb, on_heartbeat, 1., 1.);
    ev_timer_init(&W.grace, on_grace_timeout, 1., 0.);
    ev_io_start(W.loop, &W.rio);
    ev_prepare_start(W.loop, &W.prep);
    ev_async_start(W.loop, &W.sig);
    signals_init();
    W.phase = GWL_W_HELLO;

    ev_run(W.loop, 0);

    code = W.exit_code;
    if (W.graceful) {
        /* Requests still here are cancelled ones the app never finished. */
        char err[8];
        gwl__app_run_hooks(W.app, 0, err, sizeof(err));
        gw_info("exiting: %" PRIu64 " requests served", W.served);
    }
    run_hook(GWL_HOOK_WORKER_EXIT, NULL, code);
    /* No flush_dirty() here: the drain ended right after one, and an
     * immediate quit runs no more app code. Graceful, boot and protocol exits make sure their last frames
     * (responses, ERROR) reach the master; an immediate quit tries once. */
    if (!W.chan_dead)
        chan_flush_blocking(W.graceful || code != GWL_EXIT_OK ? GWL_FINAL_FLUSH_MS : 0);
    goto out;

boot_fail_early:
    chan_flush_blocking(GWL_FINAL_FLUSH_MS);
    code = GWL_EXIT_BOOT;

out:
    signals_done();
    /* Free what is left (exit with cancelled or unfinished requests). */
    while (W.tab && W.nreq > 0) {
        uint32_t i = 0;
        while (W.tab[i].val == NULL) i++;
        req_free(W.tab[i].val);
    }
    while (W.npool > 0) free(W.pool[--W.npool]);
    gwl__pool_done();
    if (W.loop) ev_loop_destroy(W.loop);
    free(W.tab);
    free(W.rbuf);
    gwp_buf_free(&W.out);
    gwp_decoder_done(&W.dec);
    memset(&W, 0, sizeof(W));
    W.slot = -1;
    W.fd = -1;
    return code;
}

/* ------------------------------------------------------------------ */
/* public API: the worker */

struct ev_loop *gwl_loop(void)
{
    return W.loop;
}

int gwl_worker_slot(void)
{
    return W.loop ? W.slot : -1;
}

const char *gwl_loop_id(void)
{
    return W.loop ? W.loop_id : NULL;
}

uint64_t gwl_worker_served(void)
{
    return W.served;
}

void gwl_log(const char *level, const char *fmt, ...)
{
    int l = level ? gw_log_level_parse(level) : -1;
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(l < 0 ? GW_LOG_INFO : (gw_log_level_t)l, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* public API: the request */

const char *gwl_req_method(const gwl_req_t *req) { return req->method; }
const char *gwl_req_target(const gwl_req_t *req) { return req->target; }
const char *gwl_req_path(const gwl_req_t *req)   { return req->path; }
const char *gwl_req_query(const gwl_req_t *req)  { return req->query; }
const char *gwl_req_peer(const gwl_req_t *req)   { return req->peer; }
const char *gwl_req_server(const gwl_req_t *req) { return req->server; }
const char *gwl_req_scheme(const gwl_req_t *req) { return req->scheme; }
int     gwl_req_http_minor(const gwl_req_t *req) { return req->http_minor; }
int     gwl_req_keepalive(const gwl_req_t *req)  { return req->keepalive; }
int64_t gwl_req_content_length(const gwl_req_t *req) { return req->content_length; }
size_t  gwl_req_header_count(const gwl_req_t *req)   { return req->nheaders; }
int     gwl_req_cancelled(const gwl_req_t *req) { return req->cancelled; }
void    gwl_req_set_data(gwl_req_t *req, void *data) { req->data = data; }
void   *gwl_req_data(const gwl_req_t *req) { return req->data; }
uint32_t gwl_req_id(const gwl_req_t *req) { return req->stream; }

int gwl_req_header_at(const gwl_req_t *req, size_t i, const char **name, const char **value)
{
    if (i >= req->nheaders) return GWL_ERROR;
    if (name) *name = req->headers[i].name;
    if (value) *value = req->headers[i].value;
    return GWL_OK;
}

const char *gwl_req_header(const gwl_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}

int gwl_req_read_body(gwl_req_t *req, gwl_body_cb cb, void *data)
{
    if (req->state == GWL_RS_DONE) {
        gw_error("#%" PRIu32 ": gwl_req_read_body after the response was finished", req->stream);
        return GWL_ERROR;
    }
    int had = req->body_cb != NULL;
    req->body_cb = cb;
    req->body_data = data;
    /* The body already ended (or never existed): say so once, now, so a
     * reader does not wait for a last call that cannot come. */
    if (!had && cb && req->body_done && !req->cancelled) {
        req->in_cb++;
        cb(req, "", 0, 1, data);
        req->in_cb--;
    }
    return GWL_OK;
}

int gwl_req_on_cancel(gwl_req_t *req, gwl_cancel_cb cb, void *data)
{
    req->cancel_cb = cb;
    req->cancel_data = data;
    return GWL_OK;
}

/* ------------------------------------------------------------------ */
/* public API: the response */

static const char *const rs_names[] = { "not started", "started", "sending its body", "finished" };

static int misuse(const gwl_req_t *req, const char *call)
{
    gw_error("#%" PRIu32 ": %s refused: the response is %s", req->stream, call,
             rs_names[req->state]);
    return GWL_ERROR;
}

/* The app finished r: count it and let the flush pass send the END. */
static void req_finish(gwl_req_t *r)
{
    r->state = GWL_RS_DONE;
    W.active--;
    W.served++;
    run_hook(GWL_HOOK_POST_REQUEST, r, r->status);
    if (r->cancelled) req_maybe_free(r);
    else req_mark(r);
}

/*
 * Header name/value check, eight bytes at a time. A value may not contain
 * CR or LF (response splitting); a name may not be empty or contain
 * controls, space, ':', DEL or non-ASCII bytes. Each test below is the
 * exact "some byte of v is zero / less than n (n <= 128)" word trick, so
 * the OR of them is exact for the word as a whole.
 */
#define B8(c) (0x0101010101010101ull * (uint8_t)(c))

static inline uint64_t zero_byte(uint64_t v)
{
    return (v - B8(1)) & ~v & B8(0x80);
}

static inline __attribute__((always_inline)) uint64_t bad_bytes(uint64_t v, int is_name)
{
    if (is_name)
        return ((v - B8(0x21)) & ~v & B8(0x80))           /* < 0x21: CTLs, SP */
             | zero_byte(v ^ B8(':')) | zero_byte(v ^ B8(0x7f)) | (v & B8(0x80));
    return zero_byte(v ^ B8('\r')) | zero_byte(v ^ B8('\n'));
}

/* strlen(s), or -1 if s may not go out as a header name / value. */
static inline __attribute__((always_inline)) ssize_t header_len(const char *s, int is_name)
{
    size_t n = strlen(s);
    uint64_t v, bad = 0;
    if (n >= 8) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&v, s + i, 8);
            bad |= bad_bytes(v, is_name);
        }
        if (i < n) {                    /* tail: the last 8 bytes again */
            memcpy(&v, s + n - 8, 8);
            bad |= bad_bytes(v, is_name);
        }
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4); memcpy(&b, s + n - 4, 4);
        bad = bad_bytes((uint64_t)a | (uint64_t)b << 32, is_name);
    } else if (n > 0) {                 /* padded with 'a', valid for both */
        v = (B8('a') & ~(uint64_t)0xffffff) | (uint8_t)s[0]
            | (uint64_t)(uint8_t)s[n / 2] << 8 | (uint64_t)(uint8_t)s[n - 1] << 16;
        bad = bad_bytes(v, is_name);
    } else if (is_name) {
        return -1;
    }
    return bad ? -1 : (ssize_t)n;
}

static int rh_append(gwl_req_t *r, const char *name, size_t nl, const char *value, size_t vl)
{
    size_t need = (size_t)r->rh_len + sizeof(rh_ent_t) + nl + vl;
    if (r->rh_count + 2 > GWP_MAX_HEADERS || need > GWP_MAX_PAYLOAD) {
        gw_error("#%" PRIu32 ": too many response headers", r->stream);
        return GWL_ERROR;
    }
    if (need > r->rh_cap) {
        size_t cap = (size_t)r->rh_cap * 2;
        while (cap < need) cap *= 2;
        char *nb = malloc(cap);
        if (nb == NULL) {
            gw_error("#%" PRIu32 ": out of memory for response headers", r->stream);
            return GWL_ERROR;
        }
        memcpy(nb, r->rh, r->rh_len);
        if (r->rh != r->rh_inline) free(r->rh);
        r->rh = nb;
        r->rh_cap = (uint32_t)cap;
    }
    char *p = r->rh + r->rh_len;
    rh_ent_t e = { (uint32_t)nl, (uint32_t)vl };
    memcpy(p, &e, sizeof(e));
    copy_bytes(p + sizeof(e), name, nl);
    copy_bytes(p + sizeof(e) + nl, value, vl);
    r->rh_len = (uint32_t)need;
    r->rh_count++;
    return GWL_OK;
}

int gwl_respond(gwl_req_t *req, int status, const char *content_type,
                const void *body, size_t len)
{
    if (req->state != GWL_RS_NEW) return misuse(req, "gwl_respond");
    if (status < 100 || status > 999) {
        gw_error("#%" PRIu32 ": gwl_respond: bad status %d", req->stream, status);
        return GWL_ERROR;
    }
    ssize_t ctl = content_type ? header_len(content_type, 0) : 0;
    if (ctl < 0) {
        gw_error("#%" PRIu32 ": gwl_respond: bad Content-Type", req->stream);
        return GWL_ERROR;
    }
    if (body == NULL) len = 0;
    req->status = (uint16_t)status;
    if (req->cancelled || W.chan_dead) {
        req_finish(req);
        return GWL_OK;
    }

    /* Fast path: the whole response fits the credit and one frame. */
    if ((int64_t)len <= req->send_credit && len <= W.max_data) {
        gwp_header_t stack[GWL_STACK_HEADERS];
        gwp_header_t ct = { { "Content-Type", 12 }, { content_type, (size_t)ctl } };
        gwp_response_t m;
        m.status = (uint32_t)status;
        m.headers = req_resp_headers(req, stack, GWL_STACK_HEADERS,
                                     content_type ? &ct : NULL, &m.nheaders);
        if (m.headers == NULL) {
            gw_error("#%" PRIu32 ": out of memory for response headers", req->stream);
            return GWL_ERROR;
        }
        m.body.ptr = len ? body : "";
        m.body.len = len;
        m.has_body = len > 0;
        size_t before = W.out.len;
        int rc = gwp_encode_response(&W.out, req->stream, GWP_F_END, &m);
        if (rc == 0) rc = out_check_cap(before);
        if (m.headers != stack) free((void *)m.headers);
        if (rc != 0) {
            req_finish(req);
            req_fail(req, rc, "RESPONSE");
            return GWL_ERROR;
        }
        req->head_sent = 1;
        req->end_sent = 1;
        req->send_credit -= (int64_t)len;
        req->state = GWL_RS_DONE;
        W.active--;
        W.served++;
        run_hook(GWL_HOOK_POST_REQUEST, req, req->status);
        req_maybe_free(req);
        return GWL_OK;
    }

    /* Slow path: queue it all; the flush pass splits it within the credit. */
    if ((content_type && rh_append(req, "Content-Type", 12, content_type, (size_t)ctl) != GWL_OK)
        || (len && req_queue(req, body, len) != GWL_OK)) {
        req_finish(req);
        req_fail(req, -ENOMEM, "RESPONSE");
        return GWL_ERROR;
    }
    req_finish(req);
    return GWL_OK;
}

int gwl_resp_start(gwl_req_t *req, int status)
{
    if (req->state != GWL_RS_NEW) return misuse(req, "gwl_resp_start");
    if (status < 100 || status > 999) {
        gw_error("#%" PRIu32 ": gwl_resp_start: bad status %d", req->stream, status);
        return GWL_ERROR;
    }
    req->status = (uint16_t)status;
    req->state = GWL_RS_HEAD;
    /* The head goes out at the end of this loop iteration even if nothing
     * else is written (a slow stream shows its headers at once). */
    if (!req->cancelled) req_mark(req);
    return GWL_OK;
}

int gwl_resp_header(gwl_req_t *req, const char *name, const char *value)
{
    if (req->state > GWL_RS_HEAD || req->head_sent) return misuse(req, "gwl_resp_header");
    ssize_t nl, vl;
    if (name == NULL || value == NULL || (nl = header_len(name, 1)) < 0
        || (vl = header_len(value, 0)) < 0) {
        gw_error("#%" PRIu32 ": gwl_resp_header: invalid name or value", req->stream);
        return GWL_ERROR;
    }
    if (req->cancelled) return GWL_OK;
    return rh_append(req, name, (size_t)nl, value, (size_t)vl);
}

int gwl_resp_write(gwl_req_t *req, const void *data, size_t len)
{
    if (req->state < GWL_RS_HEAD || req->state == GWL_RS_DONE)
        return misuse(req, "gwl_resp_write");
    req->state = GWL_RS_BODY;
    if (req->cancelled || W.chan_dead || len == 0) return GWL_OK;

    /* Head out and nothing waiting: encode straight into the channel
     * buffer, one copy, as far as the credit goes. */
    const uint8_t *p = data;
    if (req->head_sent && req_queued(req) == 0) {
        while (len > 0 && req->send_credit > 0) {
            size_t take = len;
            if ((int64_t)take > req->send_credit) take = (size_t)req->send_credit;
            if (take > W.max_data) take = W.max_data;
            int rc = gwp_encode_data(&W.out, GWP_MSG_RESP_BODY, req->stream, 0, p, take);
            if (rc != 0) {
                req_fail(req, rc, "RESP_BODY");
                return GWL_ERROR;
            }
            req->send_credit -= (int64_t)take;
            p += take;
            len -= take;
        }
        if (len == 0) return GWL_OK;
    }
    if (req_queue(req, p, len) != GWL_OK) {
        req_fail(req, -ENOMEM, "RESP_BODY");
        return GWL_ERROR;
    }
    req_mark(req);
    return GWL_OK;
}

int gwl_resp_finish(gwl_req_t *req)
{
    if (req->state < GWL_RS_HEAD || req->state == GWL_RS_DONE)
        return misuse(req, "gwl_resp_finish");
    req_finish(req);
    return GWL_OK;
}

size_t gwl_resp_queued(const gwl_req_t *req)
{
    return req_queued(req);
}
