"""
Configuration sources: -c FILE, GATEWAY_CMD_ARGS, WEB_CONCURRENCY and PORT,
their precedence (flags > environment > file > defaults), --check-config,
--print-config read back with -c, --pid and --umask.
"""
import os
import socket
import subprocess

import pytest

from gwharness import app_path, free_port, run_cli, wait_until

HELLO = app_path("hello")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def refused(port):
    s = socket.socket()
    try:
        s.settimeout(2)
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def serve_on(gw, port, host="127.0.0.1"):
    """Point the harness at the listener the config chose and check it serves."""
    gw.host, gw.port = host, port
    r = gw.get("/")
    assert r.status == 200 and r.body == b"Hello, World!", r
    assert "127.0.0.1:%d" % port in gw.ready_line() or "0.0.0.0:%d" % port in gw.ready_line()


def one_error_line(rc, out, err, left, status=2):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == status, "exit %s (want %s); stderr %r" % (rc, status, err)
    assert len(lines) == 1 and lines[0].startswith("gateway: "), err
    assert not out.strip(), "nothing on stdout on error: %r" % out
    assert not left, "processes left after a failed start: %s" % left
    return lines[0]


def test_file_gives_workers_and_bind(gateway, tmp_dir):
    port = free_port()
    conf = write(os.path.join(tmp_dir, "gw.conf"),
                 "# gateway settings\n\n"
                 "workers = 3   # three of them\n"
                 "bind = \"127.0.0.1:%d\"\n"
                 "balance = rr\n"
                 "preload = false\n" % port)
    gw = gateway("hello", "-c", conf, bind=[])
    gw.wait_workers(3)
    serve_on(gw, port)
    assert "balance rr" in "\n".join(gw.log_lines())


def test_precedence_flag_env_file(gateway, tmp_dir):
    p_file, p_env = free_port(), free_port()
    conf = write(os.path.join(tmp_dir, "gw.conf"),
                 "workers = 2\nbind = 127.0.0.1:%d\n" % p_file)

    # file alone
    gw = gateway("hello", "-c", conf, bind=[])
    gw.wait_workers(2)
    serve_on(gw, p_file)
    assert gw.stop() == 0

    # WEB_CONCURRENCY beats the file
    gw = gateway("hello", "-c", conf, bind=[], env={"WEB_CONCURRENCY": "3"})
    gw.wait_workers(3)
    serve_on(gw, p_file)
    assert gw.stop() == 0

    # GATEWAY_CMD_ARGS beats WEB_CONCURRENCY and the file; its bind replaces the file's
    gw = gateway("hello", "-c", conf, bind=[],
                 env={"WEB_CONCURRENCY": "3",
                      "GATEWAY_CMD_ARGS": "-w 4 --bind '127.0.0.1:%d'" % p_env})
    gw.wait_workers(4)
    serve_on(gw, p_env)
    assert refused(p_file), "the file's bind should have been replaced"
    assert gw.stop() == 0

    # real flags beat everything
    gw = gateway("hello", "-c", conf, "-w", "1", bind=[],
                 env={"WEB_CONCURRENCY": "3", "GATEWAY_CMD_ARGS": "-w 4"})
    gw.wait_workers(1)
    serve_on(gw, p_file)


def test_config_file_from_env_and_port(gateway, tmp_dir):
    port = free_port()
    conf = write(os.path.join(tmp_dir, "gw.conf"), "workers = 2\n")
    gw = gateway("hello", bind=[],
                 env={"GATEWAY_CMD_ARGS": "-c %s" % conf, "PORT": str(port)})
    gw.wait_workers(2)
    serve_on(gw, port)
    assert "0.0.0.0:%d" % port in gw.ready_line()


def test_check_config_ok_binds_and_loads_nothing(tmp_dir):
    # the port is taken and the "app" is not a shared object: --check-config
    # neither binds nor loads, so it is still OK
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        sock = os.path.join(tmp_dir, "s.sock")
        fake = write(os.path.join(tmp_dir, "app.so"), "not an ELF object\n")
        conf = write(os.path.join(tmp_dir, "gw.conf"),
                     "bind = 127.0.0.1:%d\nbind = unix:%s\nworkers = 4\npreload = true\n"
                     "app = %s\n" % (port, sock, fake))
        pid = os.path.join(tmp_dir, "gw.pid")
        rc, out, err, left = run_cli(["-c", conf, "--pid", pid, "--check-config"])
        assert (rc, out, err) == (0, "config OK\n", ""), (rc, out, err)
        assert not left
        assert not os.path.exists(sock) and not os.path.exists(pid)
    finally:
        s.close()


@pytest.mark.parametrize("case", ["file", "env", "flag", "app", "webconc"])
def test_check_config_errors(tmp_dir, case):
    sock = os.path.join(tmp_dir, "s.sock")
    conf = write(os.path.join(tmp_dir, "gw.conf"),
                 "bind = unix:%s\n# ok so far\nworkers = %s\n"
                 % (sock, "many" if case == "file" else "2"))
    args, env, status = ["-c", conf, "--check-config", HELLO], {}, 2
    if case == "env":
        env = {"GATEWAY_CMD_ARGS": "--nope"}
    elif case == "flag":
        args = ["--workers", "x"] + args
    elif case == "app":
        args[-1] = os.path.join(tmp_dir, "missing.so")
        status = 1
    elif case == "webconc":
        env = {"WEB_CONCURRENCY": "0"}
    line = one_error_line(*run_cli(args, env=env), status=status)
    want = {"file": "gateway: %s:3: invalid value 'many' for workers" % conf,
            "env": "gateway: GATEWAY_CMD_ARGS: unknown option '--nope'",
            "flag": "gateway: --workers: invalid value 'x'",
            "app": "missing.so",
            "webconc": "gateway: WEB_CONCURRENCY: invalid value '0' for workers"}[case]
    assert want in line, line
    assert not os.path.exists(sock)


def test_print_config_round_trip(tmp_dir):
    port = free_port()
    conf = write(os.path.join(tmp_dir, "gw.conf"),
                 "workers = 2\nkeep-alive = 2.5\nhealth_path = '/health check'\n")
    rc, out1, err, left = run_cli(["-c", conf, "-w", "3", "-b", "127.0.0.1:%d" % port,
                                   "-b", "unix:%s/a b.sock" % tmp_dir, "--preload",
                                   "--umask", "027", "--print-config", HELLO],
                                  env={"GATEWAY_CMD_ARGS": "--balance rr"})
    assert rc == 0 and not err and not left, (rc, err)
    lines = out1.splitlines()
    for want in ["workers = 3", "bind = 127.0.0.1:%d" % port,
                 "bind = \"unix:%s/a b.sock\"" % tmp_dir, "balance = rr", "preload = true",
                 "keep-alive = 2.5", "health-path = \"/health check\"", "umask = 0027",
                 "app = %s:gateway_app" % HELLO, "max-inflight = 0"]:
        assert want in lines, "%r missing from:\n%s" % (want, out1)
    assert not any(ln.startswith(("config", "check-config", "print-config", "help"))
                   for ln in lines)
    again = write(os.path.join(tmp_dir, "again.conf"), out1)
    rc, out2, err, left = run_cli(["-c", again, "--print-config"])
    assert rc == 0 and not err and not left, (rc, err)
    assert out2 == out1
    # and the printed file is a valid configuration as a whole
    rc, out3, err, left = run_cli(["-c", again, "--check-config"])
    assert (rc, out3) == (0, "config OK\n"), err


def test_pid_file(gateway, tmp_dir):
    pid = os.path.join(tmp_dir, "run", "gw.pid")
    os.makedirs(os.path.dirname(pid))
    gw = gateway("hello", "--pid", pid, workers=2)
    with open(pid) as f:
        assert f.read() == "%d\n" % gw.pid
    assert oct(os.stat(pid).st_mode & 0o777) == oct(0o644)
    assert gw.stop() == 0
    assert not os.path.exists(pid), "pid file left after TERM"
    assert os.listdir(os.path.dirname(pid)) == [], "temporary files left"


def test_pid_file_refuses_live_pid_and_replaces_stale(gateway, tmp_dir):
    pid = os.path.join(tmp_dir, "gw.pid")
    sock = os.path.join(tmp_dir, "s.sock")
    write(pid, "%d\n" % os.getpid())            # a live process
    line = one_error_line(*run_cli(["--pid", pid, "-b", "unix:" + sock, HELLO]), status=1)
    assert pid in line and str(os.getpid()) in line, line
    assert not os.path.exists(sock), "bound although the pid file refused the start"
    with open(pid) as f:
        assert f.read() == "%d\n" % os.getpid(), "someone else's pid file was touched"

    p = subprocess.Popen(["true"])
    p.wait()
    write(pid, "%d\n" % p.pid)                  # a stale one
    gw = gateway("hello", "--pid", pid)
    with open(pid) as f:
        assert f.read() == "%d\n" % gw.pid
    assert gw.stop() == 0
    assert not os.path.exists(pid)


def test_umask(gateway, tmp_dir):
    gw = gateway("hello", "--umask", "077")
    with open("/proc/%d/status" % gw.pid) as f:
        mask = [ln.split()[1] for ln in f if ln.startswith("Umask:")]
    assert mask == ["0077"], mask


def test_bad_file_line_leaves_nothing(tmp_dir):
    sock = os.path.join(tmp_dir, "s.sock")
    pid = os.path.join(tmp_dir, "gw.pid")
    for text, lineno, what in [
            ("bind = unix:%s\npid = %s\n\n# c\nnope = 1\n", 5, "unknown key 'nope'"),
            ("bind = unix:%s\npid = %s\nworkers\n", 3, "expected 'key = value'"),
            ("bind = unix:%s\npid = %s\npreload = perhaps\n", 3,
             "invalid value 'perhaps' for preload"),
            ("bind = unix:%s\npid = %s\nbalance = 'rr\n", 3, "unterminated quote")]:
        conf = write(os.path.join(tmp_dir, "gw.conf"), text % (sock, pid))
        line = one_error_line(*run_cli(["-c", conf, HELLO]), status=2)
        assert line.startswith("gateway: %s:%d: " % (conf, lineno)) and what in line, line
        assert not os.path.exists(sock) and not os.path.exists(pid)
    line = one_error_line(*run_cli(["-c", os.path.join(tmp_dir, "none.conf"), HELLO]))
    assert "none.conf" in line
