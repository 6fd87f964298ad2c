# lib.sh — shared by the integration tests: free ports, waiting, starting
# mqrouter and Mosquitto, and cleaning up whatever a test started.
set -euo pipefail

: "${MQROUTER_BIN:?MQROUTER_BIN must point at the mqrouter executable}"
: "${MQROUTER_SRC:?MQROUTER_SRC must point at the source tree}"

WORK=$(mktemp -d /tmp/mqr-it.XXXXXX)
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "--- $*"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: until something accepts on 127.0.0.1:PORT
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-10}))
  until python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "nothing listening on port $port"
    sleep 0.05
  done
}

# wait_for FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN
wait_for() {
  local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-10}))
  until grep -q -- "$pattern" "$file" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "--- $file:"; cat "$file" >&2 || true; fail "no '$pattern' in $file"; }
    sleep 0.05
  done
}

# start_mqrouter PORT DATA_DIR SCRIPT [args...]: sets MQR_PID, log in $WORK/mqrouter.log
start_mqrouter() {
  local port=$1 data=$2 script=$3; shift 3
  "$MQROUTER_BIN" --listen "127.0.0.1:$port" --data-dir "$data" "$@" "$script" \
    >>"$WORK/mqrouter.log" 2>&1 &
  MQR_PID=$!
  PIDS+=("$MQR_PID")
  wait_port "$port"
}

# start_mosquitto PORT: sets MOSQ_PID
start_mosquitto() {
  local port=$1
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" \
    >"$WORK/mosquitto-$port.conf"
  /usr/sbin/mosquitto -c "$WORK/mosquitto-$port.conf" >"$WORK/mosquitto-$port.log" 2>&1 &
  MOSQ_PID=$!
  PIDS+=("$MOSQ_PID")
  wait_port "$port"
}
