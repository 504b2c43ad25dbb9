"""
Command line: every start-up error is one "gateway: ..." line on stderr with a
non-zero exit and nothing left behind; --help and --version.
"""
import os
import socket

import pytest

from gwharness import GATEWAY, app_path, free_port, run_cli

HELLO = app_path("hello")

FLAGS = ["-b", "--bind", "-w", "--workers", "--balance", "--preload", "--max-inflight",
         "--max-queue", "--keep-alive", "--header-timeout", "--body-timeout",
         "--limit-request-line", "--limit-request-fields", "--limit-request-field-size",
         "--limit-request-body", "--log-level", "--backlog", "-h", "--help", "--version"]


def check_error(args, must_contain, tmp_dir, sock=None):
    assert os.access(GATEWAY, os.X_OK), "%s is missing" % GATEWAY
    rc, out, err, left = run_cli(args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc != 0, "gateway %s exited 0; stderr %r" % (args, err)
    assert len(lines) == 1, "expected one line on stderr for %s, got %r" % (args, err)
    assert lines[0].startswith("gateway: "), "stderr line lacks 'gateway: ': %r" % lines[0]
    for s in must_contain:
        assert s in lines[0], "error for %s should mention %r: %r" % (args, s, lines[0])
    assert not left, "processes left in the group after a failed start: %s" % left
    if sock:
        assert not os.path.exists(sock), "unix socket %s left behind by a failed start" % sock
    return lines[0]


def test_unknown_flag(tmp_dir):
    check_error(["--bogus-flag", HELLO], ["--bogus-flag"], tmp_dir)


@pytest.mark.parametrize("addr", ["127.0.0.1:99999", "127.0.0.1:abc", "[::1:8000", "unix:"])
def test_bad_address(tmp_dir, addr):
    sock = os.path.join(tmp_dir, "s.sock")
    check_error(["-b", "unix:" + sock, "-b", addr, HELLO], [addr] if addr != "unix:" else [],
                tmp_dir, sock)


def test_port_in_use(tmp_dir):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        sock = os.path.join(tmp_dir, "s.sock")
        line = check_error(["-b", "unix:" + sock, "-b", "127.0.0.1:%d" % port, HELLO],
                           ["in use"], tmp_dir, sock)
        assert str(port) in line, "error should name the address: %r" % line
    finally:
        s.close()


@pytest.fixture(params=["no-preload", "preload"])
def mode(request):
    return ["--preload"] if request.param == "preload" else []


def test_app_file_missing(tmp_dir, mode):
    sock = os.path.join(tmp_dir, "s.sock")
    missing = os.path.join(tmp_dir, "nope", "app.so")
    check_error(mode + ["-b", "unix:" + sock, missing], [missing], tmp_dir, sock)


def test_symbol_missing(tmp_dir, mode):
    sock = os.path.join(tmp_dir, "s.sock")
    check_error(mode + ["-b", "unix:" + sock, HELLO + ":no_such_symbol"],
                ["no_such_symbol"], tmp_dir, sock)


def test_app_load_failure(tmp_dir, mode):
    sock = os.path.join(tmp_dir, "s.sock")
    bad = os.path.join(tmp_dir, "bad.so")
    with open(bad, "w") as f:
        f.write("this is not an ELF object\n" * 100)
    line = check_error(mode + ["-b", "unix:" + sock, bad], [bad], tmp_dir, sock)
    assert "invalid ELF header" in line, "dlopen's message missing: %r" % line


def test_missing_app_argument(tmp_dir):
    check_error(["-b", "127.0.0.1:%d" % free_port()], [], tmp_dir)


@pytest.mark.parametrize("args", [["-w", "abc"], ["-w", "0"], ["--balance", "random"],
                                  ["--keep-alive", "-1"], ["--log-level", "loud"]])
def test_bad_option_values(tmp_dir, args):
    check_error(args + ["-b", "127.0.0.1:%d" % free_port(), HELLO], [args[1]], tmp_dir)


def test_help_lists_every_flag():
    rc, out, err, left = run_cli(["--help"])
    assert rc == 0, "--help exit %s, stderr %r" % (rc, err)
    missing = [f for f in FLAGS if f not in out.replace(",", " ").split()
               and not any(w.startswith(f + "=") or w.startswith(f + "[")
                           for w in out.replace(",", " ").split())]
    assert not missing, "--help does not mention %s:\n%s" % (missing, out)
    assert not left
    rc2, out2, _, _ = run_cli(["-h"])
    assert rc2 == 0 and out2 == out


def test_version():
    rc, out, err, left = run_cli(["--version"])
    assert rc == 0, "--version exit %s, stderr %r" % (rc, err)
    assert out.strip() and any(ch.isdigit() for ch in out), "--version printed %r" % out
    assert len(out.strip().splitlines()) <= 3, out
