-- device_events_redis.lua — device events into a Redis stream, and each
-- device's last state into a hash, for dashboards and workers that read
-- Redis (XREAD, XREADGROUP).
--
-- Events arrive on devices/<id>/events (JSON or text). Each is XADDed to
-- the stream device-events (trimmed near 100 000 entries) with its device,
-- topic and payload, and the device's hash device:<id> gets the last event
-- and its time. Sent without waiting (pipelined): a failure is counted in
-- the sink's statistics and logged; for at least once, put a durable queue
-- in front as in webhook_alerts.lua.
--
--   REDIS_HOST=127.0.0.1 mqrouter device_events_redis.lua
--   redis-cli XREAD COUNT 10 STREAMS device-events 0
local mq = require "mqrouter"

local r = mq.redis{ name = "events-redis", host = os.getenv("REDIS_HOST") or "127.0.0.1" }

mq.route("devices/+/events", function(msg)
  local device = msg.topic:match("^devices/([^/]+)/")
  r:send{ "XADD", "device-events", "MAXLEN", "~", 100000, "*",
    "device", device, "topic", msg.topic, "payload", msg.payload }
  r:send{ "HSET", "device:" .. device, "last_event", msg.payload, "time", msg.time }
end)
