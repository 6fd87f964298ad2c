-- mq.devices, mq.topics, mq.retained and the device events as a rules
-- script sees them: CRUD and pagination, persistence across engines, misuse
-- raises, expected failures return nil, msg, name. (Status driven by real
-- clients is tests/integration/test_devices.py and tests/c/test_registry.c.)
local h = require "helpers"

local function run(e, code, name)
  local ok, err = e:load(code, name or "spec.lua")
  assert(ok, err)
end

describe("mq.devices", function()
  it("registers, updates, gets, lists and unregisters, persisted", function()
    local dir = h.tmpdir()
    local e = h.engine({ data_dir = dir })
    run(e, [[
      local mq = require "mqrouter"
      local ok, created = mq.devices.register{ id = "d1", name = "Boiler", type = "thermostat",
        metadata = { floor = 2 } }
      assert(ok and created)
      ok, created = mq.devices.register{ id = "d1", name = "Boiler 2", type = "thermostat" }
      assert(ok and created == false)
      local d = assert(mq.devices.get("d1"))
      assert(d.name == "Boiler 2" and d.type == "thermostat" and d.status == "unknown", d.name)
      assert(d.metadata == "{}" and d.msgs_in == 0 and d.tenant == nil)
      assert(mq.devices.register{ id = "d2", type = "meter", metadata = '{"a":[1,2]}' })
      assert(mq.devices.register{ id = "d1", tenant = "acme", type = "meter" })
      assert(mq.devices.get("d1", "acme").tenant == "acme")
      local v, msg, name = mq.devices.get("nope")
      assert(v == nil and name == "ENOENT" and msg:find("no such device"), msg)
    ]], "a.lua")
    e:close()

    local e2 = h.engine({ data_dir = dir })
    run(e2, [[
      local mq = require "mqrouter"
      local d = assert(mq.devices.get("d2"))
      assert(d.type == "meter" and d.metadata == '{"a":[1,2]}')
      local all, next = mq.devices.list()
      assert(#all == 3 and next == nil, #all)
      assert(all[1].id == "d1" and all[2].id == "d2" and all[3].tenant == "acme")
      assert(#mq.devices.list{ type = "meter" } == 2)
      assert(#mq.devices.list{ tenant = "acme" } == 1)
      assert(#mq.devices.list{ tenant = "" } == 2)
      assert(#mq.devices.list{ prefix = "d2" } == 1)
      assert(mq.devices.unregister("d2"))
      local ok, _, name = mq.devices.unregister("d2")
      assert(ok == nil and name == "ENOENT")
    ]], "b.lua")
    e2:close()
    os.execute("rm -rf " .. dir)
  end)

  it("pages with limit and cursor", function()
    local e = h.engine()
    run(e, [[
      local mq = require "mqrouter"
      for i = 1, 7 do assert(mq.devices.register{ id = string.format("s%02d", i) }) end
      local ids, cursor, pages = {}, nil, 0
      repeat
        local page, next = mq.devices.list{ limit = 3, cursor = cursor }
        for _, d in ipairs(page) do ids[#ids + 1] = d.id end
        cursor, pages = next, pages + 1
      until not cursor or pages > 10
      assert(pages == 3 and #ids == 7 and ids[1] == "s01" and ids[7] == "s07", table.concat(ids, ","))
      local v, msg, name = mq.devices.list{ cursor = "no-slash" }
      assert(v == nil and name == "EINVAL", msg)
    ]])
    e:close()
  end)

  it("refuses bad entries with a reason, raises on misuse", function()
    local e = h.engine()
    run(e, [[
      local mq = require "mqrouter"
      local ok, msg, name = mq.devices.register{ id = "x", metadata = "{oops" }
      assert(ok == nil and name == "EINVAL" and msg:find("JSON"), msg)
      ok, msg, name = mq.devices.register{ id = "x", tenant = "a/b" }
      assert(ok == nil and name == "EINVAL" and msg:find("tenant"), msg)
      assert(not pcall(mq.devices.register, "x"))
      assert(not pcall(mq.devices.register, {}))
      assert(not pcall(mq.devices.list, { limit = 1001 }))
      assert(not pcall(mq.devices.list, { status = "sleeping" }))
      assert(not pcall(mq.devices.set_status, "x", "sleeping"))
    ]])
    e:close()
  end)

  it("sends device_online and device_offline events to mq.on", function()
    local e = h.engine()
    run(e, [[
      local mq = require "mqrouter"
      assert(mq.devices.register{ id = "pump", type = "pump" })
      mq.on("device_online", function(ev)
        mq.publish("events", ev.type .. " " .. ev.id .. " " .. ev.old .. " " .. ev.device.type)
      end)
      mq.on("device_offline", function(ev)
        mq.publish("events", ev.type .. " " .. ev.id .. " " .. ev.old .. " " .. ev.reason)
      end)
      mq.route("go/+", function(m)
        assert(mq.devices.set_status("pump", m.topic:match("go/(.*)")))
      end)
    ]])
    local cap = e:capture("events")
    assert(e:publish("go/online", "x"))
    assert(e:publish("go/online", "x")) -- no change, no event
    assert(e:publish("go/offline", "x"))
    local got = cap:messages()
    assert.are.equal(2, #got)
    assert.are.equal("device_online pump unknown pump", got[1].payload)
    assert.are.equal("device_offline pump online set by hand", got[2].payload)
    e:close()
  end)
end)

describe("mq.topics", function()
  it("counts topics published, lists them by prefix, validates", function()
    local e = h.engine()
    run(e, [[
      local mq = require "mqrouter"
      mq.route("plant/#", function() end)
      mq.route("check", function()
        local i = assert(mq.topics.info("plant/a"))
        assert(i.tracked and i.messages == 2 and i.subscribers == 1 and not i.retained, i.messages)
        assert(i.last_message > 0)
        local u = assert(mq.topics.info("never/seen"))
        assert(not u.tracked and u.messages == 0)
        local v, msg, name = mq.topics.info("bad/#")
        assert(v == nil and name == "ETOPIC", msg)
        local page, next = mq.topics.list{ prefix = "plant/", limit = 1 }
        assert(#page == 1 and page[1].topic == "plant/a" and next == "plant/a", next)
        page, next = mq.topics.list{ prefix = "plant/", limit = 1, cursor = next }
        assert(#page == 1 and page[1].topic == "plant/b" and next == nil)
        assert(mq.topics.validate("a/b") == true)
        local ok, why = mq.topics.validate("a/+")
        assert(ok == false and why, why)
        assert(mq.topics.validate("a/+", { wildcards = true }) == true)
        ok, why = mq.topics.validate("a/#/b", { wildcards = true })
        assert(ok == false and why:find("#"), why)
        mq.publish("checked", "ok")
      end)
    ]])
    local cap = e:capture("checked")
    assert(e:publish("plant/a", "1"))
    assert(e:publish("plant/a", "2"))
    assert(e:publish("plant/b", "3"))
    assert(e:publish("check", "x"))
    assert.are.equal(1, cap:count())
    e:close()
  end)
end)

describe("mq.retained", function()
  it("sets, gets and deletes retained messages", function()
    local e = h.engine()
    run(e, [[
      local mq = require "mqrouter"
      assert(mq.retained.set("cfg/a", "on", { qos = 1 }))
      local m = assert(mq.retained.get("cfg/a"))
      assert(m.payload == "on" and m.qos == 1 and m.topic == "cfg/a")
      assert(mq.topics.info("cfg/a").retained)
      assert(mq.retained.delete("cfg/a"))
      assert(mq.retained.get("cfg/a") == nil)
      local ok, msg, name = mq.retained.delete("cfg/a")
      assert(ok == nil and name == "ENOENT", msg)
      ok, msg, name = mq.retained.set("cfg/+", "x")
      assert(ok == nil and name == "ETOPIC", msg)
      assert(not pcall(mq.retained.set, "cfg/a", "x", { qos = 3 }))
    ]])
    e:close()
  end)
end)
