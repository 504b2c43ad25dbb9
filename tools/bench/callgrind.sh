#!/usr/bin/env bash
# Instructions per request for the gateway's front (master) and its worker, under callgrind.
#
# How: the gateway runs under `valgrind --tool=callgrind --callgrind-out-file=...%p`.
# Workers are fork()ed without exec, and valgrind always follows fork (--trace-children is
# only about exec, so it is not needed); each process writes its own callgrind.out.<pid>.
# The master is the pid we started (valgrind runs in-process); every other file is a worker.
# A forked child inherits the parent's counters at fork time, and every process pays its
# start-up and shutdown, so one run alone cannot give a per-request figure. Instead the
# gateway is run twice, with N1 and N2 keep-alive requests (kaclient.py, CONNS connections),
# and per request = (Ir(N2 run) - Ir(N1 run)) / (N2 - N1), per process kind. The same
# difference is taken per function (self and inclusive cost, from callgrind_annotate).
#
# Environment: N1 (2000) N2 (12000) CONNS (1) WORKERS (1) PORT (18211)
#   GATEWAY (build/gateway) APP (build/examples/hello.so, or a Python module:var with
#   GW_ARGS="--chdir DIR"; the Python runtime is exec'd, so VG_ARGS=--trace-children=yes
#   is needed to follow it) GW_ARGS VG_ARGS TOP (15)
#   OUTDIR (tools/bench/results/callgrind-<timestamp>)
set -u
set +m   # no job control: `setsid cmd &` execs in place, so $! is the valgrind/master pid

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
GATEWAY=${GATEWAY:-$ROOT/build/gateway}
APP=${APP:-$ROOT/build/examples/hello.so}
N1=${N1:-2000}
N2=${N2:-12000}
CONNS=${CONNS:-1}
WORKERS=${WORKERS:-1}
PORT=${PORT:-18211}
GW_ARGS=${GW_ARGS:-}
VG_ARGS=${VG_ARGS:-}
TOP=${TOP:-15}
OUTDIR=${OUTDIR:-$HERE/results/callgrind-$(date +%Y%m%d-%H%M%S)}

die() { echo "callgrind: $*" >&2; exit 1; }
for t in valgrind callgrind_annotate curl ss setsid "$PY"; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t (run: tools/install-deps.sh bench)"
done
[ -x "$GATEWAY" ] || die "build first: make all"
case "$APP" in *.so) [ -f "$APP" ] || die "no $APP (build first: make all)" ;; esac
[ "$N2" -gt "$N1" ] || die "N2 must be larger than N1"
ss -Hltn "sport = :$PORT" | grep -q . && die "port $PORT is in use"
mkdir -p "$OUTDIR"

VPID=""
group_pids() { ps -eo pid=,pgid= | awk -v g="$1" '$2==g {print $1}'; }
stop_group() {   # SIGTERM to the master, wait (valgrind is slow to dump), SIGKILL group if needed
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 1200); do   # up to 120 s
        [ -z "$(group_pids "$pid")" ] && break
        sleep 0.1
    done
    if [ -n "$(group_pids "$pid")" ]; then
        echo "callgrind: [warn] group $pid still alive 120 s after SIGTERM; SIGKILL to group $pid" >&2
        kill -KILL -- "-$pid" 2>/dev/null
        sleep 0.5
    fi
    wait "$pid" 2>/dev/null
    echo "exit status $? after SIGTERM"
}
cleanup() { [ -n "$VPID" ] && stop_group "$VPID" > /dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

run_one() {   # N -> dir with callgrind.out.<pid> files, master pid in $dir/master.pid
    local n=$1 dir="$OUTDIR/n$1" i body
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    setsid valgrind --tool=callgrind $VG_ARGS --callgrind-out-file="$dir/callgrind.out.%p" \
        "$GATEWAY" -w "$WORKERS" -b "127.0.0.1:$PORT" $GW_ARGS "$APP" --log-level warning \
        > "$dir/gateway.log" 2>&1 < /dev/null &
    VPID=$!
    echo "$VPID" > "$dir/master.pid"
    for i in $(seq 1 600); do   # up to 120 s; only refused connections are retried
        body=$(curl -s --max-time 60 "http://127.0.0.1:$PORT/" 2>/dev/null) && break
        sleep 0.2
    done
    [ "$body" = "Hello, World!" ] || { tail -20 "$dir/gateway.log" >&2; die "gateway under valgrind did not answer"; }
    sleep 1
    ps -o pid,ppid,pgid,args -g "$VPID" > "$dir/ps.txt"
    echo "  N=$n: master pid $VPID, $(group_pids "$VPID" | wc -l) processes; sending $n requests on $CONNS keep-alive connection(s)"
    "$PY" "$HERE/kaclient.py" "$PORT" "$n" "$CONNS" | tee "$dir/client.txt" | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || echo "  [problem] client reported errors (see $dir/client.txt, $dir/gateway.log)"
    stop_group "$VPID" > "$dir/exit.txt"
    VPID=""
    for f in "$dir"/callgrind.out.*; do
        callgrind_annotate --auto=no --threshold=100 "$f" > "$f.self.txt" 2>/dev/null
        callgrind_annotate --auto=no --threshold=100 --inclusive=yes "$f" > "$f.incl.txt" 2>/dev/null
    done
}

totals() { awk '/^totals:/ {print $2; exit} /^summary:/ {s=$2} END{ if (s) print s }' "$1" | head -1; }
# role file: the master's file, or the worker file (the one other file; warns if several)
pick() {
    local dir=$1 role=$2 mp f; mp=$(cat "$dir/master.pid")
    if [ "$role" = front ]; then echo "$dir/callgrind.out.$mp"; return; fi
    local ws=()
    for f in "$dir"/callgrind.out.*; do
        case "$f" in *.txt) continue ;; "$dir/callgrind.out.$mp") continue ;; esac
        ws+=("$f")
    done
    [ "${#ws[@]}" -eq 1 ] || echo "callgrind: [note] $dir has ${#ws[@]} worker files (${ws[*]##*/}); using the largest" >&2
    ls -S "${ws[@]}" 2>/dev/null | head -1
}

{
    echo "# gateway callgrind $(date -Is)  N1=$N1 N2=$N2 CONNS=$CONNS WORKERS=$WORKERS GW_ARGS='$GW_ARGS'"
    echo "# $(valgrind --version); gateway $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')"
} | tee "$OUTDIR/run.txt"
run_one "$N1"
run_one "$N2"

# Requests actually served in each run: kaclient's ok count + the one readiness request.
r1=$(( $(sed -n 's/.*ok=\([0-9]*\).*/\1/p' "$OUTDIR/n$N1/client.txt") + 1 ))
r2=$(( $(sed -n 's/.*ok=\([0-9]*\).*/\1/p' "$OUTDIR/n$N2/client.txt") + 1 ))
dn=$((r2 - r1))
REPORT="$OUTDIR/report.txt"
{
    echo
    echo "Instructions per request (Ir), (run with $r2 requests - run with $r1) / $dn; $CONNS keep-alive connection(s)"
    printf '%-7s %16s %16s %12s\n' process "Ir ($r1 req)" "Ir ($r2 req)" "Ir/request"
    sum=0
    for role in front worker; do
        a=$(pick "$OUTDIR/n$N1" $role); b=$(pick "$OUTDIR/n$N2" $role)
        ta=$(totals "$a"); tb=$(totals "$b")
        per=$(( (tb - ta) / dn )); sum=$((sum + per))
        printf '%-7s %16s %16s %12s\n' "$role" "$ta" "$tb" "$per"
    done
    printf '%-7s %16s %16s %12s\n' total "" "" "$sum"
    for role in front worker; do
        a=$(pick "$OUTDIR/n$N1" $role); b=$(pick "$OUTDIR/n$N2" $role)
        echo
        echo "== $role: top $TOP functions by SELF Ir per request"
        "$PY" "$HERE/summarize.py" callgrind-top "$a.self.txt" "$b.self.txt" "$dn" "$TOP"
        echo
        echo "== $role: top $TOP functions by INCLUSIVE Ir per request"
        "$PY" "$HERE/summarize.py" callgrind-top "$a.incl.txt" "$b.incl.txt" "$dn" "$TOP"
    done
} | tee "$REPORT"
echo
echo "raw callgrind files: $OUTDIR/n$N1 $OUTDIR/n$N2 (open with callgrind_annotate or kcachegrind); report: $REPORT"
