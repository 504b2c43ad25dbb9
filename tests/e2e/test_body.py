"""
Request bodies are streamed through the front to the worker and back: a 50 MB
chunked upload to the echo app comes back intact while the master's (and the
worker's) memory stays bounded.
"""
import hashlib
import threading
import time

from gwharness import build_request, rss_kb

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
    gw = gateway("echo")
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
