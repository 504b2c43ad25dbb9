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

# wait_answer PORT PGID BODY: 0 once GET / on PORT answers 200 with exactly BODY. Else 1,
# with why on stdout: group PGID is gone, it answered something else for 5 s in a row,
# or START_TIMEOUT (30) s passed.
wait_answer() {
    local port=$1 pgid=$2 want=$3 body wrong=0
    for _ in $(seq 1 $((${START_TIMEOUT:-30} * 10))); do
        body=$(curl -s --max-time 2 -w '\n%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)
        [ "$body" = "$want"$'\n200' ] && return 0
        if [ -n "$body" ] && [ "${body##*$'\n'}" != 000 ]; then
            wrong=$((wrong + 1))
            [ $wrong -ge 50 ] && { echo "answers HTTP ${body##*$'\n'} '${body%$'\n'*}' instead of 200 '$want' (5 s)"; return 1; }
        else
            wrong=0
        fi
        [ -z "$(group_pids "$pgid")" ] && { echo "exited before answering"; return 1; }
        sleep 0.1
    done
    echo "no 200 '$want' after ${START_TIMEOUT:-30} s"
    return 1
}

# start_failed INDENT NAME LOG WHY: the "did not start" line and the log's first error
# lines, on the terminal and in $OUTDIR/problems.txt.
start_failed() {
    echo "$1[fail] $2 did not start: $4; log: $3" | tee -a "$OUTDIR/problems.txt"
    grep -iE 'error|exception|cannot|unknown|invalid|unrecognized' "$3" | awk '!seen[$0]++' | head -5 |
        sed 's/^/      /' | tee -a "$OUTDIR/problems.txt"
}
