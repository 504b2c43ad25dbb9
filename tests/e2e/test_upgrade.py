"""
USR2 binary upgrade under real concurrent load: a new master starts from the
current executable with the listening sockets inherited, the pidfile moves
to PIDFILE.oldbin, `kill -TERM <old master>` completes the swap, and no
request fails. The clients are strict (no retries): the old master's idle
keep-alive connections get a short grace to send their next request, which
it serves with Connection: close, instead of being closed under the client.
"""
import os
import signal
import time

from gwharness import wait_until, worker_pid
from test_reload import Load


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_usr2_upgrade_then_term_old_master_loses_nothing(gateway, tmp_dir):
    pidfile = os.path.join(tmp_dir, "gw.pid")
    sock = os.path.join(tmp_dir, "gw.sock")
    gw = gateway("hello", "--pid", pidfile, "-b", "unix:" + sock, workers=2)
    old = gw.pid
    assert read_pid(pidfile) == old
    old_workers = set(gw.wait_workers(2))
    load = Load(gw).start()          # strict: no retries allowed
    new = None
    try:
        time.sleep(1.0)
        os.kill(old, signal.SIGUSR2)
        wait_until(lambda: read_pid(pidfile) not in (None, old), 10, what="the new master's pidfile")
        new = read_pid(pidfile)
        assert read_pid(pidfile + ".oldbin") == old
        wait_until(lambda: gw.log_text().count("master: ready:") >= 2, 10,
                   what="the new master ready")
        time.sleep(1.0)                      # both masters serve
        os.kill(old, signal.SIGTERM)
        wait_until(lambda: gw.proc.poll() is not None, 15, what="the old master to exit")
        assert gw.proc.returncode == 0
        time.sleep(1.5)                      # the new master alone
    finally:
        load.finish()
    print("USR2 upgrade: %d requests ok, %d failed, %d retried on reused idle connections"
          % (load.ok, len(load.failed), load.retried))
    assert not load.failed, "%d failed: %s" % (len(load.failed), load.failed[:5])
    assert load.ok > 500
    new_pids = load.pids - old_workers
    assert new_pids, "the new master's workers never served"
    assert os.path.exists(sock), "the old master removed the socket file the new one uses"
    assert not os.path.exists(pidfile + ".oldbin")
    # the new master serves alone; stop it and check it leaves nothing
    assert alive(new)
    os.kill(new, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(new, os.WNOHANG)   # reparented to this test (subreaper)
            if pid == new:
                break
        except ChildProcessError:
            if not alive(new):
                break
        time.sleep(0.05)
    assert not alive(new)
    assert not os.path.exists(sock) and not os.path.exists(pidfile)


def test_usr2_failed_new_master_keeps_old_one(gateway, tmp_dir):
    """If the new master cannot start, the old one keeps serving and takes
    back its pidfile and control socket."""
    pidfile = os.path.join(tmp_dir, "gw.pid")
    gw = gateway("hello", "--pid", pidfile, workers=1,
                 env={"GATEWAY_CMD_ARGS": ""})
    gw.allow_log(r"upgrade: the new master \(pid \d+\) exited with status")
    # make the re-exec fail: its app path is checked at start-up
    app = gw.args[-1]
    os.rename(app, app + ".moved")
    try:
        os.kill(gw.pid, signal.SIGUSR2)
        gw.wait_log(r"upgrade: the new master \(pid \d+\) exited with status [1-9]", timeout=10)
    finally:
        os.rename(app + ".moved", app)
    wait_until(lambda: read_pid(pidfile) == gw.pid, 5, what="the pidfile back")
    assert gw.get("/").status == 200
    assert os.path.exists(gw.ctl_path)
