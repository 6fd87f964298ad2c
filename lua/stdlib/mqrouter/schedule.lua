-- mqrouter.schedule — cron-like timers: run a function at the minutes a
-- cron expression names.
--
--   local schedule = require "mqrouter.schedule"
--   schedule.cron("*/15 8-18 * * mon-fri", function(t)
--     mq.publish("reports/tick", os.date("!%H:%M", t))
--   end)
--
-- Expressions: five fields "minute hour day-of-month month day-of-week"
-- (or six with seconds first), each "*", a number, a range "a-b", a list
-- "a,b,c", a step "*/n" or "a-b/n" or "a/n"; months jan..dec and days
-- sun..sat by name, day-of-week 0..7 (0 and 7 are Sunday). As in cron, when
-- both day fields are restricted a day matching either runs. Macros:
-- @yearly, @monthly, @weekly, @daily, @hourly. Times are UTC unless the
-- option localtime = true. Time is mq.now() and the job waits on mq.after,
-- so a fake clock drives it. A bad expression raises.
local mq = require "mqrouter"

local M = {}

local NAMES = {
  month = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9,
    oct = 10, nov = 11, dec = 12 },
  dow = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 },
}
local FIELDS = {
  { name = "second", lo = 0, hi = 59 },
  { name = "minute", lo = 0, hi = 59 },
  { name = "hour", lo = 0, hi = 23 },
  { name = "day", lo = 1, hi = 31 },
  { name = "month", lo = 1, hi = 12, names = NAMES.month },
  { name = "dow", lo = 0, hi = 7, names = NAMES.dow },
}
local MACROS = { ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *",
  ["@monthly"] = "0 0 1 * *", ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *",
  ["@midnight"] = "0 0 * * *", ["@hourly"] = "0 * * * *" }

local function value(f, s)
  local n = tonumber(s)
  if not n and f.names then n = f.names[s:lower()] end
  if not n or n ~= math.floor(n) or n < f.lo or n > f.hi then
    return nil, ("bad %s '%s' (%d-%d)"):format(f.name, s, f.lo, f.hi)
  end
  return n
end

local function parse_field(f, text)
  local set, any = {}, text == "*" or text == "?"
  for part in text:gmatch("[^,]+") do
    local range, step = part:match("^([^/]+)/(%d+)$")
    range = range or part
    step = tonumber(step) or 1
    if step < 1 then return nil, "bad step in '" .. part .. "'" end
    local a, b
    if range == "*" or range == "?" then
      a, b = f.lo, f.hi
    else
      local x, y = range:match("^(%w+)-(%w+)$")
      local err
      if x then
        a, err = value(f, x)
        if not a then return nil, err end
        b, err = value(f, y)
        if not b then return nil, err end
        if b < a then return nil, "bad range '" .. range .. "'" end
      else
        a, err = value(f, range)
        if not a then return nil, err end
        b = part:find("/") and f.hi or a
      end
    end
    for v = a, b, step do set[v] = true end
  end
  if f.name == "dow" and set[7] then set[0] = true end
  return set, nil, any
end

-- schedule.parse(expr) -> spec | nil, err
function M.parse(expr)
  if type(expr) ~= "string" then error("schedule.parse: string expected", 2) end
  expr = MACROS[expr:lower()] or expr
  local parts = {}
  for p in expr:gmatch("%S+") do parts[#parts + 1] = p end
  if #parts == 5 then table.insert(parts, 1, "0") end
  if #parts ~= 6 then return nil, "cron expression needs 5 or 6 fields: '" .. expr .. "'" end
  local spec = { expr = expr }
  for i, f in ipairs(FIELDS) do
    local set, err, any = parse_field(f, parts[i])
    if not set then return nil, err .. " in '" .. expr .. "'" end
    spec[f.name] = set
    spec[f.name .. "_any"] = any
  end
  return spec
end

local function spec_of(x)
  if type(x) == "table" then return x end
  local spec, err = M.parse(x)
  if not spec then error(err, 3) end
  return spec
end

local function fields(t, localtime)
  return os.date(localtime and "*t" or "!*t", t)
end

local function day_ok(spec, d)
  local dom, dow = spec.day[d.day], spec.dow[d.wday - 1]
  if spec.day_any then return dow end
  if spec.dow_any then return dom end
  return dom or dow
end

-- schedule.matches(expr | spec, time [, localtime]) -> boolean (to the second)
function M.matches(x, t, localtime)
  local spec = spec_of(x)
  local d = fields(math.floor(t), localtime)
  return spec.second[d.sec] and spec.minute[d.min] and spec.hour[d.hour] and
    spec.month[d.month] and day_ok(spec, d) or false
end

-- Seconds since the epoch of a broken-down time (UTC unless localtime).
local function epoch(d, localtime)
  if localtime then
    return os.time{ year = d.year, month = d.month, day = d.day, hour = d.hour, min = d.min,
      sec = d.sec, isdst = nil }
  end
  -- days from civil (proleptic Gregorian), then seconds
  local y, m = d.year, d.month
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d.day - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + d.hour * 3600 + d.min * 60 + d.sec
end

-- schedule.next(expr | spec, after [, localtime]) -> the first matching
-- second strictly after `after`, or nil when none within 5 years.
function M.next(x, after, localtime)
  local spec = spec_of(x)
  local t = math.floor(after) + 1
  local limit = t + 5 * 366 * 86400
  while t <= limit do
    local d = fields(t, localtime)
    if not spec.month[d.month] then
      d.month, d.day, d.hour, d.min, d.sec = d.month + 1, 1, 0, 0, 0
      if d.month > 12 then d.month, d.year = 1, d.year + 1 end
      t = epoch(d, localtime)
    elseif not day_ok(spec, d) then
      d.hour, d.min, d.sec = 0, 0, 0
      t = epoch(d, localtime) + 86400
    elseif not spec.hour[d.hour] then
      d.min, d.sec = 0, 0
      t = epoch(d, localtime) + 3600
    elseif not spec.minute[d.min] then
      d.sec = 0
      t = epoch(d, localtime) + 60
    elseif not spec.second[d.sec] then
      t = t + 1
    else
      return t
    end
  end
  return nil
end

local Job = {}
Job.__index = Job

-- schedule.cron(expr, fn [, { localtime = false }]) -> job: fn(t) runs at
-- every matching time t (seconds since the epoch). job:stop(),
-- job:next() (the next run's time), job.runs.
function M.cron(expr, fn, o)
  if type(fn) ~= "function" then error("schedule.cron: function expected", 2) end
  local spec = spec_of(expr)
  local job = setmetatable({ spec = spec, fn = fn, localtime = o and o.localtime, runs = 0 }, Job)
  job:arm()
  return job
end

function Job:arm()
  local now = mq.now()
  local at = M.next(self.spec, now, self.localtime)
  self.at = at
  if not at then return end
  self.timer = mq.after(at - now, function()
    self.runs = self.runs + 1
    self:arm() -- first, so an error in fn does not end the job
    self.fn(at)
  end)
end

function Job:next()
  return self.at
end

function Job:stop()
  if self.timer then self.timer:stop() end
  self.timer, self.at = nil, nil
end

return M
