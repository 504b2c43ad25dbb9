"""
HTTP/1.x behaviour of the front: pipelining, keep-alive, Connection: close,
HTTP/1.0, HEAD, Expect: 100-continue, Date/Server, chunked responses,
the keep-alive idle timeout.
"""
import email.utils
import time

from gwharness import build_request

PIPELINE = (build_request("GET", "/a?x=1", [("X-One", "1")])
            + build_request("POST", "/b", [("Content-Type", "text/plain")], b"hello world")
            + build_request("GET", "/c", [("Connection", "close")]))


def check_pipeline_responses(c):
    r1 = c.read_response()
    assert r1.status == 200, r1
    assert r1.header("X-Echo-Method") == "GET" and r1.header("X-Echo-Target") == "/a?x=1", r1
    assert r1.header("X-Echo-Version") == "1.1"
    assert r1.header("X-Echo-Header-Count") == "2", r1
    assert r1.body == b"GET /a?x=1 HTTP/1.1\nHost: localhost\nX-One: 1\n", r1.body
    r2 = c.read_response()
    assert r2.status == 200, r2
    assert r2.header("X-Echo-Method") == "POST" and r2.header("X-Echo-Target") == "/b", r2
    assert r2.body == b"hello world", r2
    assert r2.header("Content-Length") == "11", r2
    r3 = c.read_response()
    assert r3.status == 200 and r3.header("X-Echo-Target") == "/c", r3
    assert r3.body == b"GET /c HTTP/1.1\nHost: localhost\nConnection: close\n", r3.body
    assert (r3.header("Connection") or "").lower() == "close", r3
    assert c.closed_by_peer(2.0), "connection not closed after Connection: close; extra %r" % c.buf


def test_pipelined_in_one_write(gateway):
    gw = gateway("echo", workers=2)
    with gw.connect() as c:
        c.send(PIPELINE)
        check_pipeline_responses(c)


def test_pipelined_one_byte_at_a_time(gateway):
    gw = gateway("echo", workers=2)
    with gw.connect() as c:
        c.send_slowly(PIPELINE, step=1, delay=0.001)
        check_pipeline_responses(c)


def test_pipelined_split_at_every_byte(gateway):
    gw = gateway("echo", workers=2)
    for i in range(1, len(PIPELINE)):
        with gw.connect() as c:
            c.send(PIPELINE[:i])
            time.sleep(0.002)
            c.send(PIPELINE[i:])
            try:
                check_pipeline_responses(c)
            except AssertionError as e:
                raise AssertionError("split at byte %d (%r | %r): %s"
                                     % (i, PIPELINE[max(0, i - 10):i], PIPELINE[i:i + 10], e))


def test_keep_alive_many_requests(gateway):
    gw = gateway("hello", workers=2)
    with gw.connect() as c:
        for i in range(10):
            c.send(build_request("GET", "/%d" % i))
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello, World!", r
            assert r.header("Content-Length") == "13", r
            assert (r.header("Connection") or "").lower() != "close", r
        assert not c.closed_by_peer(0.2), "server closed a keep-alive connection"


def test_http10_closes(gateway):
    gw = gateway("hello")
    with gw.connect() as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", r
        assert c.closed_by_peer(2.0), "HTTP/1.0 without keep-alive left open; extra %r" % c.buf


def test_http10_echo_version(gateway):
    gw = gateway("echo")
    with gw.connect() as c:
        c.send(b"GET /v HTTP/1.0\r\nHost: h\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.header("X-Echo-Version") == "1.0", r
        assert r.body == b"GET /v HTTP/1.0\nHost: h\n", r.body
        assert c.closed_by_peer(2.0)


def test_connection_close_honoured(gateway):
    gw = gateway("hello")
    with gw.connect() as c:
        c.send(build_request("GET", "/", [("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", r
        assert (r.header("Connection") or "").lower() == "close", \
            "response to Connection: close lacks Connection: close: %r" % r
        assert c.closed_by_peer(2.0), "server did not close; extra %r" % c.buf


def test_head_has_length_and_no_body(gateway):
    gw = gateway("hello")
    with gw.connect() as c:
        c.send(build_request("HEAD", "/"))
        r = c.read_response(head_request=True)
        assert r.status == 200, r
        assert r.header("Content-Length") == "13", "HEAD should carry Content-Length: %r" % r
        # the next bytes on the connection must be the next response, not a body
        c.send(build_request("GET", "/"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"Hello, World!", \
            "after HEAD the connection carried %r" % r2
        assert not c.closed_by_peer(0.2) and c.buf == b"", "stray bytes after HEAD: %r" % c.buf


def test_expect_100_continue(gateway):
    gw = gateway("echo")
    with gw.connect() as c:
        c.send(build_request("POST", "/up", [("Expect", "100-continue"),
                                             ("Content-Length", "5")]))
        c.settimeout(3)
        interim = c.read_response()
        assert interim.status == 100 and interim.version == "HTTP/1.1", \
            "expected 'HTTP/1.1 100 Continue' before sending the body, got %r" % interim
        c.send(b"abcde")
        r = c.read_response()
        assert r.status == 200 and r.body == b"abcde", r
        assert r.header("X-Echo-Method") == "POST"


def test_date_and_server_headers(gateway):
    gw = gateway("hello")
    r = gw.get("/")
    assert r.status == 200
    server = r.header("Server")
    assert server, "no Server header: %r" % r
    date = r.header("Date")
    assert date, "no Date header: %r" % r
    d = email.utils.parsedate_to_datetime(date)
    assert d.tzinfo is not None and abs(d.timestamp() - time.time()) < 60, \
        "Date %r is not an IMF-fixdate near now" % date
    assert date.endswith(" GMT"), date


def test_streamed_response_is_chunked(gateway):
    gw = gateway("stream")
    with gw.connect() as c:
        t0 = time.monotonic()
        c.send(build_request("GET", "/?n=5&ms=100"))
        r = c.read_response()
        assert r.status == 200, r
        assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r
        assert r.header("Content-Length") is None, r
        assert r.body == b"".join(b"chunk %d\n" % i for i in range(5)), r.body
        # streamed, not buffered: the first piece arrives well before the last
        spread = r.chunk_times[-1] - r.chunk_times[0]
        assert spread >= 0.25, "chunks arrived within %.3fs: buffered, not streamed" % spread
        assert r.chunk_times[0] - t0 < 0.35, "first chunk took %.3fs" % (r.chunk_times[0] - t0)
        # the connection is still usable
        c.send(build_request("GET", "/?n=2&ms=1"))
        r2 = c.read_response()
        assert r2.body == b"chunk 0\nchunk 1\n", r2


def test_stream_http10_close_delimited(gateway):
    gw = gateway("stream")
    with gw.connect() as c:
        c.send(b"GET /?n=3&ms=10 HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.header("Transfer-Encoding") is None, "chunked sent to an HTTP/1.0 client: %r" % r
        assert r.body == b"chunk 0\nchunk 1\nchunk 2\n", r


def test_keep_alive_idle_timeout(gateway):
    gw = gateway("hello", "--keep-alive", "1")
    with gw.connect() as c:
        c.send(build_request("GET", "/"))
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.closed_by_peer(4.0), "idle keep-alive connection not closed within 4s"
        dt = time.monotonic() - t0
        assert 0.5 <= dt <= 3.0, "closed after %.2fs with --keep-alive 1" % dt


def test_echo_header_count(gateway):
    gw = gateway("echo")
    for n in (0, 1, 7):
        hs = [("X-H%d" % i, "v%d" % i) for i in range(n)]
        r = gw.request("GET", "/h", hs)
        assert r.status == 200, r
        assert r.header("X-Echo-Header-Count") == str(n + 1), r
        expect = "GET /h HTTP/1.1\nHost: localhost\n" + "".join(
            "X-H%d: v%d\n" % (i, i) for i in range(n))
        assert r.text == expect, r


def test_pipelined_responses_in_order_when_workers_finish_out_of_order(gateway):
    gw = gateway("sleep", workers=3)
    delays = [400, 0, 200, 0, 100]
    with gw.connect() as c:
        c.send(b"".join(build_request("GET", "/?ms=%d" % d) for d in delays))
        got = [c.read_response() for _ in delays]
    bodies = [r.body for r in got]
    assert bodies == [b"slept %d ms\n" % d for d in delays], \
        "pipelined responses out of order: %s" % bodies


def test_unread_body_is_discarded_on_keep_alive(gateway):
    gw = gateway("hello")
    with gw.connect() as c:
        c.send(build_request("POST", "/", body=b"z" * 5000))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", r
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nzzzzz\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", r
        c.send(build_request("GET", "/next"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!", \
            "request after an unread body got %r" % r


def test_head_on_streamed_response(gateway):
    gw = gateway("stream")
    with gw.connect() as c:
        c.send(build_request("HEAD", "/?n=3&ms=1"))
        r = c.read_response(head_request=True)
        assert r.status == 200, r
        c.send(build_request("GET", "/?n=1&ms=1"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.body == b"chunk 0\n", \
            "HEAD of a streamed response leaked body bytes: %r" % r2


def test_client_gone_mid_request(gateway):
    gw = gateway("sleep", workers=1)
    for _ in range(3):
        c = gw.connect()
        c.send(build_request("GET", "/?ms=300"))
        time.sleep(0.05)
        c.close()
    with gw.connect() as c:
        c.send(build_request("GET", "/?ms=0"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"slept 0 ms\n", r
    time.sleep(0.4)     # let the abandoned timers fire (late replies are dropped)
    r = gw.get("/?ms=0")
    assert r.status == 200, r


def test_deep_pipeline(gateway):
    gw = gateway("hello", workers=2)
    n = 300
    with gw.connect(timeout=10) as c:
        c.send(b"".join(build_request("GET", "/%d" % i) for i in range(n)))
        for i in range(n):
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello, World!", "response %d: %r" % (i, r)
        assert not c.closed_by_peer(0.2) and c.buf == b""


def test_many_concurrent_connections(gateway):
    gw = gateway("sleep", workers=2)
    conns = [gw.connect(timeout=10) for _ in range(200)]
    for c in conns:
        c.send(build_request("GET", "/?ms=200"))
    t0 = time.monotonic()
    for i, c in enumerate(conns):
        r = c.read_response()
        assert r.status == 200 and r.body == b"slept 200 ms\n", "connection %d: %r" % (i, r)
    assert time.monotonic() - t0 < 3.0
    for c in conns:
        c.close()


def test_http10_keep_alive_requested(gateway):
    gw = gateway("hello")
    with gw.connect() as c:
        for _ in range(2):
            c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            assert r.status == 200 and r.body == b"Hello, World!", r
            assert (r.header("Connection") or "").lower() == "keep-alive", \
                "HTTP/1.0 keep-alive response lacks Connection: keep-alive: %r" % r
        assert not c.closed_by_peer(0.2)


def test_transfer_encoding_case_insensitive(gateway):
    gw = gateway("echo")
    with gw.connect() as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n"
               b"2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hi", r
        c.send(build_request("GET", "/after"))
        assert c.read_response().header("X-Echo-Target") == "/after"
