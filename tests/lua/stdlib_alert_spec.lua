-- mqrouter.alert driven by the fake clock: hysteresis edges, debounce,
-- rate of change, missing data, escalation, de-duplication, recovery.
local t = require "mqrouter.testing"

local T0 = 1700000000

local function rules(opts)
  return ([[
    local mq = require "mqrouter"
    local alert = require "mqrouter.alert"
    local a = alert.new(%s)
    a:route("sensors/+/temp", { key = "^sensors/([^/]+)/" })
  ]]):format(opts)
end

local function alerts(h, filter)
  local out = {}
  for _, m in ipairs(h:published(filter or "alerts/#")) do out[#out + 1] = m.json or { cleared = true, topic = m.topic } end
  return out
end

describe("mqrouter.alert", function()
  local h
  after_each(function() if h then h:close() end h = nil end)

  it("fires above the threshold and clears only past the hysteresis band", function()
    h = t.load_string(rules("{ name = 'hot', above = 30, hysteresis = 2 }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "30")       -- not above
    assert.are.equal(0, #alerts(h))
    h:publish("sensors/r1/temp", "30.5")     -- fires
    local a = alerts(h)
    assert.are.equal(1, #a)
    assert.are.same({ "hot", "r1", "threshold", "firing", 30.5, 30 },
      { a[1].alert, a[1].key, a[1].kind, a[1].state, a[1].value, a[1].threshold })
    local m = h:last("alerts/#")
    assert.are.equal("alerts/hot/r1", m.topic)
    assert.is_true(m.retain)
    assert.are.equal(1, m.qos)
    h:publish("sensors/r1/temp", "28.5")     -- inside the band: still firing
    h:publish("sensors/r1/temp", "31")       -- de-duplicated
    assert.are.equal(1, #alerts(h))
    h:publish("sensors/r1/temp", "28")       -- 30 - 2: clears
    a = alerts(h)
    assert.are.equal(2, #a)
    assert.are.equal("resolved", a[2].state)
    assert.are.equal(28, a[2].value)
    assert.are.equal(3, a[2].count)          -- readings while firing
    h:publish("sensors/r1/temp", "29.9")     -- back below: nothing
    assert.are.equal(2, #alerts(h))
  end)

  it("below thresholds mirror above", function()
    h = t.load_string(rules("{ name = 'cold', below = 5, hysteresis = 1 }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "4")
    h:publish("sensors/r1/temp", "5.5")
    h:publish("sensors/r1/temp", "6")
    local a = alerts(h)
    assert.are.same({ "firing", "resolved" }, { a[1].state, a[2].state })
    assert.are.equal(6, a[2].value)
  end)

  it("debounces: above 30 for 60 s, measured on the fake clock", function()
    h = t.load_string(rules("{ name = 'hot', above = 30, hold = 60 }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "31")
    h:advance(59)
    assert.are.equal(0, #alerts(h))
    h:advance(1)                             -- 60 s after the first high reading
    local a = alerts(h)
    assert.are.equal(1, #a)
    assert.are.equal(T0 + 60, a[1].time)
    assert.are.equal(T0 + 60, a[1].since)
    -- a dip below resets the hold
    h = (h:close() and nil) or t.load_string(rules("{ name = 'hot', above = 30, hold = 60 }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "31")
    h:advance(30)
    h:publish("sensors/r1/temp", "29")
    h:advance(5)
    h:publish("sensors/r1/temp", "32")
    h:advance(59)
    assert.are.equal(0, #alerts(h))
    h:advance(1)
    assert.are.equal(1, #alerts(h))
  end)

  it("clear_hold waits before resolving", function()
    h = t.load_string(rules("{ above = 30, clear_hold = 10 }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "31")
    h:publish("sensors/r1/temp", "20")
    h:advance(9)
    assert.are.equal(1, #alerts(h))
    h:advance(1)
    assert.are.equal("resolved", alerts(h)[2].state)
  end)

  it("rate of change: more than 5 per minute", function()
    h = t.load_string(rules("{ name = 'jump', rate = { max = 5, per = 60 } }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "20")
    h:advance(60)
    h:publish("sensors/r1/temp", "24")       -- 4 / min
    assert.are.equal(0, #alerts(h))
    h:advance(30)
    h:publish("sensors/r1/temp", "27")       -- 3 in 30 s = 6 / min
    local a = alerts(h)
    assert.are.equal(1, #a)
    assert.are.equal("rate", a[1].kind)
    assert.are.equal(6, a[1].rate)
    h:advance(60)
    h:publish("sensors/r1/temp", "27")
    assert.are.equal("resolved", alerts(h)[2].state)
  end)

  it("missing data: no reading for 300 s, recovered by the next one", function()
    h = t.load_string(rules("{ name = 'silent', missing = 300, expect = { 'r2' } }"), { start_time = T0 })
    h:publish("sensors/r1/temp", "20")
    h:advance(299)
    assert.are.equal(0, #alerts(h))
    h:advance(1)
    local a = alerts(h)
    assert.are.equal(2, #a)                  -- r1 and the expected r2
    local keys = { a[1].key, a[2].key }
    table.sort(keys)
    assert.are.same({ "r1", "r2" }, keys)
    assert.are.equal("missing", a[1].kind)
    h:advance(600)
    assert.are.equal(2, #alerts(h))          -- still missing: not repeated
    h:publish("sensors/r1/temp", "21")
    a = alerts(h)
    assert.are.equal(3, #a)
    assert.are.same({ "r1", "resolved", "missing" }, { a[3].key, a[3].state, a[3].kind })
  end)

  it("escalates with time, repeats when asked, and publishes recovery", function()
    h = t.load_string(rules([[{ name = 'hot', above = 30, ["repeat"] = 100,
      escalate = { { after = 0, level = "warning" }, { after = 120, level = "critical" } } }]]),
      { start_time = T0 })
    h:publish("sensors/r1/temp", "35")
    h:advance(99)
    assert.are.equal(1, #alerts(h))
    h:advance(1)                             -- repeat at 100 s, still warning
    local a = alerts(h)
    assert.are.same({ "warning", "warning" }, { a[1].level, a[2].level })
    h:advance(20)                            -- 120 s: critical
    a = alerts(h)
    assert.are.equal(3, #a)
    assert.are.equal("critical", a[3].level)
    assert.are.equal(T0 + 120, a[3].time)
    h:publish("sensors/r1/temp", "20")
    a = alerts(h)
    assert.are.same({ "resolved", "critical" }, { a[4].state, a[4].level })
  end)

  it("recovery = false clears the retained alert; topics take {kind} and {level}", function()
    h = t.load_string(rules("{ above = 30, recovery = false, topic = 'a/{kind}/{key}/{level}' }"),
      { start_time = T0 })
    h:publish("sensors/r1/temp", "31")
    h:publish("sensors/r1/temp", "1")
    local m = h:published("a/#")
    assert.are.equal(2, #m)
    assert.are.equal("a/threshold/r1/alert", m[1].topic)
    assert.are.equal("", m[2].payload)
    assert.is_true(m[2].retain)
  end)

  it("refuses bad options and counts bad readings as route errors", function()
    local ok, err = pcall(t.load_string, [[
      local alert = require "mqrouter.alert"
      alert.new{ above = 30, holdd = 3 }
    ]])
    assert.is_false(ok)
    assert.truthy(tostring(err):find("unknown option 'holdd'", 1, true))
    ok, err = pcall(t.load_string, [[ require("mqrouter.alert").new{ name = "x" } ]])
    assert.truthy(tostring(err):find("at least one of above", 1, true))
    h = t.load_string(rules("{ above = 30 }"))
    h:publish("sensors/r1/temp", "hot!")
    assert.are.equal(1, h:stats().routes[1].errors)
    assert.are.equal(1, #h:logs('"hot!" is not a number on sensors/r1/temp'))
  end)

  it("state(key) and on_change", function()
    h = t.load_string([[
      local mq = require "mqrouter"
      local alert = require "mqrouter.alert"
      local a = alert.new{ above = 30, on_change = function(ev) mq.publish("changes", ev.state) end }
      a:feed("k", 31)
      local s = a:state("k").threshold
      mq.publish("out", tostring(s.active) .. " " .. s.level .. " " .. s.value)
    ]])
    assert.are.same({ "firing" }, h:payloads("changes"))
    assert.are.same({ "true alert 31" }, h:payloads("out"))
  end)
end)

describe("mqrouter.alert across a reload", function()
  it("the new rules take over a firing alert and resolve it", function()
    local h_ = require "helpers"
    local dir = h_.tmpdir()
    local path = dir .. "/rules.lua"
    h_.write(path, [[
      local alert = require "mqrouter.alert"
      local a = alert.new{ name = "hot", above = 30,
        escalate = { { after = 0, level = "warning" }, { after = 60, level = "critical" } } }
      a:route("sensors/+/temp", { key = "^sensors/([^/]+)/" })
    ]])
    local h = t.load(path, { start_time = T0 })
    h:publish("sensors/r1/temp", "35")
    h:advance(10)
    assert(h:reload())
    h:advance(50)                            -- escalation goes on from the original start
    local a = alerts(h)
    assert.are.equal(2, #a)
    assert.are.same({ "critical", T0 }, { a[2].level, a[2].since })
    h:publish("sensors/r1/temp", "20")
    a = alerts(h)
    assert.are.equal(3, #a)
    assert.are.same({ "resolved", "r1" }, { a[3].state, a[3].key })
    assert(h:reload())
    h:publish("sensors/r1/temp", "20")       -- resolved: nothing left to take over
    assert.are.equal(3, #alerts(h))
    h:close()
    os.execute("rm -rf " .. dir)
  end)
end)
