"""
--preload for Python apps: one zygote process imports the app once (then
gc.freeze()) and forks every worker on the master's request; the workers are
re-parented to the master (a child subreaper). See gateway/zygote.c,
workerlib/python/gateway_runtime/_zygote.py and proto/PROTOCOL.md ("The
zygote channel"). The app is tests/e2e/apps/preload_app.py.
"""
import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from gwharness import (APPS, BUILD, fd_targets, proc_stat, run_cli, wait_until,
                       worker_pid)

GATEWAYCTL = os.path.join(BUILD, "gatewayctl")
ZYGOTE_READY = re.compile(r"\] master: zygote \(pid (\d+)\) ready")


# ---------------------------------------------------------------- helpers

def env_for(tmp_dir, **extra):
    e = {"PYTHONPATH": APPS, "PRELOAD_IMPORT_LOG": os.path.join(tmp_dir, "imports.log")}
    e.update(extra)
    return e


def read_pids(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def zygote_pid(gw):
    """The pid of the latest zygote the master reported ready."""
    pids = [int(m.group(1)) for m in map(ZYGOTE_READY.search, gw.log_lines()) if m]
    assert pids, "no 'zygote (pid N) ready' line in the log:\n" + gw.log_tail()
    return pids[-1]


def info_from_all(gw, pids, tries=60, path="/info"):
    """GET path until every worker in pids has answered; {pid: info}."""
    got = {}
    for _ in range(tries):
        r = gw.get(path)
        assert r.status == 200, r
        i = json.loads(r.body)
        got[i["pid"]] = i
        if set(pids) <= set(got):
            return got
    raise AssertionError("not every worker answered: wanted %s, got %s" % (pids, sorted(got)))


def uss_kb(pid):
    """Private (unique) memory of a process: Private_Clean + Private_Dirty."""
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def rss_of(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    return 0


def listener_inodes(port):
    """Socket inodes listening on 127.0.0.1:port (from /proc/net/tcp)."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                out.add("socket:[%s]" % inode)
    return out


def ctl(gw, *args):
    p = subprocess.run([GATEWAYCTL, "-s", gw.ctl_path] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10, text=True)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------- tests

def test_imported_once_in_the_zygote(gateway, tmp_dir):
    """-w 3: the module is imported once, by the zygote; the workers are the
    master's children, got the app from the zygote and have a frozen gc."""
    env = env_for(tmp_dir)
    gw = gateway("py:preload_app:app", "--preload", "--balance", "rr", workers=3, env=env)
    z = zygote_pid(gw)
    pids = gw.wait_workers(3, timeout=10.0)
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z], "the app must be imported exactly once"
    assert gw.zygote_pids() == [z] and z not in pids
    assert proc_stat(z)[1] == gw.pid
    infos = info_from_all(gw, pids)
    for pid in pids:
        i = infos[pid]
        assert i["ppid"] == gw.pid and proc_stat(pid)[1] == gw.pid, i
        assert i["imported_by"] == z, i
        assert i["freeze_count"] > 0, "gc.freeze() in the zygote must carry into the worker: %r" % i
    # Neither the zygote nor its workers hold the master's listening socket.
    listen = listener_inodes(gw.port)
    assert listen, "cannot find the listener in /proc/net/tcp"
    for p in [z] + pids:
        assert not listen & set(fd_targets(p).values()), (p, fd_targets(p))
    assert sorted(fd_targets(z)) == [0, 1, 2, 3], fd_targets(z)
    # gatewayctl status lists the workers, not the zygote.
    rc, out, err = ctl(gw, "status", "--json")
    assert rc == 0, (out, err)
    assert sorted(w["pid"] for w in json.loads(out)["workers"]) == pids
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!" and worker_pid(r) in pids


def test_preloaded_memory_is_shared(gateway, tmp_dir):
    """~50 MB of small objects built at import: each worker maps them (Rss)
    but owns almost none of them (Private), also after a full collection."""
    gw = gateway("py:preload_app:app", "--preload", "--balance", "rr", workers=2,
                 env=env_for(tmp_dir, PRELOAD_BIG="1"))
    z = zygote_pid(gw)
    pids = gw.wait_workers(2, timeout=10.0)
    assert rss_of(z) > 50 * 1024, "the zygote should hold the ~50 MB it built"
    for pid in pids:
        assert rss_of(pid) > 50 * 1024, (pid, rss_of(pid))
        assert uss_kb(pid) < 20 * 1024, \
            "worker %d owns %d kB privately right after boot" % (pid, uss_kb(pid))
    infos = info_from_all(gw, pids, path="/collect")   # gc.collect() in each worker
    assert all(i["big"] == 330000 and i["imported_by"] == z for i in infos.values()), infos
    for pid in pids:
        assert uss_kb(pid) < 25 * 1024, \
            "worker %d owns %d kB after gc.collect(): the frozen objects were written to" \
            % (pid, uss_kb(pid))


@pytest.mark.allow_log(r"worker \d+ \(pid \d+\) killed by signal 9")
def test_killed_worker_is_forked_again_from_the_zygote(gateway, tmp_dir):
    env = env_for(tmp_dir)
    gw = gateway("py:preload_app:app", "--preload", "--balance", "rr", workers=2, env=env)
    z = zygote_pid(gw)
    before = gw.wait_workers(2, timeout=10.0)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    after = gw.wait_workers(2, exclude=[victim], timeout=10.0)
    new = (set(after) - set(before)).pop()
    assert proc_stat(new)[1] == gw.pid
    infos = info_from_all(gw, after)
    assert infos[new]["imported_by"] == z and infos[new]["freeze_count"] > 0, infos[new]
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z], "a respawn must not import the app again"
    assert gw.zygote_pids() == [z]


def test_scale_up_forks_one_worker_per_loop_iteration(gateway, tmp_dir):
    """`scale +3` asks the zygote for one worker per loop iteration (each
    spawn blocks the loop for the zygote's double fork), so the front serves
    clients in between; all three still come up, forked from the zygote."""
    env = env_for(tmp_dir)
    gw = gateway("py:preload_app:app", "--preload", "--log-level", "debug", workers=1,
                 env=env)
    z = zygote_pid(gw)
    before = gw.wait_workers(1, timeout=10.0)
    rc, out, err = ctl(gw, "scale", "+3")
    assert rc == 0 and "1 -> 4" in out, (out, err)
    after = gw.wait_workers(4, timeout=15.0)
    assert set(before) < set(after)
    deferred = gw.wait_log(r"worker \d+: spawn deferred to the next loop iteration", count=2)
    assert len(deferred) >= 2, deferred
    for pid in set(after) - set(before):
        assert proc_stat(pid)[1] == gw.pid
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z], "scaling up must not import again"
    for _ in range(8):
        assert gw.get("/").status == 200
    rc, out, err = ctl(gw, "scale", "1")     # back to the channels the fd check expects
    assert rc == 0, (out, err)
    wait_until(lambda: len(gw.worker_pids()) == 1, 10.0, what="scaled back to 1")


@pytest.mark.allow_log(r"zygote \(pid \d+\) killed by signal 9")
def test_killed_zygote_is_restarted_and_workers_keep_serving(gateway, tmp_dir):
    env = env_for(tmp_dir)
    gw = gateway("py:preload_app:app", "--preload", "--balance", "rr", workers=2, env=env)
    z = zygote_pid(gw)
    pids = gw.wait_workers(2, timeout=10.0)
    mark = gw.log_mark()
    os.kill(z, signal.SIGKILL)
    served = 0

    def restarted():
        nonlocal served
        r = gw.get("/")        # the workers serve while there is no zygote
        assert r.status == 200 and worker_pid(r) in pids, r
        served += 1
        return any(ZYGOTE_READY.search(ln) for ln in gw.log_since(mark))
    wait_until(restarted, 10.0, what="a new zygote")
    z2 = zygote_pid(gw)
    assert z2 != z and served >= 1
    assert proc_stat(z2)[1] == gw.pid
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z, z2]
    assert gw.worker_pids() == pids, "the workers must not be touched by the zygote's death"
    # Scaling up now forks from the new zygote (TTIN, then gatewayctl scale).
    os.kill(gw.pid, signal.SIGTTIN)
    three = gw.wait_workers(3, timeout=10.0)
    rc, out, err = ctl(gw, "scale", "+1")
    assert rc == 0 and "3 -> 4" in out, (out, err)
    four = gw.wait_workers(4, timeout=10.0)
    assert set(pids) < set(three) < set(four)
    infos = info_from_all(gw, four)
    for pid in set(four) - set(pids):
        assert infos[pid]["imported_by"] == z2 and infos[pid]["ppid"] == gw.pid, infos[pid]
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z, z2]
    rc, out, err = ctl(gw, "scale", "2")     # back to the channels the fd check expects
    assert rc == 0, (out, err)
    gw.wait_workers(2, timeout=10.0)


def test_hup_imports_again_in_a_new_zygote(gateway, tmp_dir):
    """Unlike Gunicorn's --preload, HUP picks up code changes: a new zygote
    imports the module again, the new workers serve the new code, and the
    old zygote goes away."""
    appdir = os.path.join(tmp_dir, "app")
    os.makedirs(appdir)
    src = os.path.join(appdir, "preload_app.py")
    shutil.copy(os.path.join(APPS, "preload_app.py"), src)
    env = env_for(tmp_dir, PYTHONPATH=appdir, PYTHONDONTWRITEBYTECODE="1")
    gw = gateway("py:preload_app:app", "--preload", "--balance", "rr", workers=2, env=env)
    z1 = zygote_pid(gw)
    old = gw.wait_workers(2, timeout=10.0)
    assert gw.get("/").header("X-Version") == "v1"
    with open(src) as f:
        code = f.read()
    with open(src, "w") as f:
        f.write(code.replace('VERSION = "v1"', 'VERSION = "v2-reloaded"'))
    os.kill(gw.pid, signal.SIGHUP)
    new = gw.wait_workers(2, exclude=old, timeout=10.0)
    z2 = zygote_pid(gw)
    assert z2 != z1
    wait_until(lambda: proc_stat(z1) is None, 5.0, what="the old zygote to exit")
    assert gw.zygote_pids() == [z2]
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z1, z2]
    infos = info_from_all(gw, new)
    for pid in new:
        assert infos[pid]["version"] == "v2-reloaded" and infos[pid]["imported_by"] == z2, infos
        assert infos[pid]["ppid"] == gw.pid
    gw.wait_log(r"zygote \(pid %d\) exited" % z1)


@pytest.mark.allow_log(r"zygote \(pid \d+\): cannot import preload_app",
                       r"zygote \(pid \d+\) exited with status 3 before it was ready")
def test_hup_with_broken_code_keeps_the_old_workers(gateway, tmp_dir):
    """A reload whose import fails starts no worker: the old ones keep
    serving, the new zygote is retried with backoff, and a later HUP with
    fixed code completes the reload."""
    appdir = os.path.join(tmp_dir, "app")
    os.makedirs(appdir)
    src = os.path.join(appdir, "preload_app.py")
    shutil.copy(os.path.join(APPS, "preload_app.py"), src)
    with open(src) as f:
        good = f.read()
    env = env_for(tmp_dir, PYTHONPATH=appdir, PYTHONDONTWRITEBYTECODE="1")
    gw = gateway("py:preload_app:app", "--preload", workers=2, env=env)
    z1 = zygote_pid(gw)
    old = gw.wait_workers(2, timeout=10.0)
    with open(src, "w") as f:
        f.write(good + "\nraise RuntimeError('broken deploy')\n")
    mark = gw.log_mark()
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log(r"cannot import preload_app: RuntimeError: broken deploy", since=mark)
    for _ in range(10):
        r = gw.get("/")
        assert r.status == 200 and worker_pid(r) in old, r
    assert gw.worker_pids() == old
    assert z1 in gw.zygote_pids(), "the old zygote stays until a new one is ready"
    with open(src, "w") as f:
        f.write(good.replace('VERSION = "v1"', 'VERSION = "v3-fixed"'))
    os.kill(gw.pid, signal.SIGHUP)
    new = gw.wait_workers(2, exclude=old, timeout=10.0)
    z = zygote_pid(gw)
    assert z != z1
    wait_until(lambda: gw.zygote_pids() == [z], 5.0, what="only the new zygote left")
    infos = info_from_all(gw, new)
    assert all(i["version"] == "v3-fixed" for i in infos.values()), infos


def test_import_error_is_one_line_and_leaves_nothing(tmp_dir):
    with open(os.path.join(tmp_dir, "boom_at_import.py"), "w") as f:
        f.write("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": APPS + ":" + tmp_dir}
    ctl_path = os.path.join(tmp_dir, "ctl.sock")
    for spec, needle in (("no_such_module_xyz:app", "cannot import no_such_module_xyz"),
                         ("preload_app:nope", "has no attribute 'nope'"),
                         ("boom_at_import:app", "RuntimeError: boom at import")):
        rc, out, err, left = run_cli(["--preload", "-w", "3", "-b", "127.0.0.1:0",
                                      "--control-socket", ctl_path, spec], env=env)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 1 and len(lines) == 1, (spec, rc, err)
        assert lines[0].startswith("gateway: ") and needle in lines[0], (spec, err)
        assert left == [], "processes left behind: %s" % left
        assert not os.path.exists(ctl_path), "nothing may be bound after a failed start"


def test_asgi_app_with_preload(gateway, tmp_dir):
    """An ASGI app: imported once by the zygote, lifespan startup per worker."""
    life = os.path.join(tmp_dir, "lifespan.log")
    env = env_for(tmp_dir, PRELOAD_LIFESPAN_LOG=life)
    gw = gateway("py:preload_app:asgi", "--preload", "--balance", "rr", workers=2, env=env)
    z = zygote_pid(gw)
    pids = gw.wait_workers(2, timeout=10.0)
    assert read_pids(env["PRELOAD_IMPORT_LOG"]) == [z]
    assert sorted(read_pids(life)) == pids, "lifespan startup runs once in each worker"
    infos = info_from_all(gw, pids)
    for pid in pids:
        assert infos[pid]["asgi"] and infos[pid]["imported_by"] == z, infos[pid]
        assert infos[pid]["freeze_count"] > 0 and infos[pid]["ppid"] == gw.pid
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, ASGI!"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_takes_the_zygote_along(gateway, tmp_dir, sig):
    gw = gateway("py:preload_app:app", "--preload", workers=2, env=env_for(tmp_dir))
    z = zygote_pid(gw)
    pids = gw.wait_workers(2, timeout=10.0)
    assert gw.stop(sig) == 0
    assert gw.problems == [], gw.problems
    for p in [z] + pids:
        assert proc_stat(p) is None, "pid %d still there after the stop" % p
    gw.wait_log(r"zygote \(pid %d\) (exited|killed)" % z, timeout=1.0)


def test_ksm_marks_the_zygote_and_its_workers_mergeable(gateway, tmp_dir):
    import ctypes
    if ctypes.CDLL(None).prctl(68, 0, 0, 0, 0) < 0:      # PR_GET_MEMORY_MERGE
        pytest.skip("this kernel has no PR_SET_MEMORY_MERGE")
    gw = gateway("py:preload_app:app", "--preload", "--ksm", "--balance", "rr", workers=2,
                 env=env_for(tmp_dir))
    pids = gw.wait_workers(2, timeout=10.0)
    infos = info_from_all(gw, pids)
    assert all(i["ksm"] == 1 for i in infos.values()), infos
    try:
        with open("/sys/kernel/mm/ksm/run") as f:
            run = f.read().strip()
    except OSError:
        run = None
    warned = [ln for ln in gw.log_lines() if "gateway_zygote: warning: --ksm" in ln]
    assert len(warned) == (1 if run == "0" else 0), warned


def test_error_log_reaches_zygote_workers(gateway, tmp_dir):
    """The zygote starts before --error-logfile takes over stderr; the
    master hands it the log (and the reopened one after USR1), so what its
    workers write to stderr lands in the file, also after a rotation."""
    elog = os.path.join(tmp_dir, "error.log")

    def read():
        try:
            with open(elog) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    gw = gateway("py:preload_app:app", "--preload", "--error-logfile", elog, workers=1,
                 env=env_for(tmp_dir), wait_ready=False)
    wait_until(lambda: "master: ready:" in read(), 10, what="the ready line in the error log")
    pid = worker_pid(gw.get("/stderr"))
    gw.seen_pids.update(gw.worker_pids())
    wait_until(lambda: "preload_app stderr from %d" % pid in read(), 3,
               what="the worker's stderr line in the error log")
    os.rename(elog, elog + ".1")
    os.kill(gw.pid, signal.SIGUSR1)
    wait_until(lambda: "logs reopened" in read(), 3, what="the new error log")
    assert worker_pid(gw.get("/")) == pid, "USR1 must not cost the worker"
    os.kill(gw.pid, signal.SIGTTIN)        # a worker forked after the rotation
    new = gw.wait_workers(2, timeout=10)
    other = (set(new) - {pid}).pop()
    for _ in range(40):
        if worker_pid(gw.get("/stderr")) == other:
            break
    wait_until(lambda: "preload_app stderr from %d" % other in read(), 3,
               what="the new worker's stderr line in the reopened log")
    os.kill(gw.pid, signal.SIGTTOU)
    gw.wait_workers(1, timeout=10.0)
    assert "preload_app stderr" not in gw.log_text(), "nothing may go to the old stderr"
