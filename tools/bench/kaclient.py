#!/usr/bin/python3
"""Send exactly N keep-alive GET requests (stdlib only), for tools/bench/callgrind.sh.

  kaclient.py PORT N [CONNS] [PATH]

CONNS connections (default 1) are opened once; each round sends one request on every
connection, then reads every response (one request in flight per connection, no
pipelining), until N requests are done. Prints "ok=<n> bad=<n> seconds=<s>"; exit 1 if
any response is not "200" with the expected body, or a connection closes early.
"""
import socket
import sys
import time


def read_response(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        if k.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked response not supported by this client")
    if length is None:
        raise ValueError("response without Content-Length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside response body")
        rest += chunk
    return status, rest[:length], rest[length:]


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    path = sys.argv[4] if len(sys.argv) > 4 else "/"
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kaclient\r\n\r\n".encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(conns)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bufs = [b""] * conns
    ok = bad = 0
    t0 = time.monotonic()
    done = 0
    while done < n:
        batch = min(conns, n - done)
        for s in socks[:batch]:
            s.sendall(req)
        for i in range(batch):
            status, body, bufs[i] = read_response(socks[i], bufs[i])
            if status == 200 and body == b"Hello, World!":
                ok += 1
            else:
                bad += 1
                if bad <= 3:
                    print(f"unexpected response: {status} {body[:80]!r}", file=sys.stderr)
        done += batch
    for s in socks:
        s.close()
    print(f"ok={ok} bad={bad} seconds={time.monotonic() - t0:.2f}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
