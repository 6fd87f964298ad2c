-- lua/host/message.lua: how a message reaches a Lua handler
-- (bindings/l_message.c), compiled into the binary and run once in every
-- rules state, outside the sandbox, as the chunk "=message".
--
-- A message is a plain table of copies (topic, payload, qos, retain, time,
-- origin, source) under one metatable: the JIT compiles make() with the
-- handler that reads the table. Raw v5 properties wait, until `properties`
-- is first read, in a weak-keyed table beside the message, so that pairs()
-- and json.encode see only the fields. Reading a field the message does not
-- have is an error, so a typo does not pass as nil.
--
-- Receives the metatable to fill, the weak table of raw properties, the
-- origin names by code and decode(raw) -> properties table; returns make
-- and deliver. Must not: set globals, or keep a message.
local mt, raw_props, origins, decode = ...
local setmetatable, rawset, error, tostring, format = setmetatable, rawset, error, tostring,
  string.format

local function make(topic, payload, qos, retain, time, origin, source, props)
  local m = setmetatable({ topic = topic, payload = payload, qos = qos, retain = retain,
    time = time, origin = origins[origin], source = source }, mt)
  if props then raw_props[m] = props end
  return m
end

local function deliver(fn, topic, payload, qos, retain, time, origin, source, props)
  return fn(make(topic, payload, qos, retain, time, origin, source, props))
end

-- a name the table does not hold: `properties` is decoded from the raw
-- bytes and kept in the table; anything else is a mistake worth naming
mt.__index = function(m, k)
  if k == 'properties' then
    local p = decode(raw_props[m])
    rawset(m, 'properties', p)
    return p
  end
  error("message has no field '" .. tostring(k) .. "'", 2)
end

mt.__tostring = function(m)
  return format('message(%s, %d bytes, qos %s%s)', tostring(m.topic), #tostring(m.payload),
    tostring(m.qos), m.retain and ', retained' or '')
end

return make, deliver
