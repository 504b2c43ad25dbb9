/*
 * check_balance.c - worker choice (gateway/balance.c) and the per-channel
 * stream table (gateway/streams.c). Both are pure: no loop, no processes.
 */
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "gateway.h"

static gw_worker_t ws[8];

static void setup_workers(unsigned n)
{
    memset(ws, 0, sizeof(ws));
    for (unsigned i = 0; i < n; i++) {
        ws[i].slot = (int)i;
        ws[i].state = GW_WORKER_READY;
    }
}

START_TEST(rr_spreads_evenly)
{
    unsigned cursor = 0, count[4] = { 0 };
    setup_workers(4);
    for (int i = 0; i < 100; i++) {
        gw_worker_t *w = gw_balance_pick(GW_BALANCE_RR, ws, 4, 10, 0.0, &cursor);
        ck_assert_ptr_nonnull(w);
        count[w->slot]++;
    }
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(count[i], 25);
}
END_TEST

START_TEST(rr_skips_not_ready_and_full)
{
    unsigned cursor = 0, count[4] = { 0 };
    setup_workers(4);
    ws[1].state = GW_WORKER_SPAWNING;
    ws[2].state = GW_WORKER_DRAINING;
    ws[3].inflight = 10;               /* at max_inflight */
    for (int i = 0; i < 10; i++) {
        gw_worker_t *w = gw_balance_pick(GW_BALANCE_RR, ws, 4, 10, 0.0, &cursor);
        ck_assert_ptr_nonnull(w);
        count[w->slot]++;
    }
    ck_assert_uint_eq(count[0], 10);
}
END_TEST

START_TEST(leastconn_ties_round_robin)
{
    /* nothing in flight: sequential requests still visit every worker */
    unsigned cursor = 0, count[4] = { 0 };
    setup_workers(4);
    for (int i = 0; i < 100; i++) {
        gw_worker_t *w = gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 4, 10, 0.0, &cursor);
        count[w->slot]++;
    }
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(count[i], 25);
}
END_TEST

START_TEST(leastconn_avoids_busy)
{
    unsigned cursor = 0;
    setup_workers(3);
    ws[0].inflight = 1;                /* busy with a slow request */
    for (int i = 0; i < 50; i++) {
        gw_worker_t *w = gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 3, 10, 0.0, &cursor);
        ck_assert_int_ne(w->slot, 0);
    }
    /* exact: always a minimum */
    ws[0].inflight = 3; ws[1].inflight = 1; ws[2].inflight = 2;
    gw_worker_t *w = gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 3, 10, 0.0, &cursor);
    ck_assert_int_eq(w->slot, 1);
}
END_TEST

START_TEST(none_eligible)
{
    unsigned cursor = 0;
    setup_workers(2);
    ws[0].inflight = 5; ws[1].state = GW_WORKER_BACKOFF;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 5, 0.0, &cursor));
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 2, 5, 0.0, &cursor));
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 0, 5, 0.0, &cursor));
}
END_TEST

START_TEST(capacity_bounds_slow_workers)
{
    unsigned cursor = 0;
    setup_workers(2);
    ws[0].capacity = ws[1].capacity = 1;     /* sync Python workers */
    ws[0].inflight = 1;
    /* the free worker first */
    gw_worker_t *w = gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.002, &cursor);
    ck_assert_int_eq(w->slot, 1);
    ws[1].inflight = 1;
    /* all threads busy and slow (50 ms a request): nothing more, the front queues */
    ws[0].svc_avg = ws[1].svc_avg = 0.05;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.002, &cursor));
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 2, 10, 0.002, &cursor));
    /* a fast one (0.1 ms a request) may take more, up to max_inflight */
    ws[1].svc_avg = 0.0001;
    w = gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.002, &cursor);
    ck_assert_int_eq(w->slot, 1);
    ws[1].inflight = 10;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.002, &cursor));
    /* prefetch 0: strict, even when fast */
    ws[1].inflight = 1;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.0, &cursor));
    /* no capacity (native, ASGI with none): only max_inflight counts */
    ws[1].capacity = 0;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 10, 0.0, &cursor));
}
END_TEST

START_TEST(auto_inflight_follows_capacity)
{
    unsigned cursor = 0;
    setup_workers(2);
    ws[1].state = GW_WORKER_BACKOFF;
    /* max_inflight 0 (auto), no capacity (native): GW_INFLIGHT_AUTO */
    ws[0].inflight = GW_INFLIGHT_AUTO - 1;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 0, 0.0, &cursor));
    ws[0].inflight = GW_INFLIGHT_AUTO;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 0, 0.0, &cursor));
    /* a small capacity (threads) does not lower the auto cap when it is fast */
    ws[0].capacity = 4;
    ws[0].inflight = GW_INFLIGHT_AUTO - 1;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_LEASTCONN, ws, 2, 0, 0.002, &cursor));
    /* an event loop's connection limit above it raises it (ASGI, gevent) */
    ws[0].capacity = 1000;
    ws[0].inflight = 999;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_RR, ws, 2, 0, 0.0, &cursor));
    ws[0].inflight = 1000;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 2, 0, 0.0, &cursor));
    /* a worker's claim past GW_INFLIGHT_MAX does not lift the cap further */
    ws[0].capacity = UINT32_MAX;
    ws[0].inflight = GW_INFLIGHT_MAX - 1;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_RR, ws, 2, 0, 0.0, &cursor));
    ws[0].inflight = GW_INFLIGHT_MAX;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 2, 0, 0.0, &cursor));
    /* an explicit max_inflight caps it */
    ws[0].inflight = 20;
    ck_assert_ptr_null(gw_balance_pick(GW_BALANCE_RR, ws, 2, 20, 0.0, &cursor));
    ws[0].inflight = 19;
    ck_assert_ptr_nonnull(gw_balance_pick(GW_BALANCE_RR, ws, 2, 20, 0.0, &cursor));
}
END_TEST

START_TEST(streams_put_get_del)
{
    gw_streams_t t;
    ck_assert_int_eq(gw_streams_init(&t, 4), 0);
    gw_req_t *vals = (gw_req_t *)malloc(1);   /* opaque tokens: addresses only */
    /* many ids, sequential as on a channel, with deletions in between */
    for (uint32_t id = 1; id <= 5000; id++) {
        ck_assert_int_eq(gw_streams_put(&t, id, (gw_req_t *)((char *)vals + id)), 0);
        if (id > 40) {
            gw_req_t *r = gw_streams_del(&t, id - 40);
            ck_assert_ptr_eq(r, (gw_req_t *)((char *)vals + id - 40));
        }
        ck_assert_ptr_eq(gw_streams_get(&t, id), (gw_req_t *)((char *)vals + id));
    }
    ck_assert_uint_eq(t.count, 40);
    for (uint32_t id = 1; id <= 4960; id++) ck_assert_ptr_null(gw_streams_get(&t, id));
    for (uint32_t id = 4961; id <= 5000; id++)
        ck_assert_ptr_eq(gw_streams_get(&t, id), (gw_req_t *)((char *)vals + id));
    ck_assert_ptr_null(gw_streams_del(&t, 1));
    ck_assert_ptr_null(gw_streams_get(&t, 0));
    gw_streams_free(&t);
    free(vals);
}
END_TEST

START_TEST(streams_random_order)
{
    gw_streams_t t;
    ck_assert_int_eq(gw_streams_init(&t, 64), 0);
    static uint8_t present[20001];
    memset(present, 0, sizeof(present));
    srand(7);
    for (int i = 0; i < 200000; i++) {
        uint32_t id = 1 + (uint32_t)(rand() % 20000);
        if (present[id]) {
            ck_assert_ptr_eq(gw_streams_del(&t, id), (gw_req_t *)(uintptr_t)id);
            present[id] = 0;
        } else if (t.count < 100) {
            gw_streams_put(&t, id, (gw_req_t *)(uintptr_t)id);
            present[id] = 1;
        }
    }
    for (uint32_t id = 1; id <= 20000; id++)
        ck_assert_ptr_eq(gw_streams_get(&t, id), present[id] ? (gw_req_t *)(uintptr_t)id : NULL);
    gw_streams_free(&t);
}
END_TEST

static Suite *balance_suite(void)
{
    Suite *s = suite_create("balance");
    TCase *tc = tcase_create("pick");
    tcase_add_test(tc, rr_spreads_evenly);
    tcase_add_test(tc, rr_skips_not_ready_and_full);
    tcase_add_test(tc, leastconn_ties_round_robin);
    tcase_add_test(tc, leastconn_avoids_busy);
    tcase_add_test(tc, none_eligible);
    tcase_add_test(tc, capacity_bounds_slow_workers);
    tcase_add_test(tc, auto_inflight_follows_capacity);
    suite_add_tcase(s, tc);
    tc = tcase_create("streams");
    tcase_add_test(tc, streams_put_get_del);
    tcase_add_test(tc, streams_random_order);
    suite_add_tcase(s, tc);
    return s;
}
GW_TEST_SUITE(balance_suite)
