# CPU-bound ASGI app for tools/bench/pyconc.sh (issue 5): the same ~2 ms of pure-Python work
# as cpu_app.py (same work(), same CPU_ITERS, same body), run inside the async handler, so
# it blocks the worker's event loop for its whole duration. Handles lifespan.
# Answers 200, text/plain, "cpu NNNNN\n".
from cpu_app import ITERS, BODY, work

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b"cpu %05d\n" % work(ITERS)
    await send(START)
    await send({"type": "http.response.body", "body": body})
