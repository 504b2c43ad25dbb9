"""WSGI app for the concurrency tests: /slow?SECONDS sleeps (time.sleep, so
gevent's patch makes it cooperative), then answers pid, thread name and the
number of requests this process is running at that moment."""
import os
import threading
import time

_lock = threading.Lock()
_running = [0, 0]     # now, most at once


def app(environ, start_response):
    with _lock:
        _running[0] += 1
        _running[1] = max(_running)
    try:
        if environ["PATH_INFO"] == "/slow":
            time.sleep(float(environ.get("QUERY_STRING") or "0.5"))
        body = ("%d %s %d\n" % (os.getpid(), threading.current_thread().name,
                                _running[1])).encode()
    finally:
        with _lock:
            _running[0] -= 1
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]
