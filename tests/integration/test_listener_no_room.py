#!/usr/bin/python3
"""A QoS 1/2 PUBLISH that a route puts into a queue (or forwards to an
upstream session) with no room left is not acknowledged as accepted:
MQTT 5 clients get PUBACK/PUBREC with 0x97 (Quota exceeded) and may send it
again; MQTT 3.1.1, which has no negative acknowledgement, sees the
connection closed before any PUBACK, so its client sends it again after
reconnecting. What was acknowledged is in the queue."""

from mqr_it import Workspace, free_port, wait
from rawmqtt import Client, publish, refused_when_full

RULES = """
local mq = require "mqrouter"
local q = mq.queue("orders", { max_messages = 2 })
mq.route("orders/#", q)
mq.route("depth", function() mq.log.info("DEPTH " .. q:stats().depth) end)
"""


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES))

    v5, v3 = refused_when_full(port, "orders/a")

    v3b = Client(port)
    v3b.login("v3-q0", version=4)
    v3b.send(publish("orders/a", b"qos0 is not acknowledged anyway", qos=0, version=4))
    v3b.send(publish("depth", b"", qos=0, version=4))
    wait(lambda: "DEPTH 2" in ws.log(), 5, "the queue to hold exactly the two accepted")
    v3b.ping()  # QoS 0 into a full queue: dropped (and counted by the queue), connection kept
    for c in (v5, v3, v3b):
        c.close()
