-- mqrouter.json — JSON for rules, on lua-cjson (Debian lua-cjson), with
-- errors that say what and where instead of raising from deep inside cjson.
--
--   local json = require "mqrouter.json"
--   local t, err = json.decode(msg.payload)        -- nil, "EJSON: ...", "EJSON"
--   local s = json.encode({ temp = 21.5 })          -- '{"temp":21.5}'
--   local t = json.decode_msg(msg)                  -- error names the topic
--
-- Encoding: tables with keys 1..n are arrays (holes become null, up to
-- twice as many slots as values), other tables objects with their keys
-- sorted, so equal values give equal text; json.null stands for null both
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

-- Tables are walked here rather than by cjson so that object keys come
-- out sorted: the same value always encodes to the same text (retained
-- messages compare equal, tests can match payloads). Scalars go through
-- cjson.
local encode_value

-- cjson writes "/" as "\/": valid, but topics read badly. The pair can
-- only come from that escape (a backslash is written "\\"), so it is
-- undone safely.
local function encode_string(v)
  return (codec.encode(v):gsub("\\/", "/"))
end

local function encode_table(t, depth, out)
  if depth > 100 then error("nesting deeper than 100 levels", 0) end
  local n, max, keys, all_int = 0, 0, {}, true
  for k in pairs(t) do
    n = n + 1
    if type(k) == "number" and k > 0 and k == math.floor(k) then
      if k > max then max = k end
    else
      all_int = false
      if type(k) ~= "string" and type(k) ~= "number" then
        error("cannot encode a table key of type " .. type(k), 0)
      end
    end
    keys[n] = k
  end
  if n == 0 then
    out[#out + 1] = getmetatable(t) == array_mt and "[]" or "{}"
  elseif all_int and max <= math.max(10, 2 * n) then
    out[#out + 1] = "["
    for i = 1, max do
      if i > 1 then out[#out + 1] = "," end
      local v = t[i]
      if v == nil then out[#out + 1] = "null" else encode_value(v, depth + 1, out) end
    end
    out[#out + 1] = "]"
  else
    if all_int then error("cannot encode a sparse array (keys up to " .. max .. ")", 0) end
    for i, k in ipairs(keys) do keys[i] = tostring(k) end
    table.sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = encode_string(k)
      out[#out + 1] = ":"
      local v = t[k]
      if v == nil then v = t[tonumber(k)] end
      encode_value(v, depth + 1, out)
    end
    out[#out + 1] = "}"
  end
end

encode_value = function(v, depth, out)
  if type(v) == "table" then
    encode_table(v, depth, out)
  elseif type(v) == "string" then
    out[#out + 1] = encode_string(v)
  else
    out[#out + 1] = codec.encode(v)
  end
end

-- encode(value) -> string | nil, err, "EJSON". Object keys are sorted.
function M.encode(value)
  local out = {}
  local ok, err = pcall(encode_value, value, 0, out)
  if not ok then return fail(err) end
  return table.concat(out)
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
