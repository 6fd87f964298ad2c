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

describe("dead letters", function()
  it("publish the message a handler failed on, with the reason", function()
    local e = h.engine()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("orders/#", function(msg)
        if msg.payload == "bad" then error("cannot parse order") end
      end, { dead_letter = "dlq/orders" })
    ]], "orders.lua"))
    local dlq = e:capture("dlq/#")
    e:publish("orders/1", "good", { qos = 1 })
    e:publish("orders/2", "bad", { qos = 1, properties = { user = { id = "2" } } })
    local m = dlq:messages()
    assert.are.equal(1, #m)
    assert.are.equal("dlq/orders", m[1].topic)
    assert.are.equal("bad", m[1].payload)
    assert.are.equal(1, m[1].qos)
    local u = m[1].properties.user
    assert.are.equal("2", u.id)
    assert.are.equal("orders/2", u["mqrouter-topic"])
    assert.are.equal("orders/#", u["mqrouter-route"])
    assert.matches("orders.lua:3: cannot parse order", u["mqrouter-error"], 1, true)
    e:close()
  end)

  it("refuses an invalid dead-letter topic", function()
    local e = h.engine()
    local ok, err = e:load([[
      require("mqrouter").route("a", function() end, { dead_letter = "dlq/#" })
    ]], "x.lua")
    assert.is_nil(ok)
    assert.matches("invalid dead_letter topic 'dlq/#'", err, 1, true)
    e:close()
  end)
end)

describe("handler error log entries", function()
  it("are one line each, the traceback's frames joined on it", function()
    mqrouter.set_log_level("debug")
    mqrouter.capture_logs(true)
    local e = h.engine()
    assert(e:load([[
      local mq = require "mqrouter"
      local function parse(p)
        return tonumber(p) or error("not a number:\n" .. p)
      end
      mq.route("t", function(msg) parse(msg.payload) end)
    ]], "rules.lua"))
    e:publish("t", "abc")
    local entries = {}
    for _, l in ipairs(mqrouter.logs()) do
      if l:find("not a number", 1, true) then entries[#entries + 1] = l end
    end
    e:close()
    mqrouter.capture_logs(false)
    mqrouter.set_log_level(os.getenv("MQR_TEST_LOG_LEVEL") or "warn")
    assert.are.equal(1, #entries)
    assert.is_nil(entries[1]:find("\n", 1, true))
    assert.matches("route 't' (rules.lua:5) failed: rules.lua:3: not a number: abc | traceback: "
      .. "[C]: in function 'error' <- rules.lua:3: in function 'parse' <- rules.lua:5: in function",
      entries[1], 1, true)
  end)
end)
