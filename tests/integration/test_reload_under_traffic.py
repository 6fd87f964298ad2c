#!/usr/bin/python3
"""10 000 QoS 1 messages published through the listener while the rules
file is rewritten 20 times: every message arrives exactly once."""
import threading
import time

import paho.mqtt.client as mqtt

from mqr_it import Workspace, free_port, wait

N = 10000
RELOADS = 20

RULES = """
local mq = require "mqrouter"
mq.route("in/#", function(msg)
  assert(mq.publish("out/{tag}", msg.payload, {{ qos = 1 }}))
end)
"""

with Workspace() as ws:
    port = free_port()
    script = ws.write("rules.lua", RULES.format(tag="v0"))
    ws.mqrouter(port, script)

    seen = {}
    lock = threading.Lock()

    def on_message(client, userdata, msg):
        with lock:
            seen[msg.payload] = seen.get(msg.payload, 0) + 1

    sub = mqtt.Client(client_id="reload-sub", protocol=mqtt.MQTTv311)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("out/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)

    pub = mqtt.Client(client_id="reload-pub", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(50)
    pub.connect("127.0.0.1", port)
    pub.loop_start()

    done = threading.Event()

    def reloader():
        for i in range(1, RELOADS + 1):
            ws.write("rules.lua", RULES.format(tag=f"v{i}"))
            time.sleep(0.15)  # past the watcher's debounce
        done.set()

    t = threading.Thread(target=reloader)
    t.start()
    infos = []
    for i in range(N):
        infos.append(pub.publish(f"in/{i % 7}", str(i).encode(), qos=1))
        if i % 500 == 0:
            time.sleep(0.05)  # spread the traffic over the reloads
    for info in infos:
        info.wait_for_publish(timeout=30)
    t.join()
    wait(lambda: len(seen) == N, timeout=30, what=f"{N} messages (have {len(seen)})")
    time.sleep(0.5)  # any duplicate would arrive by now
    dups = [k for k, v in seen.items() if v != 1]
    assert not dups, f"{len(dups)} messages delivered more than once"
    assert set(seen) == {str(i).encode() for i in range(N)}
    reloads = ws.log().count("reloaded ")
    assert reloads >= RELOADS - 2, f"only {reloads} reloads happened"
    print(f"ok: {N} messages exactly once across {reloads} reloads")
    pub.loop_stop()
    sub.loop_stop()
