"""
Request bodies are streamed through the front to the worker and back: a 50 MB
chunked upload to the echo app comes back intact while the master's (and the
worker's) memory stays bounded.
"""
import hashlib
import os
import socket
import threading
import time

import pytest

from gwharness import PeerClosed, build_request, rss_kb

MB = 1024 * 1024
UPLOAD = 50 * MB
CHUNK = 64 * 1024
# Streamed means buffers of a few chunks, not the body. The bound must be well
# under the 50 MB body, or buffering it whole would pass: 16 MB of RSS growth.
RSS_BOUND_KB = 16 * 1024


def pattern_block(i):
    # deterministic, non-repeating per block so misordered data is caught
    return hashlib.sha256(b"blk%d" % i).digest() * (CHUNK // 32)


def test_50mb_chunked_upload_streams(gateway):
    # Under an ASan build, freed buffers sit in ASan's quarantine (256 MB by
    # default) and look like growth; keep it small so RSS measures buffering.
    asan = os.environ.get("ASAN_OPTIONS", "")
    gw = gateway("echo", env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=1"})
    (worker,) = gw.wait_workers(1)
    idle_master, idle_worker = rss_kb(gw.pid), rss_kb(worker)
    peaks = {"master": idle_master, "worker": idle_worker}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            m, w = rss_kb(gw.pid), rss_kb(worker)
            if m:
                peaks["master"] = max(peaks["master"], m)
            if w:
                peaks["worker"] = max(peaks["worker"], w)
            time.sleep(0.005)

    sent = hashlib.sha256()
    send_err = []
    c = gw.connect(timeout=30)
    c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked"),
                                             ("Content-Type", "application/octet-stream")]))

    def sender():
        try:
            for i in range(UPLOAD // CHUNK):
                blk = pattern_block(i)
                sent.update(blk)
                c.sock.sendall(b"%x\r\n" % len(blk) + blk + b"\r\n")
            c.sock.sendall(b"0\r\n\r\n")
        except Exception as e:
            send_err.append(e)

    got = hashlib.sha256()
    total = [0]

    def on_chunk(d):
        got.update(d)
        total[0] += len(d)

    st = threading.Thread(target=sender)
    sm = threading.Thread(target=sample)
    t0 = time.monotonic()
    sm.start()
    st.start()
    try:
        r = c.read_response(on_chunk=on_chunk, keep_body=False)
    finally:
        st.join(60)
        stop.set()
        sm.join(5)
    elapsed = time.monotonic() - t0
    assert not send_err, "upload failed: %r" % send_err
    assert r.status == 200, r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", \
        "echo of a chunked request should be chunked: %r" % r
    assert total[0] == UPLOAD, "echoed %d bytes of %d" % (total[0], UPLOAD)
    assert got.hexdigest() == sent.hexdigest(), "echoed body differs from the upload"
    grow_m = peaks["master"] - idle_master
    grow_w = peaks["worker"] - idle_worker
    assert grow_m < RSS_BOUND_KB, \
        "master RSS grew by %d kB during a 50 MB upload (bound %d kB): buffered, not streamed" % (
            grow_m, RSS_BOUND_KB)
    assert grow_w < RSS_BOUND_KB, \
        "worker RSS grew by %d kB during a 50 MB upload (bound %d kB)" % (grow_w, RSS_BOUND_KB)
    print("50 MB echo in %.2fs, master +%d kB, worker +%d kB" % (elapsed, grow_m, grow_w))
    # the connection is still usable
    c.send(build_request("GET", "/after"))
    assert c.read_response().status == 200


def test_content_length_upload_echo(gateway):
    gw = gateway("echo", workers=2)
    body = b"".join(pattern_block(i) for i in range(16))   # 1 MiB
    with gw.connect(timeout=10) as c:
        c.send(build_request("PUT", "/cl", [("Content-Length", str(len(body)))]))
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        assert r.header("Content-Length") == str(len(body)), \
            "echo of a Content-Length body should carry the same length: %r" % r
        assert r.header("Transfer-Encoding") is None, r
        assert r.header("X-Echo-Method") == "PUT"
        assert r.body == body
        # small chunked body, then a GET on the same connection
        c.send(b"POST /ch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"abcdefg", r
        c.send(build_request("GET", "/after"))
        r = c.read_response()
        assert r.status == 200 and r.header("X-Echo-Target") == "/after", r


def test_slow_reader_backpressure(gateway):
    """The client reads the echo slowly: the gateway must stop reading the
    upload rather than buffer the difference (RSS stays bounded)."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    gw = gateway("echo", env={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=1"})
    (worker,) = gw.wait_workers(1)
    idle = {"master": rss_kb(gw.pid), "worker": rss_kb(worker)}
    peaks = dict(idle)
    stop = threading.Event()
    size = 30 * MB

    def sample():
        while not stop.is_set():
            for k, p in (("master", gw.pid), ("worker", worker)):
                v = rss_kb(p)
                if v:
                    peaks[k] = max(peaks[k], v)
            time.sleep(0.005)
    c = gw.connect(timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.send(build_request("POST", "/slow", [("Transfer-Encoding", "chunked")]))
    sent = hashlib.sha256()
    err = []

    def sender():
        try:
            blk = pattern_block(7)
            for i in range(size // CHUNK):
                sent.update(blk)
                c.sock.sendall(b"%x\r\n" % len(blk) + blk + b"\r\n")
            c.sock.sendall(b"0\r\n\r\n")
        except Exception as e:
            err.append(e)
    got = hashlib.sha256()
    n = [0]

    def on_chunk(d):
        got.update(d)
        n[0] += len(d)
        if n[0] < 8 * MB:
            time.sleep(0.0005 * len(d) / 16384)   # ~32 MB/s for the first 8 MB
    st, sm = threading.Thread(target=sender), threading.Thread(target=sample)
    sm.start()
    st.start()
    try:
        r = c.read_response(on_chunk=on_chunk, keep_body=False)
    finally:
        st.join(60)
        stop.set()
        sm.join(5)
    assert not err, err
    assert r.status == 200 and n[0] == size and got.digest() == sent.digest(), (r, n[0])
    for k in ("master", "worker"):
        assert peaks[k] - idle[k] < RSS_BOUND_KB, \
            "%s RSS grew by %d kB with a slow reader (bound %d kB)" % (
                k, peaks[k] - idle[k], RSS_BOUND_KB)


@pytest.mark.parametrize("size,pipelined", [(300 * 1024, False), (300 * 1024, True),
                                            (5 * MB, True)])
def test_large_unread_body_then_next_request(gateway, size, pipelined):
    """The app answers without reading a large body. The front either
    discards the body and serves the next request on the connection, or says
    Connection: close on the response and closes. Closing without saying so
    loses a keep-alive client's next request."""
    gw = gateway("hello")
    body = b"q" * size
    c = gw.connect(timeout=10)
    send_err = []

    def send():
        try:
            c.sock.sendall(build_request("POST", "/", body=body)
                           + (build_request("GET", "/x") if pipelined else b""))
        except OSError as e:
            send_err.append(e)
    t = threading.Thread(target=send)
    t.start()
    try:
        r1 = c.read_response()
        assert r1.status == 200 and r1.body == b"Hello, World!", r1
        if (r1.header("Connection") or "").lower() == "close":
            assert c.closed_by_peer(3.0), "said Connection: close but kept the connection"
            return
        t.join(10)
        if not pipelined:
            time.sleep(0.1)
            c.send(build_request("GET", "/x"))
        try:
            r2 = c.read_response()
        except PeerClosed:
            raise AssertionError(
                "after a %d-byte unread body the front answered 200 without Connection: close, "
                "then closed the connection: the %s GET was lost (headers %r)"
                % (size, "pipelined" if pipelined else "next keep-alive", r1.headers))
        assert r2.status == 200 and r2.body == b"Hello, World!", r2
    finally:
        t.join(10)
        c.close()
