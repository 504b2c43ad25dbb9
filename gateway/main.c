/*
 * main.c - the gateway master process: parse options, bind listeners,
 * optionally preload the app, spawn workers, run the one libev loop.
 *
 * Start-up order matters for "nothing half-started": every check that can
 * fail with a one-line error (options, app file, binds, preload) happens
 * before the first fork, and each failure undoes what was done before it.
 *
 * Signals only record intent (ev_signal watchers); master_step(), run from
 * the prepare hook once per loop iteration, acts on it in a fixed order.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gateway.h"
#include "gwl_int.h"
#include "log.h"

static ev_signal sig_term, sig_int, sig_quit, sig_ttin, sig_ttou, sig_hup;
static int want_reload;
static ev_prepare prepare;
static ev_timer stop_timer;
static int workers_quit_sent;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    int quick = w->signum != SIGTERM;
    if (!gw.want_stop || (quick && gw.want_stop == 1)) gw.want_stop = quick ? 2 : 1;
}

/* TTIN / TTOU: one more / one fewer worker (never below 1). */
static void on_scale_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    if (gw.stopping) return;
    unsigned n = gw.target_workers + (w->signum == SIGTTIN ? 1 : 0);
    if (w->signum == SIGTTOU && n > 1) n--;
    gw_supervisor_scale(n);
}

/* HUP: reload (acted on in master_step). */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    want_reload = 1;
}

static void on_stop_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    /* graceful budget spent: stop waiting for clients */
    if (gw.stopping == 1 && !workers_quit_sent) {
        gw_warn("graceful timeout: %u requests still in progress; stopping workers",
                gw_front_active());
        workers_quit_sent = 1;
        gw_supervisor_stop(1);
    } else {
        ev_break(loop, EVBREAK_ALL);   /* final deadline */
    }
}

/* Act on intents, in order: stop requests, then the stop's progress. */
static void master_step(void)
{
    if (want_reload && !gw.stopping && !gw.want_stop) {
        want_reload = 0;
        gw_supervisor_reload(gw.cfg.workers);
    }
    if (gw.want_stop > gw.stopping) {
        int first = gw.stopping == 0;
        gw.stopping = gw.want_stop;
        if (first)
            gw_info("%s stop requested", gw.stopping == 1 ? "graceful" : "quick");
        gw_front_stop_accepting();
        gw_front_close_idle();
        ev_timer_stop(gw.loop, &stop_timer);
        if (gw.stopping == 1) {
            ev_timer_set(&stop_timer, gw.cfg.graceful_timeout, 0.);
        } else {
            workers_quit_sent = 1;
            gw_supervisor_stop(0);
            ev_timer_set(&stop_timer, 5.0, 0.);
        }
        ev_timer_start(gw.loop, &stop_timer);
    }
    if (gw.stopping == 1 && !workers_quit_sent && gw_front_active() == 0) {
        workers_quit_sent = 1;
        gw_supervisor_stop(1);
        /* workers get the graceful budget, then the supervisor kills them */
        ev_timer_stop(gw.loop, &stop_timer);
        ev_timer_set(&stop_timer, gw.cfg.graceful_timeout + 5.0, 0.);
        ev_timer_start(gw.loop, &stop_timer);
    }
    if (gw.stopping && workers_quit_sent && gw_supervisor_all_exited() &&
        gw_front_active() == 0)
        ev_break(gw.loop, EVBREAK_ALL);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents)
{
    gw_front_flush_all();        /* may queue WINDOW frames for workers */
    gw_supervisor_flush_all();
    master_step();
    gw_supervisor_flush_all();
}

/*
 * Without --preload the master must not run application code, yet a missing
 * symbol or an unloadable .so is a configuration error that deserves one
 * line before anything starts. So a throwaway child does dlopen + dlsym
 * (constructors run there, never here) and reports through a pipe.
 */
static int probe_app(const char *path, const char *symbol, char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return 0;   /* cannot probe: workers will report */
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return 0; }
    if (pid == 0) {
        close(p[0]);
        const char *msg = NULL;
        char buf[512];
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) msg = dlerror();
        else if (!dlsym(h, symbol)) {
            snprintf(buf, sizeof(buf), "%s: no entry point \"%s\" (undefined symbol)", path, symbol);
            msg = buf;
        }
        if (msg && write(p[1], msg, strlen(msg)) < 0) _exit(2);
        _exit(msg ? 1 : 0);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < errlen && (r = read(p[0], err + n, errlen - 1 - n)) != 0) {
        if (r < 0) { if (errno == EINTR) continue; break; }
        n += (size_t)r;
    }
    err[n] = '\0';
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (n == 0) snprintf(err, errlen, "%s: loading it killed the process (status %d)", path, st);
    return -1;
}

int main(int argc, char **argv)
{
    /* Until the loop's signal watchers exist, a stop signal stays pending
     * rather than killing a master that may already have children. */
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGQUIT);
    sigaddset(&stops, SIGHUP);
    sigaddset(&stops, SIGTTIN);
    sigaddset(&stops, SIGTTOU);
    sigprocmask(SIG_BLOCK, &stops, NULL);

    int rc = gw_config_parse(&gw.cfg, argc, argv);
    if (rc > 0) return 0;
    if (rc < 0) return 2;
    gw_log_set_level((gw_log_level_t)gw.cfg.log_level);
    gw_log_set_role("master");

    struct stat st;
    if (stat(gw.cfg.app_path, &st) < 0) {
        fprintf(stderr, "gateway: app not found: %s: %s\n", gw.cfg.app_path, strerror(errno));
        return 1;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "gateway: app is not a regular file: %s\n", gw.cfg.app_path);
        return 1;
    }

    if (!gw.cfg.preload) {
        char err[600];
        if (probe_app(gw.cfg.app_path, gw.cfg.app_symbol, err, sizeof(err)) < 0) {
            fprintf(stderr, "gateway: cannot load app: %s\n", err);
            return 1;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    if (gw_listeners_open(&gw.cfg, &gw.listeners, &gw.nlisteners) < 0) return 1;
    if (gw_ctl_start() < 0) {
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }

    if (gw.cfg.preload) {
        char err[512];
        gwl_app_t *app = gwl__app_create();
        if (!app || gwl__app_load(app, gw.cfg.app_path, gw.cfg.app_symbol, err, sizeof(err)) < 0) {
            fprintf(stderr, "gateway: %s\n", app ? err : "out of memory");
            gwl__app_destroy(app);
            gw_ctl_stop();
            gw_listeners_close(gw.listeners, gw.nlisteners);
            return 1;
        }
        gw.app = app;
    }

    gw.loop = ev_default_loop(EVFLAG_AUTO);
    if (!gw.loop) {
        fprintf(stderr, "gateway: cannot create the event loop\n");
        gw_ctl_stop();
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }
    gw_info("gateway %s starting: %u workers, balance %s%s, app %s:%s", GW_VERSION_STRING,
            gw.cfg.workers, gw.cfg.balance == GW_BALANCE_RR ? "rr" : "leastconn",
            gw.cfg.preload ? ", preload" : "", gw.cfg.app_path, gw.cfg.app_symbol);

    ev_signal_init(&sig_term, on_signal, SIGTERM);
    ev_signal_init(&sig_int, on_signal, SIGINT);
    ev_signal_init(&sig_quit, on_signal, SIGQUIT);
    ev_signal_start(gw.loop, &sig_term);
    ev_signal_start(gw.loop, &sig_int);
    ev_signal_start(gw.loop, &sig_quit);
    ev_signal_init(&sig_ttin, on_scale_signal, SIGTTIN);
    ev_signal_init(&sig_ttou, on_scale_signal, SIGTTOU);
    ev_signal_start(gw.loop, &sig_ttin);
    ev_signal_start(gw.loop, &sig_ttou);
    ev_signal_init(&sig_hup, on_hup, SIGHUP);
    ev_signal_start(gw.loop, &sig_hup);
    gw.started_at = ev_now(gw.loop);
    sigprocmask(SIG_UNBLOCK, &stops, NULL);   /* a pending one is delivered now */
    ev_prepare_init(&prepare, on_prepare);
    ev_prepare_start(gw.loop, &prepare);
    ev_init(&stop_timer, on_stop_timer);

    gw_front_start();
    if (gw_supervisor_start() < 0) {
        gw_front_stop_accepting();
        gw_ctl_stop();
        return 1;
    }
    ev_run(gw.loop, 0);

    /* Leaving: nothing may outlive the master. */
    gw_front_stop_accepting();
    for (unsigned i = 0; i < gw.nworkers; i++)
        if (gw.workers[i].pid > 0) kill(gw.workers[i].pid, SIGKILL);
    for (unsigned i = 0; i < gw.nworkers; i++)
        if (gw.workers[i].pid > 0) {
            int s;
            while (waitpid(gw.workers[i].pid, &s, 0) < 0 && errno == EINTR) {}
        }
    gw_ctl_stop();
    gw_info("stopped");
    return gw.exit_code;
}
