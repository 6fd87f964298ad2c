-- orders.lua — durable order processing with dead letters.
--
-- Orders arrive as JSON on orders/new: { "id": "o-1", "sku": "A", "qty": 2 }.
-- Each goes into a durable queue (kept in SQLite: a restart or kill -9 loses
-- none that was accepted); a repeated order id within 10 minutes is dropped.
-- The consumer accepts an order (orders/accepted/<id>) or:
--   - rejects one that cannot ever work (not JSON, no id, qty < 1): it
--     becomes a dead letter at once;
--   - fails on a temporary problem (here: the "backorder" SKU, stock not
--     there yet): it is retried with backoff, and after 3 attempts it is a
--     dead letter too.
-- Dead letters are published on dlq/orders with the reason and the
-- attempt count as MQTT v5 user properties, and stay in the queue's dead
-- letter store for q:redrive() once fixed. Queue timings (retries) follow
-- the real clock.
--
--   mosquitto_sub -t 'orders/accepted/#' -t 'dlq/#' -v
--   mosquitto_pub -t orders/new -m '{"id":"o-1","sku":"A","qty":2}'
local mq = require "mqrouter"
local json = require "mqrouter.json"
local dedupe = require "mqrouter.dedupe"

local orders = mq.queue("orders", {
  durable = true,
  max_attempts = 3,
  backoff = { 0.05, 1 },
  dead_letter = "dlq/orders",
})
local seen = dedupe.new{ window = 600 }

mq.route("orders/new", function(msg)
  local order = json.decode(msg.payload)
  if type(order) == "table" and order.id ~= nil and seen:check(tostring(order.id)) then
    mq.log.info("duplicate order", order.id, "dropped")
    return
  end
  assert(orders:publish(msg))
end)

orders:consume(function(msg)
  local order = json.decode(msg.payload)
  if type(order) ~= "table" or order.id == nil or type(order.qty) ~= "number" or order.qty < 1 then
    mq.log.warn("order refused:", msg.payload)
    msg:reject()
    return
  end
  if order.sku == "backorder" then
    error("sku " .. order.sku .. " out of stock (attempt " .. msg.attempts .. ")")
  end
  mq.publish("orders/accepted/" .. order.id, assert(json.encode(order)), { qos = 1 })
end)
