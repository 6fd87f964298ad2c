-- mqrouter.ratelimit — token buckets per key: at most `rate` events per
-- `per` seconds on average, with bursts up to `burst`.
--
--   local ratelimit = require "mqrouter.ratelimit"
--   local rl = ratelimit.new{ rate = 10, per = 1, burst = 20 }
--   mq.route("devices/+/data", function(msg)
--     if not rl:allow(msg.topic) then return end   -- dropped: over its rate
--     ...
--   end)
--
-- A bucket starts full and refills continuously from mq.now() (so a fake
-- clock drives it). At most max_keys (100000) buckets are kept: past it
-- full ones are forgotten first (a forgotten bucket is a full one).
local mq = require "mqrouter"

local M = {}
local Limiter = {}
Limiter.__index = Limiter

-- ratelimit.new{ rate, per = 1, burst = rate, max_keys = 100000 }
function M.new(o)
  if type(o) ~= "table" or type(o.rate) ~= "number" or o.rate <= 0 then
    error("ratelimit.new: { rate = n > 0 [, per = seconds, burst = n] } expected", 2)
  end
  local per = o.per or 1
  if type(per) ~= "number" or per <= 0 then error("ratelimit.new: per must be seconds > 0", 2) end
  local burst = o.burst or o.rate
  if type(burst) ~= "number" or burst < 1 then error("ratelimit.new: burst must be >= 1", 2) end
  return setmetatable({ fill = o.rate / per, burst = burst, buckets = {}, n = 0,
    max_keys = o.max_keys or 100000, allowed = 0, refused = 0 }, Limiter)
end

function Limiter:bucket(key, now)
  local b = self.buckets[key]
  if not b then
    if self.n >= self.max_keys then self:prune(now) end
    b = { tokens = self.burst, t = now }
    self.buckets[key] = b
    self.n = self.n + 1
  else
    local dt = now - b.t
    if dt > 0 then b.tokens = math.min(self.burst, b.tokens + dt * self.fill) end
    b.t = now
  end
  return b
end

-- Forgets buckets that are full again (no difference to a new one).
function Limiter:prune(now)
  for key, b in pairs(self.buckets) do
    if b.tokens + (now - b.t) * self.fill >= self.burst then
      self.buckets[key] = nil
      self.n = self.n - 1
    end
  end
  if self.n >= self.max_keys then -- still full of busy keys: start over
    self.buckets, self.n = {}, 0
  end
end

-- rl:allow(key [, cost = 1]) -> true | false, seconds until it would be
function Limiter:allow(key, cost)
  cost = cost or 1
  local now = mq.now()
  local b = self:bucket(key, now)
  if b.tokens + 1e-9 >= cost then
    b.tokens = b.tokens - cost
    self.allowed = self.allowed + 1
    return true
  end
  self.refused = self.refused + 1
  return false, (cost - b.tokens) / self.fill
end

-- rl:tokens(key) -> tokens available now
function Limiter:tokens(key)
  return self:bucket(key, mq.now()).tokens
end

-- rl:stats() -> { keys, allowed, refused }
function Limiter:stats()
  return { keys = self.n, allowed = self.allowed, refused = self.refused }
end

return M
