"""
Prometheus metrics (--metrics-bind, `gatewayctl metrics`): request counters
by status class, the latency histogram (cumulative buckets, +Inf == _count),
timeouts, in-flight, queue depth and per-worker series for every worker pid;
the endpoint's 404 and bounded head; a bad --metrics-bind fails the start
with one "gateway: " line and leaves nothing behind.
"""
import os
import re
import socket
import subprocess

import pytest

import gwharness as h
from gwharness import BUILD, app_path, free_port, run_cli, wait_until

GATEWAYCTL = os.path.join(BUILD, "gatewayctl")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Exposition text -> (types {family: type}, samples [(name, labels, value)])."""
    types, samples = {}, []
    for ln in text.splitlines():
        if not ln.strip():
            continue
        if ln.startswith("# TYPE "):
            _, _, fam, typ = ln.split(" ", 3)
            types[fam] = typ
            continue
        if ln.startswith("#"):
            assert ln.startswith("# HELP "), ln
            continue
        m = SAMPLE.match(ln)
        assert m, "bad sample line %r" % ln
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def value(samples, name, **labels):
    hits = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, "%s%r: %d samples" % (name, labels, len(hits))
    return hits[0]


def scrape(port, target="/metrics", method="GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        c = h.Conn(s)
        c.send("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, target))
        r = c.read_response(head_request=(method == "HEAD"))
        assert c.read_to_eof() == b"", "the endpoint keeps the connection open"
        return r


def metrics(port):
    r = scrape(port)
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4"), r.headers
    assert int(r.header("Content-Length")) == len(r.body)
    return parse(r.text)


def ctl_metrics(gw):
    p = subprocess.run([GATEWAYCTL, "-s", gw.ctl_path, "metrics"], capture_output=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and not p.stderr, (p.returncode, p.stdout, p.stderr)
    return parse(p.stdout.decode())


def check_histogram(samples, types):
    assert types["gateway_request_duration_seconds"] == "histogram"
    buckets = [(l["le"], v) for n, l, v in samples if n == "gateway_request_duration_seconds_bucket"]
    assert buckets[-1][0] == "+Inf"
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds == sorted(bounds) and len(bounds) >= 10, bounds
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets not cumulative: %r" % buckets
    count = value(samples, "gateway_request_duration_seconds_count")
    assert counts[-1] == count
    assert value(samples, "gateway_request_duration_seconds_sum") >= 0
    return count


FAMILIES = {
    "gateway_up": "gauge", "gateway_info": "gauge", "gateway_requests_total": "counter",
    "gateway_request_duration_seconds": "histogram", "gateway_inflight": "gauge",
    "gateway_queue_depth": "gauge", "gateway_workers": "gauge",
    "gateway_worker_served_total": "counter", "gateway_worker_inflight": "gauge",
    "gateway_worker_rss_bytes": "gauge", "gateway_worker_restarts_total": "counter",
    "gateway_timeouts_total": "counter", "gateway_rejected_total": "counter",
    "gateway_dropped_frames_total": "counter",
}


def test_metrics_endpoint_counts_requests_and_workers(gateway):
    mport = free_port()
    gw = gateway("hello", "--metrics-bind", "127.0.0.1:%d" % mport, workers=3)
    pids = gw.wait_workers(3)
    for _ in range(12):
        assert gw.get("/").status == 200

    def served_all():
        t, s = metrics(mport)
        return (t, s) if value(s, "gateway_requests_total", **{"class": "2xx"}) >= 12 else None
    types, samples = wait_until(served_all, 3, what="12 2xx counted")
    for fam, typ in FAMILIES.items():
        assert types.get(fam) == typ, (fam, types.get(fam))
    assert value(samples, "gateway_up") == 1
    assert value(samples, "gateway_requests_total", **{"class": "2xx"}) == 12
    for cls in ("1xx", "3xx", "4xx", "5xx"):
        assert value(samples, "gateway_requests_total", **{"class": cls}) == 0
    assert check_histogram(samples, types) == 12
    assert value(samples, "gateway_inflight") == 0
    assert value(samples, "gateway_queue_depth") == 0
    assert value(samples, "gateway_timeouts_total") == 0
    assert value(samples, "gateway_workers", state="ready") == 3
    for fam in ("gateway_worker_served_total", "gateway_worker_inflight",
                "gateway_worker_rss_bytes"):
        got = sorted(int(l["pid"]) for n, l, v in samples if n == fam)
        assert got == pids, (fam, got, pids)
    served = sum(v for n, l, v in samples if n == "gateway_worker_served_total")
    assert served == 12
    assert sorted(l["slot"] for n, l, v in samples
                  if n == "gateway_worker_restarts_total") == ["0", "1", "2"]

    # the control socket gives the same families
    ctypes_, csamples = ctl_metrics(gw)
    assert ctypes_ == types
    assert {n for n, _, _ in csamples} == {n for n, _, _ in samples}

    # anything but /metrics is 404; HEAD has no body; the connection closes
    assert scrape(mport, "/").status == 404
    assert scrape(mport, "/metricsx").status == 404
    r = scrape(mport, "/metrics", "HEAD")
    assert r.status == 200 and r.body == b""
    # a head that never ends is bounded: answered (431) and closed
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        c = h.Conn(s)
        try:
            c.send(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 8000)
        except OSError:
            pass
        data = c.read_to_eof()
        assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    # the front still works
    assert gw.get("/").status == 200


def test_metrics_timeout_is_5xx(gateway):
    mport = free_port()
    gw = gateway("sleep", "--timeout", "1", "--metrics-bind", "127.0.0.1:%d" % mport,
                 workers=1)
    assert gw.get("/?ms=1").status == 200
    assert gw.get("/?ms=3000", timeout=10).status == 504
    types, samples = metrics(mport)
    assert value(samples, "gateway_requests_total", **{"class": "2xx"}) == 1
    assert value(samples, "gateway_requests_total", **{"class": "5xx"}) == 1
    assert value(samples, "gateway_timeouts_total") == 1
    assert check_histogram(samples, types) == 2
    le1 = value(samples, "gateway_request_duration_seconds_bucket", le="0.5")
    assert le1 == 1, "the 504 (about 1 s) landed below 0.5 s"
    assert value(samples, "gateway_request_duration_seconds_sum") >= 0.9


def test_metrics_unix_socket(gateway, tmp_dir):
    path = os.path.join(tmp_dir, "metrics.sock")
    gw = gateway("hello", "--metrics-bind", "unix:" + path, workers=1)
    assert gw.get("/").status == 200
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    with h.Conn(s) as c:
        c.send("GET /metrics HTTP/1.0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    types, samples = parse(r.text)
    assert value(samples, "gateway_requests_total", **{"class": "2xx"}) == 1
    gw.stop()
    assert gw.returncode == 0
    assert not os.path.exists(path), "metrics socket file left behind"


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "unix:relative.sock", "inuse"])
def test_bad_metrics_bind_fails_start(bad, tmp_dir):
    holder = None
    if bad == "inuse":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        bad = "127.0.0.1:%d" % holder.getsockname()[1]
    ctl = os.path.join(tmp_dir, "ctl.sock")
    port = free_port()
    try:
        rc, out, err, left = run_cli(["-w", "1", "-b", "127.0.0.1:%d" % port,
                                      "--control-socket", ctl, "--metrics-bind", bad,
                                      app_path("hello")])
    finally:
        if holder:
            holder.close()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0
    assert len(lines) == 1 and lines[0].startswith("gateway: cannot bind metrics %s" % bad), err
    assert not left
    assert not os.path.exists(ctl), "control socket left behind"
    s = socket.socket()
    s.bind(("127.0.0.1", port))   # the main listener was released
    s.close()
