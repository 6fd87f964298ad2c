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
# (listener_compare.sh and upstream_forward.sh define the same two
# functions themselves, after sourcing this file.)
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
