# CPU-bound WSGI app for tools/bench/pyconc.sh (issue 5): every request does about 2 ms of
# pure-Python work (integer arithmetic in a loop; it holds the GIL the whole time, no I/O).
#
# The amount of work is a fixed number of loop iterations, CPU_ITERS, so every request of every
# server does exactly the same work and returns the same body:
#   * CPU_ITERS in the environment wins (pyconc.sh calibrates once and passes the same value to
#     every server, so gateway and gunicorn run identical work);
#   * otherwise it is calibrated once at import to CPU_TARGET_MS (default 2.0) on this machine:
#     the best of 15 timings of a 5,000-iteration probe gives a first count, the best of 15
#     timings of that count refines it once (best-of: least disturbed by other load).
# `python3 cpu_app.py` prints the calibrated CPU_ITERS and the measured ms per request.
# Answers 200, text/plain, "cpu NNNNN\n" (the checksum of the work, identical for every request).
import os
import time


def work(n):
    """Deterministic pure-Python work: n rounds of a 32-bit LCG folded into a checksum."""
    x, acc = 12345, 0
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        acc ^= (x >> 7) + i
    return acc & 0xFFFF


def calibrate(target_ms, probe=5000, reps=15):
    target = target_ms / 1000.0
    _timed(probe)                                       # warm up
    n = max(1000, int(probe * target / min(_timed(probe) for _ in range(reps))))
    return max(1000, int(n * target / min(_timed(n) for _ in range(reps))))


def _timed(n):
    t = time.perf_counter()
    work(n)
    return time.perf_counter() - t


TARGET_MS = float(os.environ.get("CPU_TARGET_MS", "2.0"))
ITERS = int(os.environ.get("CPU_ITERS") or 0) or calibrate(TARGET_MS)
BODY = b"cpu %05d\n" % work(ITERS)
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    body = b"cpu %05d\n" % work(ITERS)
    start_response("200 OK", HEADERS)
    return [body]


application = app

if __name__ == "__main__":
    t = min(_timed(ITERS) for _ in range(15))
    print("CPU_ITERS=%d  best of 15: %.3f ms per request" % (ITERS, t * 1000))
