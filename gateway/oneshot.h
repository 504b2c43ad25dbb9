/*
 * oneshot.h - a tiny server for the master's side doors (control socket,
 * metrics endpoint): each connection sends one request, gets one reply,
 * and is closed. Non-blocking on the master's loop, with a bounded request
 * buffer, a cap on clients, a whole-exchange deadline, and accept paused
 * for a second after EMFILE. The protocol on top is the owner's: it says
 * when a request is complete and what to answer.
 */
#ifndef GW_ONESHOT_H
#define GW_ONESHOT_H

#include <ev.h>
#include <stdarg.h>
#include <stddef.h>

#include "gateway.h"

typedef struct gw_oneshot_s        gw_oneshot_t;
typedef struct gw_oneshot_client_s gw_oneshot_client_t;

/*
 * More request bytes arrived: buf[0..len) (NUL-terminated at len), of which
 * buf[from..len) are new; eof when the peer closed its side, full when the
 * buffer reached max_request. Answer with gw_oneshot_reply() and return 1,
 * return 0 to read more, or -1 to close without an answer.
 */
typedef int (*gw_oneshot_data_cb)(gw_oneshot_client_t *c, char *buf, size_t len, size_t from,
                                  int eof, int full);

struct gw_oneshot_s {
    /* set by the owner */
    const char        *what;          /* for log lines: "control socket", "metrics" */
    size_t             max_request;   /* request bytes kept */
    unsigned           max_clients;
    double             timeout;       /* seconds for the whole exchange */
    const char        *busy_reply;    /* sent (best effort) past max_clients */
    gw_oneshot_data_cb on_data;
    /* private */
    int                fd;
    gw_listener_t      lst;
    ev_io              io;
    ev_timer           pause;
    struct ev_loop    *loop;
    gw_oneshot_client_t *clients;
    unsigned           nclients;
};

/* Bind spec (listener.c's syntax and errors, with label) and serve it on
 * the master's default loop. 0, or -1 after one "gateway: ..." line. */
int  gw_oneshot_start(gw_oneshot_t *s, const char *spec, const char *name, unsigned unix_mode,
                      const char *label);
/* Drop the clients, close the socket, remove a unix socket file. */
void gw_oneshot_stop(gw_oneshot_t *s);
/* Send data[0..len) (malloc'd; the server frees it) and close. */
void gw_oneshot_reply(gw_oneshot_client_t *c, char *data, size_t len);
/* The client's socket (e.g. for SO_PEERCRED). */
int  gw_oneshot_fd(const gw_oneshot_client_t *c);

/* A growing text buffer for building replies. Zero-initialise; max caps it
 * (0: 8 MiB). Once a write fails or would pass max, overflow is set and
 * further writes are ignored; p is malloc'd (hand it to gw_oneshot_reply). */
typedef struct {
    char  *p;
    size_t len, cap, max;
    int    overflow;
} gw_text_t;

void gw_text_vprintf(gw_text_t *t, const char *fmt, va_list ap);
void gw_text_printf(gw_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* GW_ONESHOT_H */
