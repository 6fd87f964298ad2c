-- mqrouter.schedule: parsing, matching (ranges, steps, lists, names, the
-- day-of-month / day-of-week rule), next times, and jobs on the fake clock.
local t = require "mqrouter.testing"

-- Runs code in a rules state and returns what it published on "out".
local function run(code, opts)
  local h = t.load_string("local mq = require 'mqrouter'\nlocal s = require 'mqrouter.schedule'\n" .. code, opts)
  local out = h:payloads("out")
  h:close()
  return out
end

-- 2024-01-01 00:00:00 UTC was a Monday.
local MON = 1704067200

describe("mqrouter.schedule", function()
  it("matches ranges, steps, lists and names", function()
    local out = run(([[
      local M = %d
      local function m(e, t) return tostring(s.matches(e, t)) end
      local r = {
        m("*/15 * * * *", M + 15 * 60), m("*/15 * * * *", M + 16 * 60),
        m("10-20/5 * * * *", M + 15 * 60), m("10-20/5 * * * *", M + 25 * 60),
        m("5/20 * * * *", M + 45 * 60), m("5/20 * * * *", M + 50 * 60),
        m("0 8-18 * * mon-fri", M + 8 * 3600), m("0 8-18 * * mon-fri", M + 5 * 86400 + 8 * 3600),
        m("0 0 1 jan *", M), m("0 0 1 feb *", M),
        m("0 0 * * 7", M + 6 * 86400), m("0 0 * * sun", M + 6 * 86400),
        m("1,2,3 * * * *", M + 120), m("1,2,3 * * * *", M + 240),
        m("30 * * * * *", M + 30), m("30 * * * * *", M + 31),
        m("@daily", M), m("@hourly", M + 1800),
      }
      mq.publish("out", table.concat(r, " "))
    ]]):format(MON))
    assert.are.equal("true false true false true false true false true false true true true false "
      .. "true false true false", out[1])
  end)

  it("day of month and day of week: either, when both are restricted", function()
    local out = run(([[
      local M = %d
      -- the 13th, or any Friday
      local e = "0 0 13 * fri"
      local r = {}
      for d = 0, 15 do if s.matches(e, M + d * 86400) then r[#r + 1] = d + 1 end end
      mq.publish("out", table.concat(r, ","))
    ]]):format(MON))
    assert.are.equal("5,12,13", out[1]) -- Fri 5th, Fri 12th, Sat 13th
  end)

  it("computes next times across hours, days, months and years", function()
    local out = run(([[
      local M = %d
      local r = {
        s.next("*/15 * * * *", M) - M,
        s.next("*/15 * * * *", M + 1) - M,
        s.next("0 9 * * *", M + 10 * 3600) - M,
        s.next("0 0 29 feb *", M) - M,
        s.next("0 0 1 1 *", M) - M,
        tostring(s.next("0 0 30 feb *", M)),
      }
      mq.publish("out", table.concat(r, " "))
    ]]):format(MON))
    -- Feb 29 2024 is day 59 of the year; next Jan 1 is 2025 (366 days)
    assert.are.equal(("900 900 %d %d %d nil"):format(33 * 3600, 59 * 86400, 366 * 86400), out[1])
  end)

  it("refuses bad expressions with what is wrong", function()
    local out = run([[
      local function e(x) local _, err = s.parse(x) return err end
      mq.publish("out", e("61 * * * *"))
      mq.publish("out", e("* * *"))
      mq.publish("out", e("5-1 * * * *"))
      mq.publish("out", e("* * * foo *"))
      local ok, err = pcall(s.cron, "bad", function() end)
      mq.publish("out", err)
    ]])
    assert.truthy(out[1]:find("bad minute '61' (0-59)", 1, true))
    assert.truthy(out[2]:find("needs 5 or 6 fields", 1, true))
    assert.truthy(out[3]:find("bad range '5-1'", 1, true))
    assert.truthy(out[4]:find("bad month 'foo'", 1, true))
    assert.truthy(out[5]:find("needs 5 or 6 fields", 1, true))
  end)

  it("runs jobs at their times on the fake clock", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local s = require "mqrouter.schedule"
      local job = s.cron("*/15 * * * *", function(at) mq.publish("run", tostring(at)) end)
      s.cron("0 12 * * *", function() error("noon job fails") end)
      mq.route("next", function() mq.publish("n", tostring(job:next())) end)
      mq.route("stop", function() job:stop() end)
    ]], { start_time = MON + 60 })
    h:advance(14 * 60 - 1)
    assert.are.equal(0, #h:published("run"))
    h:advance(1)
    h:advance(3600)
    local runs = h:payloads("run")
    assert.are.equal(5, #runs)
    assert.are.equal(tostring(MON + 900), runs[1])
    assert.are.equal(tostring(MON + 4500), runs[5])
    h:publish("next", "")
    assert.are.same({ tostring(MON + 5400) }, h:payloads("n"))
    h:advance(12 * 3600)           -- the failing job keeps its schedule
    h:advance(24 * 3600)
    assert.are.equal(2, #h:logs("noon job fails"))
    h:publish("stop", "")
    local n = #h:published("run")
    h:advance(3600)
    assert.are.equal(n, #h:published("run"))
    h:close()
  end)
end)
