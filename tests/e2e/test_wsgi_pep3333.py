"""
The Python runtime's WSGI worker against PEP 3333, with a raw WSGI app
(apps/pep3333_app.py): the environ's required keys and their types,
wsgi.input (read(n), read(), readline, readlines, iteration, a chunked
upload, a body larger than the flow-control window read as it arrives),
wsgi.errors into the gateway's log, start_response's exc_info rules, the
write() callable, close() on the returned iterable (normal end, an error in
the iteration, a client that goes away), wsgi.file_wrapper, and a generator
streamed to the client chunk by chunk.

The app reports through files in $GW_TEST_DIR (the tmp_dir fixture).
"""
import hashlib
import json
import os
import random

import pytest

from gwharness import build_request, env_for, read_gated_stream, read_lines, wait_lines

APP = "py:pep3333_app:app"


def chunked(data, sizes):
    """data in HTTP/1.1 chunked framing, chunk sizes drawn from sizes."""
    out = []
    i = 0
    while i < len(data):
        n = sizes()
        p = data[i:i + n]
        out.append(b"%x\r\n%s\r\n" % (len(p), p))
        i += n
    return b"".join(out) + b"0\r\n\r\n"


def post(gw, target, body, headers=(), timeout=10):
    c = gw.connect(timeout=timeout)
    try:
        c.send(build_request("POST", target, headers=list(headers), body=body))
        r = c.read_response()
    finally:
        c.close()
    assert r.status == 200, r
    return json.loads(r.body)


def test_environ_required_keys(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    c = gw.connect()
    host = "127.0.0.1:%d" % gw.port
    c.send(build_request("POST", "/environ/caf%C3%A9/a%2Fb?x=1&y=%C3%A9+z", host=host,
                         headers=[("Content-Type", "text/x-test; charset=utf-8"),
                                  ("X-Dup", "a"), ("X-Other", "o"), ("X-Dup", "b"),
                                  ("Accept", "*/*")],
                         body=b"hello"))
    r = c.read_response()
    assert r.status == 200, r
    e = json.loads(r.body)
    bad = {k: v for k, v in e.items() if isinstance(v, str) and v.startswith("NOT-A-STR")}
    assert not bad, "CGI and HTTP_ environ values must be native strings: %r" % bad
    assert e["REQUEST_METHOD"] == "POST", e
    assert e["SCRIPT_NAME"] == "", e
    # percent-decoded bytes, decoded as latin-1 (%2F decoded too, as in CGI)
    assert e["PATH_INFO"] == "/environ/caf\xc3\xa9/a/b", e
    assert e["QUERY_STRING"] == "x=1&y=%C3%A9+z", e
    assert e["CONTENT_TYPE"] == "text/x-test; charset=utf-8", e
    assert e["CONTENT_LENGTH"] == "5", e
    assert "HTTP_CONTENT_TYPE" not in e and "HTTP_CONTENT_LENGTH" not in e, e
    assert e["SERVER_NAME"] == "127.0.0.1" and e["SERVER_PORT"] == str(gw.port), e
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1", e
    assert e["HTTP_HOST"] == host and e["HTTP_ACCEPT"] == "*/*", e
    assert e["HTTP_X_DUP"] == "a,b" and e["HTTP_X_OTHER"] == "o", e
    assert e["REMOTE_ADDR"] == "127.0.0.1", e
    w = e["wsgi"]
    assert w["version"] == [1, 0] and w["version_type"] == "tuple", w
    assert w["url_scheme"] == "http", w
    assert w["input_methods"] == ["read", "readline", "readlines", "__iter__"], w
    assert w["errors_methods"] == ["write", "writelines", "flush"], w
    assert w["bool_types"] == ["bool"], w
    assert w["multithread"] is False and w["multiprocess"] is True, w
    assert w["run_once"] is False and w["file_wrapper"] is True, w
    # no body: CONTENT_LENGTH empty or absent; HTTP/1.0 is reported as such
    c.send(build_request("GET", "/environ", host=host, version="HTTP/1.0"))
    e = json.loads(c.read_response().body)
    assert e.get("CONTENT_LENGTH", "") == "" and e["PATH_INFO"] == "/environ", e
    assert e["QUERY_STRING"] == "" and e["SERVER_PROTOCOL"] == "HTTP/1.0", e
    c.close()


def test_input_read_in_pieces(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    body = os.urandom(600 * 1024 + 77)     # more than two flow-control windows
    got = post(gw, "/read?n=1000", body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest() and got["length"] == len(body)
    sizes = got["sizes"]
    assert sizes[:-1] == [1000] * (len(sizes) - 1) and sizes[-1] == len(body) % 1000, \
        "read(1000) must return exactly 1000 bytes until the end"
    got = post(gw, "/read-all", body)
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body),
                   "after_end": 0}, got


def _lines_body():
    rnd = random.Random(3333)
    lines = []
    for i in range(4000):
        n = rnd.choice((0, 1, 5, 80, 300, 4000)) if i % 500 else 100000
        lines.append(bytes(rnd.choice(b"abcdefghij") for _ in range(min(n, 50))) *
                     (n // 50 + 1))
    lines = [ln[:rnd.randint(0, len(ln))] + b"\n" for ln in lines]
    return lines, b"".join(lines) + b"last line without a newline"


@pytest.mark.parametrize("how", ["readline", "readline-size", "readlines", "iter"])
def test_input_line_reading(gateway, tmp_dir, how):
    lines, body = _lines_body()
    assert len(body) > 512 * 1024
    expect = [len(x) for x in lines] + [len(b"last line without a newline")]
    target = {"readline": "/readline", "readline-size": "/readline?size=7",
              "readlines": "/readlines", "iter": "/iter"}[how]
    if how == "readline-size":
        expect = [min(7, n - i) for n in expect for i in range(0, n, 7)]
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    got = post(gw, target, body)
    assert got["types"] == ["bytes"], got["types"]
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["count"] == len(expect) and got["lengths"] == expect


def test_input_chunked_upload(gateway, tmp_dir):
    """A 6 MiB Transfer-Encoding: chunked upload, chunk sizes from 1 byte to
    200 KiB, read with read(65536) until b""; echoed back as a hash."""
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    body = os.urandom(6 << 20)
    rnd = random.Random(7)
    wire = chunked(body, lambda: rnd.choice((1, 100, 4096, 65536, 200 * 1024)))
    got = post(gw, "/read?n=65536", wire, headers=[("Transfer-Encoding", "chunked")],
               timeout=20)
    assert got["sha256"] == hashlib.sha256(body).hexdigest() and got["length"] == len(body)
    assert all(s == 65536 for s in got["sizes"][:-1]), "read(n) must fill n while data remains"
    # the environ of a chunked request: no CONTENT_LENGTH
    c = gw.connect()
    c.send(build_request("POST", "/environ", headers=[("Transfer-Encoding", "chunked")],
                         body=b"5\r\nhello\r\n0\r\n\r\n"))
    e = json.loads(c.read_response().body)
    assert e.get("CONTENT_LENGTH", "") == "" and "HTTP_TRANSFER_ENCODING" in e, e
    c.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_input_streams_body_larger_than_window(gateway, tmp_dir, framing):
    """The app reads a 3 MiB body while it arrives: it has its first piece
    while the client still holds back everything after the first 300 KiB."""
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    body = os.urandom(3 << 20)
    first, rest = body[:300 * 1024], body[300 * 1024:]
    c = gw.connect(timeout=10)
    if framing == "chunked":
        c.send(build_request("POST", "/incremental", headers=[("Transfer-Encoding", "chunked")])
               + chunked(first, lambda: 50000)[:-5])
        wait_lines(os.path.join(tmp_dir, "input-first"))
        c.send(chunked(rest, lambda: 50000))
    else:
        c.send(build_request("POST", "/incremental",
                             headers=[("Content-Length", str(len(body)))]) + first)
        wait_lines(os.path.join(tmp_dir, "input-first"))
        c.send(rest)
    r = c.read_response()
    c.close()
    assert r.status == 200, r
    got = json.loads(r.body)
    assert got == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}, got


def test_wsgi_errors_in_gateway_log(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    mark = gw.log_mark()
    r = gw.get("/errors?tag=t42")
    assert r.status == 200, r
    gw.wait_log(r"pep3333 wsgi\.errors write t42$", since=mark)
    gw.wait_log(r"pep3333 wsgi\.errors writelines t42 a$", since=mark)
    gw.wait_log(r"pep3333 wsgi\.errors writelines t42 b$", since=mark)


def test_start_response_exc_info_before_headers_replaces_status(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r = gw.get("/exc-before")
    assert r.status == 503, r
    assert r.header_all("X-Phase") == ["replaced"], r.headers
    assert r.body == b"replaced by the error page\n", r


@pytest.mark.allow_log(r"failed after the body started|error handling")
def test_start_response_exc_info_after_body_started_reraises(gateway, tmp_dir):
    """Once the first body chunk was yielded, start_response(..., exc_info)
    re-raises; the worker cannot change the status any more, so the client's
    response is cut short (no last chunk) and the error is logged."""
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    mark = gw.log_mark()
    c = gw.connect()
    c.send(build_request("GET", "/exc-after"))
    version, status, reason, headers = c.read_head()
    assert status == 200, (status, headers)
    assert dict((k.lower(), v) for k, v in headers).get("transfer-encoding") == "chunked"
    rest = c.read_to_eof()      # the gateway must close: the response cannot complete
    c.close()
    assert b"first chunk of a 200\n" in rest, rest
    assert not rest.endswith(b"0\r\n\r\n"), "the cut response ended like a complete one"
    assert b"an error page" not in rest, rest
    assert read_lines(os.path.join(tmp_dir, "exc-after.log")) == \
        ["re-raised failed after the body started"]
    gw.wait_log(r"^ValueError: failed after the body started$", since=mark)
    r = gw.get("/pid")
    assert r.status == 200 and json.loads(r.body)["pid"] == pid, r


def test_write_callable(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r = gw.get("/write")
    assert r.status == 200, r
    assert r.body == b"written 1\nwritten 2\nreturned 3\n", r


def test_iterable_close_after_normal_end(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r = gw.get("/close?tag=ok&mode=ok")
    assert r.status == 200 and r.body == b"part 1\npart 2\npart 3\n", r
    assert wait_lines(os.path.join(tmp_dir, "close.log")) == ["closed ok 3"]


@pytest.mark.allow_log(r"intentional failure inside the iterable|error handling")
def test_iterable_close_when_iteration_raises(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    mark = gw.log_mark()
    r = gw.get("/close?tag=raise&mode=raise")
    assert r.status == 500, r
    assert wait_lines(os.path.join(tmp_dir, "close.log")) == ["closed raise 0"]
    gw.wait_log(r"^RuntimeError: intentional failure inside the iterable$", since=mark)
    r = gw.get("/pid")
    assert r.status == 200 and json.loads(r.body)["pid"] == pid, r


def test_iterable_close_when_client_disconnects(gateway, tmp_dir):
    """The app would send 256 MiB; the client reads a little and hangs up.
    The worker stops iterating, calls close(), and serves the next request."""
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    c = gw.connect()
    c.send(build_request("GET", "/close?tag=gone&mode=endless"))
    c.read_head()
    c.read_until(b"x" * 1000)
    c.close()
    lines = wait_lines(os.path.join(tmp_dir, "close.log"), timeout=10)
    assert len(lines) == 1 and lines[0].startswith("closed gone "), lines
    n = int(lines[0].split()[2])
    assert 1 <= n < 4096, "the worker kept iterating after the client left: %r" % lines
    r = gw.get("/pid")
    assert r.status == 200 and json.loads(r.body)["pid"] == pid, r


def test_file_wrapper(gateway, tmp_dir):
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    data = os.urandom((1 << 20) + 123)
    p = os.path.join(tmp_dir, "blob.bin")
    with open(p, "wb") as f:
        f.write(data)
    r = gw.get("/file?path=" + p, timeout=10)
    assert r.status == 200, r
    assert r.header("Content-Length") == str(len(data)), r.headers
    assert len(r.body) == len(data) and r.body == data


def test_generator_streamed_chunk_by_chunk(gateway, tmp_dir):
    """PEP 3333 'Buffering and Streaming': a block the app yields reaches
    the client before the app produces the next one. The app yields chunk
    0, then waits for a file the test creates after reading chunk 0."""
    gw = gateway(APP, workers=1, env=env_for(tmp_dir))
    r, seen = read_gated_stream(gw, "/stream-wait", os.path.join(tmp_dir, "stream-go"))
    assert r.status == 200 and r.body == b"chunk 0\nchunk 1\nchunk 2\n", r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r.headers
    assert seen[0] == b"chunk 0\n", seen
    assert read_lines(os.path.join(tmp_dir, "stream.log")) == ["go seen True"]
