-- webhook_alerts.lua — every alert goes to a webhook, nothing lost when the
-- far side is down.
--
-- Alerts arrive on alerts/<anything> (any payload). They wait in a durable
-- queue (kept in the engine's SQLite store across restarts and kill -9);
-- mq.deliver POSTs each one as JSON to WEBHOOK_URL. A 2xx acks it; a
-- timeout, a lost connection or a 5xx/429 retries it with backoff (5 s
-- doubling to 5 min, 20 attempts); a 4xx means the webhook will never take
-- it: it becomes a dead letter at once (the error is logged), published on
-- dlq/alerts and kept for `q:redrive()`; so does one that failed 20 times.
--
--   WEBHOOK_URL=https://hooks.example.com/mqrouter mqrouter webhook_alerts.lua
--   mosquitto_pub -q 1 -t alerts/boiler/pressure -m '{"bar": 3.4}'
local mq = require "mqrouter"

local url = os.getenv("WEBHOOK_URL") or "http://127.0.0.1:8081/alert"

local hooks = mq.http{ name = "alerts-webhook", timeout = 10,
  headers = { ["user-agent"] = "mqrouter" } }
local q = mq.queue("alerts-webhook", { durable = true, max_attempts = 20,
  backoff = { 5, 300 }, dead_letter = "dlq/alerts" })
mq.route("alerts/#", q)

mq.deliver(q, function(msg)
  return hooks:post(url, { topic = msg.topic, payload = msg.payload, time = msg.time })
end, { concurrency = 8 })

mq.on("sink_down", function(ev) mq.log.warn("sink down:", ev.name, ev.reason) end)
