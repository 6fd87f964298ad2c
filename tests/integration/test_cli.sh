#!/usr/bin/env bash
# The command line: --version, --help, --check on good and broken scripts,
# and bad options.
source "$(dirname "$0")/lib.sh"

"$MQROUTER_BIN" --version | grep -q "^mqrouter [0-9]" || fail "--version"
"$MQROUTER_BIN" --help | grep -q -- "--listen HOST:PORT" || fail "--help"

# --check runs the script in a scratch engine: it writes nothing, here the
# default ./data it would otherwise create
mkdir "$WORK/cwd"
out=$(cd "$WORK/cwd" && "$MQROUTER_BIN" --check "$MQROUTER_SRC/scripts/examples/rules.lua" 2>&1) ||
  fail "--check good: $out"
grep -q "OK" <<<"$out" || fail "--check good said: $out"
[[ -z "$(ls -A "$WORK/cwd")" ]] || fail "--check left files behind: $(ls -A "$WORK/cwd")"

printf 'local mq = require "mqrouter"\nmq.route("a/#", function(m)\n' >"$WORK/broken.lua"
if out=$("$MQROUTER_BIN" --check "$WORK/broken.lua" 2>&1); then fail "--check accepted a broken script"; fi
grep -q "broken.lua:3:" <<<"$out" || fail "--check did not name file and line: $out"

printf 'local mq = require "mqrouter"\nmq.route("a/#/b", function() end)\n' >"$WORK/badfilter.lua"
if out=$("$MQROUTER_BIN" --check "$WORK/badfilter.lua" 2>&1); then fail "--check accepted a bad filter"; fi
grep -q "badfilter.lua:2: mq.route: invalid route filter 'a/#/b'" <<<"$out" || fail "bad filter: $out"

# every listener limit key of docs/listener.md is a --limit key
out=$(cd "$WORK/cwd" && "$MQROUTER_BIN" --limit v311_session_expiry_s=3600 --limit max_qos=1 \
  --check "$MQROUTER_SRC/scripts/examples/rules.lua" 2>&1) || fail "--limit keys refused: $out"
if out=$("$MQROUTER_BIN" --limit no_such_limit=1 --check "$MQROUTER_SRC/scripts/examples/rules.lua" 2>&1); then
  fail "an unknown --limit key was accepted"
fi
grep -q "no_such_limit" <<<"$out" || fail "the unknown --limit key is not named: $out"
if "$MQROUTER_BIN" --listen nonsense x.lua 2>/dev/null; then fail "bad --listen accepted"; fi
if "$MQROUTER_BIN" 2>/dev/null; then fail "no script accepted"; fi
"$MQROUTER_BIN" --no-listen --data-dir "$WORK/d" "$WORK/missing.lua" 2>"$WORK/err" && fail "missing script accepted"
grep -q "cannot open" "$WORK/err" || fail "missing script error: $(cat "$WORK/err")"
note "cli ok"

# with nothing to serve, mqrouter still runs until told to stop; SIGHUP reloads
printf 'local mq = require "mqrouter"\n' >"$WORK/empty.lua"
"$MQROUTER_BIN" --no-listen --data-dir "$WORK/d2" "$WORK/empty.lua" >"$WORK/run.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_for "$WORK/run.log" "loaded"
sleep 0.3
kill -0 "$pid" 2>/dev/null || fail "mqrouter exited without being told to"
kill -HUP "$pid"
wait_for "$WORK/run.log" "reloaded"
kill -INT "$pid"
wait "$pid" && rc=0 || rc=$?
[[ $rc -eq 0 ]] || fail "exit status $rc after SIGINT"
[[ -f "$WORK/d2/mqrouter.db" ]] || fail "no database in the data dir"
note "runs until SIGINT, SIGHUP reloads"
