-- mq.session{ tls = {...} } against a real Mosquitto with a TLS listener
-- that requires client certificates. The certificates are made here with
-- the openssl command line: a CA, a server certificate for 127.0.0.1 and
-- localhost (subjectAltName), a client certificate signed by the CA and a
-- second, unrelated CA. Covers: connecting with a client certificate and
-- messages both ways, the wrong CA (last_error and the log say why), no
-- client certificate, settings refused at load with a clear error, and a
-- reload that keeps or replaces the session as its TLS settings stay or
-- change.
local mqrouter = require "mqrouter"
local h = require "helpers"

local mosq = require "mosquitto" -- sh and free_port for the broker below
local sh, free_port = mosq.sh, mosq.free_port

local function make_certs(dir)
  local function openssl(args)
    assert(sh(("cd %s && openssl %s >/dev/null 2>&1"):format(dir, args)), "openssl " .. args)
  end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  openssl("req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 2 -subj /CN=mqr-ca")
  openssl("req -x509 " .. ec .. " -keyout other.key -out other.pem -days 2 -subj /CN=mqr-other")
  h.write(dir .. "/san.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  for _, c in ipairs({ { "server", "/CN=localhost", "-extfile san.cnf" },
                       { "client", "/CN=mqr-client", "" } }) do
    openssl(("req %s -keyout %s.key -out %s.csr -subj %s"):format(ec, c[1], c[1], c[2]))
    openssl(("x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days 2 %s")
      :format(c[1], c[1], c[3]))
  end
end

-- mosquitto: a plain listener for mosquitto_pub, a TLS one that requires
-- a client certificate signed by ca.pem.
local function broker(dir)
  local b = { port = free_port(), tls = free_port() }
  local conf = ("%s/mosq-%d.conf"):format(dir, b.port)
  b.pidfile = ("%s/mosq-%d.pid"):format(dir, b.port)
  h.write(conf, table.concat({
    ("listener %d 127.0.0.1"):format(b.port),
    "allow_anonymous true", "persistence false",
    ("pid_file %s"):format(b.pidfile),
    sh("test $(id -u) = 0") and "user root" or "",
    ("listener %d 127.0.0.1"):format(b.tls),
    ("cafile %s/ca.pem"):format(dir),
    ("certfile %s/server.pem"):format(dir),
    ("keyfile %s/server.key"):format(dir),
    "require_certificate true", "" }, "\n"))
  assert(sh(("mosquitto -d -c %s 2>/dev/null"):format(conf)), "mosquitto did not start")
  for _ = 1, 100 do
    if sh(("mosquitto_pub -p %d -t probe -n 2>/dev/null"):format(b.port)) then break end
    sh("sleep 0.05")
  end
  function b.stop() sh(("kill $(cat %s) 2>/dev/null"):format(b.pidfile)) end
  function b.pub(topic, payload)
    assert(sh(("mosquitto_pub -p %d -q 1 -t '%s' -m '%s'"):format(b.port, topic, payload)))
  end
  return b
end

local function payloads(cap, topic)
  local out = {}
  for _, m in ipairs(cap:messages()) do
    if m.topic == topic then out[#out + 1] = m.payload end
  end
  return out
end

describe("sessions over TLS", function()
  local dir, b, e
  setup(function()
    dir = h.tmpdir()
    make_certs(dir)
    b = broker(dir)
  end)
  teardown(function()
    b.stop()
    os.execute("rm -rf " .. dir)
  end)
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  local function session_script(name, tls, extra)
    return ([[
      local mq = require "mqrouter"
      local up = mq.session{ name = %q, broker = "ssl://127.0.0.1:%d", tls = %s,
                             reconnect = { initial = 1, max = 1 } }
      %s
    ]]):format(name, b.tls, tls, extra or "")
  end

  it("connects with the CA and a client certificate; messages go both ways", function()
    local cap = e:capture("result/#")
    assert(e:load(session_script("cloud",
      ('{ cafile = "%s/ca.pem", cert = "%s/client.pem", key = "%s/client.key" }')
        :format(dir, dir, dir), [[
      up:route("in/#", function(msg) mq.publish("result/in", msg.payload) end, { qos = 1 })
      up:route("echo/#", function(msg) mq.publish("result/echo", msg.payload) end, { qos = 1 })
      mq.spawn(function()
        assert(mq.wait_ready("cloud", 8))
        mq.publish("result/ready", up:status().broker)
        assert(up:publish_sync("echo/1", "sent-over-tls", { qos = 1 }))
      end)
    ]])))
    assert.is_true(h.run_until(e, function() return #payloads(cap, "result/echo") > 0 end, 10))
    assert.are.same({ "ssl://127.0.0.1:" .. b.tls }, payloads(cap, "result/ready"))
    assert.are.same({ "sent-over-tls" }, payloads(cap, "result/echo"))
    -- from a plain client of the broker, in through the TLS session
    for _ = 1, 5 do
      b.pub("in/x", "from-broker")
      if h.run_until(e, function() return #payloads(cap, "result/in") > 0 end, 1) then break end
    end
    assert.are.same({ "from-broker" }, payloads(cap, "result/in"))
  end)

  it("with the wrong CA never connects; last_error and the log name the certificate", function()
    local cap = e:capture("result/#")
    assert(e:load(session_script("wrongca",
      ('{ cafile = "%s/other.pem", cert = "%s/client.pem", key = "%s/client.key" }')
        :format(dir, dir, dir), [[
      mq.every(0.2, function()
        local st = up:status()
        if st.last_error then
          mq.publish("result/st", table.concat({ st.state, st.connects, st.connect_failures,
            st.last_error }, "|"))
        end
      end)
    ]])))
    local function last()
      local p = payloads(cap, "result/st")
      return p[#p]
    end
    -- three failed attempts (retry every second), none connected
    assert.is_true(h.run_until(e, function()
      local l = last()
      return l ~= nil and tonumber(l:match("^[^|]*|[^|]*|(%d+)")) >= 3
    end, 10))
    local state, connects, _, err = last():match("^([^|]*)|([^|]*)|([^|]*)|(.*)$")
    assert.are.equal("connecting", state)
    assert.are.equal("0", connects)
    assert.matches("TLS: certificate verify failed", err, 1, true)
    local line = h.find_log(mqrouter.logs(), "session 'wrongca': cannot connect")
    assert.truthy(line)
    assert.matches("TLS: certificate verify failed", line, 1, true)
  end)

  it("without a client certificate the broker refuses it", function()
    assert(e:load(session_script("nocert", ('{ cafile = "%s/ca.pem" }'):format(dir))))
    assert.is_true(h.run_until(e, function()
      return h.find_log(mqrouter.logs(), "session 'nocert': cannot connect") ~= nil
    end, 8))
    e:run(2.5)
    assert.is_nil(h.find_log(mqrouter.logs(), "session 'nocert' connected"))
  end)

  it("refuses settings that cannot work, at load, saying why", function()
    local cases = {
      { ('{ cafile = "%s/missing.pem" }'):format(dir),
        "session 'bad': CA file " .. dir .. "/missing.pem: No such file or directory" },
      { '{ cafile = 1 }', "session 'bad': tls option 'cafile' must be a string" },
      { '{ verify = "yes" }', "session 'bad': tls option 'verify' must be a boolean" },
      { '{ ca_file = "x" }', "mq.session 'bad': tls: unknown option 'ca_file' (it takes cafile, capath, "
        .. "cert, key, key_password, verify, verify_hostname)" },
      { '"on"', "session 'bad': tls must be a table" },
      { ('{ key = "%s/client.key" }'):format(dir), "needs a client certificate" },
      { ('{ cert = "%s/client.pem", key = "%s/server.key" }'):format(dir, dir), "does not match" },
    }
    for _, c in ipairs(cases) do
      local ok, err = e:load(session_script("bad", c[1]))
      assert.is_nil(ok, c[1])
      assert.matches(c[2], err, 1, true)
    end
    local ok, err = e:load(([[
      local mq = require "mqrouter"
      mq.session{ name = "plain", broker = "tcp://127.0.0.1:1", tls = { verify = false } }
    ]]))
    assert.is_nil(ok)
    assert.matches("TLS settings need ssl://, mqtts:// or wss:// brokers, not tcp://127.0.0.1:1",
      err, 1, true)
  end)

  it("a reload keeps the session with the same TLS settings and replaces it when they change", function()
    local path = dir .. "/rules.lua"
    local tls = ('{ cafile = "%s/ca.pem", cert = "%s/client.pem", key = "%s/client.key"%s }')
    local cap = e:capture("ev/#")
    local on_events = [[
      for _, ev in ipairs({ "session_added", "session_removed", "session_connected" }) do
        mq.on(ev, function(ev) mq.publish("ev/" .. ev.type, ev.name) end)
      end
    ]]
    h.write(path, session_script("kept", tls:format(dir, dir, dir, ""), on_events))
    assert(e:load_file(path))
    assert.is_true(h.run_until(e, function() return #payloads(cap, "ev/session_connected") == 1 end, 8))
    h.write(path, session_script("kept", tls:format(dir, dir, dir, ""), on_events))
    assert(e:reload())
    e:run(0.5)
    assert.are.same({}, payloads(cap, "ev/session_removed"))
    assert.are.equal(1, #payloads(cap, "ev/session_connected"))
    h.write(path, session_script("kept", tls:format(dir, dir, dir, ", verify_hostname = false"),
      on_events))
    assert(e:reload())
    assert.is_true(h.run_until(e, function() return #payloads(cap, "ev/session_connected") == 2 end, 8))
    assert.are.same({ "kept" }, payloads(cap, "ev/session_removed"))
  end)
end)
