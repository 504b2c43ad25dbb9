/*
 * supervisor.c - the worker table (master process): spawn and reap workers,
 * the READY handshake, boot deadlines, respawn with backoff, stop; and each
 * worker's channel: batched writes (once per loop iteration), reads that
 * decode every whole frame per wakeup, and dispatch of frames to the front.
 * With --preload and a Python app the fork itself is the zygote's (zygote.c);
 * everything else here is the same for the workers it forks.
 *
 *   EMPTY --spawn--> SPAWNING --READY--> READY --QUIT--> DRAINING
 *     ^                 |  (died before READY: backoff)    |
 *     +---- reap <------+----------------------------------+
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gateway.h"
#include "gwl_int.h"
#include "hooks.h"
#include "log.h"

#define CHAN_READ_INIT   (256 * 1024)
#define CHAN_READ_MAX    (GWP_HEADER_SIZE + GWP_MAX_PAYLOAD + 64 * 1024)
#define BOOT_FAIL_LIMIT  5       /* consecutive pre-READY deaths at start-up */
#define BACKOFF_MAX      10.0    /* seconds */

gw_master_t gw;

static gw_worker_t *flush_head;
static ev_timer watchdog;

void gw_master_fatal(int code)
{
    gw.exit_code = code;
    gw.want_stop = 2;   /* acted on by the master's step before the loop sleeps */
}

const char *gw_worker_state_name(gw_worker_state_t s)
{
    /* the words operators see in gatewayctl status and in metrics */
    static const char *const names[] = {
        [GW_WORKER_EMPTY] = "empty", [GW_WORKER_BACKOFF] = "backoff",
        [GW_WORKER_SPAWNING] = "starting", [GW_WORKER_READY] = "ready",
        [GW_WORKER_DRAINING] = "draining", [GW_WORKER_EXITING] = "stopping",
    };
    return (unsigned)s <= GW_WORKER_EXITING ? names[s] : "?";
}

static void worker_spawn(gw_worker_t *w);
static void worker_channel_close(gw_worker_t *w);

/* ---- channel output ---- */

void gw_worker_schedule_flush(gw_worker_t *w)
{
    if (w->flush_queued || w->fd < 0) return;
    w->flush_queued = 1;
    w->flush_next = flush_head;
    flush_head = w;
}

static void worker_flush(gw_worker_t *w)
{
    while (w->out.len > 0 && w->fd >= 0) {
        ssize_t n = write(w->fd, w->out.data, w->out.len);
        if (n > 0) {
            gwp_buf_consume(&w->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!ev_is_active(&w->wio)) ev_io_start(gw.loop, &w->wio);
            return;
        }
        /* EPIPE/ECONNRESET: the worker is gone; the reap will follow */
        gw_log(gw.stopping || w->state == GW_WORKER_DRAINING ? GW_LOG_DEBUG : GW_LOG_WARN,
               "worker %d (pid %d): channel write: %s", w->slot, (int)w->pid,
                n < 0 ? strerror(errno) : "short write");
        worker_channel_close(w);
        return;
    }
    if (ev_is_active(&w->wio)) ev_io_stop(gw.loop, &w->wio);
    /* Keep a big buffer from lingering after a burst. */
    if (w->out.len == 0 && w->out.cap > 1024 * 1024) {
        gwp_buf_free(&w->out);
        gwp_buf_init(&w->out);
    }
}

void gw_supervisor_flush_all(void)
{
    while (flush_head) {
        gw_worker_t *w = flush_head;
        flush_head = w->flush_next;
        w->flush_queued = 0;
        w->flush_next = NULL;
        worker_flush(w);
    }
}

static void worker_on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_worker_t *w = (gw_worker_t *)((char *)io - offsetof(gw_worker_t, wio));
    worker_flush(w);
}

/* ---- frames from the worker ---- */

static void announce_ready_if_all(void)
{
    if (gw.announced_ready || gw.stopping) return;
    for (unsigned i = 0; i < gw.nworkers; i++)
        if (gw.workers[i].wanted && gw.workers[i].state != GW_WORKER_READY) return;
    gw.announced_ready = 1;
    gw_info("ready: %u workers serving on %s", gw.target_workers, gw.bind_list);
    gw_hooks_run(GW_HOOK_WHEN_READY, -1, 0, gw.target_workers, 0);
}

/* Slots in use end at the highest one wanted or still holding a process. */
static void trim_slots(void)
{
    while (gw.nworkers > 0) {
        gw_worker_t *w = &gw.workers[gw.nworkers - 1];
        if (w->wanted || w->pid > 0 || w->state != GW_WORKER_EMPTY) break;
        gw.nworkers--;
    }
}

/* A reload in progress: each new worker that reports READY lets one worker
 * of an older generation go, so capacity never drops. */
static void reload_step(void)
{
    unsigned old_ready = 0, new_ready = 0;
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->state != GW_WORKER_READY) continue;
        if (w->generation < gw.generation) old_ready++;
        else new_ready++;
    }
    if (old_ready == 0) return;
    /* retire old ones until old + new ready equals the target */
    for (unsigned i = 0; i < gw.nworkers && old_ready + new_ready > gw.target_workers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->state == GW_WORKER_READY && w->generation < gw.generation) {
            gw_worker_retire(w, "replaced by a reload");
            old_ready--;
        }
    }
    if (new_ready >= gw.target_workers) {   /* all new ones up: the rest go */
        for (unsigned i = 0; i < gw.nworkers; i++) {
            gw_worker_t *w = &gw.workers[i];
            if (w->generation < gw.generation &&
                (w->state == GW_WORKER_READY || w->state == GW_WORKER_SPAWNING))
                gw_worker_retire(w, "replaced by a reload");
        }
    }
}

static int worker_on_frame(gw_worker_t *w, const gwp_msg_t *m)
{
    switch (m->frame.type) {
    case GWP_MSG_READY:
        /* A stop or retirement can cross a READY already on its way. */
        if (w->state == GW_WORKER_DRAINING) return 0;
        if (w->state != GW_WORKER_SPAWNING) return -1;
        if (m->u.ready.version != GWP_VERSION) {
            gw_error("worker %d (pid %d): protocol version %u, master speaks %u",
                     w->slot, (int)w->pid, m->u.ready.version, GWP_VERSION);
            return -1;
        }
        w->state = GW_WORKER_READY;
        w->ready_at = w->heartbeat_at = ev_now(gw.loop);
        w->boot_failures = 0;
        snprintf(w->loop_id, sizeof(w->loop_id), "%.*s",
                 (int)m->u.ready.loop.len, m->u.ready.loop.ptr);
        w->capacity = m->u.ready.capacity;
        ev_timer_stop(gw.loop, &w->timer);
        gw_info("worker %d (pid %d) ready (runtime %.*s)", w->slot, (int)w->pid,
                (int)m->u.ready.runtime.len, m->u.ready.runtime.ptr);
        announce_ready_if_all();
        reload_step();
        gw_front_dispatch_queue();
        return 0;
    case GWP_MSG_HEARTBEAT:
        w->heartbeat_at = ev_now(gw.loop);
        w->hb_rss = m->u.heartbeat.rss;
        w->hb_tasks = m->u.heartbeat.tasks;
        w->hb_inflight = m->u.heartbeat.inflight;
        if (gw.cfg.max_worker_memory && w->state == GW_WORKER_READY &&
            w->hb_rss > (uint64_t)gw.cfg.max_worker_memory * 1024 * 1024) {
            char why[96];
            snprintf(why, sizeof(why), "resident memory %llu MB over --max-worker-memory %u MB",
                     (unsigned long long)(w->hb_rss >> 20), gw.cfg.max_worker_memory);
            gw_worker_retire(w, why);
        }
        return 0;
    case GWP_MSG_ERROR:
        snprintf(w->error, sizeof(w->error), "%.*s",
                 (int)m->u.error.message.len, m->u.error.message.ptr);
        gw_error("worker %d (pid %d): %s", w->slot, (int)w->pid, w->error);
        return 0;
    case GWP_MSG_RESPONSE:
        gw_front_on_response(w, m);
        return 0;
    case GWP_MSG_RESP_BODY:
        gw_front_on_resp_body(w, m);
        return 0;
    case GWP_MSG_WINDOW:
        gw_front_on_window(w, m);
        return 0;
    case GWP_MSG_CANCEL:
        gw_front_on_cancel(w, m);
        return 0;
    default:
        gw_error("worker %d (pid %d): unexpected %s frame from a worker", w->slot,
                 (int)w->pid, gwp_type_name(m->frame.type));
        return -1;
    }
}

static void worker_on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    gw_worker_t *w = (gw_worker_t *)((char *)io - offsetof(gw_worker_t, rio));

    /* Bounded work per wakeup so one chatty worker cannot starve clients. */
    for (int rounds = 0; rounds < 8 && w->fd >= 0; rounds++) {
        if (w->in_cap - w->in_len < 64 * 1024 && w->in_cap < CHAN_READ_MAX) {
            size_t ncap = w->in_cap ? w->in_cap * 2 : CHAN_READ_INIT;
            if (ncap > CHAN_READ_MAX) ncap = CHAN_READ_MAX;
            uint8_t *p = realloc(w->in, ncap);
            if (!p) { gw_error("worker %d: out of memory for channel", w->slot); break; }
            w->in = p;
            w->in_cap = ncap;
        }
        size_t room = w->in_cap - w->in_len;
        ssize_t n = read(w->fd, w->in + w->in_len, room);
        if (n == 0) {
            if (w->state != GW_WORKER_DRAINING && !gw.stopping)
                gw_debug("worker %d (pid %d): channel closed", w->slot, (int)w->pid);
            worker_channel_close(w);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            gw_warn("worker %d (pid %d): channel read: %s", w->slot, (int)w->pid, strerror(errno));
            worker_channel_close(w);
            return;
        }
        w->in_len += (size_t)n;

        size_t off = 0;
        while (off < w->in_len && w->fd >= 0) {
            gwp_msg_t m;
            const char *why = NULL;
            ssize_t c = gwp_decode(&w->dec, w->in + off, w->in_len - off, &m, &why);
            if (c == GWP_AGAIN) break;
            if (c < 0 || worker_on_frame(w, &m) < 0) {
                gw_error("worker %d (pid %d): protocol error: %s; stopping it", w->slot,
                         (int)w->pid, c < 0 ? (why ? why : "bad frame") : "unexpected frame");
                if (w->pid > 0) kill(w->pid, SIGKILL);
                worker_channel_close(w);
                return;
            }
            off += (size_t)c;
        }
        if (w->fd < 0) return;
        if (off > 0) {
            memmove(w->in, w->in + off, w->in_len - off);
            w->in_len -= off;
        }
        if ((size_t)n < room) break;   /* drained the socket */
    }
    /* A large buffer is only needed for bursts. */
    if (w->in_len == 0 && w->in_cap > CHAN_READ_INIT) {
        free(w->in);
        w->in = NULL;
        w->in_cap = 0;
    }
}

/* The channel is unusable: fail the worker's requests; wait for the reap. */
static void worker_channel_close(gw_worker_t *w)
{
    if (w->fd < 0) return;
    ev_io_stop(gw.loop, &w->rio);
    ev_io_stop(gw.loop, &w->wio);
    close(w->fd);
    w->fd = -1;
    if (w->state >= GW_WORKER_SPAWNING) w->state = GW_WORKER_EXITING;
    gw_front_worker_lost(w);
    gwp_buf_free(&w->out);
    gwp_buf_init(&w->out);
    free(w->in);
    w->in = NULL;
    w->in_len = w->in_cap = 0;
    gwp_decoder_done(&w->dec);
    gwp_decoder_init(&w->dec, 0);
}

/* ---- process lifecycle ---- */

static void child_on_usr1(int sig)
{
    (void)sig;
    gw_log_reopen_later();
}

void gw_child_setup(int fd, const char *role, const char *comm, int slot)
{
    static const int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1,
                                SIGUSR2, SIGTTIN, SIGTTOU, SIGALRM, SIGPIPE };
    sigset_t none;
    sigemptyset(&none);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    /* USR1 from the master: reopen the log on the next line. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = child_on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* The channel becomes fd 3; every other inherited descriptor (listeners,
     * clients, other workers' channels, the zygote's channel, the loop's
     * epoll fd) is closed. */
    if (fd != 3) {
        if (dup2(fd, 3) < 0) _exit(GWL_EXIT_BOOT);
    } else {
        fcntl(3, F_SETFD, 0);
    }
    close_range(4, ~0U, 0);

    gw_log_set_role(role);
    if (slot >= 0) gw_hooks_run(GW_HOOK_POST_FORK, slot, (long)getpid(), 0, 0);
    /* --user/--group: the child gives up the master's privileges before
     * any app code runs here. */
    if (gw.worker_gid != (gid_t)-1 && getegid() != gw.worker_gid) {
        if (setgroups(1, &gw.worker_gid) < 0 || setgid(gw.worker_gid) < 0) {
            gw_error("cannot switch to group %d: %s", (int)gw.worker_gid, strerror(errno));
            _exit(GWL_EXIT_BOOT);
        }
    }
    if (gw.worker_uid != (uid_t)-1 && geteuid() != gw.worker_uid) {
        if (setuid(gw.worker_uid) < 0) {
            gw_error("cannot switch to user %d: %s", (int)gw.worker_uid, strerror(errno));
            _exit(GWL_EXIT_BOOT);
        }
    }
    prctl(PR_SET_NAME, comm, 0, 0, 0);   /* shown by ps -o comm, top */
}

static void child_main(gw_worker_t *w, int fd)
{
    char role[32], comm[32];
    snprintf(role, sizeof(role), "worker %d", w->slot);
    snprintf(comm, sizeof(comm), "gw-worker-%d", w->slot);
    gw_child_setup(fd, role, comm, w->slot);
    gwl__worker_opts_t o = { .slot = w->slot, .app_path = gw.cfg.app_path,
                             .app_symbol = gw.cfg.app_symbol };
    gwl_app_t *app = gw.app ? (gwl_app_t *)gw.app : gwl__app_create();
    if (!app) _exit(GWL_EXIT_BOOT);
    _exit(gwl__worker_main(app, 3, &o));
}

static void worker_on_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void worker_on_exit(struct ev_loop *loop, ev_child *c, int revents);

static void worker_spawn(gw_worker_t *w)
{
    int sv[2];
    w->zygote_wait = 0;
    if (gw_zygote_enabled() && !gw_zygote_ready()) goto wait_zygote;
    if (gw_zygote_enabled()) {
        /* A zygote spawn blocks the loop for its double fork (tens of ms
         * with a big preloaded app; docs/design-notes.md). One per loop
         * iteration: the rest wait for a 0 s timer, so clients are served
         * between them rather than stalled for all (a reload's new
         * generation, scale +N). ev_now() is fixed within an iteration. */
        static ev_tstamp last_iter = -1;
        if (ev_now(gw.loop) == last_iter) {
            w->state = GW_WORKER_BACKOFF;
            ev_timer_stop(gw.loop, &w->timer);
            ev_timer_set(&w->timer, 0., 0.);
            ev_timer_start(gw.loop, &w->timer);
            gw_debug("worker %d: spawn deferred to the next loop iteration", w->slot);
            return;
        }
        last_iter = ev_now(gw.loop);
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        gw_error("worker %d: socketpair: %s; retrying", w->slot, strerror(errno));
        goto retry;
    }
    int bufsz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));

    gw_hooks_run(GW_HOOK_PRE_FORK, w->slot, 0, 0, 0);
    pid_t pid;
    if (gw_zygote_enabled()) {
        /* --preload, Python: the zygote forks it (see zygote.c); the pid
         * comes back before we return to the loop, so the ev_child watcher
         * below is in place before the worker can be reaped. */
        int rc = gw_zygote_spawn(w->slot, sv[1], &pid);
        close(sv[1]);
        if (rc < 0) {
            close(sv[0]);
            if (rc == -EAGAIN) goto wait_zygote;
            gw_error("worker %d: the zygote could not fork it: %s; retrying", w->slot,
                     strerror(-rc));
            goto retry;
        }
    } else {
        pid = fork();
        if (pid < 0) {
            gw_error("worker %d: fork: %s; retrying", w->slot, strerror(errno));
            close(sv[0]);
            close(sv[1]);
            goto retry;
        }
        if (pid == 0) {
            close(sv[0]);
            child_main(w, sv[1]);
        }
        close(sv[1]);
    }
    w->pid = pid;
    w->fd = sv[0];
    w->state = GW_WORKER_SPAWNING;
    w->generation = gw.generation;
    w->spawned_at = ev_now(gw.loop);
    w->ready_at = 0;
    w->inflight = 0;
    w->served = 0;
    w->retire_after = 0;
    if (gw.cfg.max_requests) {
        w->retire_after = gw.cfg.max_requests;
        if (gw.cfg.max_requests_jitter)
            w->retire_after += (uint64_t)random() % ((uint64_t)gw.cfg.max_requests_jitter + 1);
    }
    w->stuck = 0;
    w->next_stream = 1;
    w->loop_id[0] = '\0';
    w->error[0] = '\0';
    ev_io_init(&w->rio, worker_on_readable, w->fd, EV_READ);
    ev_io_init(&w->wio, worker_on_writable, w->fd, EV_WRITE);
    ev_io_start(gw.loop, &w->rio);
    ev_child_init(&w->child, worker_on_exit, pid, 0);
    ev_child_start(gw.loop, &w->child);
    ev_timer_stop(gw.loop, &w->timer);
    ev_timer_set(&w->timer, gw.cfg.boot_timeout, 0.);
    ev_timer_start(gw.loop, &w->timer);

    w->age = ++gw.spawns;
    w->capacity = 0;
    gwp_hello_t h = { .version = GWP_VERSION, .slot = (uint32_t)w->slot, .generation = gw.generation,
                      .max_payload = GWP_MAX_PAYLOAD, .window = gw.cfg.window,
                      .heartbeat_ms = gw.cfg.heartbeat_ms, .age = w->age };
    if (gwp_encode_hello(&w->out, &h) == 0) gw_worker_schedule_flush(w);
    gw_debug("worker %d spawned (pid %d)", w->slot, (int)pid);
    return;
wait_zygote:
    /* No zygote to ask (starting, restarting after a crash, or the new one
     * of a reload still importing): gw_supervisor_zygote_ready() spawns it. */
    w->state = GW_WORKER_BACKOFF;
    w->zygote_wait = 1;
    ev_timer_stop(gw.loop, &w->timer);
    gw_debug("worker %d waits for the zygote", w->slot);
    return;
retry:
    w->state = GW_WORKER_BACKOFF;
    ev_timer_stop(gw.loop, &w->timer);
    ev_timer_set(&w->timer, 1.0, 0.);
    ev_timer_start(gw.loop, &w->timer);
}

static void worker_on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    gw_worker_t *w = (gw_worker_t *)((char *)t - offsetof(gw_worker_t, timer));
    switch (w->state) {
    case GW_WORKER_BACKOFF:
        if (!gw.stopping) worker_spawn(w);
        break;
    case GW_WORKER_SPAWNING:
        gw_error("worker %d (pid %d) did not report ready within %.0f s; killing it",
                 w->slot, (int)w->pid, gw.cfg.boot_timeout);
        kill(w->pid, SIGKILL);
        break;
    case GW_WORKER_DRAINING:
    case GW_WORKER_EXITING:
    case GW_WORKER_READY:
        if (w->pid > 0 && w->stuck) {
            gw_alert("worker %d (pid %d) did not exit after SIGABRT; killing it",
                     w->slot, (int)w->pid);
            kill(w->pid, SIGKILL);
        } else if (w->pid > 0) {
            gw_warn("worker %d (pid %d) still running at the stop deadline; killing it",
                    w->slot, (int)w->pid);
            kill(w->pid, SIGKILL);
        }
        break;
    default:
        break;
    }
}

static void worker_on_exit(struct ev_loop *loop, ev_child *c, int revents)
{
    gw_worker_t *w = (gw_worker_t *)((char *)c - offsetof(gw_worker_t, child));
    int st = c->rstatus;
    ev_child_stop(loop, c);
    ev_timer_stop(loop, &w->timer);
    /* The reap can be handled before the channel's last bytes are: a worker
     * that answered and exited has its final responses in the socket. Read
     * them to EOF first, or they would turn into 502s. */
    for (int i = 0; i < 64 && w->fd >= 0; i++)
        worker_on_readable(loop, &w->rio, EV_READ);
    worker_channel_close(w);

    int was_ready = w->ready_at > 0;
    pid_t pid = w->pid;
    w->pid = 0;
    w->state = GW_WORKER_EMPTY;

    if (WIFSIGNALED(st)) {
        w->last_status = 128 + WTERMSIG(st);
        /* Killed by us during a stop is expected; anything else is an alert. */
        if (w->stuck)
            gw_warn("worker %d (pid %d) ended by signal %d (%s) after WORKER TIMEOUT", w->slot,
                    (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
        else if (gw.stopping && (WTERMSIG(st) == SIGKILL || WTERMSIG(st) == SIGTERM))
            gw_warn("worker %d (pid %d) killed by signal %d (%s)", w->slot, (int)pid,
                    WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            gw_alert("worker %d (pid %d) killed by signal %d (%s)", w->slot, (int)pid,
                     WTERMSIG(st), strsignal(WTERMSIG(st)));
    } else {
        w->last_status = WEXITSTATUS(st);
        if (w->last_status == 0)
            gw_info("worker %d (pid %d) exited", w->slot, (int)pid);
        else
            gw_error("worker %d (pid %d) exited with status %d", w->slot, (int)pid,
                     w->last_status);
    }

    gw_hooks_run(GW_HOOK_WORKER_EXIT, w->slot, (long)pid, w->last_status, 0);
    gw_hooks_run(GW_HOOK_CHILD_EXIT, w->slot, (long)pid, w->last_status, 0);
    if (gw.stopping) {
        if (gw_supervisor_all_exited()) ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (!was_ready && !w->wanted) {
        trim_slots();
        return;
    }
    if (!was_ready) {
        w->boot_failures++;
        if (!gw.announced_ready &&
            (w->last_status == GWL_EXIT_BOOT || w->boot_failures >= BOOT_FAIL_LIMIT)) {
            /* one line: several workers can fail in the same loop pass */
            if (!gw.exit_code)
                fprintf(stderr, "gateway: worker %d failed to boot: %s\n", w->slot,
                        w->error[0] ? w->error : "exited before reporting ready");
            gw_master_fatal(1);
            return;
        }
        double delay = 0.1;
        for (unsigned i = 1; i < w->boot_failures && delay < BACKOFF_MAX; i++) delay *= 2;
        if (delay > BACKOFF_MAX) delay = BACKOFF_MAX;
        gw_warn("worker %d failed before ready (%u in a row); respawning in %.1f s",
                w->slot, w->boot_failures, delay);
        w->state = GW_WORKER_BACKOFF;
        ev_timer_set(&w->timer, delay, 0.);
        ev_timer_start(loop, &w->timer);
        return;
    }
    if (!w->wanted) {          /* scaled away or replaced by a reload */
        trim_slots();
        return;
    }
    w->restarts++;
    worker_spawn(w);
}

/* Make slot i usable (once per slot for the life of the master). */
static int slot_init(unsigned i)
{
    gw_worker_t *w = &gw.workers[i];
    if (w->streams.keys) return 0;
    w->slot = (int)i;
    w->fd = -1;
    gwp_buf_init(&w->out);
    gwp_decoder_init(&w->dec, 0);
    ev_init(&w->timer, worker_on_timer);
    return gw_streams_init(&w->streams, GW_INFLIGHT_HINT(gw.cfg.max_inflight));
}

/*
 * Once a second: a worker whose heartbeats stopped for --timeout is stuck
 * (its loop is blocked: heartbeats come from that loop). Like Gunicorn:
 * log WORKER TIMEOUT, SIGABRT (the worker's abort path runs), SIGKILL if it
 * is still there 2 s later; the reap replaces it.
 */
static void watchdog_on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    ev_tstamp now = ev_now(loop);
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->pid <= 0 || w->stuck) continue;
        if (w->state != GW_WORKER_READY && w->state != GW_WORKER_DRAINING) continue;
        if (now - w->heartbeat_at <= gw.cfg.timeout) continue;
        w->stuck = 1;
        gw_crit("WORKER TIMEOUT (pid:%d): worker %d sent no heartbeat for %.1f s "
                 "(--timeout %.0f s); aborting it", (int)w->pid, w->slot,
                 now - w->heartbeat_at, gw.cfg.timeout);
        kill(w->pid, SIGABRT);
        ev_timer_stop(loop, &w->timer);
        ev_timer_set(&w->timer, 2.0, 0.);
        ev_timer_start(loop, &w->timer);
    }
}

int gw_supervisor_start(void)
{
    /* The table is sized for the most workers scaling may ask for; pages
     * of unused slots are never touched. */
    gw.workers = calloc(GW_MAX_WORKERS, sizeof(*gw.workers));
    if (!gw.workers) {
        fprintf(stderr, "gateway: out of memory\n");
        return -1;
    }
    gw.nworkers = gw.target_workers = gw.cfg.workers;
    gw.generation = 1;
    for (unsigned i = 0; i < gw.nworkers; i++) {
        if (slot_init(i) < 0) {
            fprintf(stderr, "gateway: out of memory\n");
            return -1;
        }
        gw.workers[i].wanted = 1;
    }
    /* Heartbeats must come several times per --timeout, or a healthy but
     * idle worker would look stuck to the watchdog. */
    double hb = gw.cfg.timeout * 1000.0 / 4;
    gw.cfg.heartbeat_ms = hb > 1000 ? 1000 : hb < 50 ? 50 : (unsigned)hb;
    srandom((unsigned)getpid() ^ (unsigned)(ev_now(gw.loop) * 1000));   /* jitter */
    if (gw_zygote_enabled()) gw_zygote_attach();   /* started by main.c, app imported */
    for (unsigned i = 0; i < gw.nworkers; i++) worker_spawn(&gw.workers[i]);
    double tick = gw.cfg.heartbeat_ms / 1000.0;
    ev_timer_init(&watchdog, watchdog_on_tick, tick, tick);
    ev_timer_start(gw.loop, &watchdog);
    ev_unref(gw.loop);   /* the watchdog alone must not keep the loop alive */
    return 0;
}

/* Mark the lowest free slot wanted and start a worker there. */
static int slot_add(void)
{
    for (unsigned i = 0; i < GW_MAX_WORKERS; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->wanted || w->pid > 0 || w->state != GW_WORKER_EMPTY) continue;
        if (slot_init(i) < 0) { gw_error("workers: out of memory"); return -1; }
        w->wanted = 1;
        w->boot_failures = 0;
        if (i + 1 > gw.nworkers) gw.nworkers = i + 1;
        worker_spawn(w);
        return 0;
    }
    gw_error("workers: no free slot (at most %d)", GW_MAX_WORKERS);
    return -1;
}

static unsigned wanted_count(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < gw.nworkers; i++) n += gw.workers[i].wanted;
    return n;
}

/* The slot should no longer run a process: a pending respawn is dropped; a
 * running worker is the caller's to retire, or to keep serving until its
 * replacement is ready (reload). */
static void slot_unwant(gw_worker_t *w)
{
    w->wanted = 0;
    if (w->state == GW_WORKER_BACKOFF) {
        ev_timer_stop(gw.loop, &w->timer);
        w->state = GW_WORKER_EMPTY;
    }
}

unsigned gw_supervisor_scale(unsigned n)
{
    if (n < 1) n = 1;
    if (n > GW_MAX_WORKERS) n = GW_MAX_WORKERS;
    unsigned old = gw.target_workers;
    if (n == old || gw.stopping) return gw.target_workers;
    gw.target_workers = n;
    gw_info("workers: %u -> %u", old, n);
    gw_hooks_run(GW_HOOK_NWORKERS_CHANGED, -1, 0, (long)n, (long)old);
    while (wanted_count() < n && slot_add() == 0) {}
    /* fewer: let the highest wanted slots go, gracefully */
    for (unsigned i = gw.nworkers; i-- > 0 && wanted_count() > n;) {
        gw_worker_t *w = &gw.workers[i];
        if (!w->wanted) continue;
        slot_unwant(w);
        if (w->pid > 0) gw_worker_retire(w, "scaled down");
    }
    trim_slots();
    return gw.target_workers;
}

void gw_supervisor_reload(unsigned workers)
{
    if (gw.stopping) return;
    gw.generation++;
    if (workers < 1) workers = 1;
    gw_info("reload: generation %u, %u workers", gw.generation, workers);
    /* --preload (Python): the new generation comes from a new zygote, which
     * imports the app again; its slots wait until it is ready. */
    if (gw_zygote_enabled()) gw_zygote_reload();
    /* The current workers keep serving until their replacements are READY. */
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->wanted) slot_unwant(w);
    }
    gw.target_workers = workers;
    for (unsigned k = 0; k < workers; k++)
        if (slot_add() < 0) break;
    trim_slots();
}

int gw_supervisor_all_exited(void)
{
    for (unsigned i = 0; i < gw.nworkers; i++)
        if (gw.workers[i].pid > 0) return 0;
    return gw_zygote_all_exited();
}

void gw_supervisor_zygote_ready(void)
{
    if (gw.stopping) return;
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (w->wanted && w->state == GW_WORKER_BACKOFF && w->zygote_wait) worker_spawn(w);
    }
}

void gw_supervisor_zygote_exited(void)
{
    if (gw.stopping && gw_supervisor_all_exited()) ev_break(gw.loop, EVBREAK_ALL);
}

void gw_worker_retire(gw_worker_t *w, const char *why)
{
    if (w->state != GW_WORKER_READY && w->state != GW_WORKER_SPAWNING) return;
    gwp_quit_t q = { .graceful = 1, .timeout_ms = (uint32_t)(gw.cfg.graceful_timeout * 1000) };
    gw_info("worker %d (pid %d) retiring: %s", w->slot, (int)w->pid, why);
    w->state = GW_WORKER_DRAINING;
    if (w->fd >= 0 && gwp_encode_quit(&w->out, &q) == 0) gw_worker_schedule_flush(w);
    else if (w->pid > 0) kill(w->pid, SIGTERM);
    ev_timer_stop(gw.loop, &w->timer);
    ev_timer_set(&w->timer, gw.cfg.graceful_timeout + 1.0, 0.);
    ev_timer_start(gw.loop, &w->timer);
}

void gw_supervisor_signal_all(int sig)
{
    for (unsigned i = 0; i < gw.nworkers; i++)
        if (gw.workers[i].pid > 0) kill(gw.workers[i].pid, sig);
}

void gw_supervisor_stop(int graceful)
{
    gwp_quit_t q = { .graceful = (uint8_t)(graceful ? 1 : 0),
                     .timeout_ms = (uint32_t)(gw.cfg.graceful_timeout * 1000) };
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        ev_timer_stop(gw.loop, &w->timer);
        if (w->pid <= 0) {
            w->state = GW_WORKER_EMPTY;
            continue;
        }
        if (w->fd >= 0 && gwp_encode_quit(&w->out, &q) == 0) gw_worker_schedule_flush(w);
        else kill(w->pid, graceful ? SIGTERM : SIGQUIT);
        if (w->state != GW_WORKER_EXITING) w->state = GW_WORKER_DRAINING;
        /* The worker has the graceful budget; then it is killed. */
        ev_timer_set(&w->timer, graceful ? gw.cfg.graceful_timeout + 1.0 : 2.0, 0.);
        ev_timer_start(gw.loop, &w->timer);
    }
    gw_supervisor_flush_all();
    gw_zygote_stop();   /* no more spawns: the zygote goes at once */
}
