-- The Lua halves compiled into the binary (lua/host/*.lua) get the checks
-- a linter would give them, since no test loads them as files: each one
-- parses under LuaJIT, sets no global (they run outside the sandbox, where
-- a typo would write _G), and is what the binary carries (the build embeds
-- the file as it is: an edit without a rebuild shows up here).
local src = os.getenv("MQROUTER_SRC") or "."
local build = os.getenv("MQROUTER_BUILD") or "build"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function host_files()
  local list = {}
  local p = assert(io.popen('ls "' .. src .. '/lua/host"'))
  for name in p:lines() do
    if name:match("%.lua$") then list[#list + 1] = name:gsub("%.lua$", "") end
  end
  p:close()
  return list
end

describe("lua/host", function()
  local names = host_files()

  it("has the files the build embeds", function()
    assert.is_true(#names >= 1)
  end)

  for _, name in ipairs(names) do
    local path = src .. "/lua/host/" .. name .. ".lua"

    it(name .. ".lua parses", function()
      local chunk, err = loadfile(path)
      assert.is_not_nil(chunk, err)
    end)

    it(name .. ".lua sets no global", function()
      local p = assert(io.popen('luajit -bl "' .. path .. '"'))
      local listing = p:read("*a")
      p:close()
      local sets = {}
      for line in listing:gmatch("[^\n]+") do
        if line:find("GSET", 1, true) then sets[#sets + 1] = line end
      end
      assert.are.same({}, sets)
    end)

    it(name .. ".lua is what the binary carries", function()
      local gen = read(build .. "/generated/lua_" .. name .. ".c")
      local bytes = {}
      for h in gen:match("%[%] = {(.-)};"):gmatch("0x(%x%x)") do
        bytes[#bytes + 1] = string.char(tonumber(h, 16))
      end
      bytes[#bytes] = nil -- the NUL after the text
      assert.are.equal(read(path), table.concat(bytes))
    end)
  end
end)
