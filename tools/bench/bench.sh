#!/usr/bin/env bash
# Side-by-side benchmark: gateway (hello app) against nginx `return 200`, on loopback.
#
# Method (same as the anchors in /work/shared/reference/anchor-baselines.md, PIN=split):
#   * each server runs under `taskset -c 0`, started through setsid so its PID is its
#     own process group; wrk runs under `taskset -c 1`;
#   * warm-up, then ROUNDS alternating rounds; per server per round:
#     wrk -t1 -c64 -d${DUR64}s --latency, then wrk -t1 -c1 -d${DUR1}s --latency;
#   * server CPU = utime+stime (/proc/PID/stat fields 14+15) summed over every process in
#     the server's process group, sampled before and after each wrk run, / requests;
#   * server RSS = sum of Rss (/proc/PID/smaps_rollup) over the group after each run.
# Servers are stopped by PID (SIGTERM), SIGKILL to their own process group only if they
# do not exit in time. Nothing is ever killed by name.
#
# Environment: ROUNDS (3) DUR64 (10) DUR1 (5) WARM (2) WORKERS (1) GW_PORT (18201)
#   NGINX_PORT (18202) GATEWAY (build/gateway) APP (build/examples/hello.so)
#   GW_ARGS (extra gateway options) OUTDIR (tools/bench/results/<timestamp>)
set -u
set +m   # no job control: `setsid cmd &` execs in place, so $! is the server's PID == PGID

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
WRK=${WRK:-/usr/bin/wrk}
NGINX=${NGINX:-/usr/sbin/nginx}
GATEWAY=${GATEWAY:-$ROOT/build/gateway}
APP=${APP:-$ROOT/build/examples/hello.so}

ROUNDS=${ROUNDS:-3}
DUR64=${DUR64:-10}; DUR64=${DUR64%s}
DUR1=${DUR1:-5};    DUR1=${DUR1%s}
WARM=${WARM:-2};    WARM=${WARM%s}
WORKERS=${WORKERS:-1}
GW_PORT=${GW_PORT:-18201}
NGINX_PORT=${NGINX_PORT:-18202}
GW_ARGS=${GW_ARGS:-}
OUTDIR=${OUTDIR:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
SRV_PIN="taskset -c 0"
WRK_PIN="taskset -c 1"
TCK=$(getconf CLK_TCK)

die() { echo "bench: $*" >&2; exit 1; }

for t in "$WRK" "$NGINX" curl taskset setsid ss "$PY"; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t (run: tools/install-deps.sh bench)"
done
[ -x "$GATEWAY" ] || die "$GATEWAY not built (run: make all)"
[ -f "$APP" ] || die "$APP not built (run: make all)"
[ "$(nproc)" -ge 2 ] || echo "bench: warning: fewer than 2 CPUs; pinning server and wrk apart is impossible" >&2

port_busy() {   # something listens on the port, or answers on it
    ss -Hltn "sport = :$1" | grep -q . || curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null
}
for p in "$GW_PORT" "$NGINX_PORT"; do
    port_busy "$p" && die "port $p is in use: $(ss -Hltnp "sport = :$p" | head -3)"
done

RUNDIR=$(mktemp -d /tmp/gwbench.XXXXXX)
mkdir -p "$OUTDIR/wrk" "$OUTDIR/logs" "$OUTDIR/info"

declare -A PID=()   # server name -> pid (== pgid)

. "$HERE/lib.sh"   # group_pids, grp_ticks, stop_group, wait_answer

stop_server() {   # name
    [ -n "${PID[$1]:-}" ] || return 0
    stop_group "${PID[$1]}" "$1"
    unset "PID[$1]"
}

cleanup() {
    local n
    for n in "${!PID[@]}"; do stop_server "$n"; done
    rm -rf "$RUNDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {   # name port cmd...
    local name=$1 port=$2; shift 2
    echo "$SRV_PIN $*" > "$OUTDIR/info/$name.cmd"
    setsid $SRV_PIN "$@" > "$OUTDIR/logs/$name.log" 2>&1 < /dev/null &
    PID[$name]=$!
    local why
    if ! why=$(wait_answer "$port" "${PID[$name]}" "Hello, World!"); then
        echo "bench: $name on port $port: $why; log tail:" >&2
        tail -20 "$OUTDIR/logs/$name.log" >&2
        exit 1
    fi
    local pgid; pgid=$(ps -o pgid= -p "${PID[$name]}" | tr -d ' ')
    [ "$pgid" = "${PID[$name]}" ] || die "$name: pid ${PID[$name]} is not its own process group ($pgid)"
}

cpu_busy() { awk '$1=="cpu" {print $2+$3+$4+$7+$8}' /proc/stat; }   # user+nice+system+irq+softirq, all CPUs
steal_ticks() { awk '$1=="cpu" {print $9}' /proc/stat; }   # hypervisor steal, all CPUs

grp_rss_kb() {   # Rss (kB) summed over the group (smaps_rollup, else VmRSS)
    local t=0 p v
    for p in $(group_pids "$1"); do
        v=$(awk '$1=="Rss:" {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
        [ -n "$v" ] || v=$(awk '$1=="VmRSS:" {print $2}' "/proc/$p/status" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# run_wrk name mode conns dur tag -> appends a row to runs.tsv (unless tag is warmup)
RUNS="$OUTDIR/runs.tsv"
printf 'server\tmode\tround\trps\tp50_us\tp99_us\trequests\tsockerr\tnon2xx\tcpu_ticks\tcpu_us_per_req\trss_kb\tnprocs_before\tnprocs_after\talive_after\tsteal_pct\tsrv_cpu_pct\twrk_cpu_pct\tother_cpu_pct\n' > "$RUNS"
run_wrk() {
    local name=$1 mode=$2 c=$3 d=$4 tag=$5 port pid f g0 g1 s0 s1 np0 np1 rc steal srvpct pids0 pids1 wt b0 b1 t0 t1 wrkpct othpct
    pid=${PID[$name]}
    [ "$name" = gateway ] && port=$GW_PORT || port=$NGINX_PORT
    f="$OUTDIR/wrk/$name.$mode.$tag.txt"
    pids0=$(group_pids "$pid" | sort | paste -sd,); np0=$(echo "$pids0" | tr , '\n' | grep -c .)
    "$PY" "$HERE/summarize.py" proc-snap > "$RUNDIR/snap0"
    g0=$(grp_ticks "$pid"); s0=$(steal_ticks); b0=$(cpu_busy); t0=$(date +%s.%N)
    wt=$( { TIMEFORMAT='%3U %3S'; time { timeout -k 5 $((d + 30)) $WRK_PIN "$WRK" -t1 -c"$c" -d"${d}s" --latency \
              "http://127.0.0.1:$port/" > "$f" 2>&1; echo $? > "$RUNDIR/wrk.rc"; }; } 2>&1 )
    rc=$(cat "$RUNDIR/wrk.rc")
    g1=$(grp_ticks "$pid"); s1=$(steal_ticks); b1=$(cpu_busy); t1=$(date +%s.%N)
    "$PY" "$HERE/summarize.py" proc-snap > "$RUNDIR/snap1"
    pids1=$(group_pids "$pid" | sort | paste -sd,); np1=$(echo "$pids1" | tr , '\n' | grep -c .)
    local rss alive=yes; rss=$(grp_rss_kb "$pid")
    kill -0 "$pid" 2>/dev/null || alive=no
    [ $rc -eq 0 ] || echo "wrk exit status $rc" >> "$f"
    [ "$tag" = warmup ] && return 0
    srvpct=$(awk -v t=$((g1 - g0)) -v d="$d" -v k="$TCK" 'BEGIN{printf "%.0f", t / k / d * 100}')
    # wrk's own CPU and "other" CPU (machine busy time that is neither the server nor wrk),
    # both in % of one core over the run: other > ~10% means the numbers are polluted.
    read -r wrkpct othpct < <(awk -v wt="$wt" -v g=$((g1 - g0)) -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" -v k="$TCK" 'BEGIN{
        split(wt, w, " "); el = t1 - t0; wrk = w[1] + w[2]; o = (b1 - b0) / k - g / k - wrk; if (o < 0) o = 0;
        printf "%.0f %.0f\n", wrk / el * 100, o / el * 100 }')
    steal=$(awk -v a="$s0" -v b="$s1" -v d="$d" -v k="$TCK" -v n="$(nproc)" 'BEGIN{printf "%.1f", (b - a) / k / d / n * 100}')
    "$PY" "$HERE/summarize.py" parse-wrk "$f" | {
        read -r rps p50 p99 nreq err non
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$tag" \
            "$rps" "$p50" "$p99" "$nreq" "$err" "$non" "$((g1 - g0))" \
            "$(awk -v t=$((g1 - g0)) -v n="$nreq" -v k="$TCK" 'BEGIN{ if (n > 0) printf "%.2f", t / k / n * 1e6; else print "NA" }')" \
            "$rss" "$np0" "$np1" "$alive" "$steal" "$srvpct" "$wrkpct" "$othpct" >> "$RUNS"
        if [ "${othpct:-0}" -gt 10 ]; then
            echo "$name $mode $tag: other ${othpct}%, top others: $("$PY" "$HERE/summarize.py" proc-top "$RUNDIR/snap0" "$RUNDIR/snap1" "$pid" "$d" "$TCK")" >> "$OUTDIR/info/noise.txt"
        fi
        printf '  %-7s %-3s %s: %9s req/s  p50 %7s us  p99 %7s us  cpu %6s us/req (%s%% core)  rss %6s kB  sockerr %s non2xx %s procs %s->%s wrk %s%% other %s%% steal %s%%\n' \
            "$name" "$mode" "$tag" "$rps" "$p50" "$p99" \
            "$(awk -v t=$((g1 - g0)) -v n="$nreq" -v k="$TCK" 'BEGIN{ if (n > 0) printf "%.2f", t / k / n * 1e6; else print "NA" }')" "$srvpct" \
            "$rss" "$err" "$non" "$np0" "$np1" "$wrkpct" "$othpct" "$steal"
        if [ "${err:-0}" != 0 ] || [ "${non:-0}" != 0 ] || [ "$nreq" = 0 ] || [ "$alive" = no ] || [ "$pids0" != "$pids1" ] || [ "$rc" != 0 ]; then
            { echo "== $name $mode $tag: sockerr=$err non2xx=$non requests=$nreq alive=$alive pids $pids0 -> $pids1 wrk_rc=$rc"
              cat "$f"; echo "-- $name log tail:"; tail -20 "$OUTDIR/logs/$name.log"; } >> "$OUTDIR/problems.txt"
            echo "  [problem] see $OUTDIR/problems.txt" >&2
        fi
    }
}

{
    echo "# gateway bench $(date -Is)  host=$(hostname) cores=$(nproc) kernel=$(uname -r) CLK_TCK=$TCK"
    echo "# ROUNDS=$ROUNDS DUR64=${DUR64}s DUR1=${DUR1}s WARM=${WARM}s WORKERS=$WORKERS GW_ARGS='$GW_ARGS' load: $(cat /proc/loadavg)"
    echo "# gateway: $GATEWAY ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')); nginx: $("$NGINX" -v 2>&1); $("$WRK" -v 2>&1 | head -1)"
    echo "# OUTDIR=$OUTDIR"
} | tee "$OUTDIR/info/run.txt"

# Is the machine quiet? (busy CPU over 2 s before anything of ours runs)
q0=$(cpu_busy); sleep 2; q1=$(cpu_busy)
idle_busy=$(( (q1 - q0) * 100 / (2 * TCK) ))
echo "# machine busy before start: ${idle_busy}% of one core" | tee -a "$OUTDIR/info/run.txt"
[ "$idle_busy" -gt 10 ] && echo "bench: warning: the machine is not quiet (${idle_busy}% of a core busy); results will be noisy" | tee -a "$OUTDIR/info/run.txt" >&2

mkdir -p "$RUNDIR/nginx"
sed -e "s#@PORT@#$NGINX_PORT#" -e "s#@RUNDIR@#$RUNDIR/nginx#" "$HERE/nginx.conf" > "$RUNDIR/nginx/nginx.conf"
cp "$RUNDIR/nginx/nginx.conf" "$OUTDIR/info/nginx.conf"

# shellcheck disable=SC2086
start_server gateway "$GW_PORT" "$GATEWAY" -w "$WORKERS" -b "127.0.0.1:$GW_PORT" $GW_ARGS "$APP" --log-level warning
start_server nginx "$NGINX_PORT" "$NGINX" -p "$RUNDIR/nginx" -e "$RUNDIR/nginx/err.log" -c "$RUNDIR/nginx/nginx.conf"
sleep 1   # let workers finish booting
for n in gateway nginx; do
    ps -o pid,ppid,pgid,psr,rss,args -g "${PID[$n]}" > "$OUTDIR/info/$n.ps"
    port=$([ $n = gateway ] && echo "$GW_PORT" || echo "$NGINX_PORT")
    curl -si --max-time 2 "http://127.0.0.1:$port/" > "$OUTDIR/info/$n.response" 2>&1
    echo "  $n up: pid ${PID[$n]}, $(group_pids "${PID[$n]}" | wc -l) processes, idle rss $(grp_rss_kb "${PID[$n]}") kB"
done

echo "warm-up: ${WARM}s c64 each"
for n in gateway nginx; do run_wrk "$n" c64 64 "$WARM" warmup; done

for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="gateway nginx"; else order="nginx gateway"; fi
    echo "round $r ($order)"
    for n in $order; do
        [ -n "${PID[$n]:-}" ] && kill -0 "${PID[$n]}" 2>/dev/null || { echo "  [problem] $n is gone" | tee -a "$OUTDIR/problems.txt"; continue; }
        run_wrk "$n" c64 64 "$DUR64" "r$r"
        run_wrk "$n" c1 1 "$DUR1" "r$r"
    done
done

for n in gateway nginx; do stop_server "$n"; done
echo
"$PY" "$HERE/summarize.py" table "$RUNS" | tee "$OUTDIR/summary.txt"
if [ -s "$OUTDIR/problems.txt" ]; then
    echo; echo "PROBLEMS were recorded: $OUTDIR/problems.txt" | tee -a "$OUTDIR/summary.txt"
fi
[ -s "$OUTDIR/info/noise.txt" ] && { echo "other processes were busy during some runs (top consumers per run):"; sed 's/^/  /' "$OUTDIR/info/noise.txt"; } | tee -a "$OUTDIR/summary.txt"
gwlog_lines=$(grep -vc '^$' "$OUTDIR/logs/gateway.log" 2>/dev/null || true)
[ "${gwlog_lines:-0}" -gt 0 ] && echo "gateway log (warning and above): $gwlog_lines lines in $OUTDIR/logs/gateway.log"
echo "raw wrk output: $OUTDIR/wrk/   per-run table: $RUNS"
