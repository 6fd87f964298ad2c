#!/usr/bin/python3
"""A QoS 1/2 PUBLISH that a route puts into a queue (or forwards to an
upstream session) with no room left is not acknowledged as accepted:
MQTT 5 clients get PUBACK/PUBREC with 0x97 (Quota exceeded) and may send it
again; MQTT 3.1.1, which has no negative acknowledgement, sees the
connection closed before any PUBACK, so its client sends it again after
reconnecting. What was acknowledged is in the queue."""
import struct

from mqr_it import Workspace, free_port, wait
from rawmqtt import PUBACK, PUBREC, Client, publish

RULES = """
local mq = require "mqrouter"
local q = mq.queue("orders", { max_messages = 2 })
mq.route("orders/#", q)
mq.route("depth", function() mq.log.info("DEPTH " .. q:stats().depth) end)
"""


def ack_reason(p):
    body = p[2]
    return body[2] if len(body) > 2 else 0


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES))

    v5 = Client(port)
    v5.login("v5-pub", version=5)
    for pid in (1, 2):
        v5.send(publish("orders/a", b"ok", qos=1, pid=pid, version=5))
        p = v5.expect(PUBACK)
        assert struct.unpack("!H", p[2][:2])[0] == pid and ack_reason(p) == 0, p
    v5.send(publish("orders/a", b"no room", qos=1, pid=3, version=5))
    p = v5.expect(PUBACK)
    assert ack_reason(p) == 0x97, f"expected Quota exceeded, got {p!r}"
    v5.send(publish("orders/a", b"no room", qos=2, pid=4, version=5))
    p = v5.expect(PUBREC)
    assert ack_reason(p) == 0x97, p
    v5.ping()  # still connected
    print("v5: accepted twice, then PUBACK/PUBREC 0x97")

    v3 = Client(port)
    v3.login("v3-pub", version=4)
    v3.send(publish("orders/a", b"no room", qos=1, pid=7, version=4))
    v3.expect_closed()
    print("v3.1.1: closed without a PUBACK")

    v3b = Client(port)
    v3b.login("v3-q0", version=4)
    v3b.send(publish("orders/a", b"qos0 is not acknowledged anyway", qos=0, version=4))
    v3b.send(publish("depth", b"", qos=0, version=4))
    wait(lambda: "DEPTH 2" in ws.log(), 5, "the queue to hold exactly the two accepted")
    v3b.ping()  # QoS 0 into a full queue: dropped (and counted by the queue), connection kept
    for c in (v5, v3, v3b):
        c.close()
