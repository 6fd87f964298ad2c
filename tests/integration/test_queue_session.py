#!/usr/bin/python3
"""An upstream session's route feeds a queue: orders published on a real
Mosquitto reach mqrouter through `up:route("shop/orders/#", q)`, keep their
topic in the queue, and the consumer forwards each to the listener's
clients; messages the listener's clients publish on the same topics do not
enter the queue (a session route takes only that session's messages)."""
import threading

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "shop", broker = "tcp://127.0.0.1:{up}", client_id = "edge-q" }}
local q = mq.queue("shop-orders", {{ max_attempts = 2 }})
up:route("shop/orders/#", q, {{ qos = 1 }})
q:consume(function(msg)
  mq.publish("handled/" .. msg.topic, msg.payload .. " " .. msg.origin, {{ qos = 1 }})
end)
"""


def client(port, sub=None):
    got = []
    ev = threading.Event()
    c = mqtt.Client()
    if sub:
        c.on_connect = lambda cl, ud, fl, rc: cl.subscribe(sub, qos=1)
        c.on_subscribe = lambda *a: ev.set()
        c.on_message = lambda cl, ud, m: got.append((m.topic, m.payload.decode()))
    else:
        ev.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ev.wait(10), "subscription not acknowledged"
    return c, got


with Workspace() as ws:
    up, port = free_port(), free_port()
    ws.mosquitto(up)
    ws.mqrouter(port, ws.write("rules.lua", RULES.format(up=up)))
    wait(lambda: "session 'shop'" in ws.log() and "connected" in ws.log(), 10,
         "the upstream session to connect")
    sub, got = client(port, "handled/#")
    shop, _ = client(up)
    local, _ = client(port)

    # the session's broker subscription may still be on its way: probe first
    def probed():
        shop.publish("shop/orders/probe", "p", qos=1).wait_for_publish(10)
        return any(t == "handled/shop/orders/probe" for t, _ in got)

    wait(probed, 10, "a probe order through the session's subscription")
    for i in range(10):
        shop.publish(f"shop/orders/{i}", f"o{i}", qos=1).wait_for_publish(10)
    local.publish("shop/orders/local", "not-for-the-queue", qos=1).wait_for_publish(10)
    shop.publish("shop/orders/last", "end", qos=1).wait_for_publish(10)
    wait(lambda: any(t == "handled/shop/orders/last" for t, _ in got), 10, "the last order")
    orders = sorted(t for t, _ in got if not t.endswith(("probe", "last")))
    assert orders == sorted(f"handled/shop/orders/{i}" for i in range(10)), orders
    assert all(p.endswith(" session") for _, p in got), got
    print("ok: broker -> session route -> queue -> consumer -> listener")
    for c in (sub, shop, local):
        c.loop_stop()
