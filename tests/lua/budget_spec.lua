-- A handler stuck in an endless loop is stopped within the budget with a
-- named error, and the engine keeps serving, JIT-compiled loops included.
local mqrouter = require "mqrouter"
local h = require "helpers"


describe("handler budget", function()
  local e
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine({ budget_ms = 200 })
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  local stuck = {
    plain = "while true do end",
    arithmetic = "local x = 0 for i = 1, math.huge do x = x + i % 7 end",
    strings = "local s = '' while true do s = string.format('%d', #s) .. string.rep('x', 3) end",
    pcall_swallow = "while true do pcall(function() while true do end end) end",
    coroutine = "local co = coroutine.wrap(function() while true do end end) co()",
    recursion = "local function f(n) if n > 1e6 then return f(0) end return f(n + 1) end f(0)",
  }

  for name, body in pairs(stuck) do
    it("stops a stuck handler: " .. name, function()
      assert(e:load(([[
        local mq = require "mqrouter"
        mq.route("stuck", function() %s end)
        mq.route("ok", function(msg) mq.publish("done", msg.payload) end)
      ]]):format(body), "stuck.lua"))
      local cap = e:capture("done")
      local t0 = os.clock()
      e:publish("stuck", "")
      local took = os.clock() - t0
      assert.is_true(took < 1.5, "took " .. took .. " s")
      local st = e:stats()
      assert.are.equal(1, st.routes[1].budget_errors)
      assert.are.equal(1, st.budget_errors)
      -- the engine and the same Lua state keep serving
      e:publish("ok", "after")
      assert.are.equal("after", cap:messages()[1].payload)
      assert.truthy(h.find_log(mqrouter.logs(), "exceeded its time budget of 200 ms"))
    end)
  end

  it("never trips for handlers that finish in time", function()
    assert(e:load([[
      local mq = require "mqrouter"
      local n = 0
      mq.route("fast", function(msg) n = n + #msg.payload end)
    ]]))
    for _ = 1, 200000 do e:publish("fast", "x") end
    local st = e:stats()
    assert.are.equal(0, st.budget_errors)
    assert.are.equal(200000, st.routes[1].calls)
  end)

  it("stops a script whose top level never ends, keeping the old rules", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("ok", function(msg) mq.publish("done", msg.payload) end)
    ]]))
    local ok, err = e:load("while true do end", "forever.lua")
    assert.is_nil(ok)
    assert.matches("time budget", err)
    local cap = e:capture("done")
    e:publish("ok", "still")
    assert.are.equal(1, cap:count())
  end)
end)
