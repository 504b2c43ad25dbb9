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
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "access.h"
#include "gateway.h"
#include "gwl_int.h"
#include "hooks.h"
#include "metrics.h"
#include "log.h"

static ev_signal sig_term, sig_int, sig_quit, sig_ttin, sig_ttou, sig_hup, sig_usr1, sig_usr2;
static ev_child upgrade_child;
static char *pidfile_old;       /* PIDFILE.oldbin while an upgrade runs */
static const char *pidfile_written;   /* tentative: defined with the pidfile code */
static int saved_argc;
static char **saved_argv;

/*
 * HUP: read the configuration again (command line, GATEWAY_CMD_ARGS,
 * WEB_CONCURRENCY, the -c file) and apply what can change while running.
 * Listeners, the control socket, --preload and the app stay as started
 * (changing them needs a restart); a bad file keeps the current settings.
 */
static int reload_config(void)
{
    static gw_config_t fresh;
    memset(&fresh, 0, sizeof(fresh));
    if (gw_config_parse(&fresh, saved_argc, saved_argv) != 0) {
        gw_error("reload: configuration not valid; keeping the current settings and workers");
        return -1;
    }
    gw_config_t *c = &gw.cfg;
    int binds_same = fresh.nbinds == c->nbinds;
    for (size_t i = 0; binds_same && i < c->nbinds; i++)
        binds_same = strcmp(fresh.binds[i], c->binds[i]) == 0;
    if (!binds_same) gw_warn("reload: bind changes need a restart; keeping the current listeners");
    if (fresh.preload != c->preload || strcmp(fresh.app_path, c->app_path) != 0 ||
        strcmp(fresh.app_symbol, c->app_symbol) != 0)
        gw_warn("reload: app or --preload changes need a restart");
    c->workers = fresh.workers;
    c->balance = fresh.balance;
    c->max_inflight = fresh.max_inflight;
    c->prefetch_ms = fresh.prefetch_ms;
    c->max_queue = fresh.max_queue;
    c->keepalive = fresh.keepalive;
    c->header_timeout = fresh.header_timeout;
    c->body_timeout = fresh.body_timeout;
    c->send_timeout = fresh.send_timeout;
    c->queue_timeout = fresh.queue_timeout;
    c->graceful_timeout = fresh.graceful_timeout;
    c->boot_timeout = fresh.boot_timeout;
    c->timeout = fresh.timeout;
    c->max_requests = fresh.max_requests;
    c->max_requests_jitter = fresh.max_requests_jitter;
    c->max_worker_memory = fresh.max_worker_memory;
    c->health_path = fresh.health_path;
    c->limits = fresh.limits;
    c->log_level = fresh.log_level;
    gw_log_set_level((gw_log_level_t)c->log_level);
    double hb = c->timeout * 1000.0 / 4;
    c->heartbeat_ms = hb > 1000 ? 1000 : hb < 50 ? 50 : (unsigned)hb;
    return 0;
}
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
    gw.want_reload = 1;
}

/* USR2: binary upgrade (acted on in master_step). */
static void on_usr2(struct ev_loop *loop, ev_signal *w, int revents)
{
    gw.want_upgrade = 1;
}

static void upgrade_on_exit(struct ev_loop *loop, ev_child *c, int revents);

/*
 * USR2: start a new master from the current executable with the same
 * arguments, handing it the listening sockets (GATEWAY_LISTEN_FDS). Both
 * masters accept from the same kernel queues; `kill -TERM <old master>`
 * then completes the swap (this master drains and exits; the sockets stay
 * open in the new one). The control and metrics sockets are released first
 * so the new master can bind them; the pidfile becomes PIDFILE.oldbin.
 */
static void upgrade_start(void)
{
    if (ev_is_active(&upgrade_child)) {
        gw_warn("upgrade: a new master (pid %d) is already running", upgrade_child.pid);
        return;
    }
    char fds[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < gw.nlisteners; i++) {
        int n = snprintf(fds + off, sizeof(fds) - off, "%s%d", i ? "," : "", gw.listeners[i].fd);
        if (n > 0) off += (size_t)n;
    }
    gw_ctl_stop();
    gw_metrics_stop();
    if (gw.cfg.pidfile) {
        size_t n = strlen(gw.cfg.pidfile) + 8;
        pidfile_old = malloc(n);
        if (pidfile_old) {
            snprintf(pidfile_old, n, "%s.oldbin", gw.cfg.pidfile);
            if (rename(gw.cfg.pidfile, pidfile_old) == 0) pidfile_written = pidfile_old;
        }
    }
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (size_t i = 0; i < gw.nlisteners; i++)
            fcntl(gw.listeners[i].fd, F_SETFD, 0);   /* survive exec */
        setenv("GATEWAY_LISTEN_FDS", fds, 1);
        execv("/proc/self/exe", saved_argv);
        fprintf(stderr, "gateway: upgrade: exec: %s\n", strerror(errno));
        _exit(127);
    }
    if (pid < 0) {
        gw_error("upgrade: fork: %s", strerror(errno));
        upgrade_on_exit(gw.loop, NULL, 0);
        return;
    }
    gw_info("upgrade: started a new master (pid %d) with listeners %s; "
            "send TERM to this master (pid %d) to complete the swap", (int)pid, fds, (int)getpid());
    ev_child_set(&upgrade_child, pid, 0);
    ev_child_start(gw.loop, &upgrade_child);
}

/* The new master exited (or never started): take the sockets back. */
static void upgrade_on_exit(struct ev_loop *loop, ev_child *c, int revents)
{
    if (c) {
        ev_child_stop(loop, c);
        gw_warn("upgrade: the new master (pid %d) exited with status %d", c->rpid,
                WIFEXITED(c->rstatus) ? WEXITSTATUS(c->rstatus) : 128 + WTERMSIG(c->rstatus));
    }
    if (gw.stopping) return;   /* we are handing over: nothing to take back */
    if (pidfile_old && gw.cfg.pidfile && rename(pidfile_old, gw.cfg.pidfile) == 0)
        pidfile_written = gw.cfg.pidfile;
    if (gw_ctl_start() < 0) gw_error("upgrade: cannot bind the control socket again");
    if (gw_metrics_start() < 0) gw_error("upgrade: cannot bind the metrics socket again");
}

/* USR1: reopen the error and access logs here and in every worker. */
static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    gw.want_reopen = 1;
}

static void reopen_logs(void)
{
    int rc = gw_log_reopen();
    int rc2 = gw_access_reopen();
    if (rc < 0 || rc2 < 0)
        gw_error("reopen logs: %s", strerror(-(rc < 0 ? rc : rc2)));
    gw_supervisor_signal_all(SIGUSR1);
    if (gw_zygote_enabled()) gw_zygote_reopen_logs();
    gw_info("logs reopened");
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
    if (gw.want_reopen) {
        gw.want_reopen = 0;
        reopen_logs();
    }
    if (gw.want_upgrade && !gw.stopping && !gw.want_stop) {
        gw.want_upgrade = 0;
        upgrade_start();
    }
    if (gw.want_reload && !gw.stopping && !gw.want_stop) {
        gw.want_reload = 0;
        if (reload_config() == 0) {
            gw_hooks_run(GW_HOOK_ON_RELOAD, -1, 0, 0, 0);
            gw_supervisor_reload(gw.cfg.workers);
        }
    }
    if (gw.want_stop > gw.stopping) {
        int first = gw.stopping == 0;
        gw.stopping = gw.want_stop;
        if (first)
            gw_info("%s stop requested", gw.stopping == 1 ? "graceful" : "quick");
        if (ev_is_active(&upgrade_child)) {
            /* the new master serves on these sockets now: leave their files */
            gw_listeners_keep_files(1);
            gw_info("upgrade: handing over to the new master (pid %d)", upgrade_child.pid);
        }
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

/* A probe child's report: its message (one line) from fd, then its status. */
static size_t probe_collect(pid_t pid, int fd, char *err, size_t errlen, int *status)
{
    size_t n = 0;
    ssize_t r;
    while (n + 1 < errlen && (r = read(fd, err + n, errlen - 1 - n)) != 0) {
        if (r < 0) { if (errno == EINTR) continue; break; }
        n += (size_t)r;
    }
    err[n] = '\0';
    for (char *q = err; *q; q++) if (*q == '\n') *q = ' ';
    close(fd);
    *status = 0;
    while (waitpid(pid, status, 0) < 0 && errno == EINTR) {}
    return n;
}

/*
 * Without --preload the master must not run application code, yet a missing
 * symbol or an unloadable .so is a configuration error that deserves one
 * line before anything starts. So a throwaway child does dlopen + dlsym
 * (constructors run there, never here) and reports through a pipe.
 */
/*
 * --pid FILE. Checked before anything binds (a live pid in it refuses the
 * start), written once the listeners are bound (temporary file + rename, so
 * a reader never sees it half-written), removed at exit only while it still
 * holds our pid: a worker that exits, or a newer master that took the file
 * over, never loses it.
 */
static pid_t pidfile_read(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    if (v <= 0 || v > 0x7fffffff || (*end && *end != '\n')) return 0;
    return (pid_t)v;
}

static int pidfile_check(const char *path)
{
    pid_t p = pidfile_read(path);
    if (p > 0 && p != getpid() && (kill(p, 0) == 0 || errno == EPERM)) {
        fprintf(stderr, "gateway: pid file %s names a running process (pid %ld); "
                "is another gateway running?\n", path, (long)p);
        return -1;
    }
    return 0;
}

static const char *pidfile_written;

static void pidfile_remove(void)
{
    if (pidfile_written && pidfile_read(pidfile_written) == getpid())
        unlink(pidfile_written);
}

static int pidfile_write(const char *path)
{
    char tmp[4200], buf[32];
    if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "gateway: pid file path too long: %s\n", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "gateway: cannot write pid file %s: %s\n", path, strerror(errno));
        return -1;
    }
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (fchmod(fd, 0644) < 0 || write(fd, buf, (size_t)n) != n || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        fprintf(stderr, "gateway: cannot write pid file %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    pidfile_written = path;
    atexit(pidfile_remove);
    return 0;
}

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
    int st;
    size_t n = probe_collect(pid, p[0], err, errlen, &st);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (n == 0) snprintf(err, errlen, "%s: loading it killed the process (status %d)", path, st);
    return -1;
}

/* --runtime: auto picks native for APP ending in .so, else Python. */
static int pick_runtime(void)
{
    const char *rt = gw.cfg.runtime ? gw.cfg.runtime : "auto";
    if (strcmp(rt, "python") == 0) gw.python = 1;
    else if (strcmp(rt, "native") == 0) gw.python = 0;
    else if (strcmp(rt, "auto") == 0) {
        const char *spec = gw.cfg.app_spec, *colon = strrchr(spec, ':');
        size_t plen = colon ? (size_t)(colon - spec) : strlen(spec);
        gw.python = !(plen >= 3 && memcmp(spec + plen - 3, ".so", 3) == 0);
    } else {
        fprintf(stderr, "gateway: invalid value '%s' for --runtime (auto, native or python)\n", rt);
        return -1;
    }
    return 0;
}

/*
 * Python apps: the runtime loads the app in "check" mode in a throwaway
 * process (the same loader the workers use), so an import error, a missing
 * attribute or an unknown interface is one clear line before any worker is
 * forked (not a respawn loop).
 */
static int probe_python(char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return 0;
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return 0; }
    if (pid == 0) {
        dup2(p[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, 3);          /* no channel in check mode */
        }
        gw_python_exec("check");
    }
    close(p[1]);
    int st;
    probe_collect(pid, p[0], err, errlen, &st);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* --user/--group: names or numbers, checked before anything starts. */
static int resolve_user(void)
{
    gw.worker_uid = (uid_t)-1;
    gw.worker_gid = (gid_t)-1;
    if (gw.cfg.user) {
        char *end;
        long v = strtol(gw.cfg.user, &end, 10);
        struct passwd *pw = (*end || end == gw.cfg.user) ? getpwnam(gw.cfg.user) : getpwuid((uid_t)v);
        if (!pw && (*end || end == gw.cfg.user)) {
            fprintf(stderr, "gateway: --user: no such user '%s'\n", gw.cfg.user);
            return -1;
        }
        gw.worker_uid = pw ? pw->pw_uid : (uid_t)v;
        gw.worker_gid = pw ? pw->pw_gid : (gid_t)v;
    }
    if (gw.cfg.group) {
        char *end;
        long v = strtol(gw.cfg.group, &end, 10);
        if (*end || end == gw.cfg.group) {
            struct group *gr = getgrnam(gw.cfg.group);
            if (!gr) {
                fprintf(stderr, "gateway: --group: no such group '%s'\n", gw.cfg.group);
                return -1;
            }
            gw.worker_gid = gr->gr_gid;
        } else {
            gw.worker_gid = (gid_t)v;
        }
    }
    if ((gw.worker_uid != (uid_t)-1 || gw.worker_gid != (gid_t)-1) && geteuid() != 0 &&
        gw.worker_uid != geteuid()) {
        fprintf(stderr, "gateway: --user/--group need the master to run as root\n");
        return -1;
    }
    return 0;
}

/*
 * Listeners: inherited from an upgrading master (GATEWAY_LISTEN_FDS) or
 * from systemd (LISTEN_FDS with LISTEN_PID = us), else bound from --bind.
 */
static int adopt_listeners(void)
{
    int fds[GW_MAX_BINDS];
    size_t n = 0;
    const char *up = getenv("GATEWAY_LISTEN_FDS");
    const char *sd = getenv("LISTEN_FDS"), *sdpid = getenv("LISTEN_PID");
    if (up && *up) {
        for (const char *p = up; *p && n < GW_MAX_BINDS;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 3) break;
            fds[n++] = (int)v;
            p = *end == ',' ? end + 1 : end;
        }
        unsetenv("GATEWAY_LISTEN_FDS");
        gw_info("upgrade: adopting %zu listening sockets from the previous master", n);
    } else if (sd && sdpid && atol(sdpid) == (long)getpid()) {
        long k = atol(sd);
        for (long i = 0; i < k && n < GW_MAX_BINDS; i++) fds[n++] = 3 + (int)i;
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        gw_info("systemd: adopting %zu listening sockets", n);
    } else {
        return gw_listeners_open(&gw.cfg, &gw.listeners, &gw.nlisteners);
    }
    if (n == 0) {
        fprintf(stderr, "gateway: no usable inherited listening sockets\n");
        return -1;
    }
    return gw_listeners_adopt(fds, n, &gw.listeners, &gw.nlisteners);
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
    sigaddset(&stops, SIGUSR1);
    sigaddset(&stops, SIGUSR2);
    sigprocmask(SIG_BLOCK, &stops, NULL);

    saved_argc = argc;
    saved_argv = argv;
    int rc = gw_config_parse(&gw.cfg, argc, argv);
    if (rc > 0) return 0;
    if (rc < 0) return 2;
    if (gw.cfg.print_config) {
        gw_config_print(stdout, &gw.cfg);
        if (!gw.cfg.check_config) return fflush(stdout) == 0 ? 0 : 1;
    }
    gw_log_set_level((gw_log_level_t)gw.cfg.log_level);
    gw_log_set_role("master");

    if (pick_runtime() < 0) return 2;
    if (gw.cfg.chdir && chdir(gw.cfg.chdir) < 0) {
        fprintf(stderr, "gateway: --chdir %s: %s\n", gw.cfg.chdir, strerror(errno));
        return 1;
    }
    struct stat st;
    if (gw.python) {
        /* checked by the import probe below */
    } else if (stat(gw.cfg.app_path, &st) < 0) {
        fprintf(stderr, "gateway: app not found: %s: %s\n", gw.cfg.app_path, strerror(errno));
        return 1;
    }
    if (!gw.python && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "gateway: app is not a regular file: %s\n", gw.cfg.app_path);
        return 1;
    }
    if (gw.cfg.pidfile && pidfile_check(gw.cfg.pidfile) < 0) return 1;
    if (gw.cfg.check_config) {
        /* nothing bound, nothing loaded, nothing forked */
        printf("config OK\n");
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (gw.cfg.umask >= 0) umask((mode_t)gw.cfg.umask);
    if (resolve_user() < 0) return 1;
    if (gw.cfg.error_logfile) {
        int lrc = gw_log_open(gw.cfg.error_logfile);
        if (lrc < 0) {
            fprintf(stderr, "gateway: cannot open error log %s: %s\n", gw.cfg.error_logfile,
                    strerror(-lrc));
            return 1;
        }
    }
    if (gw.cfg.access_logfile) {
        char aerr[256];
        if (gw_access_open(gw.cfg.access_logfile, gw.cfg.access_logformat, aerr, sizeof(aerr)) < 0) {
            fprintf(stderr, "gateway: %s\n", aerr);
            return 1;
        }
    }

    if (gw.python) {
        /* Without --preload a throwaway process checks the import first.
         * Then the zygote starts, before anything is bound: with --preload
         * it imports the app (in place of the check). A failure is one
         * line and exit 1, with nothing left running. It forks the
         * workers later. */
        char err[600];
        if ((!gw.cfg.preload && probe_python(err, sizeof(err)) < 0) ||
            gw_zygote_boot(err, sizeof(err)) < 0) {
            fprintf(stderr, "gateway: %s\n", err[0] ? err : "cannot load the Python app");
            return 1;
        }
    } else if (!gw.cfg.preload) {
        char err[600];
        if (probe_app(gw.cfg.app_path, gw.cfg.app_symbol, err, sizeof(err)) < 0) {
            fprintf(stderr, "gateway: cannot load app: %s\n", err);
            return 1;
        }
    }

    if (gw.cfg.preload && !gw.python) {   /* before on_starting and binding, as Gunicorn does */
        char err[512];
        gwl_app_t *app = gwl__app_create();
        if (!app || gwl__app_load(app, gw.cfg.app_path, gw.cfg.app_symbol, err, sizeof(err)) < 0) {
            fprintf(stderr, "gateway: %s\n", app ? err : "out of memory");
            gwl__app_destroy(app);
            return 1;
        }
        gw.app = app;
    }
    signal(SIGPIPE, SIG_IGN);
    if (gw_hooks_load() < 0) return 1;
    gw_hooks_run(GW_HOOK_ON_STARTING, -1, 0, 0, 0);
    if (adopt_listeners() < 0) return 1;
    if (gw.cfg.pidfile && pidfile_write(gw.cfg.pidfile) < 0) {
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }
    if (gw_ctl_start() < 0) {
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }
    if (gw_metrics_start() < 0) {
        gw_ctl_stop();
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }


    gw.loop = ev_default_loop(EVFLAG_AUTO);
    if (!gw.loop) {
        fprintf(stderr, "gateway: cannot create the event loop\n");
        gw_metrics_stop();
        gw_ctl_stop();
        gw_listeners_close(gw.listeners, gw.nlisteners);
        return 1;
    }
    if (gw.cfg.workers_auto)
        gw_info("workers: auto = 2 x %ld cores + 1 = %u", sysconf(_SC_NPROCESSORS_ONLN),
                gw.cfg.workers);
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
    ev_signal_init(&sig_usr1, on_usr1, SIGUSR1);
    ev_signal_start(gw.loop, &sig_usr1);
    ev_signal_init(&sig_usr2, on_usr2, SIGUSR2);
    ev_signal_start(gw.loop, &sig_usr2);
    ev_child_init(&upgrade_child, upgrade_on_exit, 0, 0);
    gw.started_at = ev_now(gw.loop);
    sigprocmask(SIG_UNBLOCK, &stops, NULL);   /* a pending one is delivered now */
    ev_prepare_init(&prepare, on_prepare);
    ev_prepare_start(gw.loop, &prepare);
    ev_init(&stop_timer, on_stop_timer);

    gw_front_start();
    gw_log_activate();   /* from here on the error log goes to --error-logfile */
    if (gw_supervisor_start() < 0) {
        gw_front_stop_accepting();
        gw_metrics_stop();
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
    gw_zygote_kill_all();
    gw_metrics_stop();
    gw_ctl_stop();
    gw_hooks_run(GW_HOOK_ON_EXIT, -1, 0, gw.exit_code, 0);
    gw_info("stopped");
    return gw.exit_code;
}
