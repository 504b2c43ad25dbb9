/*
 * balance.c - choosing a worker for a new request (master, front loop).
 * The front counts every worker's in-flight requests itself, so
 * least-connections is exact rather than a kernel accept race. Ties are
 * broken round-robin from a moving cursor: with nothing in flight,
 * sequential requests still spread over all workers.
 */
#include "gateway.h"

gw_worker_t *gw_balance_pick(gw_balance_mode_t mode, gw_worker_t *workers,
                             unsigned n, unsigned max_inflight, double prefetch_s,
                             unsigned *cursor)
{
    gw_worker_t *best = NULL;
    unsigned best_i = 0;

    if (n == 0) return NULL;
    unsigned start = *cursor % n;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = (start + k) % n;
        gw_worker_t *w = &workers[i];
        unsigned cap = max_inflight ? max_inflight
                     : w->capacity > GW_INFLIGHT_MAX ? GW_INFLIGHT_MAX
                     : w->capacity > GW_INFLIGHT_AUTO ? w->capacity : GW_INFLIGHT_AUTO;
        if (w->state != GW_WORKER_READY || w->inflight >= cap)
            continue;
        /* all its threads busy: more only while it is fast (prefetch) */
        if (w->capacity && w->inflight >= w->capacity && !(w->svc_avg < prefetch_s))
            continue;
        if (mode == GW_BALANCE_RR) { best = w; best_i = i; break; }
        /* strict '<' keeps the first in cursor order among equals */
        if (!best || w->inflight < best->inflight) { best = w; best_i = i; }
        if (best->inflight == 0) break;   /* cannot do better */
    }
    if (best) *cursor = best_i + 1;
    return best;
}
