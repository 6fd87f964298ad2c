-- mq.admin: starting the admin API from rules, its answers and its misuse.
-- The HTTP side is tested with curl in tests/integration/test_admin_api.py.
local mqrouter = require "mqrouter"
local h = require "helpers"

describe("mq.admin", function()
  local e
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  -- runs code in a script whose last line publishes table.concat(out, "|")
  local function run(code)
    local cap = e:capture("out")
    assert(e:load("local mq = require 'mqrouter'\nlocal out = {}\n" .. code ..
                  "\nmq.publish('out', table.concat(out, '|'))\n"))
    local msgs = cap:messages()
    cap:stop()
    return msgs[1] and msgs[1].payload
  end

  it("starts on a free port and only replaces the tokens when called again", function()
    local got = run([[
      local p = assert(mq.admin{ port = 0, tokens = { "one" } })
      out[1] = tostring(p > 0)
      out[2] = tostring(mq.admin{ port = p, tokens = { "two" } } == p)
      out[3] = tostring(mq.admin{ host = "localhost", port = 0, tokens = { "three" } } == p)
      local ok, err, name = mq.admin{ port = p + 1 }
      out[4] = tostring(ok)
      out[5] = name
    ]])
    assert.are.equal("true|true|true|nil|EEXIST", got)
  end)

  it("refuses a non-loopback address without tokens", function()
    local got = run([[
      local ok, err, name = mq.admin{ host = "0.0.0.0", port = 0 }
      out[1] = tostring(ok)
      out[2] = name
      out[3] = tostring(err:find("needs tokens") ~= nil)
      local ok2, err2, name2 = mq.admin{ port = 0, tokens_file = "/nonexistent/tokens" }
      out[4] = tostring(ok2)
      out[5] = name2
    ]])
    assert.are.equal("nil|EINVAL|true|nil|EINVAL", got)
  end)

  it("takes tenant tokens as \"TOKEN tenant=NAME\" and refuses malformed ones", function()
    local got = run([[
      local p = assert(mq.admin{ port = 0, tokens = { "one", "two tenant=acme" } })
      out[1] = tostring(p > 0)
      local ok, err, name = mq.admin{ port = p, tokens = { "three tenant=a/b" } }
      out[2] = tostring(ok)
      out[3] = name
      out[4] = tostring(err:find("malformed") ~= nil)
      ok, err, name = mq.admin{ port = p, tokens = { "three owner=x" } }
      out[5] = name
    ]])
    assert.are.equal("true|nil|EINVAL|true|EINVAL", got)
  end)

  it("takes Host names, origins and require_token; refuses malformed ones", function()
    local got = run([[
      local ok, err, name = mq.admin{ port = 0, require_token = true }
      out[1] = tostring(ok)
      out[2] = name
      out[3] = tostring(err:find("tokens are required", 1, true) ~= nil)
      ok, err, name = mq.admin{ port = 0, origins = { "evil.example" } }
      out[4] = name
      out[5] = tostring(err:find("'evil.example' is not scheme://host[:port]", 1, true) ~= nil)
      ok, err, name = mq.admin{ port = 0, hosts = { "bad host" } }
      out[6] = name
      out[7] = tostring(err:find("'bad host'", 1, true) ~= nil)
      local p = assert(mq.admin{ port = 0, tokens = { "t" }, require_token = true,
                                 hosts = { "admin.example" },
                                 origins = { "https://dash.example:8443" } })
      out[8] = tostring(p > 0)
      -- all or nothing: a bad origin keeps the tokens too
      ok, err, name = mq.admin{ port = p, require_token = true, origins = { "ftp://x" } }
      out[9] = name
      ok, err, name = mq.admin{ port = p, require_token = true }
      out[10] = name
    ]])
    assert.are.equal("nil|EINVAL|true|EINVAL|true|EINVAL|true|true|EINVAL|EINVAL", got)
  end)

  it("raises on a misspelt option, naming it", function()
    local loaded, lerr = e:load("require('mqrouter').admin{ port = 0, token = { 'x' } }")
    assert.is_nil(loaded)
    assert.truthy(lerr:find("admin: unknown option 'token' (it takes host, port, tokens",
                            1, true), lerr)
  end)

  it("raises on misuse", function()
    local got = run([[
      out[1] = tostring(pcall(mq.admin))
      out[2] = tostring(pcall(mq.admin, { port = "x" }))
      out[3] = tostring(pcall(mq.admin, { port = 70000 }))
      out[4] = tostring(pcall(mq.admin, { port = 0, tokens = { 1 } }))
      out[5] = tostring(pcall(mq.admin, { port = 0, tokens = { "" } }))
      out[6] = tostring(pcall(mq.admin, { port = 0, tokens = "abc" }))
      out[7] = tostring(pcall(mq.admin, { port = 0, hosts = "h" }))
      out[8] = tostring(pcall(mq.admin, { port = 0, origins = { 1 } }))
      out[9] = tostring(pcall(mq.admin, { port = 0, require_token = "yes" }))
    ]])
    assert.are.equal("false|false|false|false|false|false|false|false|false", got)
  end)
end)
