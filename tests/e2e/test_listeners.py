"""
Listeners (unix socket, IPv6, several at once), the worker-count default, and
graceful stop.
"""
import os
import signal
import socket
import threading
import time

import pytest

from gwharness import Conn, build_request, free_port, have_ipv6, wait_until


def unix_get(path, target="/"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    with Conn(s) as c:
        c.send(build_request("GET", target, [("Connection", "close")]))
        r = c.read_response()
        assert c.closed_by_peer(2.0)
        return r


def test_unix_socket_listener(gateway, tmp_dir):
    path = os.path.join(tmp_dir, "gw.sock")
    gw = gateway("hello", bind="unix:" + path, workers=2)
    assert os.path.exists(path)
    for _ in range(4):
        r = unix_get(path)
        assert r.status == 200 and r.body == b"Hello, World!", r
    assert gw.stop() == 0
    assert not os.path.exists(path), "unix socket file left after stop"


def test_tcp_and_unix_together(gateway, tmp_dir):
    path = os.path.join(tmp_dir, "gw.sock")
    port = free_port()
    gw = gateway("hello", bind=["127.0.0.1:%d" % port, "unix:" + path])
    assert gw.get("/").status == 200
    r = unix_get(path)
    assert r.status == 200 and r.body == b"Hello, World!", r
    assert "127.0.0.1:%d" % port in gw.ready_line(), gw.ready_line()


def test_ipv6_listener(gateway):
    if not have_ipv6():
        pytest.skip("no IPv6 loopback on this host (binding ::1 failed)")
    port = free_port(socket.AF_INET6, "::1")
    gw = gateway("hello", bind="[::1]:%d" % port)
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!", r
    with gw.connect() as c:
        assert c.sock.family == socket.AF_INET6
        c.send(build_request("GET", "/"))
        assert c.read_response().status == 200


def test_workers_default_one(gateway):
    gw = gateway("hello")
    assert len(gw.wait_workers(1)) == 1


def test_workers_default_from_web_concurrency(gateway):
    gw = gateway("hello", env={"WEB_CONCURRENCY": "3"})
    assert len(gw.wait_workers(3)) == 3
    assert "ready: 3 workers" in gw.ready_line(), gw.ready_line()


def test_graceful_stop_finishes_in_flight(gateway):
    gw = gateway("sleep", workers=1)
    idle = gw.connect()
    idle.send(build_request("GET", "/?ms=0"))
    assert idle.read_response().status == 200      # now an idle keep-alive connection
    out = {}

    def slow():
        try:
            out["r"] = gw.request("GET", "/?ms=800", timeout=10)
        except Exception as e:
            out["r"] = e
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    os.kill(gw.pid, signal.SIGTERM)
    assert idle.closed_by_peer(2.0), "idle keep-alive connection not closed on TERM"
    gw.proc.wait(10)
    took = time.monotonic() - t0
    t.join(10)
    r = out.get("r")
    assert r is not None and not isinstance(r, Exception), "in-flight request during TERM: %r" % r
    assert r.status == 200 and r.body == b"slept 800 ms\n", r
    assert (r.header("Connection") or "").lower() == "close", \
        "a response finished during graceful stop should say Connection: close: %r" % r
    assert 0.4 <= took <= 2.0, "master exited %.2fs after TERM (in-flight had ~0.6s left)" % took
    assert gw.stop() == 0


def test_log_level_warning_hides_info(gateway):
    port = free_port()
    gw = gateway("hello", "--log-level", "warning", bind="127.0.0.1:%d" % port,
                 wait_ready=False)

    def serving():
        try:
            return gw.get("/", timeout=1).status == 200
        except OSError:
            return False
    wait_until(serving, 10, interval=0.05, what="the gateway to serve")
    info = [ln for ln in gw.log_lines() if "[info]" in ln or "[debug]" in ln]
    assert not info, "--log-level warning still logs: %s" % info[:5]


def test_default_bind_8000(gateway):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 8000))
    except OSError:
        pytest.skip("127.0.0.1:8000 is in use on this host")
    finally:
        s.close()
    gw = gateway("hello", bind=[])          # no -b at all
    assert "127.0.0.1:8000" in gw.ready_line(), gw.ready_line()
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!", r


def test_stop_during_startup(gateway, tmp_dir):
    """TERM at any moment of start-up: the master exits 0 once it has started
    (a TERM before it logged anything may kill it, but must not orphan a
    child), leaves nothing behind, and logs no error."""
    import gwharness as h
    problems = []
    for i in range(24):
        gw = h.Gateway("worker", workers=2, wait_ready=False,
                       tmpdir=os.path.join(tmp_dir, str(i)))
        time.sleep(0.0005 * i)
        gw.stop()
        logged = gw.log_lines()
        probs = list(gw.problems)
        if not logged:
            probs = [p for p in probs if not p.startswith("master exit status -15")]
        probs += gw.log_problems()
        if probs:
            problems.append("TERM after %.1f ms (%d log lines): %s"
                            % (0.5 * i, len(logged), probs))
        h.reap_strays()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_quick_stop(gateway, tmp_dir, sig):
    path = os.path.join(tmp_dir, "q.sock")
    gw = gateway("sleep", bind="unix:" + path, workers=2)
    c = gw.connect()
    c.send(build_request("GET", "/?ms=3000"))
    time.sleep(0.2)
    t0 = time.monotonic()
    assert gw.stop(sig=sig) == 0, gw.log_tail()
    assert time.monotonic() - t0 < 1.5, "quick stop waited for the in-flight request"
    assert not os.path.exists(path), "unix socket file left after %s" % sig.name


def test_systemd_socket_activation(tmp_dir):
    """LISTEN_FDS/LISTEN_PID (systemd socket activation): the gateway serves
    on the socket it was given at fd 3 instead of binding --bind."""
    import socket as so
    import subprocess
    from gwharness import GATEWAY, EXAMPLES, wait_until
    ls = so.socket(so.AF_INET, so.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]
    log = os.path.join(tmp_dir, "sd.log")
    # the shell's pid becomes the gateway's (exec); the socket is moved to
    # fd 3 in the child before exec (kept by pass_fds)
    cmd = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -w 1 --control-socket "$1" "$2"'
    lfd = ls.fileno()
    with open(log, "w") as lf:
        p = subprocess.Popen(["sh", "-c", cmd, GATEWAY, os.path.join(tmp_dir, "c.sock"),
                              os.path.join(EXAMPLES, "hello.so")],
                             stdout=lf, stderr=lf, pass_fds=(3,),
                             preexec_fn=lambda: os.dup2(lfd, 3))
    ls.close()
    try:
        try:
            wait_until(lambda: "master: ready:" in open(log).read(), 10, what="ready")
        except AssertionError:
            raise AssertionError("not ready; log: %r" % open(log).read())
        assert "systemd: adopting 1 listening sockets" in open(log).read()
        c = so.create_connection(("127.0.0.1", port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        c.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, World!"), data
    finally:
        p.terminate()
        assert p.wait(10) == 0
