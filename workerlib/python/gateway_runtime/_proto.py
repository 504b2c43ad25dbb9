"""The GWP wire format (proto/PROTOCOL.md), worker side, in Python.

Constants, frame header checks, payload decoding and frame encoding. The
spec in proto/PROTOCOL.md is the authority; this module only implements it.
Self-contained: stdlib + msgpack (Debian's python3-msgpack, C extension).
"""

import collections
import os
import re
import struct
import sys
from urllib.parse import unquote_to_bytes

import msgpack

HELLO, READY, REQUEST, BODY, RESPONSE, RESP_BODY, CANCEL, WINDOW, \
    HEARTBEAT, QUIT, ERROR = range(1, 12)
F_END = 0x0001
CAP = 1 << 20                 # payload cap (PROTOCOL.md section 10)
MAX_DATA = 64 * 1024          # data per BODY/RESP_BODY frame we send
VERSION = 1
CHANNEL_TYPES = frozenset((HELLO, READY, HEARTBEAT, QUIT, ERROR))
END_TYPES = frozenset((REQUEST, BODY, RESPONSE, RESP_BODY))
FROM_MASTER = frozenset((HELLO, REQUEST, BODY, CANCEL, WINDOW, QUIT))
HDR = struct.Struct(">BBHII")
HDR_SIZE = HDR.size

EXIT_STARTUP = 3              # start-up failure (import error, hook, lifespan)
EXIT_CONFIG = 78              # bad HELLO / unsupported version


class Malformed(Exception):
    """The byte stream can no longer be trusted (PROTOCOL.md section 11)."""


class ChannelClosed(Exception):
    """EOF or reset on the channel: the master is gone."""


def as_bytes(v):
    """A 'bytes' field: str or bin on the wire -> raw bytes."""
    if v.__class__ is bytes:
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise Malformed("expected str/bin, got %s" % type(v).__name__)


def as_text(v):
    """A 'text' field: str or bin on the wire -> str."""
    if v.__class__ is str:
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "surrogateescape")
    raise Malformed("expected str/bin, got %s" % type(v).__name__)


def one_line(s, limit=900):
    s = " ".join(str(s).split())
    return s[:limit]


_unpackb = msgpack.unpackb


def split_addr(addr):
    """"ip:port", "[ip6]:port" or "unix" -> (host, port), as text; the
    host keeps its brackets, port is "" when there is none."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, ""
    return host, port


def split_hostport(addr):
    """The same as (host without brackets, port as int or None): ASGI's
    client and server."""
    host, port = split_addr(addr)
    return host.strip("[]"), (int(port) if port.isascii() and port.isdigit()
                              else None)


class Encoder(object):
    """Frames queued for one write (PROTOCOL.md section 2)."""

    __slots__ = ("out", "max_payload", "_pack")

    def __init__(self):
        self.out = []
        self.max_payload = CAP
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def frame(self, ftype, sid, obj, flags=0):
        payload = self._pack(obj)
        n = len(payload)
        if n > self.max_payload:
            raise ValueError("payload of %d bytes exceeds the cap" % n)
        self.out.append(HDR.pack(1, ftype, flags, sid, n) + payload)

    def take(self):
        out = self.out      # shared with the workers: cleared in place
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data


def parse_hello(buf):
    """Return (hello_map, rest) once buf holds the whole first frame, else
    None. Raises Malformed if the first frame is not a valid HELLO."""
    if len(buf) < 12:
        return None
    ver, ftype, flags, sid, length = HDR.unpack_from(buf, 0)
    if ver != 1 or ftype != HELLO or sid != 0 or flags or length == 0 \
            or length > CAP:
        raise Malformed("bad first frame (type %d)" % ftype)
    if len(buf) < 12 + length:
        return None
    m = _unpackb(bytes(buf[12:12 + length]), raw=False)
    if not isinstance(m, dict):
        raise Malformed("HELLO is not a map")
    m = dict((as_text(k), v) for k, v in m.items())
    return m, buf[12 + length:]


def exit_now(code):
    """Flush stdout and stderr, then _exit(code): no atexit, no finalizers
    (they belong to the process forked from)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


def read_rss(pagesize=[0]):
    if not pagesize[0]:
        try:
            pagesize[0] = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pagesize[0] = 4096
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * pagesize[0]
    except (OSError, ValueError, IndexError):
        return 0


# -- stream bookkeeping shared by the workers -----------------------------------

class StreamFrames(object):
    """What every worker does with the master's frames (PROTOCOL.md sections
    6 and 8): stream ids, body data within the window, credit, cancels,
    QUIT, and the state a worker shares with its Boot. A worker class
    provides on_request(sid, frame), on_progress(st), on_cancel(st, reason)
    and quit(). A stream has body, buffered, unreturned, credit, req_ended,
    cancelled and done."""

    def __init__(self, boot, app):
        self.boot = boot
        self.sock = boot.sock
        self.enc = boot.enc
        self.out = boot.enc.out     # frames for the next write
        self.app = app
        self.window = boot.window
        self.max_payload = boot.enc.max_payload
        self.max_body = self.max_payload - 4096     # one RESPONSE frame's body
        self.heartbeat_s = boot.heartbeat_s
        self.slot = boot.slot
        self.hooks = boot.config
        self.winfo = boot.winfo
        self.rbuf = boot.rbuf       # channel bytes not yet decoded
        self.served = 0
        self.streams = {}
        self.last_sid = 0
        self.quitting = False

    def take_input(self):
        """Handle every whole frame in rbuf."""
        on_frame = self.on_frame
        for fr in codec.decode(self.rbuf, Malformed):
            on_frame(fr)

    def read_input(self):
        """One recv from the channel into rbuf, then every whole frame
        handled. False once the master has closed the channel."""
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            return False
        self.rbuf += data
        self.take_input()
        return True

    def on_frame(self, fr):
        ftype = fr[0]
        sid = fr[2]
        if ftype == REQUEST:
            if sid <= self.last_sid:
                raise Malformed("stream id %d not increasing" % sid)
            self.last_sid = sid
            self.on_request(sid, fr)
        elif ftype == BODY:
            st = self.streams.get(sid)
            if st is None or st.cancelled or st.done:
                return          # closed stream: dropped (section 6)
            if st.req_ended:
                raise Malformed("BODY after END on stream %d" % sid)
            data = fr[3]
            if data:
                st.buffered += len(data)
                if st.buffered + st.unreturned > self.window:
                    raise Malformed("body beyond the window on stream %d"
                                    % sid)
                st.body.append(data)
            if fr[1] & F_END:
                st.req_ended = True
            self.on_progress(st)
        elif ftype == WINDOW:
            st = self.streams.get(sid)
            if st is not None:
                st.credit += fr[3]
                if st.credit > 0xFFFFFFFF:
                    raise Malformed("window overflow on stream %d" % sid)
                self.on_progress(st)
        elif ftype == CANCEL:
            st = self.streams.pop(sid, None)
            if st is not None:
                st.cancelled = True
                self.on_cancel(st, fr[3])
        elif ftype == QUIT:
            if not fr[3]:
                self.hooks.call("worker_int", self.winfo)
                self.boot.exit_now(0)
            self.quit()
        elif ftype == HELLO:
            raise Malformed("second HELLO")

    def on_progress(self, st):
        pass

    def on_cancel(self, st, reason):
        pass


# -- the codec API ---------------------------------------------------------------
# The hot path calls these functions through `codec` (end of this file): the
# C extension _gwfast (workerlib/python/_gwfast.c, built over proto/gwp.c)
# when it is built, else these pure-Python reference versions, which
# tests/unit/test_gwfast.py compares it against.

def decode(buf, malformed=Malformed):
    """Every whole frame at the start of bytearray buf -> list of tuples
    (see _gwfast.c); consumed bytes are deleted from buf. Raises
    malformed(msg), leaving buf untouched, on anything PROTOCOL.md calls
    malformed."""
    out = []
    pos = 0
    n = len(buf)
    unpack_from = HDR.unpack_from
    while n - pos >= 12:
        ver, ftype, flags, sid, length = unpack_from(buf, pos)
        if ver != 1:
            raise malformed("version %d" % ver)
        if ftype not in FROM_MASTER:
            raise malformed("type %d from master" % ftype)
        if length == 0 or length > CAP:
            raise malformed("length %d" % length)
        if ftype in CHANNEL_TYPES:
            if sid != 0:
                raise malformed("stream %d on channel message" % sid)
        elif sid == 0:
            raise malformed("stream 0 on stream message")
        if flags and (flags & ~F_END or ftype not in END_TYPES):
            raise malformed("flags 0x%x on type %d" % (flags, ftype))
        end = pos + 12 + length
        if end > n:
            break
        try:
            m = _unpackb(buf[pos + 12:end], raw=False,
                         unicode_errors="surrogateescape")
        except Exception as e:
            raise malformed("msgpack: %s" % e)
        pos = end
        if m.__class__ is not dict:
            raise malformed("payload is not a map")
        for k in m:
            if k.__class__ is not str:      # keys may be bin (section 3)
                try:
                    m = dict((as_text(k2), v) for k2, v in m.items())
                except Malformed as e:
                    raise malformed(str(e))
                break
        try:
            if ftype == REQUEST:
                out.append((REQUEST, flags, sid) + _request_fields(m))
            elif ftype == BODY:
                out.append((BODY, flags, sid, as_bytes(m["data"])))
            elif ftype == WINDOW:
                v = m["bytes"]
                if v.__class__ is not int or not 0 <= v <= 0xFFFFFFFF:
                    raise malformed("WINDOW bytes %r" % (v,))
                out.append((WINDOW, flags, sid, v))
            elif ftype == CANCEL:
                out.append((CANCEL, flags, sid, as_text(m.get("reason", ""))))
            elif ftype == QUIT:
                g = m["graceful"]
                if g.__class__ is not bool:
                    raise malformed("QUIT graceful %r" % (g,))
                out.append((QUIT, flags, 0, g, m.get("timeout_ms", 0)))
            else:
                out.append((HELLO, flags, 0))
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            raise malformed("bad payload of type %d: %r" % (ftype, e))
        except Malformed as e:
            raise malformed(str(e))
    del buf[:pos]
    return out


def _request_fields(m):
    hs = m["headers"]
    if len(hs) > 1024:
        raise Malformed("more than 1024 headers")
    headers = [(as_bytes(p[0]), as_bytes(p[1])) for p in hs]
    minor = m["http_minor"]
    if minor not in (0, 1) or minor.__class__ is not int:
        raise Malformed("http_minor %r" % (minor,))
    cl = m.get("content_length", 0)
    if cl.__class__ is not int or cl < -1:
        raise Malformed("content_length %r" % (cl,))
    return (as_text(m["method"]), as_bytes(m["target"]), as_bytes(m["path"]),
            as_bytes(m.get("query", b"")), minor, headers,
            as_text(m.get("peer", "")), as_text(m.get("server", "")),
            as_text(m.get("scheme", "http")), cl)


def environ(req, base):
    """PEP 3333 environ for a REQUEST tuple (decode's, fields 3..12)."""
    method, target, path, query, minor, headers, peer, server, scheme, \
        cl = req[3:13]
    env = base.copy()
    host, port = split_addr(server)
    phost, pport = split_addr(peer)
    env["REQUEST_METHOD"] = method
    env["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path
                        else path).decode("latin-1")
    env["QUERY_STRING"] = query.decode("latin-1")
    env["RAW_URI"] = target.decode("latin-1")
    env["SERVER_NAME"] = host.strip("[]") or "localhost"
    env["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")
    env["SERVER_PROTOCOL"] = "HTTP/1.1" if minor else "HTTP/1.0"
    env["REMOTE_ADDR"] = phost.strip("[]")
    env["REMOTE_PORT"] = pport
    env["wsgi.url_scheme"] = scheme
    if cl > 0:
        env["CONTENT_LENGTH"] = str(cl)
    for name, value in headers:
        if b"_" in name:
            continue    # ambiguous with '-': dropped, as Gunicorn does
        key = name.decode("latin-1").upper().replace("-", "_")
        value = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
            continue
        if key == "CONTENT_LENGTH":
            continue    # content_length and the body are authoritative
        key = "HTTP_" + key
        if key in env:
            env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            env[key] = value
    return env


def asgi_headers(headers):
    return [(n.lower(), v) for n, v in headers]


def asgi_scope(req, base, state):
    """ASGI http scope for a REQUEST tuple: base's keys (type, asgi,
    root_path) plus the request's; state is copied (lifespan state)."""
    method, target, path, query, minor, headers, peer, server, scheme, \
        cl = req[3:13]
    scope = base.copy()
    scope["http_version"] = "1.1" if minor else "1.0"
    scope["method"] = method
    scope["scheme"] = scheme
    scope["path"] = unquote_to_bytes(path).decode("utf-8", "replace")
    scope["raw_path"] = path
    scope["query_string"] = query
    scope["headers"] = asgi_headers(headers)
    scope["client"] = (split_hostport(peer) if peer and peer != "unix"
                       else None)
    scope["server"] = (split_hostport(server) if server and server != "unix"
                       else None)
    scope["state"] = state.copy()
    scope["extensions"] = {}
    return scope


_pack = msgpack.Packer(use_bin_type=True).pack


def _hb(v):
    if v.__class__ is bytes:
        return v
    if isinstance(v, str):
        return v.encode("latin-1")
    if isinstance(v, int):      # bytes(5) would be five NULs
        raise TypeError("header name or value must be bytes or str, not %s"
                        % type(v).__name__)
    return bytes(v)


# What the master puts on the HTTP wire (gwp_header_valid in proto/gwp.c):
# the name an RFC 9110 token, the value without control bytes but HTAB.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _field(n, v):
    n = _hb(n)
    v = _hb(v)
    if not _TOKEN.match(n):
        raise ValueError("invalid response header name %r: not an RFC 9110 token" % (n,))
    if _CTL.search(v):
        raise ValueError("invalid response header %r: control byte in its value" % (n,))
    return (n, v)


def _frame(ftype, flags, sid, payload):
    n = len(payload)
    if n > CAP:
        raise ValueError("payload of %d bytes exceeds the cap" % n)
    return HDR.pack(1, ftype, flags, sid, n) + payload


def response(sid, status, headers, body, end):
    m = {"status": status, "headers": [_field(n, v) for n, v in headers]}
    if body:
        m["body"] = body
    return _frame(RESPONSE, F_END if end else 0, sid, _pack(m))


def data_frame(ftype, sid, data, end):
    return _frame(ftype, F_END if end else 0, sid, _pack({"data": data}))


def window(sid, n):
    return _frame(WINDOW, 0, sid, _pack({"bytes": n}))


def cancel(sid, reason):
    return _frame(CANCEL, 0, sid, _pack({"reason": reason}))


def heartbeat(served, inflight, tasks, rss, loop):
    return _frame(HEARTBEAT, 0, 0, _pack({"served": served,
                                          "inflight": inflight,
                                          "tasks": tasks, "rss": rss,
                                          "loop": loop}))


class StreamBase(object):
    """An ASGI stream's state (the pure twin of _gwfast.StreamBase, which
    also does send()'s common case in C). send() here always goes to the
    subclass's send_slow(message), which is the full behaviour."""
    __slots__ = ("w", "sid", "req", "body", "headers", "waiter", "task",
                 "buffered", "credit", "unreturned", "sent_bytes", "limit",
                 "status", "req_ended", "body_done", "cancelled", "started",
                 "head_sent", "done")

    def __init__(self, w, sid, req, ended, credit, limit):
        self.w = w
        self.sid = sid
        self.req = req
        # no body coming (END on the REQUEST): an empty tuple, never filled
        self.body = () if ended else collections.deque()
        self.headers = self.waiter = self.task = None
        self.buffered = self.unreturned = self.sent_bytes = self.status = 0
        self.credit = credit
        self.limit = limit          # largest body sent in one frame
        self.req_ended = bool(ended)
        self.body_done = False      # the last http.request was delivered
        self.cancelled = False
        self.started = False        # http.response.start seen
        self.head_sent = False      # RESPONSE frame queued
        self.done = False           # response direction ended

    def send(self, message):
        return self.send_slow(message)

    def finish(self):
        self.done = True
        w = self.w
        if w.streams.pop(self.sid, None) is not None:
            w.served += 1
        self.wake()

    def wake(self):
        f = self.waiter
        if f is not None:
            self.waiter = None
            if not f.done():
                f.set_result(None)


FINISHED = object()


def step(coro, ctx, loop, task):
    """Run coroutine coro to its first suspension or its end, in context
    ctx, with task as the loop's current task: FINISHED at the end, else
    what it yielded."""
    from asyncio.tasks import _enter_task, _leave_task
    _enter_task(loop, task)
    try:
        return ctx.run(coro.send, None)
    except StopIteration:
        return FINISHED
    finally:
        _leave_task(loop, task)


class _PureCodec(object):
    """The pure-Python codec, as an object with the extension's API."""
    name = "python"
    decode = staticmethod(decode)
    environ = staticmethod(environ)
    asgi_headers = staticmethod(asgi_headers)
    asgi_scope = staticmethod(asgi_scope)
    response = staticmethod(response)
    data_frame = staticmethod(data_frame)
    window = staticmethod(window)
    cancel = staticmethod(cancel)
    heartbeat = staticmethod(heartbeat)
    StreamBase = StreamBase
    step = staticmethod(step)
    FINISHED = FINISHED


def _load_codec():
    if os.environ.get("GATEWAY_PY_CODEC", "auto") == "python":
        return _PureCodec
    here = os.path.dirname(os.path.abspath(__file__))
    ext_dir = os.path.normpath(os.path.join(here, "..", "..", "..", "build",
                                            "python"))
    if ext_dir not in sys.path:
        sys.path.append(ext_dir)
    try:
        import _gwfast
    except ImportError:
        if os.environ.get("GATEWAY_PY_CODEC") == "c":
            raise
        return _PureCodec
    _gwfast.name = "c"
    return _gwfast


codec = _load_codec()
