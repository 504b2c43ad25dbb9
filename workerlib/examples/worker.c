/*
 * worker.c - shows the per-worker machinery: startup hooks (run in order,
 * after the worker's loop exists and before READY), a shutdown hook, and
 * what a request can learn about the worker serving it.
 *
 * Every request gets 200 application/json:
 *   {"pid":N,"slot":N,"loop":"<loop identity as in READY>",
 *    "hook":"hook-<pid>-<random hex>","hook2":"second saw hook-...",
 *    "served":N}
 * "hook" is set by the first startup hook; the second startup hook fails
 * the worker's start unless the first already ran, and sets "hook2" from
 * it, which shows the ordering. "served" is the number of requests this
 * worker completed before this one. The shutdown hook logs one line
 * ("worker shutdown hook: ..."). Header X-Worker-Pid.
 *
 *   curl http://127.0.0.1:8000/
 *
 * Runs in a worker process, on its loop thread (gateway_app may run in the
 * master with --preload: it only registers, it reads nothing per worker).
 */
#include "gwl.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static char hook_value[64];
static char hook2_value[96];

static int worker_first_hook(void *data)
{
    (void)data;
    uint32_t rnd;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    snprintf(hook_value, sizeof(hook_value), "hook-%ld-%08" PRIx32, (long)getpid(), rnd);
    gwl_log("info", "startup hook 1: %s (loop %s)", hook_value, gwl_loop_id());
    return 0;
}

static int worker_second_hook(void *data)
{
    (void)data;
    if (hook_value[0] == '\0') {
        gwl_log("error", "startup hook 2 ran before hook 1");
        return -1;
    }
    snprintf(hook2_value, sizeof(hook2_value), "second saw %s", hook_value);
    gwl_log("info", "startup hook 2: %s", hook2_value);
    return 0;
}

static int worker_shutdown_hook(void *data)
{
    (void)data;
    gwl_log("info", "worker shutdown hook: %s served %" PRIu64 " requests",
            hook_value, gwl_worker_served());
    return 0;
}

static void worker_on_request(gwl_req_t *req, void *data)
{
    (void)data;
    char pid[24], body[512];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    int len = snprintf(body, sizeof(body),
                       "{\"pid\":%ld,\"slot\":%d,\"loop\":\"%s\",\"hook\":\"%s\","
                       "\"hook2\":\"%s\",\"served\":%" PRIu64 "}\n",
                       (long)getpid(), gwl_worker_slot(), gwl_loop_id(), hook_value,
                       hook2_value, gwl_worker_served());
    gwl_resp_header(req, "X-Worker-Pid", pid);
    gwl_respond(req, 200, "application/json", body, (size_t)len);
}

int gateway_app(gwl_app_t *app)
{
    if (gwl_on_request(app, worker_on_request, NULL) != GWL_OK
        || gwl_on_startup(app, worker_first_hook, NULL) != GWL_OK
        || gwl_on_startup(app, worker_second_hook, NULL) != GWL_OK
        || gwl_on_shutdown(app, worker_shutdown_hook, NULL) != GWL_OK)
        return GWL_ERROR;
    return GWL_OK;
}
