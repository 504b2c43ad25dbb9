"""
The control socket and gatewayctl: status (table and --json) matches the real
processes, the master answers within 100 ms while every worker is full,
scale / drain / undrain / stop / config / help, the socket's mode, stale and
in-use handling, peer uid check, and gatewayctl's errors and exit codes.

Every gateway started by the harness has its own control socket, gw.ctl_path.
"""
import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

import gwharness as h
from gwharness import BUILD, app_path, build_request, run_cli, wait_until

GATEWAYCTL = os.path.join(BUILD, "gatewayctl")


def ctl(path, *args, timeout=10.0, env=None):
    """Run build/gatewayctl -s path args...; returns (rc, stdout, stderr)."""
    e = dict(os.environ)
    e.pop("GATEWAY_CONTROL_SOCKET", None)
    e.update(env or {})
    cmd = [GATEWAYCTL] + (["-s", path] if path else []) + list(args)
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=e)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def status(gw):
    rc, out, err = ctl(gw.ctl_path, "status", "--json")
    assert rc == 0 and not err, (rc, out, err)
    return json.loads(out)


def one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one line on stderr, got %r" % err
    assert lines[0].startswith("gatewayctl: "), lines[0]
    return lines[0]


def test_status_json_and_table(gateway):
    gw = gateway("worker", workers=2)
    st = status(gw)
    assert st["version"] and st["pid"] == gw.pid
    assert st["uptime"] >= 0 and st["balance"] == "leastconn"
    assert st["listeners"] == ["127.0.0.1:%d" % gw.port]
    assert st["draining"] is False and st["stopping"] is False
    for k in ("accepted", "requests", "inflight", "queued", "responses_4xx", "responses_5xx",
              "timeouts", "rejected_503"):
        assert k in st["totals"], k
    rows = st["workers"]
    assert sorted(w["pid"] for w in rows) == gw.worker_pids()
    assert [w["slot"] for w in rows] == [0, 1]
    for w in rows:
        assert w["state"] == "ready", w
        assert w["inflight"] == 0 and w["restarts"] == 0 and w["dropped"] == 0
        assert w["rss_kb"] > 0 and w["pss_kb"] > 0, w
        assert w["cpu_seconds"] >= 0 and w["age"] >= 0
        assert w["heartbeat_age"] is not None and 0 <= w["heartbeat_age"] < 5
        assert str(w["pid"]) in w["loop"], w           # the worker's own loop
    served0 = sum(w["served"] for w in rows)
    req0 = st["totals"]["requests"]

    for _ in range(6):
        assert gw.get("/").status == 200
    st = status(gw)
    assert sum(w["served"] for w in st["workers"]) == served0 + 6
    assert st["totals"]["requests"] == req0 + 6

    # --json before the command, and the readable table
    rc, out, err = ctl(gw.ctl_path, "--json", "status")
    assert rc == 0 and json.loads(out)["pid"] == gw.pid
    rc, out, err = ctl(gw.ctl_path, "status")
    assert rc == 0 and not err, (out, err)
    assert ("master pid %d" % gw.pid) in out and "127.0.0.1:%d" % gw.port in out
    assert "SLOT" in out and "PSS-KB" in out
    for pid in gw.worker_pids():
        line = next((ln for ln in out.splitlines() if (" %d " % pid) in ln), None)
        assert line and " ready " in line, out


@pytest.mark.parametrize("app", ["block", "sleep"])
def test_status_answers_while_every_worker_is_full(gateway, app):
    """Every worker is at --max-inflight with slow requests (and one more
    waits in the queue); the master still answers within 100 ms."""
    limit = 4          # block: its pool has 4 threads, so each worker is blocked
    gw = gateway(app, "--max-inflight", limit, workers=2)
    conns = []
    for _ in range(2 * limit + 1):
        conns.append(gw.raw(build_request("GET", "/?ms=2500")))

    def full():
        st = status(gw)
        return st if [w["inflight"] for w in st["workers"]] == [limit, limit] else None
    st = wait_until(full, 2.0, what="every worker at its in-flight limit")
    assert st["totals"]["inflight"] == 2 * limit
    if st["totals"]["queued"] is not None:
        assert st["totals"]["queued"] == 1

    for _ in range(3):
        t0 = time.monotonic()
        rc, out, err = ctl(gw.ctl_path, "status")
        took = time.monotonic() - t0
        assert rc == 0 and "SLOT" in out, (rc, out, err)
        assert took < 0.1, "gatewayctl status took %.0f ms with every worker busy" % (took * 1000)
    for c in conns:
        assert c.read_response().status == 200


def test_scale_up_and_down(gateway):
    gw = gateway("hello", workers=2)
    before = gw.worker_pids()
    rc, out, err = ctl(gw.ctl_path, "scale", "+1")
    assert rc == 0 and "2 -> 3" in out, (out, err)
    pids = gw.wait_workers(3)
    assert set(before) < set(pids)

    def rows(n):
        st = status(gw)
        ok = (len(st["workers"]) == n and all(w["state"] == "ready" for w in st["workers"]))
        return st if ok else None
    st = wait_until(lambda: rows(3), 5.0, what="3 ready rows")
    assert sorted(w["pid"] for w in st["workers"]) == pids
    assert st["workers_target"] == 3

    rc, out, err = ctl(gw.ctl_path, "scale", "-1")
    assert rc == 0 and "3 -> 2" in out, (out, err)
    pids = gw.wait_workers(2)
    st = wait_until(lambda: rows(2), 5.0, what="2 ready rows")
    assert sorted(w["pid"] for w in st["workers"]) == pids == before

    rc, out, err = ctl(gw.ctl_path, "scale", "1")
    assert rc == 0 and "2 -> 1" in out
    gw.wait_workers(1)
    for bad in ("0", "-1", "abc", "+", "2000"):
        rc, out, err = ctl(gw.ctl_path, "scale", bad)
        assert rc == 1 and "scale" in one_line(err), (bad, out, err)
    rc, out, err = ctl(gw.ctl_path, "scale")
    assert rc == 1 and "usage" in one_line(err)


def test_drain_and_undrain(gateway):
    gw = gateway("hello", workers=1)
    rc, out, err = ctl(gw.ctl_path, "drain")
    assert rc == 0 and out.startswith("ok"), (out, err)
    assert status(gw)["draining"] is True
    assert "DRAINING" in ctl(gw.ctl_path, "status")[1]
    rc, out, err = ctl(gw.ctl_path, "undrain")
    assert rc == 0 and out.startswith("ok"), (out, err)
    assert status(gw)["draining"] is False
    assert "DRAINING" not in ctl(gw.ctl_path, "status")[1]


@pytest.mark.parametrize("quick", [False, True])
def test_stop(gateway, quick):
    gw = gateway("sleep", workers=2)
    c = gw.raw(build_request("GET", "/?ms=%d" % (300 if not quick else 5000)))
    time.sleep(0.1)
    t0 = time.monotonic()
    rc, out, err = ctl(gw.ctl_path, "stop", *(["--quick"] if quick else []))
    assert rc == 0 and ("quick" if quick else "graceful") in out, (out, err)
    assert gw.proc.wait(10) == 0, gw.log_tail()
    if quick:
        assert time.monotonic() - t0 < 2.0, "quick stop waited for the in-flight request"
    else:
        assert c.read_response().status == 200     # graceful: the request finished
    assert not os.path.exists(gw.ctl_path), "control socket left after exit"
    assert gw.stop() == 0


def test_socket_mode_and_removal(gateway):
    gw = gateway("hello", workers=1)
    st = os.lstat(gw.ctl_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert st.st_uid == os.geteuid()
    assert gw.stop() == 0
    assert not os.path.exists(gw.ctl_path)


def test_control_socket_in_use_and_stale(gateway, tmp_dir):
    gw = gateway("hello", workers=1)
    rc, out, err, left = run_cli(["-b", "127.0.0.1:%d" % h.free_port(), "--control-socket",
                                  gw.ctl_path, app_path("hello")])
    assert rc != 0 and not left
    assert err.strip() == ("gateway: cannot bind control socket %s: address already in use"
                           % gw.ctl_path), err
    assert status(gw)["pid"] == gw.pid      # the first one is untouched

    stale = os.path.join(tmp_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()                               # a socket file nobody accepts on
    gw2 = gateway("hello", "--control-socket", stale, workers=1)
    assert gw2.ctl_path == stale and status(gw2)["pid"] == gw2.pid


def test_other_uid_refused(gateway):
    gw = gateway("hello", workers=1)
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another uid")
    os.chmod(os.path.dirname(gw.ctl_path), 0o711)
    os.chmod(gw.ctl_path, 0o666)            # let the kernel pass it: SO_PEERCRED decides
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall(b'status\\n'); print(s.recv(4096).decode())")
    p = subprocess.run([sys.executable, "-c", code, gw.ctl_path], capture_output=True,
                       timeout=10, preexec_fn=lambda: os.setuid(65534))
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().startswith("error: permission denied"), p.stdout
    os.chmod(gw.ctl_path, 0o600)
    assert status(gw)["pid"] == gw.pid


def test_errors_and_usage(gateway, tmp_dir):
    gw = gateway("hello", workers=1)
    rc, out, err = ctl(gw.ctl_path, "bogus")
    assert rc == 1 and out == ""
    assert "unknown command 'bogus'" in one_line(err)
    rc, out, err = ctl(gw.ctl_path, "status", "--frobnicate")
    assert rc == 1 and "--frobnicate" in one_line(err)

    missing = os.path.join(tmp_dir, "missing.sock")
    rc, out, err = ctl(missing, "status")
    assert rc == 1 and out == ""
    assert missing in one_line(err)
    # the environment variable names the socket too; -s wins over it
    rc, out, err = ctl(None, "status", env={"GATEWAY_CONTROL_SOCKET": gw.ctl_path})
    assert rc == 0 and "SLOT" in out
    rc, out, err = ctl(missing, "status", env={"GATEWAY_CONTROL_SOCKET": gw.ctl_path})
    assert rc == 1 and missing in one_line(err)

    for args in ([], ["--bogus", "status"], ["-s"]):
        rc, out, err = ctl(None, *args)
        assert rc == 2, (args, out, err)
        assert one_line(err)


def test_help_version_and_server_help(gateway):
    rc, out, err = ctl(None, "--help")
    assert rc == 0
    for cmd in ("status", "scale N|+K|-K", "drain", "undrain", "stop [--quick]", "config"):
        assert cmd in out, cmd
    rc, out, err = ctl(None, "--version")
    assert rc == 0 and out.startswith("gatewayctl ")
    gw = gateway("hello", workers=1)
    rc, out, err = ctl(gw.ctl_path, "help")
    assert rc == 0
    names = [ln.split()[0] for ln in out.splitlines() if ln.strip()]
    assert names == ["status", "scale", "reload", "reopen-logs", "upgrade", "drain", "undrain",
                     "stop", "config", "metrics", "help"], out


def test_config(gateway):
    gw = gateway("hello", "--balance", "rr", "--max-inflight", "7", workers=2)
    rc, out, err = ctl(gw.ctl_path, "config", "--json")
    assert rc == 0, err
    c = json.loads(out)
    assert c["binds"] == ["127.0.0.1:%d" % gw.port]
    assert c["workers"] == 2 and c["balance"] == "rr" and c["max_inflight"] == 7
    assert c["control_socket"] == gw.ctl_path and c["preload"] is False
    assert c["app"] == app_path("hello") + ":gateway_app"
    rc, out, err = ctl(gw.ctl_path, "config")
    assert rc == 0 and "max_inflight" in out and gw.ctl_path in out


def test_many_clients_and_slow_ones(gateway):
    """Idle and half-sent control connections do not hold up others, and a
    request line that is too long is refused."""
    gw = gateway("hello", workers=1)
    idle = []
    for i in range(8):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(gw.ctl_path)
        if i % 2:
            s.sendall(b"stat")           # half a request
        idle.append(s)
    try:
        t0 = time.monotonic()
        assert status(gw)["pid"] == gw.pid
        assert time.monotonic() - t0 < 0.5
        s = idle[1]
        s.sendall(b"us\n")                # completes "status"
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        assert data.startswith(b"gateway ") and b"SLOT" in data, data

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as big:
            big.settimeout(5)
            big.connect(gw.ctl_path)
            try:
                big.sendall(b"x" * 5000 + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = big.recv(4096)
            assert reply.startswith(b"error: request longer"), reply
    finally:
        for s in idle:
            s.close()


def test_ctl_reload_and_reopen_logs(gateway, tmp_dir):
    """gatewayctl reload = HUP (new generation, old workers drained) and
    reopen-logs = USR1, answered while the gateway serves."""
    import subprocess
    from gwharness import GATEWAY
    ctl = os.path.join(os.path.dirname(GATEWAY), "gatewayctl")
    gw = gateway("hello", workers=2)
    before = set(gw.wait_workers(2))
    r = subprocess.run([ctl, "-s", gw.ctl_path, "reload"], capture_output=True, text=True, timeout=5)
    assert r.returncode == 0 and r.stdout.startswith("ok: reload"), r
    wait_until(lambda: len(gw.worker_pids()) == 2 and not set(gw.worker_pids()) & before, 10,
               what="a new generation")
    r = subprocess.run([ctl, "-s", gw.ctl_path, "reopen-logs"], capture_output=True, text=True,
                       timeout=5)
    assert r.returncode == 0, r
    gw.wait_log(r"logs reopened")
    assert gw.get("/").status == 200
