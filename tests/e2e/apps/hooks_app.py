"""An app that uses the runtime's per-worker hook registry
(gateway_runtime.startup / gateway_runtime.shutdown), for
tests/e2e/test_pyhooks.py. Both a WSGI `app` and an ASGI `asgi_app` are
defined; the hooks are the same.

Every hook appends "NAME PID DETAIL TIME" to $GW_TEST_DIR/registry.log; DETAIL is
"sync", or for async hooks "loop=ID" (id of the running loop). With
$HOOKS_FAIL set, the second startup hook raises ValueError($HOOKS_FAIL).

    /            200 with X-Worker-Pid; the body is this worker's hook lines
    /loop        (ASGI) the id of the loop serving the request
    /block       (WSGI) time.sleep(30): a stuck worker for the watchdog
    /status?code=N   answers status N
"""
import asyncio
import os
import time

import gateway_runtime


def _log(name, detail):
    with open(os.path.join(os.environ["GW_TEST_DIR"], "registry.log"), "a") as f:
        f.write("%s %d %s %.6f\n" % (name, os.getpid(), detail, time.time()))


@gateway_runtime.startup
def first_sync():
    _log("startup-1", "sync")


@gateway_runtime.startup
async def second_async():
    await asyncio.sleep(0.01)
    if os.environ.get("HOOKS_FAIL"):
        raise ValueError(os.environ["HOOKS_FAIL"])
    _log("startup-2", "loop=%d" % id(asyncio.get_running_loop()))


@gateway_runtime.startup
def third_sync():
    _log("startup-3", "sync")


@gateway_runtime.shutdown
async def first_shutdown_async():
    await asyncio.sleep(0.01)
    _log("shutdown-1", "loop=%d" % id(asyncio.get_running_loop()))


@gateway_runtime.shutdown
def second_shutdown_sync():
    _log("shutdown-2", "sync")


def _mine():
    try:
        with open(os.path.join(os.environ["GW_TEST_DIR"], "registry.log")) as f:
            return "".join(ln for ln in f if " %d " % os.getpid() in ln)
    except FileNotFoundError:
        return ""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    hs = [("Content-Type", "text/plain"), ("X-Worker-Pid", str(os.getpid()))]
    if path == "/block":
        time.sleep(30)
        start_response("200 OK", hs)
        return [b"woke up\n"]
    if path == "/status":
        code = int(environ["QUERY_STRING"].partition("code=")[2] or 200)
        start_response("%d Status" % code, hs)
        return [b"status %d\n" % code]
    if path == "/":
        start_response("200 OK", hs)
        return [_mine().encode()]
    start_response("404 Not Found", hs)
    return [b"not found\n"]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return              # no lifespan support: the runtime carries on without it
    path = scope["path"]
    if path == "/loop":
        body = str(id(asyncio.get_running_loop())).encode()
    elif path == "/":
        body = _mine().encode()
    else:
        body = b"not found\n"
    await send({"type": "http.response.start", "status": 404 if body == b"not found\n" else 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"x-worker-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": body})
