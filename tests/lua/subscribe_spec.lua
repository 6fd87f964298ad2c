-- mq.subscribe: a buffered in-process subscriber with a Lua handler. It gets
-- messages on later loop turns, never inside the publisher's call; a full
-- buffer drops the newest (or the oldest) and counts it; stop() ends it; a
-- reload replaces the old state's subscribers with the new one's.
local h = require "helpers"

describe("mq.subscribe", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  it("delivers after the publisher's call, in order, through a bounded buffer", function()
    local cap = e:capture("out/#")
    assert(e:load([[
      local mq = require "mqrouter"
      local inside = false
      sub = mq.subscribe("in/#", function(msg)
        mq.publish("out/" .. msg.topic, msg.payload .. (inside and " (inside)" or ""))
      end, { buffer = 5 })
      mq.route("go", function()
        inside = true
        for i = 1, 8 do mq.publish("in/x", tostring(i)) end
        inside = false
      end)
      mq.route("stats", function()
        local s = sub:stats()
        mq.publish("out/stats", s.received .. " " .. s.delivered .. " " .. s.dropped)
      end)
    ]]))
    assert(e:publish("go", ""))
    assert.is_true(h.run_until(e, function() return cap:count() >= 5 end, 2))
    e:run(0.05)
    local got = {}
    for _, m in ipairs(cap:messages()) do got[#got + 1] = m.payload end
    -- five fit in the buffer; 6..8 were dropped, none ran inside the publish
    assert.same({ "1", "2", "3", "4", "5" }, got)
    assert(e:publish("stats", ""))
    e:run(0.05)
    assert.equals("8 5 3", cap:messages()[6].payload)
  end)

  it("drop_oldest keeps the newest", function()
    local cap = e:capture("out")
    assert(e:load([[
      local mq = require "mqrouter"
      mq.subscribe("in", function(msg) mq.publish("out", msg.payload) end,
        { buffer = 3, drop_oldest = true })
      mq.route("go", function() for i = 1, 6 do mq.publish("in", tostring(i)) end end)
    ]]))
    assert(e:publish("go", ""))
    assert.is_true(h.run_until(e, function() return cap:count() >= 3 end, 2))
    e:run(0.05)
    local got = {}
    for _, m in ipairs(cap:messages()) do got[#got + 1] = m.payload end
    assert.same({ "4", "5", "6" }, got)
  end)

  it("stop() ends it; a reload swaps in the new script's subscribers", function()
    local cap = e:capture("out/#")
    local script = [[
      local mq = require "mqrouter"
      local sub = mq.subscribe("in", function(msg) mq.publish("out/%s", msg.payload) end)
      mq.route("stop", function() sub:stop() end)
    ]]
    assert(e:load(script:format("v1")))
    assert(e:publish("in", "a"))
    assert.is_true(h.run_until(e, function() return cap:count() >= 1 end, 2))
    assert(e:load(script:format("v2")))
    assert(e:publish("in", "b"))
    assert.is_true(h.run_until(e, function() return cap:count() >= 2 end, 2))
    assert(e:publish("stop", ""))
    assert(e:publish("in", "c"))
    e:run(0.1)
    local got = {}
    for _, m in ipairs(cap:messages()) do got[#got + 1] = m.topic .. "=" .. m.payload end
    assert.same({ "out/v1=a", "out/v2=b" }, got)
  end)

  it("refuses a bad filter or bad options at load", function()
    local ok, err = e:load([[ require("mqrouter").subscribe("a/#/b", function() end) ]])
    assert.is_nil(ok)
    assert.matches("subscribe 'a/#/b'", err)
    ok, err = e:load([[ require("mqrouter").subscribe("a", function() end, { buffer = 0 }) ]])
    assert.is_nil(ok)
    assert.matches("buffer", err)
  end)
end)
