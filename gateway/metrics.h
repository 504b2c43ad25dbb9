/*
 * metrics.h - Prometheus metrics aggregated by the master (master loop).
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>

/* One finished request: its status and its duration (front, at completion). */
void gw_metrics_observe(int status, double seconds);
/* Serve GET /metrics on cfg.metrics_bind (NULL: off). Returns -1 after
 * printing one "gateway: ..." line. Called before the first fork. */
int  gw_metrics_start(void);
void gw_metrics_stop(void);
/* Render the Prometheus text exposition into a malloc'd buffer (*out, the
 * caller frees); returns its length, 0 on failure. */
size_t gw_metrics_render(char **out);

#endif
