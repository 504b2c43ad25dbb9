# I/O-bound ASGI app for tools/bench/pyconc.sh (issue 5): every request waits 20 ms in
# `await asyncio.sleep(0.02)`, the ASGI twin of io_app.py. Handles lifespan.
# Answers 200, text/plain, "io ok\n" (6 bytes, with Content-Length).
import asyncio

WAIT = 0.02
BODY = b"io ok\n"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}
BODY_MSG = {"type": "http.response.body", "body": BODY}


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
    await asyncio.sleep(WAIT)
    await send(START)
    await send(BODY_MSG)
