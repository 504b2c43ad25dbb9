/*
 * zygote.c - --preload for Python apps (master process).
 *
 * The master cannot import a Python app itself (it is C and never runs app
 * code), so one runtime process, the zygote, imports it once, freezes the
 * collector (gc.freeze()) and forks the workers when the master asks. The
 * workers then share the app's pages copy-on-write, as native --preload
 * workers share the master's.
 *
 *   master                                    zygote (python3 gateway_worker.py,
 *     |  fork + child set-up + exec             GATEWAY_MODE=zygote, channel on fd 3)
 *     |<---------------------- Z_READY  ------  imported the app, gc.freeze()
 *     |  socketpair (the worker's channel)
 *     |--- SPAWN {slot} + SCM_RIGHTS fd ---->  fork -> fork (the middle one exits,
 *     |<--------- SPAWNED {pid} ------------   so the worker is re-parented to the
 *     |  ev_child(pid), HELLO on the channel   master, a child subreaper)
 *
 * The channel is a SOCK_SEQPACKET socketpair: one GWP-style frame per packet
 * (proto/PROTOCOL.md, "The zygote channel"), so a passed descriptor always
 * arrives with the SPAWN frame it belongs to.
 *
 * A spawn is one synchronous exchange with a deadline (ZY_SPAWN_TIMEOUT):
 * the master learns the worker's pid and starts its ev_child watcher before
 * it returns to the loop, so libev can never reap the worker before a
 * watcher for it exists (docs/design-notes.md).
 *
 * Zygote failures: at start-up (gw_zygote_boot, before anything is bound) a
 * zygote that cannot import the app is one "gateway: ..." line and exit 1.
 * Later a dead zygote is replaced with backoff; workers keep serving, and
 * spawns wait (slots in BACKOFF with zygote_wait) until a zygote is ready.
 * HUP starts a new zygote (the app is imported again); the previous one is
 * stopped once the new one is ready.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"
#include "gwl_int.h"
#include "log.h"

/* Zygote channel message types: a number space of their own, so a frame
 * sent on the wrong kind of channel is malformed on either. */
#define ZY_T_READY    64   /* Z -> M: app imported; {version, pid, runtime, interface} */
#define ZY_T_SPAWN    65   /* M -> Z: {slot, seq} + one fd (SCM_RIGHTS) */
#define ZY_T_SPAWNED  66   /* Z -> M: {slot, seq, pid} or {slot, seq, error} */
#define ZY_T_ERROR    67   /* Z -> M: {message, code}; the zygote exits */
#define ZY_T_QUIT     68   /* M -> Z: {} ; the zygote exits (workers stay) */
#define ZY_T_LOGFD    69   /* M -> Z: {} + one fd (SCM_RIGHTS): the new stderr */

#define ZY_PACKET_MAX     (64 * 1024)
#define ZY_SPAWN_TIMEOUT  5.0     /* seconds for one SPAWN -> SPAWNED exchange */
#define ZY_STOP_TIMEOUT   2.0     /* QUIT -> SIGKILL */
#define ZY_BACKOFF_MAX    10.0
#define ZY_POOL           4       /* the current one plus ones still stopping */

#ifndef PR_SET_CHILD_SUBREAPER
#define PR_SET_CHILD_SUBREAPER 36
#endif

typedef enum { ZY_NONE = 0, ZY_STARTING, ZY_READY, ZY_BACKOFF, ZY_STOPPING } zy_state_t;

typedef struct {
    zy_state_t state;
    pid_t      pid;
    int        fd;            /* master end of the channel, -1 if none */
    ev_io      rio;
    ev_child   child;
    ev_timer   timer;         /* import deadline, restart backoff, stop deadline */
    unsigned   generation;
    uint32_t   seq;           /* last SPAWN sequence number */
    unsigned   spawned;
    ev_tstamp  started_at;
    int        killed;        /* we sent SIGKILL (deadline, protocol error) */
    char       error[512];    /* the ERROR frame's message */
    char       iface[16];
} zygote_t;

static zygote_t pool[ZY_POOL];
static zygote_t *cur;          /* the one spawns go to (NULL before boot) */
static unsigned failures;      /* consecutive zygotes that died before READY */
static unsigned restarts;
static pid_t master_pid;

typedef struct {
    uint16_t   type;
    uint32_t   version, slot, seq, code;
    int64_t    pid;
    int        has_pid, has_slot, has_seq, has_version;
    const char *runtime, *iface, *message, *error;
    size_t     runtime_len, iface_len, message_len, error_len;
} zy_msg_t;

static const char *zy_state_name(zy_state_t s)
{
    static const char *const names[] = { "none", "starting", "ready", "backoff", "stopping" };
    return (unsigned)s <= ZY_STOPPING ? names[s] : "?";
}

/* Every Python worker is forked from a zygote: with --preload it has the
 * app imported, without it only the runtime (the app is imported in each
 * worker after the fork, as without preload in Gunicorn), so workers share
 * the interpreter's pages instead of each exec'ing a fresh one. */
int gw_zygote_enabled(void)
{
    return gw.python;
}

int gw_zygote_ready(void)
{
    return cur && cur->state == ZY_READY && cur->fd >= 0;
}

/* ---- the frame codec (a flat msgpack map; see PROTOCOL.md) ---- */

static uint8_t *put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
    return p + 4;
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);   /* keys only: short */
    *p++ = (uint8_t)(0xa0 | n);
    memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_uint(uint8_t *p, uint32_t v)
{
    if (v < 128) { *p++ = (uint8_t)v; return p; }
    if (v < 256) { *p++ = 0xcc; *p++ = (uint8_t)v; return p; }
    if (v < 65536) { *p++ = 0xcd; *p++ = (uint8_t)(v >> 8); *p++ = (uint8_t)v; return p; }
    *p++ = 0xce;
    return put_u32be(p, v);
}

/* frame = header + payload; returns its length. */
static size_t frame_spawn(uint8_t *buf, uint32_t slot, uint32_t seq)
{
    uint8_t *p = buf + GWP_HEADER_SIZE;
    *p++ = 0x82;
    p = put_str(p, "slot");
    p = put_uint(p, slot);
    p = put_str(p, "seq");
    p = put_uint(p, seq);
    size_t len = (size_t)(p - buf) - GWP_HEADER_SIZE;
    buf[0] = GWP_VERSION; buf[1] = ZY_T_SPAWN; buf[2] = 0; buf[3] = 0;
    put_u32be(buf + 4, 0);
    put_u32be(buf + 8, (uint32_t)len);
    return (size_t)(p - buf);
}

static size_t frame_empty(uint8_t *buf, uint8_t type)
{
    buf[0] = GWP_VERSION; buf[1] = type; buf[2] = 0; buf[3] = 0;
    put_u32be(buf + 4, 0);
    put_u32be(buf + 8, 1);
    buf[12] = 0x80;   /* {} */
    return 13;
}

typedef struct { const uint8_t *p, *end; } rd_t;

static int rd_n(rd_t *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n) return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x = (x << 8) | r->p[i];
    r->p += n;
    *v = x;
    return 0;
}

/*
 * One msgpack object head. kind: 'u' uint, 'i' negative int, 's' str/bin
 * (ptr, len), 'm' map (count), 'a' array (count), 'x' anything else
 * (skipped whole: nil, bool, float, ext). Counts are checked against the
 * bytes that remain.
 */
static int rd_head(rd_t *r, char *kind, uint64_t *v, const uint8_t **ptr)
{
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    uint64_t n = 0;
    if (b <= 0x7f) { *kind = 'u'; *v = b; return 0; }
    if (b >= 0xe0) { *kind = 'i'; *v = 0; return 0; }
    if ((b & 0xf0) == 0x80) { *kind = 'm'; n = b & 0x0f; goto container; }
    if ((b & 0xf0) == 0x90) { *kind = 'a'; n = b & 0x0f; goto container; }
    if ((b & 0xe0) == 0xa0) { *kind = 's'; n = b & 0x1f; goto bytes; }
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3: *kind = 'x'; return 0;
    case 0xcc: *kind = 'u'; return rd_n(r, 1, v);
    case 0xcd: *kind = 'u'; return rd_n(r, 2, v);
    case 0xce: *kind = 'u'; return rd_n(r, 4, v);
    case 0xcf: *kind = 'u'; return rd_n(r, 8, v);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t w = (size_t)1 << (b - 0xd0);
        if (rd_n(r, w, v) < 0) return -1;
        int neg = (*v >> (w * 8 - 1)) & 1;
        *kind = neg ? 'i' : 'u';
        return 0;
    }
    case 0xca: *kind = 'x'; return rd_n(r, 4, v);
    case 0xcb: *kind = 'x'; return rd_n(r, 8, v);
    case 0xd9: case 0xc4: *kind = 's'; if (rd_n(r, 1, &n) < 0) return -1; goto bytes;
    case 0xda: case 0xc5: *kind = 's'; if (rd_n(r, 2, &n) < 0) return -1; goto bytes;
    case 0xdb: case 0xc6: *kind = 's'; if (rd_n(r, 4, &n) < 0) return -1; goto bytes;
    case 0xdc: *kind = 'a'; if (rd_n(r, 2, &n) < 0) return -1; goto container;
    case 0xdd: *kind = 'a'; if (rd_n(r, 4, &n) < 0) return -1; goto container;
    case 0xde: *kind = 'm'; if (rd_n(r, 2, &n) < 0) return -1; goto container;
    case 0xdf: *kind = 'm'; if (rd_n(r, 4, &n) < 0) return -1; goto container;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        *kind = 'x'; n = 1 + ((size_t)1 << (b - 0xd4)); goto skip;
    case 0xc7: *kind = 'x'; if (rd_n(r, 1, &n) < 0) return -1; n++; goto skip;
    case 0xc8: *kind = 'x'; if (rd_n(r, 2, &n) < 0) return -1; n++; goto skip;
    case 0xc9: *kind = 'x'; if (rd_n(r, 4, &n) < 0) return -1; n++; goto skip;
    default: return -1;   /* 0xc1 */
    }
bytes:
    if (n > (uint64_t)(r->end - r->p)) return -1;
    *ptr = r->p;
    *v = n;
    r->p += n;
    return 0;
skip:
    if (n > (uint64_t)(r->end - r->p)) return -1;
    r->p += n;
    return 0;
container:
    if (n > (uint64_t)(r->end - r->p) / (*kind == 'm' ? 2 : 1)) return -1;
    *v = n;
    return 0;
}

static int rd_skip(rd_t *r, int depth)
{
    char k;
    uint64_t v;
    const uint8_t *ptr;
    if (depth > 8 || rd_head(r, &k, &v, &ptr) < 0) return -1;
    if (k == 'm') v *= 2;
    if (k == 'm' || k == 'a')
        for (uint64_t i = 0; i < v; i++)
            if (rd_skip(r, depth + 1) < 0) return -1;
    return 0;
}

static int key_is(const uint8_t *k, uint64_t n, const char *name)
{
    return n == strlen(name) && memcmp(k, name, n) == 0;
}

/* Decode one packet; -1 with *why on anything malformed. */
static int zy_decode(const uint8_t *buf, size_t n, zy_msg_t *m, const char **why)
{
    memset(m, 0, sizeof(*m));
    if (n < GWP_HEADER_SIZE) { *why = "short frame"; return -1; }
    uint32_t stream = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
    uint32_t len = (uint32_t)buf[8] << 24 | (uint32_t)buf[9] << 16 | (uint32_t)buf[10] << 8 | buf[11];
    if (buf[0] != GWP_VERSION) { *why = "bad version"; return -1; }
    m->type = buf[1];
    if (m->type != ZY_T_READY && m->type != ZY_T_SPAWNED && m->type != ZY_T_ERROR) {
        *why = "unexpected message type";
        return -1;
    }
    if (buf[2] || buf[3] || stream != 0) { *why = "flags or stream set"; return -1; }
    if (len == 0 || len != n - GWP_HEADER_SIZE) { *why = "length does not match the packet"; return -1; }
    rd_t r = { buf + GWP_HEADER_SIZE, buf + n };
    char k;
    uint64_t cnt, v;
    const uint8_t *ptr = NULL;
    if (rd_head(&r, &k, &cnt, &ptr) < 0 || k != 'm') { *why = "payload is not a map"; return -1; }
    for (uint64_t i = 0; i < cnt; i++) {
        const uint8_t *key;
        uint64_t klen;
        if (rd_head(&r, &k, &klen, &key) < 0 || k != 's') { *why = "bad key"; return -1; }
        const uint8_t *save = r.p;
        if (rd_head(&r, &k, &v, &ptr) < 0) { *why = "bad value"; return -1; }
        if (k == 'm' || k == 'a') {   /* no known key holds one: skip it */
            r.p = save;
            if (rd_skip(&r, 2) < 0) { *why = "bad value"; return -1; }
            continue;
        }
#define UINTKEY(name, field, flag, max)                                           \
        if (key_is(key, klen, name)) {                                           \
            if (k != 'u' || v > (max)) { *why = "bad " name; return -1; }        \
            m->field = (uint32_t)v; m->flag = 1; continue;                       \
        }
#define STRKEY(name, field)                                                       \
        if (key_is(key, klen, name)) {                                           \
            if (k != 's') { *why = "bad " name; return -1; }                     \
            m->field = (const char *)ptr; m->field##_len = (size_t)v; continue;  \
        }
        UINTKEY("version", version, has_version, 0xffffffffu)
        UINTKEY("slot", slot, has_slot, 0xffffffffu)
        UINTKEY("seq", seq, has_seq, 0xffffffffu)
        if (key_is(key, klen, "code")) {
            if (k != 'u' || v > 255) { *why = "bad code"; return -1; }
            m->code = (uint32_t)v;
            continue;
        }
        if (key_is(key, klen, "pid")) {
            if (k != 'u' || v < 2 || v > 0x7fffffff) { *why = "bad pid"; return -1; }
            m->pid = (int64_t)v; m->has_pid = 1;
            continue;
        }
        STRKEY("runtime", runtime)
        STRKEY("interface", iface)
        STRKEY("message", message)
        STRKEY("error", error)
#undef UINTKEY
#undef STRKEY
    }
    if (r.p != r.end) { *why = "bytes after the payload"; return -1; }
    if (m->type == ZY_T_READY && (!m->has_version || !m->has_pid)) {
        *why = "READY without version or pid";
        return -1;
    }
    if (m->type == ZY_T_SPAWNED && (!m->has_seq || (!m->has_pid && !m->error))) {
        *why = "SPAWNED without seq, or without pid or error";
        return -1;
    }
    if (m->type == ZY_T_ERROR && !m->message) { *why = "ERROR without message"; return -1; }
    return 0;
}

/* ---- I/O on the channel ---- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for events on fd until the absolute monotonic deadline: 1 ready,
 * 0 timed out, -1 error. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - mono_now();
        if (left <= 0) return 0;
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0) return 1;
        if (rc == 0) continue;   /* re-checks the deadline */
        if (errno != EINTR) return -1;
    }
}

/* Send one frame (with pass_fd attached when >= 0). 0 or -errno. */
static int zy_send(zygote_t *z, const uint8_t *frame, size_t len, int pass_fd, double deadline)
{
    struct iovec iov = { .iov_base = (void *)frame, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    memset(&u, 0, sizeof(u));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (pass_fd >= 0) {
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    for (;;) {
        ssize_t n = sendmsg(z->fd, &msg, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return 0;
        if (n >= 0) return -EMSGSIZE;   /* cannot happen on SEQPACKET */
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(z->fd, POLLOUT, deadline);
            if (rc > 0) continue;
            return rc == 0 ? -ETIMEDOUT : -errno;
        }
        return -errno;
    }
}

/* Receive one packet into buf. >0 its length, 0 EOF, -EAGAIN nothing yet,
 * -EBADMSG truncated or carrying descriptors (closed), other -errno. */
static ssize_t zy_recv(zygote_t *z, uint8_t *buf, size_t cap)
{
    union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } u;
    struct iovec iov = { .iov_base = buf, .iov_len = cap };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    for (;;) {
        ssize_t n = recvmsg(z->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        int bad = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                close(fd);   /* the zygote never sends descriptors */
            }
            bad = 1;
        }
        return bad ? -EBADMSG : n;
    }
}

/* ---- process lifecycle ---- */

static void zy_on_readable(struct ev_loop *loop, ev_io *io, int revents);
static void zy_on_exit(struct ev_loop *loop, ev_child *c, int revents);
static void zy_on_timer(struct ev_loop *loop, ev_timer *t, int revents);

static void zy_close_channel(zygote_t *z)
{
    if (z->fd < 0) return;
    if (gw.loop) ev_io_stop(gw.loop, &z->rio);
    close(z->fd);
    z->fd = -1;
}

static void zy_kill(zygote_t *z, const char *why)
{
    if (z->pid <= 0) return;
    if (why) gw_error("zygote (pid %d): %s; killing it", (int)z->pid, why);
    z->killed = 1;
    kill(z->pid, SIGKILL);
    zy_close_channel(z);
}

static zygote_t *zy_alloc(void)
{
    for (int i = 0; i < ZY_POOL; i++) {
        zygote_t *z = &pool[i];
        if (z->state == ZY_NONE && z->pid <= 0) {
            z->fd = -1;
            return z;
        }
    }
    return NULL;
}

/* Fork one zygote: the same child set-up as a worker (no listeners, no
 * client or channel descriptors, --user/--group), then exec the runtime in
 * zygote mode with its channel on fd 3. */
static int zy_fork(zygote_t *z, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "cannot start the zygote: socketpair: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot start the zygote: fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        gw_child_setup(sv[1], "zygote", "gw-zygote", -1);
        gw_python_exec("zygote");
    }
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    z->pid = pid;
    z->fd = sv[0];
    z->state = ZY_STARTING;
    z->seq = 0;
    z->spawned = 0;
    z->killed = 0;
    z->error[0] = '\0';
    z->iface[0] = '\0';
    z->generation = gw.generation;
    z->started_at = gw.loop ? ev_now(gw.loop) : 0;
    return 0;
}

/* Watchers on gw.loop for a running zygote. */
static void zy_watch(zygote_t *z)
{
    ev_io_init(&z->rio, zy_on_readable, z->fd, EV_READ);
    ev_io_start(gw.loop, &z->rio);
    ev_child_init(&z->child, zy_on_exit, z->pid, 0);
    ev_child_start(gw.loop, &z->child);
    ev_init(&z->timer, zy_on_timer);
}

/* In the loop: start z (a new zygote or a restart); on failure retry later. */
static void zy_start(zygote_t *z)
{
    char err[256];
    if (zy_fork(z, err, sizeof(err)) < 0) {
        gw_error("%s; retrying in 1 s", err);
        z->state = ZY_BACKOFF;
        ev_init(&z->timer, zy_on_timer);
        ev_timer_set(&z->timer, 1.0, 0.);
        ev_timer_start(gw.loop, &z->timer);
        return;
    }
    zy_watch(z);
    ev_timer_set(&z->timer, gw.cfg.boot_timeout, 0.);
    ev_timer_start(gw.loop, &z->timer);
    gw_info("zygote (pid %d) started: importing %s (generation %u)", (int)z->pid,
            gw.cfg.app_spec, z->generation);
}

/* QUIT (then closing our end, which the zygote also reads as QUIT); SIGKILL
 * if it is still there after ZY_STOP_TIMEOUT. */
static void zy_stop_one(zygote_t *z, const char *why)
{
    if (z->state == ZY_NONE) return;
    if (z->state == ZY_BACKOFF) {
        ev_timer_stop(gw.loop, &z->timer);
        z->state = ZY_NONE;
        return;
    }
    if (z->state == ZY_STOPPING) return;
    if (z->pid > 0 && z->state == ZY_STARTING) {
        /* still importing: it reads no QUIT before it is done */
        if (why) gw_info("zygote (pid %d) stopping: %s", (int)z->pid, why);
        z->killed = 1;
        kill(z->pid, SIGTERM);
    } else if (z->pid > 0) {
        if (why) gw_info("zygote (pid %d) stopping: %s", (int)z->pid, why);
        uint8_t f[16];
        size_t n = frame_empty(f, ZY_T_QUIT);
        if (z->fd < 0 || zy_send(z, f, n, -1, mono_now()) < 0) kill(z->pid, SIGTERM);
    }
    zy_close_channel(z);
    z->state = ZY_STOPPING;
    ev_timer_stop(gw.loop, &z->timer);
    ev_timer_set(&z->timer, ZY_STOP_TIMEOUT, 0.);
    ev_timer_start(gw.loop, &z->timer);
}

static void zy_on_ready_msg(zygote_t *z, const zy_msg_t *m)
{
    snprintf(z->iface, sizeof(z->iface), "%.*s", (int)m->iface_len, m->iface ? m->iface : "");
    if (gw.loop) ev_timer_stop(gw.loop, &z->timer);
    z->state = ZY_READY;
    failures = 0;
    if (gw.cfg.preload)
        gw_info("zygote (pid %d) ready: app %s imported once%s%s%s", (int)z->pid,
                gw.cfg.app_spec, z->iface[0] ? " (" : "", z->iface, z->iface[0] ? ")" : "");
    else
        gw_info("zygote (pid %d) ready (runtime only): each worker imports %s after the fork",
                (int)z->pid, gw.cfg.app_spec);
}

static void zy_on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    zygote_t *z = (zygote_t *)((char *)io - offsetof(zygote_t, rio));
    static uint8_t buf[ZY_PACKET_MAX];
    for (int rounds = 0; rounds < 16 && z->fd >= 0; rounds++) {
        ssize_t n = zy_recv(z, buf, sizeof(buf));
        if (n == -EAGAIN) return;
        if (n == 0) {   /* it exited or closed: the reap tells why */
            zy_close_channel(z);
            return;
        }
        if (n < 0) {
            zy_kill(z, n == -EBADMSG ? "protocol error: truncated packet or descriptors"
                                     : strerror((int)-n));
            return;
        }
        zy_msg_t m;
        const char *why = "?";
        if (zy_decode(buf, (size_t)n, &m, &why) < 0) {
            char e[96];
            snprintf(e, sizeof(e), "protocol error: %s", why);
            zy_kill(z, e);
            return;
        }
        if (m.type == ZY_T_ERROR) {
            snprintf(z->error, sizeof(z->error), "%.*s", (int)m.message_len, m.message);
            gw_error("zygote (pid %d): %s", (int)z->pid, z->error);
            continue;
        }
        if (m.type == ZY_T_READY && z->state == ZY_STARTING) {
            if (m.version != GWP_VERSION) {
                char e[96];
                snprintf(e, sizeof(e), "protocol version %u, master speaks %u", m.version,
                         GWP_VERSION);
                zy_kill(z, e);
                return;
            }
            zy_on_ready_msg(z, &m);
            /* The zygotes of earlier generations are no longer needed. */
            for (int i = 0; i < ZY_POOL; i++)
                if (&pool[i] != z && z == cur)
                    zy_stop_one(&pool[i], "replaced by a reload");
            if (z == cur) gw_supervisor_zygote_ready();
            continue;
        }
        zy_kill(z, m.type == ZY_T_SPAWNED ? "protocol error: SPAWNED nobody asked for"
                                          : "protocol error: unexpected READY");
        return;
    }
}

static void zy_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    zygote_t *z = (zygote_t *)((char *)t - offsetof(zygote_t, timer));
    switch (z->state) {
    case ZY_STARTING: {
        char e[128];
        snprintf(e, sizeof(e), "did not import the app within %.0f s (--boot-timeout)",
                 gw.cfg.boot_timeout);
        zy_kill(z, e);
        break;
    }
    case ZY_BACKOFF:
        if (!gw.stopping) zy_start(z);
        break;
    case ZY_STOPPING:
        if (z->pid > 0) {
            gw_warn("zygote (pid %d) still running %.0f s after QUIT; killing it", (int)z->pid,
                    ZY_STOP_TIMEOUT);
            z->killed = 1;
            kill(z->pid, SIGKILL);
        }
        break;
    default:
        break;
    }
}

/* After the reap: keep the message of an ERROR still in the channel. */
static void zy_drain_errors(zygote_t *z)
{
    static uint8_t buf[ZY_PACKET_MAX];
    for (int i = 0; i < 16 && z->fd >= 0; i++) {
        ssize_t n = zy_recv(z, buf, sizeof(buf));
        if (n == -EBADMSG) continue;
        if (n <= 0) break;
        zy_msg_t m;
        const char *why;
        if (zy_decode(buf, (size_t)n, &m, &why) == 0 && m.type == ZY_T_ERROR) {
            snprintf(z->error, sizeof(z->error), "%.*s", (int)m.message_len, m.message);
            gw_error("zygote (pid %d): %s", (int)z->pid, z->error);
        }
    }
}

static void zy_on_exit(struct ev_loop *loop, ev_child *c, int revents)
{
    zygote_t *z = (zygote_t *)((char *)c - offsetof(zygote_t, child));
    int st = c->rstatus;
    ev_child_stop(loop, c);
    ev_timer_stop(loop, &z->timer);
    zy_drain_errors(z);   /* an ERROR frame may still be in the channel */
    zy_close_channel(z);
    pid_t pid = z->pid;
    int was_ready = z->state == ZY_READY;
    int expected = z->state == ZY_STOPPING || gw.stopping || z != cur;
    z->pid = 0;

    char how[96];
    if (WIFSIGNALED(st))
        snprintf(how, sizeof(how), "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(st));
    if (expected) {
        /* stopped by us (QUIT, or a signal we sent) is routine */
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) gw_info("zygote (pid %d) exited", (int)pid);
        else if (z->killed && WIFSIGNALED(st)) gw_info("zygote (pid %d) stopped: %s", (int)pid, how);
        else gw_log(gw.stopping ? GW_LOG_WARN : GW_LOG_ERROR, "zygote (pid %d) %s", (int)pid, how);
        z->state = ZY_NONE;
        gw_supervisor_zygote_exited();
        return;
    }
    /* The current zygote died: the workers it forked keep serving; spawns
     * wait for its replacement. */
    if (!was_ready) failures++;
    double delay = 0.1;
    for (unsigned i = 1; i < failures && delay < ZY_BACKOFF_MAX; i++) delay *= 2;
    if (delay > ZY_BACKOFF_MAX) delay = ZY_BACKOFF_MAX;
    if (was_ready)
        gw_log(z->killed ? GW_LOG_ERROR : WIFSIGNALED(st) ? GW_LOG_ALERT : GW_LOG_ERROR,
               "zygote (pid %d) %s; workers keep serving; starting a new zygote in %.1f s",
               (int)pid, how, delay);
    else
        gw_error("zygote (pid %d) %s before it was ready%s%s (%u in a row); "
                 "starting a new zygote in %.1f s", (int)pid, how, z->error[0] ? ": " : "",
                 z->error, failures, delay);
    restarts++;
    z->state = ZY_BACKOFF;
    ev_timer_set(&z->timer, delay, 0.);
    ev_timer_start(loop, &z->timer);
}

/* ---- the interface to main.c and supervisor.c ---- */

static void zy_atexit(void)
{
    if (getpid() == master_pid) gw_zygote_kill_all();
}

static pid_t proc_ppid(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid;
    char state;
    if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2) return -1;
    return (pid_t)ppid;
}

int gw_zygote_boot(char *err, size_t errlen)
{
    master_pid = getpid();
    for (int i = 0; i < ZY_POOL; i++) pool[i].fd = -1;
    /* Workers are forked by the zygote's child, which exits at once: as a
     * subreaper the master inherits them and can waitpid/signal them. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        snprintf(err, errlen, "cannot become a child subreaper: %s", strerror(errno));
        return -1;
    }
    atexit(zy_atexit);
    zygote_t *z = zy_alloc();
    if (zy_fork(z, err, errlen) < 0) return -1;
    cur = z;

    /* Wait for READY or ERROR (nothing is bound yet: the same moment as the
     * import check without --preload). */
    static uint8_t buf[ZY_PACKET_MAX];
    double deadline = mono_now() + gw.cfg.boot_timeout;
    const char *fail = NULL;
    char why[160];
    for (;;) {
        int rc = wait_fd(z->fd, POLLIN, deadline);
        if (rc == 0) {
            snprintf(why, sizeof(why), "the app was not imported within %.0f s (--boot-timeout)",
                     gw.cfg.boot_timeout);
            fail = why;
            break;
        }
        if (rc < 0) { fail = "the zygote's channel failed"; break; }
        ssize_t n = zy_recv(z, buf, sizeof(buf));
        if (n == -EAGAIN) continue;
        if (n <= 0) { fail = n == 0 ? "" : "protocol error on the zygote's channel"; break; }
        zy_msg_t m;
        const char *w = "?";
        if (zy_decode(buf, (size_t)n, &m, &w) < 0) {
            snprintf(why, sizeof(why), "protocol error from the zygote: %s", w);
            fail = why;
            break;
        }
        if (m.type == ZY_T_ERROR) {
            snprintf(z->error, sizeof(z->error), "%.*s", (int)m.message_len, m.message);
            fail = z->error;
            break;
        }
        if (m.type == ZY_T_READY && m.version == GWP_VERSION) {
            zy_on_ready_msg(z, &m);
            return 0;
        }
        snprintf(why, sizeof(why), "protocol error from the zygote: unexpected %s",
                 m.type == ZY_T_READY ? "protocol version" : "message");
        fail = why;
        break;
    }
    /* Failed: leave nothing running. After an ERROR or EOF the zygote is
     * exiting by itself (its status explains an EOF); otherwise, or if it
     * lingers, it is killed. */
    int st = 0;
    int exiting = fail == z->error || !fail[0];
    zy_close_channel(z);
    if (!exiting) kill(z->pid, SIGKILL);
    double kill_at = mono_now() + 2.0;
    for (;;) {
        pid_t r = waitpid(z->pid, &st, WNOHANG);
        if (r == z->pid || (r < 0 && errno != EINTR)) break;
        if (mono_now() > kill_at) {
            kill(z->pid, SIGKILL);
            kill_at = mono_now() + 3600;
        }
        if (r == 0) usleep(2000);
    }
    if (!fail[0]) {
        if (WIFSIGNALED(st))
            snprintf(why, sizeof(why), "the zygote (Python runtime) was killed by signal %d (%s) "
                     "while importing the app", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            snprintf(why, sizeof(why), "the zygote (Python runtime) exited with status %d "
                     "before the app was imported", WEXITSTATUS(st));
        fail = why;
    }
    snprintf(err, errlen, "%s", fail);
    z->pid = 0;
    z->state = ZY_NONE;
    cur = NULL;
    return -1;
}

void gw_zygote_reopen_logs(void)
{
    /* The master's stderr is the (re)opened --error-logfile: hand it to
     * every zygote, so the workers it forks from now on write there. */
    for (int i = 0; i < ZY_POOL; i++) {
        zygote_t *z = &pool[i];
        if (z->pid <= 0 || z->fd < 0 || z->state == ZY_STOPPING) continue;
        uint8_t f[16];
        size_t n = frame_empty(f, ZY_T_LOGFD);
        int rc = zy_send(z, f, n, STDERR_FILENO, mono_now() + 0.5);
        if (rc < 0)
            gw_warn("zygote (pid %d): cannot pass the error log: %s", (int)z->pid,
                    strerror(-rc));
    }
}

void gw_zygote_attach(void)
{
    zygote_t *z = cur;
    if (!z || z->pid <= 0) return;
    z->generation = gw.generation;
    z->started_at = ev_now(gw.loop);
    zy_watch(z);
    /* Started before gw_log_activate(): its stderr is still the terminal. */
    if (gw.cfg.error_logfile && strcmp(gw.cfg.error_logfile, "-") != 0) gw_zygote_reopen_logs();
    /* It may have died before the loop's SIGCHLD handler existed: that
     * signal is lost, so look once. */
    int st;
    if (waitpid(z->pid, &st, WNOHANG) == z->pid) {
        z->child.rstatus = st;
        z->child.rpid = z->pid;
        zy_on_exit(gw.loop, &z->child, EV_CHILD);
    }
}

int gw_zygote_spawn(int slot, int fd, pid_t *pid_out)
{
    zygote_t *z = cur;
    if (!gw_zygote_ready()) return -EAGAIN;
    static uint8_t buf[ZY_PACKET_MAX];
    uint8_t f[64];
    uint32_t seq = ++z->seq;
    size_t flen = frame_spawn(f, (uint32_t)slot, seq);
    double deadline = mono_now() + ZY_SPAWN_TIMEOUT;
    int rc = zy_send(z, f, flen, fd, deadline);
    if (rc < 0) {
        char e[96];
        snprintf(e, sizeof(e), "cannot send a spawn request: %s", strerror(-rc));
        zy_kill(z, e);
        return -EAGAIN;
    }
    for (;;) {
        int w = wait_fd(z->fd, POLLIN, deadline);
        if (w <= 0) {
            char e[128];
            snprintf(e, sizeof(e), "no answer to a spawn request within %.0f s",
                     ZY_SPAWN_TIMEOUT);
            zy_kill(z, e);
            return -EAGAIN;
        }
        ssize_t n = zy_recv(z, buf, sizeof(buf));
        if (n == -EAGAIN) continue;
        if (n == 0) {   /* it died: the reap restarts it, the slot waits */
            zy_close_channel(z);
            return -EAGAIN;
        }
        if (n < 0) {
            zy_kill(z, "protocol error: truncated packet or descriptors");
            return -EAGAIN;
        }
        zy_msg_t m;
        const char *why = "?";
        if (zy_decode(buf, (size_t)n, &m, &why) < 0 || m.type != ZY_T_SPAWNED || m.seq != seq) {
            char e[128];
            snprintf(e, sizeof(e), "protocol error: %s", m.type == ZY_T_ERROR && m.message
                     ? "ERROR instead of SPAWNED" : m.type == ZY_T_SPAWNED
                     ? "SPAWNED out of sequence" : why);
            zy_kill(z, e);
            return -EAGAIN;
        }
        if (!m.has_pid) {
            gw_error("zygote (pid %d): worker %d: %.*s", (int)z->pid, slot,
                     (int)m.error_len, m.error);
            return -ECHILD;
        }
        pid_t pid = (pid_t)m.pid;
        /* The zygote answers once the middle process has exited, so the
         * worker is ours by now; a pid that is not our child is refused
         * rather than ever signalled. */
        if (proc_ppid(pid) != getpid()) {
            char e[128];
            snprintf(e, sizeof(e), "reported worker pid %d, which is not a child of the master",
                     (int)pid);
            zy_kill(z, e);
            return -EAGAIN;
        }
        z->spawned++;
        *pid_out = pid;
        gw_debug("zygote (pid %d) forked worker %d (pid %d) in %.1f ms", (int)z->pid, slot,
                 (int)pid, (mono_now() - (deadline - ZY_SPAWN_TIMEOUT)) * 1000);
        return 0;
    }
}

void gw_zygote_reload(void)
{
    if (gw.stopping) return;
    /* Only the current zygote can still be useful until the new one is
     * ready; any other is already on its way out. A current one that is not
     * ready (importing, or waiting to restart) is obsolete too. */
    zygote_t *z = NULL;
    if (cur && cur->state == ZY_BACKOFF) {
        ev_timer_stop(gw.loop, &cur->timer);
        cur->state = ZY_NONE;
        z = cur;
    } else {
        z = zy_alloc();
    }
    if (!z) {
        gw_error("reload: too many zygotes still stopping; the new workers use the current one");
        return;
    }
    if (cur && cur != z && cur->state != ZY_READY) zy_stop_one(cur, "superseded by a newer reload");
    failures = 0;
    cur = z;
    zy_start(z);
}

void gw_zygote_stop(void)
{
    for (int i = 0; i < ZY_POOL; i++) zy_stop_one(&pool[i], NULL);
}

int gw_zygote_all_exited(void)
{
    for (int i = 0; i < ZY_POOL; i++)
        if (pool[i].pid > 0) return 0;
    return 1;
}

void gw_zygote_kill_all(void)
{
    for (int i = 0; i < ZY_POOL; i++) {
        zygote_t *z = &pool[i];
        if (z->pid <= 0) continue;
        kill(z->pid, SIGKILL);
        int st;
        while (waitpid(z->pid, &st, 0) < 0 && errno == EINTR) {}
        if (gw.loop) ev_child_stop(gw.loop, &z->child);
        zy_close_channel(z);
        z->pid = 0;
        z->state = ZY_NONE;
    }
}

void gw_zygote_info(gw_zygote_info_t *out)
{
    memset(out, 0, sizeof(*out));
    out->enabled = gw_zygote_enabled();
    out->state = "none";
    if (!out->enabled) return;
    if (cur) {
        out->pid = cur->pid > 0 ? cur->pid : 0;
        out->state = zy_state_name(cur->state);
        out->generation = cur->generation;
        out->spawned = cur->spawned;
        out->started_at = cur->started_at;
    }
    out->restarts = restarts;
    for (int i = 0; i < ZY_POOL; i++)
        if (&pool[i] != cur && pool[i].pid > 0) out->old_pid = pool[i].pid;
}
