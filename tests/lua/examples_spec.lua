-- scripts/examples/rules.lua does what the README says.
local mqrouter = require "mqrouter"
local h = require "helpers"

local src = os.getenv("MQROUTER_SRC") or "."

describe("examples/rules.lua", function()
  it("turns readings above 30 into alerts and refuses non-numbers", function()
    mqrouter.capture_logs(true)
    local e = h.engine()
    assert(e:load_file(src .. "/scripts/examples/rules.lua"))
    local alerts = e:capture("alerts/#")
    e:publish("sensors/room1/temperature", "abc")
    e:publish("sensors/room1/temperature", "20")
    e:publish("sensors/room1/temperature", "31")
    e:publish("sensors/room1/humidity", "99")
    local m = alerts:messages()
    assert.are.equal(1, #m)
    assert.are.equal("alerts/room1/temperature", m[1].topic)
    assert.are.equal('{"room":"room1","value":31,"limit":30}', m[1].payload)
    assert.are.equal(1, m[1].qos)
    local st = e:stats()
    assert.are.equal(3, st.routes[1].calls)
    assert.are.equal(1, st.routes[1].errors)
    assert.truthy(h.find_log(mqrouter.logs(), 'reading "abc" on sensors/room1/temperature is not a number'))
    e:close()
    mqrouter.capture_logs(false)
  end)
end)
