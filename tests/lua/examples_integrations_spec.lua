-- scripts/examples/integrations/*.lua do what their headers say, driven
-- through mqrouter.testing with fake sinks (the sinks against real servers
-- are tested in sink_*_spec.lua).
local t = require "mqrouter.testing"

local src = os.getenv("MQROUTER_SRC") or "."
local function example(name) return src .. "/scripts/examples/integrations/" .. name end

describe("examples/integrations", function()
  it("webhook_alerts: posts each alert, retries with backoff, dead-letters a 4xx", function()
    local h = t.load(example("webhook_alerts.lua"), { fake_sinks = true })
    h:publish("alerts/boiler/pressure", '{"bar": 3.4}', { qos = 1 })
    local c = h:sink_calls("alerts-webhook")
    assert.are.equal(1, #c)
    assert.are.equal("http://127.0.0.1:8081/alert", c[1].args[1])
    assert.are.equal("alerts/boiler/pressure", c[1].args[2].topic)
    assert.are.equal(1, h:queue_stats("alerts-webhook").acked)

    h:fail_sink("alerts-webhook", { name = "ETIMEDOUT", kind = "retry", times = 2 })
    h:publish("alerts/boiler/pressure", "x")
    assert.are.equal(0, h:queue_stats("alerts-webhook").dead)
    h:advance(5)  -- the first retry: fails again
    h:advance(10) -- the second: succeeds
    assert.are.equal(4, #h:sink_calls("alerts-webhook"))
    assert.are.equal(2, h:queue_stats("alerts-webhook").acked)

    h:fail_sink("alerts-webhook", { name = "EHTTP", kind = "permanent", times = 1 })
    h:publish("alerts/door", "open")
    assert.are.equal(1, h:queue_stats("alerts-webhook").dead)
    assert.are.equal("open", h:last("dlq/alerts").payload)
    h:close()
  end)

  it("readings_to_postgres: a row per reading, a bad value dead-lettered", function()
    local h = t.load(example("readings_to_postgres.lua"), { fake_sinks = true, start_time = 1700000000 })
    h:publish("plant/p7/power", "12.5", { qos = 1 })
    h:publish("plant/p7/power", "n/a", { qos = 1 })
    local c = h:sink_calls("plant-db")
    assert.are.equal(1, #c)
    assert.are.same({ "readings", { device = "p7", metric = "power", value = 12.5,
      ts = "2023-11-14T22:13:20Z" } }, c[1].args)
    local s = h:queue_stats("readings-db")
    assert.are.same({ 1, 1 }, { s.acked, s.dead })
    h:close()
  end)

  it("device_events_redis: XADD to the stream and the device's last state", function()
    local h = t.load(example("device_events_redis.lua"), { fake_sinks = true })
    h:publish("devices/d9/events", "reboot")
    local c = h:sink_calls("events-redis")
    assert.are.equal(2, #c)
    assert.are.equal("send", c[1].method)
    assert.are.same({ "XADD", "device-events", "MAXLEN", "~", 100000, "*", "device", "d9",
      "topic", "devices/d9/events", "payload", "reboot" }, c[1].args[1])
    assert.are.equal("device:d9", c[2].args[1][2])
    h:close()
  end)

  it("audit_log: every message as a JSON line", function()
    local h = t.load(example("audit_log.lua"), { fake_sinks = true })
    h:publish("a/b", "1", { qos = 1 })
    h:publish("c", "2")
    local c = h:sink_calls("audit")
    assert.are.equal(2, #c)
    assert.are.equal("write", c[1].method)
    assert.are.same({ "a/b", 1, "1" }, { c[1].args[1].topic, c[1].args[1].qos, c[1].args[1].payload })
    h:close()
  end)
end)
