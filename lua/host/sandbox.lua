-- lua/host/sandbox.lua — the environment rule scripts run in, compiled
-- into the binary (bindings/script_lua.c loads it; bindings/embed_lua.cmake
-- embeds it). An allowlist of the standard library, a require() limited to
-- text Lua files under the stdlib and the script's own directory, and
-- strict globals (reading an undeclared one is an error). Receives stdlib
-- dir, script dir, the rules API table and a list that gets the path of
-- every file require loads; returns the env maker. Runs outside the
-- sandbox: it must set no global.
local stdlib_dir, script_dir, mq, files = ...
local G = _G
local allowed = { 'assert', 'error', 'ipairs', 'next', 'pairs', 'pcall', 'select',
  'tonumber', 'tostring', 'type', 'unpack', 'xpcall', 'setmetatable', 'getmetatable',
  'rawequal', 'rawget', 'rawset', '_VERSION', 'string', 'table', 'math', 'coroutine', 'bit' }
local safe_os = { time = os.time, clock = os.clock, date = os.date,
  difftime = os.difftime, getenv = os.getenv }
local c_modules = { cjson = true, ['cjson.safe'] = true, zlib = true }
local loaded, loading = { mqrouter = mq }, {}
local new_env
local function find(name)
  local rel = name:gsub('%.', '/')
  for _, dir in ipairs({ script_dir, stdlib_dir }) do
    for _, pat in ipairs({ '/?.lua', '/?/init.lua' }) do
      local path = dir .. pat:gsub('%?', rel)
      local f = io.open(path, 'rb')
      if f then local src = f:read('*a'); f:close(); return path, src end
    end
  end
end
local function sandbox_require(name)
  if type(name) ~= 'string' then error('bad argument #1 to require (string expected)', 2) end
  local mod = loaded[name]
  if mod ~= nil then return mod end
  if c_modules[name] then mod = G.require(name); loaded[name] = mod; return mod end
  if loading[name] then error("loop requiring module '" .. name .. "'", 2) end
  local path, src = find(name)
  if not path then
    -- watched too: creating it is the change that mends the load
    files[#files + 1] = script_dir .. '/' .. name:gsub('%.', '/') .. '.lua'
    error("module '" .. name .. "' not found in " .. script_dir .. ' or ' .. stdlib_dir, 2)
  end
  files[#files + 1] = path -- watched for changes like the script (script_load.c)
  local chunk, err = load(src, '@' .. path, 't', new_env())
  if not chunk then error(err, 0) end
  loading[name] = true
  local ok, res = pcall(chunk, name)
  loading[name] = nil
  if not ok then error(res, 0) end
  if res == nil then res = true end
  loaded[name] = res
  return res
end
local strict = { __index = function(_, k)
  error("undefined global '" .. tostring(k) .. "'", 2) end }
new_env = function()
  local env = {}
  for _, k in ipairs(allowed) do env[k] = G[k] end
  env.os = safe_os
  env.require = sandbox_require
  env.print = function(...)
    local t = { ... }
    for i = 1, select('#', ...) do t[i] = tostring(t[i]) end
    mq.log.info(table.concat(t, '\t'))
  end
  env._G = env
  return setmetatable(env, strict)
end
return new_env
