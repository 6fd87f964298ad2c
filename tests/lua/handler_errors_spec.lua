-- A failing handler is logged with its position, counted on its route, and
-- never stops the engine.
local mqrouter = require "mqrouter"
local h = require "helpers"

describe("handler errors", function()
  it("are logged with file and line, counted per route, and survived", function()
    mqrouter.capture_logs(true)
    local e = h.engine()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("sensors/+/temperature", function(msg)
        local v = tonumber(msg.payload) or error("not a number: " .. msg.payload)
        mq.publish("ok", tostring(v))
      end)
      mq.route("other", function() mq.publish("ok", "other") end)
    ]], "rules.lua"))
    local cap = e:capture("ok")
    e:publish("sensors/r1/temperature", "abc")
    e:publish("sensors/r1/temperature", "31")
    e:publish("other", "")
    local st = e:stats()
    assert.are.equal(2, st.routes[1].calls)
    assert.are.equal(1, st.routes[1].errors)
    assert.are.equal(0, st.routes[2].errors)
    assert.are.equal(1, st.handler_errors)
    assert.are.equal(2, cap:count())
    local line = h.find_log(mqrouter.logs(), "not a number")
    assert.truthy(line)
    assert.matches("route 'sensors/+/temperature' (rules.lua:2) failed: rules.lua:3: not a number: abc",
      line, 1, true)
    e:close()
    mqrouter.capture_logs(false)
  end)

  it("reports non-string error values", function()
    mqrouter.capture_logs(true)
    local e = h.engine()
    assert(e:load([[
      require("mqrouter").route("t", function() error({ code = 1 }) end)
    ]]))
    e:publish("t", "")
    assert.truthy(h.find_log(mqrouter.logs(), "error object is a table value"))
    e:close()
    mqrouter.capture_logs(false)
  end)
end)
