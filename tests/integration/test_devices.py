#!/usr/bin/python3
"""The device registry and tenants with real clients: a registered device
goes online when a paho client with its id connects and offline when it
disconnects, when its socket drops and when its keep-alive lapses (a raw
client that stops talking); its message and byte counters count what it
published and received; device_online/device_offline reach mq.on; devices
survive a restart; two tenants' paho clients (users with a tenant) see
only their own topics, under a mountpoint the rest of the engine sees."""
import json
import signal
import subprocess
import time

import paho.mqtt.client as mqtt

from mqr_it import BIN, Workspace, free_port, wait
from mqtt_raw import Client, connect_v5

failures = []


def check(name, fn):
    try:
        fn()
        print("ok  ", name)
    except Exception as e:  # noqa: BLE001 - report every case
        failures.append(name)
        print("FAIL", name, "-", repr(e))


RULES = r"""
local mq = require "mqrouter"
local cjson = require "cjson"
mq.devices.register{ id = "sensor-1", name = "Sensor", type = "sensor" }
mq.devices.register{ id = "sleepy", type = "sensor" }
mq.devices.register{ id = "a-dev", tenant = "acme", type = "sensor" }
if not mq.users.tenant("alice") then
  assert(mq.users.add("alice", "pw-a", 4096))
  assert(mq.users.add("bob", "pw-b", 4096))
  assert(mq.users.tenant("alice", "acme"))
  assert(mq.users.tenant("bob", "globex"))
end
mq.on("device_online", function(ev) mq.publish("events", "online " .. ev.id) end)
mq.on("device_offline", function(ev) mq.publish("events", "offline " .. ev.id .. ": " .. ev.reason) end)
-- ask/<tenant or _>/<id> -> answer: the device as JSON
mq.route("ask/+/+", function(m)
  local t, id = m.topic:match("ask/([^/]+)/(.+)")
  local d = mq.devices.get(id, t ~= "_" and t or nil)
  mq.publish("answer", d and cjson.encode(d) or "none")
end)
"""


class Observer:
    """An anonymous client (no tenant) that sees every topic."""

    def __init__(self, port):
        self.msgs = []
        self.c = mqtt.Client(client_id="observer", protocol=mqtt.MQTTv311)
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload.decode()))
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("#")
        self.c.loop_start()
        wait(lambda: self.c.is_connected(), 5, "observer connected")
        time.sleep(0.2)

    def device(self, id, tenant="_"):
        n = len(self.msgs)
        self.c.publish(f"ask/{tenant}/{id}", "?")
        wait(lambda: any(t == "answer" for t, _ in self.msgs[n:]), 5, "answer")
        p = [p for t, p in self.msgs[n:] if t == "answer"][0]
        return None if p == "none" else json.loads(p)

    def events(self):
        return [p for t, p in self.msgs if t == "events"]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def paho(port, client_id, user=None, pw=None, v5=False):
    c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if user:
        c.username_pw_set(user, pw)
    c.got = []
    c.on_message = lambda cl, u, m: cl.got.append((m.topic, m.payload.decode()))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    wait(lambda: c.is_connected(), 10, f"{client_id} connected")
    return c


def main():
    port = free_port()
    with Workspace() as ws:
        rules = ws.write("rules.lua", RULES)
        # a user of tenant acme added from the command line
        r = subprocess.run([BIN, "--data-dir", ws.path("data"), "--add-user", "carol",
                            "--tenant", "acme"], input="pw-c\n", capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        router = ws.mqrouter(port, rules)
        obs = Observer(port)

        def online_offline_counters():
            assert obs.device("sensor-1")["status"] == "unknown"
            c = paho(port, "sensor-1")
            wait(lambda: obs.device("sensor-1")["status"] == "online", 5, "online")
            c.subscribe("cmd/#")
            time.sleep(0.2)
            for i in range(5):
                c.publish("data/sensor-1", "x" * 10).wait_for_publish()
            obs.c.publish("cmd/sensor-1", "reboot")
            wait(lambda: ("cmd/sensor-1", "reboot") in c.got, 5, "command delivered")
            d = obs.device("sensor-1")
            assert d["msgs_in"] == 5, d
            assert d["bytes_in"] >= 5 * (2 + 2 + 13 + 10), d
            assert d["msgs_out"] == 1, d
            assert d["last_seen"] > 0, d
            c.disconnect()
            c.loop_stop()
            wait(lambda: obs.device("sensor-1")["status"] == "offline", 5, "offline")
            assert "online sensor-1" in obs.events(), obs.events()
            assert "offline sensor-1: DISCONNECT" in obs.events(), obs.events()

        def dropped_socket():
            c = Client(port)
            c.send(connect_v5("sensor-1"))
            assert c.read_packet()[0] >> 4 == 2  # CONNACK
            wait(lambda: obs.device("sensor-1")["status"] == "online", 5, "online")
            c.close()
            wait(lambda: obs.device("sensor-1")["status"] == "offline", 5, "offline after drop")

        def keepalive_lapse():
            c = Client(port)
            c.send(connect_v5("sleepy", keepalive=1))  # lapses after 1.5 s of silence
            assert c.read_packet()[0] >> 4 == 2
            wait(lambda: obs.device("sleepy")["status"] == "online", 5, "online")
            t0 = time.time()
            wait(lambda: obs.device("sleepy")["status"] == "offline", 6, "keep-alive lapse")
            assert time.time() - t0 >= 1.0
            assert "offline sleepy: keep-alive timeout" in obs.events(), obs.events()
            c.close()

        def tenants_isolated():
            a = paho(port, "a-dev", "alice", "pw-a")
            b = paho(port, "b-dev", "bob", "pw-b", v5=True)
            c = paho(port, "c-dev", "carol", "pw-c")
            a.subscribe("t/#")
            b.subscribe("t/#")
            c.subscribe("t/x")
            time.sleep(0.3)
            a.publish("t/x", "from-a").wait_for_publish()
            b.publish("t/x", "from-b").wait_for_publish()
            wait(lambda: ("t/x", "from-a") in a.got, 5, "a gets its own")
            wait(lambda: ("t/x", "from-b") in b.got, 5, "b gets its own")
            wait(lambda: ("acme/t/x", "from-a") in obs.msgs, 5, "observer sees acme/t/x")
            wait(lambda: ("globex/t/x", "from-b") in obs.msgs, 5, "observer sees globex/t/x")
            obs.c.publish("acme/t/cmd", "for-a")
            obs.c.publish("t/plain", "for-nobody")
            wait(lambda: ("t/cmd", "for-a") in a.got, 5, "a gets acme/t/cmd as t/cmd")
            wait(lambda: ("t/x", "from-a") in c.got, 5, "carol (acme too) gets alice's")
            time.sleep(0.3)
            assert a.got == [("t/x", "from-a"), ("t/cmd", "for-a")], a.got
            assert b.got == [("t/x", "from-b")], b.got
            # the tenant's device is found in its tenant only
            assert obs.device("a-dev", "acme")["status"] == "online"
            assert obs.device("a-dev") is None
            assert c.got == [("t/x", "from-a")], c.got
            for cl in (a, b, c):
                cl.disconnect()
                cl.loop_stop()
            wait(lambda: obs.device("a-dev", "acme")["status"] == "offline", 5, "a offline")

        def survives_restart():
            obs.close()
            router.send_signal(signal.SIGTERM)
            assert router.wait(timeout=10) == 0
            r2 = ws.mqrouter(port, rules)
            o2 = Observer(port)
            d = o2.device("sensor-1")
            assert d["status"] == "offline" and d["msgs_in"] == 5, d
            o2.close()
            del r2

        check("online, offline and counters from a paho client", online_offline_counters)
        check("offline when the socket drops", dropped_socket)
        check("offline when the keep-alive lapses", keepalive_lapse)
        check("two tenants' clients see only their own topics", tenants_isolated)
        check("devices and counters survive a restart", survives_restart)
    print(f"{5 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
