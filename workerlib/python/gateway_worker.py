"""gateway Python worker (WSGI, first slice).

The master execs this file for any APP that does not end in ".so":

    /usr/bin/python3 -u workerlib/python/gateway_worker.py

with the GWP channel (proto/PROTOCOL.md) on fd $GATEWAY_CHANNEL_FD (3), the
slot in $GATEWAY_WORKER_SLOT and the application in $GATEWAY_APP
("module:attr" or "module:factory()", Gunicorn syntax).

Synchronous: one request at a time, in arrival order. Self-contained:
stdlib + msgpack (Debian's python3-msgpack).
"""

import ast
import importlib
import io
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from urllib.parse import unquote_to_bytes

import msgpack

# -- protocol constants (proto/PROTOCOL.md) ----------------------------------
HELLO, READY, REQUEST, BODY, RESPONSE, RESP_BODY, CANCEL, WINDOW, \
    HEARTBEAT, QUIT, ERROR = range(1, 12)
F_END = 0x0001
CAP = 1 << 20
MAX_DATA = 64 * 1024
CHANNEL_TYPES = (HELLO, READY, HEARTBEAT, QUIT, ERROR)
END_TYPES = (REQUEST, BODY, RESPONSE, RESP_BODY)
FROM_MASTER = (HELLO, REQUEST, BODY, CANCEL, WINDOW, QUIT)
HDR = struct.Struct(">BBHII")

EXIT_STARTUP = 3
EXIT_CONFIG = 78


class Malformed(Exception):
    pass


class ChannelClosed(Exception):
    pass


class Quit(Exception):
    pass


def _b(v):
    """A 'bytes' field: str or bin on the wire -> raw bytes."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    raise Malformed("expected str/bin, got %s" % type(v).__name__)


def _t(v):
    """A 'text' field: str or bin on the wire -> str."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    raise Malformed("expected str/bin, got %s" % type(v).__name__)


def _one_line(s):
    s = " ".join(str(s).split())
    return s[:900]


class Stream(object):
    __slots__ = ("sid", "req", "body", "req_ended", "cancelled", "credit",
                 "unreturned")

    def __init__(self, sid, req, credit):
        self.sid = sid
        self.req = req
        self.body = []
        self.req_ended = False
        self.cancelled = False
        self.credit = credit
        self.unreturned = 0


class Worker(object):
    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        self.rbuf = bytearray()
        self.out = []
        self.window = 262144
        self.max_payload = CAP
        self.heartbeat_s = 0.0
        self.next_hb = None
        self.slot = 0
        self.served = 0
        self.streams = {}       # open streams (response direction not ended)
        self.queue = []         # sids whose request head+body is complete
        self.last_sid = 0
        self.quitting = False
        self.idle = False
        self.loop_id = "python:%d:%d" % (os.getpid(), id(self))
        self.app = None
        try:
            self.pagesize = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            self.pagesize = 4096
        self.packb = msgpack.Packer(use_bin_type=True).pack

    # -- output ---------------------------------------------------------------
    def frame(self, ftype, sid, obj, flags=0):
        payload = self.packb(obj)
        if len(payload) > self.max_payload:
            raise ValueError("payload of %d bytes exceeds cap" % len(payload))
        self.out.append(HDR.pack(1, ftype, flags, sid, len(payload)))
        self.out.append(payload)

    def flush(self):
        if self.out:
            data = b"".join(self.out)
            self.out = []
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                raise ChannelClosed()

    # -- input ----------------------------------------------------------------
    def read_some(self, timeout):
        """Flush, wait up to timeout (None = forever) for input, dispatch
        every whole frame. Sends heartbeats when due."""
        self.flush()
        if self.next_hb is not None:
            now = time.monotonic()
            if now >= self.next_hb:
                self.send_heartbeat()
                self.flush()
                now = time.monotonic()
            left = max(0.0, self.next_hb - now)
            timeout = left if timeout is None else min(timeout, left)
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            raise ChannelClosed()
        self.rbuf += data
        self.decode_all()

    def decode_all(self):
        buf = self.rbuf
        pos = 0
        n = len(buf)
        try:
            while n - pos >= 12:
                ver, ftype, flags, sid, length = HDR.unpack_from(buf, pos)
                if ver != 1:
                    raise Malformed("version %d" % ver)
                if ftype == 0 or ftype > 11:
                    raise Malformed("type %d" % ftype)
                if length == 0 or length > CAP:
                    raise Malformed("length %d" % length)
                if ftype in CHANNEL_TYPES:
                    if sid != 0:
                        raise Malformed("stream %d on channel message" % sid)
                elif sid == 0:
                    raise Malformed("stream 0 on stream message")
                if flags & ~F_END or (flags and ftype not in END_TYPES):
                    raise Malformed("flags 0x%x" % flags)
                if ftype not in FROM_MASTER:
                    raise Malformed("type %d from master" % ftype)
                if n - pos < 12 + length:
                    break
                start = pos + 12
                pos = start + length
                try:
                    obj = msgpack.unpackb(buf[start:pos], raw=False,
                                          unicode_errors="surrogateescape")
                except Exception as e:
                    raise Malformed("msgpack: %s" % e)
                if not isinstance(obj, dict):
                    raise Malformed("payload is not a map")
                for k in obj:
                    if not isinstance(k, str):
                        obj = dict((_t(k), v) for k, v in obj.items())
                        break
                self.dispatch(ftype, flags, sid, obj)
        finally:
            del buf[:pos]

    # -- dispatch -------------------------------------------------------------
    def dispatch(self, ftype, flags, sid, m):
        if ftype == REQUEST:
            if sid <= self.last_sid:
                raise Malformed("stream id %d not increasing" % sid)
            self.last_sid = sid
            try:
                req = {
                    "method": _t(m["method"]),
                    "target": _b(m["target"]),
                    "path": _b(m["path"]),
                    "query": _b(m.get("query", b"")),
                    "http_minor": m["http_minor"],
                    "headers": [(_b(p[0]), _b(p[1])) for p in m["headers"]],
                    "peer": _t(m.get("peer", "")),
                    "server": _t(m.get("server", "")),
                    "scheme": _t(m.get("scheme", "http")),
                    "content_length": m.get("content_length", 0),
                }
            except (KeyError, IndexError, TypeError) as e:
                raise Malformed("bad REQUEST: %r" % (e,))
            st = Stream(sid, req, self.window)
            self.streams[sid] = st
            if flags & F_END:
                st.req_ended = True
                self.queue.append(sid)
        elif ftype == BODY:
            st = self.streams.get(sid)
            if st is None or st.cancelled:
                return
            if st.req_ended:
                raise Malformed("BODY after END on stream %d" % sid)
            data = _b(m["data"])
            if data:
                st.body.append(data)
                # The body is buffered whole (wsgi.input is a BytesIO), so
                # "consumed" = moved into our buffer.
                st.unreturned += len(data)
                if st.unreturned >= (self.window >> 1) or flags & F_END:
                    self.frame(WINDOW, sid, {"bytes": st.unreturned})
                    st.unreturned = 0
            if flags & F_END:
                st.req_ended = True
                self.queue.append(sid)
        elif ftype == WINDOW:
            st = self.streams.get(sid)
            if st is not None:
                st.credit += m["bytes"]
                if st.credit > 0xFFFFFFFF:
                    raise Malformed("window overflow on stream %d" % sid)
        elif ftype == CANCEL:
            st = self.streams.pop(sid, None)
            if st is not None:
                st.cancelled = True
                if sid in self.queue:
                    self.queue.remove(sid)
        elif ftype == QUIT:
            if not m.get("graceful", True):
                self.flush_quiet()
                os._exit(0)
            self.quitting = True
        elif ftype == HELLO:
            raise Malformed("second HELLO")

    def flush_quiet(self):
        try:
            self.flush()
        except Exception:
            pass

    def drain(self):
        """Read what the master already sent (a QUIT racing SIGTERM, say)
        so that closing the channel does not reset it on the master's
        side."""
        try:
            self.sock.setblocking(False)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def send_heartbeat(self):
        rss = 0
        try:
            with open("/proc/self/statm", "rb") as f:
                rss = int(f.read().split()[1]) * self.pagesize
        except (OSError, ValueError, IndexError):
            pass
        self.frame(HEARTBEAT, 0, {"served": self.served,
                                  "inflight": len(self.streams),
                                  "tasks": 0, "rss": rss,
                                  "loop": self.loop_id})
        self.next_hb = time.monotonic() + self.heartbeat_s

    # -- startup --------------------------------------------------------------
    def fatal(self, message, code):
        try:
            self.frame(ERROR, 0, {"message": _one_line(message), "code": code})
            self.flush()
        except Exception:
            pass
        sys.stderr.write("gateway_worker: %s\n" % message)
        sys.stderr.flush()
        os._exit(code)

    def handshake(self):
        while True:
            # wait for HELLO (the only frame the master may send first)
            if len(self.rbuf) >= 12:
                ver, ftype, flags, sid, length = HDR.unpack_from(self.rbuf, 0)
                if ver != 1 or ftype != HELLO or sid != 0 or flags \
                        or length == 0 or length > CAP:
                    raise Malformed("bad first frame (type %d)" % ftype)
                if len(self.rbuf) >= 12 + length:
                    m = msgpack.unpackb(bytes(self.rbuf[12:12 + length]),
                                        raw=False)
                    del self.rbuf[:12 + length]
                    break
            data = self.sock.recv(65536)
            if not data:
                raise ChannelClosed()
            self.rbuf += data
        if not isinstance(m, dict):
            raise Malformed("HELLO is not a map")
        m = dict((_t(k), v) for k, v in m.items())
        if m.get("version") != 1:
            self.fatal("protocol version %s not supported" % m.get("version"),
                       EXIT_CONFIG)
        self.slot = m.get("slot", 0)
        self.window = m.get("window", 262144) or 262144
        mp = m.get("max_payload", CAP)
        self.max_payload = CAP if (mp == 0 or mp > CAP) else mp
        self.heartbeat_s = (m.get("heartbeat_ms", 0) or 0) / 1000.0

        try:
            self.app = load_app(os.environ.get("GATEWAY_APP", ""))
        except BaseException as e:
            traceback.print_exc()
            self.fatal("cannot load app %r: %s: %s"
                       % (os.environ.get("GATEWAY_APP", ""),
                          type(e).__name__, e), EXIT_STARTUP)

        self.frame(READY, 0, {"version": 1, "pid": os.getpid(),
                              "runtime": "python", "loop": self.loop_id})
        if self.heartbeat_s > 0:
            self.next_hb = time.monotonic() + self.heartbeat_s
        self.flush()
        if self.rbuf:
            self.decode_all()

    # -- main loop ------------------------------------------------------------
    def run(self):
        try:
            self.handshake()
            while True:
                while self.queue:
                    sid = self.queue.pop(0)
                    st = self.streams.get(sid)
                    if st is not None:
                        self.handle(st)
                if self.quitting and not self.streams:
                    self.flush()
                    return 0
                self.idle = True
                try:
                    self.read_some(None)
                finally:
                    self.idle = False
        except ChannelClosed:
            return 0
        except Quit:
            self.flush_quiet()
            return 0
        except Malformed as e:
            sys.stderr.write("gateway_worker: malformed frame: %s\n" % e)
            return 1

    # -- one request ----------------------------------------------------------
    def wait_credit(self, st):
        while st.credit <= 0 and not st.cancelled:
            self.read_some(None)

    def send_data(self, st, data, end):
        """RESP_BODY frames for data (after RESPONSE). Honours the window."""
        mv = memoryview(data)
        off = 0
        n = len(data)
        while off < n:
            self.wait_credit(st)
            if st.cancelled:
                return
            k = min(n - off, MAX_DATA, st.credit)
            st.credit -= k
            last = end and off + k >= n
            self.frame(RESP_BODY, st.sid, {"data": bytes(mv[off:off + k])},
                       F_END if last else 0)
            off += k
            if len(self.out) > 64:
                self.flush()
        if end and n == 0:
            self.frame(RESP_BODY, st.sid, {"data": b""}, F_END)

    def handle(self, st):
        environ = self.environ(st)
        state = {"status": None, "headers": None, "sent": False}

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response called twice")
            code = int(str(status)[:3])
            if not 100 <= code <= 999:
                raise ValueError("bad status %r" % (status,))
            hs = []
            for name, value in headers:
                hs.append((name.encode("latin-1") if isinstance(name, str)
                           else bytes(name),
                           value.encode("latin-1") if isinstance(value, str)
                           else bytes(value)))
            state["status"] = code
            state["headers"] = hs
            return write

        def send_head(end, body=None):
            if state["status"] is None:
                raise AssertionError("start_response was not called")
            m = {"status": state["status"], "headers": state["headers"]}
            if body:
                st.credit -= len(body)
                m["body"] = body
            self.frame(RESPONSE, st.sid, m, F_END if end else 0)
            state["sent"] = True

        def write(data):
            if st.cancelled:
                return
            if not state["sent"]:
                send_head(False)
            self.send_data(st, bytes(data), False)

        result = None
        ok = False
        try:
            result = self.app(environ, start_response)
            fits = min(st.credit, self.max_payload - 4096)
            if isinstance(result, (list, tuple)) and not state["sent"]:
                body = b"".join(result)
                if len(body) <= fits:
                    send_head(True, body)
                else:
                    send_head(False)
                    self.send_data(st, body, True)
            else:
                pending = None
                for chunk in result:
                    if st.cancelled:
                        break
                    if not chunk:
                        continue
                    if not state["sent"]:
                        if pending is None:
                            pending = bytes(chunk)
                            continue
                        send_head(False)
                        self.send_data(st, pending, False)
                        pending = None
                    self.send_data(st, bytes(chunk), False)
                if not st.cancelled:
                    if not state["sent"]:
                        if pending is not None and len(pending) > fits:
                            send_head(False)
                            self.send_data(st, pending, True)
                        else:
                            send_head(True, pending)
                    else:
                        self.send_data(st, b"", True)
            ok = True
        except (ChannelClosed, Malformed, Quit):
            raise
        except Exception:
            sys.stderr.write("gateway_worker: error handling %s %s\n"
                             % (st.req["method"],
                                st.req["target"].decode("latin-1")))
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    traceback.print_exc()
                    ok = False
        if not ok and not st.cancelled:
            if not state["sent"]:
                body = b"Internal Server Error\n"
                self.frame(RESPONSE, st.sid, {
                    "status": 500,
                    "headers": [(b"Content-Type", b"text/plain")],
                    "body": body}, F_END)
            else:
                self.frame(CANCEL, st.sid, {"reason": "app-error"})
        self.streams.pop(st.sid, None)
        self.served += 1
        if self.next_hb is not None and time.monotonic() >= self.next_hb:
            self.send_heartbeat()
        if not self.queue:
            self.flush()

    def environ(self, st):
        r = st.req
        body = b"".join(st.body)
        st.body = []
        server = r["server"]
        host, _, port = server.rpartition(":")
        if not _:
            host, port = server, ""
        host = host.strip("[]")
        peer = r["peer"]
        phost, _, pport = peer.rpartition(":")
        if not _:
            phost, pport = peer, ""
        phost = phost.strip("[]")
        scheme = r["scheme"]
        env = {
            "REQUEST_METHOD": r["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(r["path"]).decode("latin-1"),
            "QUERY_STRING": r["query"].decode("latin-1"),
            "RAW_URI": r["target"].decode("latin-1"),
            "SERVER_NAME": host or "localhost",
            "SERVER_PORT": port or ("443" if scheme == "https" else "80"),
            "SERVER_PROTOCOL": "HTTP/1.%d" % r["http_minor"],
            "REMOTE_ADDR": phost,
            "REMOTE_PORT": pport,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "gateway.slot": self.slot,
        }
        cl = r["content_length"]
        if cl != 0 or body:
            env["CONTENT_LENGTH"] = str(len(body))
        for name, value in r["headers"]:
            key = name.decode("latin-1").upper().replace("-", "_")
            value = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                env["CONTENT_TYPE"] = value
                continue
            if key == "CONTENT_LENGTH":
                continue  # content_length / the body are authoritative
            if "_" in name.decode("latin-1"):
                continue  # ambiguous with '-': dropped, as gunicorn does
            key = "HTTP_" + key
            if key in env:
                env[key] = env[key] + "," + value
            else:
                env[key] = value
        return env


def load_app(spec):
    """Gunicorn-style "module:attr", "module:factory()", "module:f(args)"."""
    if not spec:
        raise ImportError("GATEWAY_APP is not set")
    module, _, obj = spec.partition(":")
    if not obj:
        obj = "application"
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    mod = importlib.import_module(module)
    try:
        expr = ast.parse(obj.strip(), mode="eval").body
    except SyntaxError:
        raise ImportError("failed to parse %r as an attribute name or "
                          "function call" % obj)
    args, kwargs = [], {}
    call = False
    if isinstance(expr, ast.Call):
        call = True
        args = [ast.literal_eval(a) for a in expr.args]
        kwargs = dict((k.arg, ast.literal_eval(k.value))
                      for k in expr.keywords)
        expr = expr.func
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name):
        raise ImportError("bad application object %r" % obj)
    parts.append(expr.id)
    app = mod
    for p in reversed(parts):
        try:
            app = getattr(app, p)
        except AttributeError:
            raise ImportError("module %r has no attribute %r" % (module, p))
    if call:
        app = app(*args, **kwargs)
    if app is None or not callable(app):
        raise ImportError("application object %r is not callable" % obj)
    return app


def main():
    fd = int(os.environ.get("GATEWAY_CHANNEL_FD", "3"))
    w = Worker(fd)

    def on_term(signum, frame):
        w.quitting = True
        if w.idle:
            raise Quit()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = w.run()
    w.drain()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
