"""In-process cost of the Python runtime per request, without sockets.

Feeds pre-encoded REQUEST frames (as the master encodes them, wrk-like
headers) through the worker's decoder and request handler into its encoder,
and prints microseconds per request. Run with Debian's python3:

    /usr/bin/python3 tools/bench/pyworker_micro.py [wsgi|asgi|asgi-alone] [N]

APP=module:var (found in tools/bench/apps, e.g. APP=fastapi_hello:app) runs
that ASGI app instead of the built-in hello. asgi-alone calls the app
directly with a fixed scope in one task, without the runtime: the
framework's own cost, to subtract from asgi's.

What it leaves out (the socket syscalls and the master) is measured by
tools/bench/pybench.sh; this isolates the interpreter's share. ONCE=1 runs
one pass of N requests and prints nothing (tools/bench/pyworker_ir.sh counts
its instructions under callgrind, which unlike the timing is repeatable).
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "workerlib", "python"))

import msgpack  # noqa: E402

from gateway_runtime import _proto  # noqa: E402


def request_frame(sid):
    m = {"method": "GET", "target": b"/", "path": b"/", "query": b"",
         "http_minor": 1,
         "headers": [[b"Host", b"127.0.0.1:8000"]],
         "peer": "127.0.0.1:40000", "server": "127.0.0.1:8000",
         "scheme": "http", "content_length": 0, "keepalive": True}
    p = msgpack.packb(m, use_bin_type=True)
    return _proto.HDR.pack(1, _proto.REQUEST, _proto.F_END, sid, len(p)) + p


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", "13")])
    return [b"Hello, World!"]


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


class FakeSock(object):
    def send(self, data):
        return len(data)

    def sendall(self, data):
        pass

    def fileno(self):
        return -1


class FakeBoot(object):
    def __init__(self):
        from gateway_runtime import _hooks
        self.sock = FakeSock()
        self.enc = _proto.Encoder()
        self.window = 262144
        self.heartbeat_s = 0
        self.slot = 0
        self.rbuf = bytearray()
        self.config = _hooks.Config()
        self.winfo = _hooks.WorkerInfo(0)


def bench_wsgi_only(n, batch=32):
    from gateway_runtime._wsgi import WsgiWorker
    w = WsgiWorker(FakeBoot(), wsgi_app)
    w.flush = lambda: w.enc.take()
    frames = [bytes(b"".join(request_frame(s + i) for i in range(batch)))
              for s in range(1, n + 1, batch)]
    t0 = time.perf_counter()
    for f in frames:
        buf = bytearray(f)
        for fr in _proto.codec.decode(buf, _proto.Malformed):
            w.on_frame(fr)
        q = w.queue
        while q:
            w.handle(q.pop(0))
        w.enc.take()
    return (time.perf_counter() - t0) / (len(frames) * batch)


def bench_asgi_only(n, batch=32):
    import asyncio
    from gateway_runtime._asgi import AsgiWorker
    w = AsgiWorker(FakeBoot(), asgi_app)
    loop = asyncio.new_event_loop()
    try:
        import uvloop
        if os.environ.get("GATEWAY_LOOP", "auto") != "asyncio":
            loop = uvloop.new_event_loop()
    except ImportError:
        pass
    w.loop = loop
    frames = [bytes(b"".join(request_frame(s + i) for i in range(batch)))
              for s in range(1, n + 1, batch)]

    def feed(f):        # as the reader callback does: outside any task
        buf = bytearray(f)
        for fr in _proto.codec.decode(buf, _proto.Malformed):
            w.on_frame(fr)

    async def drive():
        for f in frames:
            loop.call_soon(feed, f)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        w.retire_runners()
        await asyncio.sleep(0)
    t0 = time.perf_counter()
    loop.run_until_complete(drive())
    return (time.perf_counter() - t0) / (len(frames) * batch)


def bench_asgi_alone(n):
    import asyncio
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8000")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    async def drive():
        t0 = time.perf_counter()
        for _ in range(n):
            s = dict(scope, state={}, extensions={})
            await asgi_app(s, receive, send)
        return (time.perf_counter() - t0) / n
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    return loop.run_until_complete(drive())


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "wsgi"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    if os.environ.get("APP"):
        import importlib
        sys.path.insert(0, os.path.join(HERE, "apps"))
        mod, _, var = os.environ["APP"].partition(":")
        globals()["asgi_app"] = getattr(importlib.import_module(mod), var or "app")
    fn = {"asgi": bench_asgi_only, "asgi-alone": bench_asgi_alone}.get(
        kind, bench_wsgi_only)
    if os.environ.get("ONCE"):
        fn(n)           # one pass, no timing: for pyworker_ir.sh (callgrind)
        sys.exit(0)
    fn(n // 10)
    best = min(fn(n) for _ in range(3))
    print("%s%s (codec %s): %.2f us per request (in-process, no sockets)"
          % (kind, " " + os.environ["APP"] if os.environ.get("APP") else "",
             _proto.codec.name, best * 1e6))
