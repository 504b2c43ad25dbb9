"""A Gunicorn-style Python config module for tests/e2e/test_pyhooks.py.

Every hook appends one JSON line to $GW_TEST_DIR/config-hooks.log with what it
was given (worker.pid, worker.age, server.pid, req.method, req.path,
resp.status_code, ...) and the pid of the process it ran in.
"""
import json
import os
import time


def _log(hook, **kw):
    kw.update(hook=hook, ospid=os.getpid(), t=time.time())
    with open(os.path.join(os.environ["GW_TEST_DIR"], "config-hooks.log"), "a") as f:
        f.write(json.dumps(kw, sort_keys=True) + "\n")


def _worker(worker):
    return {"wpid": worker.pid, "age": worker.age, "booted": bool(worker.booted)}


def post_fork(server, worker):
    _log("post_fork", server_pid=server.pid, **_worker(worker))


def post_worker_init(worker):
    _log("post_worker_init", **_worker(worker))


def pre_request(worker, req):
    _log("pre_request", method=req.method, path=req.path, query=req.query, **_worker(worker))


def post_request(worker, req, environ, resp):
    path = environ.get("PATH_INFO") if "PATH_INFO" in environ else environ.get("path")
    _log("post_request", method=req.method, path=req.path, status=resp.status_code,
         env_path=path, **_worker(worker))


def worker_exit(server, worker):
    _log("worker_exit", server_pid=server.pid, **_worker(worker))


def worker_abort(worker):
    _log("worker_abort", **_worker(worker))
