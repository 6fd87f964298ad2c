-- edge_bridge.lua — edge -> cloud bridge with topic rewriting and offline
-- buffering.
--
-- Local devices publish to this edge engine (its MQTT listener). Their
-- readings go to the cloud broker (CLOUD_BROKER, default
-- tcp://127.0.0.1:1884) under this site's name (SITE, default "edge-1"):
--   sensors/<room>/temperature -> site/<SITE>/<room>/temp   (a level map)
--   anything else under sensors/ -> edge/<SITE>/sensors/... (the prefix)
-- While the cloud is unreachable, QoS 1 readings are buffered (up to
-- 10000, and in <data-dir>/upstream.db when the engine has a data
-- directory, so a restart keeps them) and sent in order once it is back.
-- Commands the cloud sends to edge/<SITE>/commands/... come back to local
-- devices as local/commands/....
local mq = require "mqrouter"

local SITE = os.getenv("SITE") or "edge-1"

local cloud = mq.upstream{
  name = "cloud",
  broker = os.getenv("CLOUD_BROKER") or "tcp://127.0.0.1:1884",
  client_id = "mqrouter-" .. SITE,
  prefix = "edge/" .. SITE .. "/",
  map = { { "sensors/+/temperature", "site/" .. SITE .. "/+/temp" } },
  max_buffered = 10000,
  reconnect = { initial = 0.2, max = 10 },
}

mq.route("sensors/#", function(msg)
  if msg.origin == "session" then return end -- not what came from the cloud
  local ok, err = cloud:publish(msg.topic, msg.payload, { qos = 1 })
  if not ok then mq.log.warn("cloud buffer full, reading dropped:", err) end
end)

cloud:route("commands/#", function(msg)
  mq.publish("local/" .. msg.topic, msg.payload, { qos = 1 })
end)
