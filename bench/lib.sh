# bench/lib.sh — what the benchmark scripts share: a temporary directory
# removed on exit (kept with keep=1), the processes a script started killed
# on exit, free loopback ports, waiting for a listener, stopping a process,
# and the CPU accounting the loadgen-driven scripts use.
# Source it, then call bench_tmpdir NAME; add every process started to
# started_pids and put a short-lived client's pid in helper_pid while it runs.
# shellcheck shell=bash

started_pids=()
helper_pid=
keep=${keep:-0}

# shellcheck disable=SC2317 # called by the EXIT trap
bench_cleanup() {
    local pid
    [ -n "$helper_pid" ] && kill -TERM "$helper_pid" 2>/dev/null
    for pid in "${started_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do
        for _ in $(seq 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$keep" = 1 ]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}

# Creates $tmp (/tmp/NAME.XXXXXX) and the exit trap that cleans up.
bench_tmpdir() {
    tmp=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$tmp" # Mosquitto drops root privileges and must still read its config
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Hltn "sport = :$p" | grep -q .; then
            echo "$p"
            return
        fi
    done
}

# Waits until something listens on 127.0.0.1:$1 and process $2 is alive;
# looks at the socket table rather than connecting, so the broker sees no
# stray client.
wait_listen() {
    local port=$1 pid=$2 deadline=$((SECONDS + 5))
    while [ $SECONDS -le $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        if ss -Hltn "sport = :$port" | grep -q .; then return 0; fi
        sleep 0.1
    done
    return 1
}

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# CPU ticks (user+system, all threads) of one process; busy and total ticks
# of the machine. Busy counts irq and softirq: loopback TCP runs there, and a
# tick spent in softirq is charged to the process it interrupted as well.
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sys_ticks() { awk '/^cpu /{b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat; }

# Seconds of CPU (user+system) the shell's children used between two
# outputs of the `times` builtin, saved to files $1 and $2: the CPU of a
# child waited for in between, such as loadgen.
times_cpu() {
    cat "$1" "$2" | awk '
        function sec(x, m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return m * 60 + x }
        NR == 2 { c0 = sec($1) + sec($2) } NR == 4 { c1 = sec($1) + sec($2) } END { print c1 - c0 }'
}

# % of one CPU the machine is busy over one second, all CPUs together:
# other work running now makes every figure noisy.
machine_busy_pct() {
    local s0 t0 s1 t1
    read -r s0 t0 < <(sys_ticks)
    sleep 1
    read -r s1 t1 < <(sys_ticks)
    awk -v b=$((s1 - s0)) -v t=$((t1 - t0)) -v n="$(nproc)" 'BEGIN{printf "%.0f", t ? 100 * n * b / t : 0}'
}

# % of one CPU that $1 ticks over $2 seconds are.
clk_tck=$(getconf CLK_TCK)
pct() { awk -v d="$1" -v hz="$clk_tck" -v w="$2" 'BEGIN{printf "%.0f", 100 * d / hz / w}'; }

# The comparison scripts keep their results in an associative array R,
# R[KEY.FIELD.RUN] = value (KEY e.g. "bridge.1.closed"), over runs 1..$runs.
# of_runs KEY FIELD AWK: the values of FIELD over the runs, sorted
# numerically, through the awk program AWK; "-" without values.
# shellcheck disable=SC2154 # runs and R are the calling script's
of_runs() {
    local k=$1 field=$2 i vals=()
    for i in $(seq "$runs"); do
        [ -n "${R[$k.$field.$i]:-}" ] && vals+=("${R[$k.$field.$i]}")
    done
    [ ${#vals[@]} -eq 0 ] && { echo "-"; return; }
    printf '%s\n' "${vals[@]}" | sort -g | awk "$3"
}

# median KEY FIELD: the median over the runs (numeric), or "-".
median() {
    of_runs "$1" "$2" '{v[NR] = $1} END{print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# spread KEY FIELD: "min-max" over the runs (the tables give the median).
spread() {
    of_runs "$1" "$2" 'NR == 1 {lo = $1} {hi = $1} END{print lo "-" hi}'
}

# ratio A B: A / B to two decimals, or "-" when either is missing or B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b}'; }

# status_of KEY: the first non-ok status of the runs (a run without one
# failed), or ok.
# shellcheck disable=SC2154 # runs and R are the calling script's
status_of() {
    local k=$1 i s
    for i in $(seq "$runs"); do
        s=${R[$k.status.$i]:-failed}
        [ "$s" != ok ] && { echo "$s"; return; }
    done
    echo ok
}

# probe_path PUB_PORT SUB_PORT: a message published on bench/probe to
# PUB_PORT reaches a subscriber of SUB_PORT within 5 s (a bridge or session
# may still be connecting when its listener already accepts). Probes before
# loadgen subscribes, so loadgen never sees them. Without the mosquitto
# clients it just waits 2 s. Uses $tmp; helper_pid is the subscriber while
# it runs (for the exit trap).
probe_path() {
    local pport=$1 sport=$2 out=$tmp/probe.out
    if ! command -v mosquitto_sub >/dev/null || ! command -v mosquitto_pub >/dev/null; then
        sleep 2
        return 0
    fi
    : >"$out"
    mosquitto_sub -h 127.0.0.1 -p "$sport" -t bench/probe -C 1 -W 6 >"$out" 2>/dev/null &
    helper_pid=$!
    local deadline=$((SECONDS + 5))
    while [ $SECONDS -le $deadline ] && kill -0 "$helper_pid" 2>/dev/null; do
        sleep 0.2
        timeout 2 mosquitto_pub -h 127.0.0.1 -p "$pport" -t bench/probe -m probe -q 1 \
            >/dev/null 2>&1 || true
    done
    wait "$helper_pid" 2>/dev/null || true
    helper_pid=
    [ -s "$out" ]
}

# loadgen_prepare: $loadgen, or bench/loadgen.c compiled into $tmp when it
# is empty; exits unless it runs and has --sub-port (the upstream benchmarks
# put its subscriber on another broker).
loadgen_prepare() {
    if [ -z "$loadgen" ]; then
        loadgen=$tmp/loadgen
        cc -O2 -std=c11 -Wall -Wextra -pthread "$(dirname "${BASH_SOURCE[0]}")/loadgen.c" \
            -o "$loadgen"
    fi
    [ -x "$loadgen" ] || { echo "$0: loadgen '$loadgen' is not executable" >&2; exit 1; }
    if ! "$loadgen" --help | grep -q -- --sub-port; then
        echo "$0: $loadgen has no --sub-port (an older build?)" >&2
        exit 1
    fi
}

# A prefix for loadgen's command (taskset -c N), empty by default.
loadgen_pin=()
# Options added to every loadgen run (e.g. --rcvlowat 0 for one series).
loadgen_extra=()

# loadgen_run KEY RUN MODE QOS PUB_PORT SUB_PORT NAME1 PID1 [NAME2 PID2]:
# one loadgen run of the upstream benchmarks, publishers to PUB_PORT, the
# subscriber to SUB_PORT, closed loop or fixed rate (MODE closed|rate;
# $publishers, $payload, $duration, $warmup, $rate, $window). Records the
# RESULT fields as R[KEY.field.RUN] (status failed without one), the CPU
# of each named process whose PID is not empty as R[KEY.NAME_cpu_pct.RUN],
# and everything else on the machine but loadgen as other_cpu_pct; prints
# loadgen's lines and the CPU.
# shellcheck disable=SC2154 # the settings above are the calling script's
loadgen_run() {
    local k=$1 run=$2 mode=$3 q=$4 pport=$5 sport=$6
    shift 6
    local label=${k%%.*} out=$tmp/$k.$run.out
    local args=(--publishers "$publishers" --payload "$payload" --qos "$q"
        --duration "$duration" --warmup "$warmup"
        --host 127.0.0.1 --port "$pport" --sub-port "$sport" --label "$label")
    args+=("${loadgen_extra[@]}")
    if [ "$mode" = rate ]; then
        args+=(--rate "$rate")
    elif [ -n "$window" ]; then
        args+=(--window "$window")
    fi
    local names=() pids=() t0=() i m0 m1 lg wall
    while [ $# -ge 2 ]; do
        names+=("$1")
        pids+=("$2")
        shift 2
    done
    for i in "${!pids[@]}"; do
        t0[i]=0
        [ -n "${pids[i]}" ] && t0[i]=$(proc_ticks "${pids[i]}")
    done
    read -r m0 _ < <(sys_ticks)
    local start=$EPOCHREALTIME
    # In the background so that a signal reaches the trap at once; `times`
    # before and after gives loadgen's CPU. loadgen ends by itself within
    # warmup + duration + ~5 s; timeout is a second guard.
    times >"$out.t0"
    timeout -k 2 "$(awk -v w="$warmup" -v d="$duration" 'BEGIN{printf "%d", w + d + 30}')" \
        "${loadgen_pin[@]}" "$loadgen" "${args[@]}" >"$out" 2>"$out.err" &
    helper_pid=$!
    wait "$helper_pid" || true
    helper_pid=
    times >"$out.t1"
    wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')
    local used=0 said=()
    for i in "${!pids[@]}"; do
        [ -n "${pids[i]}" ] || continue
        local d=$(($(proc_ticks "${pids[i]}") - t0[i]))
        used=$((used + d))
        R[$k.${names[i]}_cpu_pct.$run]=$(pct "$d" "$wall")
        said+=("${names[i]} cpu ${R[$k.${names[i]}_cpu_pct.$run]}%,")
    done
    read -r m1 _ < <(sys_ticks)
    lg=$(times_cpu "$out.t0" "$out.t1")
    grep -v '^RESULT' "$out" | sed 's/^/  /' || true
    sed 's/^/  /' "$out.err" >&2
    local line kv
    line=$(grep '^RESULT' "$out" || true)
    if [ -z "$line" ]; then
        R[$k.status.$run]=failed
        return
    fi
    for kv in ${line#RESULT }; do
        R[$k.${kv%%=*}.$run]=${kv#*=}
    done
    R[$k.other_cpu_pct.$run]=$(awk -v busy=$((m1 - m0)) -v b="$used" -v hz="$clk_tck" \
        -v w="$wall" -v lg="${lg:-0}" 'BEGIN{o = 100 * ((busy - b) / hz - lg) / w; printf "%.0f", o < 0 ? 0 : o}')
    echo "  ${said[*]} everything else ${R[$k.other_cpu_pct.$run]}% (should be ~0)"
}
