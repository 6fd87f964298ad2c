-- mqrouter.dedupe — drop repeats: remembers ids (a message id, a hash of
-- the payload...) for `window` seconds.
--
--   local dedupe = require "mqrouter.dedupe"
--   local seen = dedupe.new{ window = 300 }
--   mq.route("orders/#", function(msg)
--     local order = json.decode(msg.payload)
--     if seen:check(order.id) then return end     -- a repeat within 5 min
--     ...
--   end)
--
-- Time is mq.now(). At most max (100000) ids are remembered: past it the
-- oldest are forgotten early.
local mq = require "mqrouter"

local M = {}
local Dedupe = {}
Dedupe.__index = Dedupe

-- dedupe.new{ window = seconds, max = 100000 }
function M.new(o)
  if type(o) ~= "table" or type(o.window) ~= "number" or o.window <= 0 then
    error("dedupe.new: { window = seconds > 0 [, max = n] } expected", 2)
  end
  return setmetatable({ window = o.window, max = o.max or 100000, seen_at = {}, order = {},
    head = 1, n = 0, duplicates = 0 }, Dedupe)
end

function Dedupe:expire(now)
  local cut = now - self.window
  local order, seen = self.order, self.seen_at
  while self.head <= #order do
    local e = order[self.head]
    if e.t > cut and self.n <= self.max then break end
    if seen[e.id] == e.t then
      seen[e.id] = nil
      self.n = self.n - 1
    end
    order[self.head] = nil
    self.head = self.head + 1
  end
  if self.head > 1024 and self.head > #order / 2 then
    local o2 = {}
    for i = self.head, #order do o2[#o2 + 1] = order[i] end
    self.order, self.head = o2, 1
  end
end

-- d:check(id) -> true when id was seen within the window (a duplicate),
-- else false, and remembers it from now. The window runs from the first
-- sighting: repeats do not extend it.
function Dedupe:check(id)
  if id == nil then error("dedupe check: id expected", 2) end
  local now = mq.now()
  self:expire(now)
  if self.seen_at[id] then
    self.duplicates = self.duplicates + 1
    return true
  end
  self.seen_at[id] = now
  self.n = self.n + 1
  self.order[#self.order + 1] = { id = id, t = now }
  if self.n > self.max then self:expire(now) end
  return false
end

-- d:seen(id) -> whether id is remembered now (does not record it)
function Dedupe:seen(id)
  self:expire(mq.now())
  return self.seen_at[id] ~= nil
end

-- d:forget(id)
function Dedupe:forget(id)
  if self.seen_at[id] then
    self.seen_at[id] = nil
    self.n = self.n - 1
  end
end

-- d:stats() -> { size, duplicates }
function Dedupe:stats()
  self:expire(mq.now())
  return { size = self.n, duplicates = self.duplicates }
end

return M
