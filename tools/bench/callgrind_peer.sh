#!/usr/bin/env bash
# User-space instructions per request of a peer server (uvicorn, gunicorn), under callgrind,
# to set beside tools/bench/callgrind.sh's figure for the gateway. Timings on this VM drift
# by 1.5-2x from hour to hour; instruction counts do not, so this is the repeatable part of
# "how much work does each server do per request".
#
#   PEER=uvicorn  APP=fastapi_hello:app tools/bench/callgrind_peer.sh
#   PEER=gthread  APP=wsgi_hello:app    tools/bench/callgrind_peer.sh
#
# The peer runs with ONE process serving requests (uvicorn without --workers; gunicorn
# gthread -w 1 --threads 4, whose master idles), apps from tools/bench/apps. As in callgrind.sh it is run twice, with
# N1 and N2 keep-alive requests from kaclient.py over CONNS connections, and
# per request = (Ir(N2 run) - Ir(N1 run)) / (N2 - N1), summed over every process of the run
# (start-up and shutdown cancel out). gunicorn sync is not offered: it closes after every
# response, and kaclient.py keeps its connections.
# Kernel time is not counted by callgrind; compare it with the sys column of pybench.sh.
#
# Environment: PEER (uvicorn) APP (fastapi_hello:app) N1 (2000) N2 (8000) CONNS (16)
#   PORT (18312) OUTDIR (tools/bench/results/callgrind-peer-<timestamp>)
set -u
set +m

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
PEER=${PEER:-uvicorn}
APP=${APP:-fastapi_hello:app}
N1=${N1:-2000}
N2=${N2:-8000}
CONNS=${CONNS:-16}
PORT=${PORT:-18312}
OUTDIR=${OUTDIR:-$HERE/results/callgrind-peer-$(date +%Y%m%d-%H%M%S)}

die() { echo "callgrind_peer: $*" >&2; exit 1; }
for t in valgrind curl setsid ss "$PY"; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t (run: tools/install-deps.sh bench)"
done
case "$PEER" in
    uvicorn)  CMD=("$PY" -m uvicorn --host 127.0.0.1 --port "$PORT" --log-level warning
                   --no-access-log "$APP") ;;
    gthread)  CMD=("$PY" -m gunicorn -k gthread -w 1 --threads 4 --keep-alive 60
                   -b "127.0.0.1:$PORT" --log-level warning "$APP") ;;
    *) die "PEER must be uvicorn or gthread" ;;
esac
[ "$N2" -gt "$N1" ] || die "N2 must be larger than N1"
ss -Hltn "sport = :$PORT" | grep -q . && die "port $PORT is in use"
mkdir -p "$OUTDIR"
export PYTHONDONTWRITEBYTECODE=1

. "$HERE/lib.sh"   # group_pids, stop_group (120 s: valgrind is slow to write), wait_answer
VPID=""
trap '[ -n "$VPID" ] && stop_group "$VPID" "$PEER" 120' EXIT
trap 'exit 130' INT TERM

run_one() {   # N -> total Ir of every process of the run
    local n=$1 dir="$OUTDIR/n$1" why sum=0 f c
    mkdir -p "$dir"
    (cd "$HERE/apps" && exec setsid valgrind --tool=callgrind --trace-children=yes \
        --callgrind-out-file="$dir/callgrind.out.%p" "${CMD[@]}" \
        > "$dir/server.log" 2>&1 < /dev/null) &
    VPID=$!
    why=$(START_TIMEOUT=120 wait_answer "$PORT" "$VPID" "Hello, World!") ||
        { tail -20 "$dir/server.log" >&2; die "$PEER under valgrind: $why"; }
    sleep 1
    "$PY" "$HERE/kaclient.py" "$PORT" "$n" "$CONNS" > "$dir/client.txt" 2>&1 ||
        echo "  [problem] client: $(tail -1 "$dir/client.txt")" >&2
    stop_group "$VPID" "$PEER" 120; VPID=""
    for f in "$dir"/callgrind.out.*; do
        c=$(awk '/^summary:/ {print $2} /^totals:/ {print $2; exit}' "$f" | head -1)
        sum=$((sum + ${c:-0}))
    done
    echo "$sum"
}

echo "# $PEER $APP: callgrind, N1=$N1 N2=$N2 CONNS=$CONNS ($(valgrind --version))" | tee "$OUTDIR/report.txt"
a=$(run_one "$N1") || exit 1
b=$(run_one "$N2") || exit 1
echo "$PEER $APP: $(( (b - a) / (N2 - N1) )) instructions per request (user space, all processes)" |
    tee -a "$OUTDIR/report.txt"
