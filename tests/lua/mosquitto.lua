-- mosquitto.lua — real Mosquitto brokers on free loopback ports for the
-- example specs, and a background mosquitto_sub whose output a spec reads.
-- Child processes run without the sanitizer runtimes an ASan build preloads
-- into the luajit host.
local h = require "helpers"

local M = {}

local function clean(cmd)
  return "env -u LD_PRELOAD sh -c '" .. cmd:gsub("'", "'\\''") .. "'"
end

function M.sh(cmd)
  local ok = os.execute(clean(cmd))
  return ok == 0 or ok == true
end

-- M.wait_sh(cmd [, want = true]) -> whether cmd came to succeed (want) or
-- to fail (want = false) within 5 s, polled every 50 ms: a server starting
-- or stopping.
function M.wait_sh(cmd, want)
  if want == nil then want = true end
  for _ = 1, 100 do
    if M.sh(cmd) == want then return true end
    M.sh("sleep 0.05")
  end
  return false
end

-- The pid of this process (the busted host).
local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*l"):match("^(%d+)"))
  f:close()
  return pid
end

-- M.reap_with_us(cmd): runs cmd (which stops a server) once this process
-- is gone, however it ends: a spec killed by ctest's timeout leaves no
-- server behind. A watchdog that polls, not a wait in a test.
function M.reap_with_us(cmd)
  M.sh(("(while kill -0 %d 2>/dev/null; do sleep 1; done; %s) >/dev/null 2>&1 &")
    :format(own_pid(), cmd))
end

function M.free_port()
  local p = io.popen(clean([[/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']]))
  local port = tonumber(p:read("*l"))
  p:close()
  return port
end

-- M.broker(dir [, port [, persist]]) -> { port, uri, stop(), pub(topic,
-- payload) }; with persist, sessions survive a stop() and a new broker on
-- the same port and dir.
function M.broker(dir, port, persist)
  local b = { port = port or M.free_port(), dir = dir }
  local conf = ("%s/mosq-%d.conf"):format(dir, b.port)
  b.pidfile = ("%s/mosq-%d.pid"):format(dir, b.port)
  h.write(conf, ("listener %d 127.0.0.1\nallow_anonymous true\n%s\npid_file %s\n%s")
    :format(b.port, persist and ("persistence true\npersistence_location %s/\npersistence_file mosq-%d.db")
      :format(dir, b.port) or "persistence false", b.pidfile,
      M.sh("test $(id -u) = 0") and "user root\n" or ""))
  assert(M.sh(("mosquitto -d -c %s 2>/dev/null"):format(conf)), "mosquitto did not start")
  M.wait_sh(("mosquitto_pub -p %d -t probe -n 2>/dev/null"):format(b.port))
  b.uri = ("tcp://127.0.0.1:%d"):format(b.port)
  function b.stop()
    M.sh(("kill $(cat %s 2>/dev/null) 2>/dev/null"):format(b.pidfile))
    -- gone (and its database written) before a restart
    M.wait_sh(("kill -0 $(cat %s 2>/dev/null) 2>/dev/null"):format(b.pidfile), false)
  end
  function b.pub(topic, payload)
    assert(M.sh(("mosquitto_pub -p %d -q 1 -t '%s' -m '%s'"):format(b.port, topic, payload)))
  end
  return b
end

-- M.watch(broker, filter, dir) -> watcher: a persistent QoS 1 subscriber
-- session ("-c") made now, then read by a background mosquitto_sub;
-- watcher.lines() -> "topic payload" lines received so far;
-- watcher.stop() ends the reader (the session stays on the broker);
-- watcher.resume() starts a reader again on the same session, appending.
function M.watch(b, filter, dir)
  local id = "watch-" .. b.port
  local out = ("%s/watch-%d.txt"):format(dir, b.port)
  local pidfile = out .. ".pid"
  assert(M.sh(("mosquitto_sub -p %d -c -i %s -q 1 -t '%s' -E >/dev/null 2>&1")
    :format(b.port, id, filter)))
  local w = {}
  function w.resume()
    M.sh(("mosquitto_sub -p %d -c -i %s -q 1 -t '%s' -v -W 60 >> %s 2>/dev/null & echo $! > %s")
      :format(b.port, id, filter, out, pidfile))
  end
  function w.stop()
    M.sh(("kill $(cat %s) 2>/dev/null; true"):format(pidfile))
  end
  function w.lines()
    local f = io.open(out, "rb")
    if not f then return {} end
    local list = {}
    for l in f:lines() do list[#list + 1] = l end
    f:close()
    return list
  end
  w.resume()
  return w
end

-- setenv for the scripts under test (they read their brokers with os.getenv)
local ffi = require "ffi"
ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]
function M.setenv(k, v) ffi.C.setenv(k, v, 1) end

return M
