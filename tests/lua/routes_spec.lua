-- Routes: matching, the message a handler sees, publishing from handlers.
local mqrouter = require "mqrouter"
local h = require "helpers"

describe("routes", function()
  local e
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  it("hands matching messages to the handler with every field", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("sensors/+/temp", function(msg)
        mq.publish("seen/" .. msg.topic, table.concat({
          msg.topic, msg.payload, msg.qos, tostring(msg.retain), msg.origin, msg.source }, "|"))
      end)
    ]]))
    local cap = e:capture("seen/#")
    assert(e:publish("sensors/a/temp", "21.5", { qos = 1 }))
    assert(e:publish("sensors/a/humidity", "40"))
    assert(e:publish("sensors/a/b/temp", "1"))
    local msgs = cap:messages()
    assert.are.equal(1, #msgs)
    assert.are.equal("seen/sensors/a/temp", msgs[1].topic)
    assert.are.equal("sensors/a/temp|21.5|1|false|c|host", msgs[1].payload)
    assert.are.equal("lua", msgs[1].origin)
  end)

  it("keeps binary payloads intact", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("in", function(msg) mq.publish("out", msg.payload:reverse()) end)
    ]]))
    local cap = e:capture("out")
    e:publish("in", "a\0b\255")
    assert.are.equal("\255b\0a", cap:messages()[1].payload)
  end)

  it("calls every matching route in declaration order", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local order = {}
      mq.route("a/#", function() order[#order + 1] = "hash" end)
      mq.route("a/+", function() order[#order + 1] = "plus" end)
      mq.route("a/b", function()
        order[#order + 1] = "exact"
        mq.publish("order", table.concat(order, ","))
      end)
    ]]))
    local cap = e:capture("order")
    e:publish("a/b", "x")
    assert.are.equal("hash,plus,exact", cap:messages()[1].payload)
  end)

  it("does not match $SYS topics with leading wildcards", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("#", function(msg) mq.publish("hit", msg.topic) end)
    ]]))
    local cap = e:capture("hit")
    e:publish("$SYS/x", "1")
    assert.are.equal(0, cap:count())
  end)

  it("stops a route on request", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local r
      r = mq.route("t", function() mq.publish("hit", "1"); r:stop() end)
    ]]))
    local cap = e:capture("hit")
    e:publish("t", "x")
    e:publish("t", "x")
    assert.are.equal(1, cap:count())
  end)

  it("raises on misuse and returns nil, err, name on bad topics", function()
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.route("a/#/b", function() end)
    ]], "bad_filter.lua")
    assert.is_nil(ok)
    assert.matches("bad_filter.lua:2: mq.route: invalid route filter 'a/#/b': '#' must be the last level",
      err, 1, true)

    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("try", function(msg)
        local ok, err, name = mq.publish(msg.payload, "x")
        mq.publish("result", tostring(ok) .. "|" .. tostring(name) .. "|" .. tostring(err))
      end)
    ]]))
    local cap = e:capture("result")
    e:publish("try", "a/+/b")
    e:publish("try", "")
    local m = cap:messages()
    assert.matches("^nil|ETOPIC|ETOPIC: ", m[1].payload)
    assert.matches("^nil|ETOPIC|", m[2].payload)
    local ok2, err2, name2 = e:publish("a/+", "x")
    assert.is_nil(ok2)
    assert.are.equal("ETOPIC", name2)
    assert.matches("invalid topic", err2)
    assert.has_error(function() e:publish({}, "x") end)
  end)

  it("refuses a routing loop instead of recursing forever", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("loop", function(msg) assert(mq.publish("loop", msg.payload)) end)
    ]]))
    e:publish("loop", "x")
    local st = e:stats()
    assert.is_true(st.routing_loops >= 1)
    assert.is_true(st.routes[1].errors >= 1)
  end)

  it("passes MQTT v5 properties through", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("req", function(msg)
        local p = msg.properties
        mq.publish(p.response_topic, "pong", { properties = {
          correlation_data = p.correlation_data, content_type = "text/plain",
          user = { trace = p.user.trace } } })
      end)
    ]]))
    local cap = e:capture("reply/#")
    assert(e:publish("req", "ping", { properties = {
      response_topic = "reply/1", correlation_data = "\1\2", user = { trace = "abc" } } }))
    local m = cap:messages()[1]
    assert.are.equal("reply/1", m.topic)
    assert.are.equal("\1\2", m.properties.correlation_data)
    assert.are.equal("text/plain", m.properties.content_type)
    assert.are.equal("abc", m.properties.user.trace)
  end)

  it("hands each handler a table of its own that names unknown fields", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("in", function(msg)
        local ok, err = pcall(function() return msg.paylod end)
        local keys = {}
        for k in pairs(msg) do keys[#keys + 1] = tostring(k) end
        table.sort(keys)
        mq.publish("first", table.concat({ type(msg), tostring(msg), tostring(ok),
          err:match("message has no field 'paylod'") or err, getmetatable(msg),
          table.concat(keys, ",") }, "|"))
        msg.payload, msg.topic = "changed", "elsewhere"
        msg.note = "mine"
      end)
      mq.route("in", function(msg)
        mq.publish("second", msg.topic .. "|" .. msg.payload .. "|" .. tostring(rawget(msg, "note")))
      end)
    ]]))
    local cap = e:capture("#")
    assert(e:publish("in", "hello", { qos = 1, retain = true,
      properties = { content_type = "text/plain" } }))
    local got = {}
    for _, m in ipairs(cap:messages()) do got[m.topic] = m.payload end
    assert.are.equal("table|message(in, 5 bytes, qos 1, retained)|false|"
      .. "message has no field 'paylod'|message|"
      .. "origin,payload,qos,retain,source,time,topic", got.first)
    assert.are.equal("in|hello|nil", got.second)
  end)

  it("keeps a message after its handler returned, properties and all", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local kept
      mq.route("keep", function(msg) kept = msg end)
      mq.route("show", function()
        local p = kept.properties
        mq.publish("shown", kept.topic .. "|" .. kept.payload .. "|" .. p.content_type
          .. "|" .. p.user.k .. "|" .. kept.origin .. "|" .. kept.source)
      end)
    ]]))
    local cap = e:capture("shown")
    assert(e:publish("keep", "v", { properties = { content_type = "a/b", user = { k = "w" } } }))
    collectgarbage()
    assert(e:publish("show", ""))
    assert.are.equal("keep|v|a/b|w|c|host", cap:messages()[1].payload)
  end)

  it("publishes a message table into a queue as it is when handed over", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local q = mq.queue("jobs")
      q:consume(function(m)
        mq.publish("done", table.concat({ m.topic, m.payload, m.qos, m.origin, m.source,
          m.properties.content_type or "-" }, "|"))
      end)
      mq.route("in/#", function(msg)
        if msg.topic == "in/changed" then msg.payload = msg.payload .. "!" end
        if msg.topic == "in/bad" then msg.topic = "no/#/wildcards" end
        local ok, err = pcall(q.publish, q, msg)
        if not ok then mq.publish("refused", err:match("message: invalid topic") or err) end
      end)
    ]]))
    local cap = e:capture("#")
    assert(e:publish("in/same", "a", { qos = 1, properties = { content_type = "t/p" } }))
    assert(e:publish("in/changed", "b"))
    assert(e:publish("in/bad", "c"))
    assert.is_true(h.run_until(e, function()
      local n = 0
      for _, m in ipairs(cap:messages()) do if m.topic == "done" then n = n + 1 end end
      return n == 2
    end, 3))
    local done, refused = {}, nil
    for _, m in ipairs(cap:messages()) do
      if m.topic == "done" then done[#done + 1] = m.payload end
      if m.topic == "refused" then refused = m.payload end
    end
    table.sort(done)
    assert.are.same({ "in/changed|b!|0|c|host|-", "in/same|a|1|c|host|t/p" }, done)
    assert.are.equal("message: invalid topic", refused)
  end)
end)
