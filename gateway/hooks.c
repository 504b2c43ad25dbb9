/*
 * hooks.c - placeholder: no master-side hooks yet.
 */
#include "hooks.h"

int gw_hooks_load(void) { return 0; }
void gw_hooks_run(gw_hook_t which, int slot, long pid, long arg, long arg2)
{
    (void)which; (void)slot; (void)pid; (void)arg; (void)arg2;
}
