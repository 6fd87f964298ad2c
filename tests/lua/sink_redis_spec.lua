-- mq.redis from rules, against a real redis-server on a free loopback
-- port: commands as lists, replies as Lua values, shortcuts, errors named
-- and classed, misuse that raises, and a stream filled through a durable
-- queue while Redis is killed and started again.
local mqrouter = require "mqrouter"
local h = require "helpers"
local mosq = require "mosquitto"

local function start_redis(dir, port)
  port = port or mosq.free_port()
  assert(mosq.sh(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
    .. "--daemonize yes --pidfile %s/redis-%d.pid --logfile %s/redis.log"):format(port, dir, dir, port, dir)))
  local ping = ("redis-cli -p %d ping >/dev/null 2>&1"):format(port)
  assert(mosq.wait_sh(ping), "redis-server did not start")
  mosq.reap_with_us(("kill -9 $(cat %s/redis-%d.pid)"):format(dir, port))
  return port, function()
    mosq.sh(("kill -9 $(cat %s/redis-%d.pid) 2>/dev/null"):format(dir, port))
    mosq.wait_sh(ping, false)
  end
end

local function cli(port, cmd)
  local p = io.popen(("env -u LD_PRELOAD redis-cli -p %d %s"):format(port, cmd))
  local out = p:read("*a")
  p:close()
  return out
end

describe("mq.redis", function()
  local e, dir, port, stop
  before_each(function()
    mqrouter.capture_logs(true)
    dir = h.tmpdir()
    port, stop = start_redis(dir)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    stop()
    mqrouter.capture_logs(false)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function run_rules(code) return h.run_rules(e, ("PORT = %d\n"):format(port), code) end

  it("sends commands as lists and reads replies as Lua values", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local r = mq.redis{ port = PORT }
      mq.spawn(function()
        local out = {}
        out[#out + 1] = assert(r:set("k", "a\0b"))
        out[#out + 1] = assert(r:get("k")) == "a\0b" and "bin ok" or "bin bad"
        out[#out + 1] = r:get("missing") == mq.redis.null and "null" or "?"
        out[#out + 1] = tostring(assert(r:command{ "INCRBY", "n", 5 }))
        local id = assert(r:xadd("readings", { device = "d1", temp = 21.5 }))
        local list = assert(r:command{ "XRANGE", "readings", "-", "+" })
        out[#out + 1] = (list[1][1] == id) and table.concat(list[1][2], ",") or "bad id"
        out[#out + 1] = tostring(r:publish("ch", "x"))
        local _, err, name, kind = r:command{ "LPUSH", "k", "x" } -- k is a string
        out[#out + 1] = name .. " " .. kind .. " " .. tostring(err:find("WRONGTYPE", 1, true) ~= nil)
        mq.publish("out", table.concat(out, "|"))
      end)
    ]])
    assert.are.equal("OK|bin ok|null|5|device,d1,temp,21.5|0|EREDIS permanent true", got)
  end)

  it("sends without waiting from a plain route, in order", function()
    assert(e:load(("PORT = %d\n"):format(port) .. [[
      local mq = require "mqrouter"
      local r = mq.redis{ port = PORT }
      mq.route("inc", function(msg) assert(r:send{ "RPUSH", "order", msg.payload }) end)
    ]]))
    for i = 1, 200 do e:publish("inc", tostring(i)) end
    assert.is_true(e:run_until(function() return tonumber(cli(port, "LLEN order")) == 200 end, 5))
    assert.are.equal("1\n2\n3\n", cli(port, "LRANGE order 0 2"))
  end)

  it("raises on a command that is not a list, and names unknown options", function()
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.redis{ hots = "x" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find("mq.redis: unknown option 'hots'", 1, true))
    local got = run_rules([[
      local mq = require "mqrouter"
      local r = mq.redis{ port = PORT, name = "r2" }
      mq.spawn(function()
        local ok, err = pcall(r.command, r, "SET k v")
        mq.publish("out", tostring(ok) .. " " .. tostring(err):match("the command must be a list[^)]*"))
      end)
    ]])
    assert.are.equal("false the command must be a list of strings, not a string", got)
  end)

  it("fills a stream through a durable queue, Redis killed and started again", function()
    local data = h.tmpdir()
    local e2 = h.engine({ data_dir = data })
    local stats = e2:capture("stats")
    assert(e2:load(("PORT = %d\n"):format(port) .. [[
      local mq = require "mqrouter"
      local r = mq.redis{ port = PORT, timeout = 0.5, backoff_min = 0.05, backoff_max = 0.2 }
      local q = mq.queue("to-redis", { durable = true, max_attempts = 100, backoff = { 0.05, 0.2 } })
      mq.route("readings/#", q)
      mq.deliver(q, function(msg)
        return r:xadd("readings", { topic = msg.topic, value = msg.payload })
      end, { concurrency = 8 })
      mq.every(0.05, function()
        local s = q:stats()
        mq.publish("stats", s.acked .. " " .. s.depth)
      end)
    ]]))
    for i = 1, 50 do e2:publish("readings/a", tostring(i), { qos = 1 }) end
    assert.is_true(e2:run_until(function()
      local n = stats:count()
      return n > 0 and stats:messages()[n].payload == "50 0"
    end, 5))
    stop() -- Redis gone: what comes now waits in the queue
    for i = 51, 100 do e2:publish("readings/a", tostring(i), { qos = 1 }) end
    e2:run(0.3)
    assert.are.equal(50, e2:queue_stats("to-redis").acked) -- none acked while Redis is down
    start_redis(dir, port) -- the stream was lost with the server (no persistence)
    assert.is_true(e2:run_until(function()
      local n = stats:count()
      return n > 0 and stats:messages()[n].payload == "100 0"
    end, 10))
    -- every message after the restart is in the new stream, at least once
    local len = tonumber(cli(port, "XLEN readings"))
    assert.is_true(len >= 50, "XLEN " .. tostring(len))
    e2:close()
    os.execute("rm -rf '" .. data .. "'")
  end)
end)
