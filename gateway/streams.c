/*
 * streams.c - per-channel table of in-flight requests by stream id (master).
 * Open addressing with linear probing and backward-shift deletion, so no
 * tombstones build up on a channel that lives for millions of requests.
 * Stream ids are never 0, which marks an empty slot.
 */
#include <errno.h>
#include <stdlib.h>

#include "gateway.h"

static uint32_t hash32(uint32_t x)
{
    /* ids are sequential: spread them so neighbours do not cluster */
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

int gw_streams_init(gw_streams_t *t, uint32_t capacity)
{
    uint32_t cap = 16;
    while (cap < capacity * 2 && cap < (1u << 30)) cap <<= 1;
    t->keys = calloc(cap, sizeof(*t->keys));
    t->vals = calloc(cap, sizeof(*t->vals));
    if (!t->keys || !t->vals) {
        free(t->keys); free(t->vals);
        t->keys = NULL; t->vals = NULL;
        return -ENOMEM;
    }
    t->mask = cap - 1;
    t->count = 0;
    return 0;
}

void gw_streams_free(gw_streams_t *t)
{
    free(t->keys);
    free(t->vals);
    t->keys = NULL;
    t->vals = NULL;
    t->count = 0;
}

static int grow(gw_streams_t *t)
{
    gw_streams_t n;
    if (gw_streams_init(&n, (t->mask + 1)) < 0) return -ENOMEM;
    for (uint32_t i = 0; i <= t->mask; i++)
        if (t->keys[i]) gw_streams_put(&n, t->keys[i], t->vals[i]);
    gw_streams_free(t);
    *t = n;
    return 0;
}

int gw_streams_put(gw_streams_t *t, uint32_t id, gw_req_t *r)
{
    if ((t->count + 1) * 2 > t->mask + 1 && grow(t) < 0) return -ENOMEM;
    uint32_t i = hash32(id) & t->mask;
    while (t->keys[i] && t->keys[i] != id) i = (i + 1) & t->mask;
    if (!t->keys[i]) t->count++;
    t->keys[i] = id;
    t->vals[i] = r;
    return 0;
}

gw_req_t *gw_streams_get(const gw_streams_t *t, uint32_t id)
{
    if (!t->keys || id == 0) return NULL;
    uint32_t i = hash32(id) & t->mask;
    while (t->keys[i]) {
        if (t->keys[i] == id) return t->vals[i];
        i = (i + 1) & t->mask;
    }
    return NULL;
}

gw_req_t *gw_streams_del(gw_streams_t *t, uint32_t id)
{
    if (!t->keys || id == 0) return NULL;
    uint32_t i = hash32(id) & t->mask;
    while (t->keys[i] && t->keys[i] != id) i = (i + 1) & t->mask;
    if (!t->keys[i]) return NULL;
    gw_req_t *r = t->vals[i];
    t->count--;
    /* backward shift: pull later members of the probe run into the hole */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & t->mask; t->keys[j]; j = (j + 1) & t->mask) {
        uint32_t home = hash32(t->keys[j]) & t->mask;
        /* move j to hole if home is not cyclically in (hole, j] */
        if (((j - home) & t->mask) >= ((j - hole) & t->mask)) {
            t->keys[hole] = t->keys[j];
            t->vals[hole] = t->vals[j];
            hole = j;
        }
    }
    t->keys[hole] = 0;
    t->vals[hole] = NULL;
    return r;
}
