# Raw WSGI hello: 13-byte body, text/plain.
# Same app as the anchor baselines (/work/shared/bench-anchors/), used by tools/bench/pybench.sh
# for every WSGI server (gateway, gunicorn, uWSGI).
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
