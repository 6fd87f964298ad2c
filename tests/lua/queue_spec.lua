-- mq.queue: the engine's broker queues from rule scripts — publish,
-- consume (ack, nack, defer, batch), priorities, TTL, retries and dead
-- letters published to MQTT, transactions, limits with named errors, pull,
-- the dead-letter calls, routes into a queue, and queues kept across hot
-- reloads with their messages and statistics.
local h = require "helpers"

local HEAD = 'local mq = require "mqrouter"\n'

local function payloads(cap)
  local t = {}
  for i, m in ipairs(cap:messages()) do t[i] = m.payload end
  return t
end

local function user_props(m)
  return m.properties.user or {}
end

local function sorted(t)
  table.sort(t)
  return t
end

describe("mq.queue", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  local function load(code)
    local ok, err = e:load(HEAD .. code)
    assert(ok, err)
  end

  local function wait_count(cap, n, s)
    return e:run_until(function() return cap:count() >= n end, s or 2)
  end

  it("publishes, consumes and acks; the message carries its queue fields", function()
    load([[
      local q = mq.queue("jobs")
      q:consume(function(m)
        mq.publish("out", table.concat({ m.payload, m.topic, m.id, m.attempts, m.priority,
          m.queue, m.message.payload }, ","))
      end)
      mq.route("in", function(m) assert(q:publish(m.payload)) end)
    ]])
    local cap = e:capture("out")
    assert(e:publish("in", "a"))
    assert(e:publish("in", "b"))
    assert.is_true(wait_count(cap, 2))
    assert.are.same({ "a,jobs,1,1,2,jobs,a", "b,jobs,2,1,2,jobs,b" }, payloads(cap))
    local s = e:queue_stats("jobs")
    assert.are.equal(2, s.published)
    assert.are.equal(2, s.acked)
    assert.are.equal(0, s.in_flight)
    assert.are.equal(0, s.depth)
  end)

  it("delivers the highest priority first, FIFO within a level", function()
    local by = e:capture("by")
    load([[
      local q = mq.queue("p", { priority = true })
      for i, p in ipairs({ "low", 4, "normal", "highest", 0, "high", 1 }) do
        q:publish(tostring(i) .. ":" .. tostring(p), { priority = p })
      end
      local bp = q:stats().by_priority
      mq.publish("by", table.concat({ bp.lowest, bp.low, bp.normal, bp.high, bp.highest }, " "))
      q:consume(function(m) mq.publish("out", m.payload) end)
    ]])
    local cap = e:capture("out")
    assert.is_true(wait_count(cap, 7))
    assert.are.same({ "2:4", "4:highest", "6:high", "3:normal", "1:low", "7:1", "5:0" },
      payloads(cap))
    assert.are.same({ "1 2 1 1 2" }, payloads(by)) -- ready per level before consuming
  end)

  it("refuses priorities on a queue declared without them, and bad values", function()
    local ok, err = e:load(HEAD .. 'mq.queue("x"):publish("a", { priority = "high" })')
    assert.is_nil(ok)
    assert.matches("has no priorities", err)
    ok, err = e:load(HEAD .. 'mq.queue("y", { priority = true }):publish("a", { priority = 7 })')
    assert.is_nil(ok)
    assert.matches("priority must be 0..4", err)
  end)

  it("expires messages past their TTL (per message or the queue's)", function()
    load([[
      q = mq.queue("t", { ttl = 0.05 })
      q:publish("queue-ttl")
      q:publish("own-ttl", { ttl = 0.08 })
      q:publish("never", { ttl = false })
      q:publish("long", { ttl = 60 })
    ]])
    e:run(0.2)
    local s = e:queue_stats("t")
    assert.are.equal(2, s.expired)
    assert.are.equal(2, s.depth)
    assert.are.equal(0, s.delivered)
  end)

  it("nacks on error or false, retries with backoff, then publishes the dead letter", function()
    load([[
      local q = mq.queue("jobs", { max_attempts = 3, backoff = { 0.01, 0.02 },
                                   dead_letter = "dlq/jobs" })
      local n = 0
      q:consume(function(m)
        n = n + 1
        mq.publish("tries", tostring(m.attempts))
        if m.payload == "bad" then error("cannot handle " .. m.payload) end
        return false
      end)
      mq.route("orders/#", q)
    ]])
    local dlq = e:capture("dlq/jobs")
    local tries = e:capture("tries")
    assert(e:publish("orders/7", "bad"))
    assert.is_true(wait_count(dlq, 1))
    assert.are.same({ "1", "2", "3" }, payloads(tries))
    local m = dlq:messages()[1]
    assert.are.equal("bad", m.payload)
    local up = user_props(m)
    assert.are.equal("orders/7", up["mqrouter-topic"])
    assert.are.equal("jobs", up["mqrouter-queue"])
    assert.are.equal("max_attempts", up["mqrouter-reason"])
    assert.are.equal("3", up["mqrouter-attempts"])
    local s = e:queue_stats("jobs")
    assert.are.equal(3, s.nacked)
    assert.are.equal(2, s.redelivered)
    assert.are.equal(1, s.dead_lettered)
    assert.are.equal(1, s.dead)
    -- the same for a handler returning false
    dlq:clear()
    assert(e:publish("orders/8", "soft"))
    assert.is_true(wait_count(dlq, 1))
    assert.are.equal("orders/8", user_props(dlq:messages()[1])["mqrouter-topic"])
    assert.is_truthy(e:stats().handler_errors >= 3)
  end)

  it("keeps a deferred message in flight until msg:ack(), msg:nack() or msg:reject()", function()
    load([[
      local q = mq.queue("d", { backoff = { 0.01, 0.01 }, dead_letter = "dead" })
      local held = {}
      q:consume(function(m)
        assert(m:defer())
        held[m.payload] = m
        mq.publish("got", m.payload .. ":" .. m.attempts)
      end)
      mq.route("settle/+", function(msg)
        local how, m = msg.payload:match("(%a+) (%a+)")
        local ok, err, name = held[m][how](held[m], how == "nack" and 0 or nil)
        mq.publish("settled", tostring(ok or name))
      end)
      mq.route("in", function(m) q:publish(m.payload) end)
    ]])
    local got = e:capture("got")
    local settled = e:capture("settled")
    for _, p in ipairs({ "a", "b", "c" }) do e:publish("in", p) end
    assert.is_true(wait_count(got, 3))
    e:run(0.05)
    assert.are.equal(3, e:queue_stats("d").in_flight)
    e:publish("settle/1", "ack a")
    e:publish("settle/2", "ack a") -- twice: no longer in flight
    e:publish("settle/3", "nack b")
    e:publish("settle/4", "reject c")
    assert.are.same({ "true", "ENOENT", "true", "true" }, payloads(settled))
    assert.is_true(wait_count(got, 4)) -- b again, attempt 2
    assert.are.equal("b:2", got:messages()[4].payload)
    local s = e:queue_stats("d")
    assert.are.equal(1, s.acked)
    assert.are.equal(1, s.rejected)
    assert.are.equal(1, s.dead)
  end)

  it("hands a batch consumer one list per call and acks it by returning", function()
    load([[
      local q = mq.queue("b")
      for i = 1, 50 do q:publish(tostring(i)) end
      q:consume(function(list)
        local t = {}
        for i, m in ipairs(list) do t[i] = m.payload end
        mq.publish("batch", table.concat(t, ","))
        if list[1].payload == "1" then list[2]:defer() end -- kept in flight
      end, { batch = 16 })
    ]])
    local cap = e:capture("batch")
    assert.is_true(wait_count(cap, 4))
    local seen = {}
    for _, p in ipairs(payloads(cap)) do
      for x in p:gmatch("%d+") do seen[#seen + 1] = tonumber(x) end
    end
    assert.are.equal(50, #seen)
    for i = 1, 50 do assert.are.equal(i, seen[i]) end
    assert.are.equal(16, select(2, cap:messages()[1].payload:gsub(",", "")) + 1)
    local s = e:queue_stats("b")
    assert.are.equal(49, s.acked)
    assert.are.equal(1, s.in_flight)
  end)

  it("nacks a whole batch when the handler raises", function()
    load([[
      local q = mq.queue("b", { max_attempts = 2, backoff = { 0.01, 0.01 } })
      for i = 1, 4 do q:publish(tostring(i)) end
      q:consume(function(list) mq.publish("calls", #list); error("no") end, { batch = 8 })
    ]])
    local cap = e:capture("calls")
    assert.is_true(e:run_until(function() return e:queue_stats("b").dead == 4 end, 2))
    assert.are.equal(8, e:queue_stats("b").nacked)
    assert.are.same({ "4", "4" }, payloads(cap))
  end)

  it("runs transactions: commit shows all, rollback and timeout none", function()
    load([[
      local a, b = mq.queue("a"), mq.queue("b")
      for _, q in ipairs({ a, b }) do
        q:consume(function(m) mq.publish("out/" .. q:name(), m.payload) end)
      end
      mq.route("tx/commit", function()
        local tx = mq.transaction()
        assert(tx:publish(a, "a1")); assert(tx:publish(b, "b1"))
        mq.publish("pending", tostring(a:stats().pending_tx + b:stats().pending_tx))
        assert(tx:commit())
      end)
      mq.route("tx/rollback", function()
        local tx = mq.transaction(5)
        assert(tx:publish(a, "a2"))
        assert(tx:rollback())
        local ok, err, name = tx:commit()
        mq.publish("after", tostring(name))
      end)
      local slow
      mq.route("tx/slow", function()
        slow = mq.transaction(0.05)
        assert(slow:publish(b, "b3"))
      end)
      mq.route("tx/late", function()
        local ok, err, name = slow:commit()
        mq.publish("late", tostring(name))
        mq.publish("health", mq.queues_health().transactions.timed_out)
      end)
    ]])
    local out = e:capture("out/#")
    local misc = e:capture("#")
    e:publish("tx/commit", "")
    assert.is_true(wait_count(out, 2))
    e:publish("tx/rollback", "")
    e:publish("tx/slow", "")
    e:run(0.15)
    e:publish("tx/late", "")
    e:run(0.05)
    assert.are.same({ "a1", "b1" }, sorted(payloads(out)))
    local got = {}
    for _, m in ipairs(misc:messages()) do got[m.topic] = m.payload end
    assert.are.equal("2", got.pending)
    assert.are.equal("ETXNOENT", got.after)
    assert.are.equal("ETXTIMEOUT", got.late)
    assert.are.equal("1", got.health)
  end)

  it("refuses past its limits with named errors; drop_oldest drops instead", function()
    load([[
      local function try(q, p)
        local id, err, name = q:publish(p)
        mq.publish("r/" .. q:name(), id and "ok" or name)
      end
      local full = mq.queue("full", { max_messages = 2 })
      local mem = mq.queue("mem", { max_memory = 1024 })
      local drop = mq.queue("drop", { max_messages = 2, drop_oldest = true })
      mq.route("go", function()
        for i = 1, 3 do try(full, "x") end
        try(mem, string.rep("x", 600)); try(mem, string.rep("x", 600))
        for i = 1, 3 do try(drop, tostring(i)) end
        local n, failed, failures = full:publish_batch({ "y", { payload = "z", ttl = 1 } })
        mq.publish("batch", n .. " " .. failed .. " " .. failures[1].name .. " " ..
          failures[2].index .. " " .. failures[1].err:match("^%u+"))
        full:close()
        try(full, "x")
      end)
    ]])
    local cap = e:capture("#")
    e:publish("go", "")
    local got = {}
    for _, m in ipairs(cap:messages()) do
      got[m.topic] = (got[m.topic] and got[m.topic] .. " " or "") .. m.payload
    end
    assert.are.equal("ok ok EFULL ECLOSED", got["r/full"])
    assert.are.equal("ok EMEMLIMIT", got["r/mem"])
    assert.are.equal("ok ok ok", got["r/drop"])
    assert.are.equal("0 2 EFULL 2 EFULL", got.batch)
    local s = e:queue_stats("drop")
    assert.are.equal(1, s.dropped)
    assert.are.equal(2, s.depth)
    assert.are.equal(1, e:queue_stats("mem").refused_memory)
    assert.are.equal("ENOENT", select(3, e:queue_stats("full")))
  end)

  it("raises on misuse", function()
    for _, code in ipairs({
      'mq.queue("q", { nope = 1 })',
      'mq.queue("q", { ack_timeout = "x" })',
      'mq.queue("q", { backoff = { 2, 1 } })',
      'mq.queue("a+b")',
      'mq.queue("q"); mq.queue("q")',
      'mq.queue("q"):publish({})',
      'mq.queue("q"):publish("a", { id = 1 })',
      'mq.queue("q"):consume(function() end, { batch = 1000 })',
      'mq.queue("q", { dead_letter = "a/#" })',
      'mq.route("x", 42)',
    }) do
      local ok, err = e:load(HEAD .. code)
      assert.is_nil(ok, code)
      assert.is_string(err)
    end
  end)

  it("de-duplicates publishes by id within the window", function()
    load([[
      local q = mq.queue("dd", { dedup = 100 })
      local a = q:publish("one", { id = "order-1" })
      local b = q:publish("one again", { id = "order-1" })
      local c = q:publish("two", { id = 2 })
      mq.publish("ids", a .. " " .. b .. " " .. c)
    ]])
    local s = e:queue_stats("dd")
    assert.are.equal(2, s.published)
    assert.are.equal(1, s.duplicates)
  end)

  it("pulls with q:receive(n), settled like pushed messages", function()
    load([[
      local q = mq.queue("pull", { priority = true })
      q:publish("low", { priority = "low" }); q:publish("high", { priority = "high" })
      q:publish("n1"); q:publish("n2")
      mq.route("pull", function()
        local list = q:receive(3)
        local t = {}
        for i, m in ipairs(list) do t[i] = m.payload; if i < 3 then m:ack() else m:nack(0) end end
        mq.publish("pulled", table.concat(t, ","))
        mq.publish("left", #q:receive(10))
      end)
    ]])
    local cap = e:capture("#")
    e:publish("pull", "")
    local got = {}
    for _, m in ipairs(cap:messages()) do got[m.topic] = m.payload end
    assert.are.equal("high,n1,n2", got.pulled)
    assert.are.equal("2", got.left) -- n2 again and low
    local s = e:queue_stats("pull")
    assert.are.equal(2, s.acked)
    assert.are.equal(2, s.in_flight)
  end)

  it("lists, counts, re-drives and purges dead letters", function()
    load([[
      local q = mq.queue("dl", { max_attempts = 1 })
      for i = 1, 3 do q:publish("m" .. i, { topic = "orig/" .. i }) end
      local fail = true
      q:consume(function(m) if fail then m:reject() else mq.publish("ok", m.payload) end end)
      mq.route("check", function()
        local list = q:dead_letters()
        local s = q:dlq_stats()
        mq.publish("dl", #list .. " " .. list[1].topic .. " " .. list[1].payload .. " " ..
          list[1].reason .. " " .. list[1].attempts .. " " .. s.total .. " " ..
          s.by_reason.rejected .. " " .. s.depth)
        fail = false
        mq.publish("redriven", q:redrive(2))
        mq.publish("purged", q:dlq_purge())
        mq.publish("after", q:dlq_stats().depth .. " " .. q:dlq_stats().redriven)
      end)
    ]])
    e:run_until(function() return e:queue_stats("dl").dead == 3 end, 2)
    local cap = e:capture("#")
    e:publish("check", "")
    local ok = e:capture("ok")
    assert.is_true(wait_count(ok, 2))
    local got = {}
    for _, m in ipairs(cap:messages()) do got[m.topic] = m.payload end
    assert.are.equal("3 orig/1 m1 rejected 1 3 3 3", got.dl)
    assert.are.equal("2", got.redriven)
    assert.are.equal("1", got.purged)
    assert.are.equal("0 2", got.after)
    assert.are.same({ "m1", "m2" }, payloads(ok))
  end)

  it("stops a consumer over its budget and nacks its message", function()
    e:close()
    e = h.engine({ budget_ms = 50 })
    load([[
      local q = mq.queue("slow", { max_attempts = 1, dead_letter = "dead" })
      q:publish("spin")
      q:consume(function(m) while true do end end)
    ]])
    local cap = e:capture("dead")
    assert.is_true(wait_count(cap, 1, 3))
    assert.are.equal("max_attempts", user_props(cap:messages()[1])["mqrouter-reason"])
    assert.are.equal(1, e:stats().budget_errors)
    assert.are.equal(1, e:queue_stats("slow").nacked)
  end)

  it("cancels a consumer; its held messages go back; defer() only inside the handler", function()
    load([[
      local q = mq.queue("c")
      local kept
      local c = q:consume(function(m) m:defer(); kept = m end)
      q:publish("a")
      mq.route("cancel", function()
        local ok, err, name = kept:defer()
        mq.publish("late-defer", tostring(name))
        c:cancel()
        mq.publish("cstats", c:stats().calls .. " " .. tostring(c:stats().active))
        mq.publish("back", q:stats().ready)
        q:close()
        mq.publish("closed", tostring(q:closed()) .. " " .. select(3, q:publish("x")) .. " " ..
          select(3, q:consume(function() end)) .. " " .. select(3, kept:ack()))
      end)
    ]])
    e:run_until(function() return e:queue_stats("c").in_flight == 1 end, 2)
    local cap = e:capture("#")
    e:publish("cancel", "")
    local got = {}
    for _, m in ipairs(cap:messages()) do got[m.topic] = m.payload end
    assert.are.equal("ENOENT", got["late-defer"])
    assert.are.equal("1 false", got.cstats)
    assert.are.equal("1", got.back)
    assert.are.equal("true ECLOSED ECLOSED ECLOSED", got.closed)
  end)

  it("reports a full queue in the engine's health", function()
    load([[
      local q = mq.queue("h", { max_messages = 10 })
      mq.route("fill", function(m)
        for i = 1, tonumber(m.payload) do q:publish("x") end
        mq.publish("status", mq.queues_health().status .. " " ..
          mq.queues_health().totals.depth)
      end)
    ]])
    local cap = e:capture("status")
    e:publish("fill", "1")
    e:publish("fill", "7")
    e:publish("fill", "2")
    assert.are.same({ "ok 1", "degraded 8", "full 10" }, payloads(cap))
  end)

  it("lists queues and the engine's queue health", function()
    load([[
      mq.queue("b"); mq.queue("a", { max_messages = 10 })
      mq.route("check", function()
        local hh = mq.queues_health()
        mq.publish("r", table.concat(mq.queues(), ",") .. " " .. hh.status .. " " .. hh.queues)
      end)
    ]])
    local cap = e:capture("r")
    e:publish("check", "")
    assert.are.equal("a,b ok 2", cap:messages()[1].payload)
  end)

  it("routes into a queue keeping topics; q:bind does the same", function()
    load([[
      local q = mq.queue("orders", { priority = true })
      mq.route("orders/#", q)
      q:bind("shop/+/order", { priority = "high" })
      q:consume(function(m) mq.publish("seen", m.topic .. " " .. m.payload .. " " .. m.priority) end)
    ]])
    local cap = e:capture("seen")
    e:publish("orders/1", "x")
    e:publish("shop/9/order", "y")
    assert.is_true(wait_count(cap, 2))
    assert.are.same({ "orders/1 x 2", "shop/9/order y 3" }, sorted(payloads(cap)))
  end)

  it("counts refusals of a route into a full queue and dead-letters them", function()
    load([[
      local q = mq.queue("small", { max_messages = 1 })
      mq.route("in/#", q, { dead_letter = "refused" })
    ]])
    local cap = e:capture("refused")
    e:publish("in/1", "a")
    e:publish("in/2", "b")
    assert.are.equal(1, cap:count())
    assert.are.equal("b", cap:messages()[1].payload)
    assert.are.equal(1, e:queue_stats("small").refused_full)
    assert.are.equal(1, e:stats().routes[1].errors)
  end)

  describe("across a hot reload", function()
    local v1 = [[
      local q = mq.queue("keep", { max_attempts = 10, dead_letter = "dlq/v1" })
      local other = mq.queue("gone")
      other:publish("x")
      q:consume(function(m)
        if m.payload:find("^held") then m:defer(); return end
        mq.publish("v1", m.payload)
      end)
      mq.route("in/#", q)
    ]]
    local v2 = [[
      local q = mq.queue("keep", { max_attempts = 10, dead_letter = "dlq/v2" })
      q:consume(function(m) mq.publish("v2", m.payload .. ":" .. m.attempts) end)
      mq.route("in/#", q)
    ]]

    it("keeps the queue, its messages and stats, and uses the new handlers", function()
      load(v1)
      local v1cap, v2cap = e:capture("v1"), e:capture("v2")
      e:publish("in/1", "one")
      assert.is_true(wait_count(v1cap, 1))
      e:publish("in/2", "held-a")
      e:run(0.05)
      assert.are.equal(1, e:queue_stats("keep").in_flight)
      load(v2)
      e:publish("in/3", "three")
      assert.is_true(wait_count(v2cap, 2))
      -- the message the old handler held comes back to the new one
      local got = payloads(v2cap)
      table.sort(got)
      assert.are.same({ "held-a:2", "three:1" }, got)
      assert.are.same({ "one" }, payloads(v1cap))
      local s = e:queue_stats("keep")
      assert.are.equal(3, s.published)
      assert.are.equal(3, s.acked)
      assert.are.equal(1, s.consumers)
      -- the queue v2 no longer declares is closed
      assert.are.equal("ENOENT", select(3, e:queue_stats("gone")))
    end)

    it("keeps messages queued while no consumer runs", function()
      load([[ local q = mq.queue("keep"); for i = 1, 5 do q:publish(tostring(i)) end ]])
      load([[
        local q = mq.queue("keep")
        q:consume(function(m) mq.publish("v2", m.payload) end)
      ]])
      local cap = e:capture("v2")
      assert.is_true(wait_count(cap, 5))
      assert.are.same({ "1", "2", "3", "4", "5" }, payloads(cap))
    end)

    it("fails a reload that changes a queue's durable/dedup/priority settings", function()
      load(v1)
      local ok, err = e:load(HEAD .. 'mq.queue("keep", { max_attempts = 10, priority = true })')
      assert.is_nil(ok)
      assert.matches("other durable, dedup or priority settings", err)
      local cap = e:capture("v1")
      e:publish("in/1", "still")
      assert.is_true(wait_count(cap, 1))
      assert.are.equal(1, e:queue_stats("gone").depth)
    end)

    it("changes a kept queue's other settings when the new script takes over", function()
      load(v1)
      e:publish("in/1", "held-a") -- deferred by v1: stays in flight, then back to the queue
      e:run(0.05)
      load([[
        local q = mq.queue("keep", { max_attempts = 1, dead_letter = "dlq/v3" })
        q:consume(function(m) return false end) -- every delivery fails
        mq.route("in/#", q)
      ]])
      local dlq = e:capture("dlq/v3")
      e:publish("in/2", "fails once")
      -- max_attempts is now 1: the first nack dead-letters (with 10 it would retry)
      assert.is_true(wait_count(dlq, 2, 3))
      assert.are.equal(0, e:queue_stats("keep").depth)
    end)

    it("closes what a failed reload created and keeps what it claimed", function()
      load(v1)
      local ok = e:load(HEAD .. [[
        mq.queue("keep", { max_attempts = 10, dead_letter = "dlq/v1" })
        mq.queue("new")
        error("broken")
      ]])
      assert.is_nil(ok)
      assert.are.equal("ENOENT", select(3, e:queue_stats("new")))
      assert.are.equal(1, e:queue_stats("keep").consumers)
      local cap = e:capture("v1")
      e:publish("in/1", "after")
      assert.is_true(wait_count(cap, 1))
    end)

    it("publishes dead letters to the topic the newest rules declare", function()
      load([[
        local q = mq.queue("k", { max_attempts = 1, dead_letter = "dlq/v1" })
        q:publish("a")
      ]])
      load([[
        local q = mq.queue("k", { max_attempts = 1, dead_letter = "dlq/v2" })
        q:consume(function() return false end)
      ]])
      local cap = e:capture("dlq/#")
      assert.is_true(wait_count(cap, 1))
      assert.are.equal("dlq/v2", cap:messages()[1].topic)
    end)
  end)

  it("replays the stored messages of a durable queue by topic filter", function()
    local dir = h.tmpdir()
    local de = h.engine({ data_dir = dir })
    local cap = de:capture("t/#")
    local res = de:capture("result")
    assert(de:load([[
      local mq = require "mqrouter"
      local q = mq.queue("r", { durable = true })
      local mem = mq.queue("m")
      q:publish("1", { topic = "t/a" })
      q:publish("2", { topic = "t/b" })
      q:publish("3", { topic = "u/c" })
      mq.route("go", function()
        local n = q:replay("t/#")
        local ok, err, name = mem:replay()
        mq.publish("result", n .. " " .. q:stats().depth .. " " .. tostring(ok) .. " " .. name)
      end)
    ]]))
    de:run(0.05)
    assert(de:publish("go", ""))
    assert.is_true(h.run_until(de, function() return res:count() == 1 end, 2))
    assert.equals("2 3 nil EINVAL", res:messages()[1].payload)
    local got = {}
    for _, m in ipairs(cap:messages()) do got[#got + 1] = m.topic .. "=" .. m.payload end
    assert.same({ "t/a=1", "t/b=2" }, got)
    de:close()
    os.execute("rm -rf " .. dir)
  end)

  it("keeps a rejection's reason with the dead letter, in the store and on its topic", function()
    local dir = h.tmpdir()
    local code = [[
      local mq = require "mqrouter"
      local q = mq.queue("why", { durable = true, dead_letter = "dlq/why" })
      mq.route("in", q)
      q:consume(function(m) m:reject("EHTTP: HTTP 404 " .. m.payload) end)
      mq.route("list", function()
        local out = {}
        for _, d in ipairs(q:dead_letters()) do out[#out + 1] = d.payload .. "=" .. tostring(d.error) end
        mq.publish("listed", table.concat(out, ","))
      end)
    ]]
    local de = h.engine({ data_dir = dir })
    local dl = de:capture("dlq/why")
    assert(de:load(code))
    assert(de:publish("in", "a", { qos = 1 }))
    assert(de:publish("in", "b", { qos = 1 }))
    assert.is_true(h.run_until(de, function() return dl:count() == 2 end, 2))
    local user = dl:messages()[1].properties.user
    assert.are.equal("EHTTP: HTTP 404 a", user["mqrouter-error"])
    assert.are.equal("rejected", user["mqrouter-reason"])
    local listed = de:capture("listed")
    assert(de:publish("list", ""))
    assert.are.equal("a=EHTTP: HTTP 404 a,b=EHTTP: HTTP 404 b", listed:messages()[1].payload)
    de:close()
    -- a new engine on the same store: the dead letters keep their reasons
    de = h.engine({ data_dir = dir })
    listed = de:capture("listed")
    assert(de:load(code))
    assert(de:publish("list", ""))
    assert.are.equal("a=EHTTP: HTTP 404 a,b=EHTTP: HTTP 404 b", listed:messages()[1].payload)
    de:close()
    os.execute("rm -rf " .. dir)
  end)

  it("replays into routes and other bound queues, never back into the queue itself", function()
    local dir = h.tmpdir()
    local de = h.engine({ data_dir = dir })
    local seen, res = de:capture("seen/#"), de:capture("result")
    assert(de:load([[
      local mq = require "mqrouter"
      local q = mq.queue("work", { durable = true })
      local other = mq.queue("audit")
      mq.route("t/#", q)            -- the replayed queue is bound to the topics it holds
      q:bind("x/#")                 -- and through q:bind too
      mq.route("t/#", other)
      mq.route("t/#", function(msg) mq.publish("seen/" .. msg.topic, msg.payload) end)
      mq.route("go", function()
        local n = q:replay()
        mq.publish("result", n .. " " .. q:stats().depth .. " " .. q:stats().published .. " "
          .. other:stats().depth)
      end)
      mq.route("consume", function()
        local got = {}
        for _, m in ipairs(q:receive(100)) do got[#got + 1] = m.topic .. "=" .. m.payload; m:ack() end
        mq.publish("result", table.concat(got, ","))
      end)
    ]]))
    de:run(0.05)
    assert(de:publish("t/a", "1"))
    assert(de:publish("t/b", "2"))
    assert.equals(2, seen:count())
    assert(de:publish("go", ""))
    assert.is_true(h.run_until(de, function() return res:count() == 1 end, 2))
    -- 2 replayed; the queue still holds its 2 (published 2: nothing re-queued);
    -- the other bound queue got each replayed message as a new entry
    assert.equals("2 2 2 4", res:messages()[1].payload)
    assert.equals(4, seen:count()) -- the route saw each message once more
    assert(de:publish("consume", ""))
    assert.is_true(h.run_until(de, function() return res:count() == 2 end, 2))
    assert.equals("t/a=1,t/b=2", res:messages()[2].payload) -- each once, not twice
    de:close()
    os.execute("rm -rf " .. dir)
  end)

  it("runs the orders example: orders/# into a durable queue, retries, dlq/orders", function()
    load([[
      local orders = mq.queue("orders", { durable = true, max_attempts = 3,
        backoff = { 0.01, 0.05 }, dead_letter = "dlq/orders" })
      mq.route("orders/#", orders)
      orders:consume(function(msg)
        local qty = tonumber(msg.payload) or error("bad order: " .. msg.payload)
        mq.publish("accepted/" .. msg.topic:match("[^/]+$"), tostring(qty))
      end)
    ]])
    local ok, dlq = e:capture("accepted/#"), e:capture("dlq/orders")
    e:publish("orders/1", "5")
    e:publish("orders/2", "lots")
    assert.is_true(wait_count(ok, 1))
    assert.is_true(wait_count(dlq, 1))
    assert.are.equal("accepted/1", ok:messages()[1].topic)
    local d = dlq:messages()[1]
    assert.are.equal("lots", d.payload)
    assert.are.equal("orders/2", user_props(d)["mqrouter-topic"])
    assert.are.equal("3", user_props(d)["mqrouter-attempts"])
  end)
end)
