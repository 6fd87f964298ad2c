#!/usr/bin/python3
"""A reload that changes a persistent session's settings hands its stored
messages over: 1 000 QoS 1 messages wait in the old session (broker down),
the rules file changes the session's keepalive, the new session waits for
the old one to close, restores its records, and when the broker comes up
every message arrives (and the new session's publishes made during the
reload too). A reload that drops the session gives its records up."""
import signal
import threading

import paho.mqtt.client as mqtt

from mqr_it import Retained, Workspace, free_port, upstream_records, wait

N = 1000

RULES = """
local mq = require "mqrouter"
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}", keepalive = {ka},
                        reconnect = {{ initial = 1, max = 1 }} }}
mq.route("in/#", function(msg)
  assert(up:publish("fwd/" .. msg.topic, msg.payload, {{ qos = 1 }}))
end)
mq.every(0.1, function()
  mq.publish("status/stored", tostring(up:status().stored), {{ retain = true }})
end)
mq.log.info("LOADED keepalive {ka}")
"""

DROPPED = """
local mq = require "mqrouter"
mq.log.info("LOADED without session")
"""


def records(ws):
    return upstream_records(ws, "up")


def publish_all(port, prefix, n):
    pub = mqtt.Client(client_id="reload-pub-" + prefix)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(f"in/{prefix}", f"{prefix}-{i}", qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(20)
    pub.disconnect()
    pub.loop_stop()


with Workspace() as ws:
    up, port = free_port(), free_port()
    mqr = ws.mqrouter(port, ws.write("rules.lua", RULES.format(up=up, ka=30)))
    wait(lambda: "LOADED keepalive 30" in ws.log(), 10, "the rules")
    stored = Retained(port, "status/stored")
    publish_all(port, "a", N)
    wait(lambda: stored.number() >= N, 10, f"{N} stored records")

    ws.write("rules.lua", RULES.format(up=up, ka=40))
    wait(lambda: "LOADED keepalive 40" in ws.log(), 10, "the reload")
    wait(lambda: "restored" in ws.log(), 10, "the new session to restore the old one's records")
    assert "waits for the session it replaces" in ws.log()
    publish_all(port, "b", 10)

    got = set()
    lock = threading.Lock()
    ready = threading.Event()
    ws.mosquitto(up)
    sink = mqtt.Client(client_id="reload-sink")
    sink.on_connect = lambda c, u, f, rc: c.subscribe("fwd/#", qos=1)
    sink.on_subscribe = lambda *a: ready.set()

    def on_message(c, u, m):
        with lock:
            got.add(m.payload.decode())
    sink.on_message = on_message
    sink.connect("127.0.0.1", up)
    sink.loop_start()
    assert ready.wait(10)
    want = {f"a-{i}" for i in range(N)} | {f"b-{i}" for i in range(10)}

    def arrived():
        with lock:
            return want <= got
    wait(arrived, 30, "every message published before and during the reload")
    wait(lambda: stored.number() == 0, 10, "no record left")
    print(f"ok: {N} stored messages handed over across a reload with new settings")

    # the broker goes away again, messages wait, the session is dropped: given up
    sink.loop_stop()
    for p in ws.procs[1:]:
        p.terminate()
        p.wait(10)
    wait(lambda: "session 'up' disconnected" in ws.log(), 10, "the loss")
    publish_all(port, "c", 50)
    wait(lambda: stored.number() >= 50, 10, "50 stored records")
    stored.close()
    ws.write("rules.lua", DROPPED)
    wait(lambda: "LOADED without session" in ws.log(), 10, "the reload dropping the session")
    wait(lambda: "session 'up' closing" in ws.log(), 10, "the session to close")
    mqr.send_signal(signal.SIGTERM)
    assert mqr.wait(10) == 0
    assert records(ws) == 0, "the dropped session's records are still there"
    print("ok: a dropped session's records are deleted")
