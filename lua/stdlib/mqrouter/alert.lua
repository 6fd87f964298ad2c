-- mqrouter.alert — alert rules over numeric readings: thresholds with
-- hysteresis, debounce ("above 30 for 60 s"), rate of change, missing data
-- ("no reading for 300 s"), escalation levels over time, de-duplication of
-- repeated alerts and recovery messages. Alerts are published as retained
-- JSON on a topic of your choice, one per key (a room, a device...).
--
--   local alert = require "mqrouter.alert"
--   local hot = alert.new{ name = "hot", above = 30, hysteresis = 2, hold = 60,
--                          topic = "alerts/{name}/{key}" }
--   hot:route("sensors/+/temperature", { key = "^sensors/([^/]+)/" })
--
-- Time is mq.now() and checks run on an mq.every timer (tick), so a fake
-- clock (mqrouter.testing) drives them. Misuse (unknown option, wrong type)
-- raises when the rule is made.
local mq = require "mqrouter"
local json = require "mqrouter.json"
local payload = require "mqrouter.payload"
local kv = require "mqrouter.kv"

local M = {}

local OPTIONS = { name = "string", topic = "string", above = "number", below = "number",
  hysteresis = "number", hold = "number", clear_hold = "number", rate = "table",
  missing = "number", expect = "table", escalate = "table", ["repeat"] = "number",
  recovery = "boolean", qos = "number", retain = "boolean", tick = "number",
  on_change = "function", log = "boolean", persist = "boolean" }

local Rule = {}
Rule.__index = Rule

local function check_opts(o)
  if type(o) ~= "table" then error("alert.new: options table expected", 3) end
  for k, v in pairs(o) do
    local want = OPTIONS[k]
    if not want then error("alert.new: unknown option '" .. tostring(k) .. "'", 3) end
    if type(v) ~= want then
      error(("alert.new: option '%s' must be a %s, got %s"):format(k, want, type(v)), 3)
    end
  end
  if not (o.above or o.below or o.rate or o.missing) then
    error("alert.new: give at least one of above, below, rate, missing", 3)
  end
  if o.rate and type(o.rate.max) ~= "number" then
    error("alert.new: rate = { max = n [, per = seconds] } needs max", 3)
  end
  for i, step in ipairs(o.escalate or {}) do
    if type(step) ~= "table" or type(step.level) ~= "string" or type(step.after or 0) ~= "number" then
      error(("alert.new: escalate[%d] must be { after = seconds, level = \"name\" }"):format(i), 3)
    end
  end
end

-- alert.new(opts) -> rule. Options:
--   name        the rule's name, in the JSON and topic ("alert")
--   topic       where alerts go; {name}, {key}, {kind}, {level} are
--               replaced ("alerts/{name}/{key}")
--   above, below  threshold: fires when a reading is > above or < below
--   hysteresis  clears only once the reading is back past the threshold
--               by this much (0)
--   hold        a threshold or rate condition must hold this many seconds
--               before firing (0)
--   clear_hold  ... and be gone this many seconds before resolving (0)
--   rate        { max = n, per = s }: fires when |change| per s seconds
--               between two readings exceeds max (per = 1)
--   missing     fires when a key had no reading for this many seconds
--   expect      keys watched for missing data from the start
--   escalate    { { after = 0, level = "warning" }, { after = 600, level =
--               "critical" } }: the level rises while the alert lasts
--   repeat      re-publish a firing alert every this many seconds
--               (otherwise each level is published once: de-duplicated)
--   recovery    publish a "resolved" message when it ends (true); false
--               clears the retained alert instead
--   qos, retain of alert messages (1, true)
--   tick        how often timers check hold, missing data, escalation (1 s)
--   on_change   function(event) called for every message published
--   persist     keep firing alerts in SQLite too (see below)
-- Firing alerts are kept in mqrouter.kv under the rule's name: the rule
-- of the same name in the rules that replace these at a reload takes them
-- over (with persist = true, a restart too), so the next reading resolves
-- them instead of leaving a stale retained alert.
function M.new(o)
  check_opts(o)
  local r = setmetatable({}, Rule)
  r.name = o.name or "alert"
  r.topic = o.topic or "alerts/{name}/{key}"
  r.o = o
  r.levels = o.escalate or { { after = 0, level = "alert" } }
  table.sort(r.levels, function(a, b) return (a.after or 0) < (b.after or 0) end)
  r.keys = {} -- key -> { last_value, last_time, kinds = { kind -> state } }
  local t0 = mq.now()
  for _, k in ipairs(o.expect or {}) do r.keys[k] = { last_time = t0, kinds = {} } end
  -- firing alerts are kept in mqrouter.kv, so the rule that replaces this
  -- one at a reload resolves them (or escalates them) instead of leaving
  -- a stale retained alert behind
  r.saved = kv.open("mqrouter.alert/" .. r.name, { persist = o.persist })
  r:restore(t0)
  r.timer = mq.every(o.tick or 1, function() r:check() end)
  r.suppressed = 0
  return r
end

local function fill(template, vars)
  return (template:gsub("{(%w+)}", function(k) return vars[k] ~= nil and tostring(vars[k]) or "{" .. k .. "}" end))
end

function Rule:publish(key, kind, s, state, now)
  local level = self.levels[s.level or 1].level
  local ev = { alert = self.name, key = key, kind = kind, state = state, level = level,
    value = s.value, since = s.since, time = now, count = s.count }
  if kind == "threshold" then ev.threshold = s.threshold end
  if kind == "rate" then ev.rate = s.value end
  local topic = fill(self.topic, { name = self.name, key = key, kind = kind, level = level })
  local qos = self.o.qos or 1
  local retain = self.o.retain ~= false
  if state == "resolved" and self.o.recovery == false then
    mq.publish(topic, "", { qos = qos, retain = true })
  else
    mq.publish(topic, assert(json.encode(ev)), { qos = qos, retain = retain })
  end
  if self.o.log ~= false then
    mq.log(state == "resolved" and "info" or "warn", ("alert %s %s %s %s: %s (%s)"):format(
      self.name, key, kind, state, kind == "missing" and "no reading" or tostring(s.value), level))
  end
  if self.o.on_change then self.o.on_change(ev) end
  s.last_notify = now
  self:save(key, kind, s)
end

-- Firing state of (key, kind) into kv, or out of it once resolved.
function Rule:save(key, kind, s)
  local id = kind .. "/" .. key
  if s.active then
    self.saved:set(id, { key = key, kind = kind, since = s.since, level = s.level, count = s.count,
      value = s.value, threshold = s.threshold, last_notify = s.last_notify })
  else
    self.saved:delete(id)
  end
end

-- Takes over the firing alerts a previous rule of this name left in kv.
-- Their keys count as seen at t0 (for missing data).
function Rule:restore(t0)
  for _, id in ipairs(self.saved:keys()) do
    local v = self.saved:get(id)
    if type(v) == "table" and type(v.key) == "string" and type(v.kind) == "string" then
      local k = self.keys[v.key]
      if not k then
        k = { last_time = t0, kinds = {} }
        self.keys[v.key] = k
      end
      k.kinds[v.kind] = { active = true, cond = true, since = v.since, count = v.count or 0,
        level = math.min(v.level or 1, #self.levels), value = v.value, threshold = v.threshold,
        last_notify = v.last_notify or t0 }
      if v.kind == "missing" then k.kinds[v.kind].cond = true end
    end
  end
end

-- Moves one condition of one key: cond is whether it holds now.
function Rule:step(key, kind, cond, value, now, extra)
  local k = self.keys[key]
  local s = k.kinds[kind]
  if not s then
    s = { active = false, count = 0 }
    k.kinds[kind] = s
  end
  s.cond = cond
  if value ~= nil then s.value = value end
  if extra then s.threshold = extra end
  if not s.active then
    if cond then
      s.pending = s.pending or now
      if kind == "missing" or now - s.pending >= (self.o.hold or 0) then
        s.active, s.since, s.level, s.count, s.cleared = true, now, 1, 1, nil
        self:escalate(key, kind, s, now, true)
      end
    else
      s.pending = nil
    end
  else
    if cond then
      s.cleared = nil
      if value ~= nil then
        s.count = s.count + 1
        self.suppressed = self.suppressed + 1
      end
    else
      s.cleared = s.cleared or now
      if kind == "missing" or now - s.cleared >= (self.o.clear_hold or 0) then
        s.active, s.pending, s.cleared = false, nil, nil
        self:publish(key, kind, s, "resolved", now)
      end
    end
  end
end

-- Raises the level when the alert has lasted long enough; publishes a
-- firing alert on a new level (or when repeat is due).
function Rule:escalate(key, kind, s, now, first)
  local lvl = 1
  for i, step in ipairs(self.levels) do
    if now - s.since >= (step.after or 0) then lvl = i end
  end
  if first or lvl > s.level then
    s.level = lvl
    self:publish(key, kind, s, "firing", now)
  elseif self.o["repeat"] and now - s.last_notify >= self.o["repeat"] then
    self:publish(key, kind, s, "firing", now)
  end
end

-- rule:feed(key, value [, time]) — one reading.
function Rule:feed(key, value, now)
  if type(value) ~= "number" then error("alert feed: value must be a number", 2) end
  key = tostring(key)
  now = now or mq.now()
  local k = self.keys[key]
  if not k then
    k = { kinds = {} }
    self.keys[key] = k
  end
  local o = self.o
  if o.above or o.below then
    local active = k.kinds.threshold and k.kinds.threshold.active
    local h = active and (o.hysteresis or 0) or 0
    local cond = (o.above ~= nil and value > o.above - h) or (o.below ~= nil and value < o.below + h)
    local thr = (o.above ~= nil and value > o.above - h) and o.above or o.below
    self:step(key, "threshold", cond, value, now, thr)
  end
  if o.rate and k.last_time and now > k.last_time then
    local per = o.rate.per or 1
    local rate = (value - k.last_value) / (now - k.last_time) * per
    self:step(key, "rate", math.abs(rate) > o.rate.max, rate, now)
  end
  if o.missing and k.kinds.missing then self:step(key, "missing", false, nil, now) end
  k.last_value, k.last_time = value, now
end

-- rule:check([now]) — what the tick does: holds that ran out, missing data,
-- escalation and repeats.
function Rule:check(now)
  now = now or mq.now()
  for key, k in pairs(self.keys) do
    for kind, s in pairs(k.kinds) do
      if s.active then
        if s.cond then self:escalate(key, kind, s, now, false)
        elseif s.cleared then self:step(key, kind, false, nil, now) end
      elseif s.cond and s.pending then
        self:step(key, kind, true, nil, now)
      end
    end
    if self.o.missing and k.last_time and now - k.last_time >= self.o.missing then
      local s = k.kinds.missing
      if not (s and s.active) then self:step(key, "missing", true, nil, now) end
    end
  end
end

-- rule:state(key) -> { kind = { active, level, since, value, count } } or nil
function Rule:state(key)
  local k = self.keys[tostring(key)]
  if not k then return nil end
  local out = {}
  for kind, s in pairs(k.kinds) do
    out[kind] = { active = s.active, level = s.active and self.levels[s.level].level or nil,
      since = s.since, value = s.value, count = s.count }
  end
  return out
end

-- rule:route(filter [, { key = pattern | fn, field = "json.path" }]) —
-- feeds the rule from MQTT: key is a pattern whose first capture of the
-- topic names the key (default: the whole topic) or function(msg); field
-- reads the number from a JSON payload. A payload that is not a number is
-- an error of the route (logged, counted).
function Rule:route(filter, o)
  o = o or {}
  local keyf = o.key
  return mq.route(filter, function(msg)
    local key = msg.topic
    if type(keyf) == "string" then key = msg.topic:match(keyf) or msg.topic
    elseif type(keyf) == "function" then key = keyf(msg) end
    local v, err = payload.number(msg.payload, o.field)
    if v == nil then error(err .. " on " .. msg.topic, 0) end
    self:feed(key, v)
  end)
end

function Rule:stop()
  self.timer:stop()
end

return M
