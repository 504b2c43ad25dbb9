/*
 * config.c - the option table and its parser (master, start-up only).
 * Every default and limit lives in `options[]` below and nowhere else; the
 * help text is printed from the same rows, so it cannot drift.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

typedef enum {
    OPT_UINT,      /* unsigned, [min, max] */
    OPT_SIZE,      /* size_t bytes, [min, max] */
    OPT_U64,       /* uint64_t bytes, [min, max] */
    OPT_SECONDS,   /* double seconds, > 0 */
    OPT_FLAG,      /* int set to 1 */
    OPT_BIND,      /* appended to binds[] */
    OPT_BALANCE,   /* rr | leastconn */
    OPT_LOGLEVEL,  /* debug..alert */
    OPT_INT,       /* int, [min, max] */
    OPT_STRING,    /* const char *, kept from argv/default/file */
    OPT_MODE,      /* int, octal 0..0777 (umask) */
    OPT_APP,       /* path.so[:symbol] into app_buf */
    OPT_CONFIG,    /* -c FILE: read before the other sources are applied */
    OPT_ACTION,    /* int set to 1; command line / GATEWAY_CMD_ARGS only */
    OPT_HELP,
    OPT_VERSION
} opt_type_t;

/* Settings that are actions on the command line, not values a file holds. */
#define CLI_ONLY(t) ((t) == OPT_CONFIG || (t) == OPT_ACTION || (t) == OPT_HELP || \
                     (t) == OPT_VERSION)

typedef struct {
    const char *name;
    char        short_name;
    const char *arg;        /* metavar, NULL for flags */
    opt_type_t  type;
    size_t      offset;     /* into gw_config_t */
    const char *def;        /* default, as text (NULL: none) */
    double      min, max;
    const char *help;
} opt_t;

#define OFF(f) offsetof(gw_config_t, f)

static const opt_t options[] = {
    { "bind", 'b', "ADDR", OPT_BIND, 0, "127.0.0.1:8000", 0, 0,
      "Listen on ADDR: HOST:PORT, [IPv6]:PORT or unix:/path. Repeat for several "
      "listeners. A unix socket file is created with mode 0660 and removed on exit." },
    { "workers", 'w', "N", OPT_UINT, OFF(workers), "1", 1, GW_MAX_WORKERS,
      "Number of worker processes, or 'auto' for 2 x CPU cores + 1 (the number chosen is "
      "logged). Default: $WEB_CONCURRENCY if set (it may be 'auto' too), else 1." },
    { "balance", 0, "rr|leastconn", OPT_BALANCE, OFF(balance), "leastconn", 0, 0,
      "How the front picks a worker: exact least-connections (ties broken "
      "round-robin) or plain round-robin. Only READY workers are picked." },
    { "preload", 0, NULL, OPT_FLAG, OFF(preload), NULL, 0, 0,
      "Load the app once before forking (workers share its pages copy-on-write): a "
      "native app in the master, a Python app in a zygote process that forks the workers "
      "(gc.freeze() first). Without it each worker loads the app after fork." },
    { "max-inflight", 0, "N", OPT_UINT, OFF(max_inflight), "0", 0, GW_INFLIGHT_MAX,
      "Requests one worker may have in flight at once. 0 (auto): 100, or more for a "
      "worker that runs more at once (Python ASGI and gevent: --worker-connections)." },
    { "prefetch-ms", 0, "MS", OPT_UINT, OFF(prefetch_ms), "1", 0, 60000,
      "A worker that runs a fixed number of requests at once (a Python sync worker 1, "
      "--threads N) gets more than that, up to --max-inflight, only while its recent "
      "requests took under MS on average; otherwise requests wait in the front until one "
      "of its threads is free, so none waits behind a slow request. 0: never (Gunicorn's "
      "strict semantics)." },
    { "max-queue", 0, "N", OPT_UINT, OFF(max_queue), "1024", 0, 1u << 20,
      "Requests that may wait when every worker is at --max-inflight; past it "
      "the front answers 503 with Retry-After." },
    { "queue-timeout", 0, "SECONDS", OPT_SECONDS, OFF(queue_timeout), "30", 0, 86400,
      "How long a request may wait for a worker before a 503." },
    { "keep-alive", 0, "SECONDS", OPT_SECONDS, OFF(keepalive), "5", 0, 86400,
      "Close an idle keep-alive connection after SECONDS." },
    { "header-timeout", 0, "SECONDS", OPT_SECONDS, OFF(header_timeout), "10", 0, 86400,
      "Time a client has to send a whole request head (408 if it started)." },
    { "body-timeout", 0, "SECONDS", OPT_SECONDS, OFF(body_timeout), "30", 0, 86400,
      "Longest pause between two reads of a request body (408)." },
    { "send-timeout", 0, "SECONDS", OPT_SECONDS, OFF(send_timeout), "30", 0, 86400,
      "Longest time a client may accept no response bytes before it is dropped." },
    { "graceful-timeout", 0, "SECONDS", OPT_SECONDS, OFF(graceful_timeout), "30", 0, 86400,
      "On TERM, time in-flight requests get to finish before workers are killed." },
    { "boot-timeout", 0, "SECONDS", OPT_SECONDS, OFF(boot_timeout), "30", 0, 86400,
      "Time a new worker has to load the app and run its startup hooks." },
    { "timeout", 't', "SECONDS", OPT_SECONDS, OFF(timeout), "30", 0, 86400,
      "Per-request deadline: past it the front answers 504 and cancels the request "
      "in the worker. A worker whose heartbeats stop for this long is stuck: it is "
      "logged as WORKER TIMEOUT, sent SIGABRT, then SIGKILL, and replaced." },
    { "max-requests", 0, "N", OPT_UINT, OFF(max_requests), "0", 0, 4294967295.0,
      "Recycle a worker (graceful) after it has served N requests; 0 never." },
    { "max-requests-jitter", 0, "N", OPT_UINT, OFF(max_requests_jitter), "0", 0, 4294967295.0,
      "Add random(0..N) to --max-requests per worker, so workers do not all recycle at once." },
    { "max-worker-memory", 0, "MB", OPT_UINT, OFF(max_worker_memory), "0", 0, 1048576,
      "Recycle a worker (graceful) once its resident memory exceeds MB; 0 never." },
    { "control-socket", 0, "PATH", OPT_STRING, OFF(control_socket), "/run/gateway.ctl", 0, 0,
      "Unix socket (mode 0600) where the master answers gatewayctl, from its own loop." },
    { "health-path", 0, "PATH", OPT_STRING, OFF(health_path), NULL, 0, 0,
      "Answer GET PATH in the front: 200 while a worker is ready and the gateway is not "
      "draining, 503 otherwise. Never forwarded to the app." },
    { "limit-request-line", 0, "BYTES", OPT_SIZE, OFF(limits.request_line), "4094", 16, 1 << 20,
      "Longest request line (method, target, version); longer answers 414." },
    { "limit-request-fields", 0, "N", OPT_SIZE, OFF(limits.fields), "100", 1, 1000,
      "Most header fields in a request; more answers 431." },
    { "limit-request-field-size", 0, "BYTES", OPT_SIZE, OFF(limits.field_size), "8190", 16, 1 << 20,
      "Longest header field line; longer answers 431." },
    { "limit-request-head", 0, "BYTES", OPT_SIZE, OFF(limits.head), "65536", 256, 1 << 20,
      "Largest request head in all (request line and fields); larger answers 431." },
    { "limit-request-body", 0, "BYTES", OPT_U64, OFF(limits.body), "1073741824", 0, 1e18,
      "Largest request body, declared or chunked; larger answers 413." },
    { "log-level", 0, "LEVEL", OPT_LOGLEVEL, OFF(log_level), "info", 0, 0,
      "debug, info, warning, error, critical or alert." },
    { "backlog", 0, "N", OPT_INT, OFF(backlog), "2048", 1, 65535,
      "listen(2) backlog of each listening socket." },
    { "access-logfile", 0, "FILE", OPT_STRING, OFF(access_logfile), NULL, 0, 0,
      "Write one line per finished request to FILE ('-' for stdout). Off unless set." },
    { "access-logformat", 0, "FORMAT", OPT_STRING, OFF(access_logformat), NULL, 0, 0,
      "Gunicorn-style format of access-log lines, e.g. '%(h)s \"%(r)s\" %(s)s %(D)s'. "
      "Atoms: h l u t r m U q H s B b f a T M D p, {Header}i, {Header}o, and ours: "
      "x request id, w worker slot. Default: Gunicorn's common log format." },
    { "error-logfile", 0, "FILE", OPT_STRING, OFF(error_logfile), NULL, 0, 0,
      "Write the error log (master and workers) to FILE instead of stderr. "
      "USR1 reopens it (and the access log) after rotation." },
    { "metrics-bind", 0, "ADDR", OPT_STRING, OFF(metrics_bind), NULL, 0, 0,
      "Serve Prometheus metrics (GET /metrics) on ADDR (HOST:PORT or unix:/path), "
      "answered by the master. Also available as `gatewayctl metrics`." },
    { "hooks", 0, "PATH[:SYMBOL]", OPT_STRING, OFF(hooks), NULL, 0, 0,
      "Load a library in the master whose entry point registers master-side hooks "
      "(on_starting, when_ready, pre_fork, ...). With --preload the app's own "
      "registrations are used as well." },
    { "reuse-port", 0, NULL, OPT_FLAG, OFF(reuse_port), NULL, 0, 0,
      "Set SO_REUSEPORT on TCP listeners, so several gateways can bind one port "
      "and the kernel spreads connections between them." },
    { "user", 'u', "USER", OPT_STRING, OFF(user), NULL, 0, 0,
      "Run workers as USER (name or uid). The master keeps its privileges to bind, "
      "upgrade and supervise." },
    { "group", 'g', "GROUP", OPT_STRING, OFF(group), NULL, 0, 0,
      "Run workers with GROUP (name or gid); default USER's primary group." },
    { "runtime", 0, "auto|native|python", OPT_STRING, OFF(runtime), "auto", 0, 0,
      "How workers run the app: native loads a C shared object (APP ends in .so), python "
      "runs /usr/bin/python3 with APP as module:variable (Gunicorn's syntax). auto picks by "
      "APP." },
    { "interface", 0, "auto|wsgi|asgi", OPT_STRING, OFF(interface), "auto", 0, 0,
      "Python apps: how the callable is called. auto: a coroutine function (or an "
      "object whose __call__ is one) is ASGI 3, anything else WSGI." },
    { "chdir", 0, "DIR", OPT_STRING, OFF(chdir), NULL, 0, 0,
      "Change to DIR before loading the app (the master and the workers; relative "
      "paths given afterwards, such as --pid, are relative to DIR)." },
    { "pythonpath", 0, "DIRS", OPT_STRING, OFF(pythonpath), NULL, 0, 0,
      "Comma-separated directories put first on the Python workers' sys.path." },
    { "threads", 0, "N", OPT_UINT, OFF(threads), "1", 1, 1024,
      "Python WSGI: threads per worker that run the app (Gunicorn's gthread when > 1). "
      "A worker takes at most N requests at once. ASGI: size of the thread pool that "
      "runs sync endpoints (default 40 when 1)." },
    { "worker-class", 'k', "sync|gthread|gevent", OPT_STRING, OFF(worker_class), "sync", 0, 0,
      "Python WSGI: sync runs one request at a time (gthread when --threads > 1); gthread "
      "runs --threads app threads; gevent monkey-patches the worker before the app is "
      "imported and runs up to --worker-connections greenlets (Debian's python3-gevent). "
      "ASGI apps always run on an asyncio loop." },
    { "worker-connections", 0, "N", OPT_UINT, OFF(worker_connections), "1000", 1, 65536,
      "Python ASGI: most requests one worker runs at once (an explicit --max-inflight caps it "
      "too)." },
    { "ksm", 0, NULL, OPT_FLAG, OFF(ksm), NULL, 0, 0,
      "With --preload: mark the preloaded app's memory mergeable (KSM), so pages the "
      "workers copied only to update reference counts are merged back by the kernel. "
      "Needs /sys/kernel/mm/ksm/run set to 1 by the operator." },
    { "pid", 0, "FILE", OPT_STRING, OFF(pidfile), NULL, 0, 0,
      "Write the master's pid to FILE once the listeners are bound, and remove it on "
      "exit. Refuses to start if FILE names a running process." },
    { "umask", 0, "MODE", OPT_MODE, OFF(umask), NULL, 0, 0777,
      "Set the process umask (octal, e.g. 027) at start-up. Default: inherited." },
    { "app", 0, "APP", OPT_APP, 0, NULL, 0, 0,
      "The app, as path/app.so[:symbol]; the APP argument overrides it. Lets a config "
      "file name the app." },
    { "config", 'c', "FILE", OPT_CONFIG, 0, NULL, 0, 0,
      "Read settings from FILE: 'key = value' lines, keys are the long option names "
      "(bind may repeat; flags take true/false). Flags beat GATEWAY_CMD_ARGS and "
      "WEB_CONCURRENCY, which beat the file, which beats the defaults. A FILE ending "
      "in .py is a Python config module like gunicorn.conf.py: its settings (Gunicorn's "
      "names or ours with '_') are read the same way, and its post_fork, post_worker_init, "
      "worker_int, worker_abort, pre_request, post_request and worker_exit functions are "
      "called in the Python workers at Gunicorn's moments." },
    { "check-config", 0, NULL, OPT_ACTION, OFF(check_config), NULL, 0, 0,
      "Read every setting, check the app file exists, print 'config OK' and exit 0 "
      "(or the error and a non-zero status) without binding or loading anything." },
    { "print-config", 0, NULL, OPT_ACTION, OFF(print_config), NULL, 0, 0,
      "Print every effective setting as 'key = value' lines (input for -c) and exit." },
    { "help", 'h', NULL, OPT_HELP, 0, NULL, 0, 0, "Print this help and exit." },
    { "version", 0, NULL, OPT_VERSION, 0, NULL, 0, 0, "Print the version and exit." },
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

/* ---- storage that lives as long as the process (file values, env words) */

typedef struct keep_node { struct keep_node *next; char data[]; } keep_node_t;
static keep_node_t *kept;   /* reachable from here: never reported as a leak */

static char *keep_alloc(size_t n)
{
    keep_node_t *k = calloc(1, sizeof(*k) + n + 1);
    if (!k) return NULL;
    k->next = kept;
    kept = k;
    return k->data;
}

static char *keep(const char *s, size_t n)
{
    char *d = keep_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- one source's settings, collected first and applied in order */

typedef struct {
    const opt_t *o;
    const char  *val;
    unsigned     line;        /* file line, 0 otherwise */
} setting_t;

typedef struct {
    const char *origin;       /* NULL: the command line; else file path or env name */
    setting_t  *v;
    size_t      n, cap;
    int         has_bind;
    int         dashes;       /* name keys as "--key" in messages */
    const char *app;          /* positional APP (command line only) */
} layer_t;

static void layer_free(layer_t *L) { free(L->v); memset(L, 0, sizeof(*L)); }

static int layer_add(layer_t *L, const opt_t *o, const char *val, unsigned line)
{
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 16;
        setting_t *v = realloc(L->v, cap * sizeof(*v));
        if (!v) { fprintf(stderr, "gateway: out of memory\n"); return -1; }
        L->v = v;
        L->cap = cap;
    }
    L->v[L->n++] = (setting_t){ o, val, line };
    if (o->type == OPT_BIND) L->has_bind = 1;
    return 0;
}

/* One line, "gateway: WHERE: MESSAGE", WHERE being "file:line", an environment
 * variable or the command-line "--flag"; written with one fprintf. */
static void fail_at(const layer_t *L, unsigned line, const opt_t *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_at(const layer_t *L, unsigned line, const opt_t *o, const char *fmt, ...)
{
    char where[600] = "", msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (L && L->origin && line) snprintf(where, sizeof(where), "%s:%u: ", L->origin, line);
    else if (L && L->origin) snprintf(where, sizeof(where), "%s: ", L->origin);
    else if (o) snprintf(where, sizeof(where), "--%s: ", o->name);
    fprintf(stderr, "gateway: %s%s%s\n", where, msg,
            L && !L->origin ? " (see gateway --help)" : "");
}

static int parse_bool(const char *v)
{
    static const char *yes[] = { "true", "yes", "on", "1" }, *no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return 1;
        if (strcasecmp(v, no[i]) == 0) return 0;
    }
    return -1;
}

/* Syntax of a listen address; whether it binds is checked by listener.c. */
static int bind_ok(const char *v)
{
    if (strncmp(v, "unix:", 5) == 0) return v[5] != '\0';
    if (strstr(v, "://")) return 1;           /* other schemes: listener.c decides */
    const char *port;
    if (*v == '[') {
        const char *e = strchr(v, ']');
        if (!e || e == v + 1 || e[1] != ':') return 0;
        port = e + 2;
    } else {
        const char *c = strrchr(v, ':');
        if (!c) return 0;
        port = c + 1;
    }
    if (!*port || strlen(port) > 5) return 0;
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return atoi(port) <= 65535;
}

/* o: the "app" row, or NULL for the positional APP argument. */
static int set_app(gw_config_t *cfg, const char *app, const opt_t *o, const layer_t *L,
                   unsigned line)
{
    if (strlen(app) >= sizeof(cfg->app_buf)) {
        fail_at(L, line, o, "APP path too long");
        return -1;
    }
    strcpy(cfg->app_buf, app);
    strcpy(cfg->app_spec, app);
    cfg->app_path = cfg->app_buf;
    cfg->app_symbol = "gateway_app";
    /* "path.so:symbol": split at the last ':' when what follows is an identifier */
    char *colon = strrchr(cfg->app_buf, ':');
    size_t plen = colon ? (size_t)(colon - cfg->app_buf) : strlen(cfg->app_buf);
    int native = plen >= 3 && memcmp(cfg->app_buf + plen - 3, ".so", 3) == 0;
    if (!native && colon) {          /* Python "module:attr" or "module:factory()" */
        *colon = '\0';
        cfg->app_symbol = colon + 1;
    } else if (colon && colon[1] && !strchr(colon, '/')) {
        *colon = '\0';
        cfg->app_symbol = colon + 1;
        for (const char *p = cfg->app_symbol; *p; p++)
            if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (p != cfg->app_symbol && *p >= '0' && *p <= '9'))) {
                fail_at(L, line, o, "invalid symbol name '%s' in APP", cfg->app_symbol);
                return -1;
            }
    }
    if (!*cfg->app_path) {
        fail_at(L, line, o, "missing app path in APP");
        return -1;
    }
    return 0;
}

static int set_value(gw_config_t *cfg, const opt_t *o, const char *val, const layer_t *L,
                     unsigned line)
{
    char *end;
    char *field = (char *)cfg + o->offset;
    errno = 0;
    switch (o->type) {
    case OPT_UINT: case OPT_SIZE: case OPT_U64: case OPT_INT: {
        if (o->offset == OFF(workers) && o->type == OPT_UINT && strcmp(val, "auto") == 0) {
            /* -w auto: 2 x cores + 1, the usual Gunicorn advice */
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            unsigned w = (unsigned)(2 * (n > 0 ? n : 1) + 1);
            *(unsigned *)field = w > GW_MAX_WORKERS ? GW_MAX_WORKERS : w;
            cfg->workers_auto = 1;
            return 0;
        }
        if (o->offset == OFF(workers) && o->type == OPT_UINT) cfg->workers_auto = 0;
        if (*val == '-' || *val == '+' || *val == '\0') goto bad;
        unsigned long long v = strtoull(val, &end, 10);
        if (errno || *end || (double)v < o->min || (double)v > o->max) goto bad;
        if (o->type == OPT_UINT) *(unsigned *)field = (unsigned)v;
        else if (o->type == OPT_SIZE) *(size_t *)field = (size_t)v;
        else if (o->type == OPT_INT) *(int *)field = (int)v;
        else *(uint64_t *)field = (uint64_t)v;
        return 0;
    }
    case OPT_SECONDS: {
        double v = strtod(val, &end);
        if (errno || *end || end == val || !(v > 0) || v > o->max) goto bad;
        *(double *)field = v;
        return 0;
    }
    case OPT_MODE: {
        if (*val < '0' || *val > '7') goto bad;
        unsigned long v = strtoul(val, &end, 8);
        if (errno || *end || v > (unsigned long)o->max) goto bad;
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_BALANCE:
        if (strcmp(val, "rr") == 0 || strcmp(val, "round-robin") == 0)
            *(gw_balance_mode_t *)field = GW_BALANCE_RR;
        else if (strcmp(val, "leastconn") == 0 || strcmp(val, "least-connections") == 0)
            *(gw_balance_mode_t *)field = GW_BALANCE_LEASTCONN;
        else goto bad;
        return 0;
    case OPT_LOGLEVEL: {
        int l = gw_log_level_parse(val);
        if (l < 0) goto bad;
        *(int *)field = l;
        return 0;
    }
    case OPT_BIND:
        if (!bind_ok(val)) goto bad;
        if (cfg->nbinds >= GW_MAX_BINDS) {
            fail_at(L, line, o, "too many binds (at most %s)", "32");
            return -1;
        }
        cfg->binds[cfg->nbinds++] = val;
        return 0;
    case OPT_FLAG: case OPT_ACTION: {
        int b = parse_bool(val);
        if (b < 0) goto bad;
        *(int *)field = b;
        return 0;
    }
    case OPT_STRING:
        if (!*val) goto bad;
        *(const char **)field = val;
        return 0;
    case OPT_APP:
        return set_app(cfg, val, o, L, line);
    default:
        return 0;
    }
bad:
    if (L && L->origin)
        fail_at(L, line, o, "invalid value '%s' for %s%s", val, L->dashes ? "--" : "", o->name);
    else
        fail_at(L, line, o, "invalid value '%s'", val);
    return -1;
}

static void set_defaults(gw_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].def && options[i].type != OPT_BIND)
            set_value(cfg, &options[i], options[i].def, NULL, 0);
    cfg->limits.chunk_ext = gw_http1_default_limits.chunk_ext;
    cfg->limits.trailers = gw_http1_default_limits.trailers;
    cfg->heartbeat_ms = 1000;
    cfg->window = 256 * 1024;
    cfg->umask = -1;
}

void gw_config_usage(FILE *out)
{
    fprintf(out,
        "NAME\n"
        "    gateway - pre-fork application gateway (HTTP/1.1 front, forked workers)\n\n"
        "SYNOPSIS\n"
        "    gateway [OPTIONS] APP\n\n"
        "DESCRIPTION\n"
        "    Binds the listeners, forks a pool of worker processes that run APP, and\n"
        "    serves HTTP/1.0 and HTTP/1.1 on one event loop in the master, passing each\n"
        "    request to a worker as framed msgpack messages over a Unix socketpair.\n\n"
        "    APP is path/to/app.so or path/to/app.so:SYMBOL. SYMBOL is the app's entry\n"
        "    point, int SYMBOL(gwl_app_t *app); the default is '%s'.\n"
        "    Any other APP is a Python WSGI or ASGI app named as in Gunicorn:\n"
        "    module:variable or module:factory(...), run by /usr/bin/python3.\n\n"
        "OPTIONS\n", "gateway_app");
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        char head[96];
        if (o->short_name)
            snprintf(head, sizeof(head), "-%c, --%s%s%s", o->short_name, o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
        else
            snprintf(head, sizeof(head), "--%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        fprintf(out, "    %s\n", head);
        /* wrap help at ~72 columns, indented */
        const char *h = o->help;
        while (*h) {
            size_t n = strlen(h);
            if (n > 68) {
                n = 68;
                while (n > 0 && h[n] != ' ') n--;
                if (n == 0) n = 68;
            }
            fprintf(out, "        %.*s\n", (int)n, h);
            h += n;
            while (*h == ' ') h++;
        }
        if (o->def) fprintf(out, "        Default: %s.\n", o->def);
    }
    fprintf(out,
        "\nSIGNALS\n"
        "    TERM     graceful stop: stop accepting, finish in-flight requests within\n"
        "             --graceful-timeout, run shutdown hooks, exit 0.\n"
        "    INT, QUIT  quick stop.\n"
        "    HUP      reload: re-read the configuration, start new workers, retire the\n"
        "             old ones as the new ones report ready (no request is lost).\n"
        "    TTIN, TTOU  one more / one fewer worker (never below 1).\n"
        "    USR1     reopen the error and access logs (master and workers).\n"
        "    USR2     binary upgrade: start a new master from the current executable\n"
        "             with the listening sockets; TERM the old master to finish.\n"
        "    gatewayctl (control socket) offers the same: reload, reopen-logs, upgrade,\n"
        "    scale, stop, plus status, drain, config and metrics.\n\n"
        "ENVIRONMENT\n"
        "    GATEWAY_CMD_ARGS  extra options, split like a shell would; real flags\n"
        "                      beat them, they beat the config file.\n"
        "    WEB_CONCURRENCY   --workers (below GATEWAY_CMD_ARGS and flags).\n"
        "    PORT              with no bind anywhere: bind 0.0.0.0:$PORT.\n\n"
        "EXAMPLES\n"
        "    gateway -w 4 -b 127.0.0.1:8000 build/examples/hello.so\n"
        "    gateway --preload --balance rr -b unix:/run/app.sock app.so:my_entry\n"
        "    gateway -w 4 --chdir /srv/app myproject.wsgi:application\n"
        "    gateway -w auto --preload -c gunicorn.conf.py main:app\n");
}

static const opt_t *find_long(const char *name)
{
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0) return &options[i];
    return NULL;
}

/*
 * Collect the options of an argv-like vector (the command line, or the words
 * of GATEWAY_CMD_ARGS). Returns 0, 1 after --help/--version, -1 on error.
 */
static int collect_args(layer_t *L, int argc, char **argv)
{
    struct option longopts[NOPTIONS + 1];
    char shortopts[2 * NOPTIONS + 2];
    size_t ns = 0;

    shortopts[ns++] = ':';   /* report a missing argument distinctly */
    for (size_t i = 0; i < NOPTIONS; i++) {
        longopts[i].name = options[i].name;
        longopts[i].has_arg = options[i].arg ? required_argument : no_argument;
        longopts[i].flag = NULL;
        longopts[i].val = 256 + (int)i;
        if (options[i].short_name) {
            shortopts[ns++] = options[i].short_name;
            if (options[i].arg) shortopts[ns++] = ':';
        }
    }
    memset(&longopts[NOPTIONS], 0, sizeof(longopts[0]));
    shortopts[ns] = '\0';

    opterr = 0;
    optind = 0;              /* 0: full re-initialisation of GNU getopt */
    int c, idx;
    while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
        const opt_t *o = NULL;
        if (c >= 256) o = &options[c - 256];
        else if (c == '?' || c == ':') {
            char s[3] = { '-', (char)optopt, 0 };
            const char *arg = optopt && optopt < 256 ? s : argv[optind - 1];
            if (c == ':') fail_at(L, 0, NULL, "option '%s' needs a value", arg);
            else fail_at(L, 0, NULL, "unknown option '%s'", arg);
            return -1;
        } else {
            for (size_t i = 0; i < NOPTIONS; i++)
                if (options[i].short_name == c) o = &options[i];
        }
        if (!o) return -1;
        if (o->type == OPT_HELP) { gw_config_usage(stdout); return 1; }
        if (o->type == OPT_VERSION) { printf("gateway %s\n", GW_VERSION_STRING); return 1; }
        if (layer_add(L, o, o->arg ? optarg : "true", 0) < 0) return -1;
    }
    if (optind < argc) {
        if (L->origin) {
            fail_at(L, 0, NULL, "unexpected argument '%s' (only options belong here)",
                    argv[optind]);
            return -1;
        }
        L->app = argv[optind];
        if (optind + 1 < argc) {
            fail_at(L, 0, NULL, "unexpected argument '%s' after APP", argv[optind + 1]);
            return -1;
        }
    }
    return 0;
}

/*
 * Split s into words like a shell: blanks separate, '...' is literal, "..."
 * allows \" and \\, a backslash outside quotes escapes the next character.
 * Words go to kept storage; argv[0] is the layer's name. Returns the word
 * count (with argv[0]) or -1 after an error line.
 */
static int split_words(layer_t *L, const char *s, char ***out)
{
    size_t len = strlen(s);
    char *buf = keep(s, len);            /* words are never longer than s */
    char **argv = (char **)(void *)keep_alloc((len / 2 + 4) * sizeof(char *));
    if (!buf || !argv) { fprintf(stderr, "gateway: out of memory\n"); return -1; }
    int argc = 0;
    argv[argc++] = (char *)L->origin;
    char *w = buf;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *start = w;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            if (*p == '\'') {
                const char *e = strchr(p + 1, '\'');
                if (!e) goto unterminated;
                memmove(w, p + 1, (size_t)(e - p - 1));
                w += e - p - 1;
                p = e + 1;
            } else if (*p == '"') {
                for (p++; *p != '"'; p++) {
                    if (!*p) goto unterminated;
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
                    *w++ = *p;
                }
                p++;
            } else if (*p == '\\' && p[1]) {
                *w++ = p[1];
                p += 2;
            } else {
                *w++ = *p++;
            }
        }
        *w++ = '\0';
        argv[argc++] = start;
    }
    argv[argc] = NULL;
    *out = argv;
    return argc;
unterminated:
    fail_at(L, 0, NULL, "unterminated quote in '%s'", s);
    return -1;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/*
 * Read a config file: "key = value" lines, '#' comments (whole lines, or
 * after a blank following an unquoted value), blank lines; key and value
 * trimmed; a value may be wrapped in '...' or "..." (taken literally). Keys
 * are long option names ('_' accepted for '-'). Returns 0 or -1 (one line).
 */
static int is_python_config(const char *path)
{
    size_t n = strlen(path);
    return n > 3 && strcmp(path + n - 3, ".py") == 0;
}

/*
 * -c FILE.py: a Python config module (gunicorn.conf.py style). The runtime's
 * _confdump.py executes it and prints its settings as 'key = value' text
 * (each on the line of the .py file that assigns it); that text is then
 * read like any config file. Its hook functions are loaded by the workers.
 */
static FILE *open_python_config(const char *path)
{
    char names[4096];
    size_t k = 0;
    names[0] = '\0';
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (CLI_ONLY(options[i].type)) continue;
        int w = snprintf(names + k, sizeof(names) - k, "%s%s", k ? "," : "", options[i].name);
        if (w < 0 || (size_t)w >= sizeof(names) - k) break;
        k += (size_t)w;
    }
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0) return NULL;
    if (pipe2(err, O_CLOEXEC) < 0) { close(out[0]); close(out[1]); return NULL; }
    pid_t pid = fork();
    if (pid < 0) {
        close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execl(GW_PYTHON, GW_PYTHON, GW_SOURCE_DIR "/workerlib/python/gateway_runtime/_confdump.py",
              path, names, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s", GW_PYTHON, strerror(errno));
        _exit(1);
    }
    close(out[1]);
    close(err[1]);
    /* the settings text is small: read all of it, then the status */
    FILE *f = tmpfile();
    char buf[4096];
    ssize_t r;
    while ((r = read(out[0], buf, sizeof(buf))) != 0) {
        if (r < 0) { if (errno == EINTR) continue; break; }
        if (f) fwrite(buf, 1, (size_t)r, f);
    }
    close(out[0]);
    char msg[600];
    size_t m = 0;
    while (m + 1 < sizeof(msg) && (r = read(err[0], msg + m, sizeof(msg) - 1 - m)) != 0) {
        if (r < 0) { if (errno == EINTR) continue; break; }
        m += (size_t)r;
    }
    msg[m] = '\0';
    for (char *q = msg; *q; q++) if (*q == '\n') *q = ' ';
    close(err[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "gateway: %s\n", m ? msg : "cannot read the Python config file");
        if (f) fclose(f);
        errno = 0;
        return NULL;
    }
    if (f) rewind(f);
    return f;
}

static int collect_file(layer_t *L, const char *path)
{
    int py = is_python_config(path);
    FILE *f = py ? open_python_config(path) : fopen(path, "r");
    if (!f) {
        if (!py || errno)
            fprintf(stderr, "gateway: cannot read config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            char *t = realloc(text, cap + 65536);
            if (!t) { free(text); fclose(f); fprintf(stderr, "gateway: out of memory\n"); return -1; }
            text = t;
            cap += 65536;
        }
        size_t r = fread(text + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(text);
        fprintf(stderr, "gateway: cannot read config file %s: read error\n", path);
        return -1;
    }
    char *buf = keep(text, n);        /* values point into it for the process's life */
    free(text);
    if (!buf) { fprintf(stderr, "gateway: out of memory\n"); return -1; }
    if (memchr(buf, '\0', n)) {
        fprintf(stderr, "gateway: %s: not a text file\n", path);
        return -1;
    }

    unsigned line = 0;
    for (char *p = buf, *next; p && *p; p = next) {
        line++;
        char *nl = strchr(p, '\n');
        next = nl ? nl + 1 : NULL;
        if (nl) *nl = '\0';
        while (is_blank(*p)) p++;
        char *e = p + strlen(p);
        while (e > p && is_blank(e[-1])) *--e = '\0';
        if (*p == '\0' || *p == '#') continue;

        char *eq = strchr(p, '=');
        if (!eq) {
            fail_at(L, line, NULL, "expected 'key = value', got '%s'", p);
            return -1;
        }
        char *k = eq;
        while (k > p && is_blank(k[-1])) k--;
        *k = '\0';
        for (char *q = p; *q; q++) if (*q == '_') *q = '-';
        const opt_t *o = *p ? find_long(p) : NULL;
        if (!o) {
            fail_at(L, line, NULL, "unknown key '%s'", p);
            return -1;
        }
        if (CLI_ONLY(o->type)) {
            fail_at(L, line, NULL, "'%s' is a command-line option, not a file setting", p);
            return -1;
        }
        char *v = eq + 1;
        while (is_blank(*v)) v++;
        if (*v == '"' || *v == '\'') {
            char *close = strchr(v + 1, *v);
            if (!close) {
                fail_at(L, line, NULL, "unterminated quote in value for %s", o->name);
                return -1;
            }
            char *rest = close + 1;
            while (is_blank(*rest)) rest++;
            if (*rest && *rest != '#') {
                fail_at(L, line, NULL, "unexpected text after the quoted value for %s", o->name);
                return -1;
            }
            *close = '\0';
            v++;
        } else {
            for (char *q = v; *q; q++)
                if (*q == '#' && q > v && is_blank(q[-1])) { *q = '\0'; break; }
            char *ve = v + strlen(v);
            while (ve > v && is_blank(ve[-1])) *--ve = '\0';
            if (!*v) {
                fail_at(L, line, NULL, "missing value for %s", o->name);
                return -1;
            }
        }
        if (layer_add(L, o, v, line) < 0) return -1;
    }
    return 0;
}

static int apply_layer(gw_config_t *cfg, const layer_t *L)
{
    if (L->has_bind) cfg->nbinds = 0;   /* this source's binds replace lower ones */
    for (size_t i = 0; i < L->n; i++) {
        const setting_t *s = &L->v[i];
        if (s->o->type == OPT_CONFIG) continue;
        if (set_value(cfg, s->o, s->val, L, s->line) < 0) return -1;
    }
    return 0;
}

static const char *last_config(const layer_t *L)
{
    const char *path = NULL;
    for (size_t i = 0; i < L->n; i++)
        if (L->v[i].o->type == OPT_CONFIG) path = L->v[i].val;
    return path;
}

static int parse_layers(gw_config_t *cfg, int argc, char **argv, layer_t *cli, layer_t *env,
                        layer_t *wc, layer_t *file)
{
    int rc = collect_args(cli, argc, argv);
    if (rc) return rc;

    const char *ea = getenv("GATEWAY_CMD_ARGS");
    if (ea && *ea) {
        char **words;
        int n = split_words(env, ea, &words);
        if (n < 0) return -1;
        if ((rc = collect_args(env, n, words)) != 0) return rc;
    }
    const char *w = getenv("WEB_CONCURRENCY");
    if (w && *w && layer_add(wc, find_long("workers"), w, 0) < 0) return -1;

    const char *path = last_config(cli);
    if (!path) path = last_config(env);
    if (path) {
        file->origin = path;
        if (collect_file(file, path) < 0) return -1;
        cfg->config_file = path;
        if (is_python_config(path)) {
            /* workers load its hooks; absolute, as --chdir may move them */
            char *abs = realpath(path, NULL);
            cfg->py_config = abs ? keep(abs, strlen(abs)) : path;
            free(abs);
        }
    }

    /* lowest precedence first: each later source overrides */
    if (apply_layer(cfg, file) < 0 || apply_layer(cfg, wc) < 0 || apply_layer(cfg, env) < 0 ||
        apply_layer(cfg, cli) < 0)
        return -1;

    if (cfg->nbinds == 0) {
        const char *port = getenv("PORT");
        if (port && *port) {
            static const layer_t port_layer = { "PORT", NULL, 0, 0, 0, 0, NULL };
            char b[64];
            snprintf(b, sizeof(b), "0.0.0.0:%.20s", port);
            char *k = keep(b, strlen(b));
            if (!k) { fprintf(stderr, "gateway: out of memory\n"); return -1; }
            if (set_value(cfg, find_long("bind"), k, &port_layer, 0) < 0) return -1;
        } else {
            cfg->binds[cfg->nbinds++] = find_long("bind")->def;
        }
    }

    if (cli->app && set_app(cfg, cli->app, NULL, cli, 0) < 0) return -1;
    if (!cfg->app_path) {
        fail_at(cli, 0, NULL, "missing APP (path/to/app.so[:symbol])");
        return -1;
    }
    static const struct { const char *name; size_t off; const char *allowed; } choices[] = {
        { "worker-class", OFF(worker_class), "sync gthread gevent" },
        { "interface", OFF(interface), "auto wsgi asgi" },
        { "runtime", OFF(runtime), "auto native python" },
    };
    for (size_t i = 0; i < sizeof(choices) / sizeof(choices[0]); i++) {
        const char *v = *(const char **)((char *)cfg + choices[i].off);
        if (!v) continue;
        const char *a = choices[i].allowed;
        size_t n = strlen(v);
        int ok = 0;
        for (const char *p = a; *p && !ok; p += strcspn(p, " "), p += *p == ' ')
            ok = n && strncmp(p, v, n) == 0 && (p[n] == ' ' || p[n] == '\0');
        if (!ok) {
            fprintf(stderr, "gateway: invalid value '%s' for --%s (one of: %s)\n", v,
                    choices[i].name, a);
            return -1;
        }
    }
    /* Heartbeats must come several times per --timeout, or a healthy but
     * idle worker would look stuck. */
    double hb = cfg->timeout * 1000.0 / 4;
    cfg->heartbeat_ms = hb > 1000 ? 1000 : hb < 50 ? 50 : (unsigned)hb;
    if (cfg->limits.head < cfg->limits.request_line + 2)
        cfg->limits.head = cfg->limits.request_line + 2;
    return 0;
}

int gw_config_parse(gw_config_t *cfg, int argc, char **argv)
{
    layer_t cli = { 0 }, env = { 0 }, wc = { 0 }, file = { 0 };
    env.origin = "GATEWAY_CMD_ARGS";
    env.dashes = 1;
    wc.origin = "WEB_CONCURRENCY";
    set_defaults(cfg);
    int rc = parse_layers(cfg, argc, argv, &cli, &env, &wc, &file);
    layer_free(&cli);
    layer_free(&env);
    layer_free(&wc);
    layer_free(&file);
    return rc;
}

/* ---- --print-config */

static void print_kv(FILE *out, const char *key, const char *val)
{
    int plain = *val != '\0' && *val != '"' && *val != '\'';
    for (const char *p = val; *p && plain; p++)
        if (is_blank(*p) || *p == '#') plain = 0;
    if (plain) fprintf(out, "%s = %s\n", key, val);
    else fprintf(out, strchr(val, '"') ? "%s = '%s'\n" : "%s = \"%s\"\n", key, val);
}

void gw_config_print(FILE *out, const gw_config_t *cfg)
{
    fprintf(out, "# gateway %s: effective settings (read back with -c FILE)\n",
            GW_VERSION_STRING);
    for (size_t i = 0; i < NOPTIONS; i++) {
        const opt_t *o = &options[i];
        const char *field = (const char *)cfg + o->offset;
        char v[4200];
        switch (o->type) {
        case OPT_UINT: snprintf(v, sizeof(v), "%u", *(const unsigned *)field); break;
        case OPT_SIZE: snprintf(v, sizeof(v), "%zu", *(const size_t *)field); break;
        case OPT_U64:
            snprintf(v, sizeof(v), "%llu", (unsigned long long)*(const uint64_t *)field);
            break;
        case OPT_INT: snprintf(v, sizeof(v), "%d", *(const int *)field); break;
        case OPT_SECONDS: {
            double d = *(const double *)field;
            snprintf(v, sizeof(v), "%.15g", d);
            if (strtod(v, NULL) != d) snprintf(v, sizeof(v), "%.17g", d);
            break;
        }
        case OPT_FLAG: snprintf(v, sizeof(v), "%s", *(const int *)field ? "true" : "false"); break;
        case OPT_BALANCE:
            snprintf(v, sizeof(v), "%s",
                     *(const gw_balance_mode_t *)field == GW_BALANCE_RR ? "rr" : "leastconn");
            break;
        case OPT_LOGLEVEL:
            snprintf(v, sizeof(v), "%s", gw_log_level_name((gw_log_level_t)*(const int *)field));
            break;
        case OPT_MODE:
            if (*(const int *)field < 0) { fprintf(out, "# %s = (inherited)\n", o->name); continue; }
            snprintf(v, sizeof(v), "%04o", (unsigned)*(const int *)field);
            break;
        case OPT_STRING:
            if (!*(const char *const *)field) { fprintf(out, "# %s = (not set)\n", o->name); continue; }
            snprintf(v, sizeof(v), "%s", *(const char *const *)field);
            break;
        case OPT_BIND:
            for (size_t b = 0; b < cfg->nbinds; b++) print_kv(out, o->name, cfg->binds[b]);
            continue;
        case OPT_APP:
            if (!cfg->app_path) { fprintf(out, "# %s = (not set)\n", o->name); continue; }
            snprintf(v, sizeof(v), "%s:%s", cfg->app_path, cfg->app_symbol);
            break;
        default:
            continue;   /* command-line actions are not settings */
        }
        print_kv(out, o->name, v);
    }
}
