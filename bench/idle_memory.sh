#!/usr/bin/env bash
# idle_memory.sh: memory per idle MQTT connection, Mosquitto and mqrouter in
# the same run. For each broker: start it on a free loopback port, read its
# RSS, hold N idle clients on it with bench/idle_conns.c (connected,
# subscribed to one topic each, silent, keep-alive one hour), read its RSS
# again, and print (RSS after - RSS before) / N. Kernel socket buffers are
# not in a process's RSS, so this is the broker's own (user) memory.
#
# It touches only brokers it started, on loopback, and kills them on exit;
# every step has a deadline. A benchmark: it never passes or fails on the
# figures. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() {
    cat <<EOF
usage: $0 [--clients N (10000)] [--mqrouter PATH (or MQROUTER_BIN)]
          [--mosquitto PATH (/usr/sbin/mosquitto)] [--idle PATH (or IDLE_CONNS)]
          [--settle S (2)] [--topic T: every client subscribes to T, not idle/<i>]
          [--keep]
EOF
}
clients=10000
mqrouter_bin=${MQROUTER_BIN:-}
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
idle=${IDLE_CONNS:-}
settle=2
topic_args=()
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --clients) clients=$2; shift 2 ;;
    --mqrouter) mqrouter_bin=$2; shift 2 ;;
    --mosquitto) mosquitto=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --topic) topic_args=(--topic "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

# both the brokers and the client hold $clients sockets
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d /tmp/idle_memory.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "$idle" ]; then
    idle=$tmp/idle_conns
    cc -O2 -std=c11 -Wall -Wextra "$here/idle_conns.c" -o "$idle"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_listen() {
    local port=$1 pid=$2 deadline=$((SECONDS + 5))
    while [ $SECONDS -le $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        ss -Hltn "sport = :$port" | grep -q . && return 0
        sleep 0.1
    done
    return 1
}
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
anon_kb() { awk '/^RssAnon:/{print $2}' "/proc/$1/status"; }

declare -A R
measure() { # label pid port
    local label=$1 pid=$2 port=$3
    sleep 1
    local r0 a0 r1 a1 ready
    r0=$(rss_kb "$pid")
    a0=$(anon_kb "$pid")
    # hold the clients until we close its stdin (or 120 s)
    coproc IDLE { "$idle" --port "$port" --clients "$clients" "${topic_args[@]}" --hold 120 --timeout 90 2>"$tmp/$label.idle.err"; }
    local ipid=$IDLE_PID
    read -r -t 100 ready <&"${IDLE[0]}" || ready="(no answer)"
    echo "  $label: $ready"
    sleep "$settle"
    r1=$(rss_kb "$pid")
    a1=$(anon_kb "$pid")
    echo x >&"${IDLE[1]}" || true
    local done_line=
    read -r -t 20 done_line <&"${IDLE[0]}" || true
    echo "  $label: $done_line"
    wait "$ipid" 2>/dev/null || true
    sed 's/^/  idle_conns: /' "$tmp/$label.idle.err" | head -5
    R[$label.before]=$r0
    R[$label.after]=$r1
    R[$label.per]=$(awk -v a="$r0" -v b="$r1" -v n="$clients" 'BEGIN{printf "%.0f", (b - a) * 1024 / n}')
    R[$label.anon]=$(awk -v a="$a0" -v b="$a1" -v n="$clients" 'BEGIN{printf "%.0f", (b - a) * 1024 / n}')
    echo "  $label: RSS $r0 kB -> $r1 kB: ${R[$label.per]} bytes per idle connection (anonymous: ${R[$label.anon]})"
}

# ---- Mosquitto ----
mport=$(free_port)
cat >"$tmp/mosquitto.conf" <<EOF
listener $mport 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
EOF
"$mosquitto" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
mpid=$!
pids+=("$mpid")
wait_listen "$mport" "$mpid" || { echo "mosquitto did not start" >&2; cat "$tmp/mosquitto.log" >&2; exit 1; }
echo "mosquitto $("$mosquitto" -h 2>&1 | awk 'NR==1{print $3}') (pid $mpid), $clients idle clients"
measure mosquitto "$mpid" "$mport"
kill -TERM "$mpid" 2>/dev/null || true

# ---- mqrouter ----
have_mqr=0
if [ -n "$mqrouter_bin" ] && [ -x "$mqrouter_bin" ]; then
    qport=$(free_port)
    mkdir -p "$tmp/data"
    printf -- '-- idle memory benchmark: no rules\n' >"$tmp/rules.lua"
    "$mqrouter_bin" --listen "127.0.0.1:$qport" --data-dir "$tmp/data" --log-level warn \
        "$tmp/rules.lua" >"$tmp/mqrouter.log" 2>&1 &
    qpid=$!
    pids+=("$qpid")
    if wait_listen "$qport" "$qpid"; then
        echo "mqrouter (pid $qpid), $clients idle clients"
        measure mqrouter "$qpid" "$qport"
        have_mqr=1
    else
        echo "mqrouter: not listening within 5 s"; tail -5 "$tmp/mqrouter.log"
    fi
else
    echo "mqrouter: skipped (no --mqrouter / MQROUTER_BIN)"
fi

echo
printf '%-34s %12s %12s\n' "idle connections: $clients" mosquitto mqrouter
for f in before after per anon; do
    case $f in
    before) name="RSS before, kB" ;;
    after) name="RSS with clients, kB" ;;
    per) name="RSS bytes / connection" ;;
    anon) name="anonymous RSS bytes / connection" ;;
    esac
    printf '%-34s %12s %12s\n' "$name" "${R[mosquitto.$f]:--}" "$([ $have_mqr = 1 ] && echo "${R[mqrouter.$f]:--}" || echo -)"
done
echo "RESULT bench=idle_memory clients=$clients mosquitto_bytes_per_conn=${R[mosquitto.per]:-} mqrouter_bytes_per_conn=${R[mqrouter.per]:-}"
