-- mq.users, mq.authenticate and mq.authorize as a rules script sees them:
-- users persist in the store across engines, misuse raises, runtime
-- failures return nil, msg, name. (The hooks' effect on real clients is
-- tests/integration/test_auth_clients.py.)
local h = require "helpers"

describe("mq.users", function()
  it("adds, lists, replaces and removes users, persisted in the store", function()
    local dir = h.tmpdir()
    local e = h.engine({ data_dir = dir })
    assert(e:load([[
      local mq = require "mqrouter"
      assert(mq.users.add("zed", "pw", 4096))
      assert(mq.users.add("amy", "pw", 4096))
      assert(mq.users.add("amy", "new password", 4096)) -- replaces
      mq.route("q", function()
        mq.publish("names", table.concat(mq.users.list(), ","))
      end)
    ]], "users.lua"))
    local cap = e:capture("names")
    assert(e:publish("q", "x"))
    assert.are.equal("amy,zed", cap:messages()[1].payload)
    e:close()

    local e2 = h.engine({ data_dir = dir })
    assert(e2:load([[
      local mq = require "mqrouter"
      assert(#mq.users.list() == 2)
      assert(mq.users.remove("zed"))
      local ok, msg, name = mq.users.remove("zed")
      assert(ok == nil and name == "ENOENT" and msg:find("no such user"), msg)
      assert(mq.users.list()[1] == "amy" and #mq.users.list() == 1)
    ]], "users2.lua"))
    e2:close()
    os.execute("rm -rf " .. dir)
  end)

  it("refuses bad names and iteration counts, raises on misuse", function()
    local e = h.engine()
    assert(e:load([[
      local mq = require "mqrouter"
      local ok, msg, name = mq.users.add("", "pw")
      assert(ok == nil and name == "EINVAL", msg)
      ok, msg, name = mq.users.add("bad\nname", "pw")
      assert(ok == nil and name == "EINVAL", msg)
      ok, msg, name = mq.users.add("x", "pw", 100) -- under 4096
      assert(ok == nil and name == "EINVAL", msg)
      assert(not pcall(mq.users.add, "x"))             -- no password
      assert(not pcall(mq.users.add, "x", "a\0b"))     -- NUL in the password
      assert(not pcall(mq.users.add, {}, "pw"))
      assert(#mq.users.list() == 0)
    ]], "bad.lua"))
    e:close()
  end)
end)

describe("mq.authenticate / mq.authorize", function()
  it("take a function or nil, and raise for anything else", function()
    local e = h.engine()
    assert(e:load([[
      local mq = require "mqrouter"
      mq.authenticate(function() return true end)
      mq.authorize(function() return true end)
      mq.authorize(nil)
      assert(not pcall(mq.authenticate, "yes"))
      assert(not pcall(mq.authorize, 42))
    ]], "hooks.lua"))
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.authenticate(true)
    ]], "bad.lua")
    assert.is_nil(ok)
    assert.matches("function expected", err)
    e:close()
  end)
end)
