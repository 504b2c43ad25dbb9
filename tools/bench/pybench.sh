#!/usr/bin/env bash
# Python side-by-side benchmark (issue 4): the gateway's Python runtime against gunicorn,
# uWSGI and uvicorn, 2 workers each, serving the same 13-byte "Hello, World!" apps
# (tools/bench/apps/) on loopback.
#
# Method (as bench.sh and the anchors in /work/shared/reference/anchor-baselines.md, PIN=split):
#   * every server (all of its processes) runs under `taskset -c 0`, started with setsid so
#     its PID is its own process group; wrk runs under `taskset -c 1`;
#   * all selected servers are started first, each polled until it answers exactly
#     "Hello, World!" (a case that never does is reported "did not start" and skipped);
#   * WARM s c64 warm-up per server, then ROUNDS rounds; in each round every server gets
#     wrk -t1 -c64 -d$DUR --latency, then wrk -t1 -c1 -d$DUR1 --latency; the server order
#     rotates from round to round (interleaved, so drift hits every server alike);
#   * server CPU = utime+stime (/proc/PID/stat fields 14+15) summed over every process of
#     the server's group, sampled before and after each wrk run, / requests completed;
#   * servers are stopped by PID (SIGTERM), SIGKILL to their own process group only if they
#     do not exit within 15 s. Nothing is ever killed by name.
#
# Usage:  tools/bench/pybench.sh              all cases
#         CASES="gateway_wsgi_w2 uwsgi_http_ka_unix_p2" tools/bench/pybench.sh
#         tools/bench/pybench.sh --list
#         PROFILE=1 tools/bench/pybench.sh    gateway WSGI once under cProfile (needs
#                                             GATEWAY_PY_PROFILE support in the worker)
# Environment: ROUNDS (3) DUR (10) DUR1 (min(5, DUR)) WARM (2) CASES (all) PORT_BASE (18300)
#   START_TIMEOUT (30) GATEWAY (build/gateway) GW_ARGS (extra gateway options)
#   OUTDIR (tools/bench/results/py-<timestamp>) PROFILE (0)
set -u
set +m   # no job control: `setsid cmd &` execs in place, so $! is the server's PID == PGID

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
APPS=$HERE/apps
PY=/usr/bin/python3            # Debian's Python only (has python3-flask, -fastapi, -uvicorn ...)
GUNICORN=/usr/bin/gunicorn     # Debian console script, #!/usr/bin/python3
UWSGI=/usr/bin/uwsgi-core      # Debian modular uWSGI: --plugin python3[,http]
WRK=${WRK:-/usr/bin/wrk}
GATEWAY=${GATEWAY:-$ROOT/build/gateway}

ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10};  DUR=${DUR%s}
DUR1=${DUR1:-$(( DUR < 5 ? DUR : 5 ))}; DUR1=${DUR1%s}
WARM=${WARM:-2}; WARM=${WARM%s}
PORT_BASE=${PORT_BASE:-18300}
START_TIMEOUT=${START_TIMEOUT:-30}
GW_ARGS=${GW_ARGS:-}
PROFILE=${PROFILE:-0}
OUTDIR=${OUTDIR:-$HERE/results/py-$(date +%Y%m%d-%H%M%S)}
SRV_PIN="taskset -c 0"
WRK_PIN="taskset -c 1"
TCK=$(getconf CLK_TCK)
export PYTHONDONTWRITEBYTECODE=1   # keep tools/bench/apps free of __pycache__

die() { echo "pybench: $*" >&2; exit 1; }

# name|port offset|description            (commands: case_cmd below)
CASE_TABLE=(
"gateway_wsgi_w2|1|gateway -w 2, raw WSGI"
"uwsgi_http_ka_unix_p2|2|uWSGI --http router --http-keepalive, 2 workers over a Unix socket"
"uwsgi_httpsocket_p2|3|uWSGI --http-socket, 2 workers, no router (no keep-alive)"
"gunicorn_sync_w2|4|gunicorn sync -w 2, raw WSGI (no keep-alive)"
"gunicorn_gthread_w2t4|5|gunicorn gthread -w 2 --threads 4, raw WSGI"
"gateway_asgi_w2|6|gateway -w 2, raw ASGI"
"uvicorn_w2|7|uvicorn --workers 2 (httptools+uvloop), raw ASGI"
"gunicorn_uvicornworker_w2|8|gunicorn -k uvicorn.workers.UvicornWorker -w 2, raw ASGI"
"flask_gateway_w2|9|Flask under gateway -w 2"
"flask_gunicorn_sync_w2|10|Flask under gunicorn sync -w 2"
"fastapi_gateway_w2|11|FastAPI under gateway -w 2"
"fastapi_uvicorn_w2|12|FastAPI under uvicorn --workers 2 (httptools+uvloop)"
)

if [ "${1:-}" = "--list" ]; then
    for c in "${CASE_TABLE[@]}"; do IFS='|' read -r n o d <<<"$c"; printf '%-26s %s  %s\n' "$n" $((PORT_BASE + o)) "$d"; done
    exit 0
fi

GW_CHDIR=()   # the lead is adding --chdir; the gateway is started from $APPS in any case
"$GATEWAY" --help 2>/dev/null | grep -q -- '--chdir' && GW_CHDIR=(--chdir "$APPS")

# case_cmd NAME PORT -> sets CMD (array): the server command line, run with cwd $APPS
case_cmd() {
    local n=$1 port=$2
    local gw=("$GATEWAY" -w 2 -b "127.0.0.1:$port" --control-socket "$RUNDIR/$n.ctl" --log-level warning "${GW_CHDIR[@]}")
    # shellcheck disable=SC2206
    local gwx=($GW_ARGS)
    local uvi=("$PY" -m uvicorn --app-dir "$APPS" --host 127.0.0.1 --port "$port" --workers 2
               --http httptools --loop uvloop --no-access-log --log-level warning)
    case $n in
    gateway_wsgi_w2)           CMD=("${gw[@]}" "${gwx[@]}" wsgi_hello:app) ;;
    gateway_asgi_w2)           CMD=("${gw[@]}" "${gwx[@]}" asgi_hello:app) ;;
    flask_gateway_w2)          CMD=("${gw[@]}" "${gwx[@]}" flask_hello:app) ;;
    fastapi_gateway_w2)        CMD=("${gw[@]}" "${gwx[@]}" fastapi_hello:app) ;;
    gunicorn_sync_w2)          CMD=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$port" -w 2 -k sync --log-level warning wsgi_hello:app) ;;
    gunicorn_gthread_w2t4)     CMD=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$port" -w 2 -k gthread --threads 4 --log-level warning wsgi_hello:app) ;;
    gunicorn_uvicornworker_w2) CMD=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$port" -w 2 -k uvicorn.workers.UvicornWorker --log-level warning asgi_hello:app) ;;
    flask_gunicorn_sync_w2)    CMD=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$port" -w 2 -k sync --log-level warning flask_hello:app) ;;
    uvicorn_w2)                CMD=("${uvi[@]}" asgi_hello:app) ;;
    fastapi_uvicorn_w2)        CMD=("${uvi[@]}" fastapi_hello:app) ;;
    uwsgi_http_ka_unix_p2)     CMD=("$UWSGI" --plugin python3,http --http "127.0.0.1:$port" --http-keepalive --socket "$RUNDIR/uwsgi_$port.sock"
                                    --master --processes 2 --chdir "$APPS" --wsgi-file wsgi_hello.py --disable-logging --die-on-term) ;;
    uwsgi_httpsocket_p2)       CMD=("$UWSGI" --plugin python3 --http-socket "127.0.0.1:$port"
                                    --master --processes 2 --chdir "$APPS" --wsgi-file wsgi_hello.py --disable-logging --die-on-term) ;;
    *) return 1 ;;
    esac
}

# -- selection -----------------------------------------------------------------------------
declare -A PORT=() DESC=()
NAMES=()
for c in "${CASE_TABLE[@]}"; do
    IFS='|' read -r n o d <<<"$c"
    PORT[$n]=$((PORT_BASE + o)); DESC[$n]=$d
done
if [ "$PROFILE" = 1 ]; then
    NAMES=(gateway_wsgi_w2)
elif [ -n "${CASES:-}" ]; then
    for n in $CASES; do [ -n "${PORT[$n]:-}" ] || die "unknown case '$n' (see --list)"; NAMES+=("$n"); done
else
    for c in "${CASE_TABLE[@]}"; do NAMES+=("${c%%|*}"); done
fi

for t in "$WRK" curl taskset setsid ss "$PY" "$GUNICORN" "$UWSGI"; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t (apt-get install wrk gunicorn python3-uvicorn python3-httptools python3-uvloop uwsgi-core uwsgi-plugin-python3 python3-flask python3-fastapi)"
done
[ -x "$GATEWAY" ] || die "$GATEWAY not built (run: make)"
[ "$(nproc)" -ge 2 ] || echo "pybench: warning: fewer than 2 CPUs; pinning server and wrk apart is impossible" >&2

if [ "$PROFILE" = 1 ] && ! grep -q GATEWAY_PY_PROFILE "$ROOT/workerlib/python/gateway_worker.py"; then
    echo "pybench: PROFILE=1 skipped: workerlib/python/gateway_worker.py does not support GATEWAY_PY_PROFILE (yet)"
    exit 0
fi

port_busy() { ss -Hltn "sport = :$1" | grep -q . ; }
for n in "${NAMES[@]}"; do
    port_busy "${PORT[$n]}" && die "port ${PORT[$n]} ($n) is in use: $(ss -Hltnp "sport = :${PORT[$n]}" | head -3)"
done

RUNDIR=$(mktemp -d /tmp/gwpybench.XXXXXX)
mkdir -p "$OUTDIR/wrk" "$OUTDIR/logs" "$OUTDIR/info"
: > "$OUTDIR/problems.txt"

declare -A PID=()   # case -> pid (== pgid) of a running server
. "$HERE/lib.sh"   # group_pids, grp_ticks, stop_group, wait_answer, start_failed

stop_server() {   # name
    [ -n "${PID[$1]:-}" ] || return 0
    stop_group "${PID[$1]}" "$1"
    unset "PID[$1]"
}

cleanup() {
    local n
    for n in "${!PID[@]}"; do stop_server "$n"; done
    rm -rf "$RUNDIR"
    [ -s "$OUTDIR/problems.txt" ] || rm -f "$OUTDIR/problems.txt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CASES_TSV=$OUTDIR/cases.tsv
printf 'case\tport\tstatus\tkeepalive\tnprocs\tdescription\tnote\n' > "$CASES_TSV"

start_case() {   # name [env...] -> 0 if up
    local name=$1 port=${PORT[$1]} why pgid nprocs ka
    shift
    case_cmd "$name" "$port"
    printf '%q ' $SRV_PIN "${CMD[@]}" > "$OUTDIR/info/$name.cmd"; echo "  (cwd $APPS)" >> "$OUTDIR/info/$name.cmd"
    ( cd "$APPS" && exec env "$@" setsid $SRV_PIN "${CMD[@]}" ) > "$OUTDIR/logs/$name.log" 2>&1 < /dev/null &
    PID[$name]=$!
    if ! why=$(wait_answer "$port" "${PID[$name]}" "Hello, World!"); then
        start_failed "  " "$name" "$OUTDIR/logs/$name.log" "$why"
        stop_server "$name"
        printf '%s\t%s\t%s\t-\t-\t%s\t%s\n' "$name" "$port" "did not start" "${DESC[$name]}" "$why" >> "$CASES_TSV"
        return 1
    fi
    pgid=$(ps -o pgid= -p "${PID[$name]}" | tr -d ' ')
    if [ "$pgid" != "${PID[$name]}" ]; then
        echo "  [fail] $name: pid ${PID[$name]} is not its own process group ($pgid)" | tee -a "$OUTDIR/problems.txt"
        stop_server "$name"; return 1
    fi
    return 0
}

describe_case() {   # after every server had time to boot all of its workers
    local name=$1 port=${PORT[$1]} nprocs ka
    nprocs=$(group_pids "${PID[$name]}" | wc -l)
    ps -o pid,ppid,pgid,psr,rss,args -g "${PID[$name]}" > "$OUTDIR/info/$name.ps"
    curl -si --max-time 2 "http://127.0.0.1:$port/" > "$OUTDIR/info/$name.response" 2>&1
    if curl -sv --max-time 2 "http://127.0.0.1:$port/" "http://127.0.0.1:$port/" 2>&1 | grep -q 'Re-using existing connection' \
       && ! curl -sv --max-time 2 "http://127.0.0.1:$port/" "http://127.0.0.1:$port/" 2>&1 | grep -qE 'Connection died|seems to be dead|Closing connection'; then
        ka=yes; else ka=no; fi
    KA[$name]=$ka
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$port" ok "$ka" "$nprocs" "${DESC[$name]}" "pid ${PID[$name]}" >> "$CASES_TSV"
    printf '  %-26s up: pid %-7s %s processes, keep-alive %s\n' "$name" "${PID[$name]}" "$nprocs" "$ka"
}

# Machine-wide ticks, all CPUs. Task utime+stime leave out irq/softirq time (loopback TCP is
# mostly softirq), so "other" = user+nice+system - server - wrk; softirq is reported on its own.
cpu_busy() { awk '$1=="cpu" {print $2+$3+$4}' /proc/stat; }   # user+nice+system
cpu_sirq() { awk '$1=="cpu" {print $7+$8}' /proc/stat; }      # irq+softirq

RUNS=$OUTDIR/runs.tsv
printf 'case\tmode\tround\trps\tp50_us\tp99_us\trequests\tsockerr\tnon2xx\tcpu_ticks\tcpu_us_per_req\tsrv_cpu_pct\twrk_cpu_pct\tother_cpu_pct\tsoftirq_pct\tnprocs_before\tnprocs_after\talive_after\tkeepalive\n' > "$RUNS"
declare -A KA=()

# run_wrk name mode conns dur tag
run_wrk() {
    local name=$1 mode=$2 c=$3 d=$4 tag=$5 port=${PORT[$1]} pid=${PID[$1]} f g0 g1 b0 b1 i0 i1 t0 t1 wt rc
    local pids0 pids1 np0 np1 alive=yes
    f="$OUTDIR/wrk/$name.$mode.$tag.txt"
    pids0=$(group_pids "$pid" | sort | paste -sd,); np0=$(echo "$pids0" | tr , '\n' | grep -c .)
    "$PY" "$HERE/pysummarize.py" proc-snap > "$RUNDIR/snap0"
    g0=$(grp_ticks "$pid"); b0=$(cpu_busy); i0=$(cpu_sirq); t0=$(date +%s.%N)
    wt=$( { TIMEFORMAT='%3U %3S'; time { timeout -k 5 $((d + 30)) $WRK_PIN "$WRK" -t1 -c"$c" -d"${d}s" --latency \
              "http://127.0.0.1:$port/" > "$f" 2>&1; echo $? > "$RUNDIR/wrk.rc"; }; } 2>&1 )
    g1=$(grp_ticks "$pid"); b1=$(cpu_busy); i1=$(cpu_sirq); t1=$(date +%s.%N)
    "$PY" "$HERE/pysummarize.py" proc-snap > "$RUNDIR/snap1"
    rc=$(cat "$RUNDIR/wrk.rc")
    pids1=$(group_pids "$pid" | sort | paste -sd,); np1=$(echo "$pids1" | tr , '\n' | grep -c .)
    kill -0 "$pid" 2>/dev/null || alive=no
    [ "$rc" = 0 ] || echo "wrk exit status $rc" >> "$f"
    [ "$tag" = warmup ] && return 0
    local rps p50 p99 nreq err non us srvpct wrkpct othpct sirqpct
    read -r rps p50 p99 nreq err non < <("$PY" "$HERE/summarize.py" parse-wrk "$f")
    us=$(awk -v t=$((g1 - g0)) -v n="$nreq" -v k="$TCK" 'BEGIN{ if (n > 0) printf "%.2f", t / k / n * 1e6; else print "NA" }')
    read -r srvpct wrkpct othpct sirqpct < <(awk -v wt="$wt" -v g=$((g1 - g0)) -v b0="$b0" -v b1="$b1" -v i=$((i1 - i0)) -v t0="$t0" -v t1="$t1" -v k="$TCK" 'BEGIN{
        split(wt, w, " "); el = t1 - t0; wrk = w[1] + w[2]; o = (b1 - b0) / k - g / k - wrk; if (o < 0) o = 0;
        printf "%.0f %.0f %.0f %.0f\n", g / k / el * 100, wrk / el * 100, o / el * 100, i / k / el * 100 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$tag" "$rps" "$p50" "$p99" \
        "$nreq" "$err" "$non" "$((g1 - g0))" "$us" "$srvpct" "$wrkpct" "$othpct" "$sirqpct" "$np0" "$np1" "$alive" "${KA[$name]:-?}" >> "$RUNS"
    printf '  %-26s %-3s %s: %8s req/s  p50 %8s us  p99 %8s us  cpu %7s us/req  srv %3s%% wrk %3s%% other %3s%% softirq %3s%%  sockerr %s non2xx %s\n' \
        "$name" "$mode" "$tag" "$rps" "$p50" "$p99" "$us" "$srvpct" "$wrkpct" "$othpct" "$sirqpct" "$err" "$non"
    if [ "${othpct:-0}" -gt 10 ]; then
        echo "$name $mode $tag: other ${othpct}%, top others: $("$PY" "$HERE/pysummarize.py" proc-top "$RUNDIR/snap0" "$RUNDIR/snap1" "$pid" "$d" "$TCK")" >> "$OUTDIR/info/noise.txt"
    fi
    # Servers that close every connection (no keep-alive) make wrk count read errors: expected.
    if { [ "${err:-0}" != 0 ] && [ "${KA[$name]:-}" = yes ]; } || [ "${non:-0}" != 0 ] || [ "$nreq" = 0 ] \
       || [ "$alive" = no ] || [ "$pids0" != "$pids1" ] || [ "$rc" != 0 ]; then
        { echo "== $name $mode $tag: sockerr=$err non2xx=$non requests=$nreq alive=$alive pids $pids0 -> $pids1 wrk_rc=$rc"
          cat "$f"; echo "-- $name log tail:"; tail -20 "$OUTDIR/logs/$name.log"; } >> "$OUTDIR/problems.txt"
        echo "  [problem] $name $mode $tag: see $OUTDIR/problems.txt" >&2
    fi
}

{
    echo "# gateway Python bench $(date -Is)  host=$(hostname) cores=$(nproc) kernel=$(uname -r) CLK_TCK=$TCK"
    echo "# ROUNDS=$ROUNDS DUR=${DUR}s DUR1=${DUR1}s WARM=${WARM}s PROFILE=$PROFILE GW_ARGS='$GW_ARGS' gateway --chdir: $([ ${#GW_CHDIR[@]} -gt 0 ] && echo yes || echo no)"
    echo "# gateway: $GATEWAY ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty'))"
    echo "# $("$PY" -c 'import sys, gunicorn, uvicorn, flask, fastapi; print("python %s gunicorn %s uvicorn %s flask %s fastapi %s" % (sys.version.split()[0], gunicorn.__version__, uvicorn.__version__, flask.__version__, fastapi.__version__))' 2>&1) uwsgi $("$UWSGI" --version 2>/dev/null); $("$WRK" -v 2>&1 | head -1)"
    echo "# cases: ${NAMES[*]}"
    echo "# OUTDIR=$OUTDIR  load: $(cat /proc/loadavg)"
} | tee "$OUTDIR/info/run.txt"

q0=$(cpu_busy); sleep 2; q1=$(cpu_busy)
idle_busy=$(( (q1 - q0) * 100 / (2 * TCK) ))
echo "# machine busy before start: ${idle_busy}% of one core" | tee -a "$OUTDIR/info/run.txt"
[ "$idle_busy" -gt 10 ] && echo "pybench: warning: the machine is not quiet (${idle_busy}% of a core busy); results will be noisy" | tee -a "$OUTDIR/info/run.txt" >&2

# -- PROFILE=1: the gateway WSGI case once, its Python workers under cProfile ------------------
if [ "$PROFILE" = 1 ]; then
    mkdir -p "$OUTDIR/profile"
    echo "profile: gateway_wsgi_w2 with GATEWAY_PY_PROFILE=$OUTDIR/profile"
    start_case gateway_wsgi_w2 "GATEWAY_PY_PROFILE=$OUTDIR/profile" || exit 1
    sleep 1; describe_case gateway_wsgi_w2
    run_wrk gateway_wsgi_w2 c64 64 "$WARM" warmup
    run_wrk gateway_wsgi_w2 c64 64 "$DUR" profile
    stop_server gateway_wsgi_w2   # graceful: workers write their profiles on exit
    shopt -s nullglob
    profs=("$OUTDIR"/profile/* "$OUTDIR"/profile?*)   # GATEWAY_PY_PROFILE as a directory or a prefix
    if [ ${#profs[@]} = 0 ]; then
        echo "profile: no profile file was written under $OUTDIR/profile" | tee -a "$OUTDIR/problems.txt"
        exit 1
    fi
    "$PY" "$HERE/pysummarize.py" profile "${profs[@]}" | tee "$OUTDIR/profile.txt"
    echo "profile files: ${profs[*]}"
    exit 0
fi

# -- start everything, then measure interleaved ---------------------------------------------
echo "starting ${#NAMES[@]} servers (taskset -c 0), cwd $APPS"
UP=()
for n in "${NAMES[@]}"; do start_case "$n" && UP+=("$n"); done
sleep 1   # let every server finish booting all of its workers
for n in "${UP[@]}"; do describe_case "$n"; done
[ ${#UP[@]} -gt 0 ] || die "no server started"

echo "warm-up: ${WARM}s c64 each"
for n in "${UP[@]}"; do run_wrk "$n" c64 64 "$WARM" warmup; done

for r in $(seq 1 "$ROUNDS"); do
    k=$(( (r - 1) % ${#UP[@]} ))
    order=("${UP[@]:$k}" "${UP[@]:0:$k}")   # rotate: each round starts one server later
    echo "round $r/$ROUNDS"
    for n in "${order[@]}"; do
        if [ -z "${PID[$n]:-}" ] || ! kill -0 "${PID[$n]}" 2>/dev/null; then
            echo "  [problem] $n is gone" | tee -a "$OUTDIR/problems.txt"; continue
        fi
        run_wrk "$n" c64 64 "$DUR" "r$r"
        run_wrk "$n" c1 1 "$DUR1" "r$r"
    done
done

for n in "${UP[@]}"; do stop_server "$n"; done
echo
"$PY" "$HERE/pysummarize.py" table "$RUNS" "$CASES_TSV" | tee "$OUTDIR/summary.txt"
if [ -s "$OUTDIR/problems.txt" ]; then
    echo; echo "PROBLEMS were recorded: $OUTDIR/problems.txt" | tee -a "$OUTDIR/summary.txt"
fi
[ -s "$OUTDIR/info/noise.txt" ] && { echo "other processes were busy during some runs (top consumers per run):"; sed 's/^/  /' "$OUTDIR/info/noise.txt"; } | tee -a "$OUTDIR/summary.txt"
echo "raw wrk output: $OUTDIR/wrk/   per-run table: $RUNS   server logs: $OUTDIR/logs/"
