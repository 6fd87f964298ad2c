-- Session helpers against real Mosquitto brokers on free loopback ports:
-- it.stop() ends the for loop of an iterator, mq.wait_ready fails at once
-- for a session that does not exist, mq.sessions() lists in creation
-- order, and reconnect delays double from the first retry on.
local mqrouter = require "mqrouter"
local h = require "helpers"

local mosq = require "mosquitto"

local function payloads(cap, topic)
  local out = {}
  for _, m in ipairs(cap:messages()) do
    if m.topic == topic then out[#out + 1] = m.payload end
  end
  return out
end

describe("sessions", function()
  local e, dir, brokers
  before_each(function()
    e = h.engine()
    dir = h.tmpdir()
    brokers = {}
  end)
  after_each(function()
    e:close()
    for _, b in ipairs(brokers) do b.stop() end
    os.execute("rm -rf " .. dir)
  end)

  for _, form in ipairs({ "up:messages", "mq.session_messages" }) do
    it("it.stop() ends the for loop of " .. form .. ", from inside or outside it", function()
      local b = mosq.broker(dir)
      brokers[#brokers + 1] = b
      local cap = e:capture("r/#")
      assert(e:load(([[
        local mq = require "mqrouter"
        local up = mq.session{ name = "s", broker = "%s" }
        local function iter(filter) return %s(filter, { qos = 1 }) end
        mq.on("session_ready", function() mq.publish("r/ready", "1") end)
        local outer = iter("a/#")
        mq.spawn(function()
          for msg in outer do mq.publish("r/a", msg.payload) end
          mq.publish("r/a_ended", "1")
        end)
        mq.route("stop_a", function() outer.stop() end)
        mq.spawn(function()
          local inner = iter("b/#")
          for msg in inner do
            mq.publish("r/b", msg.payload)
            if msg.payload == "last" then inner.stop() end
          end
          local m, err = inner.next()
          mq.publish("r/b_ended", tostring(m) .. " " .. tostring(err))
        end)
      ]]):format(b.uri, form == "up:messages" and "up:messages" or "mq.session_messages")))
      assert.is_true(h.run_until(e, function() return #payloads(cap, "r/ready") == 1 end, 5))
      b.pub("a/x", "one")
      assert.is_true(h.run_until(e, function() return #payloads(cap, "r/a") == 1 end, 5))
      assert(e:publish("stop_a", ""))
      assert.is_true(h.run_until(e, function() return #payloads(cap, "r/a_ended") == 1 end, 2))
      b.pub("b/x", "first")
      b.pub("b/x", "last")
      assert.is_true(h.run_until(e, function() return #payloads(cap, "r/b_ended") == 1 end, 5))
      assert.are.same({ "first", "last" }, payloads(cap, "r/b"))
      assert.are.same({ "nil nil" }, payloads(cap, "r/b_ended"))
      b.pub("a/x", "after-stop")
      e:run(0.2)
      assert.are.same({ "one" }, payloads(cap, "r/a"))
    end)
  end

  it("mq.wait_ready fails at once for a session that does not exist", function()
    local cap = e:capture("r/#")
    assert(e:load(([[
      local mq = require "mqrouter"
      local up = mq.session{ name = "dead", broker = "tcp://127.0.0.1:%d" }
      mq.spawn(function()
        local ok, err, name = mq.wait_ready("no-such-session", 5)
        mq.publish("r/none", tostring(ok) .. "|" .. tostring(err) .. "|" .. tostring(name))
      end)
      mq.spawn(function()
        local ok, err, name = mq.wait_ready("dead", 30)
        mq.publish("r/removed", tostring(ok) .. "|" .. tostring(err) .. "|" .. tostring(name))
      end)
      mq.route("close", function() up:close() end)
    ]]):format(mosq.free_port())))
    -- answered while the script loaded, not after the timeout
    assert.are.same({ "nil|ENOENT: no session 'no-such-session'|ENOENT" },
      payloads(cap, "r/none"))
    assert.are.same({}, payloads(cap, "r/removed"))
    assert(e:publish("close", ""))
    assert.is_true(h.run_until(e, function() return #payloads(cap, "r/removed") == 1 end, 2))
    assert.are.same({ "nil|ENOENT: no session 'dead'|ENOENT" }, payloads(cap, "r/removed"))
  end)

  it("mq.sessions() lists the sessions in creation order", function()
    local cap = e:capture("r/#")
    local port = mosq.free_port()
    assert(e:load(([[
      local mq = require "mqrouter"
      for _, n in ipairs({ "b", "c", "a", "d" }) do
        mq.session{ name = n, broker = "tcp://127.0.0.1:%d" }
      end
      mq.route("list", function() mq.publish("r/list", table.concat(mq.sessions(), ",")) end)
    ]]):format(port)))
    assert(e:publish("list", ""))
    assert.are.same({ "b,c,a,d" }, payloads(cap, "r/list"))
  end)

  it("reconnects after 1, 2, 4 s when the broker dies, as after a failed first connect", function()
    local b = mosq.broker(dir)
    brokers[#brokers + 1] = b
    local cap = e:capture("r/#")
    assert(e:load(([[
      local mq = require "mqrouter"
      mq.session{ name = "lost", broker = "%s", reconnect = { initial = 1, max = 8 } }
      mq.session{ name = "never", broker = "tcp://127.0.0.1:%d",
                  reconnect = { initial = 1, max = 8 } }
      mq.on("session_ready", function(ev) mq.publish("r/ready", ev.name) end)
      mq.on("session_reconnecting", function(ev)
        mq.publish("r/" .. ev.name, ev.attempt .. " " .. string.format("%%.3f", ev.time))
      end)
    ]]):format(b.uri, mosq.free_port())))
    assert.is_true(h.run_until(e, function() return #payloads(cap, "r/ready") == 1 end, 5))
    b.stop()
    assert.is_true(h.run_until(e, function()
      return #payloads(cap, "r/lost") >= 4 and #payloads(cap, "r/never") >= 4
    end, 20))
    for _, name in ipairs({ "lost", "never" }) do
      local times, attempts = {}, {}
      for i, p in ipairs(payloads(cap, "r/" .. name)) do
        local a, t = p:match("^(%d+) (.+)$")
        attempts[i], times[i] = tonumber(a), tonumber(t)
      end
      local gaps = {}
      for i = 2, 4 do gaps[#gaps + 1] = times[i] - times[i - 1] end
      -- the delay of each retry, plus a refused connect (milliseconds); the
      -- margin stays under the 1 s that told the doubled step from a repeat
      for i, want in ipairs({ 1, 2, 4 }) do
        assert(gaps[i] >= want - 0.01 and gaps[i] < want + 0.9,
          ("%s: delays %.3f %.3f %.3f, expected 1 2 4"):format(name, gaps[1], gaps[2], gaps[3]))
      end
      local first = name == "lost" and 1 or 2 -- the failed first connect was attempt 1
      assert.are.same({ first, first + 1, first + 2, first + 3 },
        { attempts[1], attempts[2], attempts[3], attempts[4] })
    end
  end)
end)
