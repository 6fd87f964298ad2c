#!/usr/bin/env bash
# The embedding example (scripts/examples/embed/embed.c) as built in-tree:
# a real MQTT client (mosquitto_sub) subscribes on the listener the host
# opened on a free port while the host waits, then the host's timer
# publishes 20 readings; the rules (calling the host's C function) turn the
# 9 above the limit into alerts that the client, the C subscription and the
# C queue consumer all see; then a clean stop and uv_loop_close() == 0.
source "$(dirname "$0")/lib.sh"

: "${MQROUTER_EMBED_BIN:?MQROUTER_EMBED_BIN must point at the embed example}"
"$MQROUTER_EMBED_BIN" 1500 >"$WORK/embed.out" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_for "$WORK/embed.out" "listening on 127.0.0.1:"
port=$(sed -n 's/^embed: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/embed.out")
mosquitto_sub -p "$port" -t 'alerts/#' -v -C 9 -W 10 >"$WORK/sub.out" &
sub=$!
PIDS+=("$sub")
wait "$pid" && rc=0 || rc=$?
[[ $rc -eq 0 ]] || { cat "$WORK/embed.out"; fail "the example exited with $rc"; }
wait "$sub" || { cat "$WORK/sub.out"; fail "mosquitto_sub did not get 9 alerts"; }
note "example ran; the MQTT client got $(wc -l <"$WORK/sub.out") alerts"

expected=$(for v in 31 32 33 34 35 36 37 38 39; do echo "alerts/room1 $v"; done)
[[ "$(cat "$WORK/sub.out")" == "$expected" ]] || { cat "$WORK/sub.out"; fail "wrong alerts"; }
grep -q "host ticks 20, host_limit calls 20, alerts seen by C 9, jobs done 9, job values sum 315, queue acked 9 depth 0" \
  "$WORK/embed.out" || { cat "$WORK/embed.out"; fail "wrong counts"; }
grep -qx "embed: uv_loop_close ok" "$WORK/embed.out" || fail "loop not closed cleanly"
note "counts right: 20 ticks and C calls, 9 alerts to C subscription, queue and client; loop closed"
