-- rules.lua — the example from the README: temperature readings above a
-- threshold become alerts.
--
--   mosquitto_sub -t 'alerts/#' -v
--   mosquitto_pub -t sensors/room1/temperature -m 31
--
-- prints "alerts/room1/temperature {"room":"room1","value":31,"limit":30}".
-- A reading that is not a number (mosquitto_pub ... -m abc) makes the
-- handler fail: the error is logged with this file's line and counted on the
-- route, and the engine keeps going. Edit this file while mqrouter runs and
-- the new rules take over without losing a message.
local mq = require "mqrouter"

local LIMIT = 30

mq.route("sensors/+/temperature", function(msg)
  local room = msg.topic:match("^sensors/([^/]+)/")
  local value = tonumber(msg.payload)
  if not value then
    error(("reading %q on %s is not a number"):format(msg.payload, msg.topic))
  end
  if value > LIMIT then
    mq.publish("alerts/" .. room .. "/temperature",
      ('{"room":"%s","value":%s,"limit":%d}'):format(room, msg.payload, LIMIT),
      { qos = 1 })
  end
end)

mq.log.info("example rules loaded: alert above " .. LIMIT)
