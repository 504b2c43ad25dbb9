"""_gwfast (workerlib/python/_gwfast.c) against the pure-Python reference
codec (workerlib/python/gateway_runtime/_proto.py) and against PROTOCOL.md.

Run with Debian's interpreter after `make pyext`:
    /usr/bin/python3 -m pytest -q tests/unit/test_gwfast.py
GWFAST_DIR=<dir> imports the extension from another directory (e.g. an
ASan build), GWFAST_SEED=<n> changes the random seed, GWFAST_SOAK=<n> sets
the iterations of the leak soak test.

Three parties are compared:
  C       _gwfast, i.e. proto/gwp.c's decoder plus the direction check;
  ref     _proto.decode/environ/... (msgpack-python based);
  oracle  strict_decode() below: a small msgpack reader and the §5 schema
          written from PROTOCOL.md alone.
C must agree with the oracle exactly, accept or reject, on every input. The
reference must agree with both, except on inputs in one of the documented
classes where it is laxer or stricter (REF_LAX / REF_STRICT below).
"""

import gc
import os
import random
import struct
import sys
import tracemalloc

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EXT_DIR = os.environ.get("GWFAST_DIR") or os.path.join(ROOT, "build", "python")
sys.path.insert(0, EXT_DIR)
sys.path.insert(1, os.path.join(ROOT, "workerlib", "python"))

try:
    import _gwfast as C
except ImportError as e:                                  # pragma: no cover
    raise ImportError("_gwfast is not built in %s (make pyext): %s" % (EXT_DIR, e))
import msgpack  # noqa: E402
from gateway_runtime import _proto as P  # noqa: E402

SEED = int(os.environ.get("GWFAST_SEED", "20240611"))
CAP = 1 << 20
HDR = struct.Struct(">BBHII")
HELLO, READY, REQUEST, BODY, RESPONSE, RESP_BODY, CANCEL, WINDOW, HEARTBEAT, QUIT, ERROR = range(1, 12)


class Mal(Exception):
    pass


def test_module_is_the_built_one():
    assert os.path.dirname(os.path.abspath(C.__file__)) == os.path.abspath(EXT_DIR)
    assert C.name == "c"


# ---------------------------------------------------------------------------
# A msgpack writer that can produce every encoding the spec accepts

class Bin(bytes):
    """bytes to be written as msgpack bin (plain bytes: bin too)."""


class Str(bytes):
    """raw bytes to be written as msgpack str (need not be UTF-8)."""


class Map(list):
    """an ordered list of (key, value) pairs, duplicates allowed."""


class Raw(bytes):
    """bytes spliced in as they are."""


class Ext(object):
    def __init__(self, code, data):
        self.code, self.data = code, data


def _head_str(n, rnd, is_bin):
    if is_bin:
        forms = [(0xff, b"\xc4", ">B"), (0xffff, b"\xc5", ">H"), (0xffffffff, b"\xc6", ">I")]
    else:
        forms = [(0xff, b"\xd9", ">B"), (0xffff, b"\xda", ">H"), (0xffffffff, b"\xdb", ">I")]
    ok = [f for f in forms if n <= f[0]]
    if not is_bin and n < 32 and (rnd is None or rnd.random() < 0.7):
        return bytes([0xa0 | n])
    f = ok[0] if rnd is None or rnd.random() < 0.7 else rnd.choice(ok)
    return f[1] + struct.pack(f[2], n)


def _head_cnt(n, rnd, fix, c16, c32):
    if n < 16 and (rnd is None or rnd.random() < 0.8):
        return bytes([fix | n])
    if n <= 0xffff and (rnd is None or rnd.random() < 0.7):
        return bytes([c16]) + struct.pack(">H", n)
    return bytes([c32]) + struct.pack(">I", n)


def _int(v, rnd):
    forms = []
    if 0 <= v < 0x80:
        forms.append(bytes([v]))
    if -32 <= v < 0:
        forms.append(struct.pack(">b", v))
    for lo, hi, h, f in ((0, 0xff, 0xcc, ">B"), (0, 0xffff, 0xcd, ">H"), (0, 0xffffffff, 0xce, ">I"),
                         (0, 0xffffffffffffffff, 0xcf, ">Q"), (-0x80, 0x7f, 0xd0, ">b"),
                         (-0x8000, 0x7fff, 0xd1, ">h"), (-0x80000000, 0x7fffffff, 0xd2, ">i"),
                         (-(1 << 63), (1 << 63) - 1, 0xd3, ">q")):
        if lo <= v <= hi:
            forms.append(bytes([h]) + struct.pack(f, v))
    return forms[0] if rnd is None or rnd.random() < 0.7 else rnd.choice(forms)


def mp(obj, rnd=None):
    """msgpack bytes for obj; rnd: random non-minimal heads (still valid)."""
    if isinstance(obj, Raw):
        return bytes(obj)
    if obj is None:
        return b"\xc0"
    if obj is True:
        return b"\xc3"
    if obj is False:
        return b"\xc2"
    if isinstance(obj, int):
        return _int(obj, rnd)
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, Str):
        return _head_str(len(obj), rnd, False) + bytes(obj)
    if isinstance(obj, (bytes, bytearray)):
        return _head_str(len(obj), rnd, True) + bytes(obj)
    if isinstance(obj, str):
        b = obj.encode("utf-8", "surrogateescape")
        return _head_str(len(b), rnd, False) + b
    if isinstance(obj, Ext):
        n = len(obj.data)
        fix = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}
        if n in fix and (rnd is None or rnd.random() < 0.5):
            return bytes([fix[n]]) + struct.pack(">b", obj.code) + obj.data
        return b"\xc7" + struct.pack(">Bb", n, obj.code) + obj.data
    if isinstance(obj, Map):
        return _head_cnt(len(obj), rnd, 0x80, 0xde, 0xdf) + b"".join(
            mp(k, rnd) + mp(v, rnd) for k, v in obj)
    if isinstance(obj, dict):
        return mp(Map(obj.items()), rnd)
    if isinstance(obj, (list, tuple)):
        return _head_cnt(len(obj), rnd, 0x90, 0xdc, 0xdd) + b"".join(mp(x, rnd) for x in obj)
    raise TypeError(type(obj))


def frame(ftype, sid, payload, flags=0, version=1, length=None):
    return HDR.pack(version, ftype, flags, sid, len(payload) if length is None else length) + payload


def canon_request(sid=1, flags=0, **kw):
    """A REQUEST frame exactly as gwp_encode_request writes it."""
    m = {"method": "GET", "target": b"/", "path": b"/", "query": b"", "http_minor": 1,
         "headers": [], "peer": "127.0.0.1:40000", "server": "127.0.0.1:8000",
         "scheme": "http", "content_length": 0, "keepalive": True}
    m.update(kw)
    return frame(REQUEST, sid, msgpack.packb(m, use_bin_type=True), flags)


# ---------------------------------------------------------------------------
# The oracle: a strict msgpack reader and the §5 schema, from PROTOCOL.md

class Bad(Exception):
    pass


class PStr(bytes):
    is_bin = False


class PMap(list):
    pass


class PArr(list):
    pass


class PInt(int):
    pass


class POther(object):
    pass


def _read(b, i, depth):
    if i >= len(b):
        raise Bad("truncated")
    c = b[i]
    i += 1

    def take(n):
        if len(b) - i < n:
            raise Bad("truncated")
        return b[i:i + n]

    def container(n, is_map, i):
        if depth + 1 > 8:
            raise Bad("depth")
        out = PMap() if is_map else PArr()
        for _ in range(n):
            if is_map:
                k, i = _read(b, i, depth + 1)
                v, i = _read(b, i, depth + 1)
                out.append((k, v))
            else:
                v, i = _read(b, i, depth + 1)
                out.append(v)
        return out, i

    def data(n, hdr, cls, is_bin=False):
        d = take(hdr + n)[hdr:]
        o = cls(d)
        o.is_bin = is_bin
        return o, i + hdr + n

    if c <= 0x7f:
        return PInt(c), i
    if c >= 0xe0:
        return PInt(c - 256), i
    if c <= 0x8f:
        return container(c & 15, True, i)
    if c <= 0x9f:
        return container(c & 15, False, i)
    if c <= 0xbf:
        return data(c & 31, 0, PStr)
    if c == 0xc0:
        return None, i
    if c == 0xc1:
        raise Bad("0xc1")
    if c in (0xc2, 0xc3):
        return c == 0xc3, i
    if c in (0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb):
        w = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}[c]
        n = int.from_bytes(take(w), "big")
        return data(n, w, PStr, c <= 0xc6)
    if c in (0xc7, 0xc8, 0xc9):
        w = {0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
        n = int.from_bytes(take(w), "big")
        take(w + 1 + n)
        return POther(), i + w + 1 + n
    if c in (0xca, 0xcb):
        n = 4 if c == 0xca else 8
        take(n)
        return POther(), i + n
    if c in (0xcc, 0xcd, 0xce, 0xcf):
        n = 1 << (c - 0xcc)
        return PInt(int.from_bytes(take(n), "big")), i + n
    if c in (0xd0, 0xd1, 0xd2, 0xd3):
        n = 1 << (c - 0xd0)
        return PInt(int.from_bytes(take(n), "big", signed=True)), i + n
    if 0xd4 <= c <= 0xd8:
        n = 1 + (1 << (c - 0xd4))
        take(n)
        return POther(), i + n
    if c in (0xdc, 0xdd):
        w = 2 if c == 0xdc else 4
        n = int.from_bytes(take(w), "big")
        return container(n, False, i + w)
    if c in (0xde, 0xdf):
        w = 2 if c == 0xde else 4
        n = int.from_bytes(take(w), "big")
        return container(n, True, i + w)
    raise AssertionError(c)


U32, U64, I64, BOOL, TEXT, BYTES, HDRS = "u32", "u64", "i64", "bool", "text", "bytes", "hdrs"
# type -> [(key, kind, required, default, lo, hi)]
SCHEMA = {
    HELLO: [("version", U32, 1, None, 0, 2 ** 32 - 1), ("slot", U32, 1, None, 0, 2 ** 32 - 1),
            ("generation", U32, 1, None, 0, 2 ** 32 - 1),
            ("max_payload", U32, 0, CAP, 0, 2 ** 32 - 1), ("window", U32, 0, 262144, 1, 2 ** 32 - 1),
            ("heartbeat_ms", U32, 1, None, 0, 2 ** 32 - 1)],
    REQUEST: [("method", TEXT, 1, None), ("target", BYTES, 1, None), ("path", BYTES, 1, None),
              ("query", BYTES, 0, b""), ("http_minor", U32, 1, None, 0, 1), ("headers", HDRS, 1, None),
              ("peer", TEXT, 0, ""), ("server", TEXT, 0, ""), ("scheme", TEXT, 0, "http"),
              ("content_length", I64, 0, 0, -1, 2 ** 63 - 1), ("keepalive", BOOL, 0, False)],
    BODY: [("data", BYTES, 1, None)],
    CANCEL: [("reason", TEXT, 0, "")],
    WINDOW: [("bytes", U32, 1, None, 0, 2 ** 32 - 1)],
    QUIT: [("graceful", BOOL, 1, None), ("timeout_ms", U32, 0, 0, 0, 2 ** 32 - 1)],
}
FROM_MASTER = set(SCHEMA)
STREAM_TYPES = {REQUEST, BODY, RESPONSE, RESP_BODY, CANCEL, WINDOW}
END_TYPES = {REQUEST, BODY, RESPONSE, RESP_BODY}


def _text(b):
    return bytes(b).decode("utf-8", "surrogateescape")


def strict_payload(ftype, payload, notes):
    """The §3/§5 check of one payload: dict of field values, or Bad(reason).
    notes collects features the reference is known to treat differently."""
    try:
        return _strict_payload(ftype, payload, notes)
    except Bad as e:
        # The reference does not look inside a (second) HELLO at all.
        if ftype == HELLO and str(e).split(":")[0] in ("dup-key", "type", "range", "missing"):
            raise Bad("hello:" + str(e))
        raise


def _strict_payload(ftype, payload, notes):
    obj, end = _read(payload, 0, 0)
    if end != len(payload):
        raise Bad("trailing")
    if not isinstance(obj, PMap):
        raise Bad("not a map")
    fields = {f[0]: f for f in SCHEMA[ftype]}
    got = {}

    def walk(o):            # features inside values of unknown keys
        if isinstance(o, PMap):
            for k, v in o:
                if not isinstance(k, PStr):
                    notes.add("nested-nonstr-key")
                walk(k)
                walk(v)
        elif isinstance(o, PArr):
            for v in o:
                walk(v)
    # ext of a reserved (negative) type msgpack-python refuses, anywhere:
    # any but -1 (timestamp), and -1 of a length other than 4, 8, 12
    if _has_bad_timestamp(payload):
        notes.add("reserved-ext")
    for k, v in obj:
        if not isinstance(k, PStr):
            raise Bad("key not str/bin")
        name = bytes(k)
        if name not in {f.encode() for f in fields}:
            walk(v)
            continue
        name = name.decode()
        if k.is_bin:
            notes.add("bin-key")
        if name in got:
            raise Bad("dup-key")
        f = fields[name]
        kind = f[1]
        if kind in (U32, U64, I64):
            if type(v) is not PInt:
                raise Bad("type:" + name)
            if not f[4] <= v <= f[5]:
                raise Bad("range:" + name)
            got[name] = int(v)
        elif kind == BOOL:
            if type(v) is not bool:
                raise Bad("type:" + name)
            got[name] = v
        elif kind in (TEXT, BYTES):
            if not isinstance(v, PStr):
                raise Bad("type:" + name)
            got[name] = _text(v) if kind == TEXT else bytes(v)
        elif kind == HDRS:
            if not isinstance(v, PArr):
                raise Bad("type:" + name)
            if len(v) > 1024:
                raise Bad("too-many-headers")
            hs = []
            for p in v:
                if not isinstance(p, PArr) or len(p) != 2:
                    raise Bad("header-pair")
                if not isinstance(p[0], PStr) or not isinstance(p[1], PStr):
                    raise Bad("header-type")
                hs.append((bytes(p[0]), bytes(p[1])))
            got[name] = hs
    for f in SCHEMA[ftype]:
        if f[0] not in got:
            if f[2]:
                raise Bad("missing:" + f[0])
            got[f[0]] = f[3]
    return got


def _has_bad_timestamp(payload):
    # Re-walk with positions: find ext heads with code -1 and a length that
    # is not 4, 8 or 12 (msgpack-python raises on those).
    found = []

    def rd(i):
        c = payload[i]
        if c in (0xd4, 0xd5, 0xd6, 0xd7, 0xd8):
            n = 1 << (c - 0xd4)
            if payload[i + 1] >= 0x80 and (payload[i + 1] != 0xff or n not in (4, 8)):
                found.append(i)
            return i + 2 + n
        if c in (0xc7, 0xc8, 0xc9):
            w = {0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
            n = int.from_bytes(payload[i + 1:i + 1 + w], "big")
            if payload[i + 1 + w] >= 0x80 and (payload[i + 1 + w] != 0xff or n not in (4, 8, 12)):
                found.append(i)
            return i + 2 + w + n
        if c <= 0x7f or c >= 0xe0 or c in (0xc0, 0xc2, 0xc3):
            return i + 1
        if c <= 0x8f or 0x90 <= c <= 0x9f or c in (0xdc, 0xdd, 0xde, 0xdf):
            if c <= 0x8f:
                n, i = (c & 15) * 2, i + 1
            elif c <= 0x9f:
                n, i = c & 15, i + 1
            else:
                w = 2 if c in (0xdc, 0xde) else 4
                n = int.from_bytes(payload[i + 1:i + 1 + w], "big") * (2 if c >= 0xde else 1)
                i += 1 + w
            for _ in range(n):
                i = rd(i)
            return i
        if 0xa0 <= c <= 0xbf:
            return i + 1 + (c & 31)
        if c in (0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb):
            w = {0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4}[c]
            return i + 1 + w + int.from_bytes(payload[i + 1:i + 1 + w], "big")
        if c in (0xca, 0xcb):
            return i + (5 if c == 0xca else 9)
        if 0xcc <= c <= 0xcf:
            return i + 1 + (1 << (c - 0xcc))
        if 0xd0 <= c <= 0xd3:
            return i + 1 + (1 << (c - 0xd0))
        raise IndexError
    try:
        rd(0)
    except IndexError:
        pass
    return bool(found)


def strict_decode(buf, notes=None):
    """The oracle's decode(): (list of tuples, bytes consumed) or Bad."""
    notes = set() if notes is None else notes
    out = []
    pos = 0
    while len(buf) - pos >= 12:
        ver, t, flags, sid, n = HDR.unpack_from(buf, pos)
        if ver != 1:
            raise Bad("version")
        if not 1 <= t <= 11:
            raise Bad("type")
        if t not in FROM_MASTER:
            raise Bad("direction")
        if n == 0 or n > CAP:
            raise Bad("length")
        if (t in STREAM_TYPES) != (sid != 0):
            raise Bad("stream")
        if flags & ~1 or (flags and t not in END_TYPES):
            raise Bad("flags")
        if len(buf) - pos - 12 < n:
            break
        m = strict_payload(t, bytes(buf[pos + 12:pos + 12 + n]), notes)
        pos += 12 + n
        if t == REQUEST:
            out.append((t, flags, sid, m["method"], m["target"], m["path"], m["query"],
                        m["http_minor"], m["headers"], m["peer"], m["server"], m["scheme"],
                        m["content_length"]))
        elif t == BODY:
            out.append((t, flags, sid, m["data"]))
        elif t == WINDOW:
            out.append((t, flags, sid, m["bytes"]))
        elif t == CANCEL:
            out.append((t, flags, sid, m["reason"]))
        elif t == QUIT:
            out.append((t, flags, 0, m["graceful"], m["timeout_ms"]))
        else:
            out.append((t, flags, 0))
    return out, pos


# Where the reference (msgpack.unpackb + _proto's field checks) is known to
# differ from PROTOCOL.md / the C decoder. Reasons the oracle rejects for but
# the reference accepts:
REF_LAX = {
    "dup-key",               # msgpack dict: the last duplicate wins
    "type:keepalive",        # never looked at
    "type:timeout_ms", "range:timeout_ms",   # QUIT.timeout_ms: not checked
    "range:content_length",  # uint64 above 2**63-1 accepted
    "depth",                 # no nesting limit of 8
    "header-pair",           # any indexable of >= 2 items (a 3-array, a str)
    "header-type",           # (only via a str pair: its characters)
    "type:headers",          # any iterable: "", b"", {} pass as no headers
}
# ... and features of valid input that the reference mishandles:
REF_STRICT = {
    "bin-key",               # known key sent as bin: not found (KeyError, or
                             # an optional key silently takes its default)
    "nested-nonstr-key",     # strict_map_key: int keys in unknown values refused
    "reserved-ext",          # ext types < 0 refused (-1 unless a valid timestamp)
}


def run_c(data, cls=Mal):
    buf = bytearray(data)
    try:
        out = C.decode(buf, cls)
    except cls as e:
        assert bytes(buf) == bytes(data), "buf changed on error"
        return "ERR", str(e)
    return out, bytes(buf)


def run_ref(data):
    buf = bytearray(data)
    try:
        out = P.decode(buf, Mal)
    except Mal as e:
        return "ERR", str(e)
    return out, bytes(buf)


def run_oracle(data):
    notes = set()
    try:
        out, pos = strict_decode(bytes(data), notes)
    except Bad as e:
        return ("ERR", str(e)), notes
    return (out, bytes(data[pos:])), notes


def check_all(data, stats=None):
    """C == oracle, always; ref == oracle unless explained."""
    c = run_c(data)
    o, notes = run_oracle(data)
    if o[0] == "ERR":
        assert c[0] == "ERR", "C accepted what the spec rejects (%s): %r" % (o[1], data[:64])
    else:
        assert c == o, "C and the spec oracle differ"
    r = run_ref(data)
    if stats is not None:
        stats["n"] = stats.get("n", 0) + 1
        stats["reject" if o[0] == "ERR" else "accept"] = stats.get(
            "reject" if o[0] == "ERR" else "accept", 0) + 1
    if (r[0] == "ERR") == (o[0] == "ERR") and (o[0] == "ERR" or r == o):
        return c
    # The reference differs: must be one of the documented classes.
    if o[0] == "ERR":
        assert o[1] in REF_LAX or o[1].startswith("hello:") or notes & REF_STRICT, \
            "ref accepted what the spec rejects for %r" % (o[1],)
        if stats is not None:
            stats["ref_lax:" + o[1]] = stats.get("ref_lax:" + o[1], 0) + 1
    else:
        assert notes & REF_STRICT, "ref differs on valid input, notes %r: %r vs %r" % (notes, r, o)
        if stats is not None:
            for n in notes & REF_STRICT:
                stats["ref_strict:" + n] = stats.get("ref_strict:" + n, 0) + 1
    return c


# ---------------------------------------------------------------------------
# decode: fixed cases

EXAMPLE_REQUEST = bytes.fromhex(
    "010300010000000100 0000ac8ba66d65 74686f64a3474554a6746172676574c4"
    "082f68693f783d3132a470617468c403 2f6869a57175657279c404783d3132aa"
    "687474705f6d696e6f7201a768656164 657273919 2c404486f7374c409657861"
    "6d706c652e6fa470656572af3132372e 302e302e313a3430303030a6736572 76"
    "6572ae3132372e302e302e313a383030 30a6736368656d65a468747470ae636f"
    "6e74656e745f6c656e67746800a96b65 6570616c697665c3".replace(" ", ""))

EXAMPLE_RESPONSE = bytes.fromhex(
    "010500010000000100000041 83a6737461747573ccc8a7686561646572739192"
    "c40c436f6e74656e742d54797065c40a 746578742f706c61696ea4626f6479c4"
    "0c48656c6c6f2c20776f726c64".replace(" ", ""))


def test_protocol_example_request():
    want = [(3, 1, 1, "GET", b"/hi?x=12", b"/hi", b"x=12", 1, [(b"Host", b"example.o")],
             "127.0.0.1:40000", "127.0.0.1:8000", "http", 0)]
    assert run_c(EXAMPLE_REQUEST) == (want, b"")
    assert run_ref(EXAMPLE_REQUEST) == (want, b"")
    assert check_all(EXAMPLE_REQUEST) == (want, b"")


def test_protocol_example_response():
    args = (1, 200, [(b"Content-Type", b"text/plain")], b"Hello, world", True)
    assert C.response(*args) == EXAMPLE_RESPONSE
    assert P.response(*args) == EXAMPLE_RESPONSE


def test_decode_every_type():
    frames = [
        frame(HELLO, 0, mp({"version": 1, "slot": 0, "generation": 3, "heartbeat_ms": 0})),
        canon_request(5, 1, method="POST", headers=[(b"A", b"b")], content_length=-1),
        frame(BODY, 5, mp({"data": b"xyz"}), 1),
        frame(BODY, 5, mp({"data": b""})),
        frame(WINDOW, 5, mp({"bytes": 2 ** 32 - 1})),
        frame(CANCEL, 5, mp({"reason": "client-gone"})),
        frame(CANCEL, 6, mp({})),
        frame(QUIT, 0, mp({"graceful": True, "timeout_ms": 3000})),
        frame(QUIT, 0, mp({"graceful": False})),
    ]
    data = b"".join(frames)
    out, rest = check_all(data)
    assert rest == b""
    assert out == [
        (1, 0, 0),
        (3, 1, 5, "POST", b"/", b"/", b"", 1, [(b"A", b"b")], "127.0.0.1:40000",
         "127.0.0.1:8000", "http", -1),
        (4, 1, 5, b"xyz"), (4, 0, 5, b""), (8, 0, 5, 2 ** 32 - 1), (7, 0, 5, "client-gone"),
        (7, 0, 6, ""), (10, 0, 0, True, 3000), (10, 0, 0, False, 0)]
    assert type(out[-1][3]) is bool
    for t in out:
        assert type(t) is tuple


def test_decode_types_of_fields():
    data = frame(REQUEST, 1, mp({"method": Str(b"G\xffT"), "target": "/\u00e9", "path": Str(b"/\xff"),
                                 "http_minor": 0, "headers": [[Str(b"N"), "v\u00e9"]],
                                 "peer": b"\xfe", "scheme": Bin(b"https")}))
    out, rest = check_all(data)
    t = out[0]
    assert t[3] == "G\udcffT" and t[4] == "/\u00e9".encode() and t[5] == b"/\xff"
    assert t[8] == [(b"N", "v\u00e9".encode())]
    assert t[9] == "\udcfe" and t[10] == "" and t[11] == "https" and t[6] == b""
    for v in t[4:7] + t[8][0]:
        assert type(v) is bytes
    for v in (t[3], t[9], t[10], t[11]):
        assert type(v) is str


def test_decode_partial_and_empty():
    f = canon_request(1)
    for k in range(len(f)):
        buf = bytearray(f[:k])
        assert C.decode(buf, Mal) == []
        assert bytes(buf) == f[:k]
    assert C.decode(bytearray(), Mal) == []


@pytest.mark.parametrize("hdr,why", [
    ((2, REQUEST, 0, 1, 10), "version"),
    ((1, 0, 0, 0, 10), "type 0"),
    ((1, 12, 0, 0, 10), "type 12"),
    ((1, 200, 0, 0, 10), "type 200"),
    ((1, REQUEST, 0, 1, 0), "length 0"),
    ((1, REQUEST, 0, 1, CAP + 1), "length over cap"),
    ((1, REQUEST, 0, 1, 0xffffffff), "length huge"),
    ((1, REQUEST, 0, 0, 10), "stream 0 on REQUEST"),
    ((1, WINDOW, 0, 0, 10), "stream 0 on WINDOW"),
    ((1, QUIT, 0, 1, 10), "stream on QUIT"),
    ((1, HELLO, 0, 7, 10), "stream on HELLO"),
    ((1, REQUEST, 2, 1, 10), "flag bit 1"),
    ((1, REQUEST, 0x8000, 1, 10), "flag bit 15"),
    ((1, CANCEL, 1, 1, 10), "END on CANCEL"),
    ((1, WINDOW, 1, 1, 10), "END on WINDOW"),
    ((1, QUIT, 1, 0, 10), "END on QUIT"),
    ((1, READY, 0, 0, 10), "READY from master"),
    ((1, RESPONSE, 1, 1, 10), "RESPONSE from master"),
    ((1, RESP_BODY, 0, 1, 10), "RESP_BODY from master"),
    ((1, HEARTBEAT, 0, 0, 10), "HEARTBEAT from master"),
    ((1, ERROR, 0, 0, 10), "ERROR from master"),
])
def test_decode_bad_header_from_12_bytes(hdr, why):
    # Refused as soon as the 12 header bytes are there, payload or not,
    # and after good frames too (which then are not consumed).
    good = canon_request(1)
    for data in (HDR.pack(*hdr), HDR.pack(*hdr) + b"\x80" * 3, good + HDR.pack(*hdr)):
        c = run_c(data)
        assert c[0] == "ERR", why
        assert run_ref(data)[0] == "ERR", why
        assert run_oracle(data)[0][0] == "ERR", why
    # 11 bytes: nothing to say yet.
    assert run_c(HDR.pack(*hdr)[:11]) == ([], HDR.pack(*hdr)[:11])


def test_decode_max_payload():
    data = b"\xab" * (CAP - 11)
    f = frame(BODY, 3, mp({"data": data}), 1)
    assert len(f) == 12 + CAP
    out, rest = check_all(f)
    assert out == [(4, 1, 3, data)] and rest == b""
    assert run_c(f[:-1]) == ([], f[:-1])


def test_decode_many_frames():
    data = b"".join(frame(WINDOW, i + 1, mp({"bytes": i * 1000})) for i in range(3000))
    out, rest = run_c(data)
    assert rest == b"" and out == [(8, 0, i + 1, i * 1000) for i in range(3000)]
    assert run_ref(data) == (out, rest)


def test_decode_all_or_nothing():
    good = canon_request(1) + frame(BODY, 1, mp({"data": b"x"}))
    bad = frame(WINDOW, 1, mp({"bytes": -1}))
    data = good + bad + canon_request(2)
    buf = bytearray(data)
    with pytest.raises(Mal) as ei:
        C.decode(buf, Mal)
    assert bytes(buf) == data
    assert "WINDOW" in str(ei.value)
    buf = bytearray(data)
    with pytest.raises(Mal):
        P.decode(buf, Mal)
    assert bytes(buf) == data


def test_decode_exception_class():
    data = frame(READY, 0, mp({}))
    with pytest.raises(KeyError):
        C.decode(bytearray(data), KeyError)
    with pytest.raises(ValueError):
        C.decode(bytearray(data))
    with pytest.raises(P.Malformed) as ei:
        C.decode(bytearray(data), P.Malformed)
    assert "READY" in str(ei.value)
    with pytest.raises(TypeError):
        C.decode(bytearray(data), lambda msg: 42)
    with pytest.raises(TypeError):
        C.decode(bytes(data), Mal)
    with pytest.raises(TypeError):
        C.decode()


def test_decode_keeps_the_tail():
    data = canon_request(1) + canon_request(2)[:30]
    buf = bytearray(data)
    out = C.decode(buf, Mal)
    assert len(out) == 1 and bytes(buf) == canon_request(2)[:30]


@pytest.mark.parametrize("payload,ok", [
    (mp({"data": b"a", "x": [[[[[[[1]]]]]]]}), True),       # depth 8 in an unknown key
    (mp({"data": b"a", "x": [[[[[[[[1]]]]]]]]}), False),    # depth 9
    (mp({"data": b"a", "x": Ext(5, b"abc")}), True),
    (mp({"data": b"a", "x": 1.5}), True),
    (mp({"data": b"a", "x": None}), True),
    (mp({"data": None}), False),
    (mp({"data": 5}), False),
    (mp({}), False),
    (mp({"data": b"a"}) + b"\x00", False),                  # trailing byte
    (mp([b"a"]), False),                                    # not a map
    (mp({"data": b"a"})[:-1], False),                       # truncated
    (b"\x81\xa4data\xc1", False),                           # 0xc1
    (b"\x81\xa4data\xc4\x05ab", False),                     # bin8 longer than the payload
    (b"\x82\xa4data\xc4\x00\xa1x\xdd\xff\xff\xff\xff", False),   # array32 count > payload
    (b"\x82\xa4data\xc4\x00\xa1x\xdf\xff\xff\xff\xff", False),   # map32 count > payload
    (b"\xdf\x00\x00\x00\x01\xa4data\xc4\x00", True),        # map32 head for 1 key
    (b"\x81\xdb\x00\x00\x00\x04data\xc6\x00\x00\x00\x01z", True),  # str32 key, bin32 value
    (mp(Map([("data", b"a"), ("data", b"b")])), False),     # duplicate key (ref: last wins)
    (mp(Map([(1, 2), ("data", b"b")])), False),             # int key
])
def test_decode_payload_structure(payload, ok):
    f = frame(BODY, 1, payload)
    c = check_all(f)
    assert (c[0] != "ERR") == ok


@pytest.mark.parametrize("m,ok", [
    ({"http_minor": 2}, False), ({"http_minor": -1}, False), ({"http_minor": True}, False),
    ({"http_minor": Raw(b"\xd3" + b"\x00" * 7 + b"\x01")}, True),
    ({"content_length": -2}, False), ({"content_length": -1}, True),
    ({"content_length": 2 ** 63 - 1}, True), ({"content_length": 2 ** 63}, False),
    ({"content_length": 1.0}, False), ({"keepalive": 1}, False), ({"keepalive": None}, False),
    ({"headers": [[b"a", b"b", b"c"]]}, False), ({"headers": [[b"a"]]}, False),
    ({"headers": [[b"a", 1]]}, False), ({"headers": Map([(b"a", b"b")])}, False),
    ({"headers": [[b"n", b"v"]] * 1024}, True), ({"headers": [[b"n", b"v"]] * 1025}, False),
    ({"method": 1}, False), ({"query": None}, False), ({"scheme": []}, False),
])
def test_decode_request_fields(m, ok):
    base = {"method": "GET", "target": b"/", "path": b"/", "http_minor": 1, "headers": []}
    base.update(m)
    c = check_all(frame(REQUEST, 9, mp(base)))
    assert (c[0] != "ERR") == ok, m


@pytest.mark.parametrize("drop", ["method", "target", "path", "http_minor", "headers"])
def test_decode_request_missing_key(drop):
    m = {"method": "GET", "target": b"/", "path": b"/", "http_minor": 1, "headers": []}
    del m[drop]
    assert check_all(frame(REQUEST, 1, mp(m)))[0] == "ERR"


@pytest.mark.parametrize("m,ok", [
    ({"version": 1, "slot": 0, "generation": 0, "heartbeat_ms": 0}, True),
    ({"version": 1, "slot": 0, "generation": 0}, False),                    # ref: accepted
    ({"version": 1, "slot": 0, "generation": 0, "heartbeat_ms": 0, "window": 0}, False),
    ({"version": -1, "slot": 0, "generation": 0, "heartbeat_ms": 0}, False),
])
def test_decode_second_hello(m, ok):
    c = run_c(frame(HELLO, 0, mp(m)))
    o, _ = run_oracle(frame(HELLO, 0, mp(m)))
    assert (c[0] != "ERR") == ok and (o[0] != "ERR") == ok
    if ok:
        assert c == ([(1, 0, 0)], b"")


def test_decode_bin_keys():
    """PROTOCOL.md §3: keys are str or bin. Both decoders take both."""
    m = Map([(Bin(b"data"), b"x")])
    assert run_c(frame(BODY, 1, mp(m))) == ([(4, 0, 1, b"x")], b"")
    assert run_ref(frame(BODY, 1, mp(m))) == run_c(frame(BODY, 1, mp(m)))
    check_all(frame(BODY, 1, mp(m)))


# ---------------------------------------------------------------------------
# decode: random valid frames with every accepted encoding, and mutations

NAMES = [b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language", b"Connection",
         b"Cookie", b"cookie", b"COOKIE", b"Content-Type", b"content-type", b"Content-Length",
         b"X-Forwarded-For", b"X_Under", b"_", b"-", b"a", b"X-Long-" + b"n" * 70, b"\xdf",
         b"\xff\xb5-x", b"Caf\xe9", b"Cla\xdf", b"CLASS", b"", b"Upgrade-Insecure-Requests",
         b"x" * 64, b"y" * 65, b"Authorization", b"If-None-Match", b"Content_Type", b"HTTP_X"]


def rnd_bytes(rnd, n):
    kind = rnd.random()
    if kind < 0.5:
        return bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789-_/%.?=&;, ") for _ in range(n))
    if kind < 0.8:
        return bytes(rnd.randrange(32, 256) for _ in range(n))
    return bytes(rnd.randrange(256) for _ in range(n))


def rnd_len(rnd):
    r = rnd.random()
    if r < 0.6:
        return rnd.randrange(0, 20)
    if r < 0.9:
        return rnd.randrange(20, 300)
    return rnd.choice([31, 32, 255, 256, 65535, 65536, rnd.randrange(300, 3000)])


def rnd_text(rnd):
    r = rnd.random()
    if r < 0.5:
        return rnd.choice(["GET", "POST", "http", "https", "127.0.0.1:80", "[::1]:8443", "unix", ""])
    if r < 0.8:
        return Str(rnd_bytes(rnd, rnd_len(rnd) % 300))        # maybe invalid UTF-8
    return Bin(rnd_bytes(rnd, rnd.randrange(10)))


def as_bytes_field(rnd, b):
    return Str(b) if rnd.random() < 0.3 else Bin(b)


def _canon_text(v):
    return bytes(v).decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


def rnd_unknown_value(rnd, depth=1):
    r = rnd.random()
    if depth < 7 and r < 0.2:
        return [rnd_unknown_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if depth < 7 and r < 0.35:
        return Map([(rnd_text(rnd), rnd_unknown_value(rnd, depth + 1)) for _ in range(rnd.randrange(3))])
    return rnd.choice([None, True, 1.5, -7, 2 ** 64 - 1, "s", b"b", Ext(3, b"xy"), Ext(-1, b"\0" * 8)])


def rnd_payload(rnd, t, canonical=False):
    """A random valid payload (a Map); canonical: the C encoder's layout,
    minimal heads, keys in table order, bytes as bin, text as str."""
    if canonical:
        rnd_t, as_b = (lambda r: _canon_text(rnd_text(r))), (lambda r, b: Bin(b))
    else:
        rnd_t, as_b = rnd_text, as_bytes_field
    if t == REQUEST:
        hs = []
        for _ in range(rnd.choice([0, 1, 3, 8, 8, 16, 20, rnd.randrange(200)])):
            n = rnd.choice(NAMES) if rnd.random() < 0.8 else rnd_bytes(rnd, rnd.randrange(1, 40))
            hs.append((n, rnd_bytes(rnd, rnd_len(rnd) % 400)))
        target = rnd_bytes(rnd, rnd_len(rnd) % 500)
        path, _, query = target.partition(b"?")
        f = [("method", rnd_t(rnd)), ("target", as_b(rnd, target)),
             ("path", as_b(rnd, path)), ("query", as_b(rnd, query)),
             ("http_minor", rnd.randrange(2)),
             ("headers", [[as_b(rnd, a), as_b(rnd, b)] for a, b in hs]),
             ("peer", rnd_t(rnd)), ("server", rnd_t(rnd)), ("scheme", rnd_t(rnd)),
             ("content_length", rnd.choice([-1, 0, 0, 5, 1 << 40, 2 ** 63 - 1])),
             ("keepalive", rnd.random() < 0.5)]
        if not canonical:
            f = [x for x in f if x[0] in ("method", "target", "path", "http_minor", "headers")
                 or rnd.random() < 0.8]
    elif t == BODY:
        f = [("data", as_b(rnd, rnd_bytes(rnd, rnd_len(rnd))))]
    elif t == WINDOW:
        f = [("bytes", rnd.choice([0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1]))]
    elif t == CANCEL:
        f = [("reason", rnd_t(rnd))] if rnd.random() < 0.8 else []
    elif t == QUIT:
        f = [("graceful", rnd.random() < 0.5)]
        if rnd.random() < 0.5:
            f.append(("timeout_ms", rnd.randrange(2 ** 32)))
    else:
        f = [("version", 1), ("slot", 2), ("generation", 3), ("heartbeat_ms", 1000)]
    if canonical:
        return Map(f)
    if rnd.random() < 0.2:
        rnd.shuffle(f)
    if rnd.random() < 0.15:
        f.insert(rnd.randrange(len(f) + 1), ("zz_" + str(rnd.randrange(9)), rnd_unknown_value(rnd)))
    return Map(f)


def rnd_frame(rnd, sid, canonical):
    t = rnd.choice([REQUEST, REQUEST, REQUEST, BODY, BODY, WINDOW, CANCEL, QUIT, HELLO])
    flags = rnd.randrange(2) if t in (REQUEST, BODY) else 0
    s = 0 if t in (QUIT, HELLO) else sid
    pm = rnd_payload(rnd, t, canonical)
    return frame(t, s, mp(pm, None if canonical else rnd), flags)


def test_decode_random_valid():
    rnd = random.Random(SEED)
    stats = {}
    for i in range(1500):
        data = b"".join(rnd_frame(rnd, i * 3 + j + 1, rnd.random() < 0.4) for j in range(rnd.randrange(1, 4)))
        if rnd.random() < 0.3:
            data += rnd_frame(rnd, 1, True)[:rnd.randrange(1, 40)]
        c = check_all(data, stats)
        assert c[0] != "ERR", run_oracle(data)[0]
    assert stats["accept"] == stats["n"]


def mutate(rnd, data):
    data = bytearray(data)
    if len(data) < 12:
        return bytes(data) + bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 14)))
    how = rnd.randrange(8)
    if how == 0:                                   # flip a bit
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)
    elif how == 1:                                 # set a byte to an interesting value
        i = rnd.randrange(len(data))
        data[i] = rnd.choice([0, 1, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
                              0xc3, 0xc4, 0xcc, 0xd0, 0xd3, 0xdc, 0xdd, 0xde, 0xdf, 0xff])
    elif how in (2, 3, 4):                         # edit the payload, keep the length right
        if len(data) <= 13:
            return bytes(data)
        i = rnd.randrange(12, len(data))
        if how == 2:
            del data[i:i + rnd.randrange(1, 4)]
        elif how == 3:
            data[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 4)))
        else:
            data[i] = rnd.randrange(256)
        struct.pack_into(">I", data, 8, len(data) - 12)
    elif how == 5:                                 # change a header field
        f = rnd.randrange(5)
        if f == 0:
            data[0] = rnd.choice([0, 2, 255])
        elif f == 1:
            data[1] = rnd.randrange(0, 14)
        elif f == 2:
            struct.pack_into(">H", data, 2, rnd.choice([0, 1, 2, 3, 0x8000]))
        elif f == 3:
            struct.pack_into(">I", data, 4, rnd.choice([0, 1, 2 ** 32 - 1]))
        else:
            struct.pack_into(">I", data, 8, rnd.choice([0, 1, max(0, len(data) - 13), len(data) - 11, CAP,
                                                        CAP + 1]))
    elif how == 6:                                 # truncate
        del data[rnd.randrange(len(data)):]
    else:                                          # replace a known value with another type
        for k in (b"\xaahttp_minor", b"\xa9keepalive", b"\xaecontent_length", b"\xa5bytes",
                  b"\xa8graceful", b"\xaatimeout_ms", b"\xa7headers", b"\xa6method"):
            i = data.find(k)
            if i >= 0:
                i += len(k)
                data[i:i + 1] = rnd.choice([b"\xc0", b"\xc3", b"\x02", b"\xff", b"\xcb" + b"\0" * 8,
                                            b"\xa1x", b"\x90", b"\x80", b"\xcf" + b"\xff" * 8])
                struct.pack_into(">I", data, 8, len(data) - 12)
                break
    return bytes(data)


def test_decode_mutations():
    rnd = random.Random(SEED + 1)
    stats = {}
    seeds = [rnd_frame(rnd, i + 1, rnd.random() < 0.5) for i in range(300)]
    seeds += [EXAMPLE_REQUEST, canon_request(3, 1, headers=[(b"Host", b"h"), (b"A", b"b")])]
    for i in range(12000):
        data = rnd.choice(seeds)
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            data = mutate(rnd, data)
        if rnd.random() < 0.2:
            data = rnd.choice(seeds) + data
        check_all(data, stats)
    # The mutations must reach both verdicts in quantity.
    assert stats["reject"] > 3000 and stats["accept"] > 1000, stats


def test_decode_random_bytes():
    rnd = random.Random(SEED + 2)
    for i in range(3000):
        hdr = HDR.pack(1, rnd.choice([3, 4, 7, 8, 10, 1]), rnd.randrange(2), rnd.randrange(3),
                       rnd.randrange(1, 40))
        data = hdr + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 45)))
        check_all(data)


# ---------------------------------------------------------------------------
# decode: every split of a buffer of frames

def _feed(fn, data, cuts):
    buf = bytearray()
    out = []
    prev = 0
    for k in list(cuts) + [len(data)]:
        buf += data[prev:k]
        prev = k
        out += fn(buf, Mal)
    return out, bytes(buf)


def split_buffer():
    rnd = random.Random(SEED + 3)
    frames = [
        canon_request(1, 0, headers=[(b"Host", b"example.org"), (b"Content-Length", b"5")],
                      method="POST", content_length=5),
        frame(BODY, 1, mp({"data": b"hello"}), 1),
        frame(WINDOW, 1, mp({"bytes": 65536})),
        EXAMPLE_REQUEST[:4] + struct.pack(">I", 2) + EXAMPLE_REQUEST[8:],
        frame(CANCEL, 2, mp({"reason": "timeout"})),
        rnd_frame(rnd, 3, False), rnd_frame(rnd, 4, False),
        frame(BODY, 9, mp({"data": b"\x00" * 300})),
        frame(QUIT, 0, mp({"graceful": True, "timeout_ms": 1000})),
    ]
    return b"".join(frames)


def test_decode_every_split():
    data = split_buffer()
    whole = run_c(data)
    assert whole[1] == b"" and len(whole[0]) == 9
    assert run_ref(data) == whole
    for k in range(len(data) + 1):
        assert _feed(C.decode, data, [k]) == whole, k
    for k in range(0, len(data) + 1, 7):
        assert _feed(P.decode, data, [k]) == whole, k


def test_decode_every_pair_of_splits_sampled():
    data = split_buffer()
    whole = run_c(data)
    rnd = random.Random(SEED + 4)
    for _ in range(2000):
        cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(2, 6)))
        assert _feed(C.decode, data, cuts) == whole


def test_decode_byte_at_a_time():
    data = split_buffer()
    whole = run_c(data)
    assert _feed(C.decode, data, range(1, len(data))) == whole
    assert _feed(P.decode, data, range(1, len(data))) == whole


def test_decode_split_before_bad_frame():
    # A good frame arriving in pieces and then a bad header: the good frame
    # is returned when complete, the bad one raises when its header is in.
    good = canon_request(1)
    bad = HDR.pack(1, READY, 0, 0, 5)
    buf = bytearray(good[:20])
    assert C.decode(buf, Mal) == []
    buf += good[20:] + bad[:11]
    assert len(C.decode(buf, Mal)) == 1 and bytes(buf) == bad[:11]
    buf += bad[11:]
    with pytest.raises(Mal):
        C.decode(buf, Mal)
    assert bytes(buf) == bad


# ---------------------------------------------------------------------------
# environ

BASE = {"SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "gateway.slot": 3}


def req_tuple(method="GET", target=b"/", path=None, query=b"", minor=1, headers=(), peer="", server="",
              scheme="http", cl=0, sid=1):
    if path is None:
        path = target.partition(b"?")[0]
    return (3, 0, sid, method, target, path, query, minor, list(headers), peer, server, scheme, cl)


def both_environ(req, base=BASE):
    a = C.environ(req, base)
    b = P.environ(req, base)
    assert a == b
    assert list(a) == list(b), "key order"
    for k in a:
        assert type(a[k]) is type(b[k]), k
    return a


def test_environ_basic():
    e = both_environ(req_tuple("POST", b"/a%20b/%7e?x=1&y=%20", query=b"x=1&y=%20", minor=0,
                               headers=[(b"Host", b"h:1"), (b"Content-Type", b"text/x"),
                                        (b"Content-Length", b"9"), (b"X_Y", b"dropped"),
                                        (b"Cookie", b"a=1"), (b"cookie", b"b=2"), (b"Accept", b"x"),
                                        (b"accept", b"y")],
                               peer="[::1]:5555", server="127.0.0.1:8000", cl=9))
    assert e["PATH_INFO"] == "/a b/~" and e["RAW_URI"] == "/a%20b/%7e?x=1&y=%20"
    assert e["QUERY_STRING"] == "x=1&y=%20" and e["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert e["SERVER_NAME"] == "127.0.0.1" and e["SERVER_PORT"] == "8000"
    assert e["REMOTE_ADDR"] == "::1" and e["REMOTE_PORT"] == "5555"
    assert e["CONTENT_TYPE"] == "text/x" and e["CONTENT_LENGTH"] == "9"
    assert e["HTTP_COOKIE"] == "a=1; b=2" and e["HTTP_ACCEPT"] == "x,y"
    assert "HTTP_X_Y" not in e and "HTTP_CONTENT_LENGTH" not in e and "HTTP_CONTENT_TYPE" not in e
    assert e["gateway.slot"] == 3 and e["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("server,scheme", [
    ("", "http"), ("", "https"), ("unix", "http"), ("unix", "https"), ("h:", "https"), (":", "http"),
    ("[::1]:443", "https"), ("[::1]", "http"), ("a:b:c", "http"), ("::", "http"), ("[]:1", "http"),
    ("[[x]]:9", "http"), ("h\u00e9:1", "http"), ("\udcff:\udcfe", "http"), ("x:80", "ftp"),
])
def test_environ_addresses(server, scheme):
    both_environ(req_tuple(server=server, peer=server, scheme=scheme))


@pytest.mark.parametrize("path", [
    b"/", b"", b"%", b"%%", b"%2", b"/%2", b"%2f", b"%2F%2f", b"%zz", b"%%41", b"%4", b"%41%",
    b"/a%C3%A9", b"%ff%FE", b"/\xe9", b"%00", b"%%%", b"a%4g", b"%G1", b"/x%41%42%43y",
])
def test_environ_path_info(path):
    both_environ(req_tuple(target=path + b"?q", path=path, query=b"q"))
    both_environ(req_tuple(target=path, path=path))


@pytest.mark.parametrize("cl", [-1, 0, 1, 10 ** 6, 2 ** 63 - 1, 2 ** 70])
def test_environ_content_length(cl):
    both_environ(req_tuple(cl=cl))


def test_environ_base_interaction():
    base = dict(BASE, HTTP_HOST="pre", HTTP_COOKIE="c=0", CONTENT_TYPE="old", REQUEST_METHOD="X")
    e = both_environ(req_tuple(headers=[(b"Host", b"h"), (b"Cookie", b"a=1"), (b"Content-type", b"t")]),
                     base)
    assert e["HTTP_HOST"] == "pre,h" and e["HTTP_COOKIE"] == "c=0; a=1" and e["CONTENT_TYPE"] == "t"
    assert base["HTTP_HOST"] == "pre"                 # base itself untouched
    assert both_environ(req_tuple(), {}) is not None


def test_environ_non_ascii_names():
    # str.upper() on latin-1: "\xdf" -> "SS", "\xff" -> "\u0178", "\xb5" -> "\u039c".
    hs = [(b"Cla\xdf", b"1"), (b"CLASS", b"2"), (b"\xff", b"3"), (b"\xb5-a", b"4"),
          (b"caf\xe9", b"\xe9"), (b"Content-Typ\xe9", b"5")]
    e = both_environ(req_tuple(headers=hs))
    assert e["HTTP_CLASS"] == "1,2" and e["HTTP_\u0178"] == "3"


def test_environ_random():
    rnd = random.Random(SEED + 5)
    for i in range(3000):
        hs = []
        for _ in range(rnd.choice([0, 1, 5, 8, 20])):
            n = rnd.choice(NAMES) if rnd.random() < 0.85 else rnd_bytes(rnd, rnd.randrange(1, 80))
            hs.append((n, rnd_bytes(rnd, rnd.randrange(0, 200))))
        target = rnd_bytes(rnd, rnd.randrange(0, 80))
        if rnd.random() < 0.5:
            target = target.replace(b"_", b"%41").replace(b"z", b"%")
        path, _, query = target.partition(b"?")
        req = req_tuple(rnd.choice(["GET", "POST", "M\u00e9"]), target, path, query, rnd.randrange(2), hs,
                        rnd.choice(["", "unix", "1.2.3.4:5", "[::1]:80", "[fe80::1%eth0]:9", "x"]),
                        rnd.choice(["", "unix", "0.0.0.0:8000", "[::]:443", "h:"]),
                        rnd.choice(["http", "https"]), rnd.choice([-1, 0, 0, 17]))
        base = BASE if rnd.random() < 0.8 else dict(BASE, HTTP_HOST="x", HTTP_ACCEPT=b"not-a-str"
                                                    if False else "y")
        both_environ(req, base)


def test_environ_name_cache_churn():
    # Far more distinct names than the caches hold, then the common ones
    # again: every answer still exact.
    rnd = random.Random(SEED + 6)
    for i in range(300):
        hs = [(b"X-%d-%d" % (i, j), b"v%d" % j) for j in range(20)]
        hs += [(b"Host", b"h%d" % (i % 7)), (b"Cookie", b"c"), (b"Cookie", b"d")]
        rnd.shuffle(hs)
        both_environ(req_tuple(headers=hs))


def test_environ_types():
    with pytest.raises(TypeError):
        C.environ((1, 2, 3), {})
    with pytest.raises(TypeError):
        C.environ(req_tuple(), [])
    with pytest.raises(TypeError):
        C.environ(req_tuple(headers=[("Host", "x")]), {})
    with pytest.raises(TypeError):
        C.environ(req_tuple(headers=[(b"Host",)]), {})


def test_environ_on_decoded():
    data = split_buffer()
    for t in C.decode(bytearray(data), Mal):
        if t[0] == REQUEST:
            both_environ(t)


def test_asgi_headers():
    rnd = random.Random(SEED + 7)
    for i in range(500):
        hs = [(rnd.choice(NAMES) if rnd.random() < 0.7 else rnd_bytes(rnd, rnd.randrange(70)),
               rnd_bytes(rnd, rnd.randrange(20))) for _ in range(rnd.randrange(12))]
        a = C.asgi_headers(hs)
        assert a == P.asgi_headers(hs)
        assert all(type(p) is tuple and type(p[0]) is bytes for p in a)
    assert C.asgi_headers([]) == []
    assert C.asgi_headers([[b"A", b"b"]]) == [(b"a", b"b")]
    assert C.asgi_headers([("Ab", "c")]) == P.asgi_headers([("Ab", "c")])
    with pytest.raises(ValueError):
        C.asgi_headers([(b"a", b"b", b"c")])

    # An item whose iteration empties the list it came from.
    hs = []

    class Pair(object):
        def __iter__(self):
            del hs[:]
            return iter((b"X", b"y"))
    hs.extend([Pair(), (b"A", b"b")])
    with pytest.raises(RuntimeError):
        C.asgi_headers(hs)
    hs.extend([(b"A", b"b"), Pair()])
    assert C.asgi_headers(hs) == [(b"a", b"b"), (b"x", b"y")]


# ---------------------------------------------------------------------------
# asgi_scope

SCOPE_BASE = {"type": "http", "asgi": {"version": "3.0"}, "root_path": ""}


def both_scope(req, base=SCOPE_BASE, state=None):
    state = {} if state is None else state
    a = C.asgi_scope(req, base, state)
    b = P.asgi_scope(req, base, state)
    assert a == b
    assert list(a) == list(b), "key order"
    for k in a:
        assert type(a[k]) is type(b[k]), k
    assert a["state"] is not state and a["extensions"] is not b["extensions"]
    return a


def test_asgi_scope_basic():
    s = both_scope(req_tuple("POST", b"/a%20b/%7e?x=1", query=b"x=1", minor=0,
                             headers=[(b"Host", b"h:1"), (b"X-A", b"b")],
                             peer="[::1]:5555", server="127.0.0.1:8000", scheme="https"),
                   state={"k": 1})
    assert s["path"] == "/a b/~" and s["raw_path"] == b"/a%20b/%7e"
    assert s["query_string"] == b"x=1" and s["http_version"] == "1.0"
    assert s["client"] == ("::1", 5555) and s["server"] == ("127.0.0.1", 8000)
    assert s["headers"] == [(b"host", b"h:1"), (b"x-a", b"b")]
    assert s["state"] == {"k": 1} and s["extensions"] == {} and s["scheme"] == "https"
    assert s["type"] == "http" and s["root_path"] == ""


@pytest.mark.parametrize("addr", [
    "", "unix", "h:", ":", "[::1]:443", "[::1]", "a:b:c", "::", "[]:1", "[[x]]:9", "h\u00e9:1",
    "\udcff:\udcfe", "x:80", "h:\u0662", "h:+1", "h: 1", "h:99999999999999999999",
])
def test_asgi_scope_addresses(addr):
    both_scope(req_tuple(server=addr, peer=addr))


def test_addresses_interleaved_through_the_cache():
    """Many client addresses interleaved (a worker serving many keep-alive
    connections), more than the address cache holds, each seen by environ and
    by asgi_scope in turn: every answer is the reference's, whatever was cached
    before (collisions, an entry first filled for environ, str subclasses)."""
    class S(str):
        pass
    rnd = random.Random(SEED + 11)
    fixed = ["", "unix", "h:", ":", "[::1]:443", "[::1]", "a:b:c", "[[x]]:9", "h\u00e9:1",
             "\udcff:\udcfe", "h:+1", "h:99999999999999999999"]
    addrs = fixed + ["10.0.%d.%d:%d" % (i % 7, i, 30000 + i) for i in range(300)] \
        + ["[fe80::%x]:%d" % (i, i) for i in range(1, 60)]
    for i in range(4000):
        peer = rnd.choice(addrs)
        if rnd.random() < 0.05:
            peer = S(peer)
        req = req_tuple(peer=peer, server=rnd.choice(("127.0.0.1:8000", "[::1]:8000", "unix")))
        if rnd.random() < 0.5:
            both_environ(req)
        else:
            both_scope(req)


@pytest.mark.parametrize("path", [
    b"/", b"", b"%", b"%%", b"%2", b"/%2", b"%2f", b"%2F%2f", b"%zz", b"%%41", b"%4", b"%41%",
    b"/a%C3%A9", b"%ff%FE", b"/\xe9", b"/\xc3\xa9", b"%00", b"%%%", b"a%4g", b"%G1",
    b"/x%41%42%43y", b"/" + b"%41" * 400, b"/" + b"a" * 600,
])
def test_asgi_scope_path(path):
    both_scope(req_tuple(target=path, path=path))


def test_asgi_scope_random():
    rnd = random.Random(SEED + 8)
    for i in range(2000):
        hs = [(rnd.choice(NAMES) if rnd.random() < 0.8 else rnd_bytes(rnd, rnd.randrange(1, 60)),
               rnd_bytes(rnd, rnd.randrange(0, 100))) for _ in range(rnd.choice([0, 1, 5, 12]))]
        target = rnd_bytes(rnd, rnd.randrange(0, 80))
        if rnd.random() < 0.5:
            target = target.replace(b"_", b"%41").replace(b"z", b"%")
        path, _, query = target.partition(b"?")
        req = req_tuple(rnd.choice(["GET", "POST"]), target, path, query, rnd.randrange(2), hs,
                        rnd.choice(["", "unix", "1.2.3.4:5", "[::1]:80", "[fe80::1%eth0]:9", "x"]),
                        rnd.choice(["", "unix", "0.0.0.0:8000", "[::]:443", "h:"]),
                        rnd.choice(["http", "https"]))
        both_scope(req, state=rnd.choice([{}, {"a": [1]}]))


def test_asgi_scope_base_and_types():
    base = dict(SCOPE_BASE, extra=1, path="overwritten")
    s = both_scope(req_tuple(), base)
    assert s["extra"] == 1 and s["path"] == "/" and base["path"] == "overwritten"
    both_scope(req_tuple(), {})
    with pytest.raises(TypeError):
        C.asgi_scope((1, 2, 3), {}, {})
    with pytest.raises(TypeError):
        C.asgi_scope(req_tuple(), [], {})
    with pytest.raises(TypeError):
        C.asgi_scope(req_tuple(), {}, None)
    with pytest.raises(ValueError):
        C.asgi_scope(req_tuple(headers=[(b"Host",)]), {}, {})


def test_asgi_scope_on_decoded():
    data = split_buffer()
    for t in C.decode(bytearray(data), Mal):
        if t[0] == REQUEST:
            both_scope(t)


# ---------------------------------------------------------------------------
# encoders

TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHARS = bytes(c for c in range(256) if c == 9 or 32 <= c < 127 or c >= 128)


def outcome(f, *a):
    try:
        return ("ok", f(*a))
    except Exception as e:      # noqa: BLE001 - compared between the codecs
        return (type(e), str(e))


def test_response_random():
    """Random heads through both encoders: the same frame, or the same error.
    Mostly fields the master accepts; some with any byte (refused alike)."""
    rnd = random.Random(SEED + 8)
    refused = 0
    for i in range(3000):
        hs = []
        for _ in range(rnd.choice([0, 1, 2, 5, 15, 16, 17, 40])):
            if rnd.random() < 0.98:
                n = bytes(rnd.choice(TCHARS) for _ in range(1 + rnd_len(rnd) % 60))
                v = bytes(rnd.choice(VCHARS) for _ in range(rnd_len(rnd) % 300))
            else:
                n = rnd_bytes(rnd, rnd_len(rnd) % 300)
                v = rnd_bytes(rnd, rnd_len(rnd) % 300)
            form = rnd.randrange(4)
            if form == 1:
                n, v = n.decode("latin-1"), v.decode("latin-1")
            elif form == 2:
                v = bytearray(v)
            elif form == 3:
                n = [n.decode("latin-1"), v]
                hs.append(n)
                continue
            hs.append((n, v))
        body = rnd.choice([None, b"", b"x", rnd_bytes(rnd, rnd_len(rnd)), bytearray(b"ba"),
                           memoryview(b"mv")])
        status = rnd.choice([100, 200, 204, 404, 500, 999])
        sid = rnd.choice([1, 2 ** 32 - 1, rnd.randrange(1, 2 ** 32)])
        end = rnd.random() < 0.5
        c = outcome(C.response, sid, status, hs, body, end)
        assert c == outcome(P.response, sid, status, hs, body, end)
        if c[0] == "ok":
            assert type(c[1]) is bytes
        else:
            refused += 1
    assert 100 < refused < 2000, refused


@pytest.mark.parametrize("name,value,why", [
    (b"X-Bad", b"a\x01b", "control byte"), (b"X-Bad", b"a\r\nSet-Cookie: x", "control byte"),
    (b"X-Bad", b"nul\x00", "control byte"), (b"X-Bad", b"del\x7f", "control byte"),
    (b"X Bad", b"v", "not an RFC 9110 token"), (b"", b"v", "not an RFC 9110 token"),
    (b"X-Bad:", b"v", "not an RFC 9110 token"), (b"caf\xe9", b"v", "not an RFC 9110 token"),
    ("X\nY", "v", "not an RFC 9110 token"),
])
def test_response_refuses_fields_the_master_would(name, value, why):
    """A field the master would refuse (502) raises in the encoder instead,
    in both codecs, with the same message naming the header."""
    for m in (C, P):
        with pytest.raises(ValueError, match=why) as e:
            m.response(1, 200, [(b"ok", b"fine\tvalue \xe9"), (name, value)], b"", True)
        assert repr(name if isinstance(name, bytes) else name.encode("latin-1")) in str(e.value)
    assert C.response(1, 200, [(b"ok", b"fine\tvalue \xe9")], b"", True) == \
        P.response(1, 200, [(b"ok", b"fine\tvalue \xe9")], b"", True)


@pytest.mark.parametrize("blen", [0, 1, 255, 256, 65535, 65536, CAP - 40])
def test_response_sizes(blen):
    body = b"b" * blen
    hs = [(b"a" * 300, b"v" * 70000)] if blen < 65536 else [(b"n", b"v")]
    for h in ([], hs, [(b"n", b"v")] * 16, [(b"n", b"v")] * 1024):
        try:
            want = P.response(7, 200, h, body, True)
        except ValueError:
            with pytest.raises(ValueError):
                C.response(7, 200, h, body, True)
            continue
        assert C.response(7, 200, h, body, True) == want


def test_response_cap():
    # The largest body that fits, and one byte more.
    fixed = len(P.response(1, 200, [], b"x" * 70000, True)) - 70000 - 12
    n = CAP - fixed
    assert C.response(1, 200, [], b"x" * n, True) == P.response(1, 200, [], b"x" * n, True)
    for f in (C.response, P.response):
        with pytest.raises(ValueError):
            f(1, 200, [], b"x" * (n + 1), True)


def test_response_errors():
    for f in (C.response, P.response):
        with pytest.raises(UnicodeEncodeError):
            f(1, 200, [("X", "\u20ac")], None, True)
        with pytest.raises(UnicodeEncodeError):
            f(1, 200, [("\u0100", b"x")], None, True)
        with pytest.raises((ValueError, TypeError)):
            f(1, 200, [(b"a", b"b", b"c")], None, True)
        for n, v in [(b"a", 5), (7, b"b"), (b"a", True)]:     # not bytes(5), five NULs
            with pytest.raises(TypeError, match="bytes or str"):
                f(1, 200, [(n, v)], None, True)
        with pytest.raises(Exception):
            f(2 ** 32, 200, [], None, True)
        with pytest.raises(Exception):
            f(-1, 200, [], None, True)
    # C only: what the master's decoder would refuse is refused here.
    for bad in [(0, 200), (1, 99), (1, 1000), (1, -5)]:
        with pytest.raises((ValueError, OverflowError)):
            C.response(bad[0], bad[1], [], None, True)
    with pytest.raises(ValueError):
        C.response(1, 200, [(b"n", b"v")] * 1025, None, True)
    with pytest.raises(TypeError):
        C.response(1, 200, None, None, True)
    # any iterable of pairs, as the reference takes
    gen = ((n, v) for n, v in [("A", "b"), (b"C", b"d")])
    assert C.response(1, 200, gen, None, True) == P.response(1, 200, [("A", "b"), (b"C", b"d")], None, True)
    assert C.response(1, 200, {"K": "v"}.items(), b"x", True) == P.response(1, 200, [("K", "v")], b"x", True)
    with pytest.raises(TypeError):
        C.response(1, 200, [], "str body", True)


def test_response_headers_mutated_by_bytes_conversion():
    # An item whose conversion runs Python code that empties the list.
    hs = []

    class Evil(object):
        def __bytes__(self):
            del hs[:]
            return b"evil"
    hs.extend([(b"a", Evil()), (b"b", b"c"), (b"d", b"e")])
    out = C.response(1, 200, hs, None, True)
    assert out == P.response(1, 200, [(b"a", b"evil")], None, True)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65535, 65536, 300000, CAP - 11])
def test_data_frame(n):
    data = bytes(range(256)) * (n // 256) + b"z" * (n % 256)
    for t in (BODY, RESP_BODY):
        for end in (False, True):
            assert C.data_frame(t, 5, data, end) == P.data_frame(t, 5, data, end)
    assert C.data_frame(6, 5, memoryview(data)[1:], True) == P.data_frame(6, 5, data[1:], True)
    assert C.data_frame(6, 5, bytearray(data), 0) == P.data_frame(6, 5, data, 0)


def test_data_frame_errors():
    for f in (C.data_frame, P.data_frame):
        with pytest.raises(ValueError):
            f(6, 1, b"x" * (CAP - 10), True)
    with pytest.raises(ValueError):
        C.data_frame(5, 1, b"x", True)
    with pytest.raises(ValueError):
        C.data_frame(6, 0, b"x", True)
    with pytest.raises(TypeError):
        C.data_frame(6, 1, "str", True)


def test_window_cancel_heartbeat():
    for n in (0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1):
        assert C.window(3, n) == P.window(3, n)
    for r in ("", "client-gone", "app-error", "x" * 31, "x" * 32, "x" * 300, "\u00e9\u20ac"):
        assert C.cancel(2 ** 32 - 1, r) == P.cancel(2 ** 32 - 1, r)
    for args in [(0, 0, 0, 0, ""), (2 ** 64 - 1, 2 ** 32 - 1, 2 ** 32 - 1, 2 ** 64 - 1, "loop" * 100),
                 (12345, 3, 1, 1 << 33, "python-wsgi:123"), (1, 2, 3, 4, "\u00e9")]:
        assert C.heartbeat(*args) == P.heartbeat(*args)
    for bad in [(1, -1), (1, 2 ** 32), (0, 5)]:
        with pytest.raises((ValueError, OverflowError)):
            C.window(*bad)
    with pytest.raises(ValueError):
        C.cancel(1, "a\0b")
    with pytest.raises(UnicodeEncodeError):
        C.cancel(1, "\udcff")
    with pytest.raises(TypeError):
        C.cancel(1, b"x")
    with pytest.raises(OverflowError):
        C.heartbeat(2 ** 64, 0, 0, 0, "")
    with pytest.raises(OverflowError):
        C.heartbeat(0, 2 ** 32, 0, 0, "")
    with pytest.raises(TypeError):
        C.heartbeat(0, 0, 0, 0, None)


def test_encoded_frames_decode():
    # What the encoders write for the master -> worker direction decodes.
    data = C.data_frame(4, 1, b"abc", True) + C.window(1, 9) + C.cancel(1, "x")
    assert C.decode(bytearray(data), Mal) == [(4, 1, 1, b"abc"), (8, 0, 1, 9), (7, 0, 1, "x")]


# ---------------------------------------------------------------------------
# reference counts and leaks

def _traced(fn, n):
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(n // 10):
            fn()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_no_leaks_success_paths():
    data = split_buffer()
    hs = [(b"Content-Type", "text/plain"), ("X-A", bytearray(b"b"))]

    def work():
        out = C.decode(bytearray(data), Mal)
        for t in out:
            if t[0] == REQUEST:
                C.environ(t, BASE)
                C.asgi_headers(t[8])
                C.asgi_scope(t, SCOPE_BASE, {"a": 1})
        C.response(1, 200, hs, b"body", True)
        C.response(1, 200, [], None, False)
        C.data_frame(6, 1, memoryview(b"xyz"), False)
        C.window(1, 5)
        C.cancel(1, "timeout")
        C.heartbeat(1, 2, 3, 4, "loop")
    assert _traced(work, 3000) < 8192


def test_no_leaks_error_paths():
    bad = [canon_request(1) + frame(WINDOW, 1, mp({"bytes": -1})), HDR.pack(1, READY, 0, 0, 5),
           frame(REQUEST, 1, mp({"method": "GET"}))]

    def work():
        for d in bad:
            try:
                C.decode(bytearray(d), Mal)
            except Mal:
                pass
        for args in [(1, 200, [("X", "\u20ac")], None, True), (1, 200, [(b"n", b"v")] * 1025, None, True),
                     (1, 200, [(b"a", b"b")], "s", True), (0, 200, [], None, True),
                     (1, 200, [(b"a", b"b"), (b"c",)], b"x", True)]:
            try:
                C.response(*args)
            except (ValueError, TypeError):
                pass
        for f, a in [(C.environ, (req_tuple(headers=[(b"A", b"b"), ("x", "y")]), BASE)),
                     (C.data_frame, (6, 1, b"x" * CAP, True)), (C.cancel, (1, "a\0")),
                     (C.asgi_headers, ([(b"a", b"b"), (b"c",)],)),
                     (C.asgi_scope, (req_tuple(headers=[(b"a", b"b"), (b"c",)]), SCOPE_BASE, {})),
                     (C.asgi_scope, (req_tuple(path=b"/%41" + b"\xff" * 900), SCOPE_BASE, {}))]:
            try:
                f(*a)
            except (ValueError, TypeError):
                pass
    assert _traced(work, 3000) < 8192


def test_refcounts_of_inputs_and_constants():
    base = dict(BASE)
    req = C.decode(bytearray(canon_request(1, headers=[(b"Host", b"h"), (b"Accept", b"*/*")])), Mal)[0]
    env = C.environ(req, base)
    watched = list(base.values()) + list(base) + list(env) + list(env.values()) + list(req) + \
        [x for p in req[8] for x in p]
    # Not the statically allocated objects (small ints, "", ...): they start
    # at 10**9 and anything in the process may take a reference.
    watched = [o for o in watched if sys.getrefcount(o) < 10 ** 8]
    del env

    def body():
        C.environ(req, base)
        C.asgi_headers(req[8])
        C.asgi_scope(req, SCOPE_BASE, {})
        C.response(1, 200, req[8], b"x", True)
    body()
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(2000):
        body()
    after = [sys.getrefcount(o) for o in watched]
    assert len(watched) > 20 and before == after


def test_soak_rss():
    """decode + environ + response in a loop: RSS must not grow
    (GWFAST_SOAK=1000000 for the long run)."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("RSS grows by design under ASan (quarantine)")
    n = int(os.environ.get("GWFAST_SOAK", "100000"))
    data = canon_request(1, headers=[(b"Host", b"example.org"), (b"User-Agent", b"curl/8.0"),
                                     (b"Accept", b"*/*"), (b"Cookie", b"a=b")])

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    dec, env, resp = C.decode, C.environ, C.response
    hs = [(b"Content-Type", b"text/plain")]
    for _ in range(20000):
        env(dec(bytearray(data), Mal)[0], BASE)
    gc.collect()
    r0 = rss()
    for _ in range(n):
        env(dec(bytearray(data), Mal)[0], BASE)
        resp(1, 200, hs, b"ok", True)
    gc.collect()
    assert rss() - r0 < 1 << 20


# ---------------------------------------------------------------------------
# StreamBase: the ASGI stream's state and send()'s common case in C, against
# the pure twin whose send() always takes the runtime's full send_slow()

from gateway_runtime import _asgi  # noqa: E402


class FakeWorker(object):
    """What a stream touches in AsgiWorker: the table, the count, the queue."""
    window = 65536
    max_payload = CAP

    def __init__(self):
        self.streams = {}
        self.served = 0
        self.frames = []
        self.pending = 0

    def put(self, frame):
        self.frames.append(frame)


class CStream(C.StreamBase):
    __slots__ = ()


class PStream(P.StreamBase):
    __slots__ = ()


for _name in ("receive", "consumed", "send_slow", "send_data", "_wait"):
    setattr(CStream, _name, getattr(_asgi.AStream, _name))
    setattr(PStream, _name, getattr(_asgi.AStream, _name))


def drive(aw):
    """Run an awaitable that must not suspend; its result or its exception."""
    it = aw.__await__()
    try:
        it.send(None)
    except StopIteration as e:
        return ("ok", e.value)
    except Exception as e:
        return ("raise", type(e), str(e))
    raise AssertionError("send() suspended")


STATE = ("sid", "credit", "sent_bytes", "status", "headers", "req_ended", "body_done", "cancelled",
         "started", "head_sent", "done", "limit", "buffered", "unreturned")


def run_stream(cls, msgs, credit=65536, limit=CAP - 4096, in_table=True, cancelled=False):
    w = FakeWorker()
    st = cls(w, 7, ("req",), True, credit, limit)
    if in_table:
        w.streams[7] = st
    if cancelled:
        st.cancelled = True
    results = []
    for m in msgs:
        try:
            aw = st.send(m)
        except Exception as e:              # raised by the call itself (C fast path)
            results.append(("raise", type(e), str(e)))
            continue
        results.append(drive(aw))
    state = {k: getattr(st, k) for k in STATE}
    return results, w.frames, w.served, sorted(w.streams), state


def start(status=200, headers=((b"content-type", b"text/plain"),), **kw):
    m = {"type": "http.response.start", "status": status}
    if headers is not None:
        m["headers"] = list(headers)
    m.update(kw)
    return m


def body(data=b"Hello", **kw):
    m = {"type": "http.response.body", "body": data}
    m.update(kw)
    return m


class Mapping(dict):
    pass


STREAM_CASES = [
    ("one frame", [start(), body()], {}),
    ("empty body", [start(), body(b"")], {}),
    ("no body key", [start(), {"type": "http.response.body"}], {}),
    ("more_body False", [start(), body(b"x", more_body=False)], {}),
    ("no headers key", [start(headers=None), body()], {}),
    ("headers None", [start(headers=None, headers_=1), dict(body(), more_body=0)], {}),
    ("HTTPStatus", [start(status=__import__("http").HTTPStatus.NOT_FOUND), body()], {}),
    ("status as str", [start(status="201"), body()], {}),
    ("bool status", [start(status=True), body()], {}),
    ("status out of range", [start(status=1000), body()], {}),
    ("huge status", [start(status=1 << 70), body()], {}),
    ("streamed", [start(), body(b"a", more_body=True), body(b"b", more_body=True), body(b"")], {}),
    ("bytearray body", [start(), body(bytearray(b"abc"))], {}),
    ("memoryview body", [start(), body(memoryview(b"abc"))], {}),
    ("str body", [start(), body("abc")], {}),
    ("body over limit", [start(), body(b"x" * 5000)], {"limit": 4096}),
    ("body at limit", [start(), body(b"x" * 4096)], {"limit": 4096}),
    ("body at credit", [start(), body(b"x" * 100)], {"credit": 100}),
    ("start twice", [start(), start(), body()], {}),
    ("body before start", [body()], {}),
    ("body after end", [start(), body(), body(b"more")], {}),
    ("body after end, cancelled", [start(), body(), body(b"more")], {"cancelled": True}),
    ("unknown type", [start(), {"type": "http.response.nope"}], {}),
    ("trailers", [start(), {"type": "http.response.trailers"}, body()], {}),
    ("no type", [{"status": 200}], {}),
    ("type not str", [{"type": b"http.response.start", "status": 200}], {}),
    ("mapping subclass", [Mapping(start()), Mapping(body())], {}),
    ("int header value", [start(headers=[(b"a", 5)]), body(), body()], {}),
    ("bad header value", [start(headers=[(b"a", object())]), body(), body()], {}),
    ("bad header pair", [start(headers=[(b"a",)]), body()], {}),
    ("header not latin-1", [start(headers=[(b"a", "\u20ac")]), body()], {}),
    ("str headers", [start(headers=[("X-A", "b")]), body()], {}),
    ("tuple headers", [start(headers=((b"a", b"b"),)), body()], {}),
    ("not in table", [start(), body()], {"in_table": False}),
    ("cancelled before", [start(), body()], {"cancelled": True}),
]


@pytest.mark.parametrize("msgs,kw", [c[1:] for c in STREAM_CASES], ids=[c[0] for c in STREAM_CASES])
def test_stream_send_c_matches_full_path(msgs, kw):
    c = run_stream(CStream, msgs, **kw)
    p = run_stream(PStream, msgs, **kw)
    assert c == p
    # the common case really is the C one: no coroutine comes back
    w = FakeWorker()
    st = CStream(w, 1, None, True, 65536, CAP - 4096)
    assert type(st.send(start())).__name__ == "Ready"
    assert type(st.send(body())).__name__ == "Ready"
    assert w.frames == [C.response(1, 200, [(b"content-type", b"text/plain")], b"Hello", True)]


def test_stream_finish_wakes_the_waiter():
    class Fut(object):
        def __init__(self, done=False):
            self.d, self.result = done, "unset"

        def done(self):
            return self.d

        def set_result(self, v):
            self.result = v
    for cls in (CStream, PStream):
        w = FakeWorker()
        st = cls(w, 3, None, False, 10, 10)
        assert list(st.body) == [] and st.body.__class__.__name__ == "deque"
        f = st.waiter = Fut()
        w.streams[3] = st
        st.finish()
        assert (f.result, st.waiter, st.done, w.served, w.streams) == (None, None, True, 1, {})
        st.finish()                                 # a second finish counts nothing
        assert w.served == 1
        g = st.waiter = Fut(done=True)
        st.wake()
        assert g.result == "unset" and st.waiter is None


def test_stream_fields_and_gc():
    w = FakeWorker()
    st = CStream(w, 5, "r", 0, 1, 2)
    assert (st.w, st.sid, st.req, st.req_ended, st.credit, st.limit) == (w, 5, "r", False, 1, 2)
    assert st.headers is None and st.task is None and st.waiter is None
    with pytest.raises(AttributeError):
        st.sid = 6
    with pytest.raises(AttributeError):
        st.other = 1                                # no __dict__
    with pytest.raises(TypeError):
        CStream(w, 1, None, True, 1)
    with pytest.raises(TypeError):
        CStream(w, 1, None, True, 1, limit=2)
    # a stream in a cycle (stream -> task -> stream) is collected
    import weakref
    class Box(object):
        pass
    b = Box()
    st.task = b
    b.st = st
    r = weakref.ref(b)
    del b, st
    gc.collect()
    assert r() is None


def test_stream_no_leaks():
    hs = [(b"content-type", b"text/plain")]

    def work():
        w = FakeWorker()
        for sid in range(1, 4):
            st = CStream(w, sid, None, sid != 2, 65536, 60000)
            w.streams[sid] = st
            drive(st.send({"type": "http.response.start", "status": 200, "headers": hs}))
            drive(st.send({"type": "http.response.body", "body": b"x" * sid}))
            drive(st.send({"type": "http.response.body", "body": b"y"}))   # after the end: raises
            st2 = CStream(w, 9, None, True, 65536, 60000)
            drive(st2.send({"type": "http.response.start", "status": 200, "headers": [(b"a", 5)]}))
            try:
                st2.send({"type": "http.response.body", "body": b"x"})
            except TypeError:
                pass
    assert _traced(work, 3000) < 8192


# ---------------------------------------------------------------------------
# step(): a coroutine's first step with a given current task, in a given context

import asyncio  # noqa: E402
import contextvars  # noqa: E402

CV = contextvars.ContextVar("cv", default="unset")


def in_loop(loop, fn, *args):
    """fn(*args) in a callback of the running loop (outside any task), as
    the worker's reader callback calls step()."""
    f = loop.create_future()

    def cb():
        try:
            f.set_result(("ok", fn(*args)))
        except Exception as e:
            f.set_result(("raise", e))
    loop.call_soon(cb)
    return loop.run_until_complete(f)


@pytest.mark.parametrize("mod", [C, P], ids=["C", "ref"])
def test_step(mod):
    loop = asyncio.new_event_loop()
    seen = {}

    async def parked():
        await loop.create_future()

    async def ends(v):
        seen["task"] = asyncio.current_task()
        seen["before"] = CV.get()
        CV.set(v)
        return "dropped"

    async def waits():
        seen["task"] = asyncio.current_task()
        await fut
        seen["resumed"] = True

    async def raises():
        raise KeyError("k")

    async def outside():
        return asyncio.current_task()

    try:
        task = loop.create_task(parked())
        loop.run_until_complete(asyncio.sleep(0))
        ctx = contextvars.copy_context()
        assert in_loop(loop, mod.step, ends("x"), ctx, loop, task) == ("ok", mod.FINISHED)
        assert seen["task"] is task and seen["before"] == "unset"
        assert ctx[CV] == "x" and CV.get() == "unset"       # set in ctx only
        assert in_loop(loop, asyncio.current_task) == ("ok", None)    # left again
        fut = loop.create_future()
        c = waits()
        assert in_loop(loop, mod.step, c, contextvars.copy_context(), loop, task) == ("ok", fut)
        assert seen["task"] is task
        fut.set_result(None)
        with pytest.raises(StopIteration):
            c.send(None)
        assert seen["resumed"]
        r = in_loop(loop, mod.step, raises(), contextvars.copy_context(), loop, task)
        assert r[0] == "raise" and isinstance(r[1], KeyError), r
        assert in_loop(loop, asyncio.current_task) == ("ok", None)
        o = outside()
        r = in_loop(loop, ctx.run, mod.step, o, ctx, loop, task)   # ctx entered twice
        assert r[0] == "raise" and isinstance(r[1], RuntimeError), r
        assert in_loop(loop, asyncio.current_task) == ("ok", None)

        async def inside():                                 # another task is current
            return mod.step(o, contextvars.copy_context(), loop, task)
        with pytest.raises(RuntimeError):
            loop.run_until_complete(inside())
        if mod is C:
            with pytest.raises(TypeError):
                mod.step(o, {}, loop, task)
        o.close()
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


def test_step_no_leaks():
    loop = asyncio.new_event_loop()

    async def parked():
        await loop.create_future()

    async def ends():
        CV.set("y")

    async def raises():
        raise ValueError("v")
    task = loop.create_task(parked())
    loop.run_until_complete(asyncio.sleep(0))

    def work():
        in_loop(loop, C.step, ends(), contextvars.copy_context(), loop, task)
        in_loop(loop, C.step, raises(), contextvars.copy_context(), loop, task)
    try:
        assert _traced(work, 3000) < 8192
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
