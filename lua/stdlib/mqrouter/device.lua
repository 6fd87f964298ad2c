-- mqrouter.device — device helpers: twins (reported and desired state with
-- deltas), commands with a response or a timeout, and online/offline
-- tracking. State lives in mqrouter.kv, so it survives reloads.
--
--   local device = require "mqrouter.device"
--   local twins = device.twins{ prefix = "devices" }   -- devices/<id>/...
--   local cmds  = device.commands{ prefix = "devices", timeout = 5 }
--   local seen  = device.presence{ prefix = "devices", timeout = 120 }
--
-- Topics (prefix "devices", device id "lamp1"):
--   devices/lamp1/reported      device -> rules: its state, JSON object (merged)
--   devices/lamp1/desired/set   app -> rules: wanted state, JSON object (merged;
--                               a null value removes a key)
--   devices/lamp1/delta         rules -> device: desired values that differ
--                               from reported ({} once in sync), retained
--   devices/lamp1/twin          rules -> anyone: { reported, desired, delta,
--                               version }, retained
--   devices/lamp1/cmd           rules -> device: { id, name, args }
--   devices/lamp1/cmd/response  device -> rules: { id, result } or { id, error }
--   devices/lamp1/online        rules -> anyone: "true" / "false", retained
local mq = require "mqrouter"
local json = require "mqrouter.json"
local kv = require "mqrouter.kv"

local M = {}

local function check_prefix(o, what)
  if o ~= nil and type(o) ~= "table" then error("device." .. what .. ": options must be a table", 3) end
  o = o or {}
  local prefix = o.prefix or "devices"
  if type(prefix) ~= "string" or prefix == "" or prefix:find("[+#]") then
    error("device." .. what .. ": prefix must be a topic prefix without wildcards", 3)
  end
  return o, prefix
end

local function equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

-- delta(desired, reported) -> the desired values that differ (recursively
-- into objects), or nil when none do
function M.delta(desired, reported)
  local out
  for k, v in pairs(desired) do
    local r = type(reported) == "table" and reported[k] or nil
    local d
    if type(v) == "table" and type(r) == "table" and next(v) ~= nil and #v == 0 then
      d = M.delta(v, r)
    elseif not equal(v, r) then
      d = v
    end
    if d ~= nil then
      out = out or {}
      out[k] = d
    end
  end
  return out
end

-- merge(into, patch): patch's keys into `into`, recursively for objects;
-- json.null removes a key. Returns into.
function M.merge(into, patch)
  for k, v in pairs(patch) do
    if v == json.null then
      into[k] = nil
    elseif type(v) == "table" and next(v) ~= nil and #v == 0 and type(into[k]) == "table" then
      M.merge(into[k], v)
    else
      into[k] = v
    end
  end
  return into
end

-- ---- twins ----

local Twins = {}
Twins.__index = Twins

-- device.twins{ prefix = "devices", persist = false, on_delta = fn } ->
-- twins; routes <prefix>/+/reported and <prefix>/+/desired/set.
-- on_delta(id, delta, twin) runs whenever the delta changes.
function M.twins(o)
  local prefix
  o, prefix = check_prefix(o, "twins")
  local t = setmetatable({ prefix = prefix, o = o,
    store = kv.open("mqrouter.twin/" .. prefix, { persist = o.persist }) }, Twins)
  local pat = "^" .. prefix:gsub("%p", "%%%0") .. "/([^/]+)/"
  t.routes = {
    mq.route(prefix .. "/+/reported", function(msg)
      local v = json.decode_or_error(msg.payload, "reported state of " .. msg.topic)
      if type(v) ~= "table" or #v > 0 then error("reported state of " .. msg.topic .. " is not a JSON object", 0) end
      t:report(msg.topic:match(pat), v)
    end),
    mq.route(prefix .. "/+/desired/set", function(msg)
      local v = json.decode_or_error(msg.payload, "desired state of " .. msg.topic)
      if type(v) ~= "table" or #v > 0 then error("desired state of " .. msg.topic .. " is not a JSON object", 0) end
      t:desire(msg.topic:match(pat), v)
    end),
  }
  return t
end

-- twins:get(id) -> { reported, desired, delta, version }
function Twins:get(id)
  local tw = self.store:get(id)
  if type(tw) ~= "table" then tw = { version = 0 } end
  tw.reported = tw.reported or {}
  tw.desired = tw.desired or {}
  tw.delta = M.delta(tw.desired, tw.reported) or {}
  return tw
end

function Twins:save(id, tw, old_delta)
  tw.version = (tw.version or 0) + 1
  tw.delta = M.delta(tw.desired, tw.reported) or {}
  local enc = function(x) return next(x) == nil and "{}" or assert(json.encode(x)) end
  assert(self.store:set(id, { reported = tw.reported, desired = tw.desired, version = tw.version }))
  local base = self.prefix .. "/" .. id
  mq.publish(base .. "/twin", ('{"reported":%s,"desired":%s,"delta":%s,"version":%d}'):format(
    enc(tw.reported), enc(tw.desired), enc(tw.delta), tw.version), { retain = true, qos = 1 })
  if not equal(old_delta, tw.delta) then
    mq.publish(base .. "/delta", enc(tw.delta), { retain = true, qos = 1 })
    if self.o.on_delta then self.o.on_delta(id, tw.delta, tw) end
  end
  return tw
end

-- twins:report(id, state) -> twin: merges what the device reported
function Twins:report(id, state)
  local tw = self:get(id)
  local old = tw.delta
  M.merge(tw.reported, state)
  return self:save(id, tw, old)
end

-- twins:desire(id, state) -> twin: merges what is wanted
function Twins:desire(id, state)
  local tw = self:get(id)
  local old = tw.delta
  M.merge(tw.desired, state)
  return self:save(id, tw, old)
end

-- twins:remove(id)
function Twins:remove(id)
  self.store:delete(id)
  mq.publish(self.prefix .. "/" .. id .. "/twin", "", { retain = true })
  mq.publish(self.prefix .. "/" .. id .. "/delta", "", { retain = true })
end

-- twins:list() -> ids with a twin
function Twins:list()
  return self.store:keys()
end

-- ---- commands ----

local Commands = {}
Commands.__index = Commands

-- device.commands{ prefix = "devices", timeout = 10 } -> commands; routes
-- <prefix>/+/cmd/response.
function M.commands(o)
  local prefix
  o, prefix = check_prefix(o, "commands")
  local timeout = o.timeout or 10
  if type(timeout) ~= "number" or timeout <= 0 then error("device.commands: timeout must be seconds > 0", 2) end
  local c = setmetatable({ prefix = prefix, timeout = timeout, pending = {},
    ids = kv.open("mqrouter.command-ids"),
    sent = 0, answered = 0, timed_out = 0, late = 0 }, Commands)
  c.route = mq.route(prefix .. "/+/cmd/response", function(msg)
    local r = json.decode_or_error(msg.payload, "command response on " .. msg.topic)
    local p = type(r) == "table" and c.pending[tostring(r.id)]
    if not p then
      c.late = c.late + 1 -- after its timeout, or not ours
      return
    end
    c.pending[tostring(r.id)] = nil
    p.timer:stop()
    c.answered = c.answered + 1
    if r.error ~= nil and r.error ~= json.null then
      p.cb(nil, "EDEVICE: " .. tostring(r.error), "EDEVICE")
    else
      p.cb(r.result == json.null and nil or r.result)
    end
  end)
  return c
end

-- commands:send(id, name, args, callback [, { timeout }]) -> the request id.
-- callback(result) on a response, callback(nil, "EDEVICE: <error>",
-- "EDEVICE") when the device answered with an error, callback(nil,
-- "ETIMEDOUT: ...", "ETIMEDOUT") after the timeout (a later response is
-- ignored and counted as late).
function Commands:send(id, name, args, cb, o)
  if type(id) ~= "string" or type(name) ~= "string" then error("commands:send(id, name, args, callback)", 2) end
  if type(cb) ~= "function" then error("commands:send: callback function expected", 2) end
  -- the counter lives in mqrouter.kv: ids stay unique across reloads, so a
  -- late answer to a request of the old rules never matches a new one
  local rid = ("%s-%d"):format(name, self.ids:incr(self.prefix))
  local timeout = o and o.timeout or self.timeout
  local p = { cb = cb }
  self.pending[rid] = p
  p.timer = mq.after(timeout, function()
    if self.pending[rid] ~= p then return end
    self.pending[rid] = nil
    self.timed_out = self.timed_out + 1
    cb(nil, ("ETIMEDOUT: device %s did not answer %s within %g s"):format(id, name, timeout), "ETIMEDOUT")
  end)
  self.sent = self.sent + 1
  local req = { id = rid, name = name, args = args }
  local ok, err = mq.publish(self.prefix .. "/" .. id .. "/cmd", assert(json.encode(req)), { qos = 1 })
  if not ok then
    self.pending[rid] = nil
    p.timer:stop()
    error(err, 2)
  end
  return rid
end

-- commands:stats() -> { sent, answered, timed_out, late, pending }
function Commands:stats()
  local n = 0
  for _ in pairs(self.pending) do n = n + 1 end
  return { sent = self.sent, answered = self.answered, timed_out = self.timed_out,
    late = self.late, pending = n }
end

-- ---- presence ----

local Presence = {}
Presence.__index = Presence

-- device.presence{ prefix = "devices", timeout = 60, status = "status",
-- ignore = { ... }, on_change = fn } -> presence. A message on
-- <prefix>/<id>/<rest> marks the device online, unless rules published it
-- or <rest> is in ignore (default: what apps and rules send the device:
-- "desired/set", "delta", "twin", "online", "cmd"); persist keeps the
-- online set in SQLite (it is in mqrouter.kv across reloads anyway); no message for timeout seconds, or "offline" / "false" /
-- "0" on <prefix>/<id>/<status> (a last will), marks it offline. Changes
-- are published retained as "true"/"false" on <prefix>/<id>/online and
-- passed to on_change(id, online).
function M.presence(o)
  local prefix
  o, prefix = check_prefix(o, "presence")
  local timeout = o.timeout or 60
  local p = setmetatable({ prefix = prefix, timeout = timeout, o = o, status = o.status or "status",
    last = {}, online = {}, ignore = {} }, Presence)
  for _, sub in ipairs(o.ignore or { "desired/set", "delta", "twin", "online", "cmd" }) do
    p.ignore[sub] = true
  end
  local pat = "^" .. prefix:gsub("%p", "%%%0") .. "/([^/]+)/(.*)$"
  p.route = mq.route(prefix .. "/+/#", function(msg)
    if msg.origin == "lua" then return end -- what rules publish (our own online topic...)
    local id, rest = msg.topic:match(pat)
    if not id or p.ignore[rest] then return end
    if rest == p.status and (msg.payload == "offline" or msg.payload == "false" or msg.payload == "0") then
      p:set(id, false)
      return
    end
    p:seen(id)
  end)
  -- who is online is kept in mqrouter.kv: after a reload those devices
  -- count as seen at that moment (their timeout starts again)
  p.saved = kv.open("mqrouter.presence/" .. prefix, { persist = o.persist })
  local now = mq.now()
  for _, id in ipairs(p.saved:keys()) do
    p.online[id], p.last[id] = true, now
  end
  p.timer = mq.every(o.tick or math.min(1, timeout / 4), function() p:check() end)
  return p
end

function Presence:set(id, online)
  if (self.online[id] or false) == online then return end
  self.online[id] = online
  if online then self.saved:set(id, "1") else self.saved:delete(id) end
  mq.publish(self.prefix .. "/" .. id .. "/online", online and "true" or "false", { retain = true, qos = 1 })
  if self.o.on_change then self.o.on_change(id, online) end
end

-- presence:seen(id): a sign of life now
function Presence:seen(id)
  self.last[id] = mq.now()
  self:set(id, true)
end

function Presence:check()
  local now = mq.now()
  for id, t in pairs(self.last) do
    if self.online[id] and now - t >= self.timeout then self:set(id, false) end
  end
end

-- presence:is_online(id) -> boolean; presence:list() -> sorted online ids
function Presence:is_online(id)
  return self.online[id] == true
end

function Presence:list()
  local out = {}
  for id, on in pairs(self.online) do if on then out[#out + 1] = id end end
  table.sort(out)
  return out
end

return M
