#!/usr/bin/env bash
# test_ws_mqttjs.sh — MQTT.js (the JavaScript client, from npm) against
# mqrouter's WebSocket listener: QoS 0 and 1 both ways, MQTT 3.1.1 and 5
# (tests/integration/js/mqttjs_ws.js).
#
# `npm install mqtt` goes into $MQROUTER_BUILD/npm-mqttjs once and is reused.
# node and npm come from deps/debian-packages.txt; without them, or when the
# install fails, the test fails with the reason.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

command -v node >/dev/null && command -v npm >/dev/null ||
  fail "node and npm are needed (./dev setup installs them: deps/debian-packages.txt)"
dir=${MQROUTER_BUILD:-$WORK}/npm-mqttjs
if [[ ! -f "$dir/node_modules/mqtt/package.json" ]]; then
  mkdir -p "$dir"
  note "npm install mqtt@5 into $dir"
  (cd "$dir" && timeout 240 npm install --no-audit --no-fund --silent mqtt@5 >"$WORK/npm.log" 2>&1) || {
    cat "$WORK/npm.log" >&2
    fail "npm install mqtt failed (is the npm registry reachable?)"
  }
fi

tcp=$(free_port)
ws=$(free_port)
echo "-- no rules" >"$WORK/rules.lua"
"$MQROUTER_BIN" --listen "127.0.0.1:$tcp" --listen-ws "127.0.0.1:$ws" --data-dir "$WORK/data" \
  --no-watch "$WORK/rules.lua" >>"$WORK/mqrouter.log" 2>&1 &
PIDS+=($!)
wait_port "$ws"
NODE_PATH="$dir/node_modules" timeout 30 node "$here/js/mqttjs_ws.js" "$ws" || {
  echo "--- mqrouter log:"; tail -40 "$WORK/mqrouter.log"
  fail "MQTT.js over WebSocket"
}
echo "1 passed, 0 failed"
