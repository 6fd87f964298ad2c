-- Misuse of the rules API raises an error that names the function, says
-- what was wrong and what was expected: a wrong argument type, a misspelt
-- option (top-level and nested), a QoS given as a string, a bad broker URI,
-- a value out of range (with the range).
local mqrouter = require "mqrouter"
local h = require "helpers"

-- The error of loading code (after `local mq = require "mqrouter"`), without
-- its traceback.
local function load_error(e, code)
  local ok, err = e:load('local mq = require "mqrouter"\n' .. code, "rules")
  assert.is_nil(ok, code)
  local msg = err:gsub(" | traceback: .*$", "")
  return msg
end

describe("rules API misuse", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  it("names the function on a wrong argument, for every public mq.* function", function()
    local S = 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1" }'
    local cases = {
      { 'mq.route({}, function() end)', "mq.route: bad argument #1 (string expected, got table)" },
      { 'mq.route("a", 1)', "mq.route: bad argument #2 (function or queue expected, got number)" },
      { 'mq.publish("a", {})', "mq.publish: bad argument #2 (string expected, got table)" },
      { 'mq.every("x", print)', "mq.every: bad argument #1 (number expected, got string)" },
      { 'mq.after(1, 2)', "mq.after: bad argument #2 (function expected, got number)" },
      { 'mq.session("x")',
        "mq.session: expects a table of options { name =, broker =, ... }, not a string" },
      { 'mq.listen(1)', "mq.listen: expects a table of options { type =, port =, ... }, not a number" },
      { 'mq.queue({})', "mq.queue: bad argument #1 (string expected, got table)" },
      { 'mq.transaction("x")', "mq.transaction: bad argument #1 (number expected, got string)" },
      { 'mq.subscribe({}, print)', "mq.subscribe: bad argument #1 (string expected, got table)" },
      { 'mq.admin(1)', "mq.admin: bad argument #1 (table expected, got number)" },
      { 'mq.topic_valid({})', "mq.topic_valid: bad argument #1 (string expected, got table)" },
      { 'mq.topic_matches({}, "a")', "mq.topic_matches: bad argument #1 (string expected, got table)" },
      { 'mq.log("loud", "x")',
        [[mq.log: level must be "error", "warn", "info" or "debug", not 'loud']] },
      { 'mq.session_status({})', "mq.session_status: bad argument #1 (string expected, got table)" },
      { 'mq.on("session_added", 1)', "mq.on: bad argument #2 (function expected, got number)" },
      { 'mq.spawn(1)', "mq.spawn: bad argument #1 (function expected, got number)" },
      { 'mq.wait_ready(1)', "mq.wait_ready: bad argument #1 (session name or nil expected, got number)" },
      { 'mq.handle(1, print)', "mq.handle: bad argument #1 (filter expected, got number)" },
      { 'mq.session_messages(1)', "mq.session_messages: bad argument #1 (filter expected, got number)" },
      { 'mq.publish_to(1)', "mq.publish_to: bad argument #1 (list of sessions expected, got number)" },
      { 'mq.authenticate(1)', "mq.authenticate: bad argument #1 (function expected, got number)" },
      { 'mq.authorize(1)', "mq.authorize: bad argument #1 (function expected, got number)" },
      { 'mq.users.remove({})', "mq.users.remove: bad argument #1 (string expected, got table)" },
      { 'mq.devices.register(1)', "mq.devices.register: bad argument #1 (table expected, got number)" },
      { 'mq.devices.get({})', "mq.devices.get: bad argument #1 (string expected, got table)" },
      { 'mq.topics.info({})', "mq.topics.info: bad argument #1 (string expected, got table)" },
      { 'mq.retained.get({})', "mq.retained.get: bad argument #1 (string expected, got table)" },
      { 'mq.queue("q"):publish({})', "queue:publish: bad argument #1 (string expected, got table)" },
      { 'mq.queue("q"):consume(1)', "queue:consume: bad argument #1 (function expected, got number)" },
      { 'mq.route("a", print).stop(1)', "route:stop: called on a bad self (route expected, got number)" },
      { S .. ':publish({})', "session:publish: bad argument #1 (string expected, got table)" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal("rules:2: " .. c[2], load_error(e, c[1]))
    end
  end)

  it("names the function when Lua cannot (called through pcall)", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local ok, err = pcall(mq.route, {})
      mq.route("ask", function() mq.publish("answer", err) end)
    ]], "rules"))
    local cap = e:capture("answer")
    e:publish("ask", "")
    assert.are.equal("mq.route: bad argument #1 (string expected, got table)",
      cap:messages()[1].payload)
  end)

  it("refuses misspelt options, naming the option, the function and what it takes", function()
    local S = 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1", '
    local cases = {
      { 'mq.publish("a", "b", { qso = 1 })',
        "mq.publish: unknown option 'qso' (it takes qos, retain, properties)" },
      { 'mq.route("a", function() end, { dead_leter = "d" })',
        "mq.route: unknown option 'dead_leter' (it takes qos, dead_letter, async, concurrency, max_pending)" },
      { 'mq.route("a", mq.queue("q"), { priorty = 1 })',
        "mq.route: unknown option 'priorty' (it takes qos, dead_letter, priority, ttl)" },
      { 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1", keep_alive = 5 }',
        "mq.session: unknown option 'keep_alive' (it takes name, broker, brokers, client_id, "
          .. "keepalive, clean, username, password, version, session_expiry, will, reconnect, "
          .. "max_buffered, max_buffered_bytes, on_full, credentials, persist, prefix, map, tls, "
          .. "transport, auth_method)" },
      { S .. 'will = { topic = "w", retian = true } }',
        "mq.session 's': will: unknown option 'retian' (it takes topic, payload, qos, retain)" },
      { S .. 'reconnect = { inital = 1 } }',
        "mq.session 's': reconnect: unknown option 'inital' (it takes initial, max, max_attempts)" },
      { S .. 'tls = { ca = "x" } }',
        "mq.session 's': tls: unknown option 'ca' (it takes cafile, capath, cert, key, "
          .. "key_password, verify, verify_hostname)" },
      { 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1" }:publish("a", "b", { retained = true })',
        "session:publish: unknown option 'retained' (it takes qos, retain, properties)" },
      { 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1" }:route("a", print, { nolocal = true })',
        "session:route: unknown option 'nolocal' (it takes qos, dead_letter, priority, ttl, "
          .. "no_local, retain_as_published, retain_handling, async, concurrency, max_pending)" },
      { 'mq.queue("q"):publish("x", { prio = 1 })',
        "queue:publish: unknown option 'prio' (it takes priority, ttl, id, topic, qos, retain, "
          .. "properties)" },
      { 'mq.queue("q"):consume(print, { prefech = 1 })',
        "queue:consume: unknown option 'prefech' (it takes prefetch, batch, async, concurrency)" },
      { 'mq.subscribe("a", print, { bufer = 1 })',
        "mq.subscribe: unknown option 'bufer' (it takes buffer, batch, drop_oldest)" },
      { 'mq.devices.list{ limt = 1 }',
        "mq.devices.list: unknown option 'limt' (it takes tenant, type, status, prefix, limit, cursor)" },
      { 'mq.retained.set("a", "b", { qso = 1 })', "mq.retained.set: unknown option 'qso' (it takes qos)" },
      { 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1" }:publish_batch({ { "a", "b", qso = 1 } })',
        "session:publish_batch: item 1: unknown option 'qso' (it takes topic, payload, qos, retain, "
          .. "properties)" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal("rules:2: " .. c[2], load_error(e, c[1]))
    end
  end)

  it("refuses a QoS given as a string, or out of range", function()
    local cases = {
      { 'mq.publish("a", "b", { qos = "1" })', "mq.publish: qos must be the number 0, 1 or 2, not a string" },
      { 'mq.publish("a", "b", { qos = 3 })', "mq.publish: qos must be 0, 1 or 2, not 3" },
      { 'mq.route("a", print, { qos = "2" })', "mq.route: qos must be the number 0, 1 or 2, not a string" },
      { 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1", will = { topic = "w", qos = "1" } }',
        "mq.session 's': will: qos must be the number 0, 1 or 2, not a string" },
      { 'mq.retained.set("a", "b", { qos = "1" })',
        "mq.retained.set: qos must be the number 0, 1 or 2, not a string" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal("rules:2: " .. c[2], load_error(e, c[1]))
    end
  end)

  it("says why a broker URI is refused and what one looks like", function()
    local hint = "is not a broker URI (tcp://, ssl://, mqtt://, mqtts://, ws://, wss:// HOST:PORT)"
    assert.are.equal("rules:2: mq.session: broker 'tcp:/x' " .. hint,
      load_error(e, 'mq.session{ name = "s", broker = "tcp:/x" }'))
    assert.are.equal("rules:2: mq.session: broker 'tcp://host' " .. hint,
      load_error(e, 'mq.session{ name = "s", broker = "tcp://host" }'))
    assert.are.equal("rules:2: mq.session: brokers entry 'http://h:1' " .. hint,
      load_error(e, 'mq.session{ name = "s", brokers = { "tcp://h:1", "http://h:1" } }'))
    assert.are.equal("rules:2: mq.session 's': keepalive must be 0..65535 seconds, not -1",
      load_error(e, 'mq.session{ name = "s", broker = "tcp://h:1", keepalive = -1 }'))
  end)

  it("gives the allowed range and the value given", function()
    assert.are.equal("rules:2: mq.queue: option 'max_memory' out of range: 100 given, it takes "
      .. "1024 .. 1e+15 bytes", load_error(e, 'mq.queue("q", { max_memory = 100 })'))
    assert.are.equal("rules:2: mq.subscribe: option 'buffer' out of range: 0 given, it takes 1 .. 10000000",
      load_error(e, 'mq.subscribe("a", print, { buffer = 0 })'))
    assert.are.equal("rules:2: mq.listen: option 'port' out of range: 70000 given, it takes 0 .. 65535",
      load_error(e, 'mq.listen{ port = 70000 }'))
    assert.are.equal("rules:2: mq.every: the interval must be 0 .. 1e9 seconds, not -1",
      load_error(e, 'mq.every(-1, print)'))
  end)
  it("words a wrong option value the same way in every function (one options helper)", function()
    local S = 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1", '
    local cases = {
      { 'mq.listen{ host = 1 }', "mq.listen: option 'host' must be a string, not a number" },
      { 'mq.listen{ port = "1883" }', "mq.listen: option 'port' must be an integer, not a string" },
      { 'mq.listen{ port = 1883.5 }', "mq.listen: option 'port' must be an integer, not 1883.5" },
      { 'mq.queue("q", { durable = 1 })', "mq.queue: option 'durable' must be true or false, not a number" },
      { 'mq.queue("q", { ack_timeout = "1" })', "mq.queue: option 'ack_timeout' must be a number, not a string" },
      { 'mq.queue("q", { ack_timeout = 0 })',
        "mq.queue: option 'ack_timeout' out of range: 0 given, it takes 0.001 .. inf" },
      { S .. 'keepalive = "30" }', "mq.session: option 'keepalive' must be an integer, not a string" },
      { S .. 'clean = "yes" }', "mq.session: option 'clean' must be an integer, not a string" },
      { S .. 'reconnect = { initial = "1" } }',
        "mq.session 's': reconnect: option 'initial' must be a number, not a string" },
      { S .. 'will = { topic = "w", retain = "1" } }',
        "mq.session 's': will: option 'retain' must be an integer, not a string" },
      { 'mq.subscribe("a", print, { drop_oldest = 1 })',
        "mq.subscribe: option 'drop_oldest' must be true or false, not a number" },
      { 'mq.devices.list{ limit = -1 }', "mq.devices.list: option 'limit' out of range: -1 given, it takes 0 .. 1000" },
      { 'mq.topics.list{ prefix = 1 }', "mq.topics.list: option 'prefix' must be a string, not a number" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal("rules:2: " .. c[2], load_error(e, c[1]))
    end
  end)

  it("takes clean and will.retain as booleans too", function()
    local ok, err = e:load('local mq = require "mqrouter"\n'
      .. 'mq.session{ name = "s", broker = "tcp://127.0.0.1:1", clean = false, '
      .. 'will = { topic = "w", retain = true } }', "rules")
    assert.is_true(ok, err)
  end)
  it("names mq.upstream in its errors, and mq.session (its older name) in its own", function()
    local hint = "is not a broker URI (tcp://, ssl://, mqtt://, mqtts://, ws://, wss:// HOST:PORT)"
    assert.are.equal("rules:2: mq.upstream: broker 'tcp:/x' " .. hint,
      load_error(e, 'mq.upstream{ name = "s", broker = "tcp:/x" }'))
    assert.are.equal("rules:2: mq.session: broker 'tcp:/x' " .. hint,
      load_error(e, 'mq.session{ name = "s", broker = "tcp:/x" }'))
    assert.are.equal("rules:2: mq.upstream 's': will: unknown option 'retian' (it takes topic, payload, qos, retain)",
      load_error(e, 'mq.upstream{ name = "s", broker = "tcp://127.0.0.1:1", will = { topic = "w", retian = true } }'))
    assert.are.equal("rules:2: mq.upstream: option 'keepalive' must be an integer, not a string",
      load_error(e, 'mq.upstream{ name = "s", broker = "tcp://127.0.0.1:1", keepalive = "1" }'))
  end)

  it("takes mq.upstream and mq.session for the same kind of session", function()
    local ok, err = e:load([[
local mq = require "mqrouter"
local a = mq.upstream{ name = "a", broker = "tcp://127.0.0.1:1" }
local b = mq.session{ name = "b", broker = "tcp://127.0.0.1:1" }
assert(getmetatable(a) == getmetatable(b))
assert(a:name() == "a" and b:name() == "b")
local names = mq.sessions()
assert(#names == 2, #names)
mq.handle("x/#", function() end) -- routes on both
]], "rules")
    assert.is_true(ok, err)
  end)
end)
