# CPU-bound ASGI app for tools/bench/pyconc.sh (issue 5): the same ~2 ms of pure-Python work
# as cpu_app.py (same work(), same CPU_ITERS, same body), run inside the async handler, so
# it blocks the worker's event loop for its whole duration. Handles lifespan.
# Answers 200, text/plain, "cpu NNNNN\n".
from asgi_common import lifespan, text_start
from cpu_app import ITERS, BODY, work

START = text_start(BODY)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    body = b"cpu %05d\n" % work(ITERS)
    await send(START)
    await send({"type": "http.response.body", "body": body})
