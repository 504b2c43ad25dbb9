"""
Workers: identity per worker (own loop, startup hooks), app loading with and
without --preload, crash and SIGKILL respawn.
"""
import json
import os
import re
import signal
import threading
import time

import pytest

from gwharness import LOG_LINE, wait_until, worker_pid


def worker_info(gw, conn=None):
    r = gw.get("/")
    assert r.status == 200, r
    info = json.loads(r.body)
    assert info["pid"] == worker_pid(r), \
        "JSON pid %s differs from X-Worker-Pid %s" % (info["pid"], worker_pid(r))
    return info


def test_four_workers_own_loop_and_hook(gateway):
    gw = gateway("worker", "--balance", "rr", workers=4)
    children = set(gw.wait_workers(4))
    seen = {}
    for _ in range(24):
        info = worker_info(gw)
        seen.setdefault(info["pid"], []).append(info)
    assert set(seen) == children, \
        "pids serving %s differ from the master's children %s" % (sorted(seen), sorted(children))
    loops, hooks, slots = set(), set(), set()
    for pid, infos in seen.items():
        pairs = {(i["loop"], i["hook"]) for i in infos}
        assert len(pairs) == 1, "pid %d reported different loop/hook values: %s" % (pid, pairs)
        loop, hook = pairs.pop()
        assert isinstance(hook, str) and hook and hook.lower() not in ("null", "none", "unset"), \
            "pid %d has no startup-hook value: %r" % (pid, hook)
        assert loop, "pid %d reports an empty loop identity" % pid
        served = [i["served"] for i in infos]
        assert served == sorted(served) and len(set(served)) == len(served), \
            "pid %d served counter not increasing: %s" % (pid, served)
        loops.add(loop)
        hooks.add(hook)
        slots.add(infos[0]["slot"])
    assert len(loops) == 4, "expected 4 distinct loop identities, got %s" % loops
    assert len(hooks) == 4, "each worker should run its own startup hook: %s" % hooks
    assert slots == {0, 1, 2, 3}, "expected slots 0..3, got %s" % slots


def app_loaded_lines(gw):
    out = []
    for ln in gw.log_lines():
        if "app loaded:" in ln:
            m = re.search(r"app loaded: (\S+) in pid (\d+)", ln)
            assert m, "unparsable app-loaded line: %r" % ln
            lm = LOG_LINE.match(ln)
            assert lm and lm.group(2) == "info", "app-loaded line not at [info]: %r" % ln
            out.append((int(lm.group(3)), int(m.group(2)), m.group(1)))
    return out


def test_preload_loads_once_in_master(gateway):
    gw = gateway("worker", "--preload", "--balance", "rr", workers=3)
    workers = set(gw.wait_workers(3))
    lines = app_loaded_lines(gw)
    assert len(lines) == 1, "with --preload expected one 'app loaded' line, got %s" % lines
    logpid, inpid, what = lines[0]
    assert logpid == gw.pid and inpid == gw.pid, \
        "app loaded in pid %d (line pid %d), master is %d" % (inpid, logpid, gw.pid)
    assert what.endswith("worker.so:gateway_app"), what
    # startup hooks still run in each worker, after fork, on its own loop
    infos = {}
    for _ in range(6):
        i = worker_info(gw)
        infos[i["pid"]] = i
    assert set(infos) == workers, "served by %s, workers %s" % (sorted(infos), sorted(workers))
    assert len({i["hook"] for i in infos.values()}) == 3, infos
    assert len({i["loop"] for i in infos.values()}) == 3, infos


def test_no_preload_loads_in_each_worker(gateway):
    gw = gateway("hello", workers=3)
    workers = set(gw.wait_workers(3))
    lines = app_loaded_lines(gw)
    assert len(lines) == 3, "without --preload expected 3 'app loaded' lines, got %s" % lines
    pids = {inpid for _, inpid, _ in lines}
    assert len(pids) == 3, "expected 3 distinct loading pids: %s" % lines
    assert pids == workers, "loading pids %s are not the workers %s (master %d)" % (
        pids, workers, gw.pid)
    assert all(logpid == inpid for logpid, inpid, _ in lines), lines


@pytest.mark.allow_log(r"\[alert\].*signal")
def test_crash_gets_502_others_unaffected_and_respawn(gateway):
    gw = gateway("crash", workers=2)
    before = set(gw.wait_workers(2))
    results = {}

    def ok(name, delay_ms):
        try:
            results[name] = gw.request("GET", "/ok?ms=%d" % delay_ms, timeout=10)
        except Exception as e:  # recorded, asserted below
            results[name] = e

    # one slow /ok in flight on worker A; leastconn must then send /boom to B
    t1 = threading.Thread(target=ok, args=("ok1", 1200))
    t1.start()
    time.sleep(0.2)
    boom = gw.request("GET", "/boom", timeout=10)
    assert boom.status == 502, "crash before any response byte should give 502, got %r" % boom
    # more /ok while ok1 is still in flight (the dead worker must not get them)
    threads = [threading.Thread(target=ok, args=("ok%d" % i, 500)) for i in (2, 3, 4)]
    for t in threads:
        t.start()
    for t in [t1] + threads:
        t.join(15)
    for name in ("ok1", "ok2", "ok3", "ok4"):
        r = results.get(name)
        assert not isinstance(r, Exception) and r is not None, "%s failed: %r" % (name, r)
        assert r.status == 200 and r.body == b"ok\n", "%s: %r" % (name, r)
    now = set(gw.wait_workers(2, exclude=()))
    dead = wait_until(lambda: before - set(gw.worker_pids()), 5, what="the crashed worker to go")
    assert len(dead) == 1, "expected exactly one worker to die, gone: %s" % dead
    dead = dead.pop()
    survivor = (before - {dead}).pop()
    assert worker_pid(results["ok1"]) == survivor, \
        "ok1 ran on %d, survivor is %d, crashed %d" % (worker_pid(results["ok1"]), survivor, dead)
    now = set(gw.wait_workers(2, exclude=[dead]))
    new = now - before
    assert len(new) == 1, "expected one replacement worker, children %s, before %s" % (now, before)
    new = new.pop()
    served = set()
    wait_until(lambda: served.add(gw.get("/ok").worker_pid) or new in served, 5,
               interval=0.05, what="the replacement worker %d to serve" % new)
    alerts = [ln for ln in gw.log_lines() if "[alert]" in ln]
    assert alerts, "no [alert] logged for the crashed worker"
    assert any(str(dead) in ln for ln in alerts), \
        "no [alert] line names the crashed pid %d: %s" % (dead, alerts)


@pytest.mark.allow_log(r"\[alert\].*signal")
def test_sigkill_worker_is_replaced(gateway):
    gw = gateway("hello", workers=2)
    before = gw.wait_workers(2)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    now = set(gw.wait_workers(2, exclude=[victim]))
    new = now - set(before)
    assert len(new) == 1, "expected one new worker: before %s now %s" % (before, now)
    new = new.pop()
    served = set()
    wait_until(lambda: served.add(gw.get("/").worker_pid) or new in served, 5,
               interval=0.05, what="the replacement worker %d to serve" % new)
    for _ in range(10):
        r = gw.get("/")
        assert r.status == 200 and r.body == b"Hello, World!"
        assert r.worker_pid in now
    alerts = [ln for ln in gw.log_lines() if "[alert]" in ln]
    assert any(str(victim) in ln for ln in alerts), \
        "expected an [alert] naming the killed worker %d; alerts: %s" % (victim, alerts)


@pytest.mark.allow_log(r"\[alert\].*signal")
def test_rr_skips_dead_worker(gateway):
    gw = gateway("hello", "--balance", "rr", workers=2)
    a, b = gw.wait_workers(2)
    mark = gw.log_mark()
    os.kill(b, signal.SIGKILL)
    gw.wait_log(r"\[alert\].*%d" % b, since=mark)   # the master has noticed
    pids = []
    for _ in range(10):
        r = gw.get("/")
        assert r.status == 200 and r.body == b"Hello, World!", \
            "request after a worker died (rr must skip it): %r" % r
        pids.append(worker_pid(r))
    assert b not in pids, pids
    (new,) = set(gw.wait_workers(2, exclude=[b])) - {a}
    served = set()
    wait_until(lambda: served.add(gw.get("/").worker_pid) or new in served, 5,
               interval=0.05, what="the replacement worker %d to serve" % new)


def test_workers_hold_only_their_channel(gateway, tmp_dir):
    """A forked worker closes every descriptor it inherited except its own
    channel (fd 3): no listener, no client connection, no other worker's
    channel. Checked while a client connection is open on the master."""
    from gwharness import fd_targets
    path = os.path.join(tmp_dir, "w.sock")
    gw = gateway("hello", bind="unix:" + path, workers=3)
    pids = gw.wait_workers(3)
    c = gw.connect()              # an accepted client fd exists in the master now
    master_sockets = {t for t in fd_targets(gw.pid).values() if t.startswith("socket:")}
    for pid in pids:
        fds = fd_targets(pid)
        sockets = {fd: t for fd, t in fds.items() if t.startswith("socket:")}
        assert list(sockets) == [3], "worker %d holds sockets %s" % (pid, sockets)
        assert sockets[3] not in master_sockets, "worker %d shares a master socket" % pid
        # 0-2 are the log; the rest are its own loop's (epoll, eventfd, pipes)
        for fd, t in fds.items():
            if fd > 3:
                assert t.startswith("anon_inode:") or t.startswith("pipe:"), \
                    "worker %d has unexpected fd %d -> %s" % (pid, fd, t)
    c.close()
