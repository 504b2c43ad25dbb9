/*
 * gwl.h - workerlib: the public API a C application uses to run inside a
 * gateway worker process. Self-contained: includes only libc headers; no
 * internal gateway type is visible. Link model: an app is a shared object
 * (built with -fPIC -shared) whose gwl_* references are resolved against the
 * gateway binary at dlopen time.
 *
 * An app exports one entry point (default symbol name "gateway_app"):
 *
 *     int gateway_app(gwl_app_t *app);
 *
 * The gateway calls it once: in the master before forking with --preload,
 * otherwise in each worker after fork. It registers a request handler and any
 * startup/shutdown hooks, and returns GWL_OK (anything else aborts start-up).
 *
 * Threading: every gwl_ call is for the worker's loop thread only, except
 * gwl_log() (any thread) and the work function given to gwl_offload() /
 * gwl_background(), which runs on a pool thread and must not call gwl_ APIs
 * other than gwl_log().
 *
 * Request lifecycle (ordered; misuse is refused with GWL_ERROR and logged):
 *
 *   NEW --gwl_resp_start--> HEAD --gwl_resp_write--> BODY --gwl_resp_finish--> DONE
 *     \------------------------ gwl_respond ----------------------------------/
 *
 * A gwl_req_t stays valid from the handler call until the app finishes the
 * response (gwl_respond / gwl_resp_finish), even if the client went away in
 * between: then writes are accepted and dropped, and gwl_req_cancelled()
 * says so. The app must not touch the request after finishing it.
 */
#ifndef GWL_H
#define GWL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GWL_OK      0
#define GWL_ERROR  (-1)
#define GWL_AGAIN  (-2)

/* The default entry-point symbol, for "app.so" without ":symbol". */
#define GWL_DEFAULT_SYMBOL "gateway_app"

typedef struct gwl_app_s gwl_app_t;   /* registration handle */
typedef struct gwl_req_s gwl_req_t;   /* one request/response exchange */
struct ev_loop;                        /* libev's; include <ev.h> to use it */

typedef int  (*gwl_app_init_fn)(gwl_app_t *app);
/* Request handler: called on the loop thread when a request head arrives. It
 * may answer at once, or keep req and answer later from a watcher callback. */
typedef void (*gwl_request_cb)(gwl_req_t *req, void *data);
/* Startup/shutdown hook: runs on the loop thread. A startup hook returning
 * non-zero fails the worker's start (logged, the master backs off). */
typedef int  (*gwl_hook_cb)(void *data);
/* Request body delivery: called for each piece of body as it arrives, and
 * once with last = 1 (len may be 0) at the end. */
typedef void (*gwl_body_cb)(gwl_req_t *req, const char *data, size_t len,
                            int last, void *data_arg);
/* Cancellation: the client went away or a deadline passed. */
typedef void (*gwl_cancel_cb)(gwl_req_t *req, void *data);
/* Offloaded work: runs on a pool thread. */
typedef void (*gwl_work_cb)(void *arg);
/* Completion: runs back on the loop thread after the work function. */
typedef void (*gwl_done_cb)(void *arg);

/* ---- registration (from the entry point) ---- */

/* Set the request handler (exactly one; a later call replaces it). */
int gwl_on_request(gwl_app_t *app, gwl_request_cb cb, void *data);
/* Add a startup hook. Hooks run once per worker, in registration order,
 * after the worker's loop exists and before it reports READY. */
int gwl_on_startup(gwl_app_t *app, gwl_hook_cb cb, void *data);
/* Add a shutdown hook. Run once per worker on graceful exit, in
 * registration order, after in-flight requests have finished. */
int gwl_on_shutdown(gwl_app_t *app, gwl_hook_cb cb, void *data);
/* Size of the worker's offload thread pool (default 4, 1..256). */
int gwl_set_threads(gwl_app_t *app, unsigned n);

/* ---- lifecycle hooks (Gunicorn's server hooks) ----
 *
 * gwl_on_hook() registers fn for one moment; any number per kind, run in
 * registration order. Registries that run them: the app's (its entry point;
 * with --preload that ran in the master, so master hooks work too) and the
 * --hooks PATH[:SYMBOL] library's (entry point "gateway_hooks", same
 * signature as gateway_app, loaded in the master; workers inherit it by
 * fork, so its worker-side hooks run as well). The --hooks registry's hooks
 * run first. Without --preload the app is loaded only in workers, so only its
 * worker-side hooks can run.
 *
 *  kind                 process  when                              slot pid     arg        arg2
 *  ON_STARTING          master   before binding (see note)           -1  0       0          0
 *  WHEN_READY           master   all initial workers READY           -1  0       workers    0
 *  PRE_FORK             master   just before a worker's fork         n   0       0          0
 *  POST_FORK            worker   in the child right after fork       n   getpid  0          0
 *  POST_WORKER_INIT     worker   after startup hooks, before READY   n   getpid  0          0
 *  WORKER_INT           worker   SIGINT (worker keeps running) or    n   getpid  signo      0
 *                                SIGQUIT (before the quick exit); loop thread
 *  WORKER_ABORT         worker   SIGABRT (the master's WORKER        n   getpid  SIGABRT    0
 *                                TIMEOUT), run INSIDE the signal handler:
 *                                async-signal-safe calls only (write, no
 *                                malloc/stdio/gwl_*); then the process dies by
 *                                SIGABRT with the default action
 *  WORKER_EXIT          worker   on its way out, after shutdown      n   getpid  exit code  0
 *                                hooks (in the worker)
 *                       master   a worker process was reaped         n   wpid    status     0
 *                                (status: exit code, or 128+signal)
 *  CHILD_EXIT           master   same moment as master WORKER_EXIT   n   wpid    status     0
 *  NWORKERS_CHANGED     master   target worker count changed         -1  0       new        old
 *  ON_RELOAD            master   HUP accepted                        -1  0       0          0
 *  ON_EXIT              master   just before the master exits        -1  0       exit code  0
 *  PRE_REQUEST          worker   before the request handler call     n   getpid  0          0
 *  POST_REQUEST         worker   when the app finishes the response  n   getpid  status     0
 *                                (gwl_respond / gwl_resp_finish), req still valid
 *
 * Note: with --preload the app is loaded after ON_STARTING has run, so only
 * a --hooks library can observe ON_STARTING.
 * Hooks return nothing and cannot veto; they run on the process's loop
 * thread (WORKER_ABORT: in a signal handler). info is valid during the call.
 */
typedef enum {
    GWL_HOOK_ON_STARTING = 0,
    GWL_HOOK_WHEN_READY,
    GWL_HOOK_PRE_FORK,
    GWL_HOOK_POST_FORK,
    GWL_HOOK_POST_WORKER_INIT,
    GWL_HOOK_WORKER_INT,
    GWL_HOOK_WORKER_ABORT,
    GWL_HOOK_WORKER_EXIT,
    GWL_HOOK_CHILD_EXIT,
    GWL_HOOK_NWORKERS_CHANGED,
    GWL_HOOK_ON_RELOAD,
    GWL_HOOK_ON_EXIT,
    GWL_HOOK_PRE_REQUEST,
    GWL_HOOK_POST_REQUEST,
    GWL_HOOK_COUNT
} gwl_hook_kind_t;

typedef struct {
    gwl_hook_kind_t kind;
    int             slot;   /* worker slot, -1 for master-wide moments */
    long            pid;    /* see the table: the worker's pid, or 0 */
    long            arg;    /* status / count / signal, see the table */
    long            arg2;   /* NWORKERS_CHANGED: the old count */
    gwl_req_t      *req;    /* PRE_REQUEST / POST_REQUEST, else NULL */
} gwl_hook_info_t;

typedef void (*gwl_hook_fn)(const gwl_hook_info_t *info, void *data);

/* Register fn for kind (from an entry point, before any fork). */
int gwl_on_hook(gwl_app_t *app, gwl_hook_kind_t kind, gwl_hook_fn fn, void *data);
/* Lower-case Gunicorn name ("post_worker_init"), "?" if out of range.
 * Async-signal-safe. */
const char *gwl_hook_name(gwl_hook_kind_t kind);

/* ---- the worker ---- */

/* The worker's own libev loop, created after fork; NULL in the master. */
struct ev_loop *gwl_loop(void);
/* Slot number of this worker (0-based, stable across respawns); -1 in the
 * master. */
int gwl_worker_slot(void);
/* Identity of the worker's loop, as sent in READY and heartbeats
 * ("ev:<backend>:<address>:<pid>:<ns>", unique per loop even across forks);
 * NULL in the master. */
const char *gwl_loop_id(void);
/* Requests this worker has completed (the app finished them) since spawn. */
uint64_t gwl_worker_served(void);
/* Log one line at a level: "debug", "info", "warning", "error". Any thread. */
void gwl_log(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the request ---- */

/* NUL-terminated copies owned by the request. */
const char *gwl_req_method(const gwl_req_t *req);
const char *gwl_req_target(const gwl_req_t *req);
const char *gwl_req_path(const gwl_req_t *req);
const char *gwl_req_query(const gwl_req_t *req);
const char *gwl_req_peer(const gwl_req_t *req);
/* Listener address ("ip:port", "[ip6]:port" or "unix") and scheme ("http"). */
const char *gwl_req_server(const gwl_req_t *req);
const char *gwl_req_scheme(const gwl_req_t *req);
int         gwl_req_http_minor(const gwl_req_t *req);
/* Non-zero if the client asked to keep the connection open. */
int         gwl_req_keepalive(const gwl_req_t *req);
/* The exchange's stream id on the worker channel (for log lines). */
uint32_t    gwl_req_id(const gwl_req_t *req);
/* Declared body length; -1 when chunked (length unknown). */
int64_t     gwl_req_content_length(const gwl_req_t *req);
size_t      gwl_req_header_count(const gwl_req_t *req);
/* i-th header in wire order; returns GWL_ERROR past the end. */
int         gwl_req_header_at(const gwl_req_t *req, size_t i,
                              const char **name, const char **value);
/* First header with this name (ASCII case-insensitive), or NULL. */
const char *gwl_req_header(const gwl_req_t *req, const char *name);
/* Non-zero once the exchange was cancelled (client gone, deadline). */
int         gwl_req_cancelled(const gwl_req_t *req);
/* Per-request slot for the app's own pointer. */
void        gwl_req_set_data(gwl_req_t *req, void *data);
void       *gwl_req_data(const gwl_req_t *req);

/* Receive the body as it streams in. Call from the handler (or before the
 * body ends). Without a reader the body is read and discarded. If the body
 * has already ended (or there is none), cb is called at once with last = 1.
 * data points into the channel buffer: valid only during the call. */
int gwl_req_read_body(gwl_req_t *req, gwl_body_cb cb, void *data);
/* Be told when the exchange is cancelled (at most once; not after the app
 * finished). Output for a cancelled exchange is dropped, but the app still
 * finishes it (gwl_respond / gwl_resp_finish) so the request can be freed. */
int gwl_req_on_cancel(gwl_req_t *req, gwl_cancel_cb cb, void *data);

/* ---- the response ---- */

/* Whole response in one call: status, optional Content-Type, body. The
 * gateway adds Content-Length, Date and Server. Finishes the request. */
int gwl_respond(gwl_req_t *req, int status, const char *content_type,
                const void *body, size_t len);
/* Streaming: start (status), add headers, write body pieces, finish.
 * Without a Content-Length header the client gets chunked coding (HTTP/1.1)
 * or a close-delimited body (HTTP/1.0). Writes are queued without blocking;
 * gwl_resp_queued() tells how many bytes wait for the client's window. */
int    gwl_resp_start(gwl_req_t *req, int status);
/* Add a response header. Allowed before gwl_resp_start / gwl_respond too
 * (the headers then go with gwl_respond's response); refused once a body
 * piece was written. Names and values with CR/LF are refused. */
int    gwl_resp_header(gwl_req_t *req, const char *name, const char *value);
int    gwl_resp_write(gwl_req_t *req, const void *data, size_t len);
int    gwl_resp_finish(gwl_req_t *req);
size_t gwl_resp_queued(const gwl_req_t *req);

/* ---- blocking work and background tasks ---- */

/* Run work(arg) on the worker's thread pool, then done(arg) on the loop
 * thread. done may be NULL. Counted in the worker's in-flight work. */
int gwl_offload(gwl_work_cb work, gwl_done_cb done, void *arg);
/* Like gwl_offload, but not tied to a request: counted as a background task
 * (reported in heartbeats and status) until done(arg) has run. Graceful exit
 * waits for background tasks. */
int gwl_background(gwl_work_cb work, gwl_done_cb done, void *arg);
/* Background tasks currently running in this worker. */
unsigned gwl_background_count(void);

#ifdef __cplusplus
}
#endif
#endif /* GWL_H */
