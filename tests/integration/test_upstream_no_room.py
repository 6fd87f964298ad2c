#!/usr/bin/python3
"""A listener client's QoS 1/2 PUBLISH that a route forwards to an upstream
session whose buffer is full is not acknowledged as accepted: the session
tells the publish context (MQR_EFULL, core/route/router.h) like a full queue
does, so an MQTT 5 client gets PUBACK/PUBREC 0x97 (Quota exceeded) and a
3.1.1 client sees its connection closed without a PUBACK. The broker is
down, so the session only buffers (max_buffered = 2): exactly two are
accepted."""

from mqr_it import Workspace, free_port, wait
from rawmqtt import Client, publish, refused_when_full

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


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES % free_port()))

    v5, v3 = refused_when_full(port, "fwd/a")

    q0 = Client(port)
    q0.login("v3-q0", version=4)
    q0.send(publish("status", b"", qos=0, version=4))
    wait(lambda: "STATUS buffered=2 full=3" in ws.log(), 5,
         "the session to hold the two accepted and to have refused three")
    for c in (v5, v3, q0):
        c.close()
