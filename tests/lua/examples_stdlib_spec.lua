-- scripts/examples/*.lua built on lua/stdlib do what their headers say,
-- driven through mqrouter.testing with its fake clock (queue retries
-- included).
local t = require "mqrouter.testing"
local h_ = require "helpers"

local src = os.getenv("MQROUTER_SRC") or "."
local function example(name) return src .. "/scripts/examples/" .. name end

local T0 = 1700000020 -- 40 s into a clock minute

describe("examples/temperature_alerts.lua", function()
  it("warns after a minute above 30, escalates, pages, recovers, notices silence", function()
    local h = t.load(example("temperature_alerts.lua"), { start_time = T0 })
    h:publish("sensors/lab/temperature", "31")
    h:advance(30)
    h:publish("sensors/lab/temperature", "32")
    h:advance(29)
    assert.are.equal(0, #h:published("alerts/#"))
    h:advance(1)
    local a = h:last("alerts/temperature/lab/threshold")
    assert.are.same({ "firing", "warning", 32 }, { a.json.state, a.json.level, a.json.value })
    assert.is_true(a.retain)
    h:publish("sensors/lab/temperature", "29")    -- within the hysteresis: still firing
    h:publish("sensors/lab/temperature", "33")    -- same alert: not republished
    assert.are.equal(1, #h:published("alerts/#"))
    for _ = 1, 20 do                              -- ten more hot minutes
      h:advance(30)
      h:publish("sensors/lab/temperature", "33")
    end
    a = h:last("alerts/temperature/lab/threshold")
    assert.are.same({ "firing", "critical" }, { a.json.state, a.json.level })
    local page = h:published("pager/oncall")
    assert.are.equal(1, #page)
    assert.truthy(page[1].payload:match("^lab is at 33 since %d%d:%d%d$"))
    h:publish("sensors/lab/temperature", "28.5")  -- 30 - 1.5: resolved
    a = h:last("alerts/temperature/lab/threshold")
    assert.are.same({ "resolved", 28.5 }, { a.json.state, a.json.value })
    assert.are.equal(3, #h:published("alerts/temperature/lab/threshold"))
    h:advance(300)                                -- nothing for five minutes
    a = h:last("alerts/temperature/lab/missing")
    assert.are.same({ "firing", "missing" }, { a.json.state, a.json.kind })
    h:publish("sensors/lab/temperature", "22")
    assert.are.equal("resolved", h:last("alerts/temperature/lab/missing").json.state)
    assert.are.equal(1, #h:published("pager/oncall"))
    h:close()
  end)
end)

describe("examples/telemetry_summary.lua", function()
  it("publishes one retained summary per device and clock minute", function()
    local h = t.load(example("telemetry_summary.lua"), { start_time = T0 })
    for _, w in ipairs({ 1000, 1200, 1100, 5000 }) do h:publish("telemetry/pump1/power", tostring(w)) end
    h:publish("telemetry/pump2/power", "300")
    h:publish("telemetry/pump2/power", "lots")    -- a route error, left out
    h:advance(20)
    local s = h:published("summary/#")
    assert.are.equal(2, #s)
    assert.are.equal("summary/pump1/1m", s[1].topic)
    assert.is_true(s[1].retain)
    local j = s[1].json
    assert.are.same({ 4, 1000, 5000, 2075, T0 - 40, T0 + 20 }, { j.count, j.min, j.max, j.avg, j.start, j.stop })
    assert.are.equal(4430, j.p95)                 -- 1200 + 0.85 * (5000 - 1200)
    assert.are.equal(1, s[2].json.count)
    assert.are.equal(1, #h:logs('"lots" is not a number'))
    h:advance(60)
    assert.are.equal(2, #h:published("summary/#")) -- a quiet minute: nothing
    h:close()
  end)
end)

describe("examples/device_twin.lua", function()
  it("keeps reported/desired state, publishes deltas and presence", function()
    local h = t.load(example("device_twin.lua"), { start_time = T0 })
    h:publish("devices/lamp1/reported", '{"power":"off","brightness":40}')
    assert.are.equal("true", h:last("devices/lamp1/online").payload)
    h:publish("devices/lamp1/desired/set", '{"power":"on"}')
    local d = h:last("devices/lamp1/delta")
    assert.are.same({ power = "on" }, d.json)
    assert.is_true(d.retain)
    h:publish("devices/lamp1/reported", '{"power":"on"}')
    assert.are.equal("{}", h:last("devices/lamp1/delta").payload)
    local twin = h:last("devices/lamp1/twin").json
    assert.are.same({ power = "on", brightness = 40 }, twin.reported)
    assert.are.equal(3, twin.version)
    -- silent for two minutes: offline; a delta for it is kept and logged
    h:advance(120)
    assert.are.equal("false", h:last("devices/lamp1/online").payload)
    h:publish("devices/lamp1/desired/set", '{"brightness":80}')
    assert.are.same({ brightness = 80 }, h:last("devices/lamp1/delta").json)
    assert.are.equal(1, #h:logs("lamp1 is offline: its delta waits"))
    -- state survives a reload
    assert(h:reload())
    h:publish("devices/lamp1/reported", '{"brightness":80}')
    assert.are.equal(5, h:last("devices/lamp1/twin").json.version)
    assert.are.equal("{}", h:last("devices/lamp1/delta").payload)
    assert.are.equal("true", h:last("devices/lamp1/online").payload)
    h:close()
  end)
end)

describe("examples/commands.lua", function()
  it("answers with the device's result, its error, or a timeout after 5 s", function()
    local h = t.load(example("commands.lua"), { start_time = T0 })
    h:publish("app/commands/lamp1/reboot", '{"delay":1}')
    local req = h:last("devices/lamp1/cmd").json
    assert.are.same({ "reboot", 1 }, { req.name, req.args.delay })
    h:advance(2)
    h:publish("devices/lamp1/cmd/response", ('{"id":"%s","result":"rebooting"}'):format(req.id))
    local r = h:last("app/results/lamp1/reboot").json
    assert.are.same({ true, "rebooting" }, { r.ok, r.result })

    h:publish("app/commands/lamp1/dim", '{"level":5}')
    req = h:last("devices/lamp1/cmd").json
    h:publish("devices/lamp1/cmd/response", ('{"id":"%s","error":"unsupported"}'):format(req.id))
    r = h:last("app/results/lamp1/dim").json
    assert.are.same({ false, "EDEVICE: unsupported" }, { r.ok, r.error })

    h:publish("app/commands/lamp2/ping", "")
    h:advance(4.9)
    assert.are.equal(0, #h:published("app/results/lamp2/#"))
    h:advance(0.1)
    r = h:last("app/results/lamp2/ping").json
    assert.is_false(r.ok)
    assert.truthy(r.error:find("^ETIMEDOUT: device lamp2 did not answer ping within 5 s"))
    h:close()
  end)
end)

describe("examples/orders.lua", function()
  it("accepts orders, drops repeats, dead-letters bad and failing ones", function()
    local dir = h_.tmpdir()
    local h = t.load(example("orders.lua"), { data_dir = dir })
    h:publish("orders/new", '{"id":"o-1","sku":"A","qty":2}')
    h:publish("orders/new", '{"id":"o-1","sku":"A","qty":2}')     -- repeat: dropped
    h:publish("orders/new", '{"id":"o-2","sku":"A","qty":0}')     -- refused: dead letter at once
    h:publish("orders/new", '{"id":"o-3","sku":"backorder","qty":1}') -- retried, then dead letter
    h:publish("orders/new", "not json")
    h:advance(60) -- the retries' backoff, in virtual time
    assert.are.equal(3, #h:published("dlq/orders"))
    local accepted = h:published("orders/accepted/#")
    assert.are.equal(1, #accepted)
    assert.are.equal("orders/accepted/o-1", accepted[1].topic)
    local dlq = h:published("dlq/orders")
    local reasons = {}
    for _, m in ipairs(dlq) do
      local u = m.properties.user
      reasons[#reasons + 1] = m.payload:match('"id":"([^"]+)"') or m.payload
      reasons[#reasons + 1] = u["mqrouter-reason"] .. "/" .. u["mqrouter-attempts"]
    end
    table.sort(reasons)
    assert.are.same({ "max_attempts/3", "not json", "o-2", "o-3", "rejected/1", "rejected/1" }, reasons)
    assert.are.equal(1, #h:logs("duplicate order o%-1 dropped"))
    assert.are.equal(0, h:queue_depth("orders"))
    assert.are.equal(3, h:queue_stats("orders").dead)
    h:close()
    os.execute("rm -rf " .. dir)
  end)
end)
