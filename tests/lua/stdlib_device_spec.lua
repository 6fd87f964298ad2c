-- mqrouter.device (twins, commands, presence) and mqrouter.kv.
local t = require "mqrouter.testing"
local h_ = require "helpers"

local T0 = 1700000000

describe("mqrouter.device twins", function()
  local h
  after_each(function() if h then h:close() end h = nil end)

  it("merges reported and desired state and publishes deltas", function()
    h = t.load_string([[
      local mq = require "mqrouter"
      local device = require "mqrouter.device"
      device.twins{ prefix = "dev", on_delta = function(id, delta) mq.publish("deltas", id) end }
    ]])
    h:publish("dev/lamp1/reported", '{"power":"off","level":10,"fw":{"v":1}}')
    local tw = h:last("dev/lamp1/twin").json
    assert.are.same({ power = "off", level = 10, fw = { v = 1 } }, tw.reported)
    assert.are.equal(1, tw.version)
    assert.are.equal(0, #h:published("dev/lamp1/delta")) -- no desired state: no delta yet
    h:publish("dev/lamp1/desired/set", '{"power":"on","level":10}')
    local d = h:last("dev/lamp1/delta")
    assert.are.same({ power = "on" }, d.json)            -- level already matches
    assert.is_true(d.retain)
    assert.are.same({ "lamp1" }, h:payloads("deltas"))
    h:publish("dev/lamp1/desired/set", '{"fw":{"v":2}}')
    assert.are.same({ power = "on", fw = { v = 2 } }, h:last("dev/lamp1/delta").json)
    h:publish("dev/lamp1/reported", '{"power":"on","fw":{"v":2}}')
    assert.are.equal("{}", h:last("dev/lamp1/delta").payload) -- in sync
    tw = h:last("dev/lamp1/twin").json
    assert.are.equal(4, tw.version)
    h:publish("dev/lamp1/desired/set", '{"level":null}')    -- null removes a desired key
    tw = h:last("dev/lamp1/twin").json
    assert.is_nil(tw.desired.level)
    assert.are.equal(3, #h:published("dev/lamp1/delta"))  -- unchanged delta: not republished
  end)

  it("keeps twins across a reload (mqrouter.kv) and refuses non-objects", function()
    local dir = h_.tmpdir()
    local path = dir .. "/rules.lua"
    h_.write(path, [[
      local mq = require "mqrouter"
      local device = require "mqrouter.device"
      local twins = device.twins{}
      mq.route("get/+", function(msg)
        local id = msg.topic:match("get/(.+)")
        mq.publish("twin-of/" .. id, require("mqrouter.json").encode(twins:get(id).reported))
      end)
    ]])
    h = t.load(path)
    h:publish("devices/s1/reported", '{"t":21}')
    assert(h:reload())
    h:publish("get/s1", "")
    assert.are.equal('{"t":21}', h:last("twin-of/s1").payload)
    h:publish("devices/s1/reported", "[1,2]")
    assert.are.equal(1, #h:logs("is not a JSON object"))
    os.execute("rm -rf " .. dir)
  end)

  it("computes deltas", function()
    local h2 = t.load_string([[
      local mq = require "mqrouter"
      local d = require "mqrouter.device"
      local json = require "mqrouter.json"
      mq.publish("out", json.encode(d.delta({ a = 1, b = { c = 2, d = 3 }, e = { 1, 2 } },
                                            { a = 1, b = { c = 2, d = 4 }, e = { 1, 3 } })))
      mq.publish("out", tostring(d.delta({ a = 1 }, { a = 1, z = 9 })))
    ]])
    local cjson = require "cjson"
    assert.are.same({ b = { d = 3 }, e = { 1, 2 } }, cjson.decode(h2:payloads("out")[1]))
    assert.are.equal("nil", h2:payloads("out")[2])
    h2:close()
  end)
end)

describe("mqrouter.device commands", function()
  local h
  after_each(function() if h then h:close() end h = nil end)

  local RULES = [[
    local mq = require "mqrouter"
    local device = require "mqrouter.device"
    local cmds = device.commands{ timeout = 5 }
    mq.route("do/+/+", function(msg)
      local id, name = msg.topic:match("do/([^/]+)/([^/]+)")
      cmds:send(id, name, { arg = msg.payload }, function(result, err, code)
        mq.publish("result/" .. id, result and require("mqrouter.json").encode(result) or (code .. " " .. err))
      end)
    end)
    mq.route("stats", function()
      local s = cmds:stats()
      mq.publish("st", ("%d %d %d %d %d"):format(s.sent, s.answered, s.timed_out, s.late, s.pending))
    end)
  ]]

  it("sends a request and delivers the response", function()
    h = t.load_string(RULES, { start_time = T0 })
    h:publish("do/lamp1/reboot", "now")
    local req = h:last("devices/lamp1/cmd")
    assert.are.equal("reboot", req.json.name)
    assert.are.same({ arg = "now" }, req.json.args)
    assert.are.equal(1, req.qos)
    h:advance(4.9)
    h:publish("devices/lamp1/cmd/response", ('{"id":"%s","result":{"ok":true}}'):format(req.json.id))
    assert.are.same({ '{"ok":true}' }, h:payloads("result/lamp1"))
    h:advance(10)                                  -- no timeout after an answer
    assert.are.equal(1, #h:published("result/lamp1"))
    h:publish("do/lamp1/fail", "")
    local req2 = h:last("devices/lamp1/cmd")
    h:publish("devices/lamp1/cmd/response", ('{"id":"%s","error":"busy"}'):format(req2.json.id))
    assert.are.equal("EDEVICE EDEVICE: busy", h:payloads("result/lamp1")[2])
  end)

  it("times out, and counts a late answer", function()
    h = t.load_string(RULES, { start_time = T0 })
    h:publish("do/lamp2/ping", "")
    local req = h:last("devices/lamp2/cmd")
    h:advance(4.99)
    assert.are.equal(0, #h:published("result/lamp2"))
    h:advance(0.01)
    assert.are.same({ "ETIMEDOUT ETIMEDOUT: device lamp2 did not answer ping within 5 s" },
      h:payloads("result/lamp2"))
    h:publish("devices/lamp2/cmd/response", ('{"id":"%s","result":1}'):format(req.json.id))
    assert.are.equal(1, #h:published("result/lamp2"))
    h:publish("stats", "")
    assert.are.same({ "1 0 1 1 0" }, h:payloads("st"))
  end)
end)

describe("mqrouter.device presence", function()
  it("tracks online/offline from traffic, timeouts and last wills", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local device = require "mqrouter.device"
      local p = device.presence{ timeout = 60, on_change = function(id, on) mq.publish("change/" .. id, tostring(on)) end }
      mq.route("list", function() mq.publish("online", table.concat(p:list(), ",")) end)
    ]], { start_time = T0 })
    h:publish("devices/a/temp", "20")
    h:publish("devices/b/temp", "20")
    h:advance(30)
    h:publish("devices/a/temp", "21")
    h:advance(30)                      -- b silent for 60 s
    h:publish("list", "")
    assert.are.same({ "true", "false" }, h:payloads("change/b"))
    assert.are.same({ "a" }, h:payloads("online"))
    local m = h:last("devices/b/online")
    assert.are.equal("false", m.payload)
    assert.is_true(m.retain)
    h:publish("devices/a/status", "offline") -- its last will
    assert.are.same({ "true", "false" }, h:payloads("change/a"))
    h:publish("devices/a/temp", "22")
    assert.are.same({ "true", "false", "true" }, h:payloads("change/a"))
    h:close()
  end)
end)

describe("mqrouter.kv", function()
  it("keeps values across reloads, typed, by namespace", function()
    local dir = h_.tmpdir()
    local path = dir .. "/rules.lua"
    h_.write(path, [[
      local mq = require "mqrouter"
      local kv = require "mqrouter.kv"
      local a, b = kv.open("a"), kv.open("b")
      local boots = a:incr("boots")
      mq.route("show", function()
        local t = a:get("t", { n = 0 })
        mq.publish("out", ("%d %s %s %s %s %d"):format(boots, tostring(a:get("s")), tostring(b:get("s")),
          type(t), table.concat(a:keys(), ","), kv.count()))
      end)
      mq.route("set", function()
        assert(a:set("s", "text"))
        assert(a:set("t", { n = 1, list = { 1, 2 } }))
        assert(b:set("s", 42))
      end)
      mq.route("del", function() a:delete("s"); b:set("s", nil) end)
    ]])
    local h = t.load(path)
    h:publish("set", "")
    h:publish("show", "")
    assert(h:reload())
    h:publish("show", "")
    h:publish("del", "")
    h:publish("show", "")
    assert.are.same({ "1 text 42 table boots,s,t 4", "2 text 42 table boots,s,t 4", "2 nil nil table boots,t 2" },
      h:payloads("out"))
    h:close()
    os.execute("rm -rf " .. dir)
  end)

  it("persists namespaces opened with persist = true in SQLite", function()
    local dir = h_.tmpdir()
    local code = [[
      local mq = require "mqrouter"
      local kv = require "mqrouter.kv"
      local keep, temp = kv.open("keep", { persist = true }), kv.open("temp")
      mq.route("set", function() keep:set("x", { v = 1 }); keep:set("y", "why"); temp:set("z", "zed"); keep:set("gone", 1); keep:delete("gone") end)
      mq.route("show", function()
        mq.publish("out", ("%s %s %s %s"):format(require("mqrouter.json").encode(keep:get("x")),
          tostring(keep:get("y")), tostring(temp:get("z")), tostring(keep:get("gone"))))
      end)
    ]]
    local h = t.load_string(code, { data_dir = dir })
    h:publish("set", "")
    h:close()
    h = t.load_string(code, { data_dir = dir }) -- a new engine on the same database
    h:publish("show", "")
    assert.are.same({ '{"v":1} why nil nil' }, h:payloads("out"))
    h:close()
    os.execute("rm -rf " .. dir)
  end)

  it("refuses bad keys and values", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local kv = require "mqrouter.kv"
      local s = kv.open("n")
      mq.publish("out", tostring(select(2, pcall(s.get, s, {}))))
      mq.publish("out", tostring(select(2, pcall(mq.kv.get, ""))))
      mq.publish("out", tostring(select(2, s:set("f", { f = function() end }))))
      mq.publish("out", tostring(select(2, pcall(kv.open, ""))))
    ]])
    local out = h:payloads("out")
    assert.truthy(out[1]:find("key must be a string or a number", 1, true))
    assert.truthy(out[2]:find("key must be 1..1024 bytes", 1, true))
    assert.truthy(out[3]:find("^EJSON"))
    assert.truthy(out[4]:find("namespace must be a non%-empty string"))
    h:close()
  end)
end)

describe("mqrouter.device presence across a reload", function()
  it("keeps who is online; their timeout starts again", function()
    local dir = h_.tmpdir()
    local path = dir .. "/rules.lua"
    h_.write(path, [[ require("mqrouter.device").presence{ timeout = 60 } ]])
    local h = t.load(path, { start_time = T0 })
    h:publish("devices/a/temp", "1")
    h:advance(50)
    assert(h:reload())
    h:advance(59)
    assert.are.equal(1, #h:published("devices/a/online"))   -- still online, not re-announced
    h:advance(1)
    assert.are.same({ "true", "false" }, h:payloads("devices/a/online"))
    h:close()
    os.execute("rm -rf " .. dir)
  end)
end)
