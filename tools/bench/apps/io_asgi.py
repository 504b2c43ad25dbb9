# I/O-bound ASGI app for tools/bench/pyconc.sh (issue 5): every request waits 20 ms in
# `await asyncio.sleep(0.02)`, the ASGI twin of io_app.py. Handles lifespan.
# Answers 200, text/plain, "io ok\n" (6 bytes, with Content-Length).
import asyncio

from asgi_common import lifespan, text_start

WAIT = 0.02
BODY = b"io ok\n"
START = text_start(BODY)
BODY_MSG = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    await asyncio.sleep(WAIT)
    await send(START)
    await send(BODY_MSG)
