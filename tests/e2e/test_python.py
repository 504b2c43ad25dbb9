"""
The Python runtime, first slice: unmodified raw WSGI apps run in workers that
exec Debian's /usr/bin/python3 and speak PROTOCOL.md on fd 3.
"""
import hashlib
import os
import subprocess

import pytest

from gwharness import GATEWAY, build_request, env_for, worker_pid

ENV = env_for()


def test_wsgi_hello_two_workers(gateway):
    gw = gateway("py:wsgi_app:app", workers=2, env=ENV)
    pids = set(gw.wait_workers(2))
    seen = set()
    for _ in range(8):
        r = gw.get("/")
        assert r.status == 200 and r.body == b"Hello, World!", r
        seen.add(worker_pid(r))
    assert seen == pids, (seen, pids)
    assert "runtime python" in gw.log_text()


def test_wsgi_environ_and_body(gateway):
    gw = gateway("py:wsgi_app:app", workers=1, env=ENV)
    c = gw.connect()
    body = os.urandom(300 * 1024)      # more than one flow-control window
    c.send(build_request("POST", "/echo?a=1&b=%C3%A9", headers=[("X-Test", "v1"),
                                                                ("Content-Type", "app/x")],
                         body=body))
    r = c.read_response()
    assert r.status == 200, r
    head, _, echoed = r.body.partition(b"\n\n")
    env = dict(ln.split(": ", 1) for ln in head.decode("latin-1").splitlines())
    assert env["REQUEST_METHOD"] == "POST" and env["PATH_INFO"] == "/echo", env
    assert env["QUERY_STRING"] == "a=1&b=%C3%A9" and env["HTTP_X_TEST"] == "v1", env
    assert env["CONTENT_TYPE"] == "app/x" and env["CONTENT_LENGTH"] == str(len(body)), env
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["wsgi.url_scheme"] == "http", env
    assert env["REMOTE_ADDR"] == "127.0.0.1", env
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(body).digest()
    c.close()


def test_wsgi_streaming_and_error_keeps_worker(gateway):
    gw = gateway("py:wsgi_app:app", workers=1, env=ENV)
    pid = gw.wait_workers(1)[0]
    r = gw.get("/stream")
    assert r.status == 200 and r.body == b"chunk 0\nchunk 1\nchunk 2\n", r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r.headers
    r = gw.get("/error")
    assert r.status == 500, r
    r = gw.get("/")
    assert r.status == 200 and worker_pid(r) == pid, "the worker must survive an app error"


@pytest.mark.allow_log(r"Traceback|^  |^ValueError|error handling GET /badheader")
def test_wsgi_header_the_master_would_refuse_is_500(gateway):
    """PEP 3333: errors in the headers go to the app. A header with a control
    byte in its value, or a name that is not a token, gives 500 with the
    header named in the error log (not a 502 from the master), and the worker
    keeps serving."""
    gw = gateway("py:wsgi_app:app", workers=1, env=ENV)
    pid = gw.wait_workers(1)[0]
    for q, why in (("ctl", r"invalid response header b'X-Bad': control byte"),
                   ("name", r"invalid response header name b'X Bad'")):
        r = gw.get("/badheader?" + q)
        assert r.status == 500 and b"never sent" not in r.body, r
        gw.wait_log(why)
    r = gw.get("/")
    assert r.status == 200 and worker_pid(r) == pid, r
    assert "bad response" not in gw.log_text()


def test_python_import_errors_are_one_line(tmp_dir):
    for spec, needle in (("no_such_module_xyz:app", "cannot import no_such_module_xyz"),
                         ("wsgi_app:nope", "has no attribute 'nope'")):
        p = subprocess.run([GATEWAY, "-b", "127.0.0.1:0", spec], capture_output=True, text=True,
                           timeout=20, env=dict(os.environ, **ENV), cwd=tmp_dir)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode != 0 and len(lines) == 1 and needle in lines[0], p.stderr


def test_flask_unmodified(gateway):
    """A plain Flask app (Debian's python3-flask) under the gateway: routing,
    JSON, multipart upload, session cookie across a redirect, a streamed
    generator response, and a 500 after which the worker still serves."""
    import json
    gw = gateway("py:flask_app:app", workers=2, env=ENV)
    pids = set(gw.wait_workers(2))
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!" and worker_pid(r) in pids, r
    r = gw.get("/user/bob?q=1")
    assert r.status == 200 and json.loads(r.body)["name"] == "bob", r
    c = gw.connect()
    payload = json.dumps({"items": list(range(1000))}).encode()
    c.send(build_request("POST", "/json", headers=[("Content-Type", "application/json")],
                         body=payload))
    r = c.read_response()
    assert r.status == 200 and json.loads(r.body)["n"] == 1000, r
    blob = os.urandom(200 * 1024)
    boundary = "gwboundary"
    form = (("--%s\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nv\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n" % (boundary, boundary)).encode()
            + blob + ("\r\n--%s--\r\n" % boundary).encode())
    c.send(build_request("POST", "/form", headers=[
        ("Content-Type", "multipart/form-data; boundary=" + boundary)], body=form))
    r = c.read_response()
    assert r.status == 200 and json.loads(r.body) == {"field": "v", "filename": "a.bin",
                                                       "size": len(blob)}, r
    c.send(build_request("GET", "/login?u=ann"))
    r = c.read_response()
    assert r.status == 302, r
    cookies = "; ".join(v.split(";", 1)[0] for v in r.header_all("Set-Cookie"))
    c.send(build_request("GET", "/whoami", headers=[("Cookie", cookies)]))
    r = c.read_response()
    assert json.loads(r.body) == {"user": "ann", "seen": "1"}, r
    c.send(build_request("GET", "/stream"))
    r = c.read_response()
    assert r.body == b"part 0\npart 1\npart 2\n", r
    c.close()
    r = gw.get("/boom")
    assert r.status == 500, r
    assert gw.get("/").status == 200
    assert set(gw.worker_pids()) == pids, "an app error must not cost a worker"
