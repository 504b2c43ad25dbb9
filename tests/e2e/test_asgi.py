"""
The Python runtime's ASGI 3 worker with a raw ASGI app (apps/asgi_app.py):
the http scope, receive() streaming a large upload and delivering
http.disconnect when the client goes away, a streamed response
(more_body), lifespan startup/shutdown once per worker and a failed startup,
an app exception (500, the worker survives), --timeout cancelling the
request's task, and --interface.

The app reports through files in $GW_TEST_DIR (the tmp_dir fixture).
"""
import hashlib
import json
import os
import re
import time

import pytest

from gwharness import (build_request, env_for, log_time, read_gated_stream, read_lines, run_cli,
                       wait_lines, wait_until, worker_pid)





def test_asgi_scope(gateway, tmp_dir):
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    c = gw.connect()
    c.send(build_request("GET", "/scope/caf%C3%A9%20x?a=1&b=%C3%A9",
                         headers=[("X-Mixed-Case", "Keep This"), ("X-Dup", "1"),
                                  ("X-Dup", "2")]))
    r = c.read_response()
    assert r.status == 200, r
    s = json.loads(r.body)
    assert s["type"] == "http" and s["asgi"]["version"] == "3.0", s
    assert s["http_version"] == "1.1" and s["method"] == "GET" and s["scheme"] == "http", s
    # path is percent-decoded (UTF-8) text, raw_path the bytes as sent, without the query
    assert s["path"] == "/scope/caf\u00e9 x" and s["path_type"] == "str", s
    assert s["raw_path"] == "/scope/caf%C3%A9%20x" and s["raw_path_type"] == "bytes", s
    assert s["query_string"] == "a=1&b=%C3%A9" and s["query_string_type"] == "bytes", s
    assert s["root_path"] == "", s
    # headers: (bytes, bytes) pairs, names lower-cased, values and order kept
    assert s["header_types"] == ["bytes,bytes"], s
    hs = s["headers"]
    assert all(n == n.lower() for n, _ in hs), hs
    assert ["host", "localhost"] in hs and ["x-mixed-case", "Keep This"] in hs, hs
    assert [v for n, v in hs if n == "x-dup"] == ["1", "2"], hs
    # client and server: (host, port) with the real addresses of this connection
    assert s["client"] == ["127.0.0.1", c.sock.getsockname()[1]], s
    assert s["client_types"] == ["str", "int"], s
    assert s["server"] == ["127.0.0.1", gw.port] and s["server_types"] == ["str", "int"], s
    # HTTP/1.0 and another method
    c.send(build_request("POST", "/scope", body=b"x", version="HTTP/1.0"))
    r = c.read_response()
    s = json.loads(r.body)
    assert s["http_version"] == "1.0" and s["method"] == "POST", s
    assert s["path"] == "/scope" and s["query_string"] == "", s
    c.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_asgi_receive_streams_large_upload(gateway, tmp_dir, framing):
    """A 4 MiB upload reaches the app in several http.request messages, and
    the first arrives while most of the body has not been sent yet."""
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    body = os.urandom(4 << 20)
    first, rest = body[:300 * 1024], body[300 * 1024:]
    c = gw.connect(timeout=10)
    if framing == "chunked":
        c.send(build_request("POST", "/upload", headers=[("Transfer-Encoding", "chunked")]))

        def piece(data):
            out = b""
            for i in range(0, len(data), 100000):
                p = data[i:i + 100000]
                out += b"%x\r\n%s\r\n" % (len(p), p)
            return out
        c.send(piece(first))
        wait_lines(os.path.join(tmp_dir, "upload-first"))
        c.send(piece(rest) + b"0\r\n\r\n")
    else:
        c.send(build_request("POST", "/upload", headers=[("Content-Length", str(len(body)))])
               + first)
        # the app has its first chunk before the client sent the other 3.7 MiB
        wait_lines(os.path.join(tmp_dir, "upload-first"))
        c.send(rest)
    r = c.read_response()
    assert r.status == 200, r
    got = json.loads(r.body)
    assert got["length"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest(), got
    assert got["messages"] > 4, "a 4 MiB body must stream in several messages: %r" % got
    c.close()


def test_asgi_disconnect_mid_request(gateway, tmp_dir):
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    c = gw.connect()
    c.send(build_request("POST", "/disconnect", headers=[("Content-Length", "1000000")])
           + b"a" * 5000)
    log = os.path.join(tmp_dir, "disconnect.log")
    wait_lines(os.path.join(tmp_dir, "disconnect-first"))   # the app is in receive()
    c.close()
    lines = wait_lines(log)
    assert len(lines) == 1 and re.match(r"^disconnect after \d+ bytes$", lines[0]), lines
    assert int(lines[0].split()[2]) <= 5000, lines
    r = gw.get("/pid")
    assert r.status == 200 and worker_pid(r) == pid, r


def test_asgi_streaming_response(gateway, tmp_dir):
    """Chunks sent with more_body=True reach the client as they are sent:
    the app sends chunk 0, then waits for a file the test creates only
    after it has read chunk 0."""
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    r, seen = read_gated_stream(gw, "/stream?n=4", os.path.join(tmp_dir, "stream-go"))
    assert r.status == 200, r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r.headers
    assert r.body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n", r
    assert seen[0] == b"chunk 0\n", seen
    assert read_lines(os.path.join(tmp_dir, "stream.log")) == ["go seen True"]


def test_asgi_lifespan_once_per_worker(gateway, tmp_dir):
    gw = gateway("py:asgi_app:app", workers=2, env=env_for(tmp_dir))
    pids = gw.wait_workers(2)
    log = os.path.join(tmp_dir, "lifespan.log")
    lines = read_lines(log)
    started = {int(ln.split()[1]): float(ln.split()[2]) for ln in lines}
    assert len(lines) == 2 and sorted(started) == pids, (lines, pids)
    # each worker's startup ran before the master logged that worker ready
    for p in pids:
        ready = [ln for ln in gw.log_lines() if "(pid %d) ready" % p in ln]
        assert len(ready) == 1, gw.log_tail()
        assert int(started[p] * 1000) / 1000.0 <= log_time(ready[0]) + 0.0005, \
            (started[p], ready[0])
    assert gw.stop() == 0 and not gw.problems, gw.problems
    lines = read_lines(log)
    assert len(lines) == 4, lines
    assert sorted(lines[2:]) == sorted("shutdown %d" % p for p in pids), lines


def test_asgi_lifespan_startup_failure(tmp_dir):
    rc, out, err, left = run_cli(
        ["-w", "2", "-b", "127.0.0.1:0", "--control-socket", os.path.join(tmp_dir, "c.sock"),
         "asgi_app:app"], timeout=20,
        env=env_for(tmp_dir, ASGI_FAIL_STARTUP="database unreachable"))
    assert rc != 0 and not left, (rc, left, err)
    fatal = [ln for ln in err.splitlines() if ln.startswith("gateway:")]
    assert len(fatal) == 1, err
    assert "lifespan" in fatal[0] and "database unreachable" in fatal[0], fatal
    assert not any("ready:" in ln for ln in err.splitlines()), err


@pytest.mark.allow_log(r"intentional ASGI failure")
def test_asgi_app_exception_500_worker_survives(gateway, tmp_dir):
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    mark = gw.log_mark()
    r = gw.get("/boom")
    assert r.status == 500, r
    gw.wait_log(r"^RuntimeError: intentional ASGI failure in /boom$", since=mark)
    assert any(ln.startswith("Traceback (most recent call last):")
               for ln in gw.log_since(mark)), gw.log_tail()
    for _ in range(3):
        r = gw.get("/pid")
        assert r.status == 200 and worker_pid(r) == pid and r.body == str(pid).encode(), r
    assert gw.worker_pids() == [pid]


def test_asgi_timeout_cancels_task(gateway, tmp_dir):
    gw = gateway("py:asgi_app:app", "--timeout", "1", workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    t0 = time.monotonic()
    r = gw.get("/sleep", timeout=8)
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert took < 4, "504 took %.1f s with --timeout 1" % took
    lines = wait_lines(os.path.join(tmp_dir, "cancelled.log"))
    assert lines == ["CancelledError %d" % pid], lines
    for _ in range(3):
        r = gw.get("/pid")
        assert r.status == 200 and worker_pid(r) == pid, r
    assert gw.worker_pids() == [pid]
    assert not any("WORKER TIMEOUT" in ln for ln in gw.log_lines()), gw.log_tail()


@pytest.mark.allow_log(r"coroutine|not iterable|error handling")
def test_asgi_interface_auto_vs_forced_wsgi(gateway, tmp_dir):
    d_auto = os.path.join(tmp_dir, "auto")
    d_wsgi = os.path.join(tmp_dir, "wsgi")
    os.mkdir(d_auto)
    os.mkdir(d_wsgi)
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(d_auto))
    r = gw.get("/pid")
    assert r.status == 200 and r.body == str(worker_pid(r)).encode(), r
    assert len(read_lines(os.path.join(d_auto, "lifespan.log"))) == 1
    gw2 = gateway("py:asgi_app:app", "--interface", "wsgi", workers=1, env=env_for(d_wsgi))
    pid = gw2.wait_workers(1)[0]
    mark = gw2.log_mark()
    r = gw2.get("/pid")
    assert r.status == 500, "an ASGI app called as WSGI must fail the request: %r" % (r,)
    gw2.wait_log(r"TypeError", since=mark)
    assert read_lines(os.path.join(d_wsgi, "lifespan.log")) == [], "no lifespan under WSGI"
    assert gw2.worker_pids() == [pid]


def _concurrent_tasks(gw, prefix, n, ms):
    """n /task requests at once, each on its own connection: every one
    starts with the ContextVar unset, ends with its own value and keeps one
    current task. Their JSON answers."""
    conns = []
    for i in range(n):
        c = gw.connect()
        c.send(build_request("GET", "/task?v=%s%d&ms=%d" % (prefix, i, ms)))
        conns.append(c)
    outs = []
    for i, c in enumerate(conns):
        r = c.read_response()
        assert r.status == 200, r
        o = json.loads(r.body)
        assert o["var_at_start"] == "unset" and o["var_at_end"] == "%s%d" % (prefix, i), o
        assert o["task_same"] is True, o
        outs.append(o)
        c.close()
    return outs


def test_asgi_request_task_and_context(gateway, tmp_dir):
    """A request starts inside the reader callback and runs until it first
    waits; one that waits continues in a reused runner task. Still, for the
    app: one current task for the whole request, its own context (a
    ContextVar set by an earlier request is not seen), and concurrent
    waiting requests have distinct tasks. Runners are not counted as the
    app's background tasks."""
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    gw.wait_workers(1)
    outs = _concurrent_tasks(gw, "r", 12, 150)
    assert len({o["task"] for o in outs}) == 12, outs
    # again, one at a time on the runners the first wave left: nothing leaks
    for i in range(6):
        r = gw.get("/task?v=s%d&ms=%d" % (i, i % 2))
        o = json.loads(r.body)
        assert (o["var_at_start"], o["var_at_end"], o["task_same"]) == ("unset", "s%d" % i, True), o
    # the heartbeat's task count: the app's own background tasks only
    r = gw.get("/bgtask?ms=2500")
    assert r.status == 200, r
    wait_until(lambda: gw.status()["workers"][0]["tasks"] == 1, 4.0, what="tasks == 1")
    wait_until(lambda: gw.status()["workers"][0]["tasks"] == 0, 6.0, what="tasks == 0")


def test_asgi_queued_requests_start_in_a_fresh_context(gateway, tmp_dir):
    """With --worker-connections 2, requests beyond 2 wait in the worker and
    are started when one ends: in their own context, not in a copy of the
    one that ended (a ContextVar it set is not seen)."""
    gw = gateway("py:asgi_app:app", "--worker-connections", "2", workers=1,
                 env=env_for(tmp_dir))
    gw.wait_workers(1)
    _concurrent_tasks(gw, "q", 6, 200)


@pytest.mark.parametrize("opts,conns,inflight", [
    ((), 130, 130),                         # auto: the worker's 1000, not 100
    (("--worker-connections", "110"), 130, 110),
    (("--max-inflight", "20"), 30, 20),     # explicit: caps every worker
])
def test_asgi_in_flight_cap_follows_worker_connections(gateway, tmp_dir, opts, conns,
                                                       inflight):
    """--max-inflight defaults to auto: an ASGI worker may have as many
    requests in flight as its --worker-connections (Gunicorn's meaning for
    async workers), not only the 100 a native worker gets; the rest wait in
    the front's queue. An explicit --max-inflight still caps it."""
    gw = gateway("py:asgi_app:app", *opts, workers=1, env=env_for(tmp_dir))
    gw.wait_workers(1)
    cs = [gw.raw(build_request("GET", "/task?v=c&ms=1500")) for _ in range(conns)]

    def full():
        st = gw.status()
        return st if st["workers"][0]["inflight"] == inflight else None
    st = wait_until(full, 5.0, what="%d requests in flight" % inflight)
    assert st["totals"]["queued"] == conns - inflight, st["totals"]
    for c in cs:
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["var_at_start"] == "unset", r


def test_asgi_anyio_and_self_cancel(gateway, tmp_dir):
    """anyio's cancel scopes and task groups across waits (they check that
    a scope is left in the task that entered it); a request that cancels
    its own task gets the CancelledError at its next wait, and the worker
    keeps serving."""
    gw = gateway("py:asgi_app:app", workers=1, env=env_for(tmp_dir))
    pid = gw.wait_workers(1)[0]
    for _ in range(3):
        r = gw.get("/anyio")
        assert r.status == 200 and r.body == b"cancelled=True", r
    r = gw.get("/selfcancel?catch=1")
    assert r.status == 200 and r.body == b"caught", r
    r = gw.get("/selfcancel")
    assert r.status == 500, r
    for _ in range(3):
        r = gw.get("/task?v=x&ms=5")
        o = json.loads(r.body)
        assert r.status == 200 and o["var_at_start"] == "unset" and o["task_same"], o
        r = gw.get("/pid")
        assert r.status == 200 and worker_pid(r) == pid, r
    assert gw.worker_pids() == [pid]


@pytest.mark.allow_log(r"error handling GET /badheader|Traceback|^  |^TypeError|^ValueError")
def test_asgi_bad_response_header_is_500(gateway, tmp_dir):
    """A header the protocol cannot carry (an int value), or one the master
    would refuse (a control byte, a name that is not a token), fails the
    app's send(): the client gets 500 at once (not a hung request, not a
    502), and the error log says which header."""
    gw = gateway("py:asgi_app:app", "--timeout", "30", workers=1, env=env_for(tmp_dir))
    for q, why in (("", "must be bytes or str"), ("?ctl", "control byte in its value"),
                   ("?name", "not an RFC 9110 token")):
        t0 = time.monotonic()
        r = gw.get("/badheader" + q, timeout=8)
        assert r.status == 500 and time.monotonic() - t0 < 3, r
        assert b"never" not in r.body, r
        gw.wait_log(re.escape(why))
    r = gw.get("/pid")
    assert r.status == 200, r
    assert "bad response" not in gw.log_text()
