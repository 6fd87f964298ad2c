#!/usr/bin/env bash
# listener_compare.sh: runs the listener benchmark (bench/loadgen.c: fan-in,
# 4 publishers -> 1 wildcard subscriber, or fan-out with --publishers 1
# --subscribers 50; QoS 0 or --qos 1) against Mosquitto and, when
# it is given and starts, against mqrouter's embedded listener, then prints
# both side by side with the ratio mqrouter/mosquitto.
#
# It only ever touches brokers it started itself, on free loopback ports, and
# kills them on exit. It is a benchmark, not a test: it never decides pass or
# fail on the figures. See bench/README.md for what it prints.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
usage: $0 [options]
  --mqrouter PATH   mqrouter binary (or env MQROUTER_BIN); skipped if missing
                    or not listening within 5 s
  --loadgen PATH    loadgen binary (or env LOADGEN); default: compile
                    $here/loadgen.c into a temporary directory
  --mosquitto PATH  (or env MOSQUITTO; default /usr/sbin/mosquitto)
  --duration S      measured seconds per run (10)
  --warmup S        seconds of load before measuring (2)
  --runs N          runs per mode; the table shows the median (3)
  --rate R          total msgs/s of the fixed-rate mode (40000)
  --window W        per-publisher window of the closed-loop mode (loadgen's default)
  --publishers N    (4)   --subscribers N (1)   --qos 0|1 (0)
  --payload BYTES   (64)  --protocol 4|5 (4)
  --batch N         loadgen's most PUBLISH packets per send() (1024); 1 =
                    one write per message, as ordinary clients do
  --rcvlowat B      loadgen's subscriber SO_RCVLOWAT (-1 automatic: 64 KiB in
                    closed loop); 0 = woken for every arrival, as ordinary
                    clients are
  --inflight N      both brokers' QoS 1/2 messages in flight per client:
                    Mosquitto's max_inflight_messages, mqrouter's --limit
                    max_inflight (1000; their defaults differ: 20 and 32)
  --pin             the broker on CPU 1, loadgen on CPU 0 (taskset)
  --idle N          N more clients connected to the broker, idle (each
                    subscribed to a topic of its own), while loadgen runs:
                    bench/idle_conns.c (or env IDLE_CONNS) (0)
  --modes LIST      closed, rate or closed,rate (closed,rate); many
                    publishers (--publishers 1000) want rate alone
  --keep            keep the temporary directory (configs, logs, raw output)
EOF
}

mqrouter_bin=${MQROUTER_BIN:-}
loadgen=${LOADGEN:-}
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
duration=10
warmup=2
runs=3
rate=40000
window=
publishers=4
subscribers=1
qos=0
payload=64
protocol=4
batch=1024
rcvlowat=-1
idle_clients=0
idle_bin=${IDLE_CONNS:-}
modes="closed rate"
inflight=1000
pin=0
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --mqrouter) mqrouter_bin=$2; shift 2 ;;
    --loadgen) loadgen=$2; shift 2 ;;
    --mosquitto) mosquitto=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --publishers) publishers=$2; shift 2 ;;
    --subscribers) subscribers=$2; shift 2 ;;
    --qos) qos=$2; shift 2 ;;
    --payload) payload=$2; shift 2 ;;
    --protocol) protocol=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --rcvlowat) rcvlowat=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --pin) pin=1; shift ;;
    --modes) modes=${2//,/ }; shift 2 ;;
    --idle) idle_clients=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_tmpdir listener_compare

ncpu=$(nproc)

if [ -z "$loadgen" ]; then
    loadgen=$tmp/loadgen
    cc -O2 -std=c11 -Wall -Wextra -pthread "$here/loadgen.c" -o "$loadgen"
fi
[ -x "$loadgen" ] || { echo "$0: loadgen '$loadgen' is not executable" >&2; exit 1; }

if [ "$idle_clients" -gt 0 ]; then
    # the brokers and idle_conns each hold that many sockets
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    if [ -z "$idle_bin" ]; then
        idle_bin=$tmp/idle_conns
        cc -O2 -std=c11 -Wall -Wextra "$here/idle_conns.c" -o "$idle_bin"
    fi
fi
common=(--publishers "$publishers" --subscribers "$subscribers" --qos "$qos"
    --payload "$payload" --protocol "$protocol"
    --duration "$duration" --warmup "$warmup" --batch "$batch" --rcvlowat "$rcvlowat")
pin_broker=() pin_loadgen=()
if [ "$pin" = 1 ]; then
    pin_broker=(taskset -c 1)
    pin_loadgen=(taskset -c 0)
fi
closed_args=()
[ -n "$window" ] && closed_args=(--window "$window")

declare -A R # R[broker.mode.field.run] = value, from the RESULT lines

# One loadgen run; records the RESULT fields plus the broker's CPU and the
# CPU used by everything that is neither the broker nor loadgen.
run_one() {
    local label=$1 bpid=$2 port=$3 mode=$4 run=$5
    local args=("${common[@]}" --host 127.0.0.1 --port "$port" --label "$label")
    if [ "$mode" = rate ]; then args+=(--rate "$rate"); else args+=("${closed_args[@]}"); fi
    local out=$tmp/$label.$mode.$run.out
    local b0 s0 t0 b1 s1 t1 lg
    b0=$(proc_ticks "$bpid")
    read -r s0 t0 < <(sys_ticks)
    local start=$EPOCHREALTIME
    # In the background so that a signal reaches the trap at once (bash
    # holds traps while a foreground child runs); `times` before and after
    # gives loadgen's CPU over its whole life.
    times >"$out.t0"
    "${pin_loadgen[@]}" "$loadgen" "${args[@]}" >"$out" 2>"$out.err" &
    helper_pid=$!
    wait "$helper_pid" || true
    helper_pid=
    times >"$out.t1"
    local wall
    wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')
    b1=$(proc_ticks "$bpid")
    read -r s1 t1 < <(sys_ticks)
    lg=$(cat "$out.t0" "$out.t1" | awk '
        function sec(x, m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return m * 60 + x }
        NR == 2 { c0 = sec($1) + sec($2) } NR == 4 { c1 = sec($1) + sec($2) } END { print c1 - c0 }')
    grep -v '^RESULT' "$out" | sed 's/^/  /' || true
    sed 's/^/  /' "$out.err" >&2
    local line
    line=$(grep '^RESULT' "$out" || true)
    if [ -z "$line" ]; then
        R[$label.$mode.status.$run]=failed
        return
    fi
    local kv
    for kv in ${line#RESULT }; do
        R[$label.$mode.${kv%%=*}.$run]=${kv#*=}
    done
    R[$label.$mode.broker_cpu_pct.$run]=$(awk -v d=$((b1 - b0)) -v hz="$clk_tck" -v w="$wall" \
        'BEGIN{printf "%.0f", 100 * d / hz / w}')
    R[$label.$mode.other_cpu_pct.$run]=$(awk -v busy=$((s1 - s0)) -v b=$((b1 - b0)) -v hz="$clk_tck" \
        -v w="$wall" -v lg="${lg:-0}" 'BEGIN{o = 100 * ((busy - b) / hz - lg) / w; printf "%.0f", o < 0 ? 0 : o}')
    echo "  broker cpu ${R[$label.$mode.broker_cpu_pct.$run]}%, everything else" \
        "${R[$label.$mode.other_cpu_pct.$run]}% (should be ~0)"
}

# Holds idle_clients idle connections on the broker at port until
# stop_idle; returns once they are all connected and subscribed.
idle_pid=
start_idle() {
    local label=$1 port=$2 i
    [ "$idle_clients" -gt 0 ] || return 0
    "$idle_bin" --port "$port" --clients "$idle_clients" --hold 3600 --timeout 90 \
        >"$tmp/$label.idle.out" 2>"$tmp/$label.idle.err" &
    idle_pid=$!
    started_pids+=("$idle_pid")
    for i in $(seq 1200); do
        grep -q '^READY' "$tmp/$label.idle.out" && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^READY' "$tmp/$label.idle.out"; then
        echo "$0: $idle_clients idle clients did not connect to $label:" >&2
        cat "$tmp/$label.idle.err" >&2
        exit 1
    fi
    echo "  $label: $(cat "$tmp/$label.idle.out") idle clients held"
}
stop_idle() {
    [ -n "$idle_pid" ] && stop_pid "$idle_pid"
    idle_pid=
}

bench_broker() {
    local label=$1 pid=$2 port=$3 mode i
    start_idle "$label" "$port"
    for mode in $modes; do
        for i in $(seq "$runs"); do
            echo "$label $mode run $i/$runs"
            run_one "$label" "$pid" "$port" "$mode" "$i"
        done
    done
    stop_idle
}

# Is the machine quiet? Other work running now makes every figure noisy.
read -r s0 t0 < <(sys_ticks)
sleep 1
read -r s1 t1 < <(sys_ticks)
idle_check=$(awk -v b=$((s1 - s0)) -v t=$((t1 - t0)) -v n="$ncpu" 'BEGIN{printf "%.0f", t ? 100 * n * b / t : 0}')
echo "machine: $ncpu CPUs, $idle_check% of one CPU busy before the run (kernel $(uname -r))"
if [ "$idle_check" -gt 10 ]; then
    echo "WARNING: the machine is not idle; figures will be noisy (see other_cpu in the table)"
fi

# ---- Mosquitto ----
# max_queued_messages: Mosquitto 2.0 drops a QoS 0 message for an online
# subscriber once that client's outgoing packet queue holds this many. The
# closed loop keeps at most publishers x window messages in flight; the
# fixed-rate mode can build a backlog if the broker falls behind. 1,000,000
# (about 100 MB at worst) is far above both, so nothing is dropped for being
# slow; `lost` in the results would show it if it were.
mport=$(free_port)
cat >"$tmp/mosquitto.conf" <<EOF
listener $mport 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_queued_messages 1000000
max_inflight_messages $inflight
max_connections -1
persistence false
log_type error
log_type warning
EOF
"${pin_broker[@]}" "$mosquitto" -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
mpid=$!
started_pids+=("$mpid")
if ! wait_listen "$mport" "$mpid"; then
    echo "$0: mosquitto did not start listening on $mport:" >&2
    cat "$tmp/mosquitto.log" >&2
    exit 1
fi
echo "mosquitto $("$mosquitto" -h 2>&1 | awk 'NR==1{print $3}') on 127.0.0.1:$mport (pid $mpid)"
bench_broker mosquitto "$mpid" "$mport"
stop_pid "$mpid"

# ---- mqrouter ----
have_mqr=0
if [ -z "$mqrouter_bin" ]; then
    echo "mqrouter: skipped (no --mqrouter and no MQROUTER_BIN)"
elif [ ! -x "$mqrouter_bin" ]; then
    echo "mqrouter: skipped ($mqrouter_bin is not an executable)"
else
    qport=$(free_port)
    mkdir -p "$tmp/mqrouter-data"
    # No routes: the embedded listener alone does the fan-in.
    printf -- '-- listener benchmark: no rules, only the embedded listener\n' >"$tmp/rules.lua"
    # the same limits and log level as Mosquitto's (max_inflight is capped
    # at 1024 by mqrouter)
    "${pin_broker[@]}" "$mqrouter_bin" --listen "127.0.0.1:$qport" --data-dir "$tmp/mqrouter-data" \
        --limit "max_queued=1000000" --limit "max_inflight=$inflight" --log-level warn "$tmp/rules.lua" \
        >"$tmp/mqrouter.log" 2>&1 &
    qpid=$!
    started_pids+=("$qpid")
    if wait_listen "$qport" "$qpid"; then
        echo "mqrouter on 127.0.0.1:$qport (pid $qpid)"
        have_mqr=1
        bench_broker mqrouter "$qpid" "$qport"
    else
        echo "mqrouter: skipped (not listening on $qport within 5 s); its output:"
        tail -n 20 "$tmp/mqrouter.log" | sed 's/^/  /'
    fi
    stop_pid "$qpid"
fi

# ---- table ----
row() { # name mode field better
    local name=$1 mode=$2 field=$3 m q
    m=$(median "mosquitto.$mode" "$field")
    if [ "$have_mqr" = 1 ]; then
        q=$(median "mqrouter.$mode" "$field")
        printf '%-28s %14s %14s %10s\n' "$name" "$m" "$q" "$(ratio "$q" "$m")"
    else
        printf '%-28s %14s %14s %10s\n' "$name" "$m" "-" "-"
    fi
}
echo
echo "QoS $qos, $publishers publisher(s) -> $subscribers subscriber(s) on bench/#, $payload-byte payloads" \
    "(msgs/s: deliveries to all subscribers; rate: publishes/s)," \
    "MQTT $([ "$protocol" = 5 ] && echo 5 || echo 3.1.1), ${duration}s measured after ${warmup}s warm-up," \
    "median of $runs run(s);$([ "$idle_clients" -gt 0 ] && echo " $idle_clients more clients connected, idle;") loadgen --batch $batch --rcvlowat $rcvlowat, in-flight $inflight$([ "$pin" = 1 ] && echo ", pinned: broker CPU 1, loadgen CPU 0")"
printf '%-28s %14s %14s %10s\n' metric mosquitto mqrouter "mqr/mosq"
row "closed msgs/s (higher=better)" closed msgs_per_s
row "closed p50 us" closed p50_us
row "closed p99 us" closed p99_us
row "closed lost" closed lost
row "closed broker cpu %" closed broker_cpu_pct
row "closed loadgen cpu %" closed loadgen_cpu_pct
row "closed other cpu %" closed other_cpu_pct
row "rate${rate} msgs/s" rate msgs_per_s
row "rate${rate} p50 us" rate p50_us
row "rate${rate} p99 us" rate p99_us
row "rate${rate} p99.9 us" rate p999_us
row "rate${rate} max us" rate max_us
row "rate${rate} lost" rate lost
row "rate${rate} broker cpu %" rate broker_cpu_pct
us_row() { # broker CPU per message at the fixed rate, in microseconds
    local m q
    m=$(median "mosquitto.rate" broker_cpu_pct)
    q=$([ "$have_mqr" = 1 ] && median "mqrouter.rate" broker_cpu_pct || echo -)
    m=$(awk -v c="$m" -v r="$rate" 'BEGIN{if (c == "-") print "-"; else printf "%.2f", c * 1e4 / r}')
    q=$(awk -v c="$q" -v r="$rate" 'BEGIN{if (c == "-") print "-"; else printf "%.2f", c * 1e4 / r}')
    printf '%-28s %14s %14s %10s\n' "rate${rate} broker cpu us/msg" "$m" "$q" "$(ratio "$q" "$m")"
}
us_row
row "rate${rate} loadgen cpu %" rate loadgen_cpu_pct
row "rate${rate} other cpu %" rate other_cpu_pct
for m in $modes; do
    echo "spread over $runs run(s), min-max: $m msgs/s mosquitto $(spread "mosquitto.$m" msgs_per_s)," \
        "mqrouter $(spread "mqrouter.$m" msgs_per_s); p99 us mosquitto $(spread "mosquitto.$m" p99_us)," \
        "mqrouter $(spread "mqrouter.$m" p99_us)"
done
modes_status() { # broker: the status of each mode run, "/"-separated
    local m out=
    for m in $modes; do out=${out:+$out/}$(status_of "$1.$m"); done
    echo "$out"
}
printf '%-28s %14s %14s\n' "status ${modes// / / }" "$(modes_status mosquitto)" \
    "$([ "$have_mqr" = 1 ] && modes_status mqrouter || echo skipped)"

for m in $modes; do [ "$(status_of "mosquitto.$m")" = ok ] || exit 1; done
