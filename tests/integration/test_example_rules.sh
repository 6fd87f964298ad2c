#!/usr/bin/env bash
# The README's walk-through with real clients: mosquitto_pub -> mqrouter ->
# the example rule -> mosquitto_sub; a reading of "abc" is refused with a
# logged error and the engine keeps going; a clean stop on SIGTERM.
source "$(dirname "$0")/lib.sh"

port=$(free_port)
cp "$MQROUTER_SRC/scripts/examples/rules.lua" "$WORK/rules.lua"
start_mqrouter "$port" "$WORK/data" "$WORK/rules.lua"

# -d prints the SUBACK: nothing is published before the subscription is in place
stdbuf -oL mosquitto_sub -p "$port" -t 'alerts/#' -v -C 1 -W 10 -d >"$WORK/sub.out" 2>&1 &
sub=$!
PIDS+=("$sub")
wait_for "$WORK/sub.out" "received SUBACK"
mosquitto_pub -p "$port" -t sensors/room1/temperature -m abc
mosquitto_pub -p "$port" -t sensors/room1/temperature -m 20
mosquitto_pub -p "$port" -t sensors/room1/temperature -m 31
wait "$sub" || fail "mosquitto_sub got no alert"
grep -qx 'alerts/room1/temperature {"room":"room1","value":31,"limit":30}' "$WORK/sub.out" \
  || fail "unexpected alert: $(cat "$WORK/sub.out")"
note "alert delivered"

grep -q 'rules.lua:20: reading "abc" on sensors/room1/temperature is not a number' "$WORK/mqrouter.log" \
  || { cat "$WORK/mqrouter.log"; fail "the bad reading was not logged with file and line"; }
note "bad reading logged with file and line"

kill -TERM "$MQR_PID"
wait "$MQR_PID" && rc=0 || rc=$?
[[ $rc -eq 0 ]] || fail "mqrouter exited with $rc on SIGTERM"
grep -q "stopped" "$WORK/mqrouter.log" || fail "no clean stop logged"
note "clean stop on SIGTERM"
