#!/usr/bin/env bash
# Memory with preload (issue 4): total PSS across the master and 4 workers for an app that
# builds about 200 MB of small Python objects at import (apps/mem_app.py, MEM_KIND=objects),
# under gunicorn -w 4 sync with and without --preload, and under the gateway -w 4 without
# --preload, with --preload (zygote) and with --preload --ksm.
#
# Method (as /work/shared/bench-anchors/mem_preload.sh): for each case start the server with
# setsid (its PID is its process group), wait until all 4 workers have booted and the data is
# built, sum Rss, Pss and USS (Private_Clean + Private_Dirty) from /proc/PID/smaps_rollup over
# every process of the group (gateway: the C master, the zygote if any, the workers), send
# NREQ requests (CONC concurrent, a new connection each; every request reads a rotating 1/64
# of the data, so each worker has read all of it after 64 requests), measure again, stop by
# PID (SIGTERM; SIGKILL to that process group only if it does not exit). Nothing is killed by
# name. Servers are not pinned.
#
# --ksm cases: KSM is switched on for the measurement (run=1, pages_to_scan=$KSM_PAGES,
# sleep_millisecs=$KSM_SLEEP); before each measurement the script waits until
# /sys/kernel/mm/ksm/pages_sharing stops growing (at most KSM_WAIT s). The previous KSM
# settings are restored on exit.
#
# Usage:  tools/bench/pymem.sh [CASE ...]      (no argument: every case)
#         tools/bench/pymem.sh --list
# Environment: NREQ (1000) CONC (4) MEM_KIND (objects) MEM_TOUCH (1) MEM_PORT (18341)
#   BOOT_TIMEOUT (180) KSM_WAIT (180) KSM_PAGES (5000) KSM_SLEEP (10) GATEWAY (build/gateway)
#   OUTDIR (tools/bench/results/mem-<timestamp>)
set -u
set +m   # no job control: `setsid cmd &` execs in place, so $! is the server's PID == PGID

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
APPS=$HERE/apps
PY=/usr/bin/python3
GUNICORN=/usr/bin/gunicorn
GATEWAY=${GATEWAY:-$ROOT/build/gateway}
GATEWAYCTL=${GATEWAYCTL:-$(dirname "$GATEWAY")/gatewayctl}
NREQ=${NREQ:-1000}
CONC=${CONC:-4}
MEM_KIND=${MEM_KIND:-objects}
MEM_TOUCH=${MEM_TOUCH:-1}
PORT=${MEM_PORT:-18341}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}
KSM_WAIT=${KSM_WAIT:-180}
KSM_PAGES=${KSM_PAGES:-5000}
KSM_SLEEP=${KSM_SLEEP:-10}
OUTDIR=${OUTDIR:-$HERE/results/mem-$(date +%Y%m%d-%H%M%S)}
KSM=/sys/kernel/mm/ksm
export PYTHONDONTWRITEBYTECODE=1 MEM_KIND MEM_TOUCH   # the app reads MEM_KIND and MEM_TOUCH

die() { echo "pymem: $*" >&2; exit 1; }

# name|server|preload|ksm|description
CASE_TABLE=(
"gunicorn_nopreload|gunicorn|0|0|gunicorn -w 4 -k sync"
"gunicorn_preload|gunicorn|1|0|gunicorn -w 4 -k sync --preload"
"gateway_nopreload|gateway|0|0|gateway -w 4"
"gateway_preload|gateway|1|0|gateway -w 4 --preload (zygote)"
"gateway_preload_ksm|gateway|1|1|gateway -w 4 --preload --ksm"
)
if [ "${1:-}" = "--list" ]; then
    for c in "${CASE_TABLE[@]}"; do IFS='|' read -r n _ _ _ d <<<"$c"; printf '%-22s %s\n' "$n" "$d"; done
    exit 0
fi
SELECTED=("$@")
for s in "${SELECTED[@]}"; do
    printf '%s\n' "${CASE_TABLE[@]}" | grep -q "^$s|" || die "unknown case '$s' (see --list)"
done

for t in "$PY" "$GUNICORN" setsid ss; do command -v "$t" >/dev/null 2>&1 || die "missing $t"; done
[ -x "$GATEWAY" ] || die "$GATEWAY not built (run: make)"
ss -Hltn "sport = :$PORT" | grep -q . && die "port $PORT is in use"

GW_HELP=$("$GATEWAY" --help 2>&1)
GW_CHDIR=(); grep -q -- '--chdir' <<<"$GW_HELP" && GW_CHDIR=(--chdir "$APPS")
HAVE_KSM_FLAG=0; grep -q -- '--ksm' <<<"$GW_HELP" && HAVE_KSM_FLAG=1

RUNDIR=$(mktemp -d /tmp/gwpymem.XXXXXX)
mkdir -p "$OUTDIR"

SERVER_PID=""
KSM_SAVED=""   # "run pages_to_scan sleep_millisecs" before we touched them
. "$HERE/lib.sh"   # group_pids, stop_group
stop_server() {   # pid (30 s: a 200 MB heap takes a while to exit)
    stop_group "$1" "server $1" 30
    SERVER_PID=""
}
ksm_restore() {
    [ -n "$KSM_SAVED" ] || return 0
    local run pages sleepms
    read -r run pages sleepms <<<"$KSM_SAVED"
    echo "$pages" > "$KSM/pages_to_scan"; echo "$sleepms" > "$KSM/sleep_millisecs"; echo "$run" > "$KSM/run"
    echo "  KSM settings restored: run=$run pages_to_scan=$pages sleep_millisecs=$sleepms"
    KSM_SAVED=""
}
cleanup() {
    [ -n "$SERVER_PID" ] && stop_server "$SERVER_PID"
    ksm_restore
    rm -rf "$RUNDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Client: exactly N GET requests, C threads, a new connection each; per-worker counts.
cat > "$RUNDIR/client.py" <<'EOF'
import collections, http.client, sys, threading
port, total, conc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lock, served, todo, errors = threading.Lock(), collections.Counter(), [total], [0]
def run():
    while True:
        with lock:
            if todo[0] <= 0:
                return
            todo[0] -= 1
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            ok = r.status == 200
            pid = r.getheader("X-Worker-Pid")
            c.close()
            with lock:
                if ok:
                    served[pid] += 1
                else:
                    errors[0] += 1
        except Exception:
            with lock:
                errors[0] += 1
ts = [threading.Thread(target=run) for _ in range(conc)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("served=%d errors=%d per_worker=%s" % (sum(served.values()), errors[0],
      ",".join("%s:%d" % kv for kv in sorted(served.items()))))
EOF

# measure PGID LABEL FILE -> per-process lines appended to FILE; prints "rss pss uss ksm" (MiB)
measure() {
    local pgid=$1 label=$2 f=$3 p
    : > "$RUNDIR/m.tmp"
    for p in $(group_pids "$pgid"); do
        awk -v pid="$p" -v master="$pgid" -v comm="$(cat "/proc/$p/comm" 2>/dev/null)" '
            /^Rss:/ {rss=$2} /^Pss:/ {pss=$2} /^Private_Clean:/ {pc=$2} /^Private_Dirty:/ {pd=$2}
            /^Shared_Clean:/ {sc=$2} /^Shared_Dirty:/ {sd=$2} /^KSM:/ {ksm=$2}
            END { if (rss == "") exit;
                  printf "%s %s %s %d %d %d %d %d %d\n", pid, (pid==master?"master":"child"), comm, rss, pss, pc+pd, sc+sd, pd, ksm }' \
            "/proc/$p/smaps_rollup" 2>/dev/null >> "$RUNDIR/m.tmp"
    done
    { echo "# $label  (kB)  pid role comm rss pss uss shared private_dirty ksm"; cat "$RUNDIR/m.tmp"; } >> "$f"
    awk '{r+=$4; p+=$5; u+=$6; k+=$9} END {printf "%.0f %.0f %.0f %.0f\n", r/1024, p/1024, u/1024, k/1024}' "$RUNDIR/m.tmp"
}

# ready NAME SERVER PRELOAD LOG -> 0 when all 4 workers are booted and the data is built
ready() {
    local name=$1 server=$2 preload=$3 log=$4 want=4 i n nb
    [ "$preload" = 1 ] && want=1
    for i in $(seq 1 $((BOOT_TIMEOUT * 10))); do
        [ -z "$(group_pids "$SERVER_PID")" ] && { WHY="exited: $(grep -m1 -iE 'error|not supported|unknown|invalid|unrecognized|gateway:' "$log")"; return 1; }
        n=$(grep -c 'mem_app ready' "$log")
        if [ "$n" -ge "$want" ] && ss -Hltn "sport = :$PORT" | grep -q LISTEN; then
            if [ "$server" = gunicorn ]; then
                nb=$(grep -c 'Booting worker' "$log")
            else
                nb=$("$GATEWAYCTL" -s "$RUNDIR/gw.ctl" --json status 2>/dev/null | "$PY" -c \
                     'import json, sys; print(sum(w["state"] == "ready" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null)
            fi
            [ "${nb:-0}" -ge 4 ] && return 0
        fi
        sleep 0.1
    done
    WHY="not ready after ${BOOT_TIMEOUT} s"
    return 1
}

ksm_on() {
    [ -w "$KSM/run" ] || { WHY="not available: $KSM/run is not writable"; return 1; }
    [ -n "$KSM_SAVED" ] || KSM_SAVED="$(cat "$KSM/run") $(cat "$KSM/pages_to_scan") $(cat "$KSM/sleep_millisecs")"
    echo "$KSM_PAGES" > "$KSM/pages_to_scan" && echo "$KSM_SLEEP" > "$KSM/sleep_millisecs" && echo 1 > "$KSM/run" \
        || { WHY="not available: cannot write $KSM settings"; return 1; }
    echo "  KSM on: run=1 pages_to_scan=$KSM_PAGES sleep_millisecs=$KSM_SLEEP (saved: $KSM_SAVED)"
}
ksm_settle() {   # wait until two more full scans are done and pages_sharing stops growing
    local t0 fs0 prev cur stable=0 i
    t0=$(date +%s); fs0=$(cat "$KSM/full_scans"); prev=$(cat "$KSM/pages_sharing")
    while [ $(( $(date +%s) - t0 )) -lt "$KSM_WAIT" ]; do
        sleep 2
        cur=$(cat "$KSM/pages_sharing")
        if [ $(( $(cat "$KSM/full_scans") - fs0 )) -ge 2 ] && [ $(( cur - prev )) -le $(( prev / 100 )) ]; then
            stable=$((stable + 1)); [ $stable -ge 3 ] && break
        else
            stable=0
        fi
        prev=$cur
    done
    echo "  KSM settled after $(( $(date +%s) - t0 )) s: pages_sharing=$(cat "$KSM/pages_sharing") pages_shared=$(cat "$KSM/pages_shared") full_scans=$(( $(cat "$KSM/full_scans") - fs0 ))$([ $stable -ge 3 ] || echo ' (NOT settled: KSM_WAIT reached)')"
}

TSV=$OUTDIR/mem.tsv
printf 'case\tstatus\tnprocs\timports\trss_idle\tpss_idle\tuss_idle\tksm_idle\trss_after\tpss_after\tuss_after\tksm_after\tclient\n' > "$TSV"
{
    echo "# pymem $(date -Is) host=$(hostname) kernel=$(uname -r) MEM_KIND=$MEM_KIND MEM_TOUCH=$MEM_TOUCH NREQ=$NREQ CONC=$CONC"
    echo "# gateway: $GATEWAY ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty')) --chdir: $([ ${#GW_CHDIR[@]} -gt 0 ] && echo yes || echo no) --ksm: $([ $HAVE_KSM_FLAG = 1 ] && echo yes || echo no)"
    echo "# KSM at start: run=$(cat $KSM/run 2>/dev/null) pages_sharing=$(cat $KSM/pages_sharing 2>/dev/null)  OUTDIR=$OUTDIR"
} | tee "$OUTDIR/run.txt"

for c in "${CASE_TABLE[@]}"; do
    IFS='|' read -r name server preload ksm desc <<<"$c"
    if [ ${#SELECTED[@]} -gt 0 ]; then
        ok=0; for s in "${SELECTED[@]}"; do [ "$s" = "$name" ] && ok=1; done; [ $ok = 1 ] || continue
    fi
    log="$OUTDIR/$name.log"
    WHY=""
    if [ "$server" = gunicorn ]; then
        cmd=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$PORT" -w 4 -k sync --timeout 120)
        [ "$preload" = 1 ] && cmd+=(--preload)
        cmd+=(--log-level info mem_app:app)
    else
        cmd=("$GATEWAY" -w 4 -b "127.0.0.1:$PORT" --control-socket "$RUNDIR/gw.ctl" --log-level info
             --boot-timeout 120 "${GW_CHDIR[@]}")
        [ "$preload" = 1 ] && cmd+=(--preload)
        [ "$ksm" = 1 ] && cmd+=(--ksm)
        cmd+=(mem_app:app)
    fi
    echo "== $name: MEM_KIND=$MEM_KIND MEM_TOUCH=$MEM_TOUCH ${cmd[*]}  (cwd $APPS)" | tee "$OUTDIR/$name.cmd"
    if [ "$ksm" = 1 ] && [ $HAVE_KSM_FLAG = 0 ]; then WHY="not available (gateway has no --ksm)"
    elif [ "$ksm" = 1 ]; then ksm_on || true
    fi
    if [ -n "$WHY" ]; then
        echo "  [skip] $WHY"
        printf '%s\t%s\t\t\t\t\t\t\t\t\t\t\t\n' "$name" "$WHY" >> "$TSV"; continue
    fi
    ( cd "$APPS" && exec setsid "${cmd[@]}" ) > "$log" 2>&1 < /dev/null &
    SERVER_PID=$!
    if ! ready "$name" "$server" "$preload" "$log"; then
        echo "  [fail] did not start: $WHY; see $log" | tee -a "$OUTDIR/problems.txt"
        stop_server "$SERVER_PID"; ksm_restore
        printf '%s\t%s\t\t\t\t\t\t\t\t\t\t\t\n' "$name" "did not start: ${WHY//$'\t'/ }" >> "$TSV"; continue
    fi
    imports=$(grep -c 'mem_app ready' "$log")
    if [ "$preload" = 1 ] && [ "$imports" -gt 1 ]; then   # the flag was taken but every worker built the data
        WHY="preload not effective: the app was imported $imports times"
        echo "  [fail] $WHY" | tee -a "$OUTDIR/problems.txt"
    fi
    sleep 2
    [ "$ksm" = 1 ] && ksm_settle
    nprocs=$(group_pids "$SERVER_PID" | wc -l)
    ps -o pid,ppid,pgid,rss,comm,args -g "$SERVER_PID" > "$OUTDIR/$name.ps"
    read -r r0 p0 u0 k0 <<<"$(measure "$SERVER_PID" "idle (all workers booted, 0 requests)" "$OUTDIR/$name.smaps.txt")"
    client=$(timeout 600 "$PY" "$RUNDIR/client.py" "$PORT" "$NREQ" "$CONC" 2>&1 | tail -1)
    sleep 1
    [ "$ksm" = 1 ] && ksm_settle
    read -r r1 p1 u1 k1 <<<"$(measure "$SERVER_PID" "after $NREQ requests" "$OUTDIR/$name.smaps.txt")"
    nprocs1=$(group_pids "$SERVER_PID" | wc -l)
    [ "$nprocs1" = "$nprocs" ] || echo "  [warn] $name: $nprocs processes before the requests, $nprocs1 after" | tee -a "$OUTDIR/problems.txt"
    echo "  procs=$nprocs imports=$imports idle: RSS=$r0 PSS=$p0 USS=$u0 KSM=$k0 MiB | after: RSS=$r1 PSS=$p1 USS=$u1 KSM=$k1 MiB | $client"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${WHY:-ok}" "$nprocs" "$imports" \
        "$r0" "$p0" "$u0" "$k0" "$r1" "$p1" "$u1" "$k1" "$client" >> "$TSV"
    stop_server "$SERVER_PID"
    [ "$ksm" = 1 ] && ksm_restore
done

echo
"$PY" "$HERE/pysummarize.py" mem "$TSV" | tee "$OUTDIR/summary.md"
echo "per-process detail: $OUTDIR/*.smaps.txt   logs: $OUTDIR/*.log"
[ -s "$OUTDIR/problems.txt" ] && echo "PROBLEMS were recorded: $OUTDIR/problems.txt"
exit 0
