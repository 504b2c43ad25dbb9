"""
Logs: the access log (Gunicorn-style format), the error log in a file, and
USR1 reopening both after rotation (in the master and in every worker).
"""
import os
import re
import signal
import time

from gwharness import build_request, wait_until, worker_pid


def read(path):
    with open(path) as f:
        return f.read()


def test_access_log_default_and_custom_format(gateway, tmp_dir):
    alog = os.path.join(tmp_dir, "access.log")
    fmt = '%(h)s "%(r)s" %(s)s %(B)s %(D)s %(p)s %(x)s %({X-Trace}i)s %({Content-Type}o)s %(U)s %(q)s'
    gw = gateway("hello", "--access-logfile", alog, "--access-logformat", fmt, workers=1)
    r = gw.get("/p/a?x=1", headers={"X-Trace": "abc\"def"})
    assert r.status == 200
    pid = worker_pid(r)
    wait_until(lambda: os.path.exists(alog) and read(alog).count("\n") >= 1, 3, what="a line")
    line = read(alog).splitlines()[0]
    m = re.match(r'^127\.0\.0\.1:\d+ "GET /p/a\?x=1 HTTP/1\.1" 200 13 (\d+) (\d+) (\d+)\.1 '
                 r'abc\\x22def text/plain /p/a x=1$', line)
    assert m, line
    assert int(m.group(2)) == int(pid), (line, pid)
    assert int(m.group(1)) < 5_000_000


def test_access_log_gunicorn_default_and_front_errors(gateway, tmp_dir):
    alog = os.path.join(tmp_dir, "access.log")
    gw = gateway("sleep", "--access-logfile", alog, "--timeout", "1", workers=1)
    assert gw.get("/?ms=1", headers={"Referer": "http://r/", "User-Agent": "ua/1"}).status == 200
    assert gw.get("/?ms=3000", timeout=10).status == 504
    wait_until(lambda: read(alog).count("\n") >= 2, 3, what="two lines")
    first, second = read(alog).splitlines()[:2]
    assert re.match(r'^127\.0\.0\.1:\d+ - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                    r'"GET /\?ms=1 HTTP/1\.1" 200 11 "http://r/" "ua/1"$', first), first
    assert ' 504 - "-" "-"' in second, second


def test_error_logfile_and_usr1_reopen(gateway, tmp_dir):
    elog = os.path.join(tmp_dir, "error.log")
    alog = os.path.join(tmp_dir, "access.log")
    gw = gateway("hello", "--error-logfile", elog, "--access-logfile", alog, workers=2,
                 wait_ready=False)
    # the log goes to the file, not to the harness's stderr capture
    wait_until(lambda: os.path.exists(elog) and "master: ready:" in read(elog), 5,
               what="the ready line in --error-logfile")
    gw.seen_pids.update(gw.worker_pids())
    assert gw.get("/").status == 200
    os.rename(elog, elog + ".1")
    os.rename(alog, alog + ".1")
    os.kill(gw.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(elog) and "logs reopened" in read(elog), 3,
               what="the master writing to the new error log")
    assert gw.get("/").status == 200
    wait_until(lambda: os.path.exists(alog) and read(alog).count("\n") == 1, 3,
               what="the access log reopened")
    # workers reopen too: their next line lands in the new file
    os.kill(gw.pid, signal.SIGTTOU)     # a worker retires and logs its exit
    wait_until(lambda: re.search(r"\] worker \d: ", read(elog)), 5,
               what="a worker's line in the new error log")
    assert "logs reopened" not in read(elog + ".1")
