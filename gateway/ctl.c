/*
 * ctl.c - the control socket (master loop). Placeholder until the control
 * socket lands: nothing is bound.
 */
#include "gateway.h"

int gw_ctl_start(void) { return 0; }
void gw_ctl_stop(void) {}
