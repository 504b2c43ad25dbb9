# tools/bench/lib.sh - shell helpers the bench scripts share (sourced, bash).
# Each server runs in its own process group (started with setsid, so its pid
# is its pgid) and is stopped through that group only, never by name.
# Uses $OUTDIR: problems go to $OUTDIR/problems.txt, exit statuses to
# $OUTDIR/info/exit.txt when that directory exists.

group_pids() { ps -eo pid=,pgid= | awk -v g="$1" '$2==g {print $1}'; }

grp_ticks() {   # utime+stime (clock ticks) summed over the live processes of group $1
    local t=0 p v
    for p in $(group_pids "$1"); do
        v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null) && t=$((t + v))
    done
    echo "$t"
}

# stop_group PID NAME [SECONDS]: SIGTERM to PID, wait up to SECONDS (15) for
# its whole group to go, else SIGKILL the group and note it. Sets STOP_RC to
# the server's exit status.
stop_group() {
    local pid=$1 name=$2 secs=${3:-15} i
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 $((secs * 10))); do
        [ -z "$(group_pids "$pid")" ] && break
        sleep 0.1
    done
    if [ -n "$(group_pids "$pid")" ]; then
        echo "  [warn] $name: process group $pid still alive $secs s after SIGTERM; SIGKILL to group $pid" | tee -a "$OUTDIR/problems.txt" >&2
        ps -o pid,ppid,pgid,stat,args -g "$pid" >> "$OUTDIR/problems.txt" 2>/dev/null
        kill -KILL -- "-$pid" 2>/dev/null
        sleep 0.5
    fi
    wait "$pid" 2>/dev/null; STOP_RC=$?
    if [ -d "$OUTDIR/info" ]; then
        echo "$name exit status after SIGTERM: $STOP_RC" >> "$OUTDIR/info/exit.txt"
    fi
    return 0
}
