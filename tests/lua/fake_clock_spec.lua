-- The host's fake clock (engine{ clock = "fake" }, e:advance, e:now) and
-- the testing kit on top of it.
local mqrouter = require "mqrouter"
local h = require "helpers"
local t = require "mqrouter.testing"

local T0 = 1700000000

describe("fake clock", function()
  local e
  after_each(function() if e then e:close() end e = nil end)

  it("fires timers in time order, ties in declaration order, at their due time", function()
    e = h.engine{ clock = "fake", start_time = T0 }
    assert(e:load([[
      local mq = require "mqrouter"
      local function at(name) return function() mq.publish("fired", name .. "@" .. (mq.now() - 1700000000)) end end
      mq.after(2, at("b"))
      mq.every(1, at("tick"))
      mq.after(2, at("c"))
      mq.after(0.5, function()
        at("a")()
        mq.after(1, at("nested")) -- relative to the virtual now: 1.5
      end)
    ]]))
    local cap = e:capture("fired")
    assert.are.equal(0, e:advance(0.4))
    assert.are.equal(6, e:advance(1.6)) -- a@0.5 tick@1 nested@1.5 b@2 tick@2 c@2
    local got = {}
    for _, m in ipairs(cap:messages()) do got[#got + 1] = m.payload end
    assert.are.same({ "a@0.5", "tick@1", "nested@1.5", "b@2", "tick@2", "c@2" }, got)
    assert.are.equal(T0 + 2, e:now())
    for _, m in ipairs(cap:messages()) do
      assert.is_true(m.time >= T0 and m.time <= T0 + 2) -- messages carry the virtual time
    end
    assert.are.equal(T0 + 2, cap:messages()[6].time)
  end)

  it("drives queues: ack timeouts, nack backoff and TTL follow the virtual time", function()
    e = h.engine{ clock = "fake", start_time = T0 }
    assert(e:load([[
      local mq = require "mqrouter"
      local held = mq.queue("held", { ack_timeout = 30 })
      held:consume(function(m)
        mq.publish("got/held", m.payload .. ":" .. m.attempts)
        m:defer() -- never settled: redelivered after the ack timeout
      end)
      held:publish("h")
      local retry = mq.queue("retry", { backoff = { 10, 10 }, max_attempts = 5 })
      retry:consume(function(m)
        mq.publish("got/retry", m.payload .. ":" .. m.attempts)
        return m.attempts >= 3 -- fails twice, with a 10 s backoff each time
      end)
      retry:publish("r")
      local ttl = mq.queue("ttl")
      ttl:publish("t", { ttl = 5 })
      mq.route("stats", function()
        mq.publish("got/expired", tostring(ttl:stats().expired))
      end)
    ]]))
    local cap = e:capture("got/#")
    local function got(topic)
      local out = {}
      for _, m in ipairs(cap:messages()) do
        if m.topic == topic then out[#out + 1] = m.payload end
      end
      return out
    end
    e:advance(0) -- first deliveries
    assert.are.same({ "h:1" }, got("got/held"))
    assert.are.same({ "r:1" }, got("got/retry"))
    e:advance(9)
    assert.are.same({ "r:1" }, got("got/retry")) -- still backing off
    e:advance(2) -- 11 s
    assert.are.same({ "r:1", "r:2" }, got("got/retry"))
    e:advance(10) -- 21 s
    assert.are.same({ "r:1", "r:2", "r:3" }, got("got/retry"))
    assert.are.same({ "h:1" }, got("got/held"))
    e:advance(10) -- 31 s: the ack timeout of 30 s passed
    assert.are.same({ "h:1", "h:2" }, got("got/held"))
    e:publish("stats", "")
    e:advance(0)
    assert.are.same({ "1" }, got("got/expired")) -- the TTL of 5 s passed, counted without a consumer
  end)

  it("does not move without advance, and a stopped timer stays stopped", function()
    e = h.engine{ clock = "fake", start_time = T0 }
    assert(e:load([[
      local mq = require "mqrouter"
      local n = 0
      local timer
      timer = mq.every(10, function() n = n + 1; mq.publish("n", tostring(n)); if n == 2 then timer:stop() end end)
      mq.route("now", function(msg) mq.publish("t", tostring(mq.now()) .. " " .. tostring(msg.time)) end)
    ]]))
    local cap = e:capture("n")
    e:run(0.05)
    assert.are.equal(0, cap:count())
    assert.are.equal(2, e:advance(100))
    assert.are.equal(2, cap:count())
    local tc = e:capture("t")
    e:publish("now", "")
    assert.are.equal(("%d %d"):format(T0 + 100, T0 + 100), tc:messages()[1].payload)
  end)

  it("bounds a zero-second timer that re-arms itself", function()
    e = h.engine{ clock = "fake", start_time = T0 }
    assert(e:load([[
      local mq = require "mqrouter"
      local function again() mq.after(0, again) end
      mq.after(0, again)
    ]]))
    assert.are.equal(1000000, e:advance(1))
  end)

  it("leaves a real-clock engine as it was", function()
    e = h.engine()
    local ok, err = pcall(e.advance, e, 1)
    assert.is_false(ok)
    assert.truthy(err:find("real clock", 1, true))
    assert.is_true(math.abs(e:now() - os.time()) < 5)
    assert.has_error(function() mqrouter.engine{ data_dir = "", clock = "slow" } end)
  end)

  it("survives a reload: the new script's timers start at the virtual now", function()
    e = h.engine{ clock = "fake", start_time = T0 }
    assert(e:load([[ local mq = require "mqrouter"; mq.every(10, function() mq.publish("v", "old") end) ]]))
    e:advance(5)
    assert(e:load([[ local mq = require "mqrouter"; mq.every(10, function() mq.publish("v", "new " .. (mq.now() - 1700000000)) end) ]]))
    local cap = e:capture("v")
    e:advance(15)
    assert.are.equal(1, cap:count())
    assert.are.equal("new 15", cap:messages()[1].payload)
  end)
end)

describe("mqrouter.testing", function()
  it("filters what the rules published, leaves the test's own out, clears", function()
    local k = t.load_string([[
      local mq = require "mqrouter"
      mq.route("in/+", function(msg) mq.publish("out/" .. msg.topic:sub(4), msg.payload:upper()) end)
      mq.log.warn("loaded")
    ]])
    k:publish("in/a", "x")
    k:publish("in/b", "y")
    assert.are.same({ "X", "Y" }, k:payloads("out/#"))
    assert.are.same({ "X" }, k:payloads("out/a"))
    assert.are.equal(0, #k:published("in/#"))
    assert.are.equal(2, #k:published("in/#", { all = true }))
    assert.are.equal("Y", k:last("out/+").payload)
    assert.are.equal(1, #k:logs("WARN %[lua%] loaded"))
    k:clear()
    assert.are.equal(0, #k:published())
    assert.are.equal(0, #k:logs())
    k:close()
    k:close() -- twice is fine
  end)

  it("decodes JSON payloads and reads queues", function()
    local k = t.load_string([[
      local mq = require "mqrouter"
      local q = mq.queue("work")
      mq.route("job", q)
      mq.route("j", function(msg) mq.publish("json", '{"a":[1,2]}') end)
    ]])
    k:publish("job", "1")
    k:publish("job", "2")
    assert.are.equal(2, k:queue_depth("work"))
    assert.are.equal(2, k:queue_stats("work").published)
    assert.has_error(function() k:queue_depth("nope") end)
    k:publish_json("j", { x = 1 })
    assert.are.same({ a = { 1, 2 } }, k:last("json").json)
    k:close()
  end)

  it("raises with the script's error when it does not load", function()
    local ok, err = pcall(t.load_string, "error('broken rules')")
    assert.is_false(ok)
    assert.truthy(err:find("broken rules", 1, true))
    ok, err = pcall(t.load, "/nonexistent/rules.lua")
    assert.truthy(err:find("cannot open /nonexistent/rules.lua", 1, true))
    local k = t.load_string("", { clock = "real" })
    assert.has_error(function() k:advance(1) end)
    k:close()
  end)
end)
