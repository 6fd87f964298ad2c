# bench/lib.sh — what the benchmark scripts share: a temporary directory
# removed on exit (kept with keep=1), the processes a script started killed
# on exit, free loopback ports, waiting for a listener, stopping a process.
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
