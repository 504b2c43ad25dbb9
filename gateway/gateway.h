/*
 * gateway.h - the master process's shared state and the internal interfaces
 * between its parts: listeners (listener.c), the HTTP front (front.c), the
 * worker table and channels (supervisor.c) and dispatch (balance.c).
 * Everything here runs on the master's one libev default loop.
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <ev.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "gwp.h"
#include "http1.h"

typedef struct gw_conn_s     gw_conn_t;
typedef struct gw_req_s      gw_req_t;
typedef struct gw_worker_s   gw_worker_t;
typedef struct gw_listener_s gw_listener_t;

/* ---- listeners ---- */

struct gw_listener_s {
    ev_io  io;            /* first: the watcher's address is the listener's */
    int    fd;
    int    is_unix;
    char   name[128];     /* as given: "127.0.0.1:8000", "unix:/run/x.sock" */
    char   addr[128];     /* canonical local address for REQUEST.server */
    char  *unix_path;     /* owned; unlinked on close */
};

/* Bind every cfg->binds[i]. On failure prints one "gateway: ..." line,
 * closes what was opened, returns -1. */
int  gw_listeners_open(const gw_config_t *cfg, gw_listener_t **out, size_t *n);
/* Bind one address (HOST:PORT, [IPv6]:PORT, unix:/path; unix files get
 * unix_mode) into l. name is shown in errors; label (NULL for listeners)
 * makes them read "gateway: cannot bind LABEL NAME: reason". 0 or -1 after
 * printing one line. Used for listeners, the control socket and metrics. */
int  gw_listener_bind(gw_listener_t *l, const char *spec, const char *name, int backlog,
                      unsigned unix_mode, const char *label);
/* Close one, unlinking its unix socket file (unless kept). */
void gw_listener_close(gw_listener_t *l);
/* Close the sockets and unlink unix socket files (unless kept). */
void gw_listeners_close(gw_listener_t *l, size_t n);
/* Use listening fds inherited from an upgrading master or systemd. */
int  gw_listeners_adopt(const int *fds, size_t nfds, gw_listener_t **out, size_t *n);
/* 1: closing listeners leaves unix socket files (a new master uses them). */
void gw_listeners_keep_files(int keep);

/* ---- workers ---- */

/*
 * A worker slot's state, ordered by lifecycle so that "can take requests"
 * is one comparison. EMPTY slots have no process.
 */
typedef enum {
    GW_WORKER_EMPTY = 0,   /* no process (never spawned, or reaped) */
    GW_WORKER_BACKOFF,     /* waiting to respawn after failures */
    GW_WORKER_SPAWNING,    /* forked, HELLO sent, waiting for READY */
    GW_WORKER_READY,       /* takes requests */
    GW_WORKER_DRAINING,    /* QUIT sent: finishes in-flight, takes none */
    GW_WORKER_EXITING      /* channel gone, waiting for the reap */
} gw_worker_state_t;

const char *gw_worker_state_name(gw_worker_state_t s);

/* Stream id -> request, open addressing with backward-shift deletion. */
typedef struct {
    uint32_t *keys;      /* 0 = empty (stream ids start at 1) */
    gw_req_t **vals;
    uint32_t  mask;      /* capacity - 1, capacity a power of two */
    uint32_t  count;
} gw_streams_t;

struct gw_worker_s {
    int               slot;
    gw_worker_state_t state;
    pid_t             pid;
    int               fd;            /* master end of the channel, -1 if none */
    ev_io             rio, wio;
    ev_child          child;
    ev_timer          timer;         /* boot deadline, backoff, kill deadline */
    gwp_buf_t         out;           /* frames queued for the worker */
    uint8_t          *in;            /* frames read from the worker */
    size_t            in_len, in_cap;
    gwp_decoder_t     dec;
    gw_streams_t      streams;       /* in-flight requests by stream id */
    uint32_t          next_stream;
    uint32_t          inflight;      /* requests dispatched and not finished */
    uint64_t          served;        /* requests completed by this process */
    uint64_t          retire_after;  /* --max-requests (+ jitter) for this process, 0: never */
    uint64_t          dropped;       /* frames for unknown/cancelled streams */
    unsigned          restarts;      /* respawns of this slot */
    unsigned          boot_failures; /* consecutive deaths before READY */
    ev_tstamp         spawned_at, ready_at, heartbeat_at;
    uint64_t          hb_rss;
    uint32_t          hb_tasks, hb_inflight;
    char              loop_id[96];
    uint32_t          capacity;      /* READY.capacity: requests it runs at once; 0 = open */
    double            svc_avg;       /* moving average of its service time, s */
    uint32_t          age;           /* HELLO.age: the master's spawn counter at its spawn */
    char              error[256];    /* last ERROR frame message */
    int               last_status;   /* waitpid status normalised: code or 128+sig */
    unsigned          flush_queued:1;
    unsigned          stuck:1;       /* WORKER TIMEOUT: aborted, awaiting the reap */
    unsigned          wanted:1;      /* a process should run here (respawn on exit) */
    unsigned          zygote_wait:1; /* BACKOFF until the zygote is ready (--preload, Python) */
    unsigned          generation;    /* the reload generation it was spawned in */
    gw_worker_t      *flush_next;
};

/* Pick a READY worker for a new request, NULL if none may take it.
 * A worker may take requests up to max_inflight (0: GW_INFLIGHT_AUTO, or its
 * capacity if larger: an event-loop worker's connection limit), except that one with a
 * capacity (READY.capacity: threads, ...) takes more than its capacity only
 * while its average service time is under prefetch_s (0: never): a slow
 * worker never has a request waiting inside it; those wait in the front.
 * leastconn: fewest in-flight, ties broken round-robin from *cursor;
 * rr: next eligible after *cursor. Pure; advances *cursor. */
gw_worker_t *gw_balance_pick(gw_balance_mode_t mode, gw_worker_t *workers,
                             unsigned n, unsigned max_inflight, double prefetch_s,
                             unsigned *cursor);

int       gw_streams_init(gw_streams_t *t, uint32_t capacity);
void      gw_streams_free(gw_streams_t *t);
int       gw_streams_put(gw_streams_t *t, uint32_t id, gw_req_t *r);
gw_req_t *gw_streams_get(const gw_streams_t *t, uint32_t id);
gw_req_t *gw_streams_del(gw_streams_t *t, uint32_t id);

/* supervisor.c */
int  gw_supervisor_start(void);       /* spawn the initial workers */
void gw_supervisor_stop(int graceful);/* QUIT all workers (and escalate) */
int  gw_supervisor_all_exited(void);
/* Stop giving w requests, let it finish in-flight ones and exit (graceful
 * QUIT, killed after --graceful-timeout); the slot is then respawned. */
void gw_worker_retire(gw_worker_t *w, const char *why);
/* Queue a frame for the worker's channel; flushed once per loop iteration. */
void gw_worker_schedule_flush(gw_worker_t *w);
void gw_supervisor_flush_all(void);

/* ---- the front ---- */

int  gw_front_start(void);            /* start accepting on every listener */
void gw_front_stop_accepting(void);   /* close listeners (graceful stop) */
void gw_front_close_idle(void);       /* drop idle keep-alive connections */
unsigned gw_front_active(void);       /* connections with a request in progress */
unsigned gw_front_queued(void);       /* requests waiting for a worker */
void gw_front_flush_all(void);        /* write pending client output (prepare) */

/* Called by the supervisor for frames and events from a worker. */
void gw_front_on_response(gw_worker_t *w, const gwp_msg_t *m);
void gw_front_on_resp_body(gw_worker_t *w, const gwp_msg_t *m);
void gw_front_on_window(gw_worker_t *w, const gwp_msg_t *m);
void gw_front_on_cancel(gw_worker_t *w, const gwp_msg_t *m);
/* The worker's channel is gone: fail its in-flight requests (502/close). */
void gw_front_worker_lost(gw_worker_t *w);
/* A worker became READY or freed capacity: dispatch waiting requests. */
void gw_front_dispatch_queue(void);

/* supervisor.c: change the number of worker slots (TTIN/TTOU, gatewayctl
 * scale). Growing spawns; shrinking retires the highest slots gracefully.
 * n is clamped to 1..GW_MAX_WORKERS. Returns the new target. */
unsigned gw_supervisor_scale(unsigned n);
/* HUP: start `workers` new workers (a new generation; the app is loaded
 * again unless preloaded) and retire the current ones as the new ones
 * report READY, so capacity never drops and no request is lost. */
void gw_supervisor_reload(unsigned workers);
/* Send sig to every worker process (USR1: reopen logs). */
void gw_supervisor_signal_all(int sig);
/* zygote.c calls these: a zygote reported READY (spawn the slots waiting
 * for it); a zygote process was reaped (a stop may be complete). */
void gw_supervisor_zygote_ready(void);
void gw_supervisor_zygote_exited(void);
/* The part of a new child's set-up shared by workers and the zygote: signal
 * dispositions reset, fd becomes 3 and every other descriptor >= 4 is
 * closed (listeners, clients, channels), log role, the post_fork hook when
 * slot >= 0, --user/--group, process name comm. _exit()s on failure. */
void gw_child_setup(int fd, const char *role, const char *comm, int slot);

/* ---- the zygote (zygote.c): --preload for Python apps ----
 *
 * One runtime process imports the app once and forks the workers on the
 * master's request (proto/PROTOCOL.md, "The zygote channel"). The master is
 * a child subreaper, so those workers are its children like any other. */

/* 1 when workers come from a zygote (Python app with --preload). */
int  gw_zygote_enabled(void);
/* Before the loop exists (main.c, where the import check would run): start
 * the zygote and wait for it to load the app. 0, or -1 with one line (no
 * "gateway: " prefix) in err and nothing left running. */
int  gw_zygote_boot(char *err, size_t errlen);
/* Once gw.loop exists: watch the zygote started by gw_zygote_boot(). */
void gw_zygote_attach(void);
/* 1 if a spawn can be asked for now. */
int  gw_zygote_ready(void);
/* Ask the zygote for a worker for slot whose channel end is fd (the caller
 * keeps and closes its copy). Synchronous: returns 0 with *pid (already
 * the master's child) once the zygote answered; -EAGAIN if no zygote is
 * ready (the slot waits for gw_supervisor_zygote_ready); another negative
 * errno if this spawn failed (the slot retries after a delay). */
int  gw_zygote_spawn(int slot, int fd, pid_t *pid);
/* HUP: start a new zygote (the app is imported again); the current one is
 * stopped when the new one is ready. */
void gw_zygote_reload(void);
/* Stop every zygote (QUIT); gw_zygote_all_exited() once they are reaped. */
void gw_zygote_stop(void);
int  gw_zygote_all_exited(void);
/* USR1 (and once at start): pass the master's stderr, the error log, to
 * the zygotes so the workers forked from now on inherit it. */
void gw_zygote_reopen_logs(void);
/* Leaving the master: SIGKILL and reap whatever zygote is left. */
void gw_zygote_kill_all(void);

typedef struct {
    int         enabled;      /* 0: no zygote (not a Python --preload) */
    pid_t       pid;          /* the current zygote, 0 if none running */
    const char *state;        /* "starting", "ready", "backoff", "stopping", "none" */
    unsigned    generation;   /* reload generation whose app it imported */
    unsigned    restarts;     /* zygotes started after the first */
    unsigned    spawned;      /* workers forked by the current zygote */
    ev_tstamp   started_at;   /* ev_now() when the current one was started (0 at boot) */
    pid_t       old_pid;      /* a previous zygote still stopping after a reload, else 0 */
} gw_zygote_info_t;
/* For gatewayctl status / metrics. */
void gw_zygote_info(gw_zygote_info_t *out);

/* ---- the control socket (ctl.c) ---- */

/* Bind cfg.control_socket (mode 0600), serve it on the master's loop.
 * Returns -1 after printing one "gateway: ..." line. */
int  gw_ctl_start(void);
/* Close it and remove the socket file. */
void gw_ctl_stop(void);

/* ---- the master ---- */

typedef struct {
    gw_config_t     cfg;
    struct ev_loop *loop;
    gw_listener_t  *listeners;
    size_t          nlisteners;
    gw_worker_t    *workers;
    unsigned        nworkers;
    unsigned        rr_cursor;
    void           *app;              /* gwl_app_t * when preloaded */
    int             stopping;         /* 0, 1 graceful, 2 quick: acted on */
    int             want_stop;        /* same scale: asked for (signals, fatal) */
    int             want_reload;      /* HUP or gatewayctl reload */
    int             want_reopen;      /* USR1 or gatewayctl reopen-logs */
    int             want_upgrade;     /* USR2 or gatewayctl upgrade */
    int             exit_code;
    int             announced_ready;  /* "ready:" line printed */
    char            bind_list[512];   /* for the ready line */
    ev_tstamp       stop_deadline;
    /* counters */
    int             draining;         /* gatewayctl drain: health 503, no new requests routed */
    unsigned        target_workers;   /* slots that should be running */
    unsigned        generation;       /* bumped by each reload */
    ev_tstamp       started_at;
    int             python;           /* workers exec the Python runtime */
    uid_t           worker_uid;       /* --user resolved; (uid_t)-1: unchanged */
    gid_t           worker_gid;
    /* counters */
    uint32_t        spawns;           /* workers spawned so far (HELLO.age) */
    uint64_t        accepted, requests, responses_4xx, responses_5xx, rejected_503, timeouts;
} gw_master_t;

extern gw_master_t gw;

/* Ask the master to exit with code (after cleanup). */
void gw_master_fatal(int code);

/* pyrt.c: exec the Python runtime in MODE ("zygote", "check") with
 * the settings in its environment; the channel (if any) must be on fd 3.
 * Never returns. */
void gw_python_exec(const char *mode) __attribute__((noreturn));

#endif /* GW_GATEWAY_H */
