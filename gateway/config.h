/*
 * config.h - the gateway's settings: one table (config.c) holds every flag's
 * name, default, limits and help text; `gateway --help` is generated from it.
 * Parsed once in the master at start-up.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "http1.h"

#define GW_VERSION_STRING "0.1.0"
#define GW_SERVER_HEADER  "gateway/" GW_VERSION_STRING
#define GW_MAX_WORKERS    1024
#define GW_MAX_BINDS      32
/* --max-inflight 0 (auto): a worker's in-flight cap is this, or its READY.capacity
 * when larger (an ASGI or gevent worker's --worker-connections). */
#define GW_INFLIGHT_AUTO  100
#define GW_INFLIGHT_MAX   65536   /* --max-inflight's ceiling; auto never goes past it */
/* The in-flight count to size a worker's stream table for (it grows past it). */
#define GW_INFLIGHT_HINT(max_inflight) ((max_inflight) ? (max_inflight) : GW_INFLIGHT_AUTO)

typedef enum {
    GW_BALANCE_LEASTCONN = 0,
    GW_BALANCE_RR
} gw_balance_mode_t;

typedef struct {
    const char       *binds[GW_MAX_BINDS];
    size_t            nbinds;
    unsigned          workers;
    int               workers_auto;     /* -w auto: workers = 2 x cores + 1 */
    gw_balance_mode_t balance;
    int               preload;
    unsigned          max_inflight;     /* per worker */
    unsigned          prefetch_ms;      /* capacity-bound workers: prefetch while faster */
    unsigned          max_queue;        /* requests waiting for a worker */
    double            keepalive;        /* idle keep-alive timeout, s */
    double            header_timeout;   /* s to receive a whole head */
    double            body_timeout;     /* s between body reads */
    double            send_timeout;     /* s without write progress */
    double            queue_timeout;    /* s a request may wait for a worker */
    double            graceful_timeout; /* s for in-flight work on TERM */
    double            boot_timeout;     /* s for a worker to report READY */
    double            timeout;          /* per-request deadline and stuck-worker limit, s */
    unsigned          max_requests;     /* recycle a worker after this many (0: never) */
    unsigned          max_requests_jitter;
    unsigned          max_worker_memory;/* MB of RSS before a worker is recycled (0: off) */
    const char       *control_socket;   /* path of the control socket */
    const char       *health_path;      /* answered by the front itself (NULL: off) */
    unsigned          heartbeat_ms;     /* worker heartbeat period */
    unsigned          window;           /* per-stream flow-control window */
    gw_http1_limits_t limits;
    int               log_level;
    int               backlog;
    const char       *pidfile;          /* --pid FILE (NULL: none) */
    const char       *access_logfile;   /* NULL: no access log; "-": stdout */
    const char       *access_logformat; /* NULL: GW_ACCESS_DEFAULT_FORMAT */
    const char       *error_logfile;    /* NULL or "-": stderr */
    const char       *metrics_bind;     /* Prometheus endpoint address (NULL: off) */
    const char       *hooks;            /* master-side hooks library PATH[:symbol] (NULL: none) */
    int               reuse_port;       /* SO_REUSEPORT on TCP listeners */
    const char       *user;             /* workers switch to this user (NULL: stay) */
    const char       *group;            /* ... and group (default: the user's) */
    int               umask;            /* --umask MODE; -1: leave inherited */
    int               check_config;     /* --check-config: check, print "config OK", exit */
    int               print_config;     /* --print-config: print settings, exit */
    const char       *config_file;      /* -c FILE that was read (NULL: none) */
    const char       *app_path;
    const char       *app_symbol;
    char              app_buf[4096];    /* storage for APP split */
    char              app_spec[4096];   /* APP as given (Python: module:attr) */
    const char       *runtime;          /* --runtime auto|native|python */
    const char       *interface;        /* Python: auto|wsgi|asgi */
    const char       *chdir;            /* --chdir DIR (NULL: stay) */
    const char       *pythonpath;       /* comma-separated sys.path additions */
    unsigned          threads;          /* Python WSGI threads per worker */
    const char       *worker_class;     /* Python WSGI: sync|gthread|gevent */
    unsigned          worker_connections; /* Python ASGI concurrent requests per worker */
    const char       *py_config;        /* Python config module (hooks), from -c FILE.py */
    int               ksm;              /* --ksm: madvise the preloaded heap mergeable */
} gw_config_t;

/*
 * Fill cfg from four sources, highest precedence first: argv flags, the
 * environment (GATEWAY_CMD_ARGS, then WEB_CONCURRENCY), the -c/--config
 * file, the table's defaults. A source that sets any bind replaces the binds
 * of lower ones; with no bind anywhere, $PORT gives 0.0.0.0:$PORT.
 * Strings in cfg point into argv or into storage config.c keeps for the life
 * of the process. Returns 0 to go on, 1 when --help/--version was printed
 * (exit 0), or -1 after printing one "gateway: ..." line on stderr (exit 2).
 */
int gw_config_parse(gw_config_t *cfg, int argc, char **argv);

/*
 * Print every effective setting as "key = value" lines, in table order: the
 * format -c reads, so the output can be fed back. Unset optional settings
 * are printed as comments.
 */
void gw_config_print(FILE *out, const gw_config_t *cfg);

/* Print the man-style help generated from the option table. */
void gw_config_usage(FILE *out);

#endif /* GW_CONFIG_H */
