"""
Overload and slow clients: the bounded queue answers 503 with Retry-After past
its size; header/body timeouts close silent clients without pinning a worker.
"""
import threading
import time

from gwharness import build_request, worker_pid


def run_in_thread(fn, *args):
    out = {}

    def go():
        try:
            out["r"] = fn(*args)
        except Exception as e:
            out["r"] = e
        out["t"] = time.monotonic()
    t = threading.Thread(target=go)
    t.start()
    return t, out


def test_queue_overflow_503_retry_after(gateway):
    gw = gateway("sleep", "--max-inflight", "1", "--max-queue", "1", workers=1)
    t0 = time.monotonic()
    ta, a = run_in_thread(gw.request, "GET", "/?ms=1000")
    time.sleep(0.2)
    tb, b = run_in_thread(gw.request, "GET", "/?ms=0")
    time.sleep(0.2)
    c = gw.request("GET", "/?ms=0")
    tc = time.monotonic()
    assert c.status == 503, "third request (1 in flight, 1 queued, queue 1) got %r" % c
    assert c.header("Retry-After") is not None and c.header("Retry-After").strip().isdigit(), \
        "503 without a numeric Retry-After: %r" % c
    assert tc - t0 < 0.9, "the 503 was not immediate (%.2fs)" % (tc - t0)
    ta.join(10)
    tb.join(10)
    ra, rb = a.get("r"), b.get("r")
    assert not isinstance(ra, Exception) and ra.status == 200 and ra.body == b"slept 1000 ms\n", \
        "in-flight request: %r" % ra
    assert not isinstance(rb, Exception) and rb.status == 200 and rb.body == b"slept 0 ms\n", \
        "queued request: %r" % rb
    assert b["t"] >= a["t"] - 0.05, "queued request finished before the in-flight one"
    # the queue drains: a request now succeeds
    r = gw.get("/?ms=0")
    assert r.status == 200, r


def test_silent_and_half_head_clients_time_out(gateway):
    gw = gateway("hello", "--header-timeout", "1", workers=1)
    silent = gw.connect(timeout=5)
    half = gw.connect(timeout=5)
    half.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ")
    t0 = time.monotonic()
    # neither holds the only worker
    for _ in range(3):
        t = time.monotonic()
        r = gw.get("/", timeout=2)
        assert r.status == 200 and r.body == b"Hello, World!", r
        assert time.monotonic() - t < 0.5, "request took %.2fs with idle clients" % (
            time.monotonic() - t)
    for name, c in (("silent", silent), ("half head", half)):
        c.settimeout(4)
        data = c.read_to_eof()
        dt = time.monotonic() - t0
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), \
            "%s client got %r (expected 408 or a plain close)" % (name, data[:200])
        assert 0.7 <= dt <= 3.0, "%s client closed after %.2fs with --header-timeout 1" % (name, dt)
    r = gw.get("/")
    assert r.status == 200


def test_body_timeout_releases_worker(gateway):
    gw = gateway("echo", "--body-timeout", "1", workers=1)
    c = gw.connect(timeout=5)
    c.send(build_request("POST", "/slow", [("Content-Length", "10")]) + b"abc")
    t0 = time.monotonic()
    r = gw.request("GET", "/quick", timeout=2)
    assert r.status == 200 and r.header("X-Echo-Target") == "/quick", r
    assert time.monotonic() - t0 < 0.5
    c.settimeout(4)
    data = c.read_to_eof()
    dt = time.monotonic() - t0
    assert 0.7 <= dt <= 3.0, "stalled body closed after %.2fs with --body-timeout 1; got %r" % (
        dt, data[:200])
    r = gw.get("/after")
    assert r.status == 200, r


def test_sleep_does_not_block_loop(gateway):
    gw = gateway("sleep", workers=1)
    t0 = time.monotonic()
    threads = [run_in_thread(gw.request, "GET", "/?ms=600") for _ in range(5)]
    for t, _ in threads:
        t.join(10)
    dt = time.monotonic() - t0
    rs = [o.get("r") for _, o in threads]
    assert all(not isinstance(r, Exception) and r.status == 200 and r.body == b"slept 600 ms\n"
               for r in rs), rs
    assert len({worker_pid(r) for r in rs}) == 1
    assert dt < 1.5, "5 concurrent 600 ms sleeps on one worker took %.2fs (loop blocked?)" % dt


def test_block_runs_on_thread_pool(gateway):
    gw = gateway("block", workers=1)
    t0 = time.monotonic()
    tl, long_ = run_in_thread(gw.request, "GET", "/?ms=1000")
    time.sleep(0.1)
    r = gw.request("GET", "/?ms=0")
    quick = time.monotonic() - t0
    assert r.status == 200 and r.body == b"blocked 0 ms\n", r
    assert quick < 0.8, "a quick request waited %.2fs behind a blocking one" % quick
    tl.join(10)
    rl = long_.get("r")
    assert not isinstance(rl, Exception) and rl.status == 200 and rl.body == b"blocked 1000 ms\n", rl
    assert worker_pid(rl) == worker_pid(r)


def test_queued_request_whose_client_left_frees_its_place(gateway):
    gw = gateway("sleep", "--max-inflight", "1", "--max-queue", "1", workers=1)
    ta, a = run_in_thread(gw.request, "GET", "/?ms=800")
    time.sleep(0.2)
    b = gw.connect()
    b.send(build_request("GET", "/?ms=0"))           # queued behind A
    time.sleep(0.2)
    b.close()                                          # ... and gone
    time.sleep(0.2)
    t0 = time.monotonic()
    c = gw.request("GET", "/?ms=0")
    assert c.status == 200 and c.body == b"slept 0 ms\n", \
        "a queued request whose client left still held the only queue place: %r" % c
    assert time.monotonic() - t0 < 1.0
    ta.join(10)
    ra = a.get("r")
    assert not isinstance(ra, Exception) and ra.status == 200, ra
