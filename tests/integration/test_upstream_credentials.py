#!/usr/bin/python3
"""The credentials hook of an upstream session runs before every connect
attempt and its answer is what the next CONNECT carries: against a
Mosquitto with a password file, the first answer is wrong (refused), the
retry asks again, gets the right password and connects; a message then
crosses the session."""
import os
import subprocess
import threading

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait, wait_port

RULES = """
local mq = require "mqrouter"
local calls = 0
local up = mq.session{{ name = "up", broker = "tcp://127.0.0.1:{up}",
                        reconnect = {{ initial = 1, max = 1 }},
                        username = "ignored", password = "ignored",
                        credentials = function(info)
                          calls = calls + 1
                          mq.log.info("CRED " .. info.name .. " " .. info.attempt)
                          if calls == 1 then return "bot", "expired-token" end
                          return "bot", "fresh-token"
                        end }}
mq.on("session_ready", function(ev)
  mq.log.info("READY " .. ev.name)
  assert(up:publish("hello/up", "via refreshed credentials", {{ qos = 1 }}))
end)
"""

with Workspace() as ws:
    up, port = free_port(), free_port()
    pw = ws.path("passwords")
    subprocess.run(["mosquitto_passwd", "-b", "-c", pw, "bot", "fresh-token"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["mosquitto_passwd", "-b", pw, "watcher", "w"], check=True)
    conf = ws.write("mosq.conf", f"listener {up} 127.0.0.1\nallow_anonymous false\n"
                                 f"password_file {pw}\n"
                                 + ("user root\n" if os.geteuid() == 0 else ""))
    log = open(ws.path("mosq.log"), "ab")
    ws.procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=log,
                                     stderr=log))
    wait_port(up)

    got = []
    subscribed = threading.Event()
    w = mqtt.Client()
    w.username_pw_set("watcher", "w")
    w.on_connect = lambda c, u, f, rc: c.subscribe("hello/#", qos=1)
    w.on_subscribe = lambda *a: subscribed.set()
    w.on_message = lambda c, u, m: got.append(m.payload)
    w.connect("127.0.0.1", up)
    w.loop_start()
    assert subscribed.wait(10)

    ws.mqrouter(port, ws.write("rules.lua", RULES.format(up=up)))
    wait(lambda: "READY up" in ws.log(), 15, "the session to connect with fresh credentials")
    text = ws.log()
    assert "CRED up 0" in text and "CRED up 1" in text, text
    assert text.index("CRED up 1") < text.index("READY up")
    # the first attempt was refused: the broker saw a bad password
    wait(lambda: got == [b"via refreshed credentials"], 10, "the message through the session")
    print("ok: refused with the first credentials, connected with the hook's fresh ones")
    w.loop_stop()
