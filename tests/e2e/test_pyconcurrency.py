"""
Python worker concurrency (issue 5): --threads (gthread), the gevent worker
class, and -w auto. Slow requests are real sleeps in the app; timings are
asserted with wide margins (a 2-core VM under a parallel test load).
"""
import json
import os
import subprocess
import threading
import time

from gwharness import GATEWAY, env_for, worker_pid

ENV = env_for()
CTL = os.path.join(os.path.dirname(GATEWAY), "gatewayctl")


def parallel_get(gw, target, n):
    """n concurrent GETs; returns (responses, seconds)."""
    out = [None] * n

    def one(i):
        out[i] = gw.get(target, timeout=30)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, time.monotonic() - t0


def test_threads_one_worker_serves_four_slow_requests_at_once(gateway):
    gw = gateway("py:conc_app:app", "--threads", "4", workers=1, env=ENV)
    pid = gw.wait_workers(1)[0]
    rs, took = parallel_get(gw, "/slow?1", 4)
    assert all(r.status == 200 for r in rs), rs
    assert {worker_pid(r) for r in rs} == {pid}
    names = {r.body.split()[1] for r in rs}
    assert len(names) == 4, names          # four different app threads
    assert max(int(r.body.split()[2]) for r in rs) == 4, rs
    assert took < 1.9, "4 x 1 s on 4 threads took %.2f s" % took


def test_sync_worker_second_slow_request_goes_to_the_free_worker(gateway):
    gw = gateway("py:conc_app:app", workers=2, env=ENV)
    pids = set(gw.wait_workers(2))
    rs, took = parallel_get(gw, "/slow?1", 2)
    assert {worker_pid(r) for r in rs} == pids, "one slow request per worker"
    assert took < 1.9, "two 1 s requests on two free sync workers took %.2f s" % took
    # and with one sync worker they queue: it runs one at a time
    assert all(r.body.split()[2] == b"1" for r in rs), rs


def test_gevent_worker_serves_100_concurrent_slow_requests(gateway):
    gw = gateway("py:conc_app:app", "--worker-class", "gevent",
                 "--worker-connections", "200", "--max-inflight", "200",
                 workers=1, env=ENV)
    pid = gw.wait_workers(1)[0]
    rs, took = parallel_get(gw, "/slow?1", 100)
    assert all(r.status == 200 and worker_pid(r) == pid for r in rs), \
        [r for r in rs if r.status != 200][:3]
    assert max(int(r.body.split()[2]) for r in rs) >= 90, "not concurrent"
    assert took < 5, "100 x 1 s greenlets took %.2f s" % took
    out = subprocess.run([CTL, "-s", gw.ctl_path, "status", "--json"], check=True,
                         capture_output=True, timeout=10).stdout
    loops = [w.get("loop", "") for w in json.loads(out)["workers"]]
    assert loops and all(lp.startswith("python-gevent") for lp in loops), loops


def test_workers_auto_is_two_per_core_plus_one(gateway):
    want = 2 * os.cpu_count() + 1
    gw = gateway("py:conc_app:app", "-w", "auto", env=ENV)
    assert len(gw.wait_workers(want, timeout=20)) == want
    out = subprocess.run([CTL, "-s", gw.ctl_path, "status", "--json"], check=True,
                         capture_output=True, timeout=10).stdout
    st = json.loads(out)
    assert len([w for w in st["workers"] if w["state"] == "ready"]) == want, st
    assert "workers: auto = 2 x %d cores + 1 = %d" % (os.cpu_count(), want) in gw.log_text()
