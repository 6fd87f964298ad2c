-- mqrouter.testing — a kit for testing your own rules from busted: load a
-- rules file into a real engine with a fake clock, feed it messages, move
-- time forward, and assert on what the rules published, enqueued and
-- logged. Runs outside the sandbox, in the busted process, on top of the
-- host module (build/lua/mqrouter.so on LUA_CPATH, lua/stdlib on LUA_PATH).
--
--   local t = require "mqrouter.testing"
--   local h = t.load("rules.lua")                  -- fake clock by default
--   h:publish("sensors/room1/temperature", "31")
--   h:advance(60)                                  -- timers fire on the way
--   assert.are.equal(1, #h:published("alerts/#"))
--   h:close()
local mqrouter = require "mqrouter"

local M = {}

local Harness = {}
Harness.__index = Harness

local function matches(filter, topic)
  if filter == nil or filter == "#" then return topic:sub(1, 1) ~= "$" end
  local fl, tl = {}, {}
  for l in (filter .. "/"):gmatch("([^/]*)/") do fl[#fl + 1] = l end
  for l in (topic .. "/"):gmatch("([^/]*)/") do tl[#tl + 1] = l end
  if (fl[1] == "+" or fl[1] == "#") and topic:sub(1, 1) == "$" then return false end
  for i, f in ipairs(fl) do
    if f == "#" then return true end
    if tl[i] == nil then return false end
    if f ~= "+" and f ~= tl[i] then return false end
  end
  return #fl == #tl
end
M.matches = matches

local msg_mt = {
  __index = function(m, k)
    if k == "json" then
      local ok, cjson = pcall(require, "cjson")
      if not ok then return nil end
      local ok2, v = pcall(cjson.decode, m.payload)
      return ok2 and v or nil
    end
  end,
}

local function new(opts)
  opts = opts or {}
  local clock = opts.clock or "fake"
  mqrouter.set_log_level(opts.log_level or "info")
  mqrouter.capture_logs(true, opts.echo_logs)
  local e, err = mqrouter.engine{ data_dir = opts.data_dir or "", clock = clock,
    start_time = opts.start_time, budget_ms = opts.budget_ms, listen = opts.listen,
    fake_sinks = opts.fake_sinks }
  if not e then error("testing: cannot create an engine: " .. tostring(err), 3) end
  local h = setmetatable({ engine = e, clock = clock, log_lines = {}, opts = opts }, Harness)
  h.cap = e:capture("#")
  h.sys = e:capture("$mqrouter/#")
  return h
end

-- testing.load(path [, opts]) -> harness. opts: clock = "fake" (default)
-- or "real"; start_time (seconds since the epoch, default now); data_dir
-- ("" = in memory, the default); budget_ms; log_level (the lowest level
-- captured, "info" by default: it is the process's level while the harness
-- runs); echo_logs (copy log lines to stderr too); fake_sinks (mq.file,
-- mq.http, mq.redis and mq.pg make fakes that record their calls and
-- answer at once: h:sink_calls, h:fail_sink). A script that fails to load
-- raises with its error.
function M.load(path, opts)
  local h = new(opts)
  local ok, err = h.engine:load_file(path)
  if not ok then
    h:close()
    error("testing: " .. path .. " failed to load: " .. tostring(err), 2)
  end
  h:settle()
  return h
end

-- testing.load_string(code [, opts]) -> harness (name: opts.name or "rules")
function M.load_string(code, opts)
  local h = new(opts)
  local ok, err = h.engine:load(code, opts and opts.name or "rules")
  if not ok then
    h:close()
    error("testing: rules failed to load: " .. tostring(err), 2)
  end
  h:settle()
  return h
end

-- Lets work queued for later loop turns (queue consumers) run.
function Harness:settle()
  for _ = 1, 4 do self.engine:step() end
end

-- h:publish(topic, payload [, opts]) -> true | nil, err: as a C host would
-- (msg.origin "c"); opts: qos, retain, properties.
function Harness:publish(topic, payload, opts)
  local ok, err, name = self.engine:publish(topic, payload, opts)
  self:settle()
  return ok, err, name
end

-- h:publish_json(topic, value [, opts])
function Harness:publish_json(topic, value, opts)
  return self:publish(topic, require("cjson").encode(value), opts)
end

-- h:advance(seconds) -> timer calls: moves the fake clock, firing timers
-- that fall due on the way, in order.
function Harness:advance(s)
  if self.clock ~= "fake" then error("testing: advance needs clock = \"fake\"", 2) end
  local n = self.engine:advance(s)
  self:settle()
  return n
end

-- h:run(seconds): runs the real loop (sockets, queue retries).
function Harness:run(s)
  self.engine:run(s)
end

-- h:run_until(pred [, seconds = 2]) -> pred()'s last value
function Harness:run_until(pred, s)
  return self.engine:run_until(pred, s or 2)
end

-- h:now() -> the engine's clock (seconds since the epoch)
function Harness:now()
  return self.engine:now()
end

-- h:published([filter [, { all = true }]]) -> messages the rules (not the
-- test) published since load or the last clear, oldest first, each
-- { topic, payload, qos, retain, properties, origin, source, time } and
-- .json (the payload decoded, or nil). all = true includes the test's own.
function Harness:published(filter, o)
  local out = {}
  local all = o and o.all
  local list = self.cap:messages()
  if filter and filter:sub(1, 1) == "$" then list = self.sys:messages() end
  for _, m in ipairs(list) do
    if (all or m.origin ~= "c") and matches(filter, m.topic) then
      out[#out + 1] = setmetatable(m, msg_mt)
    end
  end
  return out
end

-- h:last(filter) -> the last such message, or nil
function Harness:last(filter)
  local list = self:published(filter)
  return list[#list]
end

-- h:payloads(filter) -> their payloads, as a list
function Harness:payloads(filter)
  local out = {}
  for i, m in ipairs(self:published(filter)) do out[i] = m.payload end
  return out
end

-- h:clear(): forget what was published (and logged) so far
function Harness:clear()
  self.cap:clear()
  self.sys:clear()
  self:logs()
  self.log_lines = {}
end

-- h:logs([pattern]) -> the log lines since load (or clear) that contain
-- pattern (a Lua pattern), e.g. h:logs("ERROR")
function Harness:logs(pattern)
  for _, l in ipairs(mqrouter.logs()) do self.log_lines[#self.log_lines + 1] = l end
  local out = {}
  for _, l in ipairs(self.log_lines) do
    if not pattern or l:find(pattern) then out[#out + 1] = l end
  end
  return out
end

-- h:sink_calls(name) -> the calls of fake sink name (fake_sinks = true),
-- oldest first, each { method = "post", args = { ... } }
function Harness:sink_calls(name)
  local json = require "mqrouter.json"
  local out = {}
  for _, m in ipairs(self.sys:messages()) do
    if m.topic == "$mqrouter/test/sinks/" .. name then out[#out + 1] = json.decode(m.payload) end
  end
  return out
end

-- h:fail_sink(name [, { name = "ETIMEDOUT", kind = "retry", times = n }]):
-- the next calls of fake sink name fail (all of them without times) with
-- nil, "ENAME: told to fail", ENAME, kind; h:fail_sink(name, false) ends it.
function Harness:fail_sink(name, how)
  local json = require "mqrouter.json"
  self.engine:publish("$mqrouter/test/sinks/" .. name .. "/fail",
    how == false and "null" or json.encode(how or {}))
  self:settle()
end

-- h:queue_depth(name) -> messages waiting + in flight in queue name
function Harness:queue_depth(name)
  local s, err = self.engine:queue_stats(name)
  if not s then error("testing: queue_depth: " .. tostring(err), 2) end
  return s.depth
end

-- h:queue_stats(name) -> the queue's q:stats() table
function Harness:queue_stats(name)
  return self.engine:queue_stats(name)
end

-- h:stats() -> the engine's mq.stats()
function Harness:stats()
  return self.engine:stats()
end

-- h:reload() -> true | nil, err: reloads the file (state in mqrouter.kv stays)
function Harness:reload()
  local ok, err = self.engine:reload()
  self:settle()
  return ok, err
end

function Harness:close()
  if self.closed then return end
  self.closed = true
  self:logs()
  self.engine:close()
  mqrouter.capture_logs(false)
end

return M
