-- temperature_alerts.lua — temperature alerting with escalation.
--
-- Readings arrive on sensors/<room>/temperature (a number, or JSON with a
-- "value" field... here plain numbers). A room above 30 °C for a minute
-- raises a retained alert on alerts/temperature/<room>/threshold at level
-- "warning"; still hot ten minutes later it becomes "critical" and pages
-- the on-call topic; back at or below 28.5 °C (1.5 °C of hysteresis) it is
-- resolved with a recovery message. A room that sends nothing for five
-- minutes raises alerts/temperature/<room>/missing. Repeats of the same
-- alert are not published again (de-duplicated) except as a reminder every
-- 30 minutes.
--
--   mosquitto_sub -t 'alerts/#' -t 'pager/#' -v
--   mosquitto_pub -t sensors/lab/temperature -m 31
local mq = require "mqrouter"
local alert = require "mqrouter.alert"

local hot = alert.new{
  name = "temperature",
  topic = "alerts/temperature/{key}/{kind}",
  above = 30,
  hysteresis = 1.5,
  hold = 60,
  missing = 300,
  escalate = {
    { after = 0, level = "warning" },
    { after = 600, level = "critical" },
  },
  ["repeat"] = 1800,
  on_change = function(ev)
    if ev.level == "critical" and ev.state == "firing" then
      mq.publish("pager/oncall", ("%s is at %s since %s"):format(ev.key, tostring(ev.value),
        os.date("!%H:%M", ev.since)), { qos = 1 })
    end
  end,
}

hot:route("sensors/+/temperature", { key = "^sensors/([^/]+)/" })
