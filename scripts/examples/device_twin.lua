-- device_twin.lua — a device twin with online/offline tracking.
--
-- A device reports its state as JSON on devices/<id>/reported; an app sets
-- what it wants on devices/<id>/desired/set. The rules keep both (in
-- mqrouter.kv, so a reload loses nothing), publish the whole twin retained
-- on devices/<id>/twin and what the device still has to change on
-- devices/<id>/delta (retained, "{}" once in sync). A device is online
-- while it sends anything under devices/<id>/; silent for 2 minutes, or
-- "offline" on devices/<id>/status (its last will), it is offline:
-- devices/<id>/online says "true" or "false" (retained). Deltas for a
-- device that is offline wait: they are retained, so it reads them when it
-- subscribes again, and the log says so.
--
--   mosquitto_sub -t 'devices/+/delta' -t 'devices/+/online' -v
--   mosquitto_pub -t devices/lamp1/reported -m '{"power":"off"}'
--   mosquitto_pub -t devices/lamp1/desired/set -m '{"power":"on"}'
local mq = require "mqrouter"
local device = require "mqrouter.device"

local presence = device.presence{ timeout = 120 }

device.twins{
  on_delta = function(id, delta)
    if next(delta) ~= nil and not presence:is_online(id) then
      mq.log.info("device", id, "is offline: its delta waits (retained)")
    end
  end,
}
