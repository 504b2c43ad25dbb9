# WSGI app that builds ~200 MB of read-only data at import time, to show how
# CPython refcounting interacts with fork()/copy-on-write under gunicorn --preload.
#
#   MEM_KIND=objects : a list of 2,000,000 small str objects (~96 B each + 8 B slot)
#   MEM_KIND=bytes   : one ~200 MiB bytes object
#   MEM_KIND=none    : no data (control: bare gunicorn master + workers)
#   MEM_TOUCH=1      : every request *reads* 1/64 of the data (rotating chunk), so
#                      after 64 requests a worker has read all of it.  Reading a
#                      Python object increments/decrements its refcount (a write
#                      into the object header) -> the page is copied in that worker.
#                      Reading a bytes buffer never writes to it.
#   MEM_TOUCH=0      : requests never look at the data.
#
# Same app as the anchor baselines (/work/shared/bench-anchors/mem_app.py), used by
# tools/bench/pymem.sh. The 'mem_app ready' line on stderr marks each import (one per
# process that built the data: once with a working preload, once per worker without).
import os
import sys
import time

KIND = os.environ.get("MEM_KIND", "objects")
TOUCH = os.environ.get("MEM_TOUCH", "1") == "1"
N_OBJ = 2_000_000
N_BYTES = 200 * 1024 * 1024
CHUNKS = 64

t0 = time.monotonic()
if KIND == "objects":
    DATA = ["%040d" % i for i in range(N_OBJ)]          # 2M distinct 40-char str
    CHUNK = N_OBJ // CHUNKS
elif KIND == "bytes":
    DATA = bytes(range(256)) * (N_BYTES // 256)          # filled, so really resident
    CHUNK = N_BYTES // CHUNKS
elif KIND == "none":
    DATA, CHUNK, TOUCH = b"", 0, False
else:
    raise SystemExit("MEM_KIND must be objects, bytes or none")
print("mem_app ready pid=%d kind=%s touch=%d build=%.2fs"
      % (os.getpid(), KIND, TOUCH, time.monotonic() - t0), file=sys.stderr, flush=True)

_counter = 0
PID_HDR = ("X-Worker-Pid", "")


def app(environ, start_response):
    global _counter
    acc = 0
    if TOUCH:
        i = (_counter % CHUNKS) * CHUNK
        if KIND == "objects":
            for s in DATA[i:i + CHUNK]:      # slice + loop: incref/decref each object
                acc += len(s)
        else:
            acc = DATA.count(b"\x00", i, i + CHUNK)   # read-only scan of the buffer
    _counter += 1
    body = b"%d\n" % acc
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]


application = app
