-- telemetry_summary.lua — aggregation of telemetry into 1-minute summaries.
--
-- Devices publish power readings (watts, plain numbers) on
-- telemetry/<device>/power. Every clock minute each device that sent
-- something gets one retained JSON summary on summary/<device>/1m:
-- { key, start, stop, count, min, max, avg, p95 }. A reading that is not a
-- number is counted as an error of the route and left out.
--
--   mosquitto_sub -t 'summary/#' -v
--   mosquitto_pub -t telemetry/pump1/power -m 1200
local window = require "mqrouter.window"

local minute = window.tumbling{
  size = 60,
  stats = { "count", "min", "max", "avg", "p95" },
  publish = "summary/{key}/1m",
  retain = true,
}
minute:route("telemetry/+/power", { key = "^telemetry/([^/]+)/" })
