"""
Operations, part 1: per-request deadline (--timeout: 504 + CANCEL), stuck
workers (WORKER TIMEOUT, SIGABRT, replaced), recycling (--max-requests with
jitter, --max-worker-memory), TTIN/TTOU scaling, --health-path, and TERM
with slow requests in flight.
"""
import os
import signal
import threading
import time

import pytest

from gwharness import build_request, wait_until, worker_pid


def get_many(gw, targets, timeout=15):
    """GET each target on its own connection, concurrently; responses in order."""
    out = [None] * len(targets)

    def one(i, t):
        try:
            out[i] = gw.get(t, timeout=timeout)
        except Exception as e:   # noqa: BLE001 - reported by the caller
            out[i] = e
    ts = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(targets)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 5)
    return out


def test_timeout_answers_504_and_worker_keeps_serving(gateway):
    """The app stays silent past --timeout (its loop is fine: heartbeats go
    on): the client gets 504 at about --timeout, the worker is not killed,
    and the next request on the same worker is served normally."""
    gw = gateway("sleep", "--timeout", "1", workers=1)
    pid = gw.wait_workers(1)[0]
    t0 = time.monotonic()
    r = gw.get("/?ms=3000", timeout=10)
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.9 <= took < 2.5, "504 after %.2f s with --timeout 1" % took
    r2 = gw.get("/?ms=10")
    assert r2.status == 200 and r2.body == b"slept 10 ms\n", r2
    assert worker_pid(r2) == pid, "the worker was replaced; it was only slow"
    time.sleep(2.2)           # the cancelled sleep would have answered by now
    r3 = gw.get("/?ms=0")
    assert r3.status == 200 and r3.body == b"slept 0 ms\n", \
        "a late reply leaked into the next request: %r" % (r3,)
    assert "WORKER TIMEOUT" not in gw.log_text()


@pytest.mark.allow_log(r"WORKER TIMEOUT \(pid:\d+\)", r"after WORKER TIMEOUT")
def test_stuck_worker_is_aborted_and_replaced(gateway):
    """A worker whose loop is blocked stops heartbeating: past --timeout the
    master logs WORKER TIMEOUT (pid:N), aborts it, and a new worker serves.
    A request on the other worker meanwhile is unaffected."""
    gw = gateway("misbehave", "--timeout", "1", "--balance", "rr", workers=2)
    pids = set(gw.wait_workers(2))
    res = {}

    def stall():
        res["stall"] = gw.get("/stall?ms=8000", timeout=15)
    t = threading.Thread(target=stall)
    t.start()
    time.sleep(0.2)
    ok = gw.get("/")        # rr: the other worker
    assert ok.status == 200, ok
    t.join(15)
    assert res["stall"].status in (502, 504), res["stall"]
    gw.wait_log(r"WORKER TIMEOUT \(pid:(%s)\)" % "|".join(str(p) for p in pids), timeout=6)
    wait_until(lambda: len(set(gw.worker_pids()) - pids) == 1 and len(gw.worker_pids()) == 2,
               8, what="a replacement worker")
    for _ in range(4):
        assert gw.get("/").status == 200


@pytest.mark.allow_log(r"bad response on stream \d+: (invalid header field|bad Content-Length)")
def test_refused_response_head_is_502_and_worker_keeps_serving(gateway):
    """A head the front will not forward (a control byte in a value, a
    Content-Length that is not a number) gets a 502 and a closed connection,
    never a silent close; the worker stays and serves the next request, and a
    keep-alive client of the same worker is unaffected."""
    gw = gateway("misbehave", workers=1)
    pid = gw.wait_workers(1)[0]
    other = gw.connect()
    other.send(build_request("GET", "/"))
    assert other.read_response().status == 200
    for target, why in (("/badheader", "invalid header field"),
                        ("/badlength", "bad Content-Length")):
        c = gw.connect()
        c.send(build_request("GET", target))
        r = c.read_response()
        assert r.status == 502, r
        assert b"never seen" not in r.body, r
        assert c.closed_by_peer(), "connection left open after a refused head"
        c.close()
        gw.wait_log(r"worker 0: bad response on stream \d+: " + why)
    other.send(build_request("GET", "/"))
    r = other.read_response()
    assert r.status == 200 and r.body == b"ok\n", r
    assert gw.worker_pids() == [pid]


def test_max_requests_recycles(gateway):
    gw = gateway("hello", "--max-requests", "5", workers=1)
    first = gw.wait_workers(1)[0]
    pids = []
    for _ in range(12):
        r = gw.get("/")
        assert r.status == 200 and r.body == b"Hello, World!", r
        pids.append(worker_pid(r))
    assert pids[:5] == [first] * 5, pids
    assert pids[5] != first and pids[5:10] == [pids[5]] * 5, pids
    assert pids[10] not in (first, pids[5]), pids
    assert len(gw.wait_log(r"retiring: max-requests reached", count=2)) >= 2


def test_max_requests_jitter_spreads(gateway):
    gw = gateway("hello", "--max-requests", "3", "--max-requests-jitter", "4", workers=1)
    gw.wait_workers(1)
    runs, last, n = [], None, 0
    for _ in range(60):
        p = worker_pid(gw.get("/"))
        if p != last and last is not None:
            runs.append(n)
            n = 0
        last = p
        n += 1
    assert runs, "never recycled"
    assert all(3 <= k <= 7 for k in runs), runs


def test_max_worker_memory_recycles(gateway):
    gw = gateway("misbehave", "--max-worker-memory", "40", workers=1)
    pid = gw.wait_workers(1)[0]
    r = gw.get("/hog?mb=64")
    assert r.status == 200 and worker_pid(r) == pid
    gw.wait_log(r"retiring: resident memory \d+ MB over --max-worker-memory 40 MB", timeout=5)
    wait_until(lambda: gw.worker_pids() and pid not in gw.worker_pids(), 8,
               what="the hog worker replaced")
    r = gw.get("/")
    assert r.status == 200 and worker_pid(r) != pid


def test_ttin_ttou(gateway):
    gw = gateway("hello", workers=2)
    gw.wait_workers(2)
    os.kill(gw.pid, signal.SIGTTIN)
    wait_until(lambda: len(gw.worker_pids()) == 3, 5, what="3 workers after TTIN")
    gw.wait_log(r"workers: 2 -> 3")
    for _ in range(3):
        os.kill(gw.pid, signal.SIGTTOU)
        time.sleep(0.3)
    wait_until(lambda: len(gw.worker_pids()) == 1, 8, what="1 worker after TTOU x3 (never 0)")
    assert gw.get("/").status == 200


def test_health_path(gateway):
    gw = gateway("hello", "--health-path", "/healthz", workers=1)
    c = gw.connect()
    c.send(build_request("GET", "/healthz") + build_request("HEAD", "/healthz")
           + build_request("GET", "/"))
    r1 = c.read_response()
    r2 = c.read_response(head_request=True)
    r3 = c.read_response()
    assert r1.status == 200 and r1.body == b"ok\n", r1
    assert r1.header("X-Worker-Pid") is None, "the health check reached the app"
    assert r2.status == 200 and r2.body == b"", r2
    assert r3.status == 200 and r3.body == b"Hello, World!", r3
    c.close()


def test_term_with_20_slow_requests_in_flight(gateway):
    """TERM while 20 slow requests are in flight: all 20 complete, and the
    master exits 0 (checked by the fixture's teardown)."""
    gw = gateway("sleep", workers=2)
    out = [None] * 20
    done = threading.Event()

    def run():
        res = get_many(gw, ["/?ms=1500"] * 20, timeout=20)
        out[:] = res
        done.set()
    t = threading.Thread(target=run)
    t.start()
    wait_until(lambda: gw.log_lines() is not None and len(_inflight_conns(gw)) >= 20, 5,
               what="20 connections open")
    time.sleep(0.3)
    os.kill(gw.pid, signal.SIGTERM)
    t.join(25)
    bad = [r for r in out if getattr(r, "status", None) != 200]
    assert not bad, bad
    for r in out:
        assert r.body == b"slept 1500 ms\n"
        assert (r.header("Connection") or "").lower() == "close", r.headers
    wait_until(lambda: gw.proc.poll() is not None, 10, what="the master to exit")
    assert gw.proc.returncode == 0


def _inflight_conns(gw):
    """TCP connections established to the gateway's port (from /proc/net/tcp)."""
    port = "%04X" % gw.port
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(":" + port) and parts[3] == "01":
                out.append(parts[1])
    return out


def _ids(pid):
    uid = gid = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_group_switch_workers_only(gateway):
    import pwd
    import grp
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrgid(nobody.pw_gid)
    gw = gateway("hello", "--user", "nobody", "--group", nogroup.gr_name, workers=2)
    for pid in gw.wait_workers(2):
        assert _ids(pid) == (nobody.pw_uid, nobody.pw_gid), pid
    assert _ids(gw.pid) == (0, 0), "the master keeps its privileges"
    assert gw.get("/").status == 200


def test_user_unknown_is_a_one_line_error(tmp_dir):
    import subprocess
    from gwharness import GATEWAY, EXAMPLES
    p = subprocess.run([GATEWAY, "-b", "127.0.0.1:0", "--user", "no-such-user-xyz",
                        os.path.join(EXAMPLES, "hello.so")], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == ["gateway: --user: no such user 'no-such-user-xyz'"]


def test_reuse_port_two_gateways_one_port(gateway):
    a = gateway("hello", "--reuse-port", workers=1)
    b = gateway("hello", "--reuse-port", bind="127.0.0.1:%d" % a.port, workers=1)
    pa, pb = a.wait_workers(1)[0], b.wait_workers(1)[0]
    seen = set()
    for _ in range(40):
        seen.add(worker_pid(a.get("/")))
    assert seen <= {pa, pb} and len(seen) == 2, "the kernel spread connections over both: %s" % seen


def test_term_answers_the_accept_backlog(gateway):
    """Connections waiting in the kernel's accept queue when TERM arrives
    are accepted and answered, not reset."""
    gw = gateway("hello", workers=1)
    os.kill(gw.pid, signal.SIGSTOP)            # the master accepts nothing now
    conns = []
    try:
        for _ in range(10):
            c = gw.connect(timeout=10)
            c.send(build_request("GET", "/"))
            conns.append(c)
        os.kill(gw.pid, signal.SIGTERM)
    finally:
        os.kill(gw.pid, signal.SIGCONT)
    for c in conns:
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", r
        c.close()
    wait_until(lambda: gw.proc.poll() is not None, 10, what="the master to exit")
    assert gw.proc.returncode == 0
