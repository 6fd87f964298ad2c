-- Handlers that wait: async routes and consumers, coroutines resumed by C
-- answers (the file sink's), bounds and what happens to errors.
local mqrouter = require "mqrouter"
local h = require "helpers"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("async routes", function()
  local e, dir
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
    dir = h.tmpdir()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("runs a handler that waits for the file sink and sees it end", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local audit = mq.file{ path = %q }
      mq.route("in/#", function(msg)
        local ok, err = audit:write_sync({ topic = msg.topic, payload = msg.payload })
        mq.publish("written", tostring(ok) .. " " .. tostring(err))
      end, { async = true })
    ]], dir .. "/audit.jsonl")))
    local cap = e:capture("written")
    for i = 1, 20 do assert(e:publish("in/" .. i, "v" .. i)) end
    assert.is_true(e:run_until(function() return cap:count() >= 20 end, 5))
    for _, m in ipairs(cap:messages()) do assert.are.equal("true nil", m.payload) end
    local text = read(dir .. "/audit.jsonl")
    local n = 0
    for line in text:gmatch("[^\n]+") do
      n = n + 1
      assert.truthy(line:match('"topic":"in/%d+"'))
    end
    assert.are.equal(20, n)
  end)

  it("holds at most `concurrency` handlers and keeps the rest pending", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q, fsync = "none" }
      route = mq.route("w", function(msg)
        f:flush() -- waits for a thread-pool job: a loop turn or more
        mq.publish("done", msg.payload)
      end, { async = true, concurrency = 2, max_pending = 3 })
      mq.route("ask", function() mq.publish("stats", string.format("%%d %%d %%d",
        route:stats().running, route:stats().pending, route:stats().dropped)) end)
    ]], dir .. "/x.log")))
    local done, stats = e:capture("done"), e:capture("stats")
    for i = 1, 6 do e:publish("w", tostring(i)) end
    e:publish("ask", "")
    -- 2 running, 3 pending, the sixth refused
    assert.are.equal("2 3 1", stats:messages()[1].payload)
    assert.is_true(e:run_until(function() return done:count() >= 5 end, 5))
    local order = {}
    for _, m in ipairs(done:messages()) do order[#order + 1] = m.payload end
    table.sort(order)
    assert.are.same({ "1", "2", "3", "4", "5" }, order)
    e:publish("ask", "")
    assert.are.equal("0 0 1", stats:messages()[2].payload)
  end)

  it("hands what it had not finished to the same route of reloaded rules", function()
    local rules = dir .. "/rules.lua"
    local function write_rules(version, filter)
      local f = assert(io.open(rules, "w"))
      f:write(string.format([[
        local mq = require "mqrouter"
        mq.upstream{ name = "dead", broker = "tcp://127.0.0.1:1" }
        mq.route(%q, function(msg)
          mq.wait_ready("dead", 0.3) -- a handler that waits, here for nothing
          mq.publish("done", msg.payload .. " %s")
        end, { async = true, concurrency = 2 })
      ]], filter, version))
      f:close()
    end
    write_rules("v1", "w")
    assert(e:load_file(rules))
    local done = e:capture("done")
    for i = 1, 5 do e:publish("w", tostring(i)) end -- 2 running, 3 pending
    write_rules("v2", "w")
    mqrouter.set_log_level("info")
    local ok, err = e:reload()
    mqrouter.set_log_level(os.getenv("MQR_TEST_LOG_LEVEL") or "warn")
    assert(ok, err)
    assert.is_true(e:run_until(function() return done:count() >= 5 end, 5))
    local got = {}
    for _, m in ipairs(done:messages()) do got[#got + 1] = m.payload end
    -- the two whose handlers ran restart first, then the pending, in order
    assert.are.same({ "1 v2", "2 v2", "3 v2", "4 v2", "5 v2" }, got)
    assert.truthy(h.find_log(mqrouter.logs(),
      "took over 3 pending message(s) and 2 whose handler was running", true))

    -- rules without that route: what waits is dropped, and counted
    for i = 6, 8 do e:publish("w", tostring(i)) end
    write_rules("v3", "elsewhere")
    assert(e:reload())
    e:run_until(function() return false end, 0.5)
    assert.are.equal(5, done:count())
  end)

  it("counts an error after the wait and dead-letters the message", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q }
      route = mq.route("job", function(msg)
        f:flush()
        error("broken after waiting: " .. msg.payload)
      end, { async = true, dead_letter = "dlq/job" })
      mq.route("ask", function() mq.publish("errors", tostring(route:stats().errors)) end)
    ]], dir .. "/y.log")))
    local dlq, errs = e:capture("dlq/#"), e:capture("errors")
    e:publish("job", "p1")
    assert.is_true(e:run_until(function() return dlq:count() >= 1 end, 5))
    assert.are.equal("p1", dlq:messages()[1].payload)
    e:publish("ask", "")
    assert.are.equal("1", errs:messages()[1].payload)
    assert.truthy(h.find_log(mqrouter.logs(), "broken after waiting: p1", true))
  end)

  it("finishes a handler that does not wait at once, as a plain route", function()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.route("a", function(msg) mq.publish("b", msg.payload) end, { async = true })
    ]]))
    local cap = e:capture("b")
    e:publish("a", "x")
    assert.are.equal(1, cap:count()) -- no loop turn needed
  end)

  it("refuses to wait outside a coroutine, with a clear error", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q }
      mq.route("sync", function() f:write_sync("x") end)
    ]], dir .. "/z.log")))
    e:publish("sync", "")
    assert.truthy(h.find_log(mqrouter.logs(),
      "file:write_sync must be called from a coroutine", true))
  end)

  it("rejects bad options", function()
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.route("a", function() end, { async = true, concurrency = 0 })
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find("concurrency must be a whole number from 1", 1, true))
  end)
end)

describe("async queue consumers", function()
  local e, dir
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
    dir = h.tmpdir()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("keeps a message in flight while its handler waits, then acks or nacks", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q }
      local q = mq.queue("work", { max_attempts = 2, backoff = { 0.01, 0.01 } })
      mq.route("in", q)
      q:consume(function(msg)
        local ok = f:write_sync(msg.payload)
        if msg.payload == "bad" then return false end
        mq.publish("ok", msg.payload)
      end, { async = true, concurrency = 4 })
    ]], dir .. "/q.jsonl")))
    local okc = e:capture("ok")
    for _, p in ipairs({ "a", "b", "bad", "c" }) do e:publish("in", p) end
    assert.is_true(e:run_until(function()
      local s = e:queue_stats("work")
      return okc:count() >= 3 and s.dead == 1
    end, 5))
    local s = e:queue_stats("work")
    assert.are.equal(3, s.acked)
    assert.are.equal(0, s.in_flight)
    -- "bad" was written twice (two attempts), the others once
    local text = read(dir .. "/q.jsonl")
    local _, bads = text:gsub("bad\n", "")
    assert.are.equal(2, bads)
  end)

  it("settles a whole batch when a batch handler that waited ends", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q }
      local q = mq.queue("bulk", { max_attempts = 2, backoff = { 0.01, 0.01 } })
      mq.route("in", q)
      local failed_once = false
      q:consume(function(list)
        local parts = {}
        for i, m in ipairs(list) do parts[i] = m.payload end
        assert(f:write_sync(table.concat(parts, ",")))
        if not failed_once then failed_once = true; return false end -- the first batch: nack all
      end, { async = true, batch = 10 })
    ]], dir .. "/b.jsonl")))
    for i = 1, 25 do e:publish("in", tostring(i)) end
    assert.is_true(e:run_until(function() return e:queue_stats("bulk").acked == 25 end, 5))
    local s = e:queue_stats("bulk")
    assert.are.equal(0, s.in_flight)
    assert.is_true(s.redelivered >= 1)
  end)
end)

describe("the file sink from Lua", function()
  local e, dir
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
    dir = h.tmpdir()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("writes messages as JSON lines and reports its statistics", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      audit = mq.file{ path = %q, name = "audit" }
      mq.route("t/#", function(msg) assert(audit:write(msg)) end)
      mq.route("ask", function()
        local s = audit:stats()
        mq.publish("stats", string.format("%%s %%s %%d %%s", s.name, s.kind, s.ok, tostring(s.up)))
      end)
    ]], dir .. "/m.jsonl")))
    local stats = e:capture("stats")
    e:publish("t/1", "hello", { qos = 1 })
    e:publish("t/2", "world")
    assert.is_true(e:run_until(function()
      e:publish("ask", "")
      return stats:messages()[stats:count()].payload == "audit file 2 true"
    end, 5))
    local lines = {}
    for line in read(dir .. "/m.jsonl"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(2, #lines)
    assert.truthy(lines[1]:find('"payload":"hello"', 1, true))
    assert.truthy(lines[1]:find('"qos":1', 1, true))
  end)

  it("refuses a record with a newline in a JSON lines file, and bad options", function()
    local r = e:capture("r")
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local f = mq.file{ path = %q }
      local ok, err, name, kind = f:write("two\nlines")
      mq.publish("r", table.concat({ tostring(ok), err, name, kind }, "|"))
    ]], dir .. "/n.jsonl")))
    assert.are.equal("nil|EINVAL: a JSON lines record cannot hold a newline|EINVAL|permanent",
      r:messages()[1].payload)
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.file{ path = "/tmp/x", fsync = "sometimes" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find('fsync must be "batch", "interval" or "none"', 1, true))
    ok, err = e:load([[
      local mq = require "mqrouter"
      mq.file{ path = "/tmp/x", colour = "red" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find("colour", 1, true))
  end)

  it("tells mq.on when a sink goes down", function()
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      mq.on("sink_down", function(ev)
        mq.publish("down", ev.name .. " " .. ev.kind .. " " .. ev.reason)
      end)
      f = mq.file{ path = %q, name = "lost" }
      mq.spawn(function() f:write_sync("x") end)
    ]], dir .. "/no/such/dir/f.log")))
    local down = e:capture("down")
    assert.is_true(e:run_until(function() return down:count() >= 1 end, 5))
    assert.truthy(down:messages()[1].payload:find("^lost file ENOENT"))
  end)
end)
