"""The GWP wire format (proto/PROTOCOL.md), worker side, in Python.

Constants, frame header checks, payload decoding and frame encoding. The
spec in proto/PROTOCOL.md is the authority; this module only implements it.
Self-contained: stdlib + msgpack (Debian's python3-msgpack, C extension).
"""

import struct

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


def decode_frames(buf, on_frame):
    """Call on_frame(type, flags, sid, payload_map) for every whole frame at
    the start of bytearray buf, then delete the consumed bytes. Raises
    Malformed on anything PROTOCOL.md calls malformed."""
    pos = 0
    n = len(buf)
    unpack_from = HDR.unpack_from
    try:
        while n - pos >= 12:
            ver, ftype, flags, sid, length = unpack_from(buf, pos)
            if ver != 1:
                raise Malformed("version %d" % ver)
            if ftype not in FROM_MASTER:
                raise Malformed("type %d from master" % ftype)
            if length == 0 or length > CAP:
                raise Malformed("length %d" % length)
            if ftype in CHANNEL_TYPES:
                if sid != 0:
                    raise Malformed("stream %d on channel message" % sid)
            elif sid == 0:
                raise Malformed("stream 0 on stream message")
            if flags and (flags & ~F_END or ftype not in END_TYPES):
                raise Malformed("flags 0x%x on type %d" % (flags, ftype))
            end = pos + 12 + length
            if end > n:
                break
            try:
                obj = _unpackb(buf[pos + 12:end], raw=False,
                               unicode_errors="surrogateescape")
            except Exception as e:
                raise Malformed("msgpack: %s" % e)
            pos = end
            if obj.__class__ is not dict:
                raise Malformed("payload is not a map")
            on_frame(ftype, flags, sid, obj)
    finally:
        del buf[:pos]


def parse_request(m):
    """A REQUEST payload -> dict with the fields the front ends use."""
    try:
        hs = m["headers"]
        headers = [(p[0] if p[0].__class__ is bytes else as_bytes(p[0]),
                    p[1] if p[1].__class__ is bytes else as_bytes(p[1]))
                   for p in hs]
        if len(headers) > 1024:
            raise Malformed("more than 1024 headers")
        minor = m["http_minor"]
        if minor not in (0, 1):
            raise Malformed("http_minor %r" % (minor,))
        cl = m.get("content_length", 0)
        if cl < -1:
            raise Malformed("content_length %d" % cl)
        return (as_text(m["method"]), as_bytes(m["target"]),
                as_bytes(m["path"]), as_bytes(m.get("query", b"")), minor,
                headers, as_text(m.get("peer", "")),
                as_text(m.get("server", "")), as_text(m.get("scheme", "http")),
                cl)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise Malformed("bad REQUEST: %r" % (e,))


def split_hostport(addr):
    """"ip:port", "[ip6]:port" or "unix" -> (host, port-int-or-None)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return addr.strip("[]"), None
    return host.strip("[]"), int(port)


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
        out = self.out
        if not out:
            return b""
        self.out = []
        return out[0] if len(out) == 1 else b"".join(out)


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


def read_rss(pagesize=[0]):
    if not pagesize[0]:
        import os
        try:
            pagesize[0] = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pagesize[0] = 4096
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * pagesize[0]
    except (OSError, ValueError, IndexError):
        return 0
