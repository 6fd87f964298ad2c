#!/usr/bin/env bash
# upstream_forward.sh: the forwarding benchmark of mqrouter's upstream
# sessions. Publishers (bench/loadgen.c) connect to a forwarder, which sends
# everything on bench/# to an "upstream" Mosquitto where loadgen's subscriber
# listens: msgs/s, end-to-end latency and lost messages, in closed loop and
# at a fixed rate, QoS 0 and QoS 1. Two forwarders, in the same run:
#
#   bridge    an edge Mosquitto with a `connection` bridge to the upstream
#             (topic bench/# out <qos>, cleansession true)
#   mqrouter  `mqrouter rules.lua`: the embedded listener takes the
#             publishers, a route on bench/# calls up:publish() on one
#             upstream session at the publish's QoS
#
# Every broker runs on a free loopback port, is started here and killed on
# exit; nothing else is touched. A benchmark, not a test: it never passes or
# fails on a figure. See bench/README.md for what it prints.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
usage: $0 [options]
  --mqrouter PATH   mqrouter binary (or env MQROUTER_BIN); skipped if missing
                    or not forwarding within 5 s
  --loadgen PATH    loadgen binary (or env LOADGEN); default: compile
                    $here/loadgen.c into a temporary directory
  --mosquitto PATH  (or env MOSQUITTO; default /usr/sbin/mosquitto)
  --duration S      measured seconds per run (10)
  --warmup S        seconds of load before measuring (2)
  --runs N          runs per mode; the table shows the median (3)
  --rate R          total msgs/s of the fixed-rate mode (10000)
  --qos LIST        QoS of the publishes: 0, 1 or 0,1 (0,1)
  --window W        per-publisher window of the closed-loop mode (loadgen's default)
  --publishers N    (4)   --payload BYTES (64)
  --persist on|off  the mqrouter session's persist option: QoS 1 messages in
                    flight written to data/upstream.db (on, the default)
  --queue N         messages a forwarder may hold for the upstream before it
                    refuses or drops: the edge's max_queued_messages and the
                    session's max_buffered (100000)
  --upstream KIND   the broker both forwarders send to: mosquitto (default)
                    or mqrouter (its listener, with no rules: an upstream
                    that is not the bottleneck, to measure the forwarders)
  --pin             the upstream broker on CPU 1, the forwarder and loadgen on
                    CPU 0 (taskset): the same placement for both forwarders
                    (on loopback the sender's CPU does the receiver's TCP
                    work, so placement moves the upstream's speed)
  --transport T     the mqrouter session's transport: native or paho
                    (the session's default when not given)
  --inflight N      the edge's (and the upstream's) max_inflight_messages:
                    QoS 1 messages sent and not yet acknowledged (1000)
  --keep            keep the temporary directory (configs, logs, raw output)
EOF
}

mqrouter_bin=${MQROUTER_BIN:-}
loadgen=${LOADGEN:-}
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
duration=10
warmup=2
runs=3
rate=10000
qos_list=0,1
window=
publishers=4
payload=64
queue=100000
persist=true
inflight=1000
transport=
upstream_kind=mosquitto
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
    --qos) qos_list=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --publishers) publishers=$2; shift 2 ;;
    --payload) payload=$2; shift 2 ;;
    --queue) queue=$2; shift 2 ;;
    --persist) case $2 in on) persist=true ;; off) persist=false ;; *) usage; exit 2 ;; esac; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --pin) pin=1; shift ;;
    --upstream) case $2 in mosquitto | mqrouter) upstream_kind=$2 ;; *) usage; exit 2 ;; esac; shift 2 ;;
    --transport) case $2 in native | paho) transport=$2 ;; *) usage; exit 2 ;; esac; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
qos_list=${qos_list//,/ }
for q in $qos_list; do
    case $q in 0 | 1) ;; *) echo "$0: --qos takes 0, 1 or 0,1" >&2; exit 2 ;; esac
done

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
pin_up=() pin_fwd=() # taskset prefixes (--pin); loadgen_pin is lib.sh's
if [ "$pin" = 1 ]; then
    pin_up=(taskset -c 1)
    pin_fwd=(taskset -c 0)
    loadgen_pin=(taskset -c 0)
fi
bench_tmpdir upstream_forward

ncpu=$(nproc)

loadgen_prepare

declare -A R # R[system.qos.mode.field.run] = value, from the RESULT lines

# One loadgen run: publishers to the forwarder (pid fpid, port fport),
# subscriber to the upstream (upid, uport); the CPU of both brokers
# (fwd_cpu_pct, up_cpu_pct) and of everything else.
run_one() {
    local sys=$1 q=$2 mode=$3 run=$4 fpid=$5 fport=$6 upid=$7 uport=$8
    loadgen_run "$sys.$q.$mode" "$run" "$mode" "$q" "$fport" "$uport" fwd "$fpid" up "$upid"
}

bench_system() {
    local sys=$1 q=$2 fpid=$3 fport=$4 upid=$5 uport=$6 mode i
    for mode in closed rate; do
        for i in $(seq "$runs"); do
            echo "$sys QoS $q $mode run $i/$runs"
            run_one "$sys" "$q" "$mode" "$i" "$fpid" "$fport" "$upid" "$uport"
        done
    done
}

# The upstream broker, fresh for each system and QoS. max_queued_messages:
# Mosquitto drops a message for an online client whose queue holds that
# many; max_inflight_messages bounds its QoS 1 deliveries to loadgen's
# subscriber in flight (default 20). Both are raised so that the upstream,
# common to both systems, holds neither back (see --queue, --inflight).
start_upstream() {
    local name=$1
    uport=$(free_port)
    if [ "$upstream_kind" = mqrouter ]; then
        [ -x "${mqrouter_bin:-}" ] || { echo "$0: --upstream mqrouter needs --mqrouter" >&2; exit 2; }
        mkdir -p "$tmp/$name-data"
        echo 'local mq = require "mqrouter" -- an upstream with no rules' >"$tmp/$name.lua"
        # the same limits as a Mosquitto upstream gets (--queue, --inflight;
        # mqrouter caps in-flight at 1024)
        "${pin_up[@]}" "$mqrouter_bin" --listen "127.0.0.1:$uport" --data-dir "$tmp/$name-data" --no-watch \
            --limit "max_queued=$queue" --limit "max_inflight=$inflight" \
            "$tmp/$name.lua" >"$tmp/$name.log" 2>&1 &
        upid=$!
        started_pids+=("$upid")
        wait_listen "$uport" "$upid" && return 0
        echo "$0: the upstream mqrouter did not listen on $uport:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
    cat >"$tmp/$name.conf" <<EOF
listener $uport 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_queued_messages $queue
max_inflight_messages $inflight
persistence false
EOF
    "${pin_up[@]}" "$mosquitto" -c "$tmp/$name.conf" >"$tmp/$name.log" 2>&1 &
    upid=$!
    started_pids+=("$upid")
    if ! wait_listen "$uport" "$upid"; then
        echo "$0: the upstream mosquitto did not listen on $uport:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
}

# Is the machine quiet? Other work running now makes every figure noisy.
read -r s0 t0 < <(sys_ticks)
sleep 1
read -r s1 t1 < <(sys_ticks)
idle_check=$(awk -v b=$((s1 - s0)) -v t=$((t1 - t0)) -v n="$ncpu" 'BEGIN{printf "%.0f", t ? 100 * n * b / t : 0}')
echo "machine: $ncpu CPUs, $idle_check% of one CPU busy before the run (kernel $(uname -r))," \
    "mosquitto $("$mosquitto" -h 2>&1 | awk 'NR==1{print $3}')"
if [ "$idle_check" -gt 10 ]; then
    echo "WARNING: the machine is not idle; figures will be noisy (see other_cpu in the table)"
fi

have_mqr=0
mqr_note=
if [ -z "$mqrouter_bin" ]; then
    mqr_note="skipped (no --mqrouter and no MQROUTER_BIN)"
elif [ ! -x "$mqrouter_bin" ]; then
    mqr_note="skipped ($mqrouter_bin is not an executable)"
fi

for q in $qos_list; do
    # ---- ceiling: the publishers straight into the upstream ----
    # No forwarder: what the upstream itself takes from loadgen's publishers
    # and hands to the subscriber. No forwarder can deliver more through it.
    start_upstream "upstream-direct-qos$q"
    echo "direct QoS $q: publishers and subscriber on the upstream 127.0.0.1:$uport (pid $upid)"
    for i in $(seq "$runs"); do
        echo "direct QoS $q closed run $i/$runs"
        loadgen_run "direct.$q.closed" "$i" closed "$q" "$uport" "$uport" up "$upid"
    done
    stop_pid "$upid"

    # ---- bridge: edge Mosquitto -> upstream Mosquitto ----
    # The edge's max_queued_messages also bounds the bridge's queue towards
    # the upstream: past it the edge drops (QoS 0 and 1 alike), so it gets
    # --queue like the session's max_buffered. max_inflight_messages bounds
    # the bridge's QoS 1 publishes awaiting PUBACK (default 20: one round
    # trip per 20 messages would throttle the bridge, not measure it).
    start_upstream "upstream-bridge-qos$q"
    fport=$(free_port)
    cat >"$tmp/edge-qos$q.conf" <<EOF
listener $fport 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_queued_messages $queue
max_inflight_messages $inflight
persistence false

connection upstream
address 127.0.0.1:$uport
clientid edge-bridge-qos$q
topic bench/# out $q
cleansession true
notifications false
keepalive_interval 60
EOF
    # mqrouter's listener refuses the bridge bit of try_private (protocol
    # level 0x84): plain MQTT 3.1.1 then, which changes nothing one way
    [ "$upstream_kind" = mqrouter ] && echo "try_private false" >>"$tmp/edge-qos$q.conf"
    "${pin_fwd[@]}" "$mosquitto" -c "$tmp/edge-qos$q.conf" >"$tmp/edge-qos$q.log" 2>&1 &
    fpid=$!
    started_pids+=("$fpid")
    if ! wait_listen "$fport" "$fpid" || ! probe_path "$fport" "$uport"; then
        echo "$0: the bridge did not forward within 5 s; edge log:" >&2
        tail -n 20 "$tmp/edge-qos$q.log" >&2
        exit 1
    fi
    echo "bridge QoS $q: edge mosquitto on 127.0.0.1:$fport (pid $fpid)" \
        "-> upstream on 127.0.0.1:$uport (pid $upid)"
    bench_system bridge "$q" "$fpid" "$fport" "$upid" "$uport"
    stop_pid "$fpid"
    stop_pid "$upid"

    # ---- mqrouter: listener -> route -> upstream session ----
    [ -n "$mqr_note" ] && continue
    start_upstream "upstream-mqrouter-qos$q"
    transport_opt=
    [ -n "$transport" ] && transport_opt=", transport = \"$transport\""
    fport=$(free_port)
    mkdir -p "$tmp/mqrouter-data-qos$q"
    cat >"$tmp/rules-qos$q.lua" <<EOF
-- forwarding benchmark: everything the listener's clients publish on bench/#
-- goes to the upstream broker at the publish's QoS.
local mq = require "mqrouter"
local up = mq.session{ name = "upstream", broker = "tcp://127.0.0.1:$uport",
                       max_buffered = $queue, persist = $persist$transport_opt }
local routed, refused, why = 0, 0, nil
mq.route("bench/#", function(msg)
  if msg.origin ~= "listener" then return end
  routed = routed + 1
  local ok, err = up:publish(msg.topic, msg.payload, { qos = msg.qos })
  if not ok then refused = refused + 1; why = err end
end)
-- Once a second, when something changed: what the session refused.
local seen = -1
mq.every(1, function()
  if routed == seen then return end
  seen = routed
  local s = up:status()
  mq.log.info(("forward: routed %d refused %d (%s) sent %d delivered %d"):format(
    routed, refused, why or "-", s.messages_sent, s.delivered))
end)
EOF
    "${pin_fwd[@]}" "$mqrouter_bin" --listen "127.0.0.1:$fport" --data-dir "$tmp/mqrouter-data-qos$q" --no-watch \
        "$tmp/rules-qos$q.lua" >"$tmp/mqrouter-qos$q.log" 2>&1 &
    fpid=$!
    started_pids+=("$fpid")
    if wait_listen "$fport" "$fpid" && probe_path "$fport" "$uport"; then
        echo "mqrouter QoS $q: on 127.0.0.1:$fport (pid $fpid) -> upstream on 127.0.0.1:$uport (pid $upid)"
        have_mqr=1
        bench_system mqrouter "$q" "$fpid" "$fport" "$upid" "$uport"
        sleep 1.2 # one more stats line
        echo "  mqrouter, last stats: $(grep -o 'forward: .*' "$tmp/mqrouter-qos$q.log" | tail -n 1)"
    else
        mqr_note="skipped (not forwarding within 5 s); its output: $(tail -n 5 "$tmp/mqrouter-qos$q.log")"
    fi
    stop_pid "$fpid"
    stop_pid "$upid"
done

# ---- tables ----
row() { # name qos mode field
    local name=$1 q=$2 mode=$3 field=$4 b m
    b=$(median "bridge.$q.$mode" "$field")
    m=$(median "mqrouter.$q.$mode" "$field")
    printf '%-30s %14s %14s %10s\n' "$name" "$b" "$m" "$(ratio "$m" "$b")"
}
rc=0
for q in $qos_list; do
    echo
    echo "QoS $q forwarding: $publishers publisher(s) -> forwarder -> upstream $upstream_kind -> 1 subscriber" \
        "on bench/#, $payload-byte payloads, ${duration}s measured after ${warmup}s warm-up," \
        "median of $runs run(s); queue $queue, in-flight $inflight; session persist $persist, transport ${transport:-default}$([ "$pin" = 1 ] && echo "; pinned: upstream CPU 1, forwarder and loadgen CPU 0")"
    printf '%-30s %14s %14s %10s\n' metric bridge mqrouter "mqr/bridge"
    row "closed msgs/s (higher=better)" "$q" closed msgs_per_s
    row "closed p50 us" "$q" closed p50_us
    row "closed p99 us" "$q" closed p99_us
    row "closed lost" "$q" closed lost
    row "closed forwarder cpu %" "$q" closed fwd_cpu_pct
    row "closed upstream cpu %" "$q" closed up_cpu_pct
    row "closed loadgen cpu %" "$q" closed loadgen_cpu_pct
    row "closed other cpu %" "$q" closed other_cpu_pct
    row "rate${rate} msgs/s" "$q" rate msgs_per_s
    row "rate${rate} p50 us" "$q" rate p50_us
    row "rate${rate} p99 us" "$q" rate p99_us
    row "rate${rate} p99.9 us" "$q" rate p999_us
    row "rate${rate} max us" "$q" rate max_us
    row "rate${rate} lost" "$q" rate lost
    row "rate${rate} forwarder cpu %" "$q" rate fwd_cpu_pct
    row "rate${rate} upstream cpu %" "$q" rate up_cpu_pct
    row "rate${rate} other cpu %" "$q" rate other_cpu_pct
    for mode in closed rate; do
        echo "spread over $runs run(s), min-max: $mode msgs/s bridge $(spread "bridge.$q.$mode" msgs_per_s)," \
            "mqrouter $(spread "mqrouter.$q.$mode" msgs_per_s); p99 us bridge $(spread "bridge.$q.$mode" p99_us)," \
            "mqrouter $(spread "mqrouter.$q.$mode" p99_us)"
    done
    d=$(median "direct.$q.closed" msgs_per_s)
    echo "upstream ceiling, no forwarder (publishers straight into the upstream): $d msgs/s closed loop," \
        "upstream cpu $(median "direct.$q.closed" up_cpu_pct)%, lost $(median "direct.$q.closed" lost);" \
        "bridge $(ratio "$(median "bridge.$q.closed" msgs_per_s)" "$d")×," \
        "mqrouter $(ratio "$(median "mqrouter.$q.closed" msgs_per_s)" "$d")× of it"
    printf '%-30s %14s %14s\n' "status closed / rate" \
        "$(status_of "bridge.$q.closed")/$(status_of "bridge.$q.rate")" \
        "$([ "$have_mqr" = 1 ] && echo "$(status_of "mqrouter.$q.closed")/$(status_of "mqrouter.$q.rate")" || echo skipped)"
    if [ "$(status_of "bridge.$q.closed")" != ok ] || [ "$(status_of "bridge.$q.rate")" != ok ]; then
        rc=1
    fi
done
[ -n "$mqr_note" ] && echo "mqrouter: $mqr_note"
exit "$rc"
