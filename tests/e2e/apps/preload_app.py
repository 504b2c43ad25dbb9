"""The app of tests/e2e/test_preload_python.py (--preload with a zygote).

At import (module level, so once per importing process):
  - appends its pid to the file named by PRELOAD_IMPORT_LOG, if set;
  - with PRELOAD_BIG=1 builds ~50 MB of small objects (BIG), which forked
    workers should share with the zygote rather than copy.

    app       WSGI:  /      "Hello, World!" with X-Worker-Pid, X-Version
                     /info  JSON: pid, ppid, imported_by, version,
                            freeze_count, ksm, big
                     /collect  gc.collect() (a full collection), then /info
                     /stderr   writes "preload_app stderr from PID" to stderr
    asgi      ASGI 3 with lifespan (startup appends the worker's pid to
              PRELOAD_LIFESPAN_LOG); same routes.
"""
import ctypes
import gc
import json
import os
import sys

VERSION = "v1"
IMPORTED_BY = os.getpid()


def _append(path, line):
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


_append(os.environ.get("PRELOAD_IMPORT_LOG"), str(IMPORTED_BY))

BIG = None
if os.environ.get("PRELOAD_BIG") == "1":
    # ~50 MB of small tracked objects: the case gc.freeze() is for (a
    # collection in a worker would otherwise write to every one of them).
    BIG = [(i, "s%d" % i) for i in range(330000)]


def _ksm():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(68, 0, 0, 0, 0)   # PR_GET_MEMORY_MERGE
    except Exception:
        return -1


def info():
    return {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY,
            "version": VERSION, "freeze_count": gc.get_freeze_count(), "ksm": _ksm(),
            "big": len(BIG) if BIG is not None else 0}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    hdrs = [("X-Worker-Pid", str(os.getpid())), ("X-Version", VERSION)]
    if path == "/stderr":
        sys.stderr.write("preload_app stderr from %d\n" % os.getpid())
        sys.stderr.flush()
    if path == "/collect":
        gc.collect()
        path = "/info"
    if path == "/info":
        start_response("200 OK", [("Content-Type", "application/json")] + hdrs)
        return [json.dumps(info()).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")] + hdrs)
    return [b"Hello, World!"]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                _append(os.environ.get("PRELOAD_LIFESPAN_LOG"), str(os.getpid()))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    hdrs = [(b"x-worker-pid", str(os.getpid()).encode()), (b"x-version", VERSION.encode())]
    if scope["path"] == "/info":
        body = json.dumps(dict(info(), asgi=True)).encode()
        ctype = b"application/json"
    else:
        body = b"Hello, ASGI!"
        ctype = b"text/plain"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype)] + hdrs})
    await send({"type": "http.response.body", "body": body})
