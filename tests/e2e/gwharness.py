"""
gwharness.py - the end-to-end harness: start the real build/gateway as a child
process in a fresh temporary directory, talk to it over real sockets, read its
log, inspect its processes through /proc, and stop it with the checks every
test gets at teardown (Unit's unit_run / check_alerts / _count_fds pattern).

Only the standard library is used. conftest.py wraps this in fixtures.
"""
import calendar
import ctypes
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("GW_E2E_BUILD", os.path.join(ROOT, "build"))
GATEWAY = os.path.join(BUILD, "gateway")
GATEWAYCTL = os.path.join(BUILD, "gatewayctl")
EXAMPLES = os.path.join(BUILD, "examples")

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
IO_TIMEOUT = 5.0

# Log lines that fail a test unless it declares them (allow_log).
BAD_LINE = re.compile(r"\[(error|critical|alert)\]|ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                      r"runtime error:|WARNING: ThreadSanitizer|UndefinedBehaviorSanitizer")
LOG_LINE = re.compile(r"^(\S+) \[(debug|info|warning|error|critical|alert)\] \[(\d+)\] ([^:]+): (.*)$")


def log_time(line):
    """Seconds since the epoch of a gateway log line (ms precision)."""
    ts = LOG_LINE.match(line).group(1)
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z$", ts)
    assert m, ts
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + \
        int(m.group(2)) / 1000.0


# ---------------------------------------------------------------- utilities

def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a truthy value (returned) or timeout
    (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def app_path(app):
    """'hello' -> build/examples/hello.so; 'hello:sym' -> ...hello.so:sym;
    anything containing '/' is used as given."""
    if app.startswith("py:"):          # a Python app: module:attr, found via PYTHONPATH
        return app[3:]
    if "/" in app:
        return app
    name, sep, sym = app.partition(":")
    return os.path.join(EXAMPLES, name + ".so") + (sep + sym if sep else "")


def own_fd_count():
    return len(os.listdir("/proc/self/fd"))


def proc_stat(pid):
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def processes_in_group(pgid):
    """Every live or zombie process whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[2] == pgid:
            out.append(int(d))
    return sorted(out)


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def children_of(pid, include_zombies=False):
    pids = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return []
    for t in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    out = []
    for c in pids:
        st = proc_stat(c)
        if st is None or st[1] != pid:
            continue
        if st[0] == "Z" and not include_zombies:
            continue
        out.append(c)
    return sorted(out)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_targets(pid):
    out = {}
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                pass
    except OSError:
        pass
    return out


def become_subreaper():
    """Orphans of a gateway (a worker its master did not reap) are then
    re-parented to this test process, where teardown can see them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def reap_strays(known=()):
    """Children of this test process other than `known` (orphaned gateway
    processes re-parented here). Reaps zombies, SIGKILLs live ones, and
    returns a description of each."""
    found = []
    me = os.getpid()
    for c in children_of(me, include_zombies=True):
        if c in known:
            continue
        st = proc_stat(c)
        desc = "pid %d (%s) state %s" % (c, proc_cmdline(c), st[0] if st else "?")
        if st and st[0] != "Z":
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(c, 0)
        except ChildProcessError:
            pass
        found.append(desc)
    return found


# ---------------------------------------------------------------- HTTP

class Response:
    """One parsed HTTP response."""

    def __init__(self, version, status, reason, headers, body=b"", chunks=None,
                 chunk_times=None):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # list of (name, value), wire order
        self.body = body
        self.chunks = chunks            # list of chunk payloads when chunked
        self.chunk_times = chunk_times  # monotonic arrival time per chunk

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def worker_pid(self):
        return worker_pid(self)

    @property
    def text(self):
        return self.body.decode("latin-1")

    def __repr__(self):
        return "<Response %s %s %r body=%r>" % (self.version, self.status, self.headers,
                                                self.body[:200])


def worker_pid(resp):
    """The pid a response reports in X-Worker-Pid (AssertionError if absent)."""
    v = resp.header("X-Worker-Pid")
    assert v is not None and v.strip().isdigit(), \
        "response has no usable X-Worker-Pid header: %r" % (resp,)
    return int(v)


class PeerClosed(Exception):
    pass


class Conn:
    """A raw client connection with a read buffer and an HTTP/1.x response
    reader (Content-Length, chunked, close-delimited, HEAD, 1xx)."""

    def __init__(self, sock, timeout=IO_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self.eof = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def send_slowly(self, data, step=1, delay=0.001):
        if isinstance(data, str):
            data = data.encode("latin-1")
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])
            if delay:
                time.sleep(delay)

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[:i + len(delim)], self.buf[i + len(delim):]
                return out
            if not self._fill():
                raise PeerClosed("connection closed while waiting for %r; have %r"
                                 % (delim, self.buf[:300]))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise PeerClosed("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        assert m, "bad status line %r" % lines[0]
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            assert k and k == k.strip(), "bad response header line %r" % ln
            headers.append((k, v.strip()))
        return m.group(1), int(m.group(2)), m.group(3) or "", headers

    def read_response(self, head_request=False, on_chunk=None, keep_body=True):
        """Read one response. on_chunk(data) is called per decoded piece of
        a chunked body; with keep_body=False the body is not accumulated."""
        version, status, reason, headers = self.read_head()
        r = Response(version, status, reason, headers)
        if head_request or 100 <= status < 200 or status in (204, 304):
            return r
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if te is not None:
            assert te.lower() == "chunked", "unexpected Transfer-Encoding %r" % te
            assert cl is None, "response has both Content-Length and Transfer-Encoding"
            body, chunks, times = [], [], []
            while True:
                size_line = self.read_until(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers, then the final CRLF
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                data = self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
                times.append(time.monotonic())
                if on_chunk:
                    on_chunk(data)
                if keep_body:
                    chunks.append(data)
                    body.append(data)
            r.body, r.chunks, r.chunk_times = b"".join(body), chunks, times
        elif cl is not None:
            assert cl.strip().isdigit(), "bad Content-Length %r" % cl
            n = int(cl)
            if keep_body:
                r.body = self.read_exact(n)
            else:
                left = n
                while left:
                    take = min(left, 1 << 20)
                    d = self.read_exact(take) if len(self.buf) < take else None
                    if d is None:
                        d, self.buf = self.buf[:take], self.buf[take:]
                    if on_chunk:
                        on_chunk(d)
                    left -= len(d)
        else:
            r.body = self.read_to_eof()
        return r

    def closed_by_peer(self, timeout=2.0):
        """True if the peer closes within timeout; any unread bytes that
        arrive first are left in self.buf (and make this return False)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            if self.buf:
                return False
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            if d:
                self.buf += d
                return False
            self.eof = True
            return True
        finally:
            self.sock.settimeout(old)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def build_request(method="GET", target="/", headers=None, body=None, version="HTTP/1.1",
                  host="localhost"):
    hs = []
    if host is not None:
        hs.append(("Host", host))
    hs += list(headers or [])
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    out = "%s %s %s\r\n" % (method, target, version)
    out += "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n"
    out = out.encode("latin-1")
    if body is not None:
        out += body if isinstance(body, bytes) else body.encode("latin-1")
    return out


def http_response_from_client(resp):
    body = resp.read()
    return Response("HTTP/%d.%d" % divmod(resp.version, 10), resp.status, resp.reason,
                    list(resp.getheaders()), body)


# ---------------------------------------------------------------- the gateway

class Gateway:
    """One running build/gateway. Use via the `gateway` fixture."""

    def __init__(self, app, *opts, workers=None, bind=None, env=None, tmpdir=None,
                 wait_ready=True, ready_timeout=READY_TIMEOUT):
        if not os.access(GATEWAY, os.X_OK):
            raise AssertionError("%s is missing; run `make all` first" % GATEWAY)
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="gw-e2e-")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.log_path = os.path.join(self.tmpdir, "gateway.log")
        self.allowed = []
        self.conns = []
        self.problems = []
        self.returncode = None
        self.stopped = False
        self.port = None
        self.unix_path = None
        self.host = "127.0.0.1"
        if bind is None:
            self.port = free_port()
            binds = ["127.0.0.1:%d" % self.port]
        else:
            binds = [bind] if isinstance(bind, str) else list(bind)
        self.binds = binds
        self._pick_primary(binds[0] if binds else "127.0.0.1:8000")   # [] = no -b
        args = [GATEWAY]
        if workers is not None:
            args += ["-w", str(workers)]
        for b in binds:
            args += ["-b", b]
        args += [str(o) for o in opts]
        # every gateway gets its own control socket in its tmp dir
        if "--control-socket" in args:
            self.ctl_path = args[args.index("--control-socket") + 1]
        else:
            self.ctl_path = os.path.join(self.tmpdir, "ctl.sock")
            args += ["--control-socket", self.ctl_path]
        if os.environ.get("GW_E2E_LOG_LEVEL") and "--log-level" not in args:
            args += ["--log-level", os.environ["GW_E2E_LOG_LEVEL"]]
        args.append(app_path(app))
        self.args = args
        e = dict(os.environ)
        e.pop("WEB_CONCURRENCY", None)
        e.pop("LISTEN_FDS", None)
        e.pop("LISTEN_PID", None)
        e.update(env or {})
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.tmpdir, env=e,
                                         start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        self.seen_pids = set()
        self.fd_baseline = None
        if wait_ready:
            self.wait_ready(ready_timeout)

    def _pick_primary(self, b):
        if b.startswith("unix:"):
            self.unix_path = b[5:]
        elif b.startswith("["):
            h, _, p = b[1:].partition("]:")
            self.host, self.port = h, int(p)
        else:
            h, _, p = b.rpartition(":")
            self.host, self.port = h, int(p)

    # ---- lifecycle

    def wait_ready(self, timeout=READY_TIMEOUT):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited with status %s before ready; log:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            return any(self._is_master_ready(ln) for ln in self.log_lines())
        try:
            wait_until(ready, timeout, what="the master's 'ready:' log line")
        except AssertionError as e:
            if "before ready" in str(e):
                raise
            raise AssertionError("%s; command %s; log:\n%s" % (e, " ".join(self.args),
                                                              self.log_tail()))
        self.seen_pids.update(self.worker_pids())
        self.fd_baseline = fd_targets(self.pid)

    def _is_master_ready(self, line):
        # the master's line, not a worker's "worker 0: ready: slot 0 ..."
        m = LOG_LINE.match(line)
        return bool(m and int(m.group(3)) == self.pid and m.group(5).startswith("ready:"))

    def ready_line(self):
        return next((ln for ln in self.log_lines() if self._is_master_ready(ln)), None)

    def allow_log(self, *patterns):
        self.allowed += [re.compile(p) for p in patterns]

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Stop the master and record anything wrong in self.problems.
        Returns the exit status."""
        if self.stopped:
            return self.returncode
        self.stopped = True
        for c in self.conns:
            c.close()
        self.conns = []
        alive = self.proc.poll() is None
        if alive and self.fd_baseline is not None:
            self._check_master_fds()
        if alive:
            self.seen_pids.update(self.worker_pids())
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append("master %d did not exit within %.0fs of %s (group killed); "
                                 "processes then: %s" % (
                                     self.pid, timeout, signal.Signals(sig).name,
                                     processes_in_group(self.pid)))
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.returncode = self.proc.wait(5)
        if self.returncode != 0:
            self.problems.append("master exit status %s%s (expected 0)"
                                 % (self.returncode, " after " + signal.Signals(sig).name
                                    if alive else " (exited before the harness stopped it)"))
        left = processes_in_group(self.pid)
        left += [p for p in self.seen_pids
                 if p not in left and proc_stat(p) and proc_stat(p)[0] != "Z"
                 and proc_stat(p)[1] in (1, os.getpid())]
        if left:
            self.problems.append("processes left behind after the master exited: %s"
                                 % ["%d (%s)" % (p, proc_cmdline(p)) for p in left])
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        for b in self.binds:
            if b.startswith("unix:") and os.path.exists(b[5:]):
                self.problems.append("unix socket file %s still exists after exit" % b[5:])
        return self.returncode

    def _check_master_fds(self):
        base = self.fd_baseline

        def settled():
            return len(fd_targets(self.pid)) <= len(base)
        try:
            wait_until(settled, 3.0, interval=0.05)
        except AssertionError:
            now = fd_targets(self.pid)
            extra = {fd: t for fd, t in now.items() if base.get(fd) != t}
            self.problems.append("master fd leak: %d fds when ready, %d before stop; new: %s"
                                 % (len(base), len(now), extra))

    def log_problems(self):
        bad = []
        for ln in self.log_lines():
            if BAD_LINE.search(ln) and not any(p.search(ln) for p in self.allowed):
                bad.append(ln)
        return bad

    # ---- log

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return self.log_text().splitlines()

    def log_tail(self, n=60):
        return "\n".join(self.log_lines()[-n:])

    def log_mark(self):
        """Number of lines so far; pass to log_since()."""
        return len(self.log_lines())

    def log_since(self, mark):
        return self.log_lines()[mark:]

    def wait_log(self, pattern, timeout=5.0, count=1, since=0):
        rx = re.compile(pattern)

        def found():
            hits = [ln for ln in self.log_lines()[since:] if rx.search(ln)]
            return hits if len(hits) >= count else None
        try:
            return wait_until(found, timeout, what="log /%s/ x%d" % (pattern, count))
        except AssertionError as e:
            raise AssertionError("%s; log:\n%s" % (e, self.log_tail()))

    # ---- processes

    def worker_pids(self):
        """The master's children except the Python zygote (gw-zygote)."""
        pids = children_of(self.pid)
        self.seen_pids.update(pids)
        return [p for p in pids if proc_comm(p) != "gw-zygote"]

    def zygote_pids(self):
        return [p for p in children_of(self.pid) if proc_comm(p) == "gw-zygote"]

    def wait_workers(self, n, timeout=5.0, exclude=()):
        """Poll until the master has exactly n live children, none of them in
        exclude. Returns the pids."""
        def ok():
            p = self.worker_pids()
            return p if len(p) == n and not set(p) & set(exclude) else None
        try:
            return wait_until(ok, timeout, what="%d workers (excluding %s)" % (n, list(exclude)))
        except AssertionError as e:
            raise AssertionError("%s; children now %s; log:\n%s"
                                 % (e, self.worker_pids(), self.log_tail()))

    def rss_kb(self, pid=None):
        return rss_kb(pid or self.pid)

    def status(self):
        """`gatewayctl status --json`, parsed."""
        p = subprocess.run([GATEWAYCTL, "-s", self.ctl_path, "status", "--json"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        assert p.returncode == 0 and not p.stderr, (p.returncode, p.stderr)
        return json.loads(p.stdout)

    # ---- clients

    def connect(self, timeout=IO_TIMEOUT, track=True):
        if self.unix_path and self.port is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix_path)
        else:
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((self.host, self.port))
        c = Conn(s, timeout)
        if track:
            self.conns.append(c)
        return c

    def raw(self, data, timeout=IO_TIMEOUT):
        """Open a connection, send data, return the Conn."""
        c = self.connect(timeout)
        c.send(data)
        return c

    def request(self, method="GET", target="/", headers=None, body=None,
                version="HTTP/1.1", timeout=IO_TIMEOUT):
        """One request on a fresh raw connection (closed afterwards)."""
        with self.connect(timeout) as c:
            c.send(build_request(method, target, headers, body, version))
            return c.read_response(head_request=(method == "HEAD"))

    def http(self, timeout=IO_TIMEOUT):
        """An http.client connection (keep-alive capable)."""
        assert self.port is not None, "http() needs a TCP listener"
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, target="/", headers=None, timeout=IO_TIMEOUT):
        """GET over a fresh http.client connection."""
        conn = self.http(timeout)
        try:
            conn.request("GET", target, headers=headers or {})
            return http_response_from_client(conn.getresponse())
        finally:
            conn.close()


def run_cli(args, timeout=10.0, env=None):
    """Run build/gateway with args to completion in its own session.
    Returns (returncode, stdout, stderr, leftover pids in its group)."""
    e = dict(os.environ)
    e.pop("WEB_CONCURRENCY", None)
    e.update(env or {})
    p = subprocess.Popen([GATEWAY] + list(args), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError("gateway %s did not exit within %.0fs; stderr: %r"
                             % (" ".join(args), timeout, err[-2000:]))
    left = processes_in_group(p.pid)
    for q in left:
        try:
            os.kill(q, signal.SIGKILL)
        except OSError:
            pass
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), left


# ---- Python apps (tests/e2e/apps): environment and side-channel files

APPS = os.path.join(ROOT, "tests", "e2e", "apps")


def env_for(test_dir=None, **extra):
    """Environment for a gateway running a Python app from tests/e2e/apps:
    PYTHONPATH, and GW_TEST_DIR (where the apps write side-channel files)."""
    e = {"PYTHONPATH": APPS}
    if test_dir is not None:
        e["GW_TEST_DIR"] = test_dir
    e.update(extra)
    return e


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_lines(path, n=1, timeout=5.0):
    return wait_until(lambda: len(read_lines(path)) >= n and read_lines(path), timeout,
                      what="%d line(s) in %s" % (n, path))


def read_gated_stream(gw, target, flag):
    """GET target from an app that sends one chunk, then waits for the file
    flag before the rest: the test creates flag only after reading the first
    chunk, so the response passes only if chunks are not held back."""
    seen = []

    def on_chunk(data):
        if not seen:
            assert not os.path.exists(flag)
            open(flag, "w").close()
        seen.append(data)
    c = gw.connect(timeout=5)
    c.send(build_request("GET", target))
    try:
        return c.read_response(on_chunk=on_chunk), seen
    finally:
        open(flag, "a").close()     # never leave the app waiting
        c.close()


def sha256(data):
    return hashlib.sha256(data).hexdigest()
