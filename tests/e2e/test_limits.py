"""
Request limits and malformed requests: the right status, a small body, the
connection closed, and the server unaffected (a fresh request still works).
"""
import pytest

from gwharness import build_request


def expect_rejected(gw, data, statuses, what, send_body_after=None):
    with gw.connect() as c:
        c.send(data)
        r = c.read_response()
        assert r.status in statuses, "%s: expected %s, got %r" % (what, statuses, r)
        assert len(r.body) < 1024, "%s: error body is %d bytes" % (what, len(r.body))
        assert r.header("X-Worker-Pid") is None, \
            "%s: the request reached a worker (%r)" % (what, r)
        closed = c.closed_by_peer(2.0)
        assert closed, "%s: connection not closed after %d; extra %r" % (what, r.status, c.buf[:200])
    ok = gw.get("/")
    assert ok.status == 200 and ok.body == b"Hello, World!", "%s: server then answered %r" % (what, ok)
    return r


@pytest.fixture
def hello(gateway):
    return gateway("hello", "--limit-request-body", "1000", workers=1)


def test_request_line_too_long(hello):
    target = "/" + "a" * 5000
    expect_rejected(hello, build_request("GET", target), (414, 400), "request line of 5000+")


def test_request_line_at_limit_accepted(hello):
    # "GET " + target + " HTTP/1.1" == 4094 bytes exactly
    target = "/" + "a" * (4094 - len("GET  HTTP/1.1") - 1)
    r = hello.request("GET", target)
    assert r.status == 200, "a 4094-byte request line must be accepted: %r" % r


def test_too_many_headers(hello):
    hs = [("X-H%d" % i, "v") for i in range(101)]
    expect_rejected(hello, build_request("GET", "/", hs), (431,), "101+1 header fields")


def test_hundred_headers_accepted(hello):
    hs = [("X-H%d" % i, "v") for i in range(99)]          # + Host = 100
    r = hello.request("GET", "/", hs)
    assert r.status == 200, "100 header fields must be accepted: %r" % r


def test_header_field_too_large(hello):
    hs = [("X-Big", "a" * 9000)]
    expect_rejected(hello, build_request("GET", "/", hs), (431,), "a 9000-byte header field")


def test_body_over_limit(hello):
    data = build_request("POST", "/", [("Content-Length", "2000")])
    expect_rejected(hello, data, (413,), "Content-Length 2000 over --limit-request-body 1000")


def test_body_at_limit_accepted(gateway):
    gw = gateway("echo", "--limit-request-body", "1000")
    r = gw.request("POST", "/", body=b"x" * 1000)
    assert r.status == 200 and r.body == b"x" * 1000, r


def test_http2_request_line(hello):
    expect_rejected(hello, build_request("GET", "/", version="HTTP/2.0"), (505,), "HTTP/2.0")


MALFORMED = {
    "space before colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "CL and TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "differing duplicate CL": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                              b"Content-Length: 2\r\n\r\nab",
    "TE not chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: x\n\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTX/1.1\r\nHost: x\r\n\r\n",
    "negative CL": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request(hello, name):
    statuses = (400, 501) if name == "TE not chunked" else (400,)
    expect_rejected(hello, MALFORMED[name], statuses, name)


def test_expect_continue_over_limit_gets_413_not_100(hello):
    data = build_request("POST", "/", [("Content-Length", "2000"), ("Expect", "100-continue")])
    r = expect_rejected(hello, data, (413,), "Expect: 100-continue with an oversize body")
    assert r.status != 100


def test_custom_limits_take_effect(gateway):
    gw = gateway("hello", "--limit-request-line", "100", "--limit-request-fields", "5",
                 "--limit-request-field-size", "200")
    assert gw.request("GET", "/" + "a" * 80).status == 200
    expect_rejected(gw, build_request("GET", "/" + "a" * 120), (414, 400),
                    "request line 130 > --limit-request-line 100")
    assert gw.request("GET", "/", [("X-%d" % i, "v") for i in range(4)]).status == 200
    expect_rejected(gw, build_request("GET", "/", [("X-%d" % i, "v") for i in range(5)]),
                    (431,), "6 fields > --limit-request-fields 5")
    assert gw.request("GET", "/", [("X-A", "a" * 150)]).status == 200
    expect_rejected(gw, build_request("GET", "/", [("X-A", "a" * 250)]), (431,),
                    "a 255-byte field > --limit-request-field-size 200")


@pytest.mark.parametrize("chunk", [b"zz\r\nab\r\n", b"ffffffffffffffffffff\r\nab\r\n",
                                   b"2\r\nabXX0\r\n\r\n"])
def test_bad_chunked_body_before_response(gateway, chunk):
    """The body is bad before the app has answered (the sleep app answers
    after 500 ms and does not read the body): 400, closed."""
    gw = gateway("sleep")
    with gw.connect() as c:
        c.send(b"POST /?ms=500 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        r = c.read_response()
        ok = (400, 413) if chunk.startswith(b"fffff") else (400,)
        assert r.status in ok, "bad chunk %r: expected %s, got %r" % (chunk, ok, r)
        assert c.closed_by_peer(2.0)
    assert gw.get("/?ms=0").status == 200
