-- mqrouter.testing with fake sinks: a rule that calls a sink is unit-tested
-- without the server, its calls recorded, and failures told to happen.
local t = require "mqrouter.testing"

describe("mqrouter.testing fake sinks", function()
  it("records a webhook call and lets the test make it fail", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local hooks = mq.http{ name = "hooks", base_url = "https://hooks.example.com" }
      local q = mq.queue("alerts-out", { max_attempts = 3, backoff = { 1, 1 } })
      mq.route("alerts/#", q)
      mq.deliver(q, function(msg) return hooks:post("/alert", { topic = msg.topic, value = msg.payload }) end)
    ]], { fake_sinks = true })
    h:publish("alerts/boiler", "97")
    local calls = h:sink_calls("hooks")
    assert.are.equal(1, #calls)
    assert.are.equal("post", calls[1].method)
    assert.are.same({ "/alert", { topic = "alerts/boiler", value = "97" } }, calls[1].args)
    assert.are.equal(1, h:queue_stats("alerts-out").acked)

    h:fail_sink("hooks", { name = "EHTTP", kind = "permanent", times = 1 })
    h:publish("alerts/boiler", "98")
    assert.are.equal(2, #h:sink_calls("hooks"))
    assert.are.equal(1, h:queue_stats("alerts-out").dead) -- permanent: dead-lettered at once
    h:close()
  end)

  it("fakes Redis, PostgreSQL and files with plausible answers", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local r, db, f = mq.redis{ name = "r" }, mq.pg{ conninfo = "x", name = "db" }, mq.file{ path = "/x" }
      mq.route("in", function(msg)
        local id = r:xadd("s", { v = msg.payload })
        local ok = db:insert("t", { v = msg.payload })
        f:write(msg.payload)
        mq.publish("out", tostring(id) .. " " .. tostring(ok) .. " " .. tostring(r:get("k") == mq.redis.null))
      end, { async = true })
    ]], { fake_sinks = true })
    h:publish("in", "5")
    assert.are.equal("0-1 true true", h:last("out").payload)
    assert.are.equal("xadd", h:sink_calls("r")[1].method)
    assert.are.same({ "t", { v = "5" } }, h:sink_calls("db")[1].args)
    assert.are.same({ "5" }, h:sink_calls("/x")[1].args)
    h:close()
  end)
end)
