"""A tiny raw WSGI app for the Python worker tests (no framework).

    /        200 text/plain "Hello, World!" with X-Worker-Pid
    /echo    method, path, query, selected environ keys and the body
    /stream  a generator yielding 3 chunks
    /error   raises an exception (the worker answers 500)
    /badheader?ctl|name  a header the master would refuse: a control byte in
             its value, or a name that is not a token (the worker answers 500)
"""
import os

ECHO_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
             "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
             "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST",
             "HTTP_X_TEST", "wsgi.url_scheme", "wsgi.multithread",
             "wsgi.multiprocess", "wsgi.run_once")


def _stream():
    for i in range(3):
        yield ("chunk %d\n" % i).encode()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    pid = str(os.getpid())
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Worker-Pid", pid)])
        return [b"Hello, World!"]
    if path == "/echo":
        n = environ.get("CONTENT_LENGTH") or "0"
        body = environ["wsgi.input"].read(int(n)) if n != "0" else b""
        lines = ["%s: %s" % (k, environ.get(k, "")) for k in ECHO_KEYS]
        out = ("\n".join(lines) + "\nbody-length: %d\n\n" % len(body)).encode(
            "latin-1") + body
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Worker-Pid", pid)])
        return [out]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Worker-Pid", pid)])
        return _stream()
    if path == "/error":
        raise RuntimeError("intentional error from /error")
    if path == "/badheader":
        bad = (("X Bad", "v") if environ["QUERY_STRING"] == "name"
               else ("X-Bad", "a\x01b"))
        start_response("200 OK", [("Content-Type", "text/plain"), bad])
        return [b"never sent"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not Found\n"]
