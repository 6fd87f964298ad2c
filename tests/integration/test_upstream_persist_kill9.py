#!/usr/bin/python3
"""Upstream messages survive kill -9 of mqrouter, on the session's transport
(MQROUTER_UPSTREAM_TRANSPORT picks it for the run): Paho's user persistence
into <data-dir>/upstream.db, or the native transport's outbox rows in the
engine store.

Phase 1, buffered: the upstream broker is down; a client publishes QoS 1
messages to mqrouter's listener, a route hands them to the session, each is
PUBACKed; mqrouter is killed with SIGKILL; the broker comes up with a
subscriber; mqrouter restarts on the same data directory and every message
reaches the subscriber. Then no record is left in upstream.db.

Phase 2, in flight: the session is connected through a TCP relay that the
test switches to swallowing everything, so the next messages are sent but
never acknowledged (clean = false: in flight is session state to keep);
kill -9, relay back to passing, restart: every one arrives (duplicates
allowed, QoS 1).

Phase 3, the broker's side of the session: mqrouter is killed, the broker
keeps the session (clean = false) and queues QoS 1 messages for its
subscription; after the restart they reach the session's route."""
import signal
import socket
import threading
import time

import paho.mqtt.client as mqtt

from mqr_it import Retained, Workspace, free_port, upstream_records, wait

N1 = 2000
N2 = 300

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}", clean = false,
                        client_id = "persist-kill9", max_buffered = 50000,
                        reconnect = {{ initial = 1, max = 1 }} }}
mq.route("in/#", function(msg)
  assert(up:publish("fwd/" .. msg.topic, msg.payload, {{ qos = 1 }}))
end)
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
up:route("cmd/#", function(msg) mq.log.info("CMD " .. msg.payload) end, {{ qos = 1 }})
mq.every(0.1, function()
  mq.publish("status/stored", tostring(up:status().stored), {{ retain = true }})
end)
"""


class Relay:
    """TCP relay listen_port -> target_port; swallow=True drops every byte
    both ways without closing (a broker that went silent)."""

    def __init__(self, listen_port, target_port):
        self.target = target_port
        self.swallow = False
        self.srv = socket.create_server(("127.0.0.1", listen_port))
        self.srv.settimeout(0.2)
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            try:
                t = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                c.close()
                continue
            for a, b in ((c, t), (t, c)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        a.settimeout(0.2)
        while not self.stop:
            try:
                data = a.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if not self.swallow:
                try:
                    b.sendall(data)
                except OSError:
                    break
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass


def records(ws):
    return upstream_records(ws, "up")


def publish_all(port, prefix, n):
    pub = mqtt.Client(client_id="persist-pub-" + prefix)
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(f"in/{prefix}", f"{prefix}-{i}", qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(20)
        assert info.is_published(), "mqrouter did not acknowledge a publish"
    pub.disconnect()
    pub.loop_stop()


class Sink:
    def __init__(self, port):
        self.got = set()
        self.lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(client_id="persist-sink")
        self.c.on_connect = lambda c, u, f, rc: c.subscribe("fwd/#", qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self.on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(10), "sink not subscribed"

    def on_message(self, c, u, m):
        with self.lock:
            self.got.add(m.payload.decode())

    def count(self, prefix):
        with self.lock:
            return sum(1 for p in self.got if p.startswith(prefix + "-"))


with Workspace() as ws:
    broker_port, relay_port, port = free_port(), free_port(), free_port()
    rules = ws.write("rules.lua", RULES.format(up=relay_port))
    relay = Relay(relay_port, broker_port)

    # ---- phase 1: buffered while the broker is down
    mqr = ws.mqrouter(port, rules)
    stored = Retained(port, "status/stored")
    publish_all(port, "a", N1)
    mqr.send_signal(signal.SIGKILL)
    mqr.wait(10)
    assert records(ws) >= N1, f"only {records(ws)} records stored for {N1} buffered messages"

    # The session sends what it kept as fast as the broker takes it: the
    # broker must not drop QoS 1 messages queued for the sink past its
    # default max_queued_messages (1000).
    ws.mosquitto(broker_port, "max_queued_messages 0\n")
    sink = Sink(broker_port)
    mqr = ws.mqrouter(port, rules)
    wait(lambda: sink.count("a") == N1, 30, f"{N1} buffered messages after kill -9")
    wait(lambda: stored.number() == 0, 10, "the delivered messages' records to be removed")
    print(f"phase 1: {N1} messages buffered, kill -9, all delivered; no record left")

    # ---- phase 2: in flight (sent, never acknowledged) at the kill
    wait(lambda: "READY up" in ws.log(), 10, "the session to be ready")
    relay.swallow = True
    publish_all(port, "b", N2)
    wait(lambda: stored.number() >= N2, 10, f"{N2} in-flight records")
    assert sink.count("b") == 0, "the relay let messages through"
    mqr.send_signal(signal.SIGKILL)
    mqr.wait(10)
    relay.swallow = False  # connections opened from now on pass
    mqr = ws.mqrouter(port, rules)
    wait(lambda: sink.count("b") == N2, 30, f"{N2} in-flight messages after kill -9")
    stored.value = None
    wait(lambda: stored.number() == 0, 10, "the delivered messages' records to be removed")
    print(f"phase 2: {N2} messages in flight, kill -9, all delivered; no record left")
    assert "stored message record(s) restored" in ws.log()

    # ---- phase 3: queued by the broker for the session while mqrouter is dead
    wait(lambda: ws.log().count("READY up") >= 2, 10, "the session to be ready again")
    mqr.send_signal(signal.SIGKILL)
    mqr.wait(10)
    cmd = mqtt.Client(client_id="persist-cmd")
    cmd.connect("127.0.0.1", broker_port)
    cmd.loop_start()
    for i in range(5):
        cmd.publish("cmd/x", f"queued-{i}", qos=1).wait_for_publish(10)
    cmd.loop_stop()
    mqr = ws.mqrouter(port, rules)
    wait(lambda: all(f"CMD queued-{i}" in ws.log() for i in range(5)), 15,
         "the messages the broker queued for the session")
    print("phase 3: messages queued by the broker while mqrouter was dead reach the route")
    relay.stop = True
    sink.c.loop_stop()
    stored.close()
