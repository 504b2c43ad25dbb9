"""
test_hooks.py - lifecycle hooks (Gunicorn's names): each hook runs, in the
right process, at the right moment. The hooks example app
(workerlib/examples/hooks.c) appends one line per hook call to $GW_HOOKS_LOG:
  HOOK <name> pid=<getpid()> slot=<n> arg=<a> arg2=<b> wpid=<info pid> src=<app|hooks> [path=..]
"""
import os
import signal
import time

import pytest

import gwharness as h
from gwharness import EXAMPLES, run_cli, wait_until

HOOKS_SO = os.path.join(EXAMPLES, "hooks.so")


def read_hooks(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for ln in f:
            parts = ln.split()
            if len(parts) < 2 or parts[0] != "HOOK":
                continue
            d = {"name": parts[1]}
            for kv in parts[2:]:
                k, _, v = kv.partition("=")
                d[k] = v
            for k in ("pid", "slot", "arg", "arg2", "wpid"):
                d[k] = int(d[k])
            out.append(d)
    return out


def names(ev):
    return [e["name"] for e in ev]


def first(ev, name, **kw):
    for i, e in enumerate(ev):
        if e["name"] == name and all(e.get(k) == v for k, v in kw.items()):
            return i
    raise AssertionError("no %s %s hook in:\n%s" % (name, kw, "\n".join(map(str, ev))))


def wait_hook(path, name, timeout=5.0, **kw):
    def ok():
        return [e for e in read_hooks(path)
                if e["name"] == name and all(e.get(k) == v for k, v in kw.items())]
    return wait_until(ok, timeout, what="hook %s %s" % (name, kw))


def check_startup_order(ev, master, with_on_starting):
    """on_starting < pre_fork(s) < post_fork(s) < post_worker_init(s) < when_ready,
    per slot; all in the right process."""
    ready = first(ev, "when_ready")
    assert ev[ready]["pid"] == master
    if with_on_starting:
        st = first(ev, "on_starting")
        assert ev[st]["pid"] == master and st == 0
    for slot in (0, 1):
        pf = first(ev, "pre_fork", slot=slot)
        po = first(ev, "post_fork", slot=slot)
        pw = first(ev, "post_worker_init", slot=slot)
        assert ev[pf]["pid"] == master
        wpid = ev[po]["pid"]
        assert wpid != master and ev[po]["wpid"] == wpid
        assert ev[pw]["pid"] == wpid
        assert pf < po < pw < ready, (pf, po, pw, ready)


def check_request(ev, master, wpid, path="/x"):
    pre = first(ev, "pre_request", path=path)
    post = first(ev, "post_request", path=path)
    assert ev[pre]["pid"] == ev[post]["pid"] == wpid != master
    assert ev[post]["arg"] == 200
    assert pre < post


@pytest.mark.allow_log(r"\[alert\].*signal")
def test_hooks_preload_master_and_worker(gateway, tmp_dir):
    log = os.path.join(tmp_dir, "hooks.log")
    gw = gateway("hooks", "--preload", workers=2, env={"GW_HOOKS_LOG": log})
    master = gw.pid
    r = gw.get("/x")
    assert r.status == 200 and r.body == b"ok\n"
    wpid = int(r.header("X-Worker-Pid"))
    check_request(read_hooks(log), master, wpid)
    check_startup_order(read_hooks(log), master, with_on_starting=True)

    # TTIN: nworkers_changed(new=3, old=2) in the master
    os.kill(master, signal.SIGTTIN)
    e = wait_hook(log, "nworkers_changed")[0]
    assert (e["pid"], e["arg"], e["arg2"]) == (master, 3, 2)
    gw.wait_workers(3)

    # SIGINT to a worker: worker_int(SIGINT) in that worker, which keeps running
    victim = gw.worker_pids()[0]
    os.kill(victim, signal.SIGINT)
    e = wait_hook(log, "worker_int", pid=victim)[0]
    assert e["arg"] == signal.SIGINT and e["wpid"] == victim
    time.sleep(0.2)
    assert victim in gw.worker_pids()

    # HUP: on_reload in the master, then a new generation
    before = gw.worker_pids()
    os.kill(master, signal.SIGHUP)
    e = wait_hook(log, "on_reload")[0]
    assert e["pid"] == master
    # (a reload starts --workers new ones, whatever TTIN did)
    wait_until(lambda: gw.worker_pids() and not set(gw.worker_pids()) & set(before),
               10, what="a new generation of workers")
    n = len(gw.worker_pids())
    # retired workers ran worker_exit themselves (graceful), then the master
    ev = read_hooks(log)
    for p in before:
        wi = first(ev, "worker_exit", pid=p)
        assert ev[wi]["arg"] == 0
        mi = first(ev, "worker_exit", pid=master, wpid=p)
        ci = first(ev, "child_exit", pid=master, wpid=p)
        assert wi < mi < ci

    # SIGKILL a worker: worker_exit / child_exit in the master, status 128+9
    victim = gw.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    e = wait_hook(log, "child_exit", wpid=victim)[0]
    assert e["pid"] == master and e["arg"] == 128 + signal.SIGKILL
    e = wait_hook(log, "worker_exit", wpid=victim, pid=master)[0]
    assert e["arg"] == 128 + signal.SIGKILL
    assert not [x for x in read_hooks(log) if x["name"] == "worker_exit" and x["pid"] == victim]
    gw.wait_workers(n, exclude=[victim])

    assert gw.stop() == 0
    ev = read_hooks(log)
    assert ev[-1]["name"] == "on_exit" and ev[-1]["pid"] == master
    assert names(ev).count("on_starting") == 1   # the app is preloaded before it, as in Gunicorn
    assert {e["src"] for e in ev} == {"app"}
    kinds = set(names(ev))
    for k in ("when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_int",
              "worker_exit", "child_exit", "nworkers_changed", "on_reload", "on_exit",
              "pre_request", "post_request"):
        assert k in kinds, k


def test_hooks_library_with_other_app(gateway, tmp_dir):
    log = os.path.join(tmp_dir, "hooks.log")
    gw = gateway("hello", "--hooks", HOOKS_SO + ":gateway_hooks", workers=2,
                 env={"GW_HOOKS_LOG": log})
    master = gw.pid
    r = gw.get("/x")
    assert r.status == 200 and r.body == b"Hello, World!"
    wpid = int(r.header("X-Worker-Pid"))
    ev = read_hooks(log)
    check_startup_order(ev, master, with_on_starting=True)
    check_request(ev, master, wpid)
    assert gw.stop() == 0
    ev = read_hooks(log)
    assert {e["src"] for e in ev} == {"hooks"}
    assert ev[-1]["name"] == "on_exit" and ev[-1]["pid"] == master
    assert ev[0]["name"] == "on_starting"
    # graceful stop: each worker's own worker_exit comes before the master's
    for slot in (0, 1):
        w = ev[first(ev, "post_fork", slot=slot)]["pid"]
        assert first(ev, "worker_exit", pid=w) < first(ev, "child_exit", wpid=w)


@pytest.mark.allow_log(r"\[warning\].*registers worker-side hooks")
def test_hooks_library_with_a_python_app_warns(gateway, tmp_dir):
    """Python workers fork from the zygote, which never loaded the --hooks
    library: its master-side hooks run, and the worker-side ones it
    registered are named in one warning at start (not dropped silently)."""
    log = os.path.join(tmp_dir, "hooks.log")
    gw = gateway("py:wsgi_app:app", "--hooks", HOOKS_SO, workers=1,
                 env=h.env_for(GW_HOOKS_LOG=log))
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!", r
    warn = [ln for ln in gw.log_lines() if "registers worker-side hooks" in ln]
    assert len(warn) == 1, warn
    for name in ("post_fork", "post_worker_init", "pre_request", "post_request"):
        assert name in warn[0], warn
    assert "-c FILE.py" in warn[0], warn
    ev = read_hooks(log)
    assert "on_starting" in names(ev) and "pre_fork" in names(ev), names(ev)
    assert "post_fork" not in names(ev) and "pre_request" not in names(ev), names(ev)


@pytest.mark.allow_log(r"\[critical\].*WORKER TIMEOUT", r"\[alert\].*signal")
def test_hooks_worker_abort(gateway, tmp_dir):
    log = os.path.join(tmp_dir, "hooks.log")
    gw = gateway("hooks", "--preload", "--timeout", "1", workers=1,
                 env={"GW_HOOKS_LOG": log})
    master = gw.pid
    wpid = gw.worker_pids()[0]
    try:
        gw.get("/stall?ms=6000", timeout=10)
    except OSError:
        pass
    e = wait_hook(log, "worker_abort", timeout=10)[0]
    assert e["pid"] == wpid and e["arg"] == signal.SIGABRT
    e = wait_hook(log, "child_exit", wpid=wpid)[0]
    assert e["pid"] == master and e["arg"] == 128 + signal.SIGABRT
    ev = read_hooks(log)
    assert first(ev, "pre_request", path="/stall") < first(ev, "worker_abort") \
        < first(ev, "child_exit", wpid=wpid)
    gw.wait_workers(1, timeout=10, exclude=[wpid])


def test_hooks_load_errors(tmp_dir):
    port = h.free_port()
    for spec, want in ((os.path.join(tmp_dir, "nope.so"), "cannot load hooks: "),
                       (HOOKS_SO + ":no_such_symbol", 'no entry point "no_such_symbol"')):
        rc, out, err, left = run_cli(["-b", "127.0.0.1:%d" % port, "--hooks", spec,
                                      "--control-socket", os.path.join(tmp_dir, "c.sock"),
                                      os.path.join(EXAMPLES, "hello.so")])
        assert rc != 0 and not left
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("gateway: cannot load hooks: "), err
        assert want in lines[0], err
