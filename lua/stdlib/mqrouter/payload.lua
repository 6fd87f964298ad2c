-- mqrouter.payload — reading and writing payloads: numbers in text (plain,
-- with a unit, or a field of a JSON object), hex and base64, fixed-size
-- binary fields (integers and IEEE floats, either byte order), and zlib
-- compression when Debian's lua-zlib is installed.
--
--   local payload = require "mqrouter.payload"
--   payload.number("21.5 C")                     --> 21.5
--   payload.number('{"t": 21.5}', "t")           --> 21.5
--   payload.read("\1\2", "u16be")                --> 258, 3 (next offset)
--   payload.pack("u16le", 258)                   --> "\2\1"
--   payload.unpack(">u16 i8 f32", s)             --> {258, -1, 1.5}
--
-- Failures return nil, "EPAYLOAD: ...", "EPAYLOAD"; wrong argument types
-- and unknown field types raise.
local json = require "mqrouter.json"

local M = {}

local function fail(fmt, ...)
  return nil, "EPAYLOAD: " .. fmt:format(...), "EPAYLOAD"
end

-- number(text [, field]) -> number | nil, err, "EPAYLOAD"
-- Accepts "21.5", " 21.5\n", "21.5 C", "21,5" (decimal comma), "-3e2",
-- "0x1F"; with field, text is a JSON object and field a key (or a dotted
-- path "a.b") whose value is a number or a numeric string.
function M.number(text, field)
  if type(text) ~= "string" then
    error("bad argument #1 to number (string expected, got " .. type(text) .. ")", 2)
  end
  if field ~= nil then
    local v, err = json.decode(text)
    if v == nil then return fail("not a JSON object (%s)", err) end
    for part in tostring(field):gmatch("[^.]+") do
      if type(v) ~= "table" then return fail("no field '%s'", field) end
      v = v[part]
    end
    if type(v) == "number" then return v end -- JSON has no inf or nan
    if type(v) == "string" then return M.number(v) end
    return fail("field '%s' is not a number", field)
  end
  local s = text:match("^%s*(.-)%s*$")
  local n = tonumber(s)
  if n and n == n and n ~= math.huge and n ~= -math.huge then return n end
  if n then return fail("%q is not a finite number", text) end
  local num = s:match("^([-+]?%d*[.,]?%d+[eE][-+]?%d+)") or s:match("^([-+]?%d*[.,]?%d+)")
  if num then
    n = tonumber((num:gsub(",", ".")))
    local rest = s:sub(#num + 1)
    if n and (rest == "" or rest:match("^%s*[%a%%°\194\176][%w%%/°\194\176]*$")) then return n end
  end
  return fail("%q is not a number", #text > 40 and text:sub(1, 40) .. "..." or text)
end

-- hex(bytes) -> "0a1b..." ; from_hex(text) -> bytes | nil, err
function M.hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

function M.from_hex(h)
  h = h:gsub("%s", "")
  if #h % 2 == 1 or h:find("[^%x]") then return fail("not hex") end
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INV = {}
for i = 1, 64 do B64_INV[B64:byte(i)] = i - 1 end

-- base64(bytes) -> text ; from_base64(text) -> bytes | nil, err
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1) ..
      (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function M.from_base64(t)
  t = t:gsub("%s", ""):gsub("%-", "+"):gsub("_", "/")
  t = t:gsub("=+$", "")
  if #t % 4 == 1 then return fail("not base64") end
  local out = {}
  for i = 1, #t, 4 do
    local n, k = 0, 0
    for j = i, math.min(i + 3, #t) do
      local v = B64_INV[t:byte(j)]
      if not v then return fail("not base64") end
      n = n * 64 + v
      k = k + 1
    end
    for _ = k + 1, 4 do n = n * 64 end
    local bytes = string.char(math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    out[#out + 1] = bytes:sub(1, k - 1)
  end
  return table.concat(out)
end

-- ---- binary fields ----

local SIZES = { u8 = 1, i8 = 1, u16 = 2, i16 = 2, u24 = 3, i24 = 3, u32 = 4, i32 = 4,
  f32 = 4, f64 = 8 }

local function parse_type(t)
  local base, order = t:match("^([uif]%d+)([lb]?e?)$")
  if not base or not SIZES[base] or (order ~= "" and order ~= "le" and order ~= "be") then
    error("unknown field type '" .. tostring(t) .. "' (u8, i16le, u32be, f32le, f64be, ...)", 3)
  end
  return base, order == "le" and "le" or "be"
end

local function decode_float(bytes, size)
  -- bytes: big-endian list
  local sign = bytes[1] >= 128 and -1 or 1
  local ebits, mbits = (size == 4) and 8 or 11, (size == 4) and 23 or 52
  local bits = {}
  for _, b in ipairs(bytes) do
    for k = 7, 0, -1 do bits[#bits + 1] = math.floor(b / 2 ^ k) % 2 end
  end
  local e = 0
  for k = 2, 1 + ebits do e = e * 2 + bits[k] end
  local m = 0
  for k = 2 + ebits, 1 + ebits + mbits do m = m * 2 + bits[k] end
  local bias = 2 ^ (ebits - 1) - 1
  if e == 0 then
    if m == 0 then return sign * 0 end
    return sign * math.ldexp(m / 2 ^ mbits, 1 - bias)
  elseif e == 2 ^ ebits - 1 then
    if m == 0 then return sign * math.huge end
    return 0 / 0
  end
  return sign * math.ldexp(1 + m / 2 ^ mbits, e - bias)
end

-- read(bytes, type [, offset]) -> value, next_offset | nil, err
-- type: u8 i8 u16 i16 u24 i24 u32 i32 f32 f64, with "le" or "be" (default
-- big-endian): "u16le", "f32be".
function M.read(s, t, offset)
  offset = offset or 1
  local base, order = parse_type(t)
  local size = SIZES[base]
  if offset < 1 or offset + size - 1 > #s then
    return fail("%s at byte %d needs %d bytes, payload has %d", t, offset, size, #s)
  end
  local bytes = { s:byte(offset, offset + size - 1) }
  if order == "le" then
    local r = {}
    for i = size, 1, -1 do r[#r + 1] = bytes[i] end
    bytes = r
  end
  local v
  if base:sub(1, 1) == "f" then
    v = decode_float(bytes, size)
  else
    v = 0
    for _, b in ipairs(bytes) do v = v * 256 + b end
    if base:sub(1, 1) == "i" and v >= 2 ^ (8 * size - 1) then v = v - 2 ^ (8 * size) end
  end
  return v, offset + size
end

local function encode_float(v, size)
  local ebits, mbits = (size == 4) and 8 or 11, (size == 4) and 23 or 52
  local bias = 2 ^ (ebits - 1) - 1
  local sign = (v < 0 or 1 / v < 0) and 1 or 0
  v = math.abs(v)
  local e, m
  if v ~= v then
    e, m = 2 ^ ebits - 1, 1
  elseif v == math.huge then
    e, m = 2 ^ ebits - 1, 0
  elseif v == 0 then
    e, m = 0, 0
  else
    local fr, ex = math.frexp(v) -- v = fr * 2^ex, 0.5 <= fr < 1
    e = ex - 1 + bias
    if e <= 0 then
      m = math.floor(v / 2 ^ (1 - bias) * 2 ^ mbits + 0.5)
      e = 0
    elseif e >= 2 ^ ebits - 1 then
      e, m = 2 ^ ebits - 1, 0
    else
      m = math.floor((fr * 2 - 1) * 2 ^ mbits + 0.5)
      if m >= 2 ^ mbits then m, e = 0, e + 1 end
    end
  end
  -- sign | e | m as big-endian bytes
  local hi = sign * 2 ^ ebits + e -- the top 1 + ebits bits
  local total = hi * 2 ^ mbits + m -- exact for f32; f64 splits below
  local bytes = {}
  if size == 4 then
    for i = 4, 1, -1 do
      bytes[i] = total % 256
      total = math.floor(total / 256)
    end
  else
    local lo = m % 2 ^ 32
    local up = hi * 2 ^ 20 + math.floor(m / 2 ^ 32)
    for i = 8, 5, -1 do bytes[i] = lo % 256; lo = math.floor(lo / 256) end
    for i = 4, 1, -1 do bytes[i] = up % 256; up = math.floor(up / 256) end
  end
  return bytes
end

-- pack(type, value) -> bytes (raises when value does not fit)
function M.pack(t, v)
  local base, order = parse_type(t)
  local size = SIZES[base]
  if type(v) ~= "number" then error("bad argument #2 to pack (number expected)", 2) end
  local bytes
  if base:sub(1, 1) == "f" then
    bytes = encode_float(v, size)
  else
    local lo, hi = 0, 2 ^ (8 * size) - 1
    if base:sub(1, 1) == "i" then lo, hi = -2 ^ (8 * size - 1), 2 ^ (8 * size - 1) - 1 end
    if v ~= math.floor(v) or v < lo or v > hi then
      error(("value %s does not fit in %s"):format(tostring(v), t), 2)
    end
    if v < 0 then v = v + 2 ^ (8 * size) end
    bytes = {}
    for i = size, 1, -1 do
      bytes[i] = v % 256
      v = math.floor(v / 256)
    end
  end
  if order == "le" then
    local r = {}
    for i = size, 1, -1 do r[#r + 1] = bytes[i] end
    bytes = r
  end
  return string.char(unpack(bytes))
end

-- unpack(format, bytes [, offset]) -> list of values, next_offset | nil, err
-- format: space-separated field types; a leading "<" or ">" sets the byte
-- order of fields without their own suffix (">" default); "x" skips a byte.
function M.unpack(fmt, s, offset)
  local order = "be"
  local first = fmt:sub(1, 1)
  if first == "<" or first == ">" then
    order = first == "<" and "le" or "be"
    fmt = fmt:sub(2)
  end
  local out, pos = {}, offset or 1
  for f in fmt:gmatch("%S+") do
    if f == "x" then
      pos = pos + 1
    else
      local t = f:match("[lb]e$") and f or f .. order
      if f:match("^[ui]8$") then t = f end
      local v, nxt = M.read(s, t, pos)
      if v == nil then return nil, nxt, "EPAYLOAD" end
      out[#out + 1] = v
      pos = nxt
    end
  end
  return out, pos
end

-- ---- compression (Debian lua-zlib, when installed) ----

local has_zlib, zlib = pcall(require, "zlib")
M.compression = has_zlib and type(zlib) == "table" and zlib.deflate ~= nil

-- compress(bytes [, level]) -> zlib stream | nil, err
function M.compress(s, level)
  if not M.compression then return nil, "ENOTSUP: lua-zlib is not installed", "ENOTSUP" end
  local ok, out = pcall(function() return zlib.deflate(level or 6)(s, "finish") end)
  if not ok then return fail("cannot compress: %s", tostring(out)) end
  return out
end

-- decompress(bytes) -> bytes | nil, err (zlib or gzip stream)
function M.decompress(s)
  if not M.compression then return nil, "ENOTSUP: lua-zlib is not installed", "ENOTSUP" end
  local ok, out = pcall(function() return zlib.inflate()(s) end)
  if not ok then return fail("not a zlib/gzip stream (%s)", tostring(out)) end
  return out
end

return M
