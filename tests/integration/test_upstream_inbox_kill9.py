#!/usr/bin/python3
"""Messages an upstream session received and Paho acknowledged to the
broker, but the loop had not routed yet, survive kill -9: Paho's callback
writes each incoming QoS 1/2 message to the inbox in upstream.db before
Paho sends the PUBACK, the loop deletes it once routed, and the next start
routes what is left.

The session's route is slow on purpose (0.2 s a message, a stand-in for a
busy loop); ten QoS 1 messages reach Paho within milliseconds and are
acknowledged; mqrouter is killed while the route is on the first ones. The
session is clean: the broker forgets everything at the reconnect, so only
the inbox can bring the unrouted ones back. The inbox is Paho's (the native
transport acknowledges after routing instead:
test_upstream_ack_after_routing_kill9.py), so the session names it."""
import signal
import time

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

N = 10

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}", clean = true,
                        transport = "paho", reconnect = {{ initial = 1, max = 1 }} }}
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

    pub = mqtt.Client(client_id="inbox-pub")
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
    assert "not routed are routed now" in ws.log()
    print(f"ok: {N - len(routed_before)} acknowledged, unrouted messages routed after kill -9")
