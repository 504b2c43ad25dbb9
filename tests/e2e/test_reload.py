"""
HUP reload under real concurrent load: new workers start, old ones drain
after their replacements are READY, and no request fails.
"""
import os
import signal
import socket
import threading
import time

import pytest

from gwharness import PeerClosed, build_request, wait_until, worker_pid


class Load:
    """Concurrent clients hammering the gateway until stopped: keep-alive
    connections that also reconnect now and then. Counts every outcome."""

    def __init__(self, gw, clients=8, path="/", retry_reused=False):
        self.gw, self.path = gw, path
        # RFC 9112 9.3.1: a client may retry an idempotent request when a
        # reused connection closes before any response byte (the server
        # closed it while idle). Off for reloads, where it must never happen.
        self.retry_reused = retry_reused
        self.retried = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []
        self.pids = set()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def run(self, i):
        n = 0
        while not self.stop.is_set():
            try:
                c = self.gw.connect(timeout=10, track=False)
            except OSError as e:
                with self.lock:
                    self.failed.append("connect: %r" % e)
                continue
            used = 0
            try:
                for _ in range(20 + i):          # keep-alive for a while, then reconnect
                    if self.stop.is_set():
                        break
                    try:
                        c.send(build_request("GET", self.path))
                        r = c.read_response()
                    except (PeerClosed, ConnectionError) as e:
                        if not (self.retry_reused and used and not c.buf):   # no response byte yet
                            raise
                        with self.lock:
                            self.retried += 1
                        break                    # reconnect and send it again
                    used += 1
                    n += 1
                    with self.lock:
                        if r.status == 200 and r.body == b"Hello, World!":
                            self.ok += 1
                            self.pids.add(worker_pid(r))
                        else:
                            self.failed.append("status %s body %r" % (r.status, r.body[:60]))
                    if (r.header("Connection") or "").lower() == "close":
                        break
            except Exception as e:   # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failed.append("request %d on client %d: %r" % (n, i, e))
            finally:
                c.close()


def run_reloads(gw, every, total, preload_note=""):
    load = Load(gw).start()
    try:
        time.sleep(0.5)
        reloads = 0
        t_end = time.monotonic() + total
        while time.monotonic() < t_end:
            os.kill(gw.pid, signal.SIGHUP)
            reloads += 1
            time.sleep(every)
    finally:
        load.finish()
    return load, reloads


def test_hup_every_2s_for_20s_loses_nothing(gateway):
    gw = gateway("hello", workers=2)
    first = set(gw.wait_workers(2))
    load, reloads = run_reloads(gw, every=2.0, total=20.0)
    print("HUP reload: %d reloads, %d requests ok, %d failed" % (reloads, load.ok, len(load.failed)))
    assert not load.failed, "%d failed of %d: %s" % (len(load.failed), load.ok + len(load.failed),
                                                     load.failed[:5])
    assert load.ok > 1000, "too little load to mean anything: %d" % load.ok
    assert len(load.pids) >= 2 * reloads, "workers were not replaced: %d pids" % len(load.pids)
    gw.wait_log(r"reload: generation %d" % (reloads + 1))
    wait_until(lambda: len(gw.worker_pids()) == 2 and not (set(gw.worker_pids()) & first), 10,
               what="2 workers of the last generation only")


def test_hup_with_preload_and_scaled_workers(gateway):
    """With --preload the new workers fork from the master's loaded app; a
    TTIN-scaled count goes back to the configured one, as in Gunicorn."""
    gw = gateway("hello", "--preload", workers=2)
    gw.wait_workers(2)
    os.kill(gw.pid, signal.SIGTTIN)
    wait_until(lambda: len(gw.worker_pids()) == 3, 5, what="3 workers")
    load, reloads = run_reloads(gw, every=1.0, total=4.0)
    assert not load.failed, load.failed[:5]
    wait_until(lambda: len(gw.worker_pids()) == 2, 10, what="back to 2 workers")
    assert gw.log_text().count("app loaded") == 1, "preload: the app is loaded once"


def test_hup_rereads_config_file(gateway, tmp_dir):
    """HUP reads the -c file again: a new worker count and a new
    --max-requests apply to the new generation; a broken file keeps the
    running settings (one error line) and still replaces nothing badly."""
    conf = os.path.join(tmp_dir, "gw.conf")
    with open(conf, "w") as f:
        f.write("workers = 2\n")
    gw = gateway("hello", "-c", conf)
    wait_until(lambda: len(gw.worker_pids()) == 2, 5, what="2 workers from the file")
    with open(conf, "w") as f:
        f.write("workers = 3\nmax-requests = 2\n")
    os.kill(gw.pid, signal.SIGHUP)
    wait_until(lambda: len(gw.worker_pids()) == 3, 8, what="3 workers after HUP")
    gw.wait_log(r"reload: generation 2, 3 workers")
    pids = [worker_pid(gw.get("/")) for _ in range(9)]
    assert gw.wait_log(r"retiring: max-requests reached"), pids
    with open(conf, "w") as f:
        f.write("workers = many\n")
    gw.allow_log(r"invalid value 'many' for workers", r"reload: configuration not valid")
    os.kill(gw.pid, signal.SIGHUP)
    before = set(gw.worker_pids())
    gw.wait_log(r"reload: configuration not valid; keeping the current settings")
    time.sleep(0.3)
    assert set(gw.worker_pids()) == before, "a broken config must not replace workers"
    assert gw.get("/").status == 200
    with open(conf, "w") as f:          # back to 2, as it started
        f.write("workers = 2\n")
    os.kill(gw.pid, signal.SIGHUP)
    wait_until(lambda: len(gw.worker_pids()) == 2, 8, what="2 workers again")


def test_hup_with_broken_app_keeps_old_workers_serving(gateway):
    """A reload whose new workers cannot load the app must not take capacity
    away: the old generation keeps serving, the new one backs off (no fork
    loop), and once the app is back the reload completes."""
    gw = gateway("hello", workers=2)
    gw.allow_log(r"start-up failed", r"worker \d+ \(pid \d+\): .*hello\.so",
                 r"exited with status 3")
    old = set(gw.wait_workers(2))
    app = gw.args[-1]
    os.rename(app, app + ".moved")
    try:
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log(r"failed before ready \(\d+ in a row\); respawning in", timeout=5)
        for _ in range(20):
            r = gw.get("/")
            assert r.status == 200 and worker_pid(r) in old, r
        spawned = gw.log_text().count("failed before ready")
        assert spawned < 12, "fork loop: %d failed starts" % spawned
    finally:
        os.rename(app + ".moved", app)
    wait_until(lambda: len(gw.worker_pids()) == 2 and not set(gw.worker_pids()) & old, 20,
               what="the reload to complete once the app loads")
    assert gw.get("/").status == 200
