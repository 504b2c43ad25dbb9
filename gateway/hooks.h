/*
 * hooks.h - master-side lifecycle hooks with Gunicorn's names and moments
 * (master process). Hooks come from --hooks PATH[:SYMBOL] and, with
 * --preload, from the app's own registrations.
 */
#ifndef GW_HOOKS_H
#define GW_HOOKS_H

typedef enum {
    GW_HOOK_ON_STARTING = 0,   /* master, before binding */
    GW_HOOK_WHEN_READY,        /* master, all initial workers READY */
    GW_HOOK_PRE_FORK,          /* master, before each worker fork (slot) */
    GW_HOOK_POST_FORK,         /* child, right after fork (slot) */
    GW_HOOK_WORKER_EXIT,       /* master, a worker process was reaped (slot, pid, status) */
    GW_HOOK_CHILD_EXIT,        /* master, same moment, Gunicorn's child_exit */
    GW_HOOK_NWORKERS_CHANGED,  /* master, target count changed (new, old) */
    GW_HOOK_ON_RELOAD,         /* master, HUP accepted */
    GW_HOOK_ON_EXIT,           /* master, just before it exits */
    GW_HOOK_MAX
} gw_hook_t;

/* Load --hooks and collect the preloaded app's hooks. -1 after printing one
 * "gateway: ..." line. */
int  gw_hooks_load(void);
/* Run the hooks registered for `which`, in registration order. Arguments
 * are the slot, pid and a number (status or counts) where they apply. */
void gw_hooks_run(gw_hook_t which, int slot, long pid, long arg, long arg2);

#endif
