/*
 * pyrt.c - how the master starts the Python runtime (workerlib/python/).
 * One place for the environment the runtime reads and the exec itself, used
 * for the zygote (every Python worker is forked from it, see zygote.c) and
 * the start-up import check.
 */
#include "gateway.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define PY_ENTRY GW_SOURCE_DIR "/workerlib/python/gateway_worker.py"

void gw_python_exec(const char *mode)
{
    char num[32];
    setenv("GATEWAY_MODE", mode, 1);
    setenv("GATEWAY_CHANNEL_FD", "3", 1);
    setenv("GATEWAY_APP", gw.cfg.app_spec, 1);
    setenv("GATEWAY_INTERFACE", gw.cfg.interface ? gw.cfg.interface : "auto", 1);
    if (gw.cfg.pythonpath) setenv("GATEWAY_PYTHONPATH", gw.cfg.pythonpath, 1);
    else unsetenv("GATEWAY_PYTHONPATH");
    setenv("GATEWAY_WORKER_CLASS", gw.cfg.worker_class ? gw.cfg.worker_class : "sync", 1);
    snprintf(num, sizeof(num), "%u", gw.cfg.threads);
    setenv("GATEWAY_THREADS", num, 1);
    snprintf(num, sizeof(num), "%u", gw.cfg.worker_connections);
    setenv("GATEWAY_WORKER_CONNECTIONS", num, 1);
    setenv("GATEWAY_KSM", gw.cfg.ksm ? "1" : "0", 1);
    setenv("GATEWAY_PRELOAD", gw.cfg.preload ? "1" : "0", 1);
    if (gw.cfg.error_logfile) setenv("GATEWAY_ERROR_LOG", gw.cfg.error_logfile, 1);
    else unsetenv("GATEWAY_ERROR_LOG");
    if (gw.cfg.py_config) setenv("GATEWAY_PY_CONFIG", gw.cfg.py_config, 1);
    else unsetenv("GATEWAY_PY_CONFIG");
    execl(GW_PYTHON, GW_PYTHON, "-u", PY_ENTRY, (char *)NULL);
    fprintf(stderr, "cannot exec %s: %s\n", GW_PYTHON, strerror(errno));
    _exit(3);
}
