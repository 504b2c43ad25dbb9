/*
 * metrics.c - placeholder: nothing is collected or served yet.
 */
#include "metrics.h"

void gw_metrics_observe(int status, double seconds) { (void)status; (void)seconds; }
int gw_metrics_start(void) { return 0; }
void gw_metrics_stop(void) {}
size_t gw_metrics_render(char **out) { *out = 0; return 0; }
