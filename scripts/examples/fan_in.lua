-- fan_in.lua — fan-in of several brokers into one.
--
-- Each site broker in SITES ("name=uri,name=uri", default two local
-- brokers on ports 1885 and 1886) is read through its own session
-- (telemetry/#); every message is republished to the central broker
-- (CENTRAL_BROKER, default tcp://127.0.0.1:1884) as
-- sites/<name>/<original topic>, with its QoS and retain flag. A site that
-- is down does not stop the others; while the central broker is down,
-- messages are buffered (10000 per session).
local mq = require "mqrouter"

local central = mq.upstream{
  name = "central",
  broker = os.getenv("CENTRAL_BROKER") or "tcp://127.0.0.1:1884",
  prefix = "sites/",
  max_buffered = 10000,
  reconnect = { initial = 0.2, max = 10 },
}

local spec = os.getenv("SITES") or "a=tcp://127.0.0.1:1885,b=tcp://127.0.0.1:1886"
for name, uri in spec:gmatch("([^=,]+)=([^,]+)") do
  local site = mq.upstream{ name = "site-" .. name, broker = uri, reconnect = { initial = 0.2, max = 10 } }
  site:route("telemetry/#", function(msg)
    central:publish(name .. "/" .. msg.topic, msg.payload, { qos = msg.qos, retain = msg.retain })
  end, { qos = 1 })
end
