#!/usr/bin/python3
"""test_sessions_kill9: persistent sessions of the real mqrouter binary survive
`kill -9`.

Three subscribers with persistent sessions -- paho 3.1.1 with
clean_session=False, paho 5 with clean_start=False and a Session Expiry
Interval, and `mosquitto_sub -c -i ID -q 1` -- subscribe and go away. A
publisher sends QoS 1 messages (each acknowledged: PUBACK means stored);
mqrouter is killed with SIGKILL and started again on the same data
directory. Each subscriber comes back with its client id and gets its
session (Session Present) and every queued message, in order, without
subscribing again. Every wait is bounded; everything started is killed and
removed on exit.
"""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import Workspace, free_port, wait  # noqa: E402

try:
    import paho.mqtt.client as mqtt
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

N = 40
TIMEOUT = 10


class Sub:
    """A paho client that records what it receives and its Session Present."""

    def __init__(self, port, cid, v5):
        self.got = []
        self.present = None
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self.v5 = v5
        if v5:
            self.c = mqtt.Client(cid, protocol=mqtt.MQTTv5)
        else:
            self.c = mqtt.Client(cid, clean_session=False, protocol=mqtt.MQTTv311)
        self.c.on_message = self.on_message
        self.c.on_connect = self.on_connect
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.c.connect("127.0.0.1", port, 30, clean_start=False, properties=props)
        else:
            self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK for " + cid

    def on_connect(self, c, u, flags, rc, props=None):
        self.present = flags.get("session present")
        self.connected.set()

    def on_message(self, c, u, m):
        with self.lock:
            self.got.append((m.topic, m.payload.decode(), m.qos))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def publish_all(port, prefix):
    p = mqtt.Client("kill9-pub", clean_session=True)
    p.connect("127.0.0.1", port, 30)
    p.loop_start()
    infos = [p.publish("s9/%d" % (i % 3), "%s-%03d" % (prefix, i), qos=1) for i in range(N)]
    for info in infos:
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), "no PUBACK"
    p.publish("s9/0", "qos0-not-queued", qos=0).wait_for_publish(TIMEOUT)
    p.disconnect()
    p.loop_stop()


def mosquitto_sub(port, count):
    return subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i",
                             "kill9-msub", "-q", "1", "-t", "s9/#", "-C", str(count), "-W",
                             str(TIMEOUT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def main():
    with Workspace() as ws:
        script = ws.write("empty.lua", "-- no rules\n")
        port = free_port()
        proc = ws.mqrouter(port, script)

        # sessions made, subscribed, then away
        s4 = Sub(port, "kill9-s4", v5=False)
        s5 = Sub(port, "kill9-s5", v5=True)
        assert not s4.present and not s5.present
        # a retained probe tells when each is subscribed: mosquitto_sub (a
        # persistent session too) takes it and leaves, its session stays
        probe = mqtt.Client("kill9-probe")
        probe.connect("127.0.0.1", port, 30)
        probe.loop_start()
        probe.publish("s9/probe", "probe", qos=1, retain=True).wait_for_publish(TIMEOUT)
        probe.disconnect()
        probe.loop_stop()
        for s in (s4, s5):
            r, mid = s.c.subscribe("s9/#", 1)
            assert r == 0
        m = mosquitto_sub(port, 1)
        out, err = m.communicate(timeout=TIMEOUT + 5)
        assert m.returncode == 0 and out.strip() == "probe", "mosquitto_sub: %r %r" % (out, err)
        wait(lambda: s4.got and s5.got, TIMEOUT, "the paho subscribers to be subscribed")
        s4.close()
        s5.close()
        with s4.lock, s5.lock:
            s4.got.clear()
            s5.got.clear()

        publish_all(port, "m")

        # the store has every acknowledged message: kill -9 and start again
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        proc = ws.mqrouter(port, script)

        want = [("s9/%d" % (i % 3), "m-%03d" % i, 1) for i in range(N)]
        s4 = Sub(port, "kill9-s4", v5=False)
        s5 = Sub(port, "kill9-s5", v5=True)
        assert s4.present, "3.1.1 session not present after kill -9"
        assert s5.present, "v5 session not present after kill -9"
        for s in (s4, s5):
            wait(lambda: len(s.got) >= N, TIMEOUT, "%d queued messages" % N)
            time.sleep(0.3)  # nothing more may come (QoS 0 was not queued)
            with s.lock:
                got = [g for g in s.got if g[0] != "s9/probe"]
            assert got == want, "got %d: %r" % (len(got), got[:5])
            s.close()

        m = mosquitto_sub(port, N)
        out, err = m.communicate(timeout=TIMEOUT + 5)
        assert m.returncode == 0, "mosquitto_sub: %r %r" % (out, err)
        lines = [x for x in out.splitlines() if x != "probe"]
        assert lines == ["m-%03d" % i for i in range(N)], lines[:5]

        # acknowledged: the sessions are empty now, and still there after
        # another kill -9
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
        proc = ws.mqrouter(port, script)
        s4 = Sub(port, "kill9-s4", v5=False)
        assert s4.present
        time.sleep(0.5)
        assert s4.got == [], s4.got
        # and the subscription is still there
        publish_all(port, "n")
        wait(lambda: len(s4.got) >= N, TIMEOUT, "messages on the kept subscription")
        s4.close()
    print("ok   persistent sessions survive kill -9 (paho 3.1.1, paho 5, mosquitto_sub -c)")


if __name__ == "__main__":
    main()
