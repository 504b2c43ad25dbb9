#!/usr/bin/python3
"""gen_corpus.py - turn one request corpus (tests/data/corpus/*.jsonl) into a
C header of test vectors for tests/unit/gateway/check_http1.c.

    /usr/bin/python3 tests/unit/gen_corpus.py X.jsonl > build/gen/corpus_X.h

Stdlib only. The three corpora (gunicorn, llhttp, http-desync-guardian) have
different shapes; each row becomes one or two C cases:

  * "raw":   the corpus bytes as they are;
  * "+Host": the same request with "Host: localhost" after each HTTP/1.1
    request line that has no Host (desync-guardian ships these bytes as
    raw_with_host_b64). Our parser answers 400 to HTTP/1.1 without Host
    (RFC 9112 3.2), so without this variant most of llhttp's valid rows
    would only test that rule.

Besides transcribing, the generator derives, per expected message:

  * `end`: the offset just past the message, from a small independent framer
    (the C test checks that the parser consumes exactly that many bytes);
  * `policy`: the statuses with which our stricter policy (gateway/http1.h)
    may refuse a message the corpus calls valid, and why. Gunicorn rows
    carry policy_notes, desync-guardian rows may_reject_because; for the
    rest the rules below are applied mechanically (derive_policy).

The corpus verdicts are never changed here. Cases where our policy refuses
something a corpus accepts, or accepts something it refuses, and that no
rule above covers, are listed one by one in check_http1.c.
"""
import base64
import json
import os
import re
import sys

HOST_LINE = b"Host: localhost\r\n"
REQ_LINE_11 = re.compile(rb"^[!-~]+ [!-~]+ HTTP/1\.1$")

# gunicorn settings we can map onto gw_http1_limits_t; any other key makes
# the case skipped, with its name as the reason.
MAPPED_SETTINGS = {
    "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields",
    "limit_request_field_size": "limit_request_field_size",
}


def c_bytes(b, width=72):
    """C string literal(s) for arbitrary bytes. Every non-printable byte is
    a 3-digit octal escape (so a following digit is never absorbed) and '?'
    is escaped too (-std=c11 enables trigraphs)."""
    if not b:
        return '""'
    out, cur = [], ""
    for x in b:
        ch = chr(x)
        if ch == '"' or ch == "\\" or ch == "?":
            s = "\\" + ch
        elif 0x20 <= x < 0x7F:
            s = ch
        else:
            s = "\\%03o" % x
        cur += s
        if len(cur) >= width or x == 0x0A:
            out.append('"' + cur + '"')
            cur = ""
    if cur:
        out.append('"' + cur + '"')
    return "\n        ".join(out)


def c_str(s):
    return c_bytes(s.encode("utf-8"))


def latin1(s):
    return s.encode("latin-1")


# ---- a small framer, independent of the C parser -------------------------

def head_fields(head_lines):
    out = []
    for ln in head_lines:
        i = ln.find(b":")
        if i <= 0:
            return None
        out.append((ln[:i].strip().lower(), ln[i + 1:].strip(b" \t")))
    return out


def walk_chunked(raw, p):
    """Offset after a chunked body starting at p, or None if incomplete."""
    while True:
        eol = raw.find(b"\r\n", p)
        if eol < 0:
            return None
        size = int(raw[p:eol].split(b";")[0], 16)
        p = eol + 2
        if size == 0:
            while True:
                eol = raw.find(b"\r\n", p)
                if eol < 0:
                    return None
                if eol == p:
                    return p + 2
                p = eol + 2
        p += size + 2
        if p > len(raw):
            return None


def frame(raw, nmsgs, inject):
    """Walk up to nmsgs messages. Returns (bytes, [end offset per message
    walked: -1 unknown, -2 body cut short of its Content-Length], injected?). With inject, "Host: localhost" goes after
    each HTTP/1.1 request line whose head has no Host."""
    pos, ends, injected = 0, [], False
    for _ in range(nmsgs):
        while raw.startswith(b"\r\n", pos):
            pos += 2
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            break
        hend = raw.find(b"\r\n\r\n", pos)
        if hend == eol:
            lines = []
        else:
            lines = raw[eol + 2:hend if hend >= 0 else len(raw)].split(b"\r\n")
        if inject and REQ_LINE_11.match(raw[pos:eol]) \
                and not any(ln.lower().startswith(b"host:") for ln in lines):
            raw = raw[:eol + 2] + HOST_LINE + raw[eol + 2:]
            injected = True
            hend = raw.find(b"\r\n\r\n", pos)
            lines = raw[eol + 2:hend if hend >= 0 else len(raw)].split(b"\r\n")
        fields = head_fields(lines) if hend >= 0 else None
        if fields is None:
            ends.append(-1)
            break
        body = hend + 4
        te = [v for n, v in fields if n == b"transfer-encoding"]
        cl = [v for n, v in fields if n == b"content-length"]
        end = None
        try:
            if te:
                if te[-1].split(b",")[-1].strip().lower() == b"chunked":
                    end = walk_chunked(raw, body)
            elif cl:
                end = body + int(cl[0])
                if end > len(raw):
                    ends.append(-2)     # Content-Length says more than there is
                    break
            else:
                end = body
        except ValueError:
            end = None
        if end is None:
            ends.append(-1)
            break
        ends.append(end)
        pos = end
    return raw, ends, injected


# ---- policy ---------------------------------------------------------------

def statuses_for(notes):
    """Statuses a policy note allows: 400 always, 501 for transfer codings,
    505 for versions."""
    st = [400]
    text = " ".join(notes).lower()
    if "coding" in text:
        st.append(501)
    if "version" in text:
        st.append(505)
    return st


def derive_policy(m, has_host):
    """Why our policy may refuse a message that a corpus calls valid."""
    notes, st = [], set()
    hdrs = [(n.lower(), v) for n, v in m["headers"]]
    if m.get("protocol", "HTTP") != "HTTP" or m["version"] not in ("1.0", "1.1"):
        notes.append("not HTTP/1.0 or HTTP/1.1 (400/505)")
        st |= {400, 505}
    if m["method"] == "CONNECT":
        notes.append("CONNECT is answered 501 (http1.h)")
        st.add(501)
    if m["target"] == "*" and m["method"] != "OPTIONS":
        notes.append("asterisk-form is for OPTIONS only (RFC 9112 3.2.4)")
        st.add(400)
    if any(ord(ch) >= 0x80 for ch in m["target"]):
        notes.append("request-target outside ASCII (RFC 3986)")
        st.add(400)
    if m["version"] == "1.1" and not has_host:
        notes.append("HTTP/1.1 without Host (RFC 9112 3.2)")
        st.add(400)
    te = [v for n, v in hdrs if n == "transfer-encoding"]
    if len(te) > 1 or (te and te[0].strip(" \t").lower() != "chunked"):
        notes.append("transfer coding other than one chunked (400/501)")
        st |= {400, 501}
    return notes, sorted(st)


# ---- C emission ---------------------------------------------------------------

class Emitter:
    def __init__(self, ident):
        self.ident = ident
        self.decls = []
        self.cases = []
        self.n = 0

    def sym(self, what):
        self.n += 1
        return "gw_corpus_%s_%s%d" % (self.ident, what, self.n)

    def msgs(self, msgs):
        """msgs: list of dicts with method, target (bytes), minor, headers
        [(bytes, bytes)], body bytes, head_complete, complete, end, policy,
        policy_why."""
        if not msgs:
            return "NULL", 0
        rows = []
        for m in msgs:
            if m["headers"] is None:
                hsym, hn = "NULL", 0
            elif m["headers"]:
                hsym = self.sym("h")
                self.decls.append("static const gw_corpus_hdr_t %s[] = {\n%s\n};" % (hsym, "\n".join(
                    "    { %s, %d, %s, %d }," % (c_bytes(n), len(n), c_bytes(v), len(v))
                    for n, v in m["headers"])))
                hn = len(m["headers"])
            else:
                hsym, hn = "NULL", 0
            pol = (m["policy"] + [0, 0, 0, 0])[:4]
            rows.append("    { %s, %d, %s, %d, %d, %s, %d, %s, %d, %d, %d, %d, %d, { %s }, %s }," % (
                c_bytes(m["method"]), len(m["method"]), c_bytes(m["target"]), len(m["target"]),
                m["minor"], hsym, hn, c_bytes(m["body"]), len(m["body"]), 1 if m["headers"] is not None else 0,
                m["head_complete"], m["complete"], m["end"],
                ", ".join(str(x) for x in pol),
                c_str("; ".join(m["policy_why"])) if m["policy_why"] else "NULL"))
        sym = self.sym("m")
        self.decls.append("static const gw_corpus_msg_t %s[] = {\n%s\n};" % (sym, "\n".join(rows)))
        return sym, len(msgs)

    def case(self, name, variant, raw, kind, status=0, alt=(), end_kind="ERROR", msgs=(),
             limits=(0, 0, 0), skip=None, dropped=-1, note=None):
        msym, mn = self.msgs(list(msgs))
        alt = (list(alt) + [0, 0, 0])[:3]
        self.cases.append(
            "    { %s, %s,\n      %s, %d,\n      GW_CORPUS_%s, %d, { %s }, GW_CORPUS_END_%s, %s, %d, %d,\n"
            "      %d, %d, %d, %s, %s }," % (
                c_str(name), c_str(variant), c_bytes(raw), len(raw), kind, status,
                ", ".join(str(x) for x in alt), end_kind, msym, mn, dropped,
                limits[0], limits[1], limits[2],
                c_str(skip) if skip else "NULL", c_str(note) if note else "NULL"))

    def write(self, out, src):
        out.write("/* corpus_%s.h - generated by tests/unit/gen_corpus.py from %s; do not edit. */\n"
                  % (self.ident.replace("_", "-"), src))
        out.write(TYPES)
        for d in self.decls:
            out.write(d + "\n")
        out.write("static const gw_corpus_case_t gw_corpus_%s[] = {\n" % self.ident)
        out.write("\n".join(self.cases) + "\n};\n")
        out.write("#define GW_CORPUS_%s_COUNT %d\n" % (self.ident.upper(), len(self.cases)))


TYPES = r"""
#ifndef GW_CORPUS_TYPES
#define GW_CORPUS_TYPES
#include <stddef.h>

typedef struct {
    const char *name;  size_t name_len;
    const char *value; size_t value_len;
} gw_corpus_hdr_t;

typedef struct {
    const char *method; size_t method_len;
    const char *target; size_t target_len;
    int         minor;          /* HTTP/1.<minor>, -1 for anything else */
    const gw_corpus_hdr_t *headers; size_t nheaders;
    const char *body;   size_t body_len;   /* de-chunked */
    int         check_headers;  /* the header list is known and compared */
    int         head_complete;  /* the whole head is in the input */
    int         complete;       /* the whole message is in the input */
    long        end;            /* offset just past the message, -1 unknown */
    int         policy[4];      /* statuses our policy may answer instead, 0-terminated */
    const char *policy_why;     /* why, NULL if none */
} gw_corpus_msg_t;

enum { GW_CORPUS_VALID, GW_CORPUS_INVALID, GW_CORPUS_EITHER };
/* How an INVALID case ends when it has no status: the input stops mid
 * request, or the connection closes (keep-alive off) before the bad bytes. */
enum { GW_CORPUS_END_ERROR, GW_CORPUS_END_INCOMPLETE, GW_CORPUS_END_CLOSED };

typedef struct {
    const char *name;
    const char *variant;        /* "raw" or "+Host" */
    const char *raw; size_t raw_len;
    int         kind;
    int         status;         /* INVALID: the status to answer, 0 = none */
    int         alt_status[3];  /* INVALID: equivalent statuses, 0-terminated */
    int         end_kind;       /* INVALID with status 0 */
    const gw_corpus_msg_t *msgs; size_t nmsgs;  /* VALID: all; INVALID: before the error */
    long        dropped;        /* '_' headers dropped in total, -1 unknown */
    size_t      limit_request_line, limit_request_fields, limit_request_field_size; /* 0: default */
    const char *skip;           /* non-NULL: cannot be run here, and why */
    const char *note;
} gw_corpus_case_t;
#endif

"""


# ---- per corpus -------------------------------------------------------------

def version_minor(v):
    return {"1.0": 0, "1.1": 1}.get(v, -1)


def gunicorn_settings(settings):
    limits, unmapped = [0, 0, 0], []
    for k, v in sorted(settings.items()):
        if k in MAPPED_SETTINGS:
            i = ["limit_request_line", "limit_request_fields", "limit_request_field_size"].index(k)
            # Gunicorn: 0 means its default for this knob (limit_header_default_01)
            limits[i] = v
        else:
            unmapped.append("%s=%s" % (k, json.dumps(v)))
    return tuple(limits), ("unsupported setting " + ", ".join(unmapped)) if unmapped else None


def gunicorn_notes_per_msg(notes, nmsgs):
    per = [[] for _ in range(max(nmsgs, 1))]
    for n in notes:
        m = re.match(r"request (\d+): (.*)", n)
        if m:
            per[int(m.group(1)) - 1].append(m.group(2))
        else:
            per[0].append(n)
    return per


def gen_gunicorn(rows, em):
    for r in rows:
        raw = base64.b64decode(r["raw_b64"])
        limits, skip = gunicorn_settings(r.get("settings") or {})
        if r["valid"]:
            exp = r["expect"]
            notes = gunicorn_notes_per_msg(r.get("policy_notes", []), len(exp))
            for variant in ("raw", "+Host"):
                data, ends, injected = frame(raw, len(exp), variant == "+Host")
                if variant == "+Host" and not injected:
                    continue
                msgs = []
                for i, m in enumerate(exp):
                    hdrs = [(latin1(n), latin1(v)) for n, v in m["headers"]]
                    has_host = any(n.lower() == b"host" for n, _ in hdrs)
                    if variant == "+Host" and m["version"] == "1.1" and not has_host:
                        hdrs.insert(0, (b"Host", b"localhost"))
                        has_host = True
                    why = [n for n in notes[i] if not (variant == "+Host" and "without Host" in n)]
                    dwhy, dst = derive_policy(m, has_host)
                    st = sorted(set(statuses_for(why) if why else []) | set(dst))
                    # the corpus's own note first; derived ones only if new
                    why += [d for d in dwhy
                            if not any(d.split(" (")[0].lower() in w.lower() for w in why)]
                    end = ends[i] if i < len(ends) else -1
                    # valid/099: the fixture's body is shorter than its
                    # Content-Length (gunicorn's harness reads to EOF); for
                    # a server that is a request still waiting for bytes.
                    msgs.append(dict(method=latin1(m["method"]), target=latin1(m["target"]),
                                     minor=version_minor(m["version"]), headers=hdrs,
                                     body=base64.b64decode(m["body_b64"]), head_complete=1,
                                     complete=0 if end == -2 else 1, end=max(end, -1),
                                     policy=st, policy_why=why))
                em.case(r["name"], variant, data, "VALID", msgs=msgs, limits=limits, skip=skip)
        else:
            e = r["expect"]
            status = e["status"] or 0
            alt = []
            if e["error"] == "LimitRequestLine":
                alt.append(414)     # a strict server may say URI Too Long
            if e["error"] == "InvalidHTTPVersion":
                alt.append(505)
            end_kind = "ERROR"
            if status == 0 or e.get("truncated"):
                end_kind, status = "INCOMPLETE", 0
            for variant in ("raw", "+Host"):
                data, _, injected = frame(raw, 1, variant == "+Host")
                if variant == "+Host" and not injected:
                    continue
                em.case(r["name"], variant, data, "INVALID", status=status, alt=alt, end_kind=end_kind,
                        limits=limits, skip=skip, note=e["error"])


def gen_llhttp(rows, em):
    for r in rows:
        raw = base64.b64decode(r["raw_b64"])
        e = r["expect"]
        if r["valid"]:
            exp, kind, status, end_kind, alt = e, "VALID", 0, "ERROR", []
        else:
            exp = e.get("messages_before_error") or []
            kind, status, alt = "INVALID", e["status"] or 0, []
            end_kind = "ERROR"
            if e["error"] == "HPE_CLOSED_CONNECTION":
                end_kind = "CLOSED"
            elif status == 0:
                end_kind = "INCOMPLETE"
            if e["error"] in ("HPE_INVALID_VERSION", "HPE_INVALID_CONSTANT"):
                alt.append(505)
        for variant in ("raw", "+Host"):
            walk = len(exp) + (0 if r["valid"] else 1)
            data, ends, injected = frame(raw, walk, variant == "+Host")
            if variant == "+Host" and not injected:
                continue
            msgs = []
            for i, m in enumerate(exp):
                # '_' names are dropped by policy (none in llhttp 9.4.2)
                hdrs = [(latin1(n), latin1(v)) for n, v in m["headers"] if "_" not in n]
                has_host = any(n.lower() == b"host" for n, _ in hdrs)
                if variant == "+Host" and m["version"] == "1.1" and not has_host \
                        and m.get("protocol", "HTTP") == "HTTP":
                    hdrs.insert(0, (b"Host", b"localhost"))
                    has_host = True
                why, st = derive_policy(m, has_host)
                head_complete = 1 if m.get("headers_complete", True) else 0
                complete = 1 if m.get("complete", True) else 0
                msgs.append(dict(method=latin1(m["method"]), target=latin1(m["target"]),
                                 minor=version_minor(m["version"]) if m.get("protocol", "HTTP") == "HTTP" else -1,
                                 headers=hdrs, body=base64.b64decode(m["body_b64"]),
                                 head_complete=head_complete, complete=complete,
                                 end=ends[i] if (complete and i < len(ends)) else -1,
                                 policy=st, policy_why=why))
            em.case(r["name"], variant, data, kind, status=status, alt=alt, end_kind=end_kind, msgs=msgs,
                    note=None if r["valid"] else e["error"])


def gen_desync(rows, em):
    for r in rows:
        e = r["expect"]
        req = r["request"]
        version = req["version"]
        vstr = version[5:] if version.startswith("HTTP/") else version
        bad_version = version not in ("HTTP/1.0", "HTTP/1.1")
        variants = [("raw", base64.b64decode(r["raw_b64"]))]
        if "raw_with_host_b64" in r:
            variants.append(("+Host", base64.b64decode(r["raw_with_host_b64"])))
        for variant, data in variants:
            note = "%s: %s" % (e["tier"], e["reason"])
            if e["action"] == "reject":
                em.case(r["name"], variant, data, "INVALID", status=e["status"],
                        alt=[505] if bad_version else [], note=note)
            elif e["action"] == "either":
                em.case(r["name"], variant, data, "EITHER", note=note)
            else:
                hdrs = [(n.encode("utf-8"), v.encode("utf-8").strip(b" \t")) for n, v, _ in req["headers"]]
                dropped = sum(1 for n, _ in hdrs if b"_" in n)
                hdrs = [h for h in hdrs if b"_" not in h[0]]
                if variant == "+Host":
                    hdrs.insert(0, (b"Host", b"localhost"))
                why = list(e.get("may_reject_because", []))
                if variant == "+Host":
                    why = [w for w in why if "no Host" not in w]
                body_pending = bool(e.get("body_declared_not_sent"))
                msg = dict(method=req["method"].encode("utf-8"), target=req["uri"].encode("utf-8"),
                           minor=version_minor(vstr), headers=hdrs, body=b"", head_complete=1,
                           complete=0 if body_pending else 1, end=-1 if body_pending else len(data),
                           policy=statuses_for(why) if why else [], policy_why=why)
                em.case(r["name"], variant, data, "VALID", msgs=[msg], dropped=dropped, note=note)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: gen_corpus.py X.jsonl > corpus_X.h\n")
        return 2
    path = sys.argv[1]
    base = os.path.basename(path)[:-len(".jsonl")]
    ident = re.sub(r"[^A-Za-z0-9]", "_", base)
    rows = [json.loads(ln) for ln in open(path, encoding="utf-8") if ln.strip()]
    em = Emitter(ident)
    if base.startswith("gunicorn"):
        gen_gunicorn(rows, em)
    elif base.startswith("llhttp"):
        gen_llhttp(rows, em)
    elif base.startswith("desync"):
        gen_desync(rows, em)
    else:
        sys.stderr.write("gen_corpus.py: unknown corpus %s\n" % base)
        return 2
    em.write(sys.stdout, "tests/data/corpus/" + os.path.basename(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
