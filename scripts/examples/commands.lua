-- commands.lua — command/response with timeouts.
--
-- An app asks for a command on app/commands/<device>/<name> (payload: JSON
-- arguments). The rules send { id, name, args } to devices/<device>/cmd and
-- wait for the device's answer { id, result } or { id, error } on
-- devices/<device>/cmd/response. The app gets one answer on
-- app/results/<device>/<name>: { ok = true, result = ... }, or { ok =
-- false, error = "..." } when the device failed or did not answer within
-- 5 seconds.
--
--   mosquitto_sub -t 'app/results/#' -v
--   mosquitto_pub -t app/commands/lamp1/reboot -m '{"delay":1}'
local mq = require "mqrouter"
local json = require "mqrouter.json"
local device = require "mqrouter.device"

local commands = device.commands{ timeout = 5 }

mq.route("app/commands/+/+", function(msg)
  local id, name = msg.topic:match("^app/commands/([^/]+)/([^/]+)$")
  local args = msg.payload ~= "" and json.decode_or_error(msg.payload, "arguments of " .. msg.topic) or nil
  commands:send(id, name, args, function(result, err)
    local answer = err and { ok = false, error = err } or { ok = true, result = result }
    mq.publish("app/results/" .. id .. "/" .. name, assert(json.encode(answer)), { qos = 1 })
  end)
end)
