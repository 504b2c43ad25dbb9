"""
Python per-worker hooks: the gateway_runtime.startup / gateway_runtime.shutdown
registry (apps/hooks_app.py) and a Gunicorn-style Python config module given
with -c FILE.py (apps/pyconf_hooks.py): post_fork, post_worker_init,
pre_request, post_request, worker_exit and worker_abort, called at their
moments with the expected arguments, under WSGI and ASGI. A startup hook
that raises stops the gateway before it is ready with one clear line.

Hooks report through files in $GW_TEST_DIR (the tmp_dir fixture).
"""
import json
import os
import time

import pytest

from gwharness import (APPS, build_request, env_for, log_time, read_lines, run_cli,
                       wait_until, worker_pid)

PYCONF = os.path.join(APPS, "pyconf_hooks.py")
SPEC = {"wsgi": "hooks_app:app", "asgi": "hooks_app:asgi_app"}


def registry(d):
    """[(name, pid, detail, time)] from registry.log."""
    out = []
    for ln in read_lines(os.path.join(d, "registry.log")):
        name, pid, detail, t = ln.split()
        out.append((name, int(pid), detail, float(t)))
    return out


def conf_events(d):
    return [json.loads(ln) for ln in read_lines(os.path.join(d, "config-hooks.log"))]


def wait_event(d, pred, timeout=5.0, what="config hook"):
    return wait_until(lambda: [e for e in conf_events(d) if pred(e)], timeout, what=what)




def ready_time(gw, pid):
    lines = [ln for ln in gw.log_lines() if "(pid %d) ready" % pid in ln]
    assert len(lines) == 1, gw.log_tail()
    return log_time(lines[0])


def before(t, logged):
    """t (a time.time()) is not later than a log line stamped `logged` (ms)."""
    return int(t * 1000) / 1000.0 <= logged + 0.0005


@pytest.mark.parametrize("iface", ["wsgi", "asgi"])
def test_registry_hooks_in_order_before_ready(gateway, tmp_dir, iface):
    gw = gateway("py:" + SPEC[iface], workers=2, env=env_for(tmp_dir))
    pids = gw.wait_workers(2)
    loops = {}
    if iface == "asgi":
        for _ in range(4):
            r = gw.get("/loop")
            assert r.status == 200, r
            loops[worker_pid(r)] = r.body.decode()
        assert sorted(loops) == pids, loops
    ev = registry(tmp_dir)
    for p in pids:
        mine = [e for e in ev if e[1] == p]
        assert [e[0] for e in mine] == ["startup-1", "startup-2", "startup-3"], ev
        assert mine[0][2] == "sync" and mine[2][2] == "sync", mine
        assert mine[1][2].startswith("loop="), mine
        if iface == "asgi":     # async hooks run on the loop that serves requests
            assert mine[1][2] == "loop=" + loops[p], (mine, loops)
        assert all(before(e[3], ready_time(gw, p)) for e in mine), \
            "startup hooks must finish before the worker is ready: %r" % mine
    r = gw.get("/")
    assert r.status == 200 and r.body.decode().count("startup-") == 3, r
    assert gw.stop() == 0 and not gw.problems, gw.problems
    ev = registry(tmp_dir)
    for p in pids:
        mine = [e for e in ev if e[1] == p]
        assert [e[0] for e in mine] == ["startup-1", "startup-2", "startup-3",
                                        "shutdown-1", "shutdown-2"], ev
        assert mine[3][2].startswith("loop=") and mine[4][2] == "sync", mine
        if iface == "asgi":
            assert mine[3][2] == "loop=" + loops[p], (mine, loops)


@pytest.mark.parametrize("iface", ["wsgi", "asgi"])
def test_registry_startup_hook_failure_stops_gateway(tmp_dir, iface):
    rc, out, err, left = run_cli(
        ["-w", "2", "-b", "127.0.0.1:0", "--control-socket", os.path.join(tmp_dir, "c.sock"),
         SPEC[iface]], timeout=20,
        env=env_for(tmp_dir, HOOKS_FAIL="no database at db.invalid"))
    assert rc != 0 and not left, (rc, left, err)
    fatal = [ln for ln in err.splitlines() if ln.startswith("gateway:")]
    assert len(fatal) == 1, err
    assert "ValueError" in fatal[0] and "no database at db.invalid" in fatal[0], fatal
    assert not any("ready:" in ln for ln in err.splitlines()), err
    names = [e[0] for e in registry(tmp_dir)]
    assert "startup-1" in names and "startup-3" not in names, names


@pytest.mark.parametrize("iface", ["wsgi", "asgi"])
def test_config_module_hooks(gateway, tmp_dir, iface):
    gw = gateway("py:" + SPEC[iface], "-c", PYCONF, workers=2, env=env_for(tmp_dir))
    pids = gw.wait_workers(2)
    ev = conf_events(tmp_dir)
    ages = set()
    for p in pids:
        mine = [e for e in ev if e["ospid"] == p]
        assert [e["hook"] for e in mine] == ["post_fork", "post_worker_init"], ev
        pf, pwi = mine
        assert pf["server_pid"] == gw.pid and pf["wpid"] == p and pf["booted"] is False, pf
        assert pwi["wpid"] == p and pwi["age"] == pf["age"], (pf, pwi)
        assert isinstance(pf["age"], int), pf
        ages.add(pf["age"])
        assert pf["t"] <= pwi["t"] and before(pwi["t"], ready_time(gw, p)), (pf, pwi)
    assert len(ages) == 2, "each worker has its own age: %r" % ev
    c = gw.connect()
    c.send(build_request("GET", "/?x=1"))
    r1 = c.read_response()
    c.send(build_request("GET", "/status?code=404"))
    r2 = c.read_response()
    c.close()
    assert r1.status == 200 and r2.status == 404, (r1, r2)
    served_by = {worker_pid(r1), worker_pid(r2)}
    wait_event(tmp_dir, lambda e: e["hook"] == "post_request" and e["path"] == "/status",
                      what="post_request for /status")
    ev = conf_events(tmp_dir)
    req_ev = [e for e in ev if e["hook"] in ("pre_request", "post_request")]
    assert [(e["hook"], e["method"], e["path"]) for e in req_ev] == [
        ("pre_request", "GET", "/"), ("post_request", "GET", "/"),
        ("pre_request", "GET", "/status"), ("post_request", "GET", "/status")], req_ev
    assert req_ev[0]["query"] == "x=1" and req_ev[2]["query"] == "code=404", req_ev
    assert req_ev[1]["status"] == 200 and req_ev[3]["status"] == 404, req_ev
    assert req_ev[1]["env_path"] == "/" and req_ev[3]["env_path"] == "/status", req_ev
    assert {e["ospid"] for e in req_ev} == served_by, (req_ev, served_by)
    assert all(e["wpid"] == e["ospid"] for e in req_ev), req_ev
    assert req_ev[0]["t"] <= req_ev[1]["t"] <= req_ev[2]["t"] <= req_ev[3]["t"], req_ev
    assert gw.stop() == 0 and not gw.problems, gw.problems
    ev = conf_events(tmp_dir)
    exits = [e for e in ev if e["hook"] == "worker_exit"]
    assert sorted(e["ospid"] for e in exits) == pids, ev
    assert all(e["server_pid"] == gw.pid and e["wpid"] == e["ospid"] for e in exits), exits
    assert [e["hook"] for e in ev[-2:]] == ["worker_exit"] * 2, "worker_exit comes last: %r" % ev
    assert not any(e["hook"] == "worker_abort" for e in ev), ev


@pytest.mark.allow_log(r"\[critical\].*WORKER TIMEOUT")
def test_config_worker_abort_on_watchdog_kill(gateway, tmp_dir):
    """A WSGI worker stuck in time.sleep(30) with --timeout 1: the client
    gets 504, the master logs WORKER TIMEOUT and sends SIGABRT, the config
    module's worker_abort runs in that worker, and a new worker serves."""
    gw = gateway("py:" + SPEC["wsgi"], "-c", PYCONF, "--timeout", "1", workers=1,
                 env=env_for(tmp_dir))
    old = gw.wait_workers(1)[0]
    old_age = [e for e in conf_events(tmp_dir) if e["hook"] == "post_fork"][0]["age"]
    t0 = time.monotonic()
    r = gw.get("/block", timeout=10)
    assert r.status == 504, r
    assert time.monotonic() - t0 < 5, "the 504 must come at --timeout"
    gw.wait_log(r"\[critical\].*WORKER TIMEOUT \(pid:%d\)" % old, timeout=10)
    ab = wait_event(tmp_dir, lambda e: e["hook"] == "worker_abort", timeout=10,
                    what="worker_abort")
    assert len(ab) == 1 and ab[0]["ospid"] == old and ab[0]["wpid"] == old, ab
    new = gw.wait_workers(1, timeout=10, exclude=[old])[0]
    r = gw.get("/")
    assert r.status == 200 and worker_pid(r) == new, r
    ev = conf_events(tmp_dir)
    pre = [e for e in ev if e["hook"] == "pre_request" and e["path"] == "/block"]
    assert len(pre) == 1 and pre[0]["ospid"] == old and pre[0]["t"] <= ab[0]["t"], ev
    assert not any(e["hook"] == "post_request" and e["path"] == "/block" for e in ev), ev
    assert [e["hook"] for e in ev if e["ospid"] == new][:2] == ["post_fork", "post_worker_init"]
    new_age = [e for e in ev if e["hook"] == "post_fork" and e["ospid"] == new][0]["age"]
    # Gunicorn's worker.age counts spawns: a replacement is younger than its predecessor
    assert new_age > old_age, (old_age, new_age)
