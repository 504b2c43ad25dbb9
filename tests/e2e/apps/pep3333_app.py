"""A raw WSGI app (PEP 3333, no framework) for tests/e2e/test_wsgi_pep3333.py.

Side channel: the directory in $GW_TEST_DIR (files the tests poll).

    /environ...        the environ as JSON: CGI keys as strings, wsgi.* described
    /read?n=N          the body by wsgi.input.read(N) until b"": sha256, length,
                       the size of every piece
    /read-all          wsgi.input.read() in one call
    /readline?size=S   the body by readline() (readline(S) when given)
    /readlines         the body by readlines()
    /iter              the body by iterating wsgi.input
    /incremental       reads 64 KiB pieces; creates input-first after the
                       first one; answers sha256 and length
    /errors?tag=T      writes lines to wsgi.errors (write, writelines, flush)
    /exc-before        start_response 200, then on an error start_response again
                       with exc_info before any body: the client gets the 500
    /exc-after         a generator: one body chunk, then start_response with
                       exc_info, which must raise (recorded in exc-after.log)
    /write             body through the write() callable, then the iterable
    /close?tag=T&mode= an iterable whose close() appends "closed T N" to
                       close.log (N = chunks produced); mode: ok (3 chunks),
                       raise (raises before the first chunk), endless (64 KiB
                       chunks until the client is gone; at most 4096)
    /file?path=P       wsgi.file_wrapper over the file P
    /stream-wait       yields chunk 0, waits (up to 10 s) for the file
                       stream-go, yields chunks 1 and 2
"""
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs


def _dir():
    return os.environ["GW_TEST_DIR"]


def _append(name, line):
    with open(os.path.join(_dir(), name), "a") as f:
        f.write(line + "\n")


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))),
                            ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def _describe(environ):
    out = {}
    for k, v in environ.items():
        if "." in k:
            continue    # wsgi.* (below) and server extensions (any type)
        out[k] = v if isinstance(v, str) else "NOT-A-STR %r" % (v,)
    inp = environ["wsgi.input"]
    err = environ["wsgi.errors"]
    out["wsgi"] = {
        "version": list(environ["wsgi.version"]),
        "version_type": type(environ["wsgi.version"]).__name__,
        "url_scheme": environ["wsgi.url_scheme"],
        "input_methods": [m for m in ("read", "readline", "readlines", "__iter__")
                          if callable(getattr(inp, m, None))],
        "errors_methods": [m for m in ("write", "writelines", "flush")
                           if callable(getattr(err, m, None))],
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "run_once": environ["wsgi.run_once"],
        "file_wrapper": callable(environ.get("wsgi.file_wrapper")),
    }
    out["wsgi"]["bool_types"] = sorted({type(environ[k]).__name__ for k in
                                        ("wsgi.multithread", "wsgi.multiprocess",
                                         "wsgi.run_once")})
    return out


class Closing(object):
    """An iterable that records when close() is called."""

    def __init__(self, tag, mode):
        self.tag = tag
        self.mode = mode
        self.n = 0

    def __iter__(self):
        if self.mode == "raise":
            raise RuntimeError("intentional failure inside the iterable")
        limit = 3 if self.mode == "ok" else 4096
        while self.n < limit:
            self.n += 1
            yield (b"x" * 65536) if self.mode == "endless" else (b"part %d\n" % self.n)

    def close(self):
        _append("close.log", "closed %s %d" % (self.tag, self.n))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = dict((k, v[0]) for k, v in parse_qs(environ.get("QUERY_STRING", "")).items())
    inp = environ["wsgi.input"]

    if path.startswith("/environ"):
        return _json(start_response, _describe(environ))

    if path == "/read":
        n = int(q.get("n", "1000"))
        h = hashlib.sha256()
        sizes = []
        while True:
            piece = inp.read(n)
            if not piece:
                break
            sizes.append(len(piece))
            h.update(piece)
        return _json(start_response, {"sha256": h.hexdigest(), "length": sum(sizes),
                                      "sizes": sizes})

    if path == "/read-all":
        data = inp.read()
        more = inp.read()
        return _json(start_response, {"sha256": hashlib.sha256(data).hexdigest(),
                                      "length": len(data), "after_end": len(more)})

    if path in ("/readline", "/readlines", "/iter"):
        if path == "/readline":
            size = int(q["size"]) if "size" in q else None
            lines = []
            while True:
                line = inp.readline(size) if size is not None else inp.readline()
                if not line:
                    break
                lines.append(line)
        elif path == "/readlines":
            lines = inp.readlines()
        else:
            lines = [line for line in inp]
        return _json(start_response, {
            "count": len(lines), "lengths": [len(x) for x in lines],
            "sha256": hashlib.sha256(b"".join(lines)).hexdigest(),
            "types": sorted({type(x).__name__ for x in lines})})

    if path == "/incremental":
        h = hashlib.sha256()
        n = 0
        while True:
            piece = inp.read(65536)
            if not piece:
                break
            if n == 0:
                _append("input-first", "first %d" % len(piece))
            n += len(piece)
            h.update(piece)
        return _json(start_response, {"sha256": h.hexdigest(), "length": n})

    if path == "/errors":
        err = environ["wsgi.errors"]
        tag = q.get("tag", "none")
        err.write("pep3333 wsgi.errors write %s\n" % tag)
        err.writelines(["pep3333 wsgi.errors writelines %s a\n" % tag,
                        "pep3333 wsgi.errors writelines %s b\n" % tag])
        err.flush()
        return _json(start_response, {"ok": True})

    if path == "/exc-before":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Phase", "first")])
        try:
            raise ValueError("failed after start_response")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"),
                                                        ("X-Phase", "replaced")],
                           sys.exc_info())
        return [b"replaced by the error page\n"]

    if path == "/exc-after":
        def gen():
            yield b"first chunk of a 200\n"
            try:
                raise ValueError("failed after the body started")
            except ValueError:
                try:
                    start_response("500 Internal Server Error",
                                   [("Content-Type", "text/plain")], sys.exc_info())
                except ValueError as e:
                    _append("exc-after.log", "re-raised %s" % e)
                    raise
                _append("exc-after.log", "start_response returned")
            yield b"an error page that must never be sent\n"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written 1\n")
        write(b"written 2\n")
        return [b"returned 3\n"]

    if path == "/close":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("X-Worker-Pid", str(os.getpid()))])
        return Closing(q.get("tag", "none"), q.get("mode", "ok"))

    if path == "/file":
        p = q["path"]
        size = os.path.getsize(p)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        f = open(p, "rb")
        return environ["wsgi.file_wrapper"](f, 32768)

    if path == "/stream-wait":
        def gen():
            yield b"chunk 0\n"
            flag = os.path.join(_dir(), "stream-go")
            deadline = time.monotonic() + 10
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.01)
            _append("stream.log", "go seen %s" % os.path.exists(flag))
            yield b"chunk 1\n"
            yield b"chunk 2\n"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Worker-Pid", str(os.getpid()))])
        return gen()

    if path == "/pid":
        return _json(start_response, {"pid": os.getpid()})

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
