/*
 * app.c - workerlib's app registry and loader: the request handler, the
 * ordered startup/shutdown hook lists and the pool size an app registers from
 * its entry point, and dlopen() of the app's shared object.
 *
 * Runs in the master (--preload: before fork, so workers inherit the loaded
 * app copy-on-write) or in a freshly forked worker (gwl__worker_main loads it
 * when HELLO arrives). Loop-thread only; nothing here is thread-safe.
 */
#include "gwl_int.h"
#include "log.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Seam to worker.c (no private header: see the block in worker.c). */
void     gwl__app_handler(const gwl_app_t *app, gwl_request_cb *cb, void **data);
unsigned gwl__app_threads(const gwl_app_t *app);
int      gwl__app_run_hooks(gwl_app_t *app, int startup, char *err, size_t errlen);

#define GWL_THREADS_DEFAULT 4
#define GWL_THREADS_MAX     256

typedef struct {
    gwl_hook_cb cb;
    void       *data;
} gwl_hook_t;

typedef struct {
    gwl_hook_t *v;
    unsigned    n;
    unsigned    cap;
} gwl_hooks_t;

/* Lifecycle hooks (gwl_on_hook), one growable list per kind. */
typedef struct {
    gwl_hook_fn fn;
    void       *data;
} gwl_lc_hook_t;

typedef struct {
    gwl_lc_hook_t *v;
    unsigned       n;
    unsigned       cap;
} gwl_lc_hooks_t;

struct gwl_app_s {
    gwl_lc_hooks_t lc[GWL_HOOK_COUNT];
    gwl_request_cb on_request;
    void          *on_request_data;
    gwl_hooks_t    startup;
    gwl_hooks_t    shutdown;
    unsigned       threads;
    int            loaded;
    /* Kept open for the life of the process: hooks and the handler point
     * into it, and there is no unload. */
    void          *dl;
};

gwl_app_t *gwl__app_create(void)
{
    gwl_app_t *app = calloc(1, sizeof(*app));
    if (app == NULL) return NULL;
    app->threads = GWL_THREADS_DEFAULT;
    return app;
}

void gwl__app_destroy(gwl_app_t *app)
{
    if (app == NULL) return;
    free(app->startup.v);
    free(app->shutdown.v);
    for (int k = 0; k < GWL_HOOK_COUNT; k++) free(app->lc[k].v);
    /* app->dl stays open: code from it may still be referenced. */
    free(app);
}

int gwl__app_loaded(const gwl_app_t *app)
{
    return app != NULL && app->loaded;
}

int gwl__app_load(gwl_app_t *app, const char *path, const char *symbol,
                  char *err, size_t errlen)
{
    char buf[4096];
    if (err != NULL && errlen > 0) err[0] = '\0';
    if (app == NULL || path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "no application path given");
        return GWL_ERROR;
    }
    if (symbol == NULL || symbol[0] == '\0') symbol = GWL_DEFAULT_SYMBOL;

    /* dlopen() searches the library path for a bare name; "app.so" on a
     * command line means the file in the current directory. */
    const char *open_path = path;
    if (strchr(path, '/') == NULL) {
        snprintf(buf, sizeof(buf), "./%s", path);
        open_path = buf;
    }

    dlerror();
    void *dl = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *e = dlerror();
        snprintf(err, errlen, "cannot load %s: %s", path, e ? e : "unknown error");
        return GWL_ERROR;
    }
    dlerror();
    void *sym = dlsym(dl, symbol);
    const char *e = dlerror();
    if (sym == NULL || e != NULL) {
        snprintf(err, errlen, "%s: no entry point \"%s\": %s", path, symbol,
                 e ? e : "symbol is NULL");
        dlclose(dl);
        return GWL_ERROR;
    }

    gwl_app_init_fn init;
    memcpy(&init, &sym, sizeof(init));   /* object -> function pointer, POSIX */
    int rc = init(app);
    if (rc != GWL_OK) {
        /* Keep dl open: the entry point may have registered callbacks into
         * it before failing. The process is about to give up anyway. */
        snprintf(err, errlen, "%s:%s: entry point returned %d", path, symbol, rc);
        return GWL_ERROR;
    }
    app->dl = dl;
    app->loaded = 1;
    gw_info("app loaded: %s:%s in pid %ld", path, symbol, (long)getpid());
    return GWL_OK;
}

static int hooks_add(gwl_hooks_t *h, gwl_hook_cb cb, void *data)
{
    if (cb == NULL) return GWL_ERROR;
    if (h->n == h->cap) {
        unsigned cap = h->cap ? h->cap * 2 : 4;
        gwl_hook_t *v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL) {
            gw_error("cannot register a hook: out of memory");
            return GWL_ERROR;
        }
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].cb = cb;
    h->v[h->n].data = data;
    h->n++;
    return GWL_OK;
}

int gwl_on_request(gwl_app_t *app, gwl_request_cb cb, void *data)
{
    if (app == NULL || cb == NULL) return GWL_ERROR;
    app->on_request = cb;
    app->on_request_data = data;
    return GWL_OK;
}

int gwl_on_startup(gwl_app_t *app, gwl_hook_cb cb, void *data)
{
    return app ? hooks_add(&app->startup, cb, data) : GWL_ERROR;
}

int gwl_on_shutdown(gwl_app_t *app, gwl_hook_cb cb, void *data)
{
    return app ? hooks_add(&app->shutdown, cb, data) : GWL_ERROR;
}

int gwl_set_threads(gwl_app_t *app, unsigned n)
{
    if (app == NULL || n < 1 || n > GWL_THREADS_MAX) {
        gw_error("gwl_set_threads(%u): must be 1..%d", n, GWL_THREADS_MAX);
        return GWL_ERROR;
    }
    app->threads = n;
    return GWL_OK;
}

void gwl__app_handler(const gwl_app_t *app, gwl_request_cb *cb, void **data)
{
    *cb = app->on_request;
    *data = app->on_request_data;
}

unsigned gwl__app_threads(const gwl_app_t *app)
{
    return app->threads;
}

/*
 * Run the startup (startup != 0) or shutdown hooks in registration order.
 * Startup stops at the first hook returning non-zero: returns GWL_ERROR with
 * a one-line reason in err. Shutdown runs every hook and logs failures.
 */
int gwl__app_run_hooks(gwl_app_t *app, int startup, char *err, size_t errlen)
{
    gwl_hooks_t *h = startup ? &app->startup : &app->shutdown;
    for (unsigned i = 0; i < h->n; i++) {
        int rc = h->v[i].cb(h->v[i].data);
        if (rc == 0) continue;
        if (startup) {
            snprintf(err, errlen, "startup hook #%u of %u failed (returned %d)",
                     i + 1, h->n, rc);
            return GWL_ERROR;
        }
        gw_warn("shutdown hook #%u of %u returned %d", i + 1, h->n, rc);
    }
    return GWL_OK;
}

/* ------------------------------------------------------------------ */
/* lifecycle hooks */

static const char *const hook_names[GWL_HOOK_COUNT] = {
    [GWL_HOOK_ON_STARTING]      = "on_starting",
    [GWL_HOOK_WHEN_READY]       = "when_ready",
    [GWL_HOOK_PRE_FORK]         = "pre_fork",
    [GWL_HOOK_POST_FORK]        = "post_fork",
    [GWL_HOOK_POST_WORKER_INIT] = "post_worker_init",
    [GWL_HOOK_WORKER_INT]       = "worker_int",
    [GWL_HOOK_WORKER_ABORT]     = "worker_abort",
    [GWL_HOOK_WORKER_EXIT]      = "worker_exit",
    [GWL_HOOK_CHILD_EXIT]       = "child_exit",
    [GWL_HOOK_NWORKERS_CHANGED] = "nworkers_changed",
    [GWL_HOOK_ON_RELOAD]        = "on_reload",
    [GWL_HOOK_ON_EXIT]          = "on_exit",
    [GWL_HOOK_PRE_REQUEST]      = "pre_request",
    [GWL_HOOK_POST_REQUEST]     = "post_request",
};

const char *gwl_hook_name(gwl_hook_kind_t kind)
{
    if ((int)kind < 0 || kind >= GWL_HOOK_COUNT) return "?";
    return hook_names[kind];
}

/* Hooks that run inside a worker process, not in the master. */
static const unsigned char worker_side[GWL_HOOK_COUNT] = {
    [GWL_HOOK_POST_FORK] = 1, [GWL_HOOK_POST_WORKER_INIT] = 1, [GWL_HOOK_WORKER_INT] = 1,
    [GWL_HOOK_WORKER_ABORT] = 1, [GWL_HOOK_PRE_REQUEST] = 1, [GWL_HOOK_POST_REQUEST] = 1,
};

size_t gwl__worker_hooks(const gwl_app_t *app, char *names, size_t size)
{
    size_t n = 0, off = 0;
    if (size) names[0] = '\0';
    if (app == NULL) return 0;
    for (int k = 0; k < GWL_HOOK_COUNT; k++) {
        if (!worker_side[k] || app->lc[k].n == 0) continue;
        n++;
        if (off < size)
            off += (size_t)snprintf(names + off, size - off, "%s%s", off ? ", " : "",
                                    hook_names[k]);
    }
    const char *more[2] = { app->startup.n ? "startup" : NULL,
                            app->shutdown.n ? "shutdown" : NULL };
    for (int i = 0; i < 2; i++) {
        if (!more[i]) continue;
        n++;
        if (off < size)
            off += (size_t)snprintf(names + off, size - off, "%s%s", off ? ", " : "", more[i]);
    }
    return n;
}

int gwl_on_hook(gwl_app_t *app, gwl_hook_kind_t kind, gwl_hook_fn fn, void *data)
{
    if (app == NULL || fn == NULL || (int)kind < 0 || kind >= GWL_HOOK_COUNT) {
        gw_error("gwl_on_hook(%d): bad arguments", (int)kind);
        return GWL_ERROR;
    }
    gwl_lc_hooks_t *h = &app->lc[kind];
    if (h->n == h->cap) {
        unsigned cap = h->cap ? h->cap * 2 : 2;
        gwl_lc_hook_t *v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL) {
            gw_error("cannot register a %s hook: out of memory", hook_names[kind]);
            return GWL_ERROR;
        }
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n].fn = fn;
    h->v[h->n].data = data;
    h->n++;
    return GWL_OK;
}

static gwl_app_t *hooks_extra;   /* the --hooks library's registry */

void gwl__hooks_set_extra(gwl_app_t *extra)
{
    hooks_extra = extra;
}

static void lc_run(const gwl_app_t *app, const gwl_hook_info_t *info)
{
    if (app == NULL) return;
    const gwl_lc_hooks_t *h = &app->lc[info->kind];
    for (unsigned i = 0; i < h->n; i++) h->v[i].fn(info, h->v[i].data);
}

void gwl__hooks_run(const gwl_app_t *app, const gwl_hook_info_t *info)
{
    if (info == NULL || (int)info->kind < 0 || info->kind >= GWL_HOOK_COUNT) return;
    lc_run(hooks_extra, info);
    if (app != hooks_extra) lc_run(app, info);
}
