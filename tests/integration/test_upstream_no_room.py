#!/usr/bin/python3
"""A listener client's QoS 1/2 PUBLISH that a route forwards to an upstream
session whose buffer is full is not acknowledged as accepted: the session
tells the publish context (MQR_EFULL, core/router.h) like a full queue
does, so an MQTT 5 client gets PUBACK/PUBREC 0x97 (Quota exceeded) and a
3.1.1 client sees its connection closed without a PUBACK. The broker is
down, so the session only buffers (max_buffered = 2): exactly two are
accepted."""
import struct

from mqr_it import Workspace, free_port, wait
from rawmqtt import PUBACK, PUBREC, Client, publish

RULES = """
local mq = require "mqrouter"
local up = mq.session{ name = "up", broker = "tcp://127.0.0.1:%d", persist = false,
                       max_buffered = 2, reconnect = { initial = 60, max = 60 } }
mq.route("fwd/#", function(msg) up:publish(msg.topic, msg.payload, { qos = msg.qos }) end)
mq.route("status", function()
  local st = up:status()
  mq.log.info("STATUS buffered=" .. st.buffered .. " full=" .. st.publish_full)
end)
"""


def ack_reason(p):
    body = p[2]
    return body[2] if len(body) > 2 else 0


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES % free_port()))

    v5 = Client(port)
    v5.login("v5-pub", version=5)
    for pid in (1, 2):
        v5.send(publish("fwd/a", b"ok", qos=1, pid=pid, version=5))
        p = v5.expect(PUBACK)
        assert struct.unpack("!H", p[2][:2])[0] == pid and ack_reason(p) == 0, p
    v5.send(publish("fwd/a", b"no room", qos=1, pid=3, version=5))
    p = v5.expect(PUBACK)
    assert struct.unpack("!H", p[2][:2])[0] == 3 and ack_reason(p) == 0x97, \
        f"expected Quota exceeded, got {p!r}"
    v5.send(publish("fwd/a", b"no room", qos=2, pid=4, version=5))
    p = v5.expect(PUBREC)
    assert ack_reason(p) == 0x97, p
    v5.ping()  # still connected
    print("v5: accepted twice, then PUBACK/PUBREC 0x97")

    v3 = Client(port)
    v3.login("v3-pub", version=4)
    v3.send(publish("fwd/a", b"no room", qos=1, pid=7, version=4))
    v3.expect_closed()
    print("v3.1.1: closed without a PUBACK")

    q0 = Client(port)
    q0.login("v3-q0", version=4)
    q0.send(publish("status", b"", qos=0, version=4))
    wait(lambda: "STATUS buffered=2 full=3" in ws.log(), 5,
         "the session to hold the two accepted and to have refused three")
    for c in (v5, v3, q0):
        c.close()
