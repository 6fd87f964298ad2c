-- mqrouter.json — JSON for rules, on lua-cjson (Debian lua-cjson), with
-- errors that say what and where instead of raising from deep inside cjson.
--
--   local json = require "mqrouter.json"
--   local t, err = json.decode(msg.payload)        -- nil, "EJSON: ...", "EJSON"
--   local s = json.encode({ temp = 21.5 })          -- '{"temp":21.5}'
--   local t = json.decode_msg(msg)                  -- error names the topic
--
-- Encoding: tables with keys 1..n are arrays (sparse ones with holes are
-- encoded with nulls), other tables objects; json.null stands for null both
-- ways; an empty table encodes as {} (json.array{} makes it []); numbers
-- keep up to 14 significant digits. Decoding nests at most 100 levels.
-- Failures (not JSON, a value JSON cannot hold) return nil, "EJSON: ...",
-- "EJSON"; a wrong argument type raises.
local cjson = require "cjson"

local M = {}

local codec = cjson.new()
codec.encode_sparse_array(true)
codec.encode_number_precision(14)
codec.decode_max_depth(100)
codec.encode_max_depth(100)
codec.encode_invalid_numbers(false)

M.null = codec.null

local array_mt = {}
M.array_mt = array_mt

-- Marks t (default: a new table) to encode as a JSON array even when empty.
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

local function fail(what)
  what = tostring(what):gsub("^[^:]*cjson[^:]*:%s*", "")
  return nil, "EJSON: " .. what, "EJSON"
end

-- Empty tables marked with array_mt become "[]": cjson has no marker of its
-- own in Debian's 2.1.0, so they are swapped for a sentinel string first.
local EMPTY = "\0mqrouter-empty-array\0"
local function mark(v, depth)
  if type(v) ~= "table" then return v end
  if depth > 100 then error("nesting deeper than 100 levels", 0) end
  if next(v) == nil then
    if getmetatable(v) == array_mt then return EMPTY end
    return v
  end
  local copy
  for k, x in pairs(v) do
    local y = mark(x, depth + 1)
    if y ~= x then
      copy = copy or {}
      copy[k] = y
    end
  end
  if not copy then return v end
  for k, x in pairs(v) do
    if copy[k] == nil then copy[k] = x end
  end
  return copy
end

-- encode(value) -> string | nil, err, "EJSON"
function M.encode(value)
  local ok, marked = pcall(mark, value, 0)
  if not ok then return fail(marked) end
  local ok2, s = pcall(codec.encode, marked)
  if not ok2 then return fail(s) end
  if marked ~= value or s:find(EMPTY, 1, true) then
    s = s:gsub('"\\u0000mqrouter%-empty%-array\\u0000"', "[]")
  end
  return s
end

-- decode(text) -> value | nil, err, "EJSON"
function M.decode(text)
  if type(text) ~= "string" then
    error("bad argument #1 to decode (string expected, got " .. type(text) .. ")", 2)
  end
  if text == "" then return nil, "EJSON: empty text", "EJSON" end
  local ok, v = pcall(codec.decode, text)
  if not ok then return fail(v) end
  return v
end

-- decode_msg(msg) -> value | nil, "EJSON: payload of <topic>: ...", "EJSON"
function M.decode_msg(msg)
  local v, err = M.decode(msg.payload)
  if v == nil then return nil, err:gsub("^EJSON: ", "EJSON: payload of " .. msg.topic .. ": "), "EJSON" end
  return v
end

-- decode_or_error(text [, what]) -> value; raises "what: EJSON: ..." (for
-- handlers where a bad payload should count as a handler error).
function M.decode_or_error(text, what)
  local v, err = M.decode(text)
  if v == nil then error((what and (what .. ": ") or "") .. err, 2) end
  return v
end

return M
