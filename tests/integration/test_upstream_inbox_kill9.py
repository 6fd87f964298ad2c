#!/usr/bin/python3
"""Messages an upstream session received but the loop had not routed yet
survive kill -9, on each transport in its own way.

Paho: Paho acknowledges an incoming QoS 1/2 message to the broker when its
callback returns, so the callback first writes it to the inbox in
upstream.db; the loop deletes it once routed, and the next start routes
what is left. The session is clean: the broker forgets everything at the
reconnect, so only the inbox can bring the unrouted ones back.

Native: a received message is acknowledged to the broker only after it was
routed, and no inbox is written. A session the broker keeps (clean = false)
gets the unacknowledged ones again from the broker at the next start.

The session's route is slow on purpose (0.2 s a message, a stand-in for a
busy loop); ten QoS 1 messages reach the session within milliseconds;
mqrouter is killed while the route is on the first ones."""
import signal

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

N = 10

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}", clean = {clean},
                        client_id = "kill9-{transport}", transport = "{transport}",
                        reconnect = {{ initial = 1, max = 1 }} }}
up:route("cmd/#", function(msg)
  local t = os.clock()
  while os.clock() - t < 0.2 do end
  mq.log.info("CMD " .. msg.payload)
end, {{ qos = 1 }})
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
"""


def run_case(transport, clean, inbox):
    with Workspace() as ws:
        up, port = free_port(), free_port()
        ws.mosquitto(up)
        rules = ws.write("rules.lua", RULES.format(up=up, transport=transport, clean=clean))
        mqr = ws.mqrouter(port, rules)
        wait(lambda: "READY up" in ws.log(), 10, "the session to be ready")

        pub = mqtt.Client(client_id="kill9-pub")
        pub.connect("127.0.0.1", up)
        pub.loop_start()
        for i in range(N):
            pub.publish("cmd/x", f"m{i}", qos=1).wait_for_publish(10)
        pub.loop_stop()
        wait(lambda: "CMD m0" in ws.log(), 5, "the first message to be routed")
        mqr.send_signal(signal.SIGKILL)
        mqr.wait(10)
        log = ws.log()
        routed_before = [i for i in range(N) if f"CMD m{i} " in log]
        assert len(routed_before) < N, "all were routed before the kill: the test proves nothing"

        ws.mqrouter(port, rules)
        wait(lambda: all(f"CMD m{i} " in ws.log() for i in range(N)), 15,
             "every message to be routed after the restart")
        said = "not routed are routed now" in ws.log()
        assert said == inbox, f"{transport}: the inbox was {'not ' if inbox else ''}read back"
        print(f"ok ({transport}): {N - len(routed_before)} unrouted messages routed after kill -9")


run_case("paho", "true", inbox=True)
run_case("native", "false", inbox=False)
