/*
 * gwl_int.h - internal seam between the gateway process and workerlib: how
 * the master (preload) or a freshly forked worker loads the app, and how a
 * forked child becomes a worker. Not for applications (they use gwl.h).
 */
#ifndef GWL_INT_H
#define GWL_INT_H

#include "gwl.h"

/* Exit statuses of a worker process; the supervisor acts on them. */
#define GWL_EXIT_OK     0   /* graceful exit (QUIT, TERM, master gone) */
#define GWL_EXIT_BOOT   3   /* app load or a startup hook failed: do not spin */
#define GWL_EXIT_PROTO  4   /* protocol error on the channel */

typedef struct {
    int         slot;          /* worker slot, from the master */
    const char *app_path;      /* for loading after fork when not preloaded */
    const char *app_symbol;    /* entry point name (GWL_DEFAULT_SYMBOL if NULL) */
} gwl__worker_opts_t;

/* Create an empty registry (no handler, no hooks). NULL on ENOMEM. */
gwl_app_t *gwl__app_create(void);
/* Free a registry (hook lists included); the dlopen handle stays open. */
void gwl__app_destroy(gwl_app_t *app);
/* True once an entry point has run successfully on this registry. */
int gwl__app_loaded(const gwl_app_t *app);
/*
 * dlopen(path) (RTLD_NOW), dlsym(symbol), call the entry point with app.
 * Logs one info line "app loaded: PATH:SYMBOL in pid N". On failure returns
 * GWL_ERROR and writes one line (dlerror text included) into err.
 */
int gwl__app_load(gwl_app_t *app, const char *path, const char *symbol,
                  char *err, size_t errlen);

/*
 * Run this process as a worker until it exits; returns the exit status for
 * _exit(). Called in a freshly forked child whose only descriptors are 0-2
 * and chan_fd (non-blocking, SOCK_STREAM socketpair end), with default signal
 * dispositions and an empty signal mask. If app is not loaded yet it is
 * loaded here (opts->app_path). Creates the worker's own libev loop, waits
 * for HELLO, runs startup hooks in order, sends READY, serves streams until
 * QUIT / SIGTERM / channel EOF, finishes in-flight work, runs shutdown hooks.
 * A load or startup failure sends an ERROR frame and returns GWL_EXIT_BOOT.
 */
int gwl__worker_main(gwl_app_t *app, int chan_fd, const gwl__worker_opts_t *opts);

/*
 * Lifecycle hooks. The extra registry is the --hooks library's (set by the
 * master before forking, so workers inherit it); gwl__hooks_run() runs its
 * hooks for info->kind, then app's (either may be NULL), in registration
 * order. Only walks arrays: safe from a signal handler once registration is
 * over.
 */
void gwl__hooks_set_extra(gwl_app_t *extra);
void gwl__hooks_run(const gwl_app_t *app, const gwl_hook_info_t *info);
/* How many kinds of worker-side hooks app registered (post_fork, post_worker_init,
 * worker_int, worker_abort, pre_request, post_request, startup, shutdown);
 * their names, comma-separated, in names (truncated to size). */
size_t gwl__worker_hooks(const gwl_app_t *app, char *names, size_t size);

#endif /* GWL_INT_H */
