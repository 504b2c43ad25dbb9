#!/usr/bin/env bash
# Instructions per request of the Python runtime, in-process (pyworker_micro.py), under
# callgrind: repeatable where timings on a noisy machine are not.
#
#   tools/bench/pyworker_ir.sh [wsgi|asgi|asgi-alone] [N1 N2]
#   APP=fastapi_hello:app tools/bench/pyworker_ir.sh asgi
#
# Runs `ONCE=1 pyworker_micro.py KIND N` for N1 and N2 requests and prints
# (Ir(N2) - Ir(N1)) / (N2 - N1): start-up, imports and the app's set-up cancel out. The
# wsgi and asgi figures include the micro's own frame building (msgpack packing of the
# REQUEST frames, about 17k instructions per request); asgi-alone has none. So the
# runtime's own ASGI overhead for an app is asgi - asgi-alone - 17k, and versions are
# compared with the same kind.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
KIND=${1:-asgi}
N1=${2:-640}
N2=${3:-3200}
command -v valgrind >/dev/null || { echo "pyworker_ir: needs valgrind (tools/install-deps.sh bench)" >&2; exit 1; }
ir() {
    ONCE=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        /usr/bin/python3 "$HERE/pyworker_micro.py" "$KIND" "$1" 2>&1 |
        awk '/Collected/ {print $4}'
}
a=$(ir "$N1")
b=$(ir "$N2")
[ -n "$a" ] && [ -n "$b" ] || { echo "pyworker_ir: callgrind gave no count" >&2; exit 1; }
echo "$KIND${APP:+ $APP}: $(( (b - a) / (N2 - N1) )) instructions per request (callgrind, N=$N1..$N2)"
