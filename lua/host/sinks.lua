-- lua/host/sinks.lua: the Lua half of the egress clients (bindings/l_sink*.c),
-- compiled into the binary and run once in every rules state, outside the
-- sandbox, as the chunk "=sinks".
--
-- Receives the rules table (mq) and the methods table of file sinks; adds
-- write and write_sync, which take a table (encoded as JSON) or a string.
-- Must not: block (write_sync waits by yielding), or set globals.
local mq, file_methods = ...
local json
local type, pcall, tostring, error = type, pcall, tostring, error

-- The bytes of a record: a string as it is, a table as JSON.
local function encode(v, what)
  if type(v) == 'string' then return v end
  if type(v) ~= 'table' then
    error(what .. ': bad argument #1 (table or string expected, got ' .. type(v) .. ')', 3)
  end
  json = json or require('cjson')
  local ok, text = pcall(json.encode, v)
  if not ok then return nil, 'EPAYLOAD: cannot encode as JSON: ' .. tostring(text) end
  -- cjson writes "/" as "\/": valid, but topics read badly; the pair only
  -- comes from that escape (a backslash is written "\\"), as in mqrouter.json
  return (text:gsub('\\/', '/'))
end

-- f:write(v) -> true | nil, err, name, kind: never waits; the record is on
-- disk later (f:flush() waits for that).
function file_methods.write(self, v)
  local text, err = encode(v, 'file:write')
  if not text then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_write(text)
end

-- f:write_sync(v) -> true | nil, err, name, kind: waits (in a coroutine)
-- until the record is written (and on disk, with fsync = "batch").
function file_methods.write_sync(self, v)
  local text, err = encode(v, 'file:write_sync')
  if not text then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_write_wait(text)
end
