/*
 * hooks.c - master-side lifecycle hooks (Gunicorn's names and moments).
 *
 * Two registries may hold hooks: the --hooks PATH[:SYMBOL] library's, loaded
 * here in the master (its entry point, default "gateway_hooks", registers
 * with gwl_on_hook()), and, with --preload, the app's own (gw.app). Both are
 * run by gwl__hooks_run(), the --hooks one first. The --hooks registry is
 * also handed to workerlib so forked workers run its worker-side hooks.
 */
#include "hooks.h"
#include "gateway.h"
#include "gwl_int.h"
#include "log.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GW_HOOKS_DEFAULT_SYMBOL "gateway_hooks"

static gwl_app_t *hooks_reg;   /* the --hooks library's registry */

int gw_hooks_load(void)
{
    const char *spec = gw.cfg.hooks;
    if (spec == NULL || spec[0] == '\0') return 0;

    char path[4096], open_path[4100], symbol[256];
    snprintf(symbol, sizeof(symbol), "%s", GW_HOOKS_DEFAULT_SYMBOL);
    snprintf(path, sizeof(path), "%s", spec);
    /* PATH:SYMBOL - a ':' followed by a name without '/'. */
    char *colon = strrchr(path, ':');
    if (colon != NULL && strchr(colon + 1, '/') == NULL) {
        *colon = '\0';
        if (colon[1] != '\0') snprintf(symbol, sizeof(symbol), "%s", colon + 1);
    }
    if (path[0] == '\0') {
        fprintf(stderr, "gateway: cannot load hooks: empty path in --hooks %s\n", spec);
        return -1;
    }
    if (strchr(path, '/') == NULL) snprintf(open_path, sizeof(open_path), "./%s", path);
    else snprintf(open_path, sizeof(open_path), "%s", path);

    dlerror();
    void *dl = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        const char *e = dlerror();
        fprintf(stderr, "gateway: cannot load hooks: %s\n", e ? e : path);
        return -1;
    }
    dlerror();
    void *sym = dlsym(dl, symbol);
    const char *e = dlerror();
    if (sym == NULL || e != NULL) {
        fprintf(stderr, "gateway: cannot load hooks: %s: no entry point \"%s\"\n", path, symbol);
        dlclose(dl);
        return -1;
    }
    gwl_app_t *reg = gwl__app_create();
    if (reg == NULL) {
        fprintf(stderr, "gateway: cannot load hooks: out of memory\n");
        dlclose(dl);
        return -1;
    }
    gwl_app_init_fn init;
    memcpy(&init, &sym, sizeof(init));   /* object -> function pointer, POSIX */
    int rc = init(reg);
    if (rc != GWL_OK) {
        /* dl stays open: the entry point may have registered into it. */
        fprintf(stderr, "gateway: cannot load hooks: %s:%s: entry point returned %d\n",
                path, symbol, rc);
        gwl__app_destroy(reg);
        return -1;
    }
    hooks_reg = reg;
    gwl__hooks_set_extra(reg);
    gw_info("hooks loaded: %s:%s", path, symbol);
    /* Python workers are forked from the zygote, an exec'd interpreter that
     * never had this library: say so rather than drop the hooks silently. */
    char names[256];
    if (gw.python && gwl__worker_hooks(reg, names, sizeof(names)) > 0)
        gw_warn("hooks: %s registers worker-side hooks (%s), which do not run in Python "
                "workers (they fork from the zygote, not from the master); use a Python "
                "config module (-c FILE.py) for those", path, names);
    return 0;
}

static const gwl_hook_kind_t kind_of[GW_HOOK_MAX] = {
    [GW_HOOK_ON_STARTING]      = GWL_HOOK_ON_STARTING,
    [GW_HOOK_WHEN_READY]       = GWL_HOOK_WHEN_READY,
    [GW_HOOK_PRE_FORK]         = GWL_HOOK_PRE_FORK,
    [GW_HOOK_POST_FORK]        = GWL_HOOK_POST_FORK,
    [GW_HOOK_WORKER_EXIT]      = GWL_HOOK_WORKER_EXIT,
    [GW_HOOK_CHILD_EXIT]       = GWL_HOOK_CHILD_EXIT,
    [GW_HOOK_NWORKERS_CHANGED] = GWL_HOOK_NWORKERS_CHANGED,
    [GW_HOOK_ON_RELOAD]        = GWL_HOOK_ON_RELOAD,
    [GW_HOOK_ON_EXIT]          = GWL_HOOK_ON_EXIT,
};

void gw_hooks_run(gw_hook_t which, int slot, long pid, long arg, long arg2)
{
    if ((int)which < 0 || which >= GW_HOOK_MAX) return;
    if (hooks_reg == NULL && gw.app == NULL) return;
    gwl_hook_info_t info = {
        .kind = kind_of[which], .slot = slot, .pid = pid, .arg = arg, .arg2 = arg2,
        .req = NULL,
    };
    gwl__hooks_run((const gwl_app_t *)gw.app, &info);
}
