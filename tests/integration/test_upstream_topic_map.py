#!/usr/bin/python3
"""Level mapping of an upstream session (`map`), both ways, against a real
Mosquitto: published topics are rewritten by the first rule that matches
(the '+' levels and the '#' rest carried over), subscriptions are mapped as
filters, received topics are mapped back, and topics no rule matches take
the prefix."""
import threading

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "cloud", broker = "tcp://127.0.0.1:{up}", prefix = "edge-1/",
  map = {{ {{ "sensors/+/temp", "site-1/+/temperature" }},
          {{ "cmd/#", "devices/edge-1/cmd/#" }} }} }}
mq.route("sensors/#", function(msg)
  if msg.origin == "listener" then assert(up:publish(msg.topic, msg.payload, {{ qos = 1 }})) end
end)
up:route("cmd/#", function(msg)
  mq.publish("local/got", msg.topic .. "=" .. msg.payload)
end, {{ qos = 1 }})
mq.on("session_ready", function() mq.log.info("READY") end)
"""


def collector(port, topic):
    got, ev = [], threading.Event()
    c = mqtt.Client()
    c.on_connect = lambda cl, u, f, rc: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: ev.set()
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload.decode()))
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ev.wait(10)
    return c, got


with Workspace() as ws:
    up, port = free_port(), free_port()
    ws.mosquitto(up)
    ws.mqrouter(port, ws.write("rules.lua", RULES.format(up=up)))
    wait(lambda: "READY" in ws.log(), 10, "the session")
    cloud, cloud_got = collector(up, "#")
    local, local_got = collector(port, "local/#")  # SUBACK: the listener routes to it

    pub = mqtt.Client()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    pub.publish("sensors/kitchen/temp", "21.5", qos=1).wait_for_publish(5)
    pub.publish("sensors/kitchen/humidity", "40", qos=1).wait_for_publish(5)
    wait(lambda: len(cloud_got) >= 2, 10, "both messages at the broker")
    assert ("site-1/kitchen/temperature", "21.5") in cloud_got, cloud_got
    assert ("edge-1/sensors/kitchen/humidity", "40") in cloud_got, cloud_got  # no rule: prefix

    cmd = mqtt.Client()
    cmd.connect("127.0.0.1", up)
    cmd.loop_start()
    cmd.publish("devices/edge-1/cmd/reboot/now", "1", qos=1).wait_for_publish(5)
    wait(lambda: local_got, 10, "the command through the session")
    assert local_got == [("local/got", "cmd/reboot/now=1")], local_got
    print("ok: mapped both ways, unmatched topics prefixed")
    for c in (cloud, local, pub, cmd):
        c.loop_stop()
