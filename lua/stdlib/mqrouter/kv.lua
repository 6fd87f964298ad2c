-- mqrouter.kv — a key-value store that outlives reloads: the table lives in
-- the engine (C), not in the script's Lua state, so the rules that replace
-- these find what they left. Entries of a namespace opened with
-- persist = true are also written to the engine's SQLite database and come
-- back after a restart.
--
--   local kv = require "mqrouter.kv"
--   local counters = kv.open("counters", { persist = true })
--   counters:set("boots", (counters:get("boots") or 0) + 1)
--   counters:incr("messages")
--
-- Values: strings are stored as they are; numbers, booleans and tables as
-- JSON (mqrouter.json) and decoded on get. Keys are strings of 1..1024
-- bytes (with the namespace); values at most 16 MiB; at most 1 000 000
-- entries in all (then set returns nil, "EFULL: ...", "EFULL").
local mq = require "mqrouter"
local json = require "mqrouter.json"

local raw = mq.kv
local M = {}
local NS = {}
NS.__index = NS

-- kv.open(namespace [, { persist = false }]) -> store
function M.open(name, o)
  if type(name) ~= "string" or name == "" or name:find("\0", 1, true) then
    error("kv.open: namespace must be a non-empty string", 2)
  end
  if o ~= nil and type(o) ~= "table" then error("kv.open: options must be a table", 2) end
  return setmetatable({ prefix = name .. "\0", persist = o and o.persist or false, name = name }, NS)
end

local function key_of(ns, key)
  if type(key) ~= "string" and type(key) ~= "number" then
    error("kv: key must be a string or a number, got " .. type(key), 3)
  end
  return ns.prefix .. tostring(key)
end

-- store:get(key [, default]) -> value | default
function NS:get(key, default)
  local v, is_json = raw.get(key_of(self, key))
  if v == nil then return default end
  if is_json then
    local d, err = json.decode(v)
    if d == nil then error("kv " .. self.name .. "/" .. tostring(key) .. ": " .. err, 2) end
    return d
  end
  return v
end

-- store:set(key, value) -> true | nil, err, name; value nil deletes
function NS:set(key, value)
  local k = key_of(self, key)
  if value == nil then
    raw.delete(k)
    return true
  end
  if type(value) == "string" then return raw.set(k, value, false, self.persist) end
  local text, err, name = json.encode(value)
  if not text then return nil, err, name end
  return raw.set(k, text, true, self.persist)
end

-- store:delete(key) -> whether there was such a key
function NS:delete(key)
  return raw.delete(key_of(self, key))
end

-- store:incr(key [, by = 1]) -> the new number
function NS:incr(key, by)
  local v = self:get(key, 0)
  if type(v) ~= "number" then error("kv incr: " .. tostring(key) .. " holds a " .. type(v), 2) end
  v = v + (by or 1)
  assert(self:set(key, v))
  return v
end

-- store:keys([prefix]) -> sorted list of the namespace's keys
function NS:keys(prefix)
  local list = raw.keys(self.prefix .. (prefix or ""))
  local n = #self.prefix
  for i, k in ipairs(list) do list[i] = k:sub(n + 1) end
  return list
end

-- store:clear() -> how many entries went
function NS:clear()
  local list = raw.keys(self.prefix)
  for _, k in ipairs(list) do raw.delete(k) end
  return #list
end

-- kv.count() -> entries in the whole store
M.count = raw.count

return M
