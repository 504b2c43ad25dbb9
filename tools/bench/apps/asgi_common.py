# What the ASGI bench apps of tools/bench/pyconc.sh (cpu_asgi.py, io_asgi.py) share. A
# sibling module: every server there runs with tools/bench/apps on sys.path.


def text_start(body):
    """http.response.start for a text/plain body of that length."""
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    }


async def lifespan(receive, send):
    """The lifespan protocol, with nothing to start or stop."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
