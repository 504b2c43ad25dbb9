"""
conftest.py - fixtures for the gateway end-to-end tests.

  gateway       factory: gw = gateway("hello", "--balance", "rr", workers=4)
                starts build/gateway (own process group, log in a fresh tmp dir,
                free 127.0.0.1 port), waits for "ready:" and returns a
                gwharness.Gateway. Every instance is stopped at teardown with
                SIGTERM and checked: exit status 0, nothing left in its process
                group, no master fd growth, no unix socket file, and no
                [error]/[alert]/sanitizer line in its log unless declared.
  allow_log     marker: @pytest.mark.allow_log(r"regex", ...) declares the log
                lines a test expects at [error]/[alert] (Unit's skip_alert).
  tmp_dir       a fresh directory.
Environment: GW_E2E_KEEP=1 keeps the temporary directories and logs;
GW_E2E_LOG_LEVEL=debug starts every gateway with --log-level debug;
GW_E2E_BUILD=dir tests another build directory.

The test process's own fd count is compared before and after each test, and
orphans re-parented to it (it is a child subreaper) fail the test.
"""
import os
import shutil
import tempfile

import pytest

import gwharness as h

# GW_E2E_KEEP=1 keeps every temporary directory (logs) for inspection; on a
# teardown failure the directories are always kept.
KEEP = bool(os.environ.get("GW_E2E_KEEP"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_log(*regexes): log lines at [error]/[alert] this test expects")
    h.become_subreaper()


@pytest.fixture
def tmp_dir():
    d = tempfile.mkdtemp(prefix="gw-e2e-")
    yield d
    if not KEEP:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def gateway(request, tmp_dir):
    fds_before = h.own_fd_count()
    allowed = []
    for m in request.node.iter_markers("allow_log"):
        allowed += list(m.args)
    started = []
    dirs = []

    def start(app, *opts, **kw):
        if "tmpdir" not in kw:
            kw["tmpdir"] = tempfile.mkdtemp(prefix="gw-e2e-")
            dirs.append(kw["tmpdir"])
        gw = h.Gateway(app, *opts, **kw)
        gw.allow_log(*allowed)
        started.append(gw)
        return gw

    yield start

    problems = []
    for gw in started:
        gw.stop()
        for p in gw.problems:
            problems.append("gateway %d (%s): %s" % (gw.pid, " ".join(gw.args[1:]), p))
        bad = gw.log_problems()
        if bad:
            problems.append("gateway %d: unexpected log lines:\n    %s"
                            % (gw.pid, "\n    ".join(bad[:20])))
    strays = h.reap_strays()
    if strays:
        problems.append("orphaned processes re-parented to the test: %s" % strays)
    fds_after = h.own_fd_count()
    if fds_after > fds_before:
        problems.append("test process fd count grew from %d to %d: %s" % (
            fds_before, fds_after, sorted(h.fd_targets(os.getpid()).values())))
    if problems:
        logs = "\n".join("---- log of %d (%s):\n%s" % (gw.pid, gw.log_path, gw.log_tail(40))
                         for gw in started)
        pytest.fail("teardown checks failed:\n  " + "\n  ".join(problems) + "\n" + logs,
                    pytrace=False)
    for d in dirs:
        if not KEEP:
            shutil.rmtree(d, ignore_errors=True)
