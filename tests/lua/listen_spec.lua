-- mq.listen: listeners declared by the rules script live across reloads
-- like sessions: kept (same socket, clients stay connected) when the new
-- script declares the same configuration, closed when it no longer does,
-- untouched when the new script fails to load.
local mqrouter = require "mqrouter"
local h = require "helpers"

-- Is something accepting on 127.0.0.1:port? (the kernel answers for a
-- listening socket even while our loop is not running)
-- Outside tools run without the sanitizers the busted host may preload.
local RUN = "env -u LD_PRELOAD "

local function listening(port)
  local cmd = (RUN .. "python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(1); "
    .. "sys.exit(0 if s.connect_ex(('127.0.0.1',%d))==0 else 1)\""):format(port)
  local rc = os.execute(cmd)
  return rc == 0 or rc == true
end

describe("mq.listen", function()
  local e, dir
  before_each(function()
    e = h.engine()
    dir = h.tmpdir()
  end)
  after_each(function()
    e:close()
    os.execute("rm -rf " .. dir)
  end)

  -- a script declaring the given listeners; each one's port is published
  -- on ports/<name> at load
  local function script(decls, extra)
    local lines = { 'local mq = require "mqrouter"' }
    local names = {}
    for name in pairs(decls) do names[#names + 1] = name end
    table.sort(names) -- declared in name order
    for _, name in ipairs(names) do
      local d = decls[name]
      lines[#lines + 1] = ("local %s = mq.listen%s"):format(name, d)
      lines[#lines + 1] = ('mq.publish("ports/%s", tostring(%s:port()))'):format(name, name)
    end
    lines[#lines + 1] = extra or ""
    return table.concat(lines, "\n")
  end

  local function load(code)
    local cap = e:capture("ports/#")
    local ok, err = e:load(code)
    local ports = {}
    for _, m in ipairs(cap:messages()) do
      ports[m.topic:match("ports/(.*)")] = tonumber(m.payload)
    end
    cap:stop()
    return ok, err, ports
  end

  it("binds port 0 to a free port and tells it", function()
    local ok, err, ports = load(script({ a = '{ type = "tcp", port = 0 }' }))
    assert(ok, err)
    assert.is_true(ports.a > 0)
    assert.is_true(listening(ports.a))
  end)

  -- A raw MQTT 3.1.1 client in the background: CONNECT, SUBSCRIBE keep/#,
  -- then it writes "ready" and every PUBLISH payload to `out`, and "closed"
  -- when the server drops it (it never reconnects).
  local function raw_subscriber(port, out)
    local py = dir .. "/sub.py"
    h.write(py, ([==[
import socket, sys
s = socket.create_connection(("127.0.0.1", %d), 5)
s.sendall(bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 2]) + b"ks")
s.sendall(bytes([0x82, 11, 0, 1, 0, 6]) + b"keep/#" + bytes([0]))
out = open(%q, "a", buffering=1)
buf = b""
s.settimeout(15)
while True:
    try:
        d = s.recv(4096)
    except OSError:
        d = b""
    if not d:
        out.write("closed\n")
        break
    buf += d
    while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
        pkt, buf = buf[:2 + buf[1]], buf[2 + buf[1]:]
        if pkt[0] == 0x90:
            out.write("ready\n")
        elif pkt[0] >> 4 == 3:
            tl = pkt[2] * 256 + pkt[3]
            out.write(pkt[4 + tl:].decode() + "\n")
]==]):format(port, out))
    os.execute(RUN .. "python3 " .. py .. " &")
  end

  local function file_has(e_, path, text, timeout)
    local got
    local ok = h.run_until(e_, function()
      local f = io.open(path)
      got = f and f:read("*a") or ""
      if f then f:close() end
      return got:find(text, 1, true) ~= nil
    end, timeout or 5)
    return ok, got
  end

  it("keeps an unchanged listener and its clients across a reload", function()
    local ok, err, p1 = load(script({ a = '{ port = 0, max_packet_size = 4096 }' }))
    assert(ok, err)
    local out = dir .. "/sub.out"
    raw_subscriber(p1.a, out)
    local ready, got = file_has(e, out, "ready")
    assert.is_true(ready, got)
    local ok2, err2, p2 = load(script({ a = '{ port = 0, max_packet_size = 4096 }' }))
    assert(ok2, err2)
    assert.are.equal(p1.a, p2.a)
    e:publish("keep/x", "after the reload")
    local arrived, got2 = file_has(e, out, "after the reload")
    assert.is_true(arrived, got2)
    assert.is_nil(got2:find("closed", 1, true))
  end)

  it("closes the clients of a listener that is dropped", function()
    local ok, err, p1 = load(script({ a = '{ port = 0 }', b = '{ port = 0, max_inflight = 9 }' }))
    assert(ok, err)
    local out = dir .. "/sub.out"
    raw_subscriber(p1.b, out)
    assert.is_true((file_has(e, out, "ready")))
    assert(e:load(script({ a = '{ port = 0 }' })))
    assert.is_true((file_has(e, out, "closed")))
  end)

  it("closes a listener the new script no longer declares", function()
    local ok, err, p1 = load(script({ a = '{ port = 0 }', b = '{ type = "ws", port = 0 }' }))
    assert(ok, err)
    assert.is_true(listening(p1.b))
    local ok2, err2, p2 = load(script({ a = '{ port = 0 }' }))
    assert(ok2, err2)
    assert.are.equal(p1.a, p2.a)
    assert.is_false(listening(p1.b))
    assert.is_true(listening(p1.a))
  end)

  it("replaces a listener whose settings changed on the same port", function()
    local ok, err, p1 = load(script({ a = '{ port = 0 }' }))
    assert(ok, err)
    local port = p1.a
    local ok2, err2, p2 =
      load(script({ a = ('{ port = %d, max_connections = 5 }'):format(port) }))
    assert(ok2, err2)
    -- the new one can only bind once the old one is gone: started at the
    -- takeover, on the same port
    assert.is_nil(p2.a)
    assert.is_true(listening(port))
  end)

  it("keeps the old listeners when the new script fails, and closes what it opened", function()
    local ok, err, p1 = load(script({ a = '{ port = 0 }' }))
    assert(ok, err)
    local cap = e:capture("ports/#")
    local ok2, err2 = e:load(script({ a = '{ port = 0 }', c = '{ type = "ws", port = 0 }' },
      'error("boom")'))
    assert.is_nil(ok2)
    assert.matches("boom", err2)
    local newport
    for _, m in ipairs(cap:messages()) do
      if m.topic == "ports/c" then newport = tonumber(m.payload) end
    end
    cap:stop()
    assert.is_true(listening(p1.a))
    assert.is_truthy(newport)
    assert.is_false(listening(newport))
  end)

  it("fails the load when a port cannot be bound", function()
    local ok, err, p1 = load(script({ a = '{ port = 0 }' }))
    assert(ok, err)
    local ok2, err2 = e:load(script({ a = '{ port = 0 }',
      b = ('{ port = %d, max_connections = 7 }'):format(p1.a) }))
    assert.is_nil(ok2)
    assert.matches("cannot listen", err2)
    assert.is_true(listening(p1.a))
  end)

  it("refuses bad declarations", function()
    local cases = {
      { '{ type = "udp", port = 0 }', "type must be" },
      { '{ type = "tls", port = 0 }', "needs cert and key" },
      { '{ type = "ws" }', "needs a port" },
      { '{ port = 0, cert = "x.pem" }', "are for tls and wss" },
      { '{ port = 0, max_pakcet_size = 1 }', "unknown option 'max_pakcet_size'" },
      { '{ port = 70000 }', "out of range" },
      { '{ type = "tls", port = 0, cert = "/nonexistent.pem", key = "/nonexistent.key" }',
        "certificate /nonexistent.pem" },
    }
    for _, c in ipairs(cases) do
      local ok, err = e:load('local mq = require "mqrouter"\nmq.listen' .. c[1])
      assert.is_nil(ok)
      assert.matches(c[2], err, 1, true)
    end
  end)

  it("declares a TLS listener from certificate files", function()
    local ok = os.execute(("cd %s && " .. RUN .. "openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem "
      .. "-out c.pem -days 1 -subj /CN=localhost >/dev/null 2>&1"):format(dir))
    assert.is_true(ok == 0 or ok == true)
    local ok2, err, p = load(script({ t = ('{ type = "tls", port = 0, cert = "%s/c.pem", '
      .. 'key = "%s/k.pem" }'):format(dir, dir) }))
    assert(ok2, err)
    assert.is_true(listening(p.t))
  end)
end)
