#!/usr/bin/python3
"""Overlapping subscriptions of one client, with real paho clients (MQTT 5
and 3.1.1): a message that matches several subscriptions of one client
reaches it ONCE, at the highest QoS of those subscriptions, carrying every
Subscription Identifier (5.0 §3.3.4, 3.1.1 §3.3.5); No Local and Retain As
Published apply per subscription; a shared subscription's pick is a copy of
its own (5.0 §4.8.2); the one copy survives the client being away and a
restart of mqrouter (its identifiers are stored with it).

Every "exactly one" is checked by a marker: after the message under test the
publisher sends one more on a topic the client holds once, and messages to
one client keep their order (4.6), so when the marker is in, every copy of
the message before it is in too."""
import signal
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqr_it import Workspace, free_port, wait

RULES = 'local mq = require "mqrouter"\n'


class V5:
    def __init__(self, port, cid, clean=True, expiry=0):
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
        self.got, self.lock = [], threading.Lock()
        self.acked = threading.Event()
        self.connected = threading.Event()
        self.c.on_message = self._message
        self.c.on_subscribe = lambda *a: self.acked.set()
        self.c.on_connect = lambda *a: self.connected.set()
        props = None
        if expiry:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        self.c.connect("127.0.0.1", port, clean_start=clean, properties=props)
        self.c.loop_start()
        assert self.connected.wait(5), cid + " did not connect"

    def _message(self, cl, ud, msg):
        with self.lock:
            self.got.append(msg)

    def sub(self, topic, sid=None, **opts):
        self.acked.clear()
        props = None
        if sid is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sid
        self.c.subscribe(topic, options=SubscribeOptions(**opts), properties=props)
        assert self.acked.wait(5), "no SUBACK for " + topic

    def on(self, topic):
        with self.lock:
            return [m for m in self.got if m.topic == topic]

    def wait_marker(self, marker):
        wait(lambda: self.on(marker), 5, "marker " + marker)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def ids(msg):
    return sorted(getattr(msg.properties, "SubscriptionIdentifier", []) or [])


def publish(c, topic, payload, qos=0, retain=False):
    c.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)


with Workspace() as ws:
    port = free_port()
    rules = ws.write("rules.lua", RULES)
    router = ws.mqrouter(port, rules)
    pub = V5(port, "publisher")

    # two overlapping subscriptions, ids 1 (QoS 0) and 2 (QoS 1)
    a = V5(port, "a")
    a.sub("t/#", sid=1, qos=0)
    a.sub("t/+", sid=2, qos=1)
    a.sub("marker/a", qos=0)
    publish(pub, "t/x", b"one", qos=1)
    publish(pub, "marker/a", b"m")
    a.wait_marker("marker/a")
    got = a.on("t/x")
    assert len(got) == 1, f"{len(got)} copies of one message for two subscriptions"
    assert got[0].qos == 1, f"QoS {got[0].qos}, want the highest granted (1)"
    assert ids(got[0]) == [1, 2], f"identifiers {ids(got[0])}, want [1, 2]"
    # a QoS 0 publish: one copy at QoS 0, still with both identifiers
    publish(pub, "t/y", b"zero", qos=0)
    publish(pub, "marker/a", b"m2")
    wait(lambda: len(a.on("marker/a")) == 2, 5, "second marker")
    got = a.on("t/y")
    assert len(got) == 1 and got[0].qos == 0 and ids(got[0]) == [1, 2], \
        [(m.qos, ids(m)) for m in got]
    print("ok: one copy at the highest QoS with every identifier")

    # No Local: a's own publish does not count the no-local subscription
    b = V5(port, "b")
    b.sub("n/#", sid=5, qos=1, noLocal=True)
    b.sub("n/+", sid=6, qos=0)
    b.sub("marker/b", qos=0)
    publish(b, "n/a", b"own", qos=1)
    publish(b, "marker/b", b"m")
    b.wait_marker("marker/b")
    got = b.on("n/a")
    assert len(got) == 1 and got[0].qos == 0 and ids(got[0]) == [6], \
        [(m.qos, ids(m)) for m in got]
    # from another client both count
    publish(pub, "n/a", b"other", qos=1)
    publish(pub, "marker/b", b"m2")
    wait(lambda: len(b.on("marker/b")) == 2, 5, "second marker")
    got = b.on("n/a")
    assert len(got) == 2 and got[1].qos == 1 and ids(got[1]) == [5, 6], \
        [(m.qos, ids(m)) for m in got]
    print("ok: a No Local subscription does not count for the client's own message")

    # Retain As Published on one of the two: the copy keeps RETAIN
    r = V5(port, "r")
    r.sub("r/#", sid=7, qos=1, retainAsPublished=True)
    r.sub("r/+", sid=8, qos=1)
    r.sub("marker/r", qos=0)
    publish(pub, "r/a", b"kept", qos=1, retain=True)
    publish(pub, "r/b", b"live", qos=1)
    publish(pub, "marker/r", b"m")
    r.wait_marker("marker/r")
    got = r.on("r/a")
    assert len(got) == 1 and got[0].retain and ids(got[0]) == [7, 8], \
        [(m.retain, ids(m)) for m in got]
    got = r.on("r/b")
    assert len(got) == 1 and not got[0].retain, [(m.retain, ids(m)) for m in got]
    publish(pub, "r/a", b"", qos=1, retain=True)  # clear the retained message
    print("ok: RETAIN kept when any matching subscription asks Retain As Published")

    # a shared subscription is a delivery of its own
    s = V5(port, "s")
    s.sub("$share/g/s/#", sid=9, qos=1)
    s.sub("s/+", sid=10, qos=1)
    s.sub("marker/s", qos=0)
    publish(pub, "s/a", b"shared", qos=1)
    publish(pub, "marker/s", b"m")
    s.wait_marker("marker/s")
    got = s.on("s/a")
    assert sorted(ids(m)[0] for m in got) == [9, 10] and all(len(ids(m)) == 1 for m in got), \
        [ids(m) for m in got]
    print("ok: the share group's copy stays apart from the client's own subscription")

    # 3.1.1: one copy at the highest QoS
    v3 = mqtt.Client(client_id="v3", protocol=mqtt.MQTTv311)
    v3got, v3sub = [], threading.Semaphore(0)
    v3.on_message = lambda cl, ud, m: v3got.append((m.topic, m.qos))
    v3.on_subscribe = lambda *x: v3sub.release()
    v3.connect("127.0.0.1", port)
    v3.loop_start()
    for topic, q in (("t/#", 0), ("t/+", 1), ("#", 0), ("marker/v3", 0)):
        v3.subscribe(topic, q)
        assert v3sub.acquire(timeout=5), "no SUBACK for " + topic
    publish(pub, "t/z", b"v3", qos=1)
    publish(pub, "marker/v3", b"m")
    wait(lambda: ("marker/v3", 0) in v3got, 5, "marker/v3")
    assert [x for x in v3got if x[0] == "t/z"] == [("t/z", 1)], v3got
    print("ok: 3.1.1: one copy at the highest QoS of three matching subscriptions")
    v3.disconnect()
    v3.loop_stop()

    # the one copy of an absent client's session, and after a restart
    p = V5(port, "p", clean=True, expiry=300)
    p.sub("q/#", sid=11, qos=1)
    p.sub("q/+", sid=12, qos=2)
    p.sub("marker/p", qos=2)  # paho hands QoS 2 over at PUBREL: same flow as q/a
    p.close()
    publish(pub, "q/a", b"away", qos=2)
    publish(pub, "marker/p", b"m", qos=2)
    for c in (pub, a, b, r, s):
        c.close()
    router.send_signal(signal.SIGTERM)
    assert router.wait(10) == 0, "mqrouter did not stop cleanly"
    ws.mqrouter(port, rules)  # the same data directory
    p = V5(port, "p", clean=False, expiry=300)
    p.wait_marker("marker/p")
    got = p.on("q/a")
    assert len(got) == 1 and got[0].qos == 2 and ids(got[0]) == [11, 12], \
        [(m.qos, ids(m)) for m in got]
    print("ok: an absent client's one copy keeps both identifiers across a restart")
    p.close()
