#!/usr/bin/python3
"""`mqrouter rules.lua` with upstream sessions over TLS, declared with
mq.session{ tls = {...} }: to a Mosquitto whose TLS listener requires a
client certificate (ssl://), and to a second mqrouter serving MQTT over
WebSocket over TLS, also requiring one (wss://). Listener traffic is
forwarded to both brokers and their commands come back. A session with the
wrong CA never connects and the log says why. Certificates are made here
with the openssl command line."""
import os
import subprocess
import threading

import paho.mqtt.client as mqtt

from mqr_it import BIN, Workspace, free_port, wait, wait_port

RULES = """
local mq = require "mqrouter"
local tls = {{ cafile = "{d}/ca.pem", cert = "{d}/client.pem", key = "{d}/client.key" }}
local sessions = {{
  mq.session{{ name = "mosq", broker = "ssl://127.0.0.1:{mosq_tls}", tls = tls }},
  mq.session{{ name = "ws", broker = "wss://localhost:{wss}/mqtt", tls = tls }},
}}
mq.session{{ name = "wrongca", broker = "ssl://127.0.0.1:{mosq_tls}",
             tls = {{ cafile = "{d}/other.pem", cert = "{d}/client.pem", key = "{d}/client.key" }},
             reconnect = {{ initial = 1, max = 1 }} }}
mq.route("sensors/#", function(msg)
  if msg.origin ~= "listener" then return end
  for _, s in ipairs(sessions) do
    assert(s:publish("edge/" .. msg.topic, msg.payload, {{ qos = 1 }}))
  end
end)
for _, s in ipairs(sessions) do
  s:route("cmd/#", function(msg)
    mq.publish("local/" .. msg.source .. "/" .. msg.topic, msg.payload)
  end, {{ qos = 1 }})
end
-- connected and its subscriptions answered by the broker
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
"""


def make_certs(d):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=mqr-it-ca")
    openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2",
            "-subj", "/CN=mqr-it-other")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subj, ext in (("server", "/CN=localhost", ["-extfile", "san.cnf"]),
                            ("client", "/CN=mqr-edge", [])):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", subj)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", *ext)


def collector(port, topic):
    got = []
    ev = threading.Event()
    c = mqtt.Client()
    c.on_connect = lambda cl, ud, fl, rc: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: ev.set()
    c.on_message = lambda cl, ud, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ev.wait(10), "subscription not acknowledged"
    return c, got


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


with Workspace() as ws:
    d = ws.dir
    make_certs(d)
    mosq_plain, mosq_tls = free_port(), free_port()
    conf = ws.write("mosquitto.conf", "\n".join([
        f"listener {mosq_plain} 127.0.0.1", "allow_anonymous true", "persistence false",
        f"listener {mosq_tls} 127.0.0.1", f"cafile {d}/ca.pem", f"certfile {d}/server.pem",
        f"keyfile {d}/server.key", "require_certificate true",
        # as root it would switch to its own user, who cannot read our files
        "user root" if os.geteuid() == 0 else "", ""]))
    mlog = open(ws.path("mosquitto.log"), "ab")
    ws.procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=mlog,
                                     stderr=mlog))
    wait_port(mosq_plain)
    wait_port(mosq_tls)

    # the WebSocket-over-TLS broker: another mqrouter
    far_plain, wss = free_port(), free_port()
    flog = open(ws.path("far.log"), "ab")
    ws.procs.append(subprocess.Popen(
        [BIN, "--listen", f"127.0.0.1:{far_plain}", "--listen-wss", f"127.0.0.1:{wss}",
         "--cert", f"{d}/server.pem", "--key", f"{d}/server.key", "--cafile", f"{d}/ca.pem",
         "--require-cert", "--data-dir", ws.path("far-data"), ws.write("far.lua", "-- none\n")],
        stdout=flog, stderr=flog))
    wait_port(far_plain)
    wait_port(wss)

    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES.format(d=d, mosq_tls=mosq_tls, wss=wss)))
    for name in ("mosq", "ws"):
        wait(lambda: f"READY {name}" in ws.log(), 15, f"session {name}, subscribed")

    mosq_sub, mosq_got = collector(mosq_plain, "edge/#")
    far_sub, far_got = collector(far_plain, "edge/#")
    local_sub, local_got = collector(port, "local/#")

    pub = mqtt.Client()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    for i in range(10):
        pub.publish("sensors/t%d" % i, str(i), qos=1).wait_for_publish(10)
    wait(lambda: len(mosq_got) == 10 and len(far_got) == 10, 10, "10 messages on each broker")
    for got in (mosq_got, far_got):
        assert sorted(int(p) for _, p in got) == list(range(10)), got
        assert all(t.startswith("edge/sensors/t") for t, _ in got), got
    print("ok: listener -> route -> ssl:// and wss:// sessions -> brokers")

    for bport in (mosq_plain, far_plain):
        c = mqtt.Client()
        c.connect("127.0.0.1", bport)
        c.loop_start()
        c.publish("cmd/reboot", "now-%d" % bport, qos=1).wait_for_publish(10)
        c.disconnect()
        c.loop_stop()
    wait(lambda: len(local_got) == 2, 10, "both commands back on the listener")
    assert sorted(local_got) == sorted([("local/mosq/cmd/reboot", b"now-%d" % mosq_plain),
                                        ("local/ws/cmd/reboot", b"now-%d" % far_plain)]), local_got
    print("ok: brokers -> ssl:// and wss:// session routes -> listener")

    wait(lambda: "session 'wrongca': cannot connect" in ws.log(), 10, "the wrong CA to fail")
    line = next(l for l in ws.log().splitlines() if "session 'wrongca': cannot connect" in l)
    assert "TLS: certificate verify failed" in line, line
    assert "session 'wrongca' connected" not in ws.log()
    print("ok: wrong CA refused:", line.split("WARN ")[-1])
    for c in (pub, mosq_sub, far_sub, local_sub):
        c.loop_stop()

    # a clean stop with sessions open (under ASan: no use after free, no leak)
    router = ws.procs[-1]
    router.terminate()
    assert router.wait(timeout=15) == 0, ws.log()[-3000:]
    assert "AddressSanitizer" not in ws.log() and "LeakSanitizer" not in ws.log(), ws.log()[-3000:]
    print("ok: stopped cleanly")
