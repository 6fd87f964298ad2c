#!/usr/bin/env bash
# upstream_receive.sh: the receiving benchmark of mqrouter's upstream
# sessions, the counterpart of upstream_forward.sh. Publishers
# (bench/loadgen.c) publish on bench/# to a *source* broker; a *receiver*
# takes the messages from the source and hands them to loadgen's subscriber:
# msgs/s, end-to-end latency and lost messages, in closed loop and at a
# fixed rate, QoS 0 and QoS 1. Three receivers, each with a fresh source, in
# the same run:
#
#   client    no hop: loadgen's subscriber subscribes on the source itself,
#             with SO_RCVLOWAT 64 KiB in closed loop (one wake-up per ~800
#             messages: more than any ordinary client gets); run again with
#             ordinary reads ("plain client", closed loop: what a
#             mosquitto_sub-style client gets, the baseline of the figure)
#   bridge    an edge Mosquitto with a `connection` bridge to the source
#             (topic bench/# in <qos>, cleansession true); the subscriber
#             on the edge
#   mqrouter  `mqrouter rules.lua`: one upstream session to the source
#             subscribes to bench/# (up:subscribe, no route: what a session
#             receives goes through the engine's router to the listener's
#             subscribers); the subscriber on the embedded listener
#
# Every broker runs on a free loopback port, is started here and killed on
# exit; nothing else is touched. A benchmark, not a test: it never fails on
# a figure, only when the setup breaks (a broker that does not start, a
# path that does not carry a probe, loadgen without a result or with a
# connection error). See bench/README.md for what it prints.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<EOF
usage: $0 [options]
  --mqrouter PATH   mqrouter binary (or env MQROUTER_BIN); the mqrouter
                    receiver is skipped without one
  --loadgen PATH    loadgen binary (or env LOADGEN); default: compile
                    $here/loadgen.c into a temporary directory
  --mosquitto PATH  (or env MOSQUITTO; default /usr/sbin/mosquitto)
  --duration S      measured seconds per run (10)
  --warmup S        seconds of load before measuring (2)
  --runs N          runs per mode; the table shows the median (3)
  --rate R          total msgs/s of the fixed-rate mode (10000)
  --qos LIST        QoS of the publishes and subscriptions: 0, 1 or 0,1 (0,1)
  --window W        per-publisher window of the closed-loop mode (loadgen's default)
  --publishers N    (4)   --payload BYTES (64)
  --persist on|off  the mqrouter session's persist option (on, the default;
                    on Paho a QoS 1 message received is written to the
                    inbox of data/upstream.db before it is acknowledged)
  --transport T     the mqrouter session's transport: native or paho
                    (the session's default when not given)
  --source KIND     the broker the publishers send to: mosquitto (default)
                    or mqrouter (its listener, with no rules: a source that
                    is not the bottleneck, to measure the receivers)
  --queue N         every broker's per-client queue: Mosquitto's
                    max_queued_messages, mqrouter's --limit max_queued (100000)
  --inflight N      every broker's QoS 1 messages in flight per client:
                    Mosquitto's max_inflight_messages, mqrouter's --limit
                    max_inflight (at most 1024) (1000)
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
inflight=1000
persist=true
transport=
source_kind=mosquitto
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
    --inflight) inflight=$2; shift 2 ;;
    --persist) case $2 in on) persist=true ;; off) persist=false ;; *) usage >&2; exit 2 ;; esac; shift 2 ;;
    --transport) case $2 in native | paho) transport=$2 ;; *) usage >&2; exit 2 ;; esac; shift 2 ;;
    --source) case $2 in mosquitto | mqrouter) source_kind=$2 ;; *) usage >&2; exit 2 ;; esac; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
qos_list=${qos_list//,/ }
for q in $qos_list; do
    case $q in 0 | 1) ;; *) echo "$0: --qos takes 0, 1 or 0,1" >&2; exit 2 ;; esac
done
if [ "$source_kind" = mqrouter ] && [ ! -x "${mqrouter_bin:-}" ]; then
    echo "$0: --source mqrouter needs --mqrouter (an executable)" >&2
    exit 2
fi

# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bench_tmpdir upstream_receive

loadgen_prepare

declare -A R # R[system.qos.mode.field.run] = value, from the RESULT lines

# One loadgen run: publishers to the source (pid spid, port sport),
# subscriber to the receiver (rpid, rport; for `client` rpid is empty and
# rport is sport); the CPU of the source and the receiver (src_cpu_pct,
# recv_cpu_pct) and of everything else.
run_one() {
    local sys=$1 q=$2 mode=$3 run=$4 spid=$5 sport=$6 rpid=$7 rport=$8
    loadgen_run "$sys.$q.$mode" "$run" "$mode" "$q" "$sport" "$rport" src "$spid" recv "$rpid"
}

bench_system() {
    local sys=$1 q=$2 spid=$3 sport=$4 rpid=$5 rport=$6 mode i
    for mode in closed rate; do
        for i in $(seq "$runs"); do
            echo "$sys QoS $q $mode run $i/$runs"
            run_one "$sys" "$q" "$mode" "$i" "$spid" "$sport" "$rpid" "$rport"
        done
    done
}

# A broker config with the settings every Mosquitto here shares:
# max_queued_messages (Mosquitto drops a message for an online client whose
# queue holds that many) and max_inflight_messages (its QoS 1 deliveries to
# one client in flight; default 20) raised so that no broker holds a
# receiver or loadgen back for its limits (see --queue, --inflight).
mosquitto_conf() {
    cat <<EOF
listener $1 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_queued_messages $queue
max_inflight_messages $inflight
persistence false
EOF
}

# An mqrouter with the listener limits matching mosquitto_conf (it sets
# TCP_NODELAY itself and keeps nothing here but persistent sessions' state).
# Sets mpid; returns 1 if it does not listen within 5 s.
start_mqrouter() {
    local name=$1 port=$2 rules=$3
    mkdir -p "$tmp/$name-data"
    "$mqrouter_bin" --listen "127.0.0.1:$port" --limit "max_queued=$queue" \
        --limit "max_inflight=$inflight" --data-dir "$tmp/$name-data" --no-watch \
        "$rules" >"$tmp/$name.log" 2>&1 &
    mpid=$!
    started_pids+=("$mpid")
    wait_listen "$port" "$mpid"
}

# The source broker, fresh for each system and QoS: sets spid and sport.
start_source() {
    local name=$1
    sport=$(free_port)
    if [ "$source_kind" = mqrouter ]; then
        echo 'local mq = require "mqrouter" -- a source with no rules' >"$tmp/$name.lua"
        if start_mqrouter "$name" "$sport" "$tmp/$name.lua"; then
            spid=$mpid
            return 0
        fi
        echo "$0: the source mqrouter did not listen on $sport:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
    mosquitto_conf "$sport" >"$tmp/$name.conf"
    "$mosquitto" -c "$tmp/$name.conf" >"$tmp/$name.log" 2>&1 &
    spid=$!
    started_pids+=("$spid")
    if ! wait_listen "$sport" "$spid"; then
        echo "$0: the source mosquitto did not listen on $sport:" >&2
        cat "$tmp/$name.log" >&2
        exit 1
    fi
}

busy=$(machine_busy_pct)
echo "machine: $(nproc) CPUs, $busy% of one CPU busy before the run (kernel $(uname -r))," \
    "mosquitto $("$mosquitto" -h 2>&1 | awk 'NR==1{print $3}')"
if [ "$busy" -gt 10 ]; then
    echo "WARNING: the machine is not idle; figures will be noisy (see other cpu in the table)"
fi

rc=0
have_mqr=0
mqr_note=
if [ -z "$mqrouter_bin" ]; then
    mqr_note="skipped (no --mqrouter and no MQROUTER_BIN)"
elif [ ! -x "$mqrouter_bin" ]; then
    mqr_note="skipped ($mqrouter_bin is not an executable)"
fi

for q in $qos_list; do
    # ---- client: loadgen's subscriber on the source itself ----
    start_source "source-client-qos$q"
    if ! probe_path "$sport" "$sport"; then
        echo "$0: the source did not deliver a probe within 5 s; its log:" >&2
        tail -n 20 "$tmp/source-client-qos$q.log" >&2
        exit 1
    fi
    echo "client QoS $q: source $source_kind on 127.0.0.1:$sport (pid $spid), subscriber on it"
    bench_system client "$q" "$spid" "$sport" "" "$sport"
    # The same subscriber reading as an ordinary client does (no
    # SO_RCVLOWAT: woken for every few packets, as mosquitto_sub is), closed
    # loop: the baseline the receiving figure is stated against.
    loadgen_extra=(--rcvlowat 0)
    for i in $(seq "$runs"); do
        echo "plain client QoS $q closed run $i/$runs"
        run_one plain "$q" closed "$i" "$spid" "$sport" "" "$sport"
    done
    loadgen_extra=()
    stop_pid "$spid"

    # ---- bridge: source -> edge Mosquitto (bridge `in`) ----
    # The bridge subscribes to bench/# on the source at the run's QoS; the
    # edge's max_queued_messages and max_inflight_messages are those of
    # every broker here (mosquitto_conf).
    start_source "source-bridge-qos$q"
    rport=$(free_port)
    {
        mosquitto_conf "$rport"
        cat <<EOF

connection source
address 127.0.0.1:$sport
clientid edge-bridge-qos$q
topic bench/# in $q
cleansession true
notifications false
keepalive_interval 60
EOF
        # mqrouter's listener refuses the bridge bit of try_private
        # (protocol level 0x84): plain MQTT 3.1.1 then
        if [ "$source_kind" = mqrouter ]; then echo "try_private false"; fi
    } >"$tmp/edge-qos$q.conf"
    "$mosquitto" -c "$tmp/edge-qos$q.conf" >"$tmp/edge-qos$q.log" 2>&1 &
    rpid=$!
    started_pids+=("$rpid")
    if ! wait_listen "$rport" "$rpid" || ! probe_path "$sport" "$rport"; then
        echo "$0: the bridge did not receive within 5 s; edge log:" >&2
        tail -n 20 "$tmp/edge-qos$q.log" >&2
        exit 1
    fi
    echo "bridge QoS $q: source $source_kind on 127.0.0.1:$sport (pid $spid)" \
        "-> edge mosquitto on 127.0.0.1:$rport (pid $rpid)"
    bench_system bridge "$q" "$spid" "$sport" "$rpid" "$rport"
    stop_pid "$rpid"
    stop_pid "$spid"

    # ---- mqrouter: source -> upstream session -> router -> listener ----
    [ -n "$mqr_note" ] && continue
    start_source "source-mqrouter-qos$q"
    transport_opt=
    [ -n "$transport" ] && transport_opt=", transport = \"$transport\""
    rport=$(free_port)
    cat >"$tmp/rules-qos$q.lua" <<EOF
-- receiving benchmark: the session subscribes to bench/# on the source; what
-- it receives goes through the engine's router to the listener's
-- subscribers (no route needed, docs/lua-api.md mq.upstream).
local mq = require "mqrouter"
local up = mq.upstream{ name = "source", broker = "tcp://127.0.0.1:$sport",
                        persist = $persist$transport_opt }
assert(up:subscribe("bench/#", $q))
-- Once a second, when something changed: what the session received and
-- what it could not pass on.
local seen = -1
mq.every(1, function()
  local s = up:status()
  if s.messages_received == seen then return end
  seen = s.messages_received
  mq.log.info(("receive: received %s dropped %s unprotected %s spilled %s not_kept %s (%s)"):format(
    s.messages_received, s.messages_dropped, s.messages_unprotected, s.messages_spilled,
    s.messages_not_kept, s.transport))
end)
EOF
    if start_mqrouter "mqrouter-qos$q" "$rport" "$tmp/rules-qos$q.lua" &&
        probe_path "$sport" "$rport"; then
        rpid=$mpid
        echo "mqrouter QoS $q: source $source_kind on 127.0.0.1:$sport (pid $spid)" \
            "-> mqrouter on 127.0.0.1:$rport (pid $rpid)"
        have_mqr=1
        bench_system mqrouter "$q" "$spid" "$sport" "$rpid" "$rport"
        sleep 1.2 # one more stats line
        echo "  mqrouter, last stats: $(grep -o 'receive: .*' "$tmp/mqrouter-qos$q.log" | tail -n 1)"
    else
        mqr_note="did not listen and receive within 5 s; its output: $(tail -n 5 "$tmp/mqrouter-qos$q.log")"
        rc=1
    fi
    stop_pid "$mpid"
    stop_pid "$spid"
done

# ---- tables ----
row() { # name qos mode field
    local name=$1 q=$2 mode=$3 field=$4 c b m
    c=$(median "client.$q.$mode" "$field")
    b=$(median "bridge.$q.$mode" "$field")
    m=$(median "mqrouter.$q.$mode" "$field")
    printf '%-28s %11s %11s %11s %10s %10s\n' "$name" "$c" "$b" "$m" "$(ratio "$m" "$c")" "$(ratio "$m" "$b")"
}
status_pair() { # sys qos
    if [ "$1" = mqrouter ] && [ "$have_mqr" != 1 ]; then echo skipped; return; fi
    echo "$(status_of "$1.$2.closed")/$(status_of "$1.$2.rate")"
}
for q in $qos_list; do
    echo
    echo "QoS $q receiving: $publishers publisher(s) -> source $source_kind -> receiver -> 1 subscriber" \
        "on bench/#, $payload-byte payloads, ${duration}s measured after ${warmup}s warm-up," \
        "median of $runs run(s); queue $queue, in-flight $inflight;" \
        "session persist $persist, transport ${transport:-default}"
    printf '%-28s %11s %11s %11s %10s %10s\n' metric client bridge mqrouter mqr/client mqr/bridge
    for mode in closed rate; do
        p=closed
        [ "$mode" = rate ] && p=rate$rate
        if [ "$mode" = closed ]; then
            row "$p msgs/s (higher=better)" "$q" "$mode" msgs_per_s
        else
            row "$p msgs/s" "$q" "$mode" msgs_per_s
        fi
        row "$p p50 us" "$q" "$mode" p50_us
        row "$p p99 us" "$q" "$mode" p99_us
        if [ "$mode" = rate ]; then
            row "$p p99.9 us" "$q" "$mode" p999_us
            row "$p max us" "$q" "$mode" max_us
        fi
        row "$p lost" "$q" "$mode" lost
        row "$p source cpu %" "$q" "$mode" src_cpu_pct
        row "$p receiver cpu %" "$q" "$mode" recv_cpu_pct
        row "$p loadgen cpu %" "$q" "$mode" loadgen_cpu_pct
        row "$p other cpu %" "$q" "$mode" other_cpu_pct
    done
    pl=$(median "plain.$q.closed" msgs_per_s)
    echo "plain client (mosquitto_sub-style reads, no SO_RCVLOWAT) on the source: $pl msgs/s closed loop," \
        "source cpu $(median "plain.$q.closed" src_cpu_pct)%; mqrouter $(ratio "$(median "mqrouter.$q.closed" msgs_per_s)" "$pl")×," \
        "bridge $(ratio "$(median "bridge.$q.closed" msgs_per_s)" "$pl")× of it"
    printf '%-28s %11s %11s %11s\n' "status closed / rate" \
        "$(status_pair client "$q")" "$(status_pair bridge "$q")" "$(status_pair mqrouter "$q")"
    # A run without a result, or one whose connection failed, is a broken
    # setup; a timeout (a stalled receiver) is a result and is only shown.
    for i in $(seq "$runs"); do
        case ${R[plain.$q.closed.status.$i]:-failed} in failed | error) rc=1 ;; esac
    done
    for sys in client bridge mqrouter; do
        [ "$sys" = mqrouter ] && [ "$have_mqr" != 1 ] && continue
        for mode in closed rate; do
            for i in $(seq "$runs"); do
                case ${R[$sys.$q.$mode.status.$i]:-failed} in failed | error) rc=1 ;; esac
            done
        done
    done
done
[ -n "$mqr_note" ] && echo "mqrouter: $mqr_note"
exit "$rc"
