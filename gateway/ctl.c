/*
 * ctl.c - the control socket, served by the master's own loop (gw.loop), so
 * it answers while every worker is busy, blocked or stuck.
 *
 * The socket: cfg.control_socket (default /run/gateway.ctl),
 * a Unix stream socket created under umask 0177, so mode 0600 from its first
 * moment, removed on exit. A socket file nobody accepts on is stale and
 * replaced; one that answers is another gateway's ("address already in use").
 * Only a peer whose SO_PEERCRED uid is 0 or the master's own may talk; any
 * other gets "error: permission denied" for its request, then the close.
 *
 * The protocol is plain text, one exchange per connection (usable with
 * `socat - UNIX-CONNECT:/run/gateway.ctl`):
 *
 *   client: one request line, words separated by blanks, ended by "\n" (or by
 *           shutting down its write side): "status --json\n". At most
 *           CTL_REQ_MAX bytes.
 *   master: the reply text, then it closes the connection. A failed command's
 *           reply is one line starting with "error: ". JSON replies are one
 *           JSON object followed by "\n".
 *
 * Every socket is non-blocking; a client has CTL_CLIENT_TIMEOUT seconds for
 * the whole exchange; at most CTL_MAX_CLIENTS are served at once (others get
 * "error: busy"); requests and replies have fixed upper bounds.
 *
 * Commands live in one table, ctl_cmds[] (name, arguments, help, handler),
 * HAProxy cli_kws style; `help` and gatewayctl's help are generated from the
 * same words. Handlers only read the master's state or record an intent
 * (gw.want_stop, gw.draining, gw_supervisor_scale): the master's prepare
 * hook acts on stop requests, as it does for signals.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway.h"
#include "oneshot.h"
#include "log.h"
#include "metrics.h"

#define CTL_MAX_CLIENTS    32
#define CTL_REQ_MAX        1024
#define CTL_MAX_ARGS       16
#define CTL_REPLY_MAX      (4u << 20)
#define CTL_CLIENT_TIMEOUT 10.0


/* ---- reply buffer ---- */

/* Replies are built in oneshot.c's text buffer, capped at CTL_REPLY_MAX. */
typedef gw_text_t ctl_buf_t;

static void out(ctl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(ctl_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_text_vprintf(b, fmt, ap);
    va_end(ap);
}

/* Replace whatever was written with one "error: ..." line; returns -1. */
static int ctl_error(ctl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ctl_error(ctl_buf_t *b, const char *fmt, ...)
{
    b->len = 0;
    b->overflow = 0;
    out(b, "error: ");
    va_list ap;
    va_start(ap, fmt);
    gw_text_vprintf(b, fmt, ap);
    va_end(ap);
    out(b, "\n");
    return -1;
}

static void json_str(ctl_buf_t *b, const char *s)
{
    out(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') out(b, "\\%c", *p);
        else if (*p == '\n') out(b, "\\n");
        else if (*p < 0x20 || *p == 0x7f) out(b, "\\u%04x", *p);
        else out(b, "%c", *p);
    }
    out(b, "\"");
}

/* ---- /proc ---- */

static ssize_t read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

typedef struct {
    long long rss_kb, pss_kb;   /* -1: unknown */
    double    cpu_s;            /* -1: unknown */
} ctl_proc_t;

static void proc_read(pid_t pid, ctl_proc_t *pr)
{
    char path[64], buf[4096];
    pr->rss_kb = pr->pss_kb = -1;
    pr->cpu_s = -1;
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    if (read_small(path, buf, sizeof(buf)) > 0) {
        char *p;
        if ((p = strstr(buf, "\nRss:"))) pr->rss_kb = strtoll(p + 5, NULL, 10);
        if ((p = strstr(buf, "\nPss:"))) pr->pss_kb = strtoll(p + 5, NULL, 10);
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof(buf)) > 0) {
        char *p = strrchr(buf, ')');
        /* after "comm)": field 3 (state) ... field 14 utime, 15 stime */
        unsigned long long utime = 0, stime = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                        &utime, &stime) == 2) {
            long tck = sysconf(_SC_CLK_TCK);
            pr->cpu_s = (double)(utime + stime) / (double)(tck > 0 ? tck : 100);
        }
    }
}

/* ---- helpers for handlers ---- */

static const char *balance_name(void)
{
    return gw.cfg.balance == GW_BALANCE_RR ? "rr" : "leastconn";
}

static ev_tstamp now(void)
{
    return gw.loop ? ev_now(gw.loop) : ev_time();
}

/* Accept only the given flags; *json etc. set when present. */
static int want_flag(ctl_buf_t *b, int argc, char **argv, const char *flag, int *set)
{
    *set = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0) *set = 1;
        else return ctl_error(b, "%s: unexpected argument '%s' (usage: %s [%s])",
                              argv[0], argv[i], argv[0], flag);
    }
    return 0;
}

/* ---- commands ---- */

typedef int (*ctl_handler_t)(ctl_buf_t *b, int argc, char **argv);

typedef struct {
    const char   *name;
    const char   *args;     /* argument synopsis for help, "" if none */
    const char   *help;
    ctl_handler_t handler;
} ctl_cmd_t;

static int cmd_help(ctl_buf_t *b, int argc, char **argv);

/* Requests a worker is running now: in flight up to its capacity (the rest
 * wait inside it); without a fixed capacity, all of them. */
static unsigned worker_busy(const gw_worker_t *w)
{
    return w->capacity && w->inflight > w->capacity ? w->capacity : w->inflight;
}

static int cmd_status(ctl_buf_t *b, int argc, char **argv)
{
    int json;
    if (want_flag(b, argc, argv, "--json", &json) < 0) return -1;
    ev_tstamp t = now();
    uint64_t inflight = 0;
    unsigned nrows = 0;
    for (unsigned i = 0; i < gw.nworkers; i++) {
        inflight += gw.workers[i].inflight;
        if (gw.workers[i].pid > 0 || gw.workers[i].state == GW_WORKER_BACKOFF) nrows++;
    }
    long long queued = (long long)gw_front_queued();

    if (json) {
        out(b, "{\"version\":");
        json_str(b, GW_VERSION_STRING);
        out(b, ",\"pid\":%d,\"uptime\":%.3f,\"listeners\":[", (int)getpid(), t - gw.started_at);
        for (size_t i = 0; gw.listeners && i < gw.nlisteners; i++) {
            if (i) out(b, ",");
            json_str(b, gw.listeners[i].addr);
        }
        out(b, "],\"balance\":\"%s\",\"draining\":%s,\"stopping\":%s,\"workers_target\":%u,",
            balance_name(), gw.draining ? "true" : "false",
            gw.stopping || gw.want_stop ? "true" : "false", gw.target_workers);
        out(b, "\"totals\":{\"accepted\":%llu,\"requests\":%llu,\"inflight\":%llu,\"queued\":",
            (unsigned long long)gw.accepted, (unsigned long long)gw.requests,
            (unsigned long long)inflight);
        if (queued >= 0) out(b, "%lld", queued); else out(b, "null");
        out(b, ",\"responses_4xx\":%llu,\"responses_5xx\":%llu,\"timeouts\":%llu,"
               "\"rejected_503\":%llu},\"workers\":[",
            (unsigned long long)gw.responses_4xx, (unsigned long long)gw.responses_5xx,
            (unsigned long long)gw.timeouts, (unsigned long long)gw.rejected_503);
        int first = 1;
        for (unsigned i = 0; i < gw.nworkers; i++) {
            gw_worker_t *w = &gw.workers[i];
            if (!(w->pid > 0 || w->state == GW_WORKER_BACKOFF)) continue;
            ctl_proc_t pr = { -1, -1, -1 };
            if (w->pid > 0) proc_read(w->pid, &pr);
            out(b, "%s{\"slot\":%d,\"pid\":", first ? "" : ",", w->slot);
            first = 0;
            if (w->pid > 0) out(b, "%d", (int)w->pid); else out(b, "null");
            out(b, ",\"state\":\"%s\",\"inflight\":%u,\"served\":%llu,\"dropped\":%llu,"
                   "\"last_error\":", gw_worker_state_name(w->state), w->inflight,
                (unsigned long long)w->served, (unsigned long long)w->dropped);
            json_str(b, w->error);
            out(b, ",\"heartbeat_age\":");
            if (w->pid > 0 && w->heartbeat_at > 0) out(b, "%.3f", t - w->heartbeat_at);
            else out(b, "null");
            if (pr.rss_kb >= 0) out(b, ",\"rss_kb\":%lld", pr.rss_kb); else out(b, ",\"rss_kb\":null");
            if (pr.pss_kb >= 0) out(b, ",\"pss_kb\":%lld", pr.pss_kb); else out(b, ",\"pss_kb\":null");
            if (pr.cpu_s >= 0) out(b, ",\"cpu_seconds\":%.2f", pr.cpu_s); else out(b, ",\"cpu_seconds\":null");
            out(b, ",\"age\":");
            if (w->pid > 0 && w->spawned_at > 0) out(b, "%.3f", t - w->spawned_at); else out(b, "null");
            out(b, ",\"restarts\":%u,\"tasks\":%u,\"capacity\":%u,\"busy\":%u,\"loop\":",
                w->restarts, w->hb_tasks, w->capacity, worker_busy(w));
            json_str(b, w->loop_id);
            out(b, "}");
        }
        out(b, "]");
        gw_zygote_info_t z;
        gw_zygote_info(&z);
        if (z.enabled) {
            out(b, ",\"zygote\":{\"pid\":");
            if (z.pid > 0) out(b, "%d", (int)z.pid); else out(b, "null");
            out(b, ",\"state\":");
            json_str(b, z.state);
            out(b, ",\"generation\":%u,\"restarts\":%u,\"spawned\":%u}", z.generation,
                z.restarts, z.spawned);
        }
        out(b, "}\n");
        return 0;
    }

    out(b, "gateway %s  master pid %d  uptime %.1fs  balance %s%s%s\n", GW_VERSION_STRING,
        (int)getpid(), t - gw.started_at, balance_name(), gw.draining ? "  DRAINING" : "",
        gw.stopping || gw.want_stop ? "  STOPPING" : "");
    out(b, "listeners: ");
    for (size_t i = 0; gw.listeners && i < gw.nlisteners; i++)
        out(b, "%s%s", i ? ", " : "", gw.listeners[i].addr);
    out(b, "%s\n", gw.listeners && gw.nlisteners ? "" : "(none)");
    out(b, "requests %llu  in flight %llu  queued ", (unsigned long long)gw.requests,
        (unsigned long long)inflight);
    if (queued >= 0) out(b, "%lld", queued); else out(b, "-");
    out(b, "  4xx %llu  5xx %llu  timeouts %llu  rejected(503) %llu\n",
        (unsigned long long)gw.responses_4xx, (unsigned long long)gw.responses_5xx,
        (unsigned long long)gw.timeouts, (unsigned long long)gw.rejected_503);
    out(b, "workers %u (target %u)\n", nrows, gw.target_workers);
    out(b, "%-4s %-8s %-9s %6s %7s %8s %6s %7s %9s %9s %8s %8s %5s %5s  %s\n", "SLOT", "PID",
        "STATE", "INFL", "BUSY", "SERVED", "DROP", "HB-AGE", "RSS-KB", "PSS-KB", "CPU-S",
        "AGE-S", "RESTS", "TASKS", "LOOP");
    for (unsigned i = 0; i < gw.nworkers; i++) {
        gw_worker_t *w = &gw.workers[i];
        if (!(w->pid > 0 || w->state == GW_WORKER_BACKOFF)) continue;
        ctl_proc_t pr = { -1, -1, -1 };
        if (w->pid > 0) proc_read(w->pid, &pr);
        char pid[16] = "-", hb[16] = "-", rss[24] = "-", pss[24] = "-", cpu[24] = "-", age[24] = "-";
        if (w->pid > 0) snprintf(pid, sizeof(pid), "%d", (int)w->pid);
        if (w->pid > 0 && w->heartbeat_at > 0) snprintf(hb, sizeof(hb), "%.1f", t - w->heartbeat_at);
        if (pr.rss_kb >= 0) snprintf(rss, sizeof(rss), "%lld", pr.rss_kb);
        if (pr.pss_kb >= 0) snprintf(pss, sizeof(pss), "%lld", pr.pss_kb);
        if (pr.cpu_s >= 0) snprintf(cpu, sizeof(cpu), "%.2f", pr.cpu_s);
        if (w->pid > 0 && w->spawned_at > 0) snprintf(age, sizeof(age), "%.1f", t - w->spawned_at);
        char busy[24] = "-";
        if (w->capacity) snprintf(busy, sizeof(busy), "%u/%u", worker_busy(w), w->capacity);
        out(b, "%-4d %-8s %-9s %6u %7s %8llu %6llu %7s %9s %9s %8s %8s %5u %5u  %s\n", w->slot,
            pid, gw_worker_state_name(w->state), w->inflight, busy, (unsigned long long)w->served,
            (unsigned long long)w->dropped, hb, rss, pss, cpu, age, w->restarts, w->hb_tasks,
            w->loop_id[0] ? w->loop_id : "-");
    }
    gw_zygote_info_t z;
    gw_zygote_info(&z);
    if (z.enabled) {
        char zp[16] = "-";
        if (z.pid > 0) snprintf(zp, sizeof(zp), "%d", (int)z.pid);
        out(b, "zygote pid %s  %s  generation %u  restarts %u  workers forked %u\n", zp,
            z.state, z.generation, z.restarts, z.spawned);
    }
    return 0;
}

static int cmd_scale(ctl_buf_t *b, int argc, char **argv)
{
    if (argc != 2) return ctl_error(b, "usage: scale N|+K|-K");
    if (gw.stopping || gw.want_stop) return ctl_error(b, "the gateway is stopping");
    const char *s = argv[1];
    int sign = (*s == '+') ? 1 : (*s == '-') ? -1 : 0;
    const char *digits = s + (sign != 0);
    char *end;
    errno = 0;
    unsigned long v = strtoul(digits, &end, 10);
    if (!*digits || *end || errno || *digits == '-' || *digits == '+' || v > GW_MAX_WORKERS)
        return ctl_error(b, "scale: '%s' is not N, +K or -K (1..%d workers)", s, GW_MAX_WORKERS);
    long n = sign == 0 ? (long)v : (long)gw.target_workers + sign * (long)v;
    if (n < 1 || n > GW_MAX_WORKERS)
        return ctl_error(b, "scale %s: would make %ld workers (allowed: 1..%d)", s, n,
                         GW_MAX_WORKERS);
    unsigned old = gw.target_workers;
    gw_info("control: scale %s", s);
    unsigned got = gw_supervisor_scale((unsigned)n);
    out(b, "ok: workers %u -> %u\n", old, got);
    return 0;
}

static int cmd_drain(ctl_buf_t *b, int argc, char **argv)
{
    if (argc != 1) return ctl_error(b, "usage: %s", argv[0]);
    int on = strcmp(argv[0], "drain") == 0;
    if (gw.draining != on) gw_info("control: %s", on ? "draining" : "draining ended");
    gw.draining = on;
    out(b, "ok: %s\n", on ? "draining" : "not draining");
    return 0;
}

/* reload / reopen-logs / upgrade: the same intents as HUP, USR1, USR2. */
static int cmd_intent(ctl_buf_t *b, int argc, char **argv)
{
    if (argc != 1) return ctl_error(b, "usage: %s", argv[0]);
    if (gw.stopping || gw.want_stop) return ctl_error(b, "the gateway is stopping");
    if (strcmp(argv[0], "reload") == 0) gw.want_reload = 1;
    else if (strcmp(argv[0], "reopen-logs") == 0) gw.want_reopen = 1;
    else gw.want_upgrade = 1;
    gw_info("control: %s requested", argv[0]);
    out(b, "ok: %s requested\n", argv[0]);
    return 0;
}

static int cmd_stop(ctl_buf_t *b, int argc, char **argv)
{
    int quick;
    if (want_flag(b, argc, argv, "--quick", &quick) < 0) return -1;
    /* same rule as the signals: quick may upgrade a graceful stop */
    if (!gw.want_stop || (quick && gw.want_stop == 1)) {
        gw.want_stop = quick ? 2 : 1;
        gw_info("control: %s stop", quick ? "quick" : "graceful");
    }
    out(b, "ok: %s stop requested\n", gw.want_stop == 2 ? "quick" : "graceful");
    return 0;
}

static int cmd_config(ctl_buf_t *b, int argc, char **argv)
{
    int json;
    if (want_flag(b, argc, argv, "--json", &json) < 0) return -1;
    const gw_config_t *c = &gw.cfg;
    char app[4200];
    snprintf(app, sizeof(app), "%s:%s", c->app_path ? c->app_path : "",
             c->app_symbol ? c->app_symbol : "");

    /* one list, printed as "name value" lines or one JSON object */
    enum { S, U, D, B, N };   /* string, unsigned, seconds, bool, null-able string */
    struct { const char *name; int type; const char *s; unsigned long long u; double d; } kv[] = {
        { "workers",                  U, NULL, c->workers, 0 },
        { "workers_target",           U, NULL, gw.target_workers, 0 },
        { "balance",                  S, balance_name(), 0, 0 },
        { "preload",                  B, NULL, (unsigned long long)c->preload, 0 },
        { "max_inflight",             U, NULL, c->max_inflight, 0 },
        { "max_queue",                U, NULL, c->max_queue, 0 },
        { "queue_timeout",            D, NULL, 0, c->queue_timeout },
        { "keep_alive",               D, NULL, 0, c->keepalive },
        { "header_timeout",           D, NULL, 0, c->header_timeout },
        { "body_timeout",             D, NULL, 0, c->body_timeout },
        { "send_timeout",             D, NULL, 0, c->send_timeout },
        { "graceful_timeout",         D, NULL, 0, c->graceful_timeout },
        { "boot_timeout",             D, NULL, 0, c->boot_timeout },
        { "timeout",                  D, NULL, 0, c->timeout },
        { "max_requests",             U, NULL, c->max_requests, 0 },
        { "max_requests_jitter",      U, NULL, c->max_requests_jitter, 0 },
        { "max_worker_memory_mb",     U, NULL, c->max_worker_memory, 0 },
        { "heartbeat_ms",             U, NULL, c->heartbeat_ms, 0 },
        { "window",                   U, NULL, c->window, 0 },
        { "limit_request_line",       U, NULL, c->limits.request_line, 0 },
        { "limit_request_fields",     U, NULL, c->limits.fields, 0 },
        { "limit_request_field_size", U, NULL, c->limits.field_size, 0 },
        { "limit_request_head",       U, NULL, c->limits.head, 0 },
        { "limit_request_body",       U, NULL, (unsigned long long)c->limits.body, 0 },
        { "backlog",                  U, NULL, (unsigned long long)c->backlog, 0 },
        { "log_level",                S, gw_log_level_name((gw_log_level_t)c->log_level), 0, 0 },
        { "control_socket",           S, c->control_socket, 0, 0 },
        { "health_path",              N, c->health_path, 0, 0 },
        { "app",                      S, app, 0, 0 },
    };
    size_t n = sizeof(kv) / sizeof(kv[0]);

    if (json) {
        out(b, "{\"binds\":[");
        for (size_t i = 0; i < c->nbinds; i++) {
            if (i) out(b, ",");
            json_str(b, c->binds[i]);
        }
        out(b, "]");
    } else {
        for (size_t i = 0; i < c->nbinds; i++) out(b, "%-26s %s\n", "bind", c->binds[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (json) {
            out(b, ",\"%s\":", kv[i].name);
            switch (kv[i].type) {
            case S: json_str(b, kv[i].s); break;
            case N: if (kv[i].s) json_str(b, kv[i].s); else out(b, "null"); break;
            case U: out(b, "%llu", kv[i].u); break;
            case D: out(b, "%g", kv[i].d); break;
            case B: out(b, "%s", kv[i].u ? "true" : "false"); break;
            }
        } else {
            out(b, "%-26s ", kv[i].name);
            switch (kv[i].type) {
            case S: out(b, "%s\n", kv[i].s ? kv[i].s : ""); break;
            case N: out(b, "%s\n", kv[i].s ? kv[i].s : "-"); break;
            case U: out(b, "%llu\n", kv[i].u); break;
            case D: out(b, "%g\n", kv[i].d); break;
            case B: out(b, "%s\n", kv[i].u ? "on" : "off"); break;
            }
        }
    }
    if (json) out(b, "}\n");
    return 0;
}

static int cmd_metrics(ctl_buf_t *b, int argc, char **argv)
{
    if (argc != 1) return ctl_error(b, "usage: %s", argv[0]);
    char *text = NULL;
    size_t len = gw_metrics_render(&text);
    if (!len) {
        free(text);
        return ctl_error(b, "cannot render metrics");
    }
    out(b, "%.*s", (int)len, text);
    free(text);
    return 0;
}

/* The one command table: `help` and gatewayctl --help list it. */
static const ctl_cmd_t ctl_cmds[] = {
    { "status",  "[--json]",  "version, uptime, listeners, totals and one row per worker "
                              "(pid, state, in flight, busy/capacity, served, heartbeat age, "
                              "RSS/PSS, CPU, age, restarts, tasks, loop) and the zygote", cmd_status },
    { "scale",   "N|+K|-K",   "set the number of workers (new ones spawn; extra ones finish "
                              "their requests and exit)", cmd_scale },
    { "reload",  "",          "like HUP: re-read the configuration, start new workers, drain "
                              "the old ones", cmd_intent },
    { "reopen-logs", "",      "like USR1: reopen the error and access logs", cmd_intent },
    { "upgrade", "",          "like USR2: start a new master from the current executable "
                              "with the listening sockets", cmd_intent },
    { "drain",   "",          "health answers 503 and responses close their connections, so "
                              "balancers move traffic away (requests that arrive are served)",
                              cmd_drain },
    { "undrain", "",          "end a drain", cmd_drain },
    { "stop",    "[--quick]", "graceful stop (in-flight requests finish), or quick", cmd_stop },
    { "config",  "[--json]",  "the effective settings", cmd_config },
    { "metrics", "",          "Prometheus text exposition (as served by --metrics-bind)",
      cmd_metrics },
    { "help",    "",          "list the commands", cmd_help },
};
#define NCMDS (sizeof(ctl_cmds) / sizeof(ctl_cmds[0]))

static int cmd_help(ctl_buf_t *b, int argc, char **argv)
{
    for (size_t i = 0; i < NCMDS; i++) {
        char syn[64];
        snprintf(syn, sizeof(syn), "%s%s%s", ctl_cmds[i].name, *ctl_cmds[i].args ? " " : "",
                 ctl_cmds[i].args);
        out(b, "  %-20s %s\n", syn, ctl_cmds[i].help);
    }
    return 0;
}

/* Split the request line into words and run its command. */
static void ctl_execute(ctl_buf_t *b, char *line)
{
    char *argv[CTL_MAX_ARGS];
    int argc = 0;
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t') {
            ctl_error(b, "request contains control characters");
            return;
        }
    for (char *tok = strtok(line, " \t"); tok; tok = strtok(NULL, " \t")) {
        if (argc == CTL_MAX_ARGS) {
            ctl_error(b, "too many arguments");
            return;
        }
        argv[argc++] = tok;
    }
    if (argc == 0) {
        ctl_error(b, "empty request (try 'help')");
        return;
    }
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(argv[0], ctl_cmds[i].name) == 0) {
            gw_debug("control: %s", argv[0]);
            ctl_cmds[i].handler(b, argc, argv);
            if (b->overflow) ctl_error(b, "reply too large");
            return;
        }
    ctl_error(b, "unknown command '%.64s' (try 'help')", argv[0]);
}

/* ---- connections: one request line, one reply (oneshot.c) ---- */

static int peer_allowed(int fd, uid_t *uid)
{
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
        *uid = (uid_t)-1;
        return 0;
    }
    *uid = cr.uid;
    return cr.uid == 0 || cr.uid == geteuid();
}

/* A request is one line (or what came before EOF). Peers other than root
 * and the master's user are answered "permission denied". */
static int ctl_on_data(gw_oneshot_client_t *c, char *req, size_t len, size_t from, int eof,
                       int full)
{
    ctl_buf_t b = { .max = CTL_REPLY_MAX };
    char *nl = memchr(req + from, '\n', len - from);
    if (nl) *nl = '\0';
    else if (eof && len == 0) return -1;       /* closed without a request */
    else if (full) {
        ctl_error(&b, "request longer than %d bytes", CTL_REQ_MAX);
        gw_oneshot_reply(c, b.p, b.len);
        return 1;
    } else if (!eof) return 0;                  /* wait for the end of the line */
    size_t n = strlen(req);
    if (n && req[n - 1] == '\r') req[n - 1] = '\0';
    uid_t uid;
    if (!peer_allowed(gw_oneshot_fd(c), &uid)) {
        gw_warn("control socket: refused a client with uid %d", (int)uid);
        ctl_error(&b, "permission denied");
    } else {
        ctl_execute(&b, req);
    }
    gw_oneshot_reply(c, b.p, b.len);
    return 1;
}

static gw_oneshot_t ctl = {
    .what = "control socket", .max_request = CTL_REQ_MAX, .max_clients = CTL_MAX_CLIENTS,
    .timeout = CTL_CLIENT_TIMEOUT, .busy_reply = "error: busy: too many control clients\n",
    .on_data = ctl_on_data, .fd = -1,
};

int gw_ctl_start(void)
{
    const char *path = gw.cfg.control_socket;
    if (!path || !*path) return 0;            /* none configured */
    /* listener.c binds it: stale-socket check, mode 0600 from creation. */
    char spec[sizeof(ctl.lst.name) + 8];
    snprintf(spec, sizeof(spec), "unix:%s", path);
    return gw_oneshot_start(&ctl, spec, path, 0600, "control socket");
}

void gw_ctl_stop(void)
{
    gw_oneshot_stop(&ctl);
}
