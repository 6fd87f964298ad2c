-- mqrouter.window, ratelimit, dedupe on the fake clock.
local t = require "mqrouter.testing"

local T0 = 1700000020 -- 40 s into a clock minute

describe("mqrouter.window", function()
  local h
  after_each(function() if h then h:close() end h = nil end)

  it("tumbling windows close at minute boundaries with their statistics", function()
    h = t.load_string([[
      local window = require "mqrouter.window"
      local w = window.tumbling{ size = 60, stats = { "count", "sum", "min", "max", "avg", "p50", "p90" },
                                 publish = "summary/{key}" }
      w:route("tele/+/power", { key = "^tele/([^/]+)/" })
    ]], { start_time = T0 })
    for _, v in ipairs({ 10, 20, 30, 40 }) do h:publish("tele/a/power", tostring(v)) end
    h:publish("tele/b/power", "5")
    h:advance(19)
    assert.are.equal(0, #h:published("summary/#"))
    h:advance(1) -- T0 + 20 = the end of the minute
    local s = h:published("summary/#")
    assert.are.equal(2, #s)
    assert.are.equal("summary/a", s[1].topic)
    local a = s[1].json
    assert.are.same({ 4, 100, 10, 40, 25, 25 }, { a.count, a.sum, a.min, a.max, a.avg, a.p50 })
    assert.are.equal(37, a.p90) -- 30 + 0.7 * 10
    assert.are.equal(T0 - 40, a.start)
    assert.are.equal(T0 + 20, a.stop)
    assert.are.equal(1, s[2].json.count)
    -- an empty minute publishes nothing; the next one has only its readings
    h:advance(60)
    assert.are.equal(2, #h:published("summary/#"))
    h:publish("tele/a/power", "7")
    h:advance(60)
    s = h:published("summary/#")
    assert.are.equal(3, #s)
    assert.are.same({ 1, 7, T0 + 80 }, { s[3].json.count, s[3].json.sum, s[3].json.start })
  end)

  it("sliding windows keep the last N seconds; percentiles interpolate", function()
    h = t.load_string([[
      local mq = require "mqrouter"
      local window = require "mqrouter.window"
      local w = window.sliding{ size = 10, stats = { "count", "avg", "p0", "p25", "p99.9", "p100" } }
      mq.route("v", function(msg) w:add("k", tonumber(msg.payload)) end)
      mq.route("ask", function()
        local s = w:stats("k")
        mq.publish("out", s and (s.count .. " " .. s.avg .. " " .. s.p0 .. " " .. s.p25 .. " " .. s["p99.9"] .. " " .. s.p100) or "none")
      end)
    ]], { start_time = T0 })
    h:publish("v", "1")
    h:advance(5)
    h:publish("v", "2")
    h:publish("v", "3")
    h:publish("v", "4")
    h:publish("ask", "")
    h:advance(5)  -- the first reading is exactly 10 s old: out
    h:publish("ask", "")
    h:advance(5)
    h:publish("ask", "")
    assert.are.same({ "4 2.5 1 1.75 3.997 4", "3 3 2 2.5 3.998 4", "none" }, h:payloads("out"))
  end)

  it("sliding windows emit every N seconds", function()
    h = t.load_string([[
      local mq = require "mqrouter"
      local window = require "mqrouter.window"
      local w = window.sliding{ size = 30, every = 10, stats = { "max" }, publish = "max/{key}" }
      w:route("t/#")
    ]], { start_time = T0 })
    h:publish("t/x", "3")
    h:advance(10)
    h:publish("t/x", "9")
    h:advance(10)
    h:advance(20) -- at +40: the 3 (t=0) and the 9 (t=10) are out
    local p = {}
    for _, m in ipairs(h:published("max/#")) do p[#p + 1] = m.json.max end
    assert.are.same({ 3, 9, 9 }, p)
  end)

  it("refuses unknown statistics and bad sizes", function()
    local ok, err = pcall(t.load_string, [[ require("mqrouter.window").tumbling{ size = 60, stats = { "median" } } ]])
    assert.truthy(tostring(err):find("unknown statistic 'median'", 1, true))
    ok, err = pcall(t.load_string, [[ require("mqrouter.window").sliding{ size = 0 } ]])
    assert.truthy(tostring(err):find("size must be seconds > 0", 1, true))
  end)
end)

describe("mqrouter.ratelimit", function()
  it("allows a burst, then refills at the rate", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local rl = require("mqrouter.ratelimit").new{ rate = 2, per = 1, burst = 3 }
      mq.route("try/+", function(msg)
        local ok, wait = rl:allow(msg.topic)
        mq.publish("out", ok and "ok" or ("wait " .. wait))
      end)
      mq.route("tokens", function() mq.publish("out", tostring(rl:tokens("try/a"))) end)
    ]], { start_time = T0 })
    for _ = 1, 4 do h:publish("try/a", "") end
    h:publish("try/b", "") -- its own bucket
    h:advance(0.25)
    h:publish("try/a", "")  -- 0.5 token: not yet
    h:advance(0.25)
    h:publish("try/a", "")  -- 1 token
    h:advance(10)
    h:publish("tokens", "") -- capped at the burst
    assert.are.same({ "ok", "ok", "ok", "wait 0.5", "ok", "wait 0.25", "ok", "3" }, h:payloads("out"))
    h:close()
  end)
end)

describe("mqrouter.dedupe", function()
  it("drops ids seen within the window, counted from the first sighting", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local d = require("mqrouter.dedupe").new{ window = 60 }
      mq.route("in", function(msg)
        if not d:check(msg.payload) then mq.publish("out", msg.payload) end
      end)
      mq.route("stats", function() local s = d:stats() mq.publish("st", s.size .. " " .. s.duplicates) end)
    ]], { start_time = T0 })
    h:publish("in", "a")
    h:publish("in", "b")
    h:advance(30)
    h:publish("in", "a")  -- duplicate
    h:advance(29.9)
    h:publish("in", "a")  -- still within 60 s of the first
    h:advance(0.1)
    h:publish("in", "a")  -- 60 s: new again
    h:publish("in", "b")
    h:publish("stats", "")
    assert.are.same({ "a", "b", "a", "b" }, h:payloads("out"))
    assert.are.same({ "2 2" }, h:payloads("st"))
    h:close()
  end)

  it("forgets the oldest past max", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local d = require("mqrouter.dedupe").new{ window = 60, max = 2 }
      d:check("1"); d:check("2"); d:check("3")
      mq.publish("out", tostring(d:seen("1")) .. " " .. tostring(d:seen("2")) .. " " .. tostring(d:seen("3")))
    ]])
    assert.are.same({ "false true true" }, h:payloads("out"))
    h:close()
  end)
end)
