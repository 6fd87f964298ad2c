-- Timers: every and after, stopping, and errors inside timers.
local mqrouter = require "mqrouter"
local h = require "helpers"

describe("timers", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  it("after fires once, every repeats until stopped", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.after(0.05, function() mq.publish("once", "1") end)
      local n = 0
      local t
      t = mq.every(0.02, function()
        n = n + 1
        mq.publish("tick", tostring(n))
        if n == 3 then t:stop() end
      end)
    ]]))
    local once, tick = e:capture("once"), e:capture("tick")
    assert.is_true(h.run_until(e, function() return once:count() == 1 and tick:count() == 3 end, 2))
    e:run(0.15)
    assert.are.equal(1, once:count())
    assert.are.equal(3, tick:count())
  end)

  it("do not fire before the script has loaded, nor after it failed", function()
    local ok = e:load([[
      local mq = require "mqrouter"
      mq.after(0, function() mq.publish("fired", "bad") end)
      error("broken script")
    ]])
    assert.is_nil(ok)
    local cap = e:capture("fired")
    e:run(0.05)
    assert.are.equal(0, cap:count())
  end)

  it("survive errors in their function", function()
    mqrouter.capture_logs(true)
    assert(e:load([[
      local mq = require "mqrouter"
      local n = 0
      mq.every(0.01, function()
        n = n + 1
        if n == 1 then error("first tick fails") end
        mq.publish("tick", tostring(n))
      end)
    ]]))
    local cap = e:capture("tick")
    assert.is_true(h.run_until(e, function() return cap:count() >= 2 end, 2))
    assert.truthy(h.find_log(mqrouter.logs(), "first tick fails"))
    mqrouter.capture_logs(false)
  end)
end)
