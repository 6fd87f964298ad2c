#!/usr/bin/python3
"""mq.listen{ v311_session_expiry_s = N } with real paho 3.1.1 clients: a
Clean Session 0 client that leaves keeps its session for N seconds, then the
session (subscriptions and queued messages) is gone; a listener without the
option keeps 3.1.1 sessions for ever. The session count is watched through
$SYS/broker/clients/disconnected (persistent sessions whose client is away),
with a deadline, never a fixed sleep."""
import threading

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

RULES = """
local mq = require "mqrouter"
mq.listen{ port = %d, v311_session_expiry_s = 1, sys_interval_ms = 100 }
"""


class Client:
    def __init__(self, port, cid, clean):
        self.c = mqtt.Client(client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311)
        self.got, self.flags, self.acks = [], {}, threading.Semaphore(0)
        self.connected = threading.Event()
        self.c.on_message = lambda cl, ud, m: self.got.append((m.topic, m.payload))
        self.c.on_subscribe = lambda *a: self.acks.release()

        def on_connect(cl, ud, flags, rc):
            self.flags = flags
            self.connected.set()

        self.c.on_connect = on_connect
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connected.wait(5), cid + " did not connect"

    def sub(self, topic, qos):
        self.c.subscribe(topic, qos)
        assert self.acks.acquire(timeout=5), "no SUBACK for " + topic

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


with Workspace() as ws:
    main_port, limited = free_port(), free_port()
    ws.mqrouter(main_port, ws.write("rules.lua", RULES % limited))
    wait(lambda: b"listening on 127.0.0.1:%d" % limited in ws.log().encode(), 5,
         "the declared listener")

    watch = Client(main_port, "watch", True)
    watch.sub("$SYS/broker/clients/disconnected", 0)

    def away():
        vals = [int(p) for t, p in watch.got if t == "$SYS/broker/clients/disconnected"]
        return vals[-1] if vals else None

    # on the main listener (no option): kept for ever
    keep = Client(main_port, "keep311", False)
    keep.sub("e/#", 1)
    keep.close()
    # on the declared one: kept one second
    brief = Client(limited, "brief311", False)
    brief.sub("e/#", 1)
    brief.close()
    wait(lambda: away() == 2, 5, "two sessions away")

    pub = Client(main_port, "pub", True)
    pub.c.publish("e/a", b"queued", qos=1).wait_for_publish(5)
    # the limited one ends (1 s and the session timer's tick), the other stays
    wait(lambda: away() == 1, 5, "the 3.1.1 session to expire")
    assert "session of brief311 expired (1 messages dropped)" in ws.log(), ws.log()[-2000:]

    brief = Client(limited, "brief311", False)
    assert brief.flags.get("session present") == 0, brief.flags
    brief.sub("marker", 1)
    pub.c.publish("e/b", b"after", qos=1).wait_for_publish(5)
    pub.c.publish("marker", b"m", qos=1).wait_for_publish(5)
    # messages to one client keep their order: with the marker in, a copy of
    # e/a (queued) or e/b (subscription kept) would be in too
    wait(lambda: brief.got, 5, "the marker")
    assert brief.got == [("marker", b"m")], brief.got
    keep = Client(main_port, "keep311", False)
    assert keep.flags.get("session present") == 1, keep.flags
    wait(lambda: len(keep.got) == 2, 5, "the kept session's two messages")
    assert keep.got == [("e/a", b"queued"), ("e/b", b"after")], keep.got
    print("ok: a 3.1.1 session on the limited listener expired with its queue and "
          "subscription; the unlimited listener kept its own")
    for c in (brief, keep, pub, watch):
        c.close()
