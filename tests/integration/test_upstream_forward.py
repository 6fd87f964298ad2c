#!/usr/bin/python3
"""A route forwards listener traffic to a real Mosquitto through an upstream
session, and the session's own route brings the broker's messages back."""
import threading

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

RULES = """
local mq = require "mqrouter"
local cloud = mq.session{{ name = "cloud", broker = "tcp://127.0.0.1:{up}",
                          client_id = "edge-1" }}
mq.route("sensors/#", function(msg)
  assert(cloud:publish("edge/" .. msg.topic, msg.payload, {{ qos = 1 }}))
end)
cloud:route("commands/#", function(msg)
  assert(msg.origin == "session" and msg.source == "cloud")
  mq.publish("local/" .. msg.topic, msg.payload)
end)
-- connected and its subscription answered by the broker
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
"""


def collector(port, topic, proto=mqtt.MQTTv311):
    got = []
    ev = threading.Event()
    c = mqtt.Client(protocol=proto)

    def on_connect(client, userdata, flags, rc, *rest):
        client.subscribe(topic, qos=1)

    def on_subscribe(*args):
        ev.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = lambda cl, ud, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ev.wait(10), "subscription not acknowledged"
    return c, got


with Workspace() as ws:
    up, port = free_port(), free_port()
    ws.mosquitto(up)
    ws.mqrouter(port, ws.write("rules.lua", RULES.format(up=up)))
    wait(lambda: "READY cloud" in ws.log(), 10, "the upstream session, subscribed")

    cloud_sub, cloud_got = collector(up, "edge/#")
    local_sub, local_got = collector(port, "local/#")

    pub = mqtt.Client()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for i in range(20):
        pub.publish("sensors/t%d" % (i % 3), str(i), qos=1).wait_for_publish(10)
    wait(lambda: len(cloud_got) == 20, 10, "20 forwarded messages on mosquitto")
    assert sorted(int(p) for _, p in cloud_got) == list(range(20))
    assert all(t.startswith("edge/sensors/t") for t, _ in cloud_got)
    print("ok: listener -> route -> session -> mosquitto")

    back = mqtt.Client()
    back.connect("127.0.0.1", up)
    back.loop_start()
    back.publish("commands/dev1/reboot", "now", qos=1).wait_for_publish(10)
    wait(lambda: len(local_got) == 1, 10, "the command back on the listener")
    assert local_got[0] == ("local/commands/dev1/reboot", b"now")
    print("ok: mosquitto -> session route -> listener")
    for c in (pub, back, cloud_sub, local_sub):
        c.loop_stop()
