-- A session that logs in with SCRAM-SHA-256 (mq.upstream{ auth_method })
-- against mqrouter's own listener, declared in the same rules: the right
-- password connects, a wrong one is refused and said so; a method the
-- client does not speak, or the Paho transport, fails the declaration.
local h = require "helpers"

local RULES = [[
local mq = require "mqrouter"
local l = mq.listen{ host = "127.0.0.1", port = 0, allow_anonymous = false }
assert(mq.users.add("alice", "s3cret", 4096))
local up = mq.upstream{ name = "self", broker = "tcp://127.0.0.1:" .. l:port(), version = 5,
                        username = "alice", password = %q, auth_method = "SCRAM-SHA-256",
                        transport = "native", reconnect = { initial = 1, max = 1 } }
mq.on("session_ready", function() mq.publish("r/ready", "1") end)
mq.route("status", function()
  local s = up:status()
  mq.publish("r/status", s.state .. " " .. tostring(s.last_error))
end)
]]

describe("SCRAM on the client side", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  local function last(cap, topic)
    local out
    for _, m in ipairs(cap:messages()) do
      if m.topic == topic then out = m.payload end
    end
    return out
  end

  it("connects to our listener with the right password", function()
    local cap = e:capture("r/#")
    assert(e:load(RULES:format("s3cret")))
    assert.is_true(h.run_until(e, function() return last(cap, "r/ready") == "1" end, 5))
    assert(e:publish("status", ""))
    assert.is_true(h.run_until(e, function() return last(cap, "r/status") ~= nil end, 2))
    assert.are.equal("connected nil", last(cap, "r/status"))
  end)

  it("is refused with a wrong password, and says so", function()
    local cap = e:capture("r/#")
    assert(e:load(RULES:format("wrong")))
    local function refused()
      assert(e:publish("status", ""))
      local s = last(cap, "r/status")
      return s ~= nil and s:find("bad user name or password", 1, true) ~= nil
    end
    assert.is_true(h.run_until(e, refused, 5), tostring(last(cap, "r/status")))
    assert.is_nil(last(cap, "r/ready"))
  end)

  it("refuses a method it does not speak, and Paho", function()
    for _, extra in ipairs({ 'auth_method = "PLAIN", transport = "native"',
                             'auth_method = "SCRAM-SHA-256", transport = "paho"' }) do
      local ok, err = e:load(([[
        local mq = require "mqrouter"
        mq.upstream{ name = "x", broker = "tcp://127.0.0.1:1", version = 5,
                     username = "a", password = "b", %s }
      ]]):format(extra))
      assert.is_nil(ok)
      -- the reason (auth_method and what it needs) is in the log line
      assert.is_truthy(tostring(err):find("cannot create it", 1, true), tostring(err))
    end
  end)
end)
