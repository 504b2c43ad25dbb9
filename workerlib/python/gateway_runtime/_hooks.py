"""Per-worker hooks.

Two sources, both run in the worker process:
- the startup/shutdown registry that app code fills with the decorators in
  gateway_runtime (run in registration order; startup before READY);
- a Python config module like gunicorn.conf.py (-c FILE.py), whose functions
  post_fork, post_worker_init, worker_int, worker_abort, pre_request,
  post_request and worker_exit are called at Gunicorn's moments.
"""

import logging
import os
import runpy
import sys
import traceback

startup_hooks = []
shutdown_hooks = []

CONFIG_HOOKS = ("post_fork", "post_worker_init", "worker_int", "worker_abort",
                "pre_request", "post_request", "worker_exit")


class MasterInfo(object):
    """The `server` argument of Gunicorn-style hooks."""

    def __init__(self, pid):
        self.pid = pid
        self.log = logging.getLogger("gateway.master")


class WorkerInfo(object):
    """The `worker` argument of Gunicorn-style hooks."""

    def __init__(self, slot):
        self.slot = slot
        self.age = slot
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self.alive = True
        self.booted = False
        self.app = os.environ.get("GATEWAY_APP", "")
        self.interface = None
        self.loop = None
        self.log = logging.getLogger("gateway.worker")
        self.nr = 0            # requests served (Gunicorn's worker.nr)


class Request(object):
    """The `req` argument of pre_request/post_request (Gunicorn's fields)."""

    __slots__ = ("method", "uri", "path", "query", "version", "headers",
                 "remote_addr", "sid")

    def __init__(self, sid, method, target, path, query, minor, headers,
                 peer):
        self.sid = sid
        self.method = method
        self.uri = target.decode("latin-1")
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.version = (1, minor)
        self.headers = [(n.decode("latin-1").upper(), v.decode("latin-1"))
                        for n, v in headers]
        self.remote_addr = peer


class Response(object):
    """The `resp` argument of post_request."""

    __slots__ = ("status", "status_code", "headers", "sent")

    def __init__(self, status_code, headers, sent):
        self.status_code = status_code
        self.status = str(status_code)
        self.headers = [(_text(n), _text(v)) for n, v in (headers or ())]
        self.sent = sent


def _text(v):
    return v if isinstance(v, str) else bytes(v).decode("latin-1")


class Config(object):
    def __init__(self):
        self.path = os.environ.get("GATEWAY_PY_CONFIG", "")
        self.fns = {}
        self.has_request_hooks = False

    def load(self):
        if not self.path:
            return
        ns = runpy.run_path(self.path, run_name="gateway.conf")
        for name in CONFIG_HOOKS:
            fn = ns.get(name)
            if fn is not None and callable(fn):
                self.fns[name] = fn
        self.has_request_hooks = ("pre_request" in self.fns
                                  or "post_request" in self.fns)

    def call(self, name, *args):
        """Call a config hook; an exception is logged, never fatal (as in
        Gunicorn, except post_fork/post_worker_init: see call_fatal)."""
        fn = self.fns.get(name)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            sys.stderr.write("gateway_worker: hook %s raised:\n" % name)
            traceback.print_exc()
            sys.stderr.flush()

    def post_request(self, winfo, req, env, code, headers, sent):
        try:
            resp = Response(code or 0, headers, sent)
        except Exception:
            traceback.print_exc()
            return
        self.call("post_request", winfo, req, env, resp)

    def call_fatal(self, name, *args):
        fn = self.fns.get(name)
        if fn is not None:
            fn(*args)


async def await_it(aw):
    return await aw
