#!/usr/bin/python3
"""With real paho clients: a will is published when a client vanishes and
not when it disconnects cleanly (3.1.1 and 5); a v5 will delay holds the
will back; a shared subscription spreads messages across its members."""
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqr_it import Workspace, free_port, wait


def watcher(port, topic):
    got, ready = [], threading.Event()
    c = mqtt.Client(client_id="watch-" + topic.replace("/", "-").replace("#", "all"),
                    protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, ud, m: got.append((time.time(), m.topic, m.payload))
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    assert ready.wait(5)
    return c, got


def will_client(port, cid, proto, delay=None):
    c = mqtt.Client(client_id=cid, protocol=proto)
    props = None
    if delay is not None:
        props = Properties(PacketTypes.WILLMESSAGE)
        props.WillDelayInterval = delay
    c.will_set("wills/" + cid, "gone", qos=1, properties=props)
    if proto == mqtt.MQTTv5:
        cp = Properties(PacketTypes.CONNECT)
        cp.SessionExpiryInterval = 60
        c.connect("127.0.0.1", port, properties=cp)
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    wait(lambda: c.is_connected(), 5, cid + " connected")
    return c


def vanish(c):
    """Drop the TCP connection without DISCONNECT."""
    c.loop_stop()
    c.socket().shutdown(socket.SHUT_RDWR)
    c.socket().close()


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", 'local mq = require "mqrouter"\n'))
    w, wills = watcher(port, "wills/#")

    for proto, name in ((mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")):
        clean = will_client(port, "clean-" + name, proto)
        clean.disconnect()
        clean.loop_stop()
        abrupt = will_client(port, "abrupt-" + name, proto)
        vanish(abrupt)
    wait(lambda: len(wills) >= 2, 5, "the two wills")
    time.sleep(0.5)
    topics = sorted(t for _, t, _ in wills)
    assert topics == ["wills/abrupt-v311", "wills/abrupt-v5"], topics
    print("ok: will on abrupt disconnect only (3.1.1 and 5)")

    wills.clear()
    delayed = will_client(port, "delayed", mqtt.MQTTv5, delay=2)
    t0 = time.time()
    vanish(delayed)
    wait(lambda: wills, 6, "the delayed will")
    took = wills[0][0] - t0
    assert 1.5 <= took <= 5, f"will after {took:.2f} s, expected about 2 s"
    print(f"ok: will delay honoured ({took:.2f} s)")

    # shared subscription: three members, 300 messages, every member gets some,
    # none twice, all delivered
    members = []
    for i in range(3):
        got, ready = [], threading.Event()
        c = mqtt.Client(client_id=f"worker-{i}", protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, ud, m, got=got: got.append(m.payload)
        c.on_subscribe = lambda *a, ready=ready: ready.set()
        c.connect("127.0.0.1", port)
        c.subscribe("$share/workers/jobs/#", qos=1)
        c.loop_start()
        assert ready.wait(5)
        members.append((c, got))
    pub = mqtt.Client(client_id="producer", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for i in range(300):
        pub.publish(f"jobs/{i % 5}", str(i), qos=1)
    wait(lambda: sum(len(g) for _, g in members) >= 300, 10, "300 shared deliveries")
    time.sleep(0.3)
    counts = [len(g) for _, g in members]
    every = sorted(int(p) for _, g in members for p in g)
    assert every == list(range(300)), "lost or duplicated jobs"
    assert all(n >= 60 for n in counts), f"uneven spread {counts}"
    print(f"ok: shared subscription spread {counts}")
    for c, _ in members:
        c.loop_stop()
    pub.loop_stop()
    w.loop_stop()
