/*
 * check_worker.c - workerlib end to end over a real channel: each test
 * forks a worker (gwl__worker_main on one end of a socketpair, with an
 * in-test app registered through the public API) and plays the master on
 * the other end with the gwp codec. App callbacks and hooks report what
 * they saw through a pipe (evp), so ordering across the processes can be
 * checked.
 */
#include "check_main.h"

#include "gwl_int.h"
#include "gwp.h"

#include <dlfcn.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TMO 3000   /* ms to wait for one expected frame */

/* LeakSanitizer, when built with it: the worker child leaves with _exit(). */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static int evp[2] = { -1, -1 };   /* app -> test: event characters */

static void ev_note(const char *s)
{
    ssize_t n = write(evp[1], s, strlen(s));
    (void)n;
}

/* Everything noted so far, waiting up to ms for at least `want` bytes. */
static char *ev_read(size_t want, int ms)
{
    static char buf[4096];
    size_t len = 0;
    int waited = 0;
    for (;;) {
        struct pollfd p = { .fd = evp[0], .events = POLLIN };
        int t = (len >= want) ? 0 : (ms - waited > 0 ? 10 : 0);
        if (poll(&p, 1, t) > 0) {
            ssize_t n = read(evp[0], buf + len, sizeof(buf) - 1 - len);
            if (n > 0) { len += (size_t)n; continue; }
        }
        if (len >= want || waited >= ms) break;
        waited += 10;
    }
    buf[len] = '\0';
    return buf;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ------------------------------------------------------------------ */
/* the in-test app */

static pthread_t loop_thread;

static int hook_a(void *d) { (void)d; ev_note(gwl_loop() && gwl_loop_id() ? "A" : "a"); return 0; }
static int hook_b(void *d) { (void)d; loop_thread = pthread_self(); ev_note("B"); return 0; }
static int hook_x(void *d) { (void)d; ev_note("X"); return 0; }
static int hook_y(void *d) { (void)d; ev_note("Y"); return 0; }
static int hook_fail(void *d) { (void)d; ev_note("F"); return 7; }

static long qnum(const gwl_req_t *req, const char *name, long def)
{
    const char *q = gwl_req_query(req), *p = strstr(q, name);
    return p && p[strlen(name)] == '=' ? atol(p + strlen(name) + 1) : def;
}

typedef struct {
    ev_timer   t;
    gwl_req_t *req;
} later_t;

/* Timers still pending when a test makes the worker exit stay reachable
 * from here, so LeakSanitizer in the worker child does not flag them. */
static later_t *later_keep[64];
static unsigned later_nkeep;

static void later_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    later_t *l = (later_t *)w;
    ev_note(gwl_req_cancelled(l->req) ? "L" : "l");
    /* Deliberately answers even when cancelled: this is the late reply
     * that must never reach the channel. */
    gwl_respond(l->req, 200, "text/plain", "late", 4);
    free(l);
}

/* Without keep=1 the app behaves: stops its timer and finishes. With it,
 * the timer is left to fire and answer after the cancel. */
static void later_on_cancel(gwl_req_t *req, void *arg)
{
    later_t *l = arg;
    ev_note("C");
    if (qnum(req, "keep", 0)) return;
    ev_timer_stop(gwl_loop(), &l->t);
    ck_assert_int_eq(gwl_respond(req, 499, NULL, NULL, 0), GWL_OK);
    free(l);
}

static void echo_on_body(gwl_req_t *req, const char *data, size_t len, int last, void *arg)
{
    if (len) ck_assert_int_eq(gwl_resp_write(req, data, len), GWL_OK);
    if (last) gwl_resp_finish(req);
}

static void echo_on_cancel(gwl_req_t *req, void *arg)
{
    ev_note("E");
    gwl_resp_finish(req);
}

typedef struct {
    gwl_req_t *req;
    int        other_thread;
} off_t_;

static void off_work(void *arg)
{
    off_t_ *o = arg;
    o->other_thread = !pthread_equal(pthread_self(), loop_thread);
    usleep(20000);
}

static void off_done(void *arg)
{
    off_t_ *o = arg;
    char body[32];
    int n = snprintf(body, sizeof(body), "offloaded:%d:%d", o->other_thread,
                     pthread_equal(pthread_self(), loop_thread));
    gwl_respond(o->req, 200, NULL, body, (size_t)n);
    free(o);
}

static void bg_work(void *arg) { usleep(300000); }
static void bg_done(void *arg) { ev_note("b"); }

static void app_on_request(gwl_req_t *req, void *data)
{
    const char *path = gwl_req_path(req);
    if (strcmp(path, "/hello") == 0) {
        gwl_resp_header(req, "X-Test", "1");
        gwl_respond(req, 200, "text/plain", "hello", 5);
    } else if (strcmp(path, "/info") == 0) {
        char body[1024];
        const char *n0 = "", *v0 = "";
        gwl_req_header_at(req, 0, &n0, &v0);
        const char *xa = gwl_req_header(req, "x-a");
        int n = snprintf(body, sizeof(body), "%s|%s|%s|%s|%s|%s|%s|%d|%lld|%d|%zu|%s=%s|%s|%d",
                         gwl_req_method(req), gwl_req_target(req), gwl_req_path(req),
                         gwl_req_query(req), gwl_req_peer(req), gwl_req_server(req),
                         gwl_req_scheme(req), gwl_req_http_minor(req),
                         (long long)gwl_req_content_length(req), gwl_req_keepalive(req),
                         gwl_req_header_count(req), n0, v0, xa ? xa : "(null)",
                         gwl_req_header_at(req, 99, NULL, NULL));
        gwl_respond(req, 200, NULL, body, (size_t)n);
    } else if (strcmp(path, "/stream") == 0) {
        gwl_resp_start(req, 201);
        gwl_resp_header(req, "X-S", "y");
        gwl_resp_header(req, "X-Stream-Long-Name", "0123456789abcdefghijklmnop \xe9\t.");
        gwl_resp_write(req, "a", 1);
        gwl_resp_write(req, "bc", 2);
        gwl_resp_finish(req);
    } else if (strcmp(path, "/echo") == 0) {
        gwl_resp_start(req, 200);
        gwl_req_on_cancel(req, echo_on_cancel, NULL);
        gwl_req_read_body(req, echo_on_body, NULL);
    } else if (strcmp(path, "/later") == 0) {
        later_t *l = calloc(1, sizeof(*l));
        later_keep[later_nkeep++ % 64] = l;
        l->req = req;
        ev_timer_init(&l->t, later_on_timer, qnum(req, "ms", 100) / 1000.0, 0.);
        ev_timer_start(gwl_loop(), &l->t);
        gwl_req_on_cancel(req, later_on_cancel, l);
    } else if (strcmp(path, "/big") == 0) {
        size_t n = (size_t)qnum(req, "n", 300000);
        char *b = malloc(n);
        for (size_t i = 0; i < n; i++) b[i] = (char)('a' + i % 26);
        gwl_respond(req, 200, "application/octet-stream", b, n);
        free(b);
    } else if (strcmp(path, "/misuse") == 0) {
        int bad = 0;
        bad += gwl_resp_write(req, "x", 1) != GWL_ERROR;        /* write before start */
        bad += gwl_resp_finish(req) != GWL_ERROR;               /* finish before start */
        bad += gwl_resp_header(req, "Bad Name", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-Split", "a\r\nb") != GWL_ERROR;
        bad += gwl_resp_header(req, "", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X:Y", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-Del\x7f", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-\xc3\xa9", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-Tab\tName-Longer-Than-8", "v") != GWL_ERROR;
        bad += gwl_resp_header(req, "X", "\r") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-Long-Header-Name", "a value that is long enough\n") != GWL_ERROR;
        bad += gwl_resp_header(req, "X-Mid", "abcdefgh\nijklmnopq") != GWL_ERROR;
        bad += gwl_resp_start(req, 42) != GWL_ERROR;            /* bad status */
        bad += gwl_resp_start(req, 200) != GWL_OK;
        bad += gwl_resp_start(req, 200) != GWL_ERROR;           /* twice */
        bad += gwl_resp_header(req, "X-Ok", "1") != GWL_OK;
        bad += gwl_resp_write(req, "x", 1) != GWL_OK;
        bad += gwl_resp_header(req, "X-Late", "1") != GWL_ERROR; /* after body */
        bad += gwl_respond(req, 200, NULL, "y", 1) != GWL_ERROR;  /* after start */
        bad += gwl_resp_finish(req) != GWL_OK;
        /* Still inside the handler, so req is alive: double finish. */
        bad += gwl_resp_finish(req) != GWL_ERROR;
        bad += gwl_resp_write(req, "z", 1) != GWL_ERROR;
        char note[16];
        snprintf(note, sizeof(note), "M%d", bad);
        ev_note(note);
    } else if (strcmp(path, "/offload") == 0) {
        off_t_ *o = calloc(1, sizeof(*o));
        o->req = req;
        ck_assert_int_eq(gwl_offload(off_work, off_done, o), GWL_OK);
    } else if (strcmp(path, "/bg") == 0) {
        ck_assert_int_eq(gwl_background(bg_work, bg_done, NULL), GWL_OK);
        gwl_respond(req, 202, NULL, "bg", 2);
    } else if (strcmp(path, "/served") == 0) {
        char body[32];
        int n = snprintf(body, sizeof(body), "%llu:%d", (unsigned long long)gwl_worker_served(),
                         gwl_worker_slot());
        gwl_respond(req, 200, NULL, body, (size_t)n);
    } else {
        gwl_respond(req, 404, "text/plain", "nope", 4);
    }
}

/* Registries live as long as the process (there is no destroy): kept
 * reachable for LeakSanitizer. */
static gwl_app_t *apps_keep[8];
static unsigned apps_nkeep;

static gwl_app_t *new_app(void)
{
    gwl_app_t *app = gwl__app_create();
    apps_keep[apps_nkeep++ % 8] = app;
    return app;
}

static gwl_app_t *test_app(int failing)
{
    gwl_app_t *app = new_app();
    ck_assert_ptr_nonnull(app);
    ck_assert_int_eq(gwl_on_request(app, app_on_request, NULL), GWL_OK);
    ck_assert_int_eq(gwl_on_startup(app, hook_a, NULL), GWL_OK);
    ck_assert_int_eq(gwl_on_startup(app, hook_b, NULL), GWL_OK);
    if (failing) ck_assert_int_eq(gwl_on_startup(app, hook_fail, NULL), GWL_OK);
    ck_assert_int_eq(gwl_on_shutdown(app, hook_x, NULL), GWL_OK);
    ck_assert_int_eq(gwl_on_shutdown(app, hook_y, NULL), GWL_OK);
    ck_assert_int_eq(gwl_set_threads(app, 0), GWL_ERROR);
    ck_assert_int_eq(gwl_set_threads(app, 2), GWL_OK);
    return app;
}

/* ------------------------------------------------------------------ */
/* the fake master */

typedef struct {
    pid_t         pid;
    int           fd;
    uint8_t      *buf;
    size_t        len, cap, used;   /* used: bytes of the last returned frame */
    gwp_decoder_t dec;
    gwp_buf_t     out;
    int           skip_heartbeats;
    char          loop_id[128];
} peer_t;

static void peer_spawn(peer_t *p, gwl_app_t *app, const char *app_path)
{
    int sv[2];
    memset(p, 0, sizeof(*p));
    p->skip_heartbeats = 1;
    if (evp[0] < 0) {
        ck_assert_int_eq(pipe(evp), 0);
        fcntl(evp[0], F_SETFL, O_NONBLOCK);
    }
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        close(sv[0]);
        fcntl(sv[1], F_SETFL, O_NONBLOCK);
        gwl__worker_opts_t opts = { .slot = 1, .app_path = app_path, .app_symbol = NULL };
        int st = gwl__worker_main(app, sv[1], &opts);
        if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check()) _exit(99);
        _exit(st);
    }
    close(sv[1]);
    p->fd = sv[0];
    p->cap = 1 << 21;
    p->buf = malloc(p->cap);
    gwp_decoder_init(&p->dec, 0);
    gwp_buf_init(&p->out);
}

static void peer_free(peer_t *p)
{
    if (p->pid > 0) { kill(p->pid, SIGKILL); waitpid(p->pid, NULL, 0); }
    if (p->fd >= 0) close(p->fd);
    free(p->buf);
    gwp_decoder_done(&p->dec);
    gwp_buf_free(&p->out);
}

static void peer_flush(peer_t *p)
{
    size_t off = 0;
    while (off < p->out.len) {
        ssize_t n = write(p->fd, p->out.data + off, p->out.len - off);
        if (n < 0 && errno == EINTR) continue;
        ck_assert_msg(n > 0, "write to worker: %s", strerror(errno));
        off += (size_t)n;
    }
    p->out.len = 0;
}

/* Next frame from the worker: 1, 0 on timeout, -1 on EOF. */
static int peer_next(peer_t *p, gwp_msg_t *m, int ms)
{
    if (p->used) {
        memmove(p->buf, p->buf + p->used, p->len - p->used);
        p->len -= p->used;
        p->used = 0;
    }
    long deadline = now_ms() + ms;
    for (;;) {
        const char *why = NULL;
        ssize_t n = gwp_decode(&p->dec, p->buf, p->len, m, &why);
        ck_assert_msg(n != GWP_ERROR, "worker sent a bad frame: %s", why);
        if (n > 0) {
            p->used = (size_t)n;
            if (p->skip_heartbeats && m->frame.type == GWP_MSG_HEARTBEAT) {
                memmove(p->buf, p->buf + p->used, p->len - p->used);
                p->len -= p->used;
                p->used = 0;
                continue;
            }
            return 1;
        }
        long left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd pf = { .fd = p->fd, .events = POLLIN };
        if (poll(&pf, 1, (int)left) <= 0) return 0;
        ssize_t r = read(p->fd, p->buf + p->len, p->cap - p->len);
        if (r == 0) return -1;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        p->len += (size_t)r;
    }
}

static void peer_expect(peer_t *p, gwp_msg_t *m, unsigned type)
{
    int rc = peer_next(p, m, TMO);
    ck_assert_msg(rc == 1, "expected %s, got %s", gwp_type_name(type),
                  rc == 0 ? "timeout" : "EOF");
    ck_assert_msg(m->frame.type == type, "expected %s, got %s on stream %u",
                  gwp_type_name(type), gwp_type_name(m->frame.type), m->frame.stream);
}

/* Exit status of the worker, waiting up to ms; -1 if still running. */
static int peer_wait(peer_t *p, int ms)
{
    long deadline = now_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            if (WIFEXITED(st)) return WEXITSTATUS(st);
            return 128 + WTERMSIG(st);
        }
        if (now_ms() > deadline) return -1;
        usleep(5000);
    }
}

static void peer_hello(peer_t *p, uint32_t window, uint32_t hb_ms)
{
    gwp_hello_t h = { .version = GWP_VERSION, .slot = 1, .generation = 1,
                      .max_payload = GWP_MAX_PAYLOAD, .window = window,
                      .heartbeat_ms = hb_ms };
    ck_assert_int_eq(gwp_encode_hello(&p->out, &h), 0);
    peer_flush(p);
}

/* HELLO, then READY; checks READY and keeps its loop identity. */
static void peer_start(peer_t *p, uint32_t window, uint32_t hb_ms)
{
    gwp_msg_t m;
    peer_hello(p, window, hb_ms);
    peer_expect(p, &m, GWP_MSG_READY);
    ck_assert_int_eq(m.u.ready.version, GWP_VERSION);
    ck_assert_int_eq(m.u.ready.pid, p->pid);
    ck_assert_int_eq(m.u.ready.runtime.len, 6);
    ck_assert(memcmp(m.u.ready.runtime.ptr, "native", 6) == 0);
    ck_assert_uint_lt(m.u.ready.loop.len, sizeof(p->loop_id));
    memcpy(p->loop_id, m.u.ready.loop.ptr, m.u.ready.loop.len);
    p->loop_id[m.u.ready.loop.len] = '\0';
}

static void queue_req(peer_t *p, uint32_t s, int end, const char *method, const char *target,
                      int64_t cl, const gwp_header_t *h, uint32_t nh)
{
    const char *q = strchr(target, '?');
    size_t pl = q ? (size_t)(q - target) : strlen(target);
    gwp_request_t r = {
        .method = { method, strlen(method) },
        .target = { target, strlen(target) },
        .path = { target, pl },
        .query = { q ? q + 1 : "", q ? strlen(q + 1) : 0 },
        .http_minor = 1,
        .headers = h, .nheaders = nh,
        .peer = { "127.0.0.1:5555", 14 },
        .server = { "127.0.0.1:8000", 14 },
        .scheme = { "http", 4 },
        .content_length = cl,
        .keepalive = 1,
    };
    ck_assert_int_eq(gwp_encode_request(&p->out, s, end ? GWP_F_END : 0, &r), 0);
}

static void send_req(peer_t *p, uint32_t s, const char *target)
{
    queue_req(p, s, 1, "GET", target, 0, NULL, 0);
    peer_flush(p);
}

static void send_quit(peer_t *p, int graceful, uint32_t timeout_ms)
{
    gwp_quit_t q = { .graceful = (uint8_t)graceful, .timeout_ms = timeout_ms };
    ck_assert_int_eq(gwp_encode_quit(&p->out, &q), 0);
    peer_flush(p);
}

static int str_is(gwp_str_t s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static const char *resp_header(const gwp_response_t *r, const char *name)
{
    static char v[256];
    for (uint32_t i = 0; i < r->nheaders; i++)
        if (str_is(r->headers[i].name, name)) {
            snprintf(v, sizeof(v), "%.*s", (int)r->headers[i].value.len, r->headers[i].value.ptr);
            return v;
        }
    return NULL;
}

/*
 * Collect the whole response on stream s (RESPONSE + RESP_BODY up to END)
 * into body; frames for other streams fail the test. Returns the status.
 */
static int collect(peer_t *p, uint32_t s, char *body, size_t cap, size_t *len)
{
    gwp_msg_t m;
    int status = 0;
    *len = 0;
    peer_expect(p, &m, GWP_MSG_RESPONSE);
    ck_assert_uint_eq(m.frame.stream, s);
    status = (int)m.u.response.status;
    for (;;) {
        gwp_str_t d = m.frame.type == GWP_MSG_RESPONSE ? m.u.response.body : m.u.data.data;
        ck_assert_uint_le(d.len, GWP_MAX_DATA);
        ck_assert_uint_le(*len + d.len, cap);
        memcpy(body + *len, d.ptr, d.len);
        *len += d.len;
        if (m.frame.flags & GWP_F_END) break;
        peer_expect(p, &m, GWP_MSG_RESP_BODY);
        ck_assert_uint_eq(m.frame.stream, s);
    }
    return status;
}

/* No frame at all within ms. */
static void expect_silence(peer_t *p, int ms)
{
    gwp_msg_t m;
    int rc = peer_next(p, &m, ms);
    ck_assert_msg(rc == 0, "unexpected %s on stream %u", rc == 1 ? gwp_type_name(m.frame.type) : "EOF",
                  rc == 1 ? m.frame.stream : 0);
}

static void drain_evp(void)
{
    if (evp[0] >= 0) ev_read(0, 0);
}

/* ------------------------------------------------------------------ */
/* tests */

START_TEST(test_ready_hooks_quit)
{
    peer_t p;
    peer_spawn(&p, test_app(0), NULL);
    drain_evp();
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    /* Startup hooks ran, in order, before READY (and saw the loop). */
    ck_assert_str_eq(ev_read(2, 0), "AB");
    char pid[32];
    snprintf(pid, sizeof(pid), ":%d:", (int)p.pid);
    ck_assert_msg(strncmp(p.loop_id, "ev:", 3) == 0 && strstr(p.loop_id, pid),
                  "loop id %s", p.loop_id);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    ck_assert_str_eq(ev_read(2, 1000), "XY");
    peer_free(&p);
}
END_TEST

START_TEST(test_loop_ids_unique)
{
    peer_t a, b;
    gwl_app_t *app = test_app(0);
    peer_spawn(&a, app, NULL);
    peer_spawn(&b, app, NULL);
    peer_start(&a, GWP_DEFAULT_WINDOW, 0);
    peer_start(&b, GWP_DEFAULT_WINDOW, 0);
    ck_assert_str_ne(a.loop_id, b.loop_id);
    send_quit(&a, 0, 0);
    send_quit(&b, 0, 0);
    ck_assert_int_eq(peer_wait(&a, 3000), 0);
    ck_assert_int_eq(peer_wait(&b, 3000), 0);
    peer_free(&a);
    peer_free(&b);
}
END_TEST

START_TEST(test_respond)
{
    peer_t p;
    gwp_msg_t m;
    char body[4096];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);

    /* Fast path: one RESPONSE with END and the whole body. */
    send_req(&p, 1, "/hello");
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    ck_assert_uint_eq(m.frame.stream, 1);
    ck_assert(m.frame.flags & GWP_F_END);
    ck_assert_uint_eq(m.u.response.status, 200);
    ck_assert(str_is(m.u.response.body, "hello"));
    ck_assert_str_eq(resp_header(&m.u.response, "Content-Type"), "text/plain");
    ck_assert_str_eq(resp_header(&m.u.response, "X-Test"), "1");

    /* Everything the app can see was copied out of the frame. */
    gwp_header_t h[2] = {
        { { "Host", 4 }, { "example.com", 11 } },
        { { "X-A", 3 }, { "va", 2 } },
    };
    queue_req(&p, 3, 1, "POST", "/info?x=1&y=2", 0, h, 2);
    peer_flush(&p);
    ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 200);
    body[len] = '\0';
    ck_assert_str_eq(body, "POST|/info?x=1&y=2|/info|x=1&y=2|127.0.0.1:5555|127.0.0.1:8000"
                           "|http|1|0|1|2|Host=example.com|va|-1");

    /* Streaming calls made in one go leave as one RESPONSE with END. */
    send_req(&p, 5, "/stream");
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    ck_assert_uint_eq(m.frame.stream, 5);
    ck_assert_uint_eq(m.u.response.status, 201);
    ck_assert(m.frame.flags & GWP_F_END);
    ck_assert(str_is(m.u.response.body, "abc"));
    ck_assert_str_eq(resp_header(&m.u.response, "X-S"), "y");
    ck_assert_str_eq(resp_header(&m.u.response, "X-Stream-Long-Name"),
                     "0123456789abcdefghijklmnop \xe9\t.");

    /* Misuse is refused, and a valid sequence still gets through. */
    drain_evp();
    send_req(&p, 7, "/misuse");
    ck_assert_int_eq(collect(&p, 7, body, sizeof(body), &len), 200);
    ck_assert_uint_eq(len, 1);
    ck_assert_str_eq(ev_read(2, 1000), "M0");

    send_req(&p, 9, "/served");
    ck_assert_int_eq(collect(&p, 9, body, sizeof(body), &len), 200);
    body[len] = '\0';
    ck_assert_str_eq(body, "4:1");

    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

START_TEST(test_pipelined_batch)
{
    enum { N = 500 };
    peer_t p;
    gwp_msg_t m;
    static char seen[2 * N + 2];
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    /* All requests in one write: the worker decodes them from one read. */
    for (uint32_t i = 0; i < N; i++) queue_req(&p, 2 * i + 1, 1, "GET", "/hello", 0, NULL, 0);
    peer_flush(&p);
    for (int i = 0; i < N; i++) {
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        ck_assert_uint_le(m.frame.stream, 2 * N);
        ck_assert_int_eq(seen[m.frame.stream], 0);
        seen[m.frame.stream] = 1;
        ck_assert(str_is(m.u.response.body, "hello"));
    }
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

/* Response larger than the window: split into frames of at most
 * GWP_MAX_DATA, stalls at the window, resumes on WINDOW. */
START_TEST(test_big_response_window)
{
    enum { W = 100000, N = 300000 };
    peer_t p;
    gwp_msg_t m;
    size_t got = 0;
    static char body[N];
    int end = 0;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, W, 0);
    send_req(&p, 1, "/big?n=300000");
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    ck_assert_uint_eq(m.u.response.status, 200);
    ck_assert(!(m.frame.flags & GWP_F_END));
    for (;;) {
        gwp_str_t d = m.frame.type == GWP_MSG_RESPONSE ? m.u.response.body : m.u.data.data;
        ck_assert_uint_le(d.len, GWP_MAX_DATA);
        memcpy(body + got, d.ptr, d.len);
        got += d.len;
        ck_assert_uint_le(got, W);
        if (got == W) break;
        peer_expect(&p, &m, GWP_MSG_RESP_BODY);
    }
    expect_silence(&p, 200);
    gwp_encode_window(&p.out, 1, 50000);
    peer_flush(&p);
    while (got < W + 50000) {
        peer_expect(&p, &m, GWP_MSG_RESP_BODY);
        memcpy(body + got, m.u.data.data.ptr, m.u.data.data.len);
        got += m.u.data.data.len;
    }
    ck_assert_uint_eq(got, W + 50000);
    expect_silence(&p, 100);
    gwp_encode_window(&p.out, 1, 1000000);
    peer_flush(&p);
    while (!end) {
        peer_expect(&p, &m, GWP_MSG_RESP_BODY);
        ck_assert_uint_le(got + m.u.data.data.len, N);
        memcpy(body + got, m.u.data.data.ptr, m.u.data.data.len);
        got += m.u.data.data.len;
        end = m.frame.flags & GWP_F_END;
    }
    ck_assert_uint_eq(got, N);
    for (size_t i = 0; i < N; i++) ck_assert_int_eq(body[i], 'a' + i % 26);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

static void send_body(peer_t *p, uint32_t s, const char *data, size_t len, int end)
{
    ck_assert_int_eq(gwp_encode_data(&p->out, GWP_MSG_BODY, s, end ? GWP_F_END : 0, data, len), 0);
    peer_flush(p);
}

/* Read response data on s until `want` more bytes arrived; WINDOW frames
 * seen meanwhile are added to *credit. */
static void read_data(peer_t *p, uint32_t s, char *dst, size_t *got, size_t want,
                      uint64_t *credit, int *end)
{
    gwp_msg_t m;
    size_t target = *got + want;
    while (*got < target) {
        int rc = peer_next(p, &m, TMO);
        ck_assert_int_eq(rc, 1);
        ck_assert_uint_eq(m.frame.stream, s);
        if (m.frame.type == GWP_MSG_WINDOW) { *credit += m.u.window.bytes; continue; }
        gwp_str_t d = m.frame.type == GWP_MSG_RESPONSE ? m.u.response.body : m.u.data.data;
        ck_assert(m.frame.type == GWP_MSG_RESPONSE || m.frame.type == GWP_MSG_RESP_BODY);
        memcpy(dst + *got, d.ptr, d.len);
        *got += d.len;
        if (m.frame.flags & GWP_F_END) *end = 1;
    }
}

/* Wait for a WINDOW on s (nothing else may come). */
static uint32_t read_window(peer_t *p, uint32_t s)
{
    gwp_msg_t m;
    peer_expect(p, &m, GWP_MSG_WINDOW);
    ck_assert_uint_eq(m.frame.stream, s);
    return m.u.window.bytes;
}

/* Echo with windows: request credit comes back as body is consumed, and is
 * held back while the echoed response queues beyond the window. */
START_TEST(test_echo_backpressure)
{
    enum { W = 16384 };
    peer_t p;
    static char in[4 * W], out[4 * W];
    size_t got = 0;
    uint64_t credit = 0;
    int end = 0;
    for (size_t i = 0; i < sizeof(in); i++) in[i] = (char)(i * 7 + 3);
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, W, 0);
    queue_req(&p, 1, 0, "POST", "/echo", -1, NULL, 0);
    peer_flush(&p);

    /* 1st window of body: echoed at once (response credit W), credit back. */
    send_body(&p, 1, in, W, 0);
    read_data(&p, 1, out, &got, W, &credit, &end);
    if (credit == 0) credit += read_window(&p, 1);
    ck_assert_uint_eq(credit, W);
    /* 2nd: no response credit left, queued (W, not above the window), so
     * the credit still comes back. */
    send_body(&p, 1, in + W, W, 0);
    ck_assert_uint_eq(read_window(&p, 1), W);
    /* 3rd: queue would be 2W > W: credit held, nothing at all is sent. */
    send_body(&p, 1, in + 2 * W, W, 0);
    expect_silence(&p, 200);
    /* Response credit W: W of data goes out, queue back to W, and the held
     * request credit is released. */
    credit = 0;
    gwp_encode_window(&p.out, 1, W);
    peer_flush(&p);
    read_data(&p, 1, out, &got, W, &credit, &end);
    if (credit == 0) credit += read_window(&p, 1);
    ck_assert_uint_eq(credit, W);
    ck_assert_uint_eq(got, 2 * W);
    /* Last piece with END, then all the credit the rest needs. */
    send_body(&p, 1, in + 3 * W, W, 1);
    expect_silence(&p, 100);
    gwp_encode_window(&p.out, 1, 4 * W);
    peer_flush(&p);
    read_data(&p, 1, out, &got, 2 * W, &credit, &end);
    if (!end) {
        gwp_msg_t m;
        peer_expect(&p, &m, GWP_MSG_RESP_BODY);
        ck_assert_uint_eq(m.u.data.data.len, 0);
        end = m.frame.flags & GWP_F_END;
    }
    ck_assert(end);
    ck_assert_uint_eq(got, 4 * W);
    ck_assert(memcmp(in, out, sizeof(in)) == 0);

    /* The stream is gone: a late WINDOW for it is dropped. */
    gwp_encode_window(&p.out, 1, W);
    peer_flush(&p);
    send_req(&p, 3, "/hello");
    char body[64];
    size_t len;
    ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 200);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

/* Body with no reader: discarded, credit still returned. */
START_TEST(test_body_discarded)
{
    peer_t p;
    static char in[8192];
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, 4096, 0);
    queue_req(&p, 1, 0, "POST", "/hello", 8192, NULL, 0);
    peer_flush(&p);
    ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
    send_body(&p, 1, in, 4096, 0);
    ck_assert_uint_eq(read_window(&p, 1), 4096);
    send_body(&p, 1, in, 4096, 1);
    expect_silence(&p, 100);      /* body ended: no credit needed */
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

START_TEST(test_cancel_late_reply)
{
    peer_t p;
    gwp_msg_t m;
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=50&keep=1");
    ck_assert_int_eq(gwp_encode_cancel(&p.out, 1, "client-gone"), 0);
    ck_assert_int_eq(gwp_encode_cancel(&p.out, 1, "client-gone"), 0);   /* twice */
    peer_flush(&p);
    /* The timer fires after the cancel and answers: dropped silently. */
    ck_assert_str_eq(ev_read(2, 2000), "CL");
    send_req(&p, 3, "/hello");
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    ck_assert_uint_eq(m.frame.stream, 3);
    expect_silence(&p, 100);

    /* Cancel mid-stream: echo's cancel callback runs once, no more frames. */
    queue_req(&p, 5, 0, "POST", "/echo", -1, NULL, 0);
    peer_flush(&p);
    send_body(&p, 5, "abc", 3, 0);
    ck_assert_int_eq(peer_next(&p, &m, TMO), 1);
    ck_assert_uint_eq(m.frame.stream, 5);
    while (peer_next(&p, &m, 100) == 1) ck_assert_uint_eq(m.frame.stream, 5);
    ck_assert_int_eq(gwp_encode_cancel(&p.out, 5, "client-gone"), 0);
    peer_flush(&p);
    send_body(&p, 5, "def", 3, 0);      /* after cancel: dropped */
    send_body(&p, 5, "", 0, 1);
    ck_assert_str_eq(ev_read(1, 1000), "E");
    send_req(&p, 7, "/hello");
    ck_assert_int_eq(collect(&p, 7, body, sizeof(body), &len), 200);
    expect_silence(&p, 100);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

START_TEST(test_unknown_streams)
{
    peer_t p;
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    ck_assert_int_eq(gwp_encode_data(&p.out, GWP_MSG_BODY, 99, 0, "x", 1), 0);
    ck_assert_int_eq(gwp_encode_window(&p.out, 98, 1000), 0);
    ck_assert_int_eq(gwp_encode_cancel(&p.out, 97, "client-gone"), 0);
    peer_flush(&p);
    send_req(&p, 1, "/hello");
    ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
    expect_silence(&p, 100);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

START_TEST(test_quit_waits_for_inflight)
{
    peer_t p;
    gwp_msg_t m;
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=200");
    send_quit(&p, 1, 5000);
    /* New work while draining is handed back. */
    send_req(&p, 3, "/hello");
    peer_expect(&p, &m, GWP_MSG_CANCEL);
    ck_assert_uint_eq(m.frame.stream, 3);
    ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    /* The timer answered first, then the shutdown hooks ran. */
    ck_assert_str_eq(ev_read(3, 1000), "lXY");
    peer_free(&p);
}
END_TEST

START_TEST(test_quit_timeout)
{
    peer_t p;
    gwp_msg_t m;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=10000");
    long t0 = now_ms();
    send_quit(&p, 1, 200);
    /* Given up at the budget: the stream is cancelled towards the master. */
    peer_expect(&p, &m, GWP_MSG_CANCEL);
    ck_assert_uint_eq(m.frame.stream, 1);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    ck_assert_int_lt(now_ms() - t0, 2000);
    ck_assert_str_eq(ev_read(3, 1000), "CXY");
    peer_free(&p);
}
END_TEST

START_TEST(test_quit_now)
{
    peer_t p;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=10000");
    send_quit(&p, 0, 0);
    ck_assert_int_eq(peer_wait(&p, 2000), 0);
    ck_assert_str_eq(ev_read(0, 100), "");    /* no shutdown hooks */
    peer_free(&p);
}
END_TEST

START_TEST(test_startup_hook_fails)
{
    peer_t p;
    gwp_msg_t m;
    peer_spawn(&p, test_app(1), NULL);
    drain_evp();
    peer_hello(&p, GWP_DEFAULT_WINDOW, 0);
    peer_expect(&p, &m, GWP_MSG_ERROR);
    ck_assert_int_eq(m.u.error.code, GWL_EXIT_BOOT);
    ck_assert_msg(memmem(m.u.error.message.ptr, m.u.error.message.len, "#3", 2),
                  "message names the hook: %.*s", (int)m.u.error.message.len,
                  m.u.error.message.ptr);
    ck_assert_int_eq(peer_wait(&p, 3000), GWL_EXIT_BOOT);
    ck_assert_str_eq(ev_read(3, 500), "ABF");     /* no shutdown hooks */
    peer_free(&p);
}
END_TEST

START_TEST(test_load_fails)
{
    peer_t p;
    gwp_msg_t m;
    char err[256];
    gwl_app_t *app = new_app();
    ck_assert(!gwl__app_loaded(app));
    ck_assert_int_eq(gwl__app_load(app, "/nonexistent/app.so", NULL, err, sizeof(err)), GWL_ERROR);
    ck_assert_msg(strstr(err, "/nonexistent/app.so") != NULL, "err: %s", err);
    ck_assert(!gwl__app_loaded(app));

    peer_spawn(&p, app, "/nonexistent/app.so");
    peer_hello(&p, GWP_DEFAULT_WINDOW, 0);
    peer_expect(&p, &m, GWP_MSG_ERROR);
    ck_assert_int_eq(m.u.error.code, GWL_EXIT_BOOT);
    ck_assert_int_eq(peer_wait(&p, 3000), GWL_EXIT_BOOT);
    peer_free(&p);
}
END_TEST

/* A built example, when `make` has produced it (tests run from tests/unit). */
START_TEST(test_dlopen_example)
{
    const char *path = "../../build/examples/hello.so";
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "check_worker: %s not built, dlopen test skipped\n", path);
        return;
    }
    /* Apps resolve gwl_* against the executable: it must export them
     * (-Wl,--dynamic-list=workerlib/gwl.dynlist, as build/gateway does). */
    if (dlsym(RTLD_DEFAULT, "gwl_on_request") == NULL) {
        fprintf(stderr, "check_worker: this binary does not export gwl_*, dlopen test skipped\n");
        return;
    }
    peer_t p;
    gwp_msg_t m;
    gwl_app_t *app = new_app();
    peer_spawn(&p, app, path);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    send_req(&p, 1, "/");
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    ck_assert(str_is(m.u.response.body, "Hello, World!"));
    char pid[24];
    snprintf(pid, sizeof(pid), "%d", (int)p.pid);
    ck_assert_str_eq(resp_header(&m.u.response, "X-Worker-Pid"), pid);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);

    char err[256];
    app = new_app();
    ck_assert_int_eq(gwl__app_load(app, path, "no_such_symbol", err, sizeof(err)), GWL_ERROR);
    ck_assert_msg(strstr(err, "no_such_symbol") != NULL, "err: %s", err);
}
END_TEST

START_TEST(test_protocol_error)
{
    peer_t p;
    gwp_msg_t m;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    static const uint8_t junk[GWP_HEADER_SIZE] = { 99, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    ck_assert_int_eq(write(p.fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    peer_expect(&p, &m, GWP_MSG_ERROR);
    ck_assert_int_eq(m.u.error.code, GWL_EXIT_PROTO);
    ck_assert_int_eq(peer_wait(&p, 3000), GWL_EXIT_PROTO);
    peer_free(&p);
}
END_TEST

START_TEST(test_signals)
{
    peer_t p;
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    kill(p.pid, SIGINT);        /* ignored: the master decides */
    usleep(50000);
    send_req(&p, 1, "/hello");
    ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
    send_req(&p, 3, "/later?ms=100");
    usleep(30000);              /* let the worker take the request first */
    kill(p.pid, SIGTERM);       /* graceful: the in-flight request finishes */
    ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 200);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    ck_assert_str_eq(ev_read(3, 1000), "lXY");
    peer_free(&p);

    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=10000");
    usleep(50000);
    kill(p.pid, SIGQUIT);       /* immediate */
    ck_assert_int_eq(peer_wait(&p, 2000), 0);
    ck_assert_str_eq(ev_read(0, 100), "");
    peer_free(&p);
}
END_TEST

START_TEST(test_master_gone)
{
    peer_t p;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    send_req(&p, 1, "/later?ms=5000");
    usleep(50000);
    close(p.fd);
    p.fd = -1;
    /* EOF: streams cancelled (the app's callback runs), hooks, exit 0. */
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    ck_assert_str_eq(ev_read(3, 1000), "CXY");
    peer_free(&p);
}
END_TEST

START_TEST(test_heartbeat_offload_background)
{
    peer_t p;
    gwp_msg_t m;
    char body[64];
    size_t len;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 50);
    drain_evp();

    send_req(&p, 1, "/offload");
    ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
    body[len] = '\0';
    ck_assert_str_eq(body, "offloaded:1:1");   /* work off the loop, done on it */

    send_req(&p, 3, "/bg");
    ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 202);
    p.skip_heartbeats = 0;
    peer_expect(&p, &m, GWP_MSG_HEARTBEAT);
    ck_assert(str_is(m.u.heartbeat.loop, p.loop_id));
    ck_assert_uint_gt(m.u.heartbeat.rss, 0);
    ck_assert_uint_eq(m.u.heartbeat.served, 2);
    ck_assert_uint_eq(m.u.heartbeat.inflight, 0);
    ck_assert_uint_eq(m.u.heartbeat.tasks, 1);
    /* Graceful exit waits for the background task. */
    send_quit(&p, 1, 3000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    ck_assert_str_eq(ev_read(3, 1000), "bXY");
    peer_free(&p);
}
END_TEST

/* Hundreds of concurrent streams, a third cancelled: the stream table
 * grows and deletes out of order; each survivor is answered exactly once
 * and no cancelled stream ever sees a frame. */
START_TEST(test_many_streams)
{
    enum { N = 300 };
    peer_t p;
    gwp_msg_t m;
    static char seen[2 * N + 2];
    char target[64];
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, GWP_DEFAULT_WINDOW, 0);
    drain_evp();
    for (uint32_t i = 0; i < N; i++) {
        snprintf(target, sizeof(target), "/later?ms=%u", 20 + (i * 37) % 80);
        queue_req(&p, 2 * i + 1, 1, "GET", target, 0, NULL, 0);
    }
    for (uint32_t i = 0; i < N; i += 3)
        ck_assert_int_eq(gwp_encode_cancel(&p.out, 2 * i + 1, "client-gone"), 0);
    peer_flush(&p);
    for (int k = 0; k < N - N / 3; k++) {
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        uint32_t s = m.frame.stream;
        ck_assert_uint_le(s, 2 * N);
        ck_assert_msg(((s - 1) / 2) % 3 != 0, "frame for cancelled stream %u", s);
        ck_assert_int_eq(seen[s], 0);
        seen[s] = 1;
        ck_assert(m.frame.flags & GWP_F_END);
        ck_assert(str_is(m.u.response.body, "late"));
    }
    expect_silence(&p, 150);
    char *ev = ev_read(N, 1000);
    size_t cancels = 0;
    for (char *c = ev; *c; c++) cancels += *c == 'C';
    ck_assert_uint_eq(cancels, N / 3);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(i * 131 + (i >> 9));
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* 50 MB of chunked upload echoed back through the windows, by a master
 * that honours the worker's credit and checks the worker honours its own.
 * Worker memory stays bounded (a few windows, not the body). */
START_TEST(test_echo_50mb)
{
    const uint64_t total = 50u << 20;
    const uint32_t win = GWP_DEFAULT_WINDOW;
    peer_t p;
    gwp_msg_t m;
    static uint8_t chunk[GWP_MAX_DATA];
    uint64_t sent = 0, recv = 0;
    int64_t req_credit = win, resp_credit = win;
    int end = 0;
    peer_spawn(&p, test_app(0), NULL);
    peer_start(&p, win, 0);
    long base_kb = vm_hwm_kb(p.pid);
    queue_req(&p, 1, 0, "POST", "/echo", -1, NULL, 0);
    peer_flush(&p);
    while (!end) {
        while (sent < total && req_credit > 0) {
            size_t n = GWP_MAX_DATA;
            if ((int64_t)n > req_credit) n = (size_t)req_credit;
            if (n > total - sent) n = (size_t)(total - sent);
            for (size_t i = 0; i < n; i++) chunk[i] = pattern(sent + i);
            ck_assert_int_eq(gwp_encode_data(&p.out, GWP_MSG_BODY, 1,
                                             sent + n == total ? GWP_F_END : 0, chunk, n), 0);
            peer_flush(&p);
            sent += n;
            req_credit -= (int64_t)n;
        }
        ck_assert_int_eq(peer_next(&p, &m, TMO), 1);
        ck_assert_uint_eq(m.frame.stream, 1);
        if (m.frame.type == GWP_MSG_WINDOW) {
            req_credit += m.u.window.bytes;
            ck_assert_int_le(req_credit, win);
            continue;
        }
        gwp_str_t d = m.frame.type == GWP_MSG_RESPONSE ? m.u.response.body : m.u.data.data;
        for (size_t i = 0; i < d.len; i++)
            if ((uint8_t)d.ptr[i] != pattern(recv + i))
                ck_abort_msg("echo differs at byte %llu", (unsigned long long)(recv + i));
        recv += d.len;
        resp_credit -= (int64_t)d.len;
        ck_assert_int_ge(resp_credit, 0);          /* never beyond our credit */
        end = m.frame.flags & GWP_F_END;
        if (d.len > 0) {                           /* a fast client */
            ck_assert_int_eq(gwp_encode_window(&p.out, 1, (uint32_t)d.len), 0);
            peer_flush(&p);
            resp_credit += (int64_t)d.len;
        }
    }
    ck_assert_uint_eq(sent, total);
    ck_assert_uint_eq(recv, total);
    long hwm_kb = vm_hwm_kb(p.pid);
    ck_assert_msg(hwm_kb - base_kb < 16 * 1024, "worker peak RSS grew by %ld kB", hwm_kb - base_kb);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

/* ---- the example apps (when built, and when this binary exports gwl_*) */

static int example(const char *name, char *path, size_t len)
{
    struct stat st;
    snprintf(path, len, "../../build/examples/%s.so", name);
    if (stat(path, &st) != 0) {
        fprintf(stderr, "check_worker: %s not built, skipped\n", path);
        return 0;
    }
    if (dlsym(RTLD_DEFAULT, "gwl_on_request") == NULL) {
        fprintf(stderr, "check_worker: this binary does not export gwl_*, %s skipped\n", name);
        return 0;
    }
    return 1;
}

static void example_spawn(peer_t *p, const char *path)
{
    peer_spawn(p, new_app(), path);
    peer_start(p, GWP_DEFAULT_WINDOW, 0);
}

static void check_pid_header(peer_t *p, const gwp_response_t *r)
{
    char pid[24];
    snprintf(pid, sizeof(pid), "%d", (int)p->pid);
    const char *v = resp_header(r, "X-Worker-Pid");
    ck_assert_msg(v && strcmp(v, pid) == 0, "X-Worker-Pid %s, want %s", v ? v : "(none)", pid);
}

START_TEST(test_example_echo)
{
    char path[256], body[1024];
    size_t len;
    peer_t p;
    gwp_msg_t m;
    if (!example("echo", path, sizeof(path))) return;
    example_spawn(&p, path);
    gwp_header_t h[2] = {
        { { "Host", 4 }, { "example.com", 11 } },
        { { "X-A", 3 }, { "va", 2 } },
    };
    queue_req(&p, 1, 1, "GET", "/a/b?c=d", 0, h, 2);
    peer_flush(&p);
    peer_expect(&p, &m, GWP_MSG_RESPONSE);
    check_pid_header(&p, &m.u.response);
    ck_assert_str_eq(resp_header(&m.u.response, "X-Echo-Method"), "GET");
    ck_assert_str_eq(resp_header(&m.u.response, "X-Echo-Target"), "/a/b?c=d");
    ck_assert_str_eq(resp_header(&m.u.response, "X-Echo-Version"), "1.1");
    ck_assert_str_eq(resp_header(&m.u.response, "X-Echo-Header-Count"), "2");
    ck_assert(str_is(m.u.response.body, "GET /a/b?c=d HTTP/1.1\nHost: example.com\nX-A: va\n"));

    queue_req(&p, 3, 0, "PUT", "/up", 10, h, 1);
    ck_assert_int_eq(gwp_encode_data(&p.out, GWP_MSG_BODY, 3, 0, "hello", 5), 0);
    ck_assert_int_eq(gwp_encode_data(&p.out, GWP_MSG_BODY, 3, GWP_F_END, "world", 5), 0);
    peer_flush(&p);
    ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 200);
    ck_assert_uint_eq(len, 10);
    ck_assert(memcmp(body, "helloworld", 10) == 0);
    send_quit(&p, 1, 2000);
    ck_assert_int_eq(peer_wait(&p, 3000), 0);
    peer_free(&p);
}
END_TEST

START_TEST(test_example_stream_sleep_block)
{
    char path[256], body[1024];
    size_t len;
    peer_t p;
    gwp_msg_t m;

    if (example("stream", path, sizeof(path))) {
        example_spawn(&p, path);
        long t0 = now_ms();
        send_req(&p, 1, "/?n=3&ms=30");
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        ck_assert(!(m.frame.flags & GWP_F_END));
        ck_assert_ptr_null(resp_header(&m.u.response, "Content-Length"));
        ck_assert_str_eq(resp_header(&m.u.response, "Content-Type"), "text/plain");
        check_pid_header(&p, &m.u.response);
        ck_assert_uint_eq(m.u.response.body.len, 0);   /* the head did not wait */
        len = 0;
        int end = 0;
        while (!end) {
            peer_expect(&p, &m, GWP_MSG_RESP_BODY);
            memcpy(body + len, m.u.data.data.ptr, m.u.data.data.len);
            len += m.u.data.data.len;
            end = m.frame.flags & GWP_F_END;
        }
        body[len] = '\0';
        ck_assert_str_eq(body, "chunk 0\nchunk 1\nchunk 2\n");
        ck_assert_int_ge(now_ms() - t0, 85);
        /* Cancelled mid-way: its timer stops, nothing more is sent. */
        send_req(&p, 3, "/?n=100&ms=10");
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        ck_assert_int_eq(gwp_encode_cancel(&p.out, 3, "client-gone"), 0);
        peer_flush(&p);
        while (peer_next(&p, &m, 100) == 1) ck_assert_uint_eq(m.frame.stream, 3);
        expect_silence(&p, 100);
        send_quit(&p, 1, 2000);
        ck_assert_int_eq(peer_wait(&p, 3000), 0);  /* nothing left in flight */
        peer_free(&p);
    }
    if (example("sleep", path, sizeof(path))) {
        example_spawn(&p, path);
        long t0 = now_ms();
        send_req(&p, 1, "/?ms=80");
        send_req(&p, 3, "/?ms=10");
        /* The short one overtakes: the loop is not blocked. */
        ck_assert_int_eq(collect(&p, 3, body, sizeof(body), &len), 200);
        ck_assert(len == 12 && memcmp(body, "slept 10 ms\n", 12) == 0);
        ck_assert_int_eq(collect(&p, 1, body, sizeof(body), &len), 200);
        ck_assert(len == 12 && memcmp(body, "slept 80 ms\n", 12) == 0);
        ck_assert_int_ge(now_ms() - t0, 75);
        send_req(&p, 5, "/?ms=5000");
        ck_assert_int_eq(gwp_encode_cancel(&p.out, 5, "client-gone"), 0);
        peer_flush(&p);
        send_quit(&p, 1, 2000);                    /* cancelled one does not hold it */
        ck_assert_int_eq(peer_wait(&p, 1000), 0);
        peer_free(&p);
    }
    if (example("block", path, sizeof(path))) {
        example_spawn(&p, path);
        long t0 = now_ms();
        send_req(&p, 1, "/?ms=60");
        send_req(&p, 3, "/?ms=60");
        ck_assert_int_eq(peer_next(&p, &m, TMO), 1);
        ck_assert_int_eq(peer_next(&p, &m, TMO), 1);
        /* Two pool threads at once: both within about one sleep. */
        ck_assert_int_lt(now_ms() - t0, 115);   /* serial would be >= 120 */
        ck_assert(str_is(m.u.response.body, "blocked 60 ms\n"));
        send_quit(&p, 1, 2000);
        ck_assert_int_eq(peer_wait(&p, 3000), 0);
        peer_free(&p);
    }
}
END_TEST

START_TEST(test_example_worker_crash)
{
    char path[256], want[256];
    peer_t p;
    gwp_msg_t m;
    if (example("worker", path, sizeof(path))) {
        example_spawn(&p, path);
        send_req(&p, 1, "/");
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        ck_assert_str_eq(resp_header(&m.u.response, "Content-Type"), "application/json");
        check_pid_header(&p, &m.u.response);
        gwp_str_t b = m.u.response.body;
        snprintf(want, sizeof(want), "{\"pid\":%d,\"slot\":1,\"loop\":\"%s\",\"hook\":\"hook-%d-",
                 (int)p.pid, p.loop_id, (int)p.pid);
        ck_assert_msg(b.len > strlen(want) && memcmp(b.ptr, want, strlen(want)) == 0,
                      "body %.*s", (int)b.len, b.ptr);
        ck_assert(memmem(b.ptr, b.len, "\"hook2\":\"second saw hook-", 25) != NULL);
        ck_assert(memmem(b.ptr, b.len, "\"served\":0}", 11) != NULL);
        send_quit(&p, 1, 2000);
        ck_assert_int_eq(peer_wait(&p, 3000), 0);
        peer_free(&p);
    }
    if (example("crash", path, sizeof(path))) {
        example_spawn(&p, path);
        send_req(&p, 1, "/ok");
        peer_expect(&p, &m, GWP_MSG_RESPONSE);
        ck_assert(str_is(m.u.response.body, "ok\n"));
        send_req(&p, 3, "/boom");
        ck_assert_int_eq(peer_next(&p, &m, TMO), -1);   /* EOF: it died */
        ck_assert_int_eq(peer_wait(&p, 3000), 128 + SIGABRT);
        peer_free(&p);
    }
}
END_TEST

/* Outside a worker: no loop, no slot, no pool. */
START_TEST(test_outside_worker)
{
    ck_assert_ptr_null(gwl_loop());
    ck_assert_ptr_null(gwl_loop_id());
    ck_assert_int_eq(gwl_worker_slot(), -1);
    ck_assert_int_eq(gwl_offload(bg_work, NULL, NULL), GWL_ERROR);
    ck_assert_uint_eq(gwl_background_count(), 0);
    gwl_log("debug", "not shown at the default level");
    gwl_log("bogus-level", "gwl_log with an unknown level logs at info");
}
END_TEST

static Suite *worker_suite(void)
{
    Suite *s = suite_create("workerlib");
    TCase *tc = tcase_create("worker");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_ready_hooks_quit);
    tcase_add_test(tc, test_loop_ids_unique);
    tcase_add_test(tc, test_respond);
    tcase_add_test(tc, test_pipelined_batch);
    tcase_add_test(tc, test_big_response_window);
    tcase_add_test(tc, test_echo_backpressure);
    tcase_add_test(tc, test_body_discarded);
    tcase_add_test(tc, test_cancel_late_reply);
    tcase_add_test(tc, test_unknown_streams);
    tcase_add_test(tc, test_quit_waits_for_inflight);
    tcase_add_test(tc, test_quit_timeout);
    tcase_add_test(tc, test_quit_now);
    tcase_add_test(tc, test_startup_hook_fails);
    tcase_add_test(tc, test_load_fails);
    tcase_add_test(tc, test_dlopen_example);
    tcase_add_test(tc, test_protocol_error);
    tcase_add_test(tc, test_signals);
    tcase_add_test(tc, test_master_gone);
    tcase_add_test(tc, test_heartbeat_offload_background);
    tcase_add_test(tc, test_outside_worker);
    tcase_add_test(tc, test_many_streams);
    tcase_add_test(tc, test_echo_50mb);
    tcase_add_test(tc, test_example_echo);
    tcase_add_test(tc, test_example_stream_sleep_block);
    tcase_add_test(tc, test_example_worker_crash);
    suite_add_tcase(s, tc);
    return s;
}

GW_TEST_SUITE(worker_suite)
