-- What waits in buffers when the rules reload: messages in an mq.subscribe
-- buffer and in a session iterator (up:messages, mq.session_messages) are
-- handed to the new rules, each exactly once and in order: kept for the
-- subscriber or iterator declared again the same way, else given to one of
-- the new script whose filter matches; with no taker they are counted
-- (stats().reload_dropped) and a warning says so.
local mqrouter = require "mqrouter"
local h = require "helpers"

local mosq = require "mosquitto" -- real brokers on free loopback ports

-- The first position where the captured payloads differ from 1..n, or nil.
local function first_gap(cap, n)
  local msgs = cap:messages()
  for i = 1, math.max(n, #msgs) do
    if not msgs[i] or tonumber(msgs[i].payload) ~= i then
      return ("#%d is %s"):format(i, msgs[i] and msgs[i].payload or "missing")
    end
  end
end

describe("reload with buffered messages", function()
  local e, dir, path, brokers
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
    dir = h.tmpdir()
    path = dir .. "/rules.lua"
    brokers = {}
  end)
  after_each(function()
    e:close()
    for _, b in ipairs(brokers) do b.stop() end
    os.execute("rm -rf " .. dir)
    mqrouter.capture_logs(false)
  end)

  local function sub_rules(tag, buffer)
    return ([[
      local mq = require "mqrouter"
      mq.subscribe("in/#", function(msg) mq.publish("out/%s", msg.payload) end,
        { buffer = %d })
    ]]):format(tag, buffer)
  end

  it("hands 100 000 messages waiting in mq.subscribe across 10 reloads, each once", function()
    h.write(path, sub_rules("v0", 200000))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    local n = 0
    for round = 1, 10 do
      for _ = 1, 10000 do
        n = n + 1
        assert(e:publish("in/x", tostring(n)))
      end
      e:step() -- the serving rules take one batch; the rest waits in the buffer
      -- even rounds declare the same subscriber again (kept), odd ones with
      -- another buffer size (a new subscriber, handed the waiting messages)
      h.write(path, sub_rules("v" .. round, round % 2 == 0 and 200000 or 150000))
      assert(e:reload())
    end
    assert.is_true(h.run_until(e, function() return cap:count() >= n end, 60))
    e:run(0.05)
    assert.equals(100000, cap:count())
    assert.is_nil(first_gap(cap, n))
    local tags = {}
    for _, m in ipairs(cap:messages()) do tags[m.topic] = true end
    assert.is_true(tags["out/v0"] and tags["out/v10"]) -- old rules served before the reloads
    assert.equals(0, e:stats().reload_dropped)
    assert.is_nil(h.find_log(mqrouter.logs(), "no taker"))
  end)

  it("gives them to a new subscriber whose filter matches, else counts and warns", function()
    h.write(path, sub_rules("v0", 1000))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    for i = 1, 5 do assert(e:publish("in/x", tostring(i))) end
    h.write(path, [[
      local mq = require "mqrouter"
      mq.subscribe("other/#", function(msg) mq.publish("out/other", msg.payload) end)
      mq.subscribe("in/+", function(msg) mq.publish("out/v1", msg.payload) end)
    ]])
    assert(e:reload())
    assert.is_true(h.run_until(e, function() return cap:count() >= 5 end, 5))
    assert.is_nil(first_gap(cap, 5))
    assert.equals("out/v1", cap:messages()[5].topic)
    for i = 6, 8 do assert(e:publish("in/x", tostring(i))) end
    h.write(path, [[ require("mqrouter").subscribe("other/#", function() end) ]])
    mqrouter.logs()
    assert(e:reload())
    assert.equals(3, e:stats().reload_dropped)
    local line = h.find_log(mqrouter.logs(), "no taker")
    assert.is_truthy(line)
    assert.matches("^WARN %[rules%] reload: 3 message%(s%) waiting in subscriber 'in/%+'", line)
    e:run(0.05)
    assert.equals(5, cap:count())
  end)

  it("gives a message that two old subscribers held to a new one once", function()
    local two = [[
      local mq = require "mqrouter"
      mq.subscribe("in/#", function(msg) mq.publish("out/all", msg.payload) end, { buffer = 100 })
      mq.subscribe("in/x", function(msg) mq.publish("out/x", msg.payload) end, { buffer = 100 })
    ]]
    local cap = e:capture("out/#")
    local function got(topic)
      local list = {}
      for _, m in ipairs(cap:messages()) do
        if m.topic == topic then list[#list + 1] = m.payload end
      end
      return table.concat(list, ",")
    end
    -- neither kept: both copies of each message meet one new subscriber
    h.write(path, two)
    assert(e:load_file(path))
    for i = 1, 3 do assert(e:publish("in/x", tostring(i))) end
    h.write(path, [[
      local mq = require "mqrouter"
      mq.subscribe("in/#", function(msg) mq.publish("out/one", msg.payload) end, { buffer = 50 })
    ]])
    assert(e:reload())
    assert.is_true(h.run_until(e, function() return cap:count() >= 3 end, 5))
    e:run(0.05)
    assert.equals("1,2,3", got("out/one"))
    -- one kept: its buffer holds them already; the other's copies go on to
    -- the next subscriber that matches
    h.write(path, two)
    assert(e:reload())
    for i = 4, 6 do assert(e:publish("in/x", tostring(i))) end
    h.write(path, [[
      local mq = require "mqrouter"
      mq.subscribe("in/#", function(msg) mq.publish("out/all", msg.payload) end, { buffer = 100 })
      mq.subscribe("in/+", function(msg) mq.publish("out/plus", msg.payload) end)
    ]])
    assert(e:reload())
    assert.is_true(h.run_until(e, function() return cap:count() >= 9 end, 5))
    e:run(0.05)
    assert.equals("4,5,6", got("out/all"))
    assert.equals("4,5,6", got("out/plus"))
    assert.equals(9, cap:count())
    assert.equals(0, e:stats().reload_dropped)
  end)

  it("wakes a coroutine waiting in a kept iterator; counts what no iterator takes", function()
    local b = mosq.broker(dir)
    brokers[#brokers + 1] = b
    local cap = e:capture("#")
    local head = ([[
      local mq = require "mqrouter"
      local up = mq.session{ name = "s", broker = "%s" }
      mq.on("session_ready", function() mq.publish("state/ready", "1") end)
    ]]):format(b.uri)
    h.write(path, head .. [[
      local t = up:messages("t/#", { qos = 1 })
      local u = up:messages("u/#", { qos = 1 })
      local tx = up:messages("t/x", { qos = 1 }) -- holds the same t/x messages as t
    ]])
    assert(e:load_file(path))
    assert.is_true(h.run_until(e, function() return #cap:messages() >= 1 end, 5))
    for i = 1, 3 do b.pub("t/x", tostring(i)) end
    for i = 1, 2 do b.pub("u/x", tostring(i)) end
    assert.is_true(h.run_until(e, function() return cap:count() == 6 end, 5))
    h.write(path, head .. [[
      local t = up:messages("t/#", { qos = 1 })
      local v = up:messages("v/#", { qos = 1 })
      mq.spawn(function()
        for msg in t do mq.publish("out/t", msg.payload) end
      end)
    ]])
    mqrouter.logs()
    assert(e:reload())
    local outs = {}
    for _, m in ipairs(cap:messages()) do
      if m.topic == "out/t" then outs[#outs + 1] = m.payload end
    end
    -- handed over as the new rules took over, once: tx's copies were t's
    assert.are.same({ "1", "2", "3" }, outs)
    assert.equals(2, e:stats().reload_dropped)
    local line = h.find_log(mqrouter.logs(), "no taker")
    assert.is_truthy(line)
    assert.matches("^WARN %[rules%] reload: 2 message%(s%) waiting in the message iterator "
      .. "of 'u/#' %(s%)", line)
  end)

  for _, form in ipairs({ "up:messages", "mq.session_messages" }) do
    it("hands what waits in " .. form .. " across 10 reloads, each once", function()
      local b = mosq.broker(dir)
      brokers[#brokers + 1] = b
      local cap = e:capture("#")
      -- consume: false keeps them waiting in the iterator
      local function rules(tag, max, consume)
        return ([[
          local mq = require "mqrouter"
          local up = mq.session{ name = "s", broker = "%s" }
          mq.on("session_ready", function() mq.publish("state/ready", "1") end)
          local it = %s("t/#", { max = %d, qos = 1 })
          if %s then
            mq.spawn(function()
              for msg in it do mq.publish("out/%s", msg.payload) end
            end)
          end
        ]]):format(b.uri, form == "up:messages" and "up:messages" or "mq.session_messages",
          max, tostring(consume), tag)
      end
      local function count(prefix)
        local k = 0
        for _, m in ipairs(cap:messages()) do
          if m.topic:sub(1, #prefix) == prefix then k = k + 1 end
        end
        return k
      end
      h.write(path, rules("v0", 100000, false))
      assert(e:load_file(path))
      assert.is_true(h.run_until(e, function() return count("state/ready") == 1 end, 5))
      local n, per = 0, 300
      for round = 1, 10 do
        assert(mosq.sh(("seq %d %d | mosquitto_pub -p %d -q 1 -t t/x -l")
          :format(n + 1, n + per, b.port)))
        n = n + per
        assert.is_true(h.run_until(e, function() return count("t/") == n end, 10))
        -- even rounds: the same iterator again (kept); odd: another max
        h.write(path, rules("v" .. round, round % 2 == 0 and 100000 or 100001, round == 10))
        assert(e:reload())
      end
      assert.is_true(h.run_until(e, function() return count("out/") >= n end, 10))
      e:run(0.05)
      local outs, seen = {}, {}
      for _, m in ipairs(cap:messages()) do
        if m.topic == "out/v10" then outs[#outs + 1] = m.payload end
      end
      assert.equals(n, #outs)
      for i, p in ipairs(outs) do
        assert.is_nil(seen[p])
        seen[p] = true
        if tonumber(p) ~= i then error(("#%d is %s"):format(i, p)) end
      end
      assert.equals(0, e:stats().reload_dropped)
    end)
  end
end)
