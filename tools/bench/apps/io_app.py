# I/O-bound WSGI app for tools/bench/pyconc.sh (issue 5): every request waits 20 ms in
# time.sleep(0.02), standing in for a database or HTTP call. Under gevent (gunicorn -k gevent,
# gateway -k gevent) time.sleep is monkey-patched, so the wait yields to other greenlets; in
# sync and gthread workers it blocks the worker or the thread.
# Answers 200, text/plain, "io ok\n" (6 bytes, with Content-Length).
import time

WAIT = 0.02
BODY = b"io ok\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(WAIT)
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
