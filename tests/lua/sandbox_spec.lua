-- Scripts run in an allowlisted environment with strict globals.
local h = require "helpers"

describe("sandbox", function()
  local e
  before_each(function() e = h.engine() end)
  after_each(function() e:close() end)

  it("makes reading an undeclared global an error", function()
    local ok, err = e:load("local x = undefined_thing + 1", "strict.lua")
    assert.is_nil(ok)
    assert.matches("strict.lua:1: undefined global 'undefined_thing'", err, 1, true)
  end)

  it("allows declaring globals by assignment", function()
    assert(e:load("counter = 1; counter = counter + 1"))
  end)

  it("offers no file, process or bytecode access", function()
    for _, name in ipairs({ "io", "debug", "dofile", "loadfile", "load", "loadstring", "package" }) do
      local ok, err = e:load("return " .. name .. " ~= nil")
      assert.is_nil(ok, name)
      assert.matches("undefined global", err)
    end
    local ok, err = e:load("os.execute('true')")
    assert.is_nil(ok)
    assert.matches("attempt to call field 'execute'", err, 1, true)
  end)

  it("requires modules from the script directory and the stdlib", function()
    local dir = h.tmpdir()
    h.write(dir .. "/helper_mod.lua", "return { answer = 42 }")
    h.write(dir .. "/main.lua", [[
      local mq = require "mqrouter"
      local m = require "helper_mod"
      mq.route("q", function() mq.publish("a", tostring(m.answer)) end)
    ]])
    assert(e:load_file(dir .. "/main.lua"))
    local cap = e:capture("a")
    e:publish("q", "")
    assert.are.equal("42", cap:messages()[1].payload)
    local ok, err = e:load("require 'no.such.module'")
    assert.is_nil(ok)
    assert.matches("module 'no.such.module' not found", err, 1, true)
    os.execute("rm -rf " .. dir)
  end)
end)
