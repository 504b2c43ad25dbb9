#!/usr/bin/env bash
# Concurrency study (issue 5): workers, threads, greenlets and ASGI, gateway side by side with
# gunicorn (and uvicorn for ASGI), same apps, same process x thread budget.
#
# Apps (tools/bench/apps/):
#   io   io_app.py  (WSGI, time.sleep(0.02) per request)   io_asgi.py  (await asyncio.sleep(0.02))
#   cpu  cpu_app.py (WSGI, ~2 ms pure Python per request)  cpu_asgi.py (the same work, async def)
#   The CPU work is calibrated ONCE by this script (cpu_app.calibrate, best of 7) and passed to
#   every server as CPU_ITERS, so every server runs exactly the same loop.
#
# Configurations (gateway | gunicorn):
#   sync_w2/w4/w8   -w N                                  | -w N -k sync
#   gthread_2x4     -w 2 -k gthread --threads 4           | -w 2 -k gthread --threads 4
#   gthread_4x4     -w 4 -k gthread --threads 4           | -w 4 -k gthread --threads 4
#   gevent_w2       -w 2 -k gevent --worker-connections 1000
#                                                         | -w 2 -k gevent --worker-connections 1000
#   asgi_w2         -w 2 --worker-connections 1000 (ASGI app, detected)
#                                                         | -w 2 -k uvicorn.workers.UvicornWorker
#                   and a third row: python3 -m uvicorn --workers 2 (httptools + uvloop)
#   --max-inflight is left at auto: the front lets gevent and ASGI workers hold their
#   --worker-connections (1000), so its cap is not what limits them at c256.
#
# Method:
#   * one server at a time: start (setsid, so its PID is its process group), poll until it
#     answers the app's exact body, wait until its process set is stable, WARM s warm-up at
#     c64, then for each C in CONC: wrk -t2 -cC -d$DUR --latency --timeout ${WRK_TIMEOUT}s;
#     after the last one the PSS of every process of the group (/proc/PID/smaps_rollup) is
#     summed; then SIGTERM to the PID (SIGKILL to its group only after 15 s). Never by name.
#   * the gateway and gunicorn rows of one configuration run back to back (order swapped
#     every other round), so slow drift of the machine hits both alike;
#   * PIN=none (default): server and wrk share both CPUs (the CPU-bound case needs both
#     cores for the server to show multi-worker scaling). PIN=split: server taskset -c 0,
#     wrk taskset -c 1 (the pybench.sh convention; then no server can use more than 1 core).
#   * before each measured point: GAP s pause (leftover requests of the previous run drain),
#     then wait (at most QUIET_WAIT s) until the rest of the machine used < QUIET_PCT % of a
#     core over 1 s: this VM is shared, and a busy neighbour halves a 2-core CPU-bound figure;
#   * server CPU = utime+stime over the group (/proc/PID/stat 14+15); "other" = machine
#     user+nice+system minus server and wrk: above ~10% of a core the point was disturbed.
#
# Usage:  tools/bench/pyconc.sh                      everything (about 15 min)
#         CASES="sync_w2 io:gevent_w2" DUR=3 tools/bench/pyconc.sh
#         tools/bench/pyconc.sh --list
#         tools/bench/pyconc.sh --summarize OUTDIR   re-print the tables of a finished run
# Environment: DUR (8) ROUNDS (1) WARM (2) CONC ("64 256") CASES (all; CONFIG or APP:CONFIG)
#   SERVERS ("gateway gunicorn uvicorn") PIN (none|split) WRK_THREADS (2) WRK_TIMEOUT (30)
#   GAP (2) QUIET_PCT (25) QUIET_WAIT (30) PORT_BASE (18400) START_TIMEOUT (60) CPU_ITERS (calibrated) CPU_TARGET_MS (2.0)
#   GATEWAY (build/gateway) GW_ARGS (extra gateway options) OUTDIR (results/conc-<timestamp>)
set -u
set +m   # no job control: `setsid cmd &` execs in place, so $! is the server's PID == PGID

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
APPS=$HERE/apps
PY=/usr/bin/python3            # Debian's Python only
GUNICORN=/usr/bin/gunicorn     # Debian console script, #!/usr/bin/python3
WRK=${WRK:-/usr/bin/wrk}
GATEWAY=${GATEWAY:-$ROOT/build/gateway}
export PYTHONDONTWRITEBYTECODE=1   # keep tools/bench/apps free of __pycache__

die() { echo "pyconc: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# The summary (also: pyconc.sh --summarize OUTDIR). Reads runs.tsv, mem.tsv and info/run.txt.
summarize() {
BENCH_DIR="$HERE" "$PY" - "$1" <<'PYEOF'
import csv, os, sys
sys.path.insert(0, os.environ["BENCH_DIR"])
from summarize import med, num   # tools/bench/summarize.py
out = sys.argv[1]
runs = list(csv.DictReader(open(os.path.join(out, "runs.tsv")), delimiter="\t"))
mem = list(csv.DictReader(open(os.path.join(out, "mem.tsv")), delimiter="\t"))
CONFS = ["sync_w2", "sync_w4", "sync_w8", "gthread_2x4", "gthread_4x4", "gevent_w2", "asgi_w2"]
LABEL = {"sync_w2": "sync w2", "sync_w4": "sync w4", "sync_w8": "sync w8",
         "gthread_2x4": "gthread 2x4", "gthread_4x4": "gthread 4x4",
         "gevent_w2": "gevent w2 (1000)", "asgi_w2": "ASGI w2"}
SRV = ["gateway", "gunicorn", "uvicorn"]
SRVLABEL = {("asgi_w2", "gunicorn"): "gunicorn+UvicornWorker", ("asgi_w2", "uvicorn"): "uvicorn --workers 2"}
APPTITLE = {"io": "I/O-bound app: 20 ms wait per request (io_app.py / io_asgi.py)",
            "cpu": "CPU-bound app: ~2 ms pure Python per request (cpu_app.py / cpu_asgi.py)"}

concs = []
for r in runs:
    if r["conc"] not in concs:
        concs.append(r["conc"])
concs.sort(key=int)

def point(app, conf, srv, c):
    sel = [r for r in runs if (r["app"], r["conf"], r["server"], r["conc"]) == (app, conf, srv, c)]
    if not sel:
        return None
    return {"rps": med(num(r["rps"]) for r in sel), "p50": med(num(r["p50_us"]) for r in sel),
            "p99": med(num(r["p99_us"]) for r in sel), "srv": med(num(r["srv_cpu_pct"]) for r in sel),
            "oth": max(num(r["other_cpu_pct"]) or 0 for r in sel),
            "busy0": max(num(r.get("busy_before_pct")) or 0 for r in sel),
            "err": sum(int(r["sockerr"] or 0) for r in sel), "timeouts": sum(int(r["timeouts"] or 0) for r in sel),
            "non": sum(int(r["non2xx"] or 0) for r in sel),
            "bad": sum(1 for r in sel if r["alive_after"] != "yes" or r["pids_same"] != "yes"), "n": len(sel)}

def pss(app, conf, srv):
    return med(num(m["pss_mib"]) for m in mem if (m["app"], m["conf"], m["server"]) == (app, conf, srv))

def notstarted(app, conf, srv):
    return [m for m in mem if (m["app"], m["conf"], m["server"]) == (app, conf, srv) and m["status"] != "ok"]

f = lambda v, d: "-" if v is None else f"{v:,.{d}f}"
ms = lambda us: None if us is None else us / 1000.0
r = lambda a, b: None if a is None or not b else a / b
md = []   # markdown version of the same tables
info = open(os.path.join(out, "info", "run.txt")).read() if os.path.exists(os.path.join(out, "info", "run.txt")) else ""
for line in info.splitlines():
    print(line)
nround = max((p["n"] for p in (point(a["app"], a["conf"], a["server"], a["conc"]) for a in runs) if p), default=0)
print(f"\nMedians of {nround} round(s); latency in ms (wrk --latency); PSS = sum over the server's process"
      " group after the last run; CPU = server group CPU during the last conc, % of one core (2 cores = 200)")
for app in ("io", "cpu"):
    if not any(x["app"] == app for x in runs + mem):
        continue
    print(f"\n== {APPTITLE[app]} ==")
    hdr = f"{'config':17} {'server':23}"
    mhdr = "| config | server |"
    for c in concs:
        hdr += f" {'c'+c+' req/s':>11} {'p50':>7} {'p99':>7}"
        mhdr += f" c{c} req/s | p50 ms | p99 ms |"
    hdr += f" {'PSS MiB':>8} {'CPU%':>5}  notes"
    mhdr += " PSS MiB | notes |"
    print(hdr); print("-" * len(hdr))
    md += ["", f"**{APPTITLE[app]}**", "", mhdr, "|" + "---|" * (mhdr.count("|") - 1)]
    for conf in CONFS:
        for srv in SRV:
            pts = {c: point(app, conf, srv, c) for c in concs}
            ns = notstarted(app, conf, srv)
            if not any(pts.values()) and not ns:
                continue
            name = SRVLABEL.get((conf, srv), srv)
            row = f"{LABEL[conf]:17} {name:23}"
            mrow = f"| {LABEL[conf]} | {name} |"
            notes = []
            if ns:
                notes.append(ns[0]["status"])
            for c in concs:
                p = pts[c]
                if p is None:
                    row += f" {'-':>11} {'-':>7} {'-':>7}"; mrow += " - | - | - |"
                    continue
                row += f" {f(p['rps'], 0):>11} {f(ms(p['p50']), 1):>7} {f(ms(p['p99']), 1):>7}"
                mrow += f" {f(p['rps'], 0)} | {f(ms(p['p50']), 1)} | {f(ms(p['p99']), 1)} |"
                if p["timeouts"]:
                    notes.append(f"c{c}: {p['timeouts']} wrk timeouts")
                if p["err"] - p["timeouts"] > 0:
                    notes.append(f"c{c}: {p['err'] - p['timeouts']} socket errors")
                if p["non"]:
                    notes.append(f"c{c}: {p['non']} non-2xx")
                if p["bad"]:
                    notes.append(f"c{c}: worker restarted or server died")
                if p["oth"] > 25 or p["busy0"] > 25:
                    notes.append(f"c{c}: other load {max(p['oth'], p['busy0']):.0f}%")
            last = pts[concs[-1]] if concs else None
            row += f" {f(pss(app, conf, srv), 0):>8} {f(last['srv'] if last else None, 0):>5}  {'; '.join(notes)}"
            mrow += f" {f(pss(app, conf, srv), 0)} | {'; '.join(notes)} |"
            print(row); md.append(mrow)
    # ratios
    print(f"\n  gateway / peer, {app} (req/s: >1.00 is better for the gateway; p99 and PSS: <1.00 is better)")
    rh = f"  {'config':17} {'peer':23}" + "".join(f" {'c'+c+' req/s':>11} {'c'+c+' p99':>9}" for c in concs) + f" {'PSS':>6}"
    print(rh)
    mrh = "| config | peer |" + "".join(f" c{c} req/s | c{c} p99 |" for c in concs) + " PSS |"
    md += ["", f"gateway / peer, {app}:", "", mrh, "|" + "---|" * (mrh.count("|") - 1)]
    for conf in CONFS:
        for peer in ("gunicorn", "uvicorn"):
            g = {c: point(app, conf, "gateway", c) for c in concs}
            p = {c: point(app, conf, peer, c) for c in concs}
            if not any(p.values()) or not any(g.values()):
                continue
            name = SRVLABEL.get((conf, peer), peer)
            row = f"  {LABEL[conf]:17} {name:23}"
            mrow = f"| {LABEL[conf]} | {name} |"
            for c in concs:
                a, b = g[c], p[c]
                rr = r(a and a["rps"], b and b["rps"]); pr = r(a and a["p99"], b and b["p99"])
                row += f" {f(rr, 2) + 'x':>11} {f(pr, 2) + 'x':>9}"
                mrow += f" {f(rr, 2)}x | {f(pr, 2)}x |"
            pm = r(pss(app, conf, "gateway"), pss(app, conf, peer))
            row += f" {f(pm, 2) + 'x':>6}"; mrow += f" {f(pm, 2)}x |"
            print(row); md.append(mrow)
print("\nnotes: 'wrk timeouts' = requests not answered within wrk --timeout (they are left out of the")
print("latency figures); 'other load' = CPU of other processes (machine user+system minus server and wrk)")
print("above 25% of a core during that point or in the 1 s before it: that point is disturbed.")
open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
PYEOF
}

if [ "${1:-}" = "--summarize" ]; then
    [ -n "${2:-}" ] && [ -f "$2/runs.tsv" ] || die "usage: pyconc.sh --summarize OUTDIR (with runs.tsv)"
    summarize "$2"
    exit 0
fi

DUR=${DUR:-8};  DUR=${DUR%s}
ROUNDS=${ROUNDS:-1}
WARM=${WARM:-2}; WARM=${WARM%s}
CONC=${CONC:-64 256}
SERVERS=${SERVERS:-gateway gunicorn uvicorn}
PIN=${PIN:-none}
WRK_THREADS=${WRK_THREADS:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-30}
PORT_BASE=${PORT_BASE:-18400}
START_TIMEOUT=${START_TIMEOUT:-60}
GAP=${GAP:-2}
QUIET_PCT=${QUIET_PCT:-25}
QUIET_WAIT=${QUIET_WAIT:-30}
GW_ARGS=${GW_ARGS:-}
OUTDIR=${OUTDIR:-$HERE/results/conc-$(date +%Y%m%d-%H%M%S)}
TCK=$(getconf CLK_TCK)
case $PIN in
none)  SRV_PIN=""; WRK_PIN="" ;;
split) SRV_PIN="taskset -c 0"; WRK_PIN="taskset -c 1" ;;
*) die "PIN must be none or split" ;;
esac

# config|description (commands: case_cmd below)
CONF_TABLE=(
"sync_w2|workers only: 2 sync workers"
"sync_w4|workers only: 4 sync workers"
"sync_w8|workers only: 8 sync workers"
"gthread_2x4|2 workers x 4 threads (gthread)"
"gthread_4x4|4 workers x 4 threads (gthread)"
"gevent_w2|2 gevent workers, 1000 worker-connections each"
"asgi_w2|ASGI, 2 workers (gateway asyncio; gunicorn+UvicornWorker; uvicorn --workers 2)"
)
ALL_APPS=(io cpu)

if [ "${1:-}" = "--list" ]; then
    for c in "${CONF_TABLE[@]}"; do IFS='|' read -r n d <<<"$c"; printf '%-12s %s\n' "$n" "$d"; done
    echo "apps: ${ALL_APPS[*]} (CASES accepts CONFIG or APP:CONFIG)"
    exit 0
fi

# case_cmd APP CONF SERVER PORT -> CMD (array), run with cwd $APPS; 1 if that pair does not exist
case_cmd() {
    local app=$1 conf=$2 srv=$3 port=$4 mod
    if [ "$conf" = asgi_w2 ]; then mod=${app}_asgi:app; else mod=${app}_app:app; fi
    # shellcheck disable=SC2206
    local gwx=($GW_ARGS)
    local gw=("$GATEWAY" -b "127.0.0.1:$port" --control-socket "$RUNDIR/gw.ctl" --log-level warning --chdir "$APPS")
    local gu=("$GUNICORN" --chdir "$APPS" -b "127.0.0.1:$port" --log-level warning)
    case $srv:$conf in
    gateway:sync_w*)      CMD=("${gw[@]}" -w "${conf#sync_w}" -k sync "${gwx[@]}" "$mod") ;;
    gunicorn:sync_w*)     CMD=("${gu[@]}" -w "${conf#sync_w}" -k sync "$mod") ;;
    gateway:gthread_*)    CMD=("${gw[@]}" -w "${conf:8:1}" -k gthread --threads "${conf:10:1}" "${gwx[@]}" "$mod") ;;
    gunicorn:gthread_*)   CMD=("${gu[@]}" -w "${conf:8:1}" -k gthread --threads "${conf:10:1}" "$mod") ;;
    gateway:gevent_w2)    CMD=("${gw[@]}" -w 2 -k gevent --worker-connections 1000 "${gwx[@]}" "$mod") ;;
    gunicorn:gevent_w2)   CMD=("${gu[@]}" -w 2 -k gevent --worker-connections 1000 "$mod") ;;
    gateway:asgi_w2)      CMD=("${gw[@]}" -w 2 --worker-connections 1000 "${gwx[@]}" "$mod") ;;
    gunicorn:asgi_w2)     CMD=("${gu[@]}" -w 2 -k uvicorn.workers.UvicornWorker "$mod") ;;
    uvicorn:asgi_w2)      CMD=("$PY" -m uvicorn --app-dir "$APPS" --host 127.0.0.1 --port "$port" --workers 2
                               --http httptools --loop uvloop --no-access-log --log-level warning "$mod") ;;
    *) return 1 ;;
    esac
}

# -- selection -------------------------------------------------------------------------------
declare -A CONF_DESC=()
CONFS=()
for c in "${CONF_TABLE[@]}"; do IFS='|' read -r n d <<<"$c"; CONF_DESC[$n]=$d; CONFS+=("$n"); done
SEL=()   # "app conf"
for app in "${ALL_APPS[@]}"; do
    for conf in "${CONFS[@]}"; do
        if [ -z "${CASES:-}" ]; then SEL+=("$app $conf"); continue; fi
        for t in $CASES; do
            if [ "$t" = "$conf" ] || [ "$t" = "$app:$conf" ] || [ "$t" = "$app" ]; then SEL+=("$app $conf"); break; fi
        done
    done
done
if [ -n "${CASES:-}" ]; then
    for t in $CASES; do
        ok=0
        for app in "${ALL_APPS[@]}"; do for conf in "${CONFS[@]}"; do
            { [ "$t" = "$conf" ] || [ "$t" = "$app:$conf" ] || [ "$t" = "$app" ]; } && ok=1
        done; done
        [ $ok = 1 ] || die "unknown case '$t' (see --list)"
    done
fi
[ ${#SEL[@]} -gt 0 ] || die "nothing selected"

for t in "$WRK" curl setsid ss "$PY" "$GUNICORN" timeout; do
    command -v "$t" >/dev/null 2>&1 || die "missing $t (apt-get install wrk curl gunicorn python3-gevent python3-uvicorn python3-uvloop python3-httptools)"
done
[ "$PIN" = none ] || command -v taskset >/dev/null || die "missing taskset"
[ -x "$GATEWAY" ] || die "$GATEWAY not built (run: make)"
"$GATEWAY" --help 2>/dev/null | grep -q -- '--worker-class' || die "$GATEWAY has no --worker-class"

# wrk -c256 needs 256 sockets, the servers (which inherit the limit) as many again
maxc=0; for c in $CONC; do [ "$c" -gt "$maxc" ] && maxc=$c; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((maxc * 2 + 256)) ] || die "ulimit -n $(ulimit -n) is too low for -c$maxc"

RUNDIR=$(mktemp -d /tmp/gwpyconc.XXXXXX)
mkdir -p "$OUTDIR/wrk" "$OUTDIR/logs" "$OUTDIR/info" "$OUTDIR/smaps"
: > "$OUTDIR/problems.txt"

SERVER_PID=""     # pid (== pgid) of the running server, if any
SERVER_NAME=""
. "$HERE/lib.sh"   # group_pids, grp_ticks, stop_group, wait_answer, start_failed

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    stop_group "$SERVER_PID" "$SERVER_NAME"
    SERVER_PID=""; SERVER_NAME=""
}

cleanup() {
    stop_server
    rm -rf "$RUNDIR"
    [ -s "$OUTDIR/problems.txt" ] || rm -f "$OUTDIR/problems.txt"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- the CPU work: calibrated once, the same CPU_ITERS for every server ------------------------
read -r CPU_ITERS CPU_BODY CPU_MS < <(cd "$APPS" && CPU_ITERS=${CPU_ITERS:-} "$PY" -c '
import time, cpu_app
t = min(cpu_app._timed(cpu_app.ITERS) for _ in range(15))
print(cpu_app.ITERS, cpu_app.BODY.decode().strip().replace(" ", "_"), "%.3f" % (t * 1000))')
[ -n "${CPU_ITERS:-}" ] || die "cpu_app.py calibration failed"
export CPU_ITERS
CPU_BODY=${CPU_BODY//_/ }
IO_BODY="io ok"

{
    echo "# gateway concurrency study $(date -Is)  host=$(hostname) cores=$(nproc) kernel=$(uname -r) CLK_TCK=$TCK"
    echo "# cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)  mem: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "# DUR=${DUR}s ROUNDS=$ROUNDS WARM=${WARM}s GAP=${GAP}s QUIET_PCT=$QUIET_PCT QUIET_WAIT=${QUIET_WAIT}s CONC='$CONC' PIN=$PIN wrk -t$WRK_THREADS --timeout ${WRK_TIMEOUT}s GW_ARGS='$GW_ARGS' ulimit -n $(ulimit -n)"
    echo "# CPU_ITERS=$CPU_ITERS (${CPU_MS} ms per request, best of 15, at calibration) body '$CPU_BODY'"
    echo "# gateway: $GATEWAY ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+dirty'))"
    echo "# $("$PY" -c 'import sys, gunicorn, uvicorn, gevent, uvloop; print("python %s gunicorn %s uvicorn %s gevent %s uvloop %s" % (sys.version.split()[0], gunicorn.__version__, uvicorn.__version__, gevent.__version__, uvloop.__version__))' 2>&1); $("$WRK" -v 2>&1 | head -1)"
    echo "# selected: $(printf '%s ' "${SEL[@]/ /:}")"
    echo "# OUTDIR=$OUTDIR"
    echo "# load average before: $(cat /proc/loadavg)"
} | tee "$OUTDIR/info/run.txt"

cpu_busy() { awk '$1=="cpu" {print $2+$3+$4}' /proc/stat; }   # user+nice+system, all CPUs
q0=$(cpu_busy); sleep 2; q1=$(cpu_busy)
idle_busy=$(( (q1 - q0) * 100 / (2 * TCK) ))
echo "# machine busy before start: ${idle_busy}% of one core" | tee -a "$OUTDIR/info/run.txt"
[ "$idle_busy" -gt 10 ] && echo "pyconc: warning: the machine is not quiet (${idle_busy}% of a core busy); results will be noisy" | tee -a "$OUTDIR/info/run.txt" >&2


# pss_mib PGID FILE LABEL -> per-process smaps_rollup lines appended to FILE; prints PSS MiB
pss_mib() {
    local pgid=$1 f=$2 p
    : > "$RUNDIR/m.tmp"
    for p in $(group_pids "$pgid"); do
        awk -v pid="$p" -v master="$pgid" -v comm="$(cat "/proc/$p/comm" 2>/dev/null)" '
            /^Rss:/ {rss=$2} /^Pss:/ {pss=$2} /^Private_Clean:/ {pc=$2} /^Private_Dirty:/ {pd=$2}
            END { if (rss == "") exit; printf "%s %s %s %d %d %d\n", pid, (pid==master?"master":"child"), comm, rss, pss, pc+pd }' \
            "/proc/$p/smaps_rollup" 2>/dev/null >> "$RUNDIR/m.tmp"
    done
    { echo "# $3  (kB)  pid role comm rss pss uss"; cat "$RUNDIR/m.tmp"; } >> "$f"
    awk '{p+=$5} END {printf "%.1f\n", p/1024}' "$RUNDIR/m.tmp"
}

RUNS=$OUTDIR/runs.tsv
MEM=$OUTDIR/mem.tsv
printf 'app\tconf\tserver\tround\tconc\trps\tp50_us\tp99_us\trequests\tsockerr\ttimeouts\tnon2xx\tsrv_cpu_pct\twrk_cpu_pct\tother_cpu_pct\tnprocs\tpids_same\talive_after\tquiet_wait_s\tbusy_before_pct\n' > "$RUNS"
printf 'app\tconf\tserver\tround\tstatus\tnprocs\tpss_mib\tport\n' > "$MEM"

# wait_stable: the group's process set unchanged for 1.5 s (every worker forked), at most 20 s
wait_stable() {
    local prev="" cur same=0
    for _ in $(seq 1 80); do
        cur=$(group_pids "$SERVER_PID" | sort | paste -sd,)
        if [ "$cur" = "$prev" ]; then same=$((same + 1)); [ $same -ge 6 ] && return 0; else same=0; fi
        prev=$cur
        sleep 0.25
    done
}

# wait_quiet: before a measured point, wait until the rest of the machine (everything but the
# idle server) used less than QUIET_PCT % of a core over 1 s, for at most QUIET_WAIT s.
# Prints the seconds waited and the last busy figure.
wait_quiet() {
    local w=0 b0 b1 g0 g1 busy=0
    while :; do
        b0=$(cpu_busy); g0=$(grp_ticks "$SERVER_PID"); sleep 1; b1=$(cpu_busy); g1=$(grp_ticks "$SERVER_PID")
        busy=$(( ((b1 - b0) - (g1 - g0)) * 100 / TCK ))
        [ "$busy" -lt "$QUIET_PCT" ] && break
        w=$((w + 1))
        [ "$w" -ge "$QUIET_WAIT" ] && break
    done
    echo "$w $busy"
}

# run_wrk TAG CONC DUR
run_wrk() {
    local tag=$1 c=$2 d=$3 f g0 g1 b0 b1 t0 t1 wt rc pids0 pids1 alive=yes qw="0 0"
    f="$OUTDIR/wrk/$SERVER_NAME.$tag.txt"
    if [ "${tag#warmup}" = "$tag" ]; then
        sleep "$GAP"                 # let the previous run's leftover requests drain
        qw=$(wait_quiet)
    fi
    pids0=$(group_pids "$SERVER_PID" | sort | paste -sd,)
    g0=$(grp_ticks "$SERVER_PID"); b0=$(cpu_busy); t0=$(date +%s.%N)
    wt=$( { TIMEFORMAT='%3U %3S'; time { timeout -k 5 $((d + WRK_TIMEOUT + 30)) $WRK_PIN "$WRK" -t"$WRK_THREADS" -c"$c" -d"${d}s" \
              --timeout "${WRK_TIMEOUT}s" --latency "http://127.0.0.1:$PORT/" > "$f" 2>&1; echo $? > "$RUNDIR/wrk.rc"; }; } 2>&1 )
    g1=$(grp_ticks "$SERVER_PID"); b1=$(cpu_busy); t1=$(date +%s.%N)
    rc=$(cat "$RUNDIR/wrk.rc")
    pids1=$(group_pids "$SERVER_PID" | sort | paste -sd,)
    kill -0 "$SERVER_PID" 2>/dev/null || alive=no
    [ "$rc" = 0 ] || echo "wrk exit status $rc" >> "$f"
    [ "${tag#warmup}" != "$tag" ] && return 0
    local rps p50 p99 nreq err non tmo srvpct wrkpct othpct same=yes np
    read -r rps p50 p99 nreq err non < <("$PY" "$HERE/summarize.py" parse-wrk "$f")
    tmo=$(awk '/Socket errors:/ {for (i = 1; i < NF; i++) if ($i == "timeout") print $(i+1)+0}' "$f"); tmo=${tmo:-0}
    read -r srvpct wrkpct othpct < <(awk -v wt="$wt" -v g=$((g1 - g0)) -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" -v k="$TCK" 'BEGIN{
        split(wt, w, " "); el = t1 - t0; wrk = w[1] + w[2]; o = (b1 - b0) / k - g / k - wrk; if (o < 0) o = 0;
        printf "%.0f %.0f %.0f\n", g / k / el * 100, wrk / el * 100, o / el * 100 }')
    [ "$pids0" = "$pids1" ] || same=no
    np=$(echo "$pids1" | tr , '\n' | grep -c .)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CUR_APP" "$CUR_CONF" "$CUR_SRV" "$CUR_ROUND" "$c" \
        "$rps" "$p50" "$p99" "$nreq" "$err" "$tmo" "$non" "$srvpct" "$wrkpct" "$othpct" "$np" "$same" "$alive" "${qw% *}" "${qw#* }" >> "$RUNS"
    awk -v n="$SERVER_NAME" -v c="$c" -v r="$rps" -v p50="$p50" -v p99="$p99" -v s="$srvpct" -v w="$wrkpct" -v o="$othpct" -v e="$err" -v x="$non" -v q="${qw% *}" \
        'BEGIN { printf "    %-26s c%-4s %9s req/s  p50 %8.1f ms  p99 %8.1f ms  srv %3s%% wrk %3s%% other %3s%%  sockerr %s non2xx %s  (waited %ss for quiet)\n", n, c, r, p50/1000, p99/1000, s, w, o, e, x, q }'
    if [ "${err:-0}" != 0 ] || [ "${non:-0}" != 0 ] || [ "$nreq" = 0 ] || [ "$alive" = no ] || [ "$same" = no ] || [ "$rc" != 0 ]; then
        { echo "== $SERVER_NAME c$c: sockerr=$err (timeouts $tmo) non2xx=$non requests=$nreq alive=$alive pids $pids0 -> $pids1 wrk_rc=$rc"
          cat "$f"; echo "-- $SERVER_NAME log tail:"; tail -20 "$OUTDIR/logs/$SERVER_NAME.log"; } >> "$OUTDIR/problems.txt"
        echo "    [problem] $SERVER_NAME c$c: see $OUTDIR/problems.txt" >&2
    fi
}

# one_case APP CONF SERVER ROUND
PORT_N=0
one_case() {
    local app=$1 conf=$2 srv=$3 round=$4 want why np pss
    case_cmd "$app" "$conf" "$srv" 0 || return 0
    PORT_N=$((PORT_N + 1)); PORT=$((PORT_BASE + PORT_N % 50))
    if ss -Hltn "sport = :$PORT" | grep -q .; then
        echo "  [skip] port $PORT in use" | tee -a "$OUTDIR/problems.txt"; return 0
    fi
    case_cmd "$app" "$conf" "$srv" "$PORT"
    CUR_APP=$app; CUR_CONF=$conf; CUR_SRV=$srv; CUR_ROUND=$round
    SERVER_NAME="$app.$conf.$srv.r$round"
    if [ "$app" = cpu ]; then want=$CPU_BODY; else want=$IO_BODY; fi
    printf '%q ' $SRV_PIN "${CMD[@]}" > "$OUTDIR/info/$SERVER_NAME.cmd"; echo "  (cwd $APPS, CPU_ITERS=$CPU_ITERS)" >> "$OUTDIR/info/$SERVER_NAME.cmd"
    echo "  $SERVER_NAME: $(cd "$APPS" && printf '%s ' "${CMD[@]}" | sed "s#$ROOT/##g")"
    ( cd "$APPS" && exec setsid $SRV_PIN "${CMD[@]}" ) > "$OUTDIR/logs/$SERVER_NAME.log" 2>&1 < /dev/null &
    SERVER_PID=$!
    if ! why=$(wait_answer "$PORT" "$SERVER_PID" "$want"$'\n'); then
        start_failed "    " "$SERVER_NAME" "$OUTDIR/logs/$SERVER_NAME.log" "$why"
        stop_server
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$app" "$conf" "$srv" "$round" "did not start" - - "$PORT" >> "$MEM"
        return 0
    fi
    wait_stable
    np=$(group_pids "$SERVER_PID" | wc -l)
    ps -o pid,ppid,pgid,psr,rss,args -g "$SERVER_PID" > "$OUTDIR/info/$SERVER_NAME.ps"
    curl -si --max-time 2 "http://127.0.0.1:$PORT/" > "$OUTDIR/info/$SERVER_NAME.response" 2>&1
    echo "    up: pid $SERVER_PID, $np processes"
    run_wrk warmup 64 "$WARM"
    local c
    for c in $CONC; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "    [problem] $SERVER_NAME is gone" | tee -a "$OUTDIR/problems.txt"; break; fi
        run_wrk "c$c" "$c" "$DUR"
    done
    pss=$(pss_mib "$SERVER_PID" "$OUTDIR/smaps/$SERVER_NAME.txt" "after the c${CONC##* } run")
    np=$(group_pids "$SERVER_PID" | wc -l)
    echo "    PSS $pss MiB over $np processes"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$app" "$conf" "$srv" "$round" ok "$np" "$pss" "$PORT" >> "$MEM"
    stop_server
    grep -iE 'error|exception|traceback|timeout|killed|critical' "$OUTDIR/logs/$CUR_APP.$CUR_CONF.$CUR_SRV.r$round.log" > /dev/null 2>&1 \
        && { echo "== log lines of $CUR_APP.$CUR_CONF.$CUR_SRV.r$round:"; grep -iE 'error|exception|traceback|timeout|killed|critical' "$OUTDIR/logs/$CUR_APP.$CUR_CONF.$CUR_SRV.r$round.log" | awk '!seen[$0]++' | head -10; } >> "$OUTDIR/problems.txt"
    sleep 1
}

T0=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS"
    for s in "${SEL[@]}"; do
        read -r app conf <<<"$s"
        order=()
        for srv in $SERVERS; do order+=("$srv"); done
        # gateway first in odd rounds, the peer first in even rounds
        [ $((r % 2)) = 0 ] && [ ${#order[@]} -ge 2 ] && order=("${order[1]}" "${order[0]}" "${order[@]:2}")
        echo "== $app $conf: ${CONF_DESC[$conf]}"
        for srv in "${order[@]}"; do one_case "$app" "$conf" "$srv" "$r"; done
    done
done
{
    echo "# load average after:  $(cat /proc/loadavg)"
    echo "# wall time: $(( $(date +%s) - T0 )) s"
} | tee -a "$OUTDIR/info/run.txt"

echo
summarize "$OUTDIR" | tee "$OUTDIR/summary.txt"
if [ -s "$OUTDIR/problems.txt" ]; then
    echo; echo "PROBLEMS were recorded: $OUTDIR/problems.txt" | tee -a "$OUTDIR/summary.txt"
fi
echo "raw wrk output: $OUTDIR/wrk/   runs: $RUNS   memory: $MEM   logs: $OUTDIR/logs/   markdown: $OUTDIR/summary.md"
