-- scripts/examples/edge_bridge.lua and fan_in.lua against real Mosquitto
-- brokers on free loopback ports (real clock: sessions reconnect in real
-- time).
local t = require "mqrouter.testing"
local h_ = require "helpers"
local mosq = require "mosquitto"

local src = os.getenv("MQROUTER_SRC") or "."
local function example(name) return src .. "/scripts/examples/" .. name end

local function sorted(list)
  table.sort(list)
  return list
end

describe("examples/edge_bridge.lua", function()
  local dir, brokers, watchers, h
  before_each(function() dir, brokers, watchers = h_.tmpdir(), {}, {} end)
  after_each(function()
    if h then h:close() end
    h = nil
    for _, w in ipairs(watchers) do w.stop() end
    for _, b in ipairs(brokers) do b.stop() end
    os.execute("rm -rf " .. dir)
  end)

  it("rewrites topics, buffers while the cloud is down, forwards commands back", function()
    local cloud = mosq.broker(dir, nil, true)
    brokers[1] = cloud
    local watcher = mosq.watch(cloud, "#", dir)
    watchers[1] = watcher
    mosq.setenv("CLOUD_BROKER", cloud.uri)
    mosq.setenv("SITE", "plant7")
    h = t.load(example("edge_bridge.lua"), { clock = "real" })
    h:publish("sensors/boiler/temperature", "81")
    h:publish("sensors/boiler/pressure", "2.1")
    assert.is_true(h:run_until(function() return #watcher.lines() >= 2 end, 5))
    -- the cloud goes away: readings wait in the session's buffer once the
    -- session saw the connection end (a native session reads on the loop:
    -- published before that, they would go out on the dead connection and,
    -- with a clean session, be in flight and lost at the reconnect)
    watcher.stop()
    cloud.stop()
    assert.is_true(h:run_until(function() return #h:logs("'cloud' disconnected") > 0 end, 5))
    h:publish("sensors/boiler/temperature", "82")
    h:publish("sensors/boiler/temperature", "83")
    h:run(0.3)
    assert.are.equal(2, #watcher.lines())
    cloud = mosq.broker(dir, cloud.port, true) -- its sessions restored, the watcher's too
    brokers[1] = cloud
    watcher.resume()
    assert.is_true(h:run_until(function() return #watcher.lines() >= 4 end, 10))
    h:run(0.2)
    local lines = watcher.lines()
    assert.are.same({ "site/plant7/boiler/temp 82", "site/plant7/boiler/temp 83" }, { lines[3], lines[4] })
    assert.are.equal(4, #lines)
    -- commands for this site come back to local devices
    local got = false
    for _ = 1, 50 do
      cloud.pub("edge/plant7/commands/boiler/off", "now")
      got = h:run_until(function() return #h:published("local/commands/#") > 0 end, 0.2)
      if got then break end
    end
    assert.is_true(got)
    assert.are.equal("local/commands/boiler/off", h:published("local/commands/#")[1].topic)
  end)

  it("maps the first readings as documented", function()
    local cloud = mosq.broker(dir)
    brokers[1] = cloud
    local watcher = mosq.watch(cloud, "#", dir)
    watchers[1] = watcher
    mosq.setenv("CLOUD_BROKER", cloud.uri)
    mosq.setenv("SITE", "plant7")
    h = t.load(example("edge_bridge.lua"), { clock = "real" })
    h:publish("sensors/boiler/temperature", "81")
    h:publish("sensors/boiler/pressure", "2.1")
    assert.is_true(h:run_until(function() return #watcher.lines() >= 2 end, 5))
    assert.are.same({ "edge/plant7/sensors/boiler/pressure 2.1", "site/plant7/boiler/temp 81" },
      sorted(watcher.lines()))
  end)
end)

describe("examples/fan_in.lua", function()
  local dir, brokers, watchers, h
  before_each(function() dir, brokers, watchers = h_.tmpdir(), {}, {} end)
  after_each(function()
    if h then h:close() end
    h = nil
    for _, w in ipairs(watchers) do w.stop() end
    for _, b in ipairs(brokers) do b.stop() end
    os.execute("rm -rf " .. dir)
  end)

  it("republishes every site's telemetry on the central broker under sites/<name>/", function()
    local central, a, b = mosq.broker(dir), mosq.broker(dir), mosq.broker(dir)
    brokers = { central, a, b }
    local watcher = mosq.watch(central, "sites/#", dir)
    watchers[1] = watcher
    mosq.setenv("CENTRAL_BROKER", central.uri)
    mosq.setenv("SITES", ("north=%s,south=%s"):format(a.uri, b.uri))
    h = t.load(example("fan_in.lua"), { clock = "real" })
    -- wait until both site sessions have subscribed: publish until seen
    local function until_seen(broker, topic, payload, want)
      for _ = 1, 50 do
        broker.pub(topic, payload)
        if h:run_until(function()
          for _, l in ipairs(watcher.lines()) do if l == want then return true end end
        end, 0.2) then return true end
      end
      return false
    end
    assert.is_true(until_seen(a, "telemetry/pump/flow", "12", "sites/north/telemetry/pump/flow 12"))
    assert.is_true(until_seen(b, "telemetry/fan/rpm", "900", "sites/south/telemetry/fan/rpm 900"))
    a.pub("other/topic", "x") -- not telemetry: not forwarded
    a.pub("telemetry/pump/flow", "13")
    assert.is_true(h:run_until(function()
      for _, l in ipairs(watcher.lines()) do if l == "sites/north/telemetry/pump/flow 13" then return true end end
    end, 5))
    for _, l in ipairs(watcher.lines()) do assert.falsy(l:find("other/topic", 1, true)) end
  end)
end)
