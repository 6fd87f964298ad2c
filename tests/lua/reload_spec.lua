-- Reload is a transaction: the new script takes over between two messages,
-- or, if it fails anywhere, the old one keeps serving.
local mqrouter = require "mqrouter"
local h = require "helpers"

describe("reload", function()
  local e, dir, path
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine({ watch = true })
    dir = h.tmpdir()
    path = dir .. "/rules.lua"
  end)
  after_each(function()
    e:close()
    os.execute("rm -rf " .. dir)
    mqrouter.capture_logs(false)
  end)

  local function rules(tag)
    return ([[
      local mq = require "mqrouter"
      mq.route("in/#", function(msg) mq.publish("out/%s", msg.payload) end)
    ]]):format(tag)
  end

  it("swaps the rules on reload", function()
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    e:publish("in/x", "1")
    h.write(path, rules("v2"))
    assert(e:reload())
    e:publish("in/x", "2")
    local m = cap:messages()
    assert.are.equal(2, #m)
    assert.are.equal("out/v1", m[1].topic)
    assert.are.equal("out/v2", m[2].topic)
    assert.are.equal(1, e:stats().reloads)
  end)

  it("keeps the old rules when the new script has a syntax error", function()
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    h.write(path, "local mq = require 'mqrouter'\nmq.route('in/#', function(\n")
    local ok, err = e:reload()
    assert.is_nil(ok)
    assert.matches("rules.lua:3:", err, 1, true)
    local cap = e:capture("out/#")
    e:publish("in/x", "1")
    assert.are.equal("out/v1", cap:messages()[1].topic)
    assert.are.equal(1, e:stats().reload_failures)
  end)

  it("keeps the old rules when the new script fails halfway", function()
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    h.write(path, [[
      local mq = require "mqrouter"
      mq.route("in/#", function(msg) mq.publish("out/v2", msg.payload) end)
      mq.every(0.01, function() mq.publish("out/timer", "") end)
      local cfg = nil
      local x = cfg.missing -- fails after routes and timers were declared
    ]])
    local ok, err = e:reload()
    assert.is_nil(ok)
    assert.matches("rules.lua:5: attempt to index", err, 1, true)
    local cap = e:capture("out/#")
    e:publish("in/x", "1")
    e:run(0.05)
    local m = cap:messages()
    assert.are.equal(1, #m)
    assert.are.equal("out/v1", m[1].topic)
  end)

  it("reloads when the file changes on disk, and logs a failed one", function()
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    -- replace the file the way editors do: write a new one and rename it
    h.write(path .. ".tmp", rules("v2"))
    os.rename(path .. ".tmp", path)
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 1 end, 3))
    e:publish("in/x", "1")
    assert.are.equal("out/v2", cap:messages()[1].topic)

    h.write(path, "this is not lua")
    assert.is_true(h.run_until(e, function() return e:stats().reload_failures == 1 end, 3))
    assert.truthy(h.find_log(mqrouter.logs(), "rules.lua:1:"))
    e:publish("in/x", "2")
    assert.are.equal("out/v2", cap:messages()[2].topic)
  end)

  -- mqrouter.logs() hands each entry once: keep them all, in order.
  local all = {}
  local function log_count()
    for _, l in ipairs(mqrouter.logs()) do all[#all + 1] = l end
    return #all
  end
  -- The log entries after the first `from` ones that have text.
  local function logs_with(text, from)
    log_count()
    local found = {}
    for i, l in ipairs(all) do
      if i > (from or 0) and l:find(text, 1, true) then found[#found + 1] = l end
    end
    return found
  end

  it("reloads when a module the rules require changes on disk", function()
    h.write(dir .. "/fmt.lua", "return { tag = 'm1' }\n")
    h.write(path, [[
      local mq = require "mqrouter"
      local fmt = require "fmt"
      mq.route("in/#", function(msg) mq.publish("out/" .. fmt.tag, msg.payload) end)
    ]])
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    e:publish("in/x", "1")
    h.write(dir .. "/fmt.lua.tmp", "return { tag = 'm2' }\n") -- the way editors save
    os.rename(dir .. "/fmt.lua.tmp", dir .. "/fmt.lua")
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 1 end, 3))
    e:publish("in/x", "2")
    local m = cap:messages()
    assert.are.equal("out/m1", m[1].topic)
    assert.are.equal("out/m2", m[2].topic)
    -- an edit in place, and a module loaded by a module
    h.write(dir .. "/fmt.lua", "return { tag = require('sub.tag') }\n")
    os.execute("mkdir -p " .. dir .. "/sub")
    h.write(dir .. "/sub/tag.lua", "return 'm3'\n")
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 2 end, 3))
    h.write(dir .. "/sub/tag.lua", "return 'm4'\n")
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 3 end, 3))
    e:publish("in/x", "3")
    assert.are.equal("out/m4", cap:messages()[3].topic)
    -- a file next to them that the rules do not load changes nothing
    h.write(dir .. "/unrelated.lua", "return 1\n")
    e:run(0.3)
    assert.are.equal(3, e:stats().reloads)
  end)

  it("reloads when a module a failed reload could not find is created", function()
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    h.write(path, [[
      local mq = require "mqrouter"
      local fmt = require "newfmt"
      mq.route("in/#", function(msg) mq.publish("out/" .. fmt.tag, msg.payload) end)
    ]])
    assert.is_true(h.run_until(e, function() return e:stats().reload_failures == 1 end, 3))
    h.write(dir .. "/newfmt.lua", "return { tag = 'new' }\n")
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 1 end, 3))
    e:publish("in/x", "1")
    assert.are.equal("out/new", cap:messages()[1].topic)
  end)

  it("logs the failure of a broken save, then the recovery when it is reverted", function()
    h.write(dir .. "/fmt.lua", "return { tag = 'ok' }\n")
    h.write(path, rules("v1"))
    assert(e:load_file(path))
    local n0 = log_count()
    h.write(path, rules("v1") .. "\nlocal x = = 1\n")
    assert.is_true(h.run_until(e, function() return e:stats().reload_failures == 1 end, 3))
    local failed = logs_with("reload of " .. path .. " failed", n0)
    assert.are.equal(1, #failed)
    assert.truthy(failed[1]:find("rules.lua:4: unexpected symbol near '='", 1, true), failed[1])
    local n1 = log_count()
    h.write(path, rules("v1")) -- reverted: the same text as the rules that run
    assert.is_true(h.run_until(e, function() return #logs_with("failed reload at", n1) == 1 end, 3))
    local back = logs_with("failed reload at", n1)[1]
    assert.matches("^WARN %[rules%] " .. path:gsub("%p", "%%%0")
      .. " is back to the rules that run: the failed reload at %d%d:%d%d:%d%d UTC is over, "
      .. "nothing to reload$", back)
    assert.are.equal(0, e:stats().reloads)
    -- a broken save, then a good one: reloaded, saying it follows the failure
    h.write(path, "this is not lua")
    assert.is_true(h.run_until(e, function() return e:stats().reload_failures == 2 end, 3))
    local n2 = log_count()
    h.write(path, rules("v2"))
    assert.is_true(h.run_until(e, function() return e:stats().reloads == 1 end, 3))
    local again = logs_with("reloaded " .. path, n2)
    assert.are.equal(1, #again)
    assert.matches("after the failed reload at %d%d:%d%d:%d%d UTC: the new rules run$", again[1])
  end)

  it("loses and duplicates nothing across many reloads under traffic", function()
    h.write(path, rules("v0"))
    assert(e:load_file(path))
    local cap = e:capture("out/#")
    local n = 0
    for r = 1, 20 do
      for _ = 1, 500 do
        n = n + 1
        e:publish("in/x", tostring(n), { qos = 1 })
      end
      h.write(path, rules("v" .. r))
      assert(e:reload())
    end
    local seen = {}
    for _, m in ipairs(cap:messages()) do
      assert.is_nil(seen[m.payload], "duplicate " .. m.payload)
      seen[m.payload] = true
    end
    assert.are.equal(n, cap:count())
  end)
end)
