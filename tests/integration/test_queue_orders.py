#!/usr/bin/python3
"""Orders through a queue, end to end with real MQTT clients: every message
on orders/# goes into the durable `orders` queue (mq.route), a Lua consumer
accepts numeric orders and publishes them on, bad ones are retried and then
published as dead letters on dlq/orders with their original topic, reason
and attempt count as v5 user properties. Then a hot reload (SIGHUP) while
the old consumer holds deferred messages: the queue and its statistics stay,
the held messages reach the new consumer, and nothing is lost."""
import signal
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes  # noqa: F401 (paho v5 support)

from mqr_it import Workspace, free_port, wait

V1 = """
local mq = require "mqrouter"
local orders = mq.queue("orders", { durable = true, max_attempts = 3,
  backoff = { 0.05, 0.2 }, dead_letter = "dlq/orders" })
mq.route("orders/#", orders)
held = {}
orders:consume(function(msg)
  if msg.payload == "hold" then msg:defer(); held[#held + 1] = msg; return end
  local qty = tonumber(msg.payload) or error("bad order: " .. msg.payload)
  mq.publish("accepted/" .. msg.topic:match("[^/]+$"), tostring(qty), { qos = 1 })
end)
mq.route("stats/get", function()
  local s = orders:stats()
  mq.publish("stats/v1", s.published .. " " .. s.acked .. " " .. s.dead_lettered .. " " ..
    s.in_flight, { qos = 1 })
end)
"""

V2 = """
local mq = require "mqrouter"
local orders = mq.queue("orders", { durable = true, max_attempts = 3,
  backoff = { 0.05, 0.2 }, dead_letter = "dlq/orders" })
mq.route("orders/#", orders)
orders:consume(function(msg)
  mq.publish("v2/" .. msg.topic:match("[^/]+$"), msg.payload .. ":" .. msg.attempts, { qos = 1 })
end)
mq.route("stats/get", function()
  local s = orders:stats()
  mq.publish("stats/v2", s.published .. " " .. s.acked .. " " .. s.dead_lettered .. " " ..
    s.in_flight, { qos = 1 })
end)
"""


def subscriber(port, topic):
    got = []
    lock = threading.Lock()
    ev = threading.Event()
    c = mqtt.Client(client_id="sub-" + topic.replace("/", "-").replace("#", "all"),
                    protocol=mqtt.MQTTv5)

    def on_connect(client, userdata, flags, rc, props=None):
        client.subscribe(topic, qos=1)

    def on_message(client, userdata, m):
        up = dict(getattr(m.properties, "UserProperty", []) or [])
        with lock:
            got.append((m.topic, m.payload.decode(), up))

    c.on_connect = on_connect
    c.on_subscribe = lambda *a: ev.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ev.wait(10), "subscription not acknowledged"
    return c, got


with Workspace() as ws:
    port = free_port()
    rules = ws.write("rules.lua", V1)
    p = ws.mqrouter(port, rules)
    sub, got = subscriber(port, "#")

    pub = mqtt.Client(client_id="shop", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    bad = {7, 19, 23, 31, 44}
    for i in range(50):
        payload = "oops" if i in bad else str(i + 1)
        pub.publish(f"orders/{i}", payload, qos=1).wait_for_publish(10)

    def on(prefix):
        return [g for g in list(got) if g[0].startswith(prefix)]

    wait(lambda: len(on("accepted/")) == 45 and len(on("dlq/orders")) == 5, 15,
         "45 accepted orders and 5 dead letters")
    assert sorted(int(t.split("/")[1]) for t, _, _ in on("accepted/")) == \
        sorted(set(range(50)) - bad)
    for topic, payload, up in on("dlq/orders"):
        assert payload == "oops", payload
        assert up.get("mqrouter-queue") == "orders", up
        assert up.get("mqrouter-reason") == "max_attempts", up
        assert up.get("mqrouter-attempts") == "3", up
    assert sorted(int(up["mqrouter-topic"].split("/")[1]) for _, _, up in on("dlq/orders")) \
        == sorted(bad)
    print("ok: 45 orders accepted, 5 dead letters on dlq/orders with topic, reason, attempts")

    for i in range(3):
        pub.publish(f"orders/h{i}", "hold", qos=1).wait_for_publish(10)
    pub.publish("stats/get", "", qos=1).wait_for_publish(10)
    wait(lambda: on("stats/v1") and on("stats/v1")[-1][1] == "53 45 5 3", 10,
         "3 held orders in flight (stats/v1)")

    ws.write("rules.lua", V2)
    p.send_signal(signal.SIGHUP)
    wait(lambda: "reloaded" in ws.log(), 10, "the reload")
    wait(lambda: len(on("v2/")) == 3, 10, "the held orders at the new consumer")
    assert sorted(pl for _, pl, _ in on("v2/")) == ["hold:2"] * 3
    pub.publish("orders/after", "x", qos=1).wait_for_publish(10)
    wait(lambda: len(on("v2/")) == 4, 10, "a new order at the new consumer")
    pub.publish("stats/get", "", qos=1).wait_for_publish(10)
    wait(lambda: on("stats/v2") and on("stats/v2")[-1][1] == "54 49 5 0", 10,
         "the queue's statistics kept over the reload (stats/v2)")
    print("ok: reload kept the queue, its statistics and the held messages")

    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0, "mqrouter did not stop cleanly"
    print("ok: clean stop")
