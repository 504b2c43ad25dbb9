/*
 * config.c - the option table and its parser (master, start-up only).
 * Every default and limit lives in `options[]` below and nowhere else; the
 * help text is printed from the same rows, so it cannot drift.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

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
    OPT_STRING,    /* const char *, kept from argv/default */
    OPT_HELP,
    OPT_VERSION
} opt_type_t;

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
      "Number of worker processes. Default: $WEB_CONCURRENCY if set, else 1." },
    { "balance", 0, "rr|leastconn", OPT_BALANCE, OFF(balance), "leastconn", 0, 0,
      "How the front picks a worker: exact least-connections (ties broken "
      "round-robin) or plain round-robin. Only READY workers are picked." },
    { "preload", 0, NULL, OPT_FLAG, OFF(preload), NULL, 0, 0,
      "Load the app once in the master before forking (workers share its pages "
      "copy-on-write). Without it each worker loads the app after fork." },
    { "max-inflight", 0, "N", OPT_UINT, OFF(max_inflight), "100", 1, 65536,
      "Requests one worker may have in flight at once." },
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
      "debug, info, warning, error or alert." },
    { "backlog", 0, "N", OPT_INT, OFF(backlog), "2048", 1, 65535,
      "listen(2) backlog of each listening socket." },
    { "help", 'h', NULL, OPT_HELP, 0, NULL, 0, 0, "Print this help and exit." },
    { "version", 0, NULL, OPT_VERSION, 0, NULL, 0, 0, "Print the version and exit." },
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static void fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "gateway: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see gateway --help)\n");
}

static int set_value(gw_config_t *cfg, const opt_t *o, const char *val)
{
    char *end;
    char *field = (char *)cfg + o->offset;
    errno = 0;
    switch (o->type) {
    case OPT_UINT: case OPT_SIZE: case OPT_U64: case OPT_INT: {
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
        if (cfg->nbinds >= GW_MAX_BINDS) {
            fail("too many --bind options (at most %s)%s", "32", "");
            return -1;
        }
        cfg->binds[cfg->nbinds++] = val;
        return 0;
    case OPT_FLAG:
        *(int *)field = 1;
        return 0;
    case OPT_STRING:
        *(const char **)field = val;
        return 0;
    default:
        return 0;
    }
bad:
    fail("invalid value '%s' for --%s", val, o->name);
    return -1;
}

static void set_defaults(gw_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].def && options[i].type != OPT_BIND)
            set_value(cfg, &options[i], options[i].def);
    cfg->limits.chunk_ext = gw_http1_default_limits.chunk_ext;
    cfg->limits.trailers = gw_http1_default_limits.trailers;
    cfg->heartbeat_ms = 1000;
    cfg->window = 256 * 1024;
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
        "    point, int SYMBOL(gwl_app_t *app); the default is '%s'.\n\n"
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
        "    INT, QUIT  quick stop.\n\n"
        "ENVIRONMENT\n"
        "    WEB_CONCURRENCY   default for --workers.\n\n"
        "EXAMPLES\n"
        "    gateway -w 4 -b 127.0.0.1:8000 build/examples/hello.so\n"
        "    gateway --preload --balance rr -b unix:/run/app.sock app.so:my_entry\n");
}

int gw_config_parse(gw_config_t *cfg, int argc, char **argv)
{
    struct option longopts[NOPTIONS + 1];
    char shortopts[2 * NOPTIONS + 2];
    size_t ns = 0;

    set_defaults(cfg);
    const char *wc = getenv("WEB_CONCURRENCY");
    if (wc && *wc) {
        for (size_t i = 0; i < NOPTIONS; i++)
            if (options[i].offset == OFF(workers) && options[i].type == OPT_UINT &&
                set_value(cfg, &options[i], wc) < 0) {
                fprintf(stderr, "gateway: WEB_CONCURRENCY must be a worker count, got '%s'\n", wc);
                return -1;
            }
    }

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
    optind = 1;
    int c, idx;
    while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
        const opt_t *o = NULL;
        if (c >= 256) o = &options[c - 256];
        else if (c == '?' || c == ':') {
            const char *arg = argv[optind - 1];
            if (optopt && optopt < 256) {
                char s[3] = { '-', (char)optopt, 0 };
                fail(c == ':' ? "option '%s' needs a value%s" : "unknown option '%s'%s", s, "");
            } else {
                fail(c == ':' ? "option '%s' needs a value%s" : "unknown option '%s'%s", arg, "");
            }
            return -1;
        } else {
            for (size_t i = 0; i < NOPTIONS; i++)
                if (options[i].short_name == c) o = &options[i];
        }
        if (!o) return -1;
        if (o->type == OPT_HELP) { gw_config_usage(stdout); return 1; }
        if (o->type == OPT_VERSION) { printf("gateway %s\n", GW_VERSION_STRING); return 1; }
        if (set_value(cfg, o, optarg) < 0) return -1;
    }
    if (cfg->nbinds == 0) cfg->binds[cfg->nbinds++] = "127.0.0.1:8000";

    if (optind >= argc) {
        fail("missing APP (path/to/app.so[:symbol])%s%s", "", "");
        return -1;
    }
    if (optind + 1 < argc) {
        fail("unexpected argument '%s' after APP%s", argv[optind + 1], "");
        return -1;
    }
    const char *app = argv[optind];
    if (strlen(app) >= sizeof(cfg->app_buf)) {
        fail("APP path too long%s%s", "", "");
        return -1;
    }
    strcpy(cfg->app_buf, app);
    cfg->app_path = cfg->app_buf;
    cfg->app_symbol = "gateway_app";
    /* "path.so:symbol": split at the last ':' when what follows is an identifier */
    char *colon = strrchr(cfg->app_buf, ':');
    if (colon && colon[1] && !strchr(colon, '/')) {
        *colon = '\0';
        cfg->app_symbol = colon + 1;
        for (const char *p = cfg->app_symbol; *p; p++)
            if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (p != cfg->app_symbol && *p >= '0' && *p <= '9'))) {
                fail("invalid symbol name '%s' in APP%s", cfg->app_symbol, "");
                return -1;
            }
    }
    if (!*cfg->app_path) {
        fail("missing app path in APP%s%s", "", "");
        return -1;
    }
    if (cfg->limits.head < cfg->limits.request_line + 2)
        cfg->limits.head = cfg->limits.request_line + 2;
    return 0;
}
