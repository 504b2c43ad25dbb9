"""A raw ASGI 3 app (no framework) for tests/e2e/test_asgi.py.

Side channel: the directory in $GW_TEST_DIR (files the tests poll).

    lifespan        appends "startup PID TIME" / "shutdown PID" to lifespan.log;
                    with $ASGI_FAIL_STARTUP set, answers
                    lifespan.startup.failed with that text as the message
    /scope          the http scope as JSON (bytes as latin-1 strings)
    /pid            the worker's pid
    /upload         reads the body with receive(); creates upload-first once
                    the first chunk is in; answers the sha256, length and
                    number of http.request messages
    /disconnect     reads the body until receive() says http.disconnect and
                    records it in disconnect.log ("disconnect after N bytes");
                    creates disconnect-first when the first bytes are in
    /stream?n=N     N chunks with more_body=True then an empty last one; after
                    chunk 0 waits (up to 10 s) for the file stream-go
    /boom           raises (the worker answers 500)
    /sleep          awaits asyncio.sleep(10); records a CancelledError in
                    cancelled.log
    /task?v=V&ms=M  sets a ContextVar to V, sleeps M ms, answers JSON: the
                    var at entry (must be unset) and after the sleep, whether
                    asyncio.current_task() stayed the same task, its id
    /anyio          an anyio cancel scope and a task group across waits
    /selfcancel     cancels its own task, then waits (?catch=1: catches the
                    CancelledError and answers 200)
    /badheader[?ctl|?name]  a header value that is not bytes, one with a
                    control byte, a name that is not a token (500 each)
    /bgtask?ms=M    starts a background task (asyncio) sleeping M ms
"""
import contextvars
import asyncio
import hashlib
import json
import os
import time


def _dir():
    return os.environ["GW_TEST_DIR"]


def _append(name, line):
    with open(os.path.join(_dir(), name), "a") as f:
        f.write(line + "\n")


def _s(b):
    return b.decode("latin-1") if isinstance(b, (bytes, bytearray)) else b


async def _respond(send, status, body, headers=()):
    hs = [(b"content-type", b"application/json" if body[:1] in (b"{", b"[")
           else b"text/plain"),
          (b"x-worker-pid", str(os.getpid()).encode())] + list(headers)
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            fail = os.environ.get("ASGI_FAIL_STARTUP")
            if fail:
                await send({"type": "lifespan.startup.failed", "message": fail})
                return
            _append("lifespan.log", "startup %d %.6f" % (os.getpid(), time.time()))
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            _append("lifespan.log", "shutdown %d" % os.getpid())
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    assert scope["type"] == "http", scope["type"]
    path = scope["path"]

    if path == "/pid":
        return await _respond(send, 200, str(os.getpid()).encode())

    if path.startswith("/scope"):
        out = {
            "type": scope["type"],
            "asgi": scope["asgi"],
            "http_version": scope["http_version"],
            "method": scope["method"],
            "scheme": scope["scheme"],
            "path": scope["path"],
            "path_type": type(scope["path"]).__name__,
            "raw_path": _s(scope["raw_path"]),
            "raw_path_type": type(scope["raw_path"]).__name__,
            "query_string": _s(scope["query_string"]),
            "query_string_type": type(scope["query_string"]).__name__,
            "root_path": scope["root_path"],
            "headers": [[_s(n), _s(v)] for n, v in scope["headers"]],
            "header_types": sorted({"%s,%s" % (type(n).__name__, type(v).__name__)
                                    for n, v in scope["headers"]}),
            "client": list(scope["client"]) if scope.get("client") else None,
            "client_types": [type(x).__name__ for x in scope.get("client") or ()],
            "server": list(scope["server"]) if scope.get("server") else None,
            "server_types": [type(x).__name__ for x in scope.get("server") or ()],
        }
        return await _respond(send, 200, json.dumps(out).encode())

    if path == "/upload":
        h = hashlib.sha256()
        n = msgs = 0
        while True:
            msg = await receive()
            assert msg["type"] == "http.request", msg["type"]
            msgs += 1
            body = msg.get("body", b"")
            if body and n == 0:
                _append("upload-first", "first %d" % len(body))
            n += len(body)
            h.update(body)
            if not msg.get("more_body", False):
                break
        out = {"sha256": h.hexdigest(), "length": n, "messages": msgs}
        return await _respond(send, 200, json.dumps(out).encode())

    if path == "/disconnect":
        n = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                _append("disconnect.log", "disconnect after %d bytes" % n)
                return
            if n == 0 and msg.get("body"):
                _append("disconnect-first", "got %d" % len(msg["body"]))
            n += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                # the whole body came: not what the test sends
                _append("disconnect.log", "complete body %d bytes" % n)
                return await _respond(send, 200, b"complete")

    if path == "/stream":
        n = int(_s(scope["query_string"]).partition("n=")[2] or 3)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"x-worker-pid", str(os.getpid()).encode())]})
        flag = os.path.join(_dir(), "stream-go")
        for i in range(n):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i,
                        "more_body": True})
            if i == 0:
                deadline = time.monotonic() + 10
                while not os.path.exists(flag) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                _append("stream.log", "go seen %s" % os.path.exists(flag))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return

    if path == "/boom":
        raise RuntimeError("intentional ASGI failure in /boom")

    if path == "/sleep":
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            _append("cancelled.log", "CancelledError %d" % os.getpid())
            raise
        _append("cancelled.log", "not cancelled %d" % os.getpid())
        return await _respond(send, 200, b"slept")

    if path == "/task":
        q = dict(p.split("=", 1) for p in _s(scope["query_string"]).split("&") if "=" in p)
        at_start = REQ_VAR.get()
        REQ_VAR.set(q.get("v", ""))
        t0 = asyncio.current_task()
        await asyncio.sleep(int(q.get("ms", "0")) / 1000.0)
        out = {"var_at_start": at_start, "var_at_end": REQ_VAR.get(),
               "task_same": asyncio.current_task() is t0, "task": id(t0)}
        return await _respond(send, 200, json.dumps(out).encode())

    if path == "/anyio":
        import anyio
        with anyio.move_on_after(0.05) as sc:
            await anyio.sleep(5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0.01)
        return await _respond(send, 200, b"cancelled=%s" % str(sc.cancel_called).encode())

    if path == "/selfcancel":
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if b"catch=1" in scope["query_string"]:
                return await _respond(send, 200, b"caught")
            raise
        return await _respond(send, 200, b"not cancelled")

    if path == "/badheader":
        bad = {"ctl": (b"x-bad", b"a\x01b"), "name": (b"x bad", b"v")}.get(
            _s(scope["query_string"]), (b"x-n", 5))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [bad]})
        await send({"type": "http.response.body", "body": b"never"})
        return

    if path == "/bgtask":
        ms = int(_s(scope["query_string"]).partition("ms=")[2] or 0)
        t = asyncio.get_running_loop().create_task(asyncio.sleep(ms / 1000.0))
        BG.add(t)
        t.add_done_callback(BG.discard)
        return await _respond(send, 200, b"started")

    return await _respond(send, 404, b"not found")


REQ_VAR = contextvars.ContextVar("req", default="unset")
BG = set()      # strong references to the background tasks
