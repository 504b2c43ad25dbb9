"""
Dispatch: round-robin spreads exactly; least-connections avoids a busy worker
and breaks ties round-robin.
"""
import collections
import threading
import time

from gwharness import build_request, worker_pid


def test_round_robin_exact_spread_new_connections(gateway):
    gw = gateway("hello", "--balance", "rr", workers=4)
    workers = set(gw.wait_workers(4))
    counts = collections.Counter()
    for _ in range(100):
        r = gw.get("/")
        assert r.status == 200 and r.body == b"Hello, World!", r
        counts[worker_pid(r)] += 1
    assert set(counts) == workers, "served by %s, workers are %s" % (dict(counts), workers)
    assert sorted(counts.values()) == [25, 25, 25, 25], "rr spread: %s" % dict(counts)


def test_round_robin_exact_spread_keep_alive(gateway):
    gw = gateway("hello", "--balance", "rr", workers=4)
    workers = set(gw.wait_workers(4))
    counts = collections.Counter()
    with gw.connect() as c:
        for _ in range(100):
            c.send(build_request("GET", "/"))
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello, World!", r
            counts[worker_pid(r)] += 1
    assert set(counts) == workers, "served by %s, workers are %s" % (dict(counts), workers)
    assert sorted(counts.values()) == [25, 25, 25, 25], "rr spread on one connection: %s" % dict(counts)


def test_leastconn_avoids_busy_worker_and_ties_round_robin(gateway):
    gw = gateway("sleep", workers=3)          # leastconn is the default
    workers = set(gw.wait_workers(3))
    slow = {}

    def hold():
        try:
            slow["r"] = gw.request("GET", "/?ms=3000", timeout=10)
        except Exception as e:
            slow["r"] = e
    t = threading.Thread(target=hold)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.2)                            # let the slow request be dispatched
    quick = []
    for _ in range(6):
        r = gw.get("/?ms=0")
        assert r.status == 200 and r.body == b"slept 0 ms\n", r
        quick.append(worker_pid(r))
    assert time.monotonic() - t0 < 2.8, "quick requests were too slow to overlap the slow one"
    t.join(10)
    r = slow.get("r")
    assert r is not None and not isinstance(r, Exception), "slow request failed: %r" % r
    assert r.status == 200 and r.body == b"slept 3000 ms\n", r
    busy = worker_pid(r)
    assert busy not in quick, \
        "quick requests landed on the busy worker %d: %s" % (busy, quick)
    idle = workers - {busy}
    assert set(quick) == idle, \
        "quick requests should spread over the idle workers %s (ties round-robin), got %s" % (
            idle, quick)
    # nothing busy: sequential requests spread over all workers evenly
    counts = collections.Counter(worker_pid(gw.get("/?ms=0")) for _ in range(9))
    assert set(counts) == workers and sorted(counts.values()) == [3, 3, 3], \
        "9 sequential requests on 3 idle workers should go 3/3/3, got %s" % dict(counts)
