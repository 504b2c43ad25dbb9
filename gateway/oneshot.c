/*
 * oneshot.c - see oneshot.h. Master process, default loop.
 */
#include "oneshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define ACCEPT_BATCH 16

struct gw_oneshot_client_s {
    ev_io                io;        /* first: read, then write */
    ev_timer             timer;     /* whole-exchange deadline */
    int                  fd;
    gw_oneshot_t        *srv;
    char                *req;       /* max_request + 1 bytes */
    size_t               req_len;
    char                *reply;
    size_t               reply_len, sent;
    gw_oneshot_client_t *prev, *next;
};

int gw_oneshot_fd(const gw_oneshot_client_t *c) { return c->fd; }

void gw_text_vprintf(gw_text_t *t, const char *fmt, va_list ap)
{
    size_t max = t->max ? t->max : (8u << 20);
    if (t->overflow) return;
    for (;;) {
        size_t room = t->cap - t->len;
        va_list aq;
        va_copy(aq, ap);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, room, fmt, aq);
        va_end(aq);
        if (n < 0) { t->overflow = 1; return; }
        if ((size_t)n < room) { t->len += (size_t)n; return; }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= (size_t)n) cap *= 2;
        char *p = cap <= max ? realloc(t->p, cap) : NULL;
        if (!p) { t->overflow = 1; return; }
        t->p = p;
        t->cap = cap;
    }
}

void gw_text_printf(gw_text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_text_vprintf(t, fmt, ap);
    va_end(ap);
}

static void client_close(gw_oneshot_client_t *c)
{
    gw_oneshot_t *s = c->srv;
    ev_io_stop(s->loop, &c->io);
    ev_timer_stop(s->loop, &c->timer);
    close(c->fd);
    if (c->prev) c->prev->next = c->next; else s->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nclients--;
    free(c->reply);
    free(c->req);
    free(c);
}

static void client_on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_oneshot_client_t *c = (gw_oneshot_client_t *)io;
    while (c->sent < c->reply_len) {
        ssize_t n = send(c->fd, c->reply + c->sent, c->reply_len - c->sent, MSG_NOSIGNAL);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;   /* wait */
        break;   /* peer gone */
    }
    client_close(c);
}

void gw_oneshot_reply(gw_oneshot_client_t *c, char *data, size_t len)
{
    gw_oneshot_t *s = c->srv;
    if (!data) { client_close(c); return; }
    c->reply = data;
    c->reply_len = len;
    ev_io_stop(s->loop, &c->io);
    ev_io_init(&c->io, client_on_writable, c->fd, EV_WRITE);
    ev_io_start(s->loop, &c->io);
    client_on_writable(s->loop, &c->io, EV_WRITE);   /* now, if the socket takes it */
}

static void client_on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_oneshot_client_t *c = (gw_oneshot_client_t *)io;
    gw_oneshot_t *s = c->srv;
    for (;;) {
        ssize_t n = recv(c->fd, c->req + c->req_len, s->max_request - c->req_len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) { client_close(c); return; }
        size_t from = c->req_len;
        c->req_len += (size_t)n;
        c->req[c->req_len] = '\0';
        int rc = s->on_data(c, c->req, c->req_len, from, n == 0, c->req_len == s->max_request);
        if (rc != 0) {
            if (rc < 0) client_close(c);
            return;          /* answered (or closed): the client is no longer ours */
        }
        if (n == 0 || c->req_len == s->max_request) { client_close(c); return; }
    }
}

static void client_on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    client_close((gw_oneshot_client_t *)((char *)t - offsetof(gw_oneshot_client_t, timer)));
}

static void on_pause_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    gw_oneshot_t *s = (gw_oneshot_t *)((char *)t - offsetof(gw_oneshot_t, pause));
    if (s->fd >= 0) ev_io_start(loop, &s->io);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_oneshot_t *s = (gw_oneshot_t *)((char *)io - offsetof(gw_oneshot_t, io));
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                gw_warn("%s: accept: %s; pausing 1s", s->what, strerror(errno));
                ev_io_stop(loop, &s->io);
                ev_timer_set(&s->pause, 1.0, 0.);
                ev_timer_start(loop, &s->pause);
            }
            return;
        }
        if (s->nclients >= s->max_clients) {
            ssize_t r = send(fd, s->busy_reply, strlen(s->busy_reply), MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)r;
            close(fd);
            continue;
        }
        gw_oneshot_client_t *c = calloc(1, sizeof(*c));
        char *req = c ? malloc(s->max_request + 1) : NULL;
        if (!req) { free(c); close(fd); continue; }
        c->fd = fd;
        c->srv = s;
        c->req = req;
        ev_io_init(&c->io, client_on_readable, fd, EV_READ);
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, client_on_timeout, s->timeout, 0.);
        ev_timer_start(loop, &c->timer);
        c->next = s->clients;
        if (s->clients) s->clients->prev = c;
        s->clients = c;
        s->nclients++;
    }
}

int gw_oneshot_start(gw_oneshot_t *s, const char *spec, const char *name, unsigned unix_mode,
                     const char *label)
{
    s->fd = -1;
    if (gw_listener_bind(&s->lst, spec, name, 64, unix_mode, label) < 0) return -1;
    s->fd = s->lst.fd;
    /* main may create the default loop after this; ev_default_loop returns
     * the same loop to every caller. */
    s->loop = gw.loop ? gw.loop : ev_default_loop(EVFLAG_AUTO);
    if (!s->loop) {
        fprintf(stderr, "gateway: cannot bind %s %s: cannot create the event loop\n", label, name);
        gw_oneshot_stop(s);
        return -1;
    }
    ev_io_init(&s->io, on_accept, s->fd, EV_READ);
    ev_io_start(s->loop, &s->io);
    ev_init(&s->pause, on_pause_end);
    return 0;
}

void gw_oneshot_stop(gw_oneshot_t *s)
{
    while (s->clients) client_close(s->clients);
    if (s->fd >= 0) {
        if (s->loop) {
            ev_io_stop(s->loop, &s->io);
            ev_timer_stop(s->loop, &s->pause);
        }
        gw_listener_close(&s->lst);   /* closes and removes a unix socket file */
        s->fd = -1;
    }
}
