#!/usr/bin/env bash
# A retained QoS 1 message is acknowledged only once it is durable: after
# mosquitto_pub has its PUBACK, kill -9 of mqrouter loses nothing, and a new
# mqrouter on the same data directory delivers every retained message.
source "$(dirname "$0")/lib.sh"

port=$(free_port)
printf 'local mq = require "mqrouter"\n' >"$WORK/rules.lua"
start_mqrouter "$port" "$WORK/data" "$WORK/rules.lua"

for i in $(seq 1 50); do
  mosquitto_pub -p "$port" -q 1 -r -t "devices/d$i/state" -m "on-$i" || fail "publish $i"
done
kill -9 "$MQR_PID"
wait "$MQR_PID" 2>/dev/null || true
note "50 retained QoS 1 messages acknowledged, then kill -9"

start_mqrouter "$port" "$WORK/data" "$WORK/rules.lua"
mosquitto_sub -p "$port" -t 'devices/#' -v -C 50 -W 10 >"$WORK/got" || fail "got only $(wc -l <"$WORK/got") of 50"
for i in $(seq 1 50); do
  grep -qx "devices/d$i/state on-$i" "$WORK/got" || fail "devices/d$i/state missing after kill -9"
done
note "all 50 retained messages survived kill -9"
