#!/usr/bin/python3
"""On the native transport a received QoS 1 message is acknowledged to the
broker only after it was routed, so messages the loop had not routed yet
survive kill -9 with the broker: a session the broker keeps (clean = false)
gets them again at the next start. No inbox is written.

The session's route is slow on purpose (0.2 s a message, a stand-in for a
busy loop); ten QoS 1 messages reach the session within milliseconds;
mqrouter is killed while the route is on the first ones. The broker holds
the unacknowledged ones for the session and sends them again."""
import signal
import time

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

N = 10

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}", clean = false,
                        client_id = "ack-after-routing", transport = "native",
                        reconnect = {{ initial = 1, max = 1 }} }}
up:route("cmd/#", function(msg)
  local t = os.clock()
  while os.clock() - t < 0.2 do end
  mq.log.info("CMD " .. msg.payload)
end, {{ qos = 1 }})
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
"""

with Workspace() as ws:
    up, port = free_port(), free_port()
    ws.mosquitto(up)
    rules = ws.write("rules.lua", RULES.format(up=up))
    mqr = ws.mqrouter(port, rules)
    wait(lambda: "READY up" in ws.log(), 10, "the session to be ready")

    pub = mqtt.Client(client_id="ack-pub")
    pub.connect("127.0.0.1", up)
    pub.loop_start()
    for i in range(N):
        pub.publish("cmd/x", f"m{i}", qos=1).wait_for_publish(10)
    pub.loop_stop()
    wait(lambda: "CMD m0" in ws.log(), 5, "the first message to be routed")
    mqr.send_signal(signal.SIGKILL)
    mqr.wait(10)
    routed_before = [i for i in range(N) if f"CMD m{i}\n" in ws.log() or f"CMD m{i} " in ws.log()]
    assert len(routed_before) < N, "all were routed before the kill: the test proves nothing"

    ws.mqrouter(port, rules)
    wait(lambda: all(f"CMD m{i} " in ws.log() for i in range(N)), 15,
         "every acknowledged message to be routed after the restart")
    assert "not routed are routed now" not in ws.log(), "the native transport wrote an inbox"
    print(f"ok: {N - len(routed_before)} unrouted messages, not acknowledged, routed after kill -9")
