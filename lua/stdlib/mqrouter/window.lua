-- mqrouter.window — aggregates of numeric readings per key (a topic, a
-- device...): tumbling windows (fixed, back to back, aligned to multiples
-- of their size since the epoch: a 60 s window is a clock minute) and
-- sliding windows (the last N seconds). Statistics: count, sum, min, max,
-- avg, and percentiles "p50", "p95", "p99.9"... (linear interpolation
-- between the two nearest ranks, as numpy's default).
--
--   local window = require "mqrouter.window"
--   local w = window.tumbling{ size = 60, stats = { "count", "avg", "max", "p95" },
--                              publish = "summary/{key}" }
--   w:route("telemetry/+/power", { key = "^telemetry/([^/]+)/" })
--
-- Time is mq.now(); a tumbling window closes on an mq.after timer at its
-- end, so a fake clock drives it. Misuse raises.
local mq = require "mqrouter"
local json = require "mqrouter.json"
local payload = require "mqrouter.payload"

local M = {}

-- percentile(sorted_list, p) -> value (p in 0..100), nil for an empty list
function M.percentile(sorted, p)
  local n = #sorted
  if n == 0 then return nil end
  local pos = (n - 1) * p / 100 + 1
  local lo = math.floor(pos)
  local frac = pos - lo
  if lo >= n then return sorted[n] end
  return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo])
end

local function check_stats(list)
  for _, s in ipairs(list) do
    local ok = s == "count" or s == "sum" or s == "min" or s == "max" or s == "avg"
    local p = s:match("^p(%d+%.?%d*)$")
    if p and tonumber(p) <= 100 then ok = true end
    if not ok then error("window: unknown statistic '" .. tostring(s) .. "'", 4) end
  end
end

local function needs_values(list)
  for _, s in ipairs(list) do if s:sub(1, 1) == "p" then return true end end
  return false
end

-- stats(values, names) -> { count = , sum = , ... } over a list of numbers
function M.stats(values, names)
  names = names or { "count", "sum", "min", "max", "avg" }
  local n, sum, mn, mx = #values, 0, math.huge, -math.huge
  for _, v in ipairs(values) do
    sum = sum + v
    if v < mn then mn = v end
    if v > mx then mx = v end
  end
  local out, sorted = {}, nil
  for _, s in ipairs(names) do
    if s == "count" then out.count = n
    elseif s == "sum" then out.sum = sum
    elseif s == "min" then out.min = n > 0 and mn or nil
    elseif s == "max" then out.max = n > 0 and mx or nil
    elseif s == "avg" then out.avg = n > 0 and sum / n or nil
    else
      if not sorted then
        sorted = {}
        for i, v in ipairs(values) do sorted[i] = v end
        table.sort(sorted)
      end
      out[s] = M.percentile(sorted, tonumber(s:sub(2)))
    end
  end
  return out
end

local function fill(template, vars)
  return (template:gsub("{(%w+)}", function(k) return vars[k] ~= nil and tostring(vars[k]) or "{" .. k .. "}" end))
end

local function common(o, kind)
  if type(o) ~= "table" then error("window." .. kind .. ": options table expected", 3) end
  if type(o.size) ~= "number" or o.size <= 0 then
    error("window." .. kind .. ": size must be seconds > 0", 3)
  end
  o.stats = o.stats or { "count", "sum", "min", "max", "avg" }
  if type(o.stats) ~= "table" then error("window." .. kind .. ": stats must be a list", 3) end
  check_stats(o.stats)
  if o.publish ~= nil and type(o.publish) ~= "string" then
    error("window." .. kind .. ": publish must be a topic template", 3)
  end
  return o
end

-- Emits one result: on_close/on_update callback, then the publish topic.
local function emit(o, cb, key, result)
  if cb then cb(key, result) end
  if o.publish then
    mq.publish(fill(o.publish, { key = key }), assert(json.encode(result)),
      { qos = o.qos or 0, retain = o.retain or false })
  end
end

-- Feeds w from MQTT: key pattern/function and JSON field as alert:route.
local function route(w, filter, o)
  o = o or {}
  return mq.route(filter, function(msg)
    local key = msg.topic
    if type(o.key) == "string" then key = msg.topic:match(o.key) or msg.topic
    elseif type(o.key) == "function" then key = o.key(msg) end
    local v, err = payload.number(msg.payload, o.field)
    if v == nil then error(err .. " on " .. msg.topic, 0) end
    w:add(key, v)
  end)
end

-- ---- tumbling ----

local Tumbling = {}
Tumbling.__index = Tumbling

-- window.tumbling{ size, stats, publish, qos, retain, on_close, max_values }
-- on_close(key, result) gets { key, start, stop, count, ...stats } when a
-- window that had readings closes; publish (a topic template with {key})
-- sends the same as JSON. max_values (100000) bounds the readings kept
-- per key for percentiles; past it later readings count in count, sum,
-- min, max, avg only.
function M.tumbling(o)
  o = common(o, "tumbling")
  local w = setmetatable({ o = o, keys = {}, keep = needs_values(o.stats),
    max_values = o.max_values or 100000 }, Tumbling)
  w:arm()
  return w
end

function Tumbling:arm()
  local now = mq.now()
  local size = self.o.size
  local next_end = (math.floor(now / size + 1e-9) + 1) * size
  self.timer = mq.after(next_end - now, function()
    self:flush(next_end)
    self:arm()
  end)
end

local function new_acc(start, size)
  return { start = start, stop = start + size, n = 0, sum = 0, min = math.huge, max = -math.huge,
    values = {} }
end

function Tumbling:result(key, a)
  local r
  if self.keep then
    r = M.stats(a.values, self.o.stats)
  else
    r = {}
  end
  for _, s in ipairs(self.o.stats) do
    if s == "count" then r.count = a.n
    elseif s == "sum" then r.sum = a.sum
    elseif s == "min" then r.min = a.min
    elseif s == "max" then r.max = a.max
    elseif s == "avg" then r.avg = a.sum / a.n end
  end
  r.key, r.start, r.stop = key, a.start, a.stop
  return r
end

-- w:add(key, value [, time])
function Tumbling:add(key, v, now)
  if type(v) ~= "number" then error("window add: value must be a number", 2) end
  now = now or mq.now()
  local size = self.o.size
  local start = math.floor(now / size + 1e-9) * size
  local a = self.keys[key]
  if a and a.start ~= start then -- the timer has not closed it yet
    if a.n > 0 then emit(self.o, self.o.on_close, key, self:result(key, a)) end
    a = nil
  end
  if not a then
    a = new_acc(start, size)
    self.keys[key] = a
  end
  a.n = a.n + 1
  a.sum = a.sum + v
  if v < a.min then a.min = v end
  if v > a.max then a.max = v end
  if self.keep and #a.values < self.max_values then a.values[#a.values + 1] = v end
end

-- Closes every window ending at or before t.
function Tumbling:flush(t)
  local keys = {}
  for key, a in pairs(self.keys) do
    if a.stop <= t + 1e-9 then keys[#keys + 1] = key end
  end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  for _, key in ipairs(keys) do
    local a = self.keys[key]
    self.keys[key] = nil
    if a.n > 0 then emit(self.o, self.o.on_close, key, self:result(key, a)) end
  end
end

-- w:current(key) -> the statistics of the open window so far, or nil
function Tumbling:current(key)
  local a = self.keys[key]
  if not a or a.n == 0 then return nil end
  return self:result(key, a)
end

Tumbling.route = route

function Tumbling:stop()
  if self.timer then self.timer:stop() end
end

-- ---- sliding ----

local Sliding = {}
Sliding.__index = Sliding

-- window.sliding{ size, stats, every, publish, on_update, max_values }:
-- the readings of the last size seconds per key. With every = s, each
-- key's statistics are emitted (on_update(key, result), publish) every s
-- seconds while it has readings in the window.
function M.sliding(o)
  o = common(o, "sliding")
  local w = setmetatable({ o = o, keys = {}, max_values = o.max_values or 100000 }, Sliding)
  if o.every then
    w.timer = mq.every(o.every, function()
      local now = mq.now()
      local keys = {}
      for key in pairs(w.keys) do keys[#keys + 1] = key end
      table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
      for _, key in ipairs(keys) do
        local r = w:stats(key, now)
        if r then emit(o, o.on_update, key, r) end
      end
    end)
  end
  return w
end

-- Drops readings older than now - size (kept as parallel arrays with a head).
function Sliding:evict(k, now)
  local cut = now - self.o.size
  while k.head <= #k.t and k.t[k.head] <= cut do
    k.t[k.head], k.v[k.head] = nil, nil
    k.head = k.head + 1
  end
  if k.head > 1024 and k.head > #k.t / 2 then -- compact
    local t, v = {}, {}
    for i = k.head, #k.t do t[#t + 1], v[#v + 1] = k.t[i], k.v[i] end
    k.t, k.v, k.head = t, v, 1
  end
end

-- w:add(key, value [, time])
function Sliding:add(key, v, now)
  if type(v) ~= "number" then error("window add: value must be a number", 2) end
  now = now or mq.now()
  local k = self.keys[key]
  if not k then
    k = { t = {}, v = {}, head = 1 }
    self.keys[key] = k
  end
  self:evict(k, now)
  if #k.t - k.head + 1 >= self.max_values then -- full: the oldest goes
    k.t[k.head], k.v[k.head] = nil, nil
    k.head = k.head + 1
  end
  k.t[#k.t + 1], k.v[#k.v + 1] = now, v
end

-- w:stats(key [, now]) -> { key, start, stop, count, ... } over the last
-- size seconds, or nil when the key has no reading in it.
function Sliding:stats(key, now)
  now = now or mq.now()
  local k = self.keys[key]
  if not k then return nil end
  self:evict(k, now)
  if k.head > #k.t then
    self.keys[key] = nil
    return nil
  end
  local values = {}
  for i = k.head, #k.v do values[#values + 1] = k.v[i] end
  local r = M.stats(values, self.o.stats)
  r.key, r.start, r.stop = key, now - self.o.size, now
  return r
end

Sliding.route = route

function Sliding:stop()
  if self.timer then self.timer:stop() end
end

return M
