#!/usr/bin/python3
"""test_sessions_qos: no loss and no duplicates with real clients.

- QoS 2 exactly once across reconnects: a paho publisher and a paho
  subscriber, both with persistent sessions (clean_session=False), exchange
  numbered QoS 2 messages while the test cuts each one's socket several
  times mid-flow; paho resends (DUP, PUBREL) after reconnecting and the
  subscriber must see every number exactly once.
- QoS 1 closed-loop load: bench/loadgen (4 publishers, 1 subscriber, QoS 1,
  MQTT 3.1.1 and 5) against the mqrouter binary must report lost=0: a full
  subscriber queue pauses the publishers instead of dropping. Every build
  has bench_loadgen (tests/CMakeLists.txt builds it when the benchmarks are
  off), so this runs in the sanitizer pass too.

Every wait is bounded; everything started is killed and removed on exit.
"""
import os
import re
import socket
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

TIMEOUT = 20
N = 400


def client(port, cid, on_message=None):
    c = mqtt.Client(cid, clean_session=False, protocol=mqtt.MQTTv311)
    c.reconnect_delay_set(1, 1)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    if on_message:
        c.on_message = on_message
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    assert connected.wait(TIMEOUT), "no CONNACK for " + cid
    return c


def cut(c):
    """Breaks the client's connection without DISCONNECT; paho reconnects."""
    s = c.socket()
    if s:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def qos2_exactly_once(port):
    got = {}
    lock = threading.Lock()

    def on_message(c, u, m):
        with lock:
            got[m.payload.decode()] = got.get(m.payload.decode(), 0) + 1

    sub = client(port, "eo-sub", on_message)
    r, mid = sub.subscribe("eo/#", 2)
    assert r == 0
    time.sleep(0.3)
    done = set()
    pub = client(port, "eo-pub")
    pub.on_publish = lambda c, u, mid: done.add(mid)
    infos = []
    for i in range(N):
        infos.append(pub.publish("eo/x", "%04d" % i, qos=2))
        if i in (60, 200, 330):
            cut(pub)
        if i in (120, 260):
            cut(sub)
        time.sleep(0.002)
    # (publish() while cut says "not connected" but keeps the message for
    # the reconnect: completion is what on_publish reports)
    mids = {info.mid for info in infos}
    wait(lambda: mids <= done, TIMEOUT, "every QoS 2 flow of the publisher to complete")
    wait(lambda: len(got) >= N, TIMEOUT, "%d distinct messages (have %d)" % (N, len(got)))
    time.sleep(1.0)  # a late duplicate would show up here
    with lock:
        missing = [i for i in range(N) if "%04d" % i not in got]
        twice = {k: v for k, v in got.items() if v != 1}
    assert not missing, "missing: %r" % missing[:10]
    assert not twice, "more than once: %r" % twice
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    print("ok   QoS 2 exactly once across reconnects (%d messages, sockets cut 5 times)" % N)


def loadgen_no_loss(port):
    build = os.environ.get("MQROUTER_BUILD", "")
    lg = os.path.join(build, "bench", "bench_loadgen")
    assert os.access(lg, os.X_OK), "no %s: tests/CMakeLists.txt builds it in every build" % lg
    for proto in ("4", "5"):
        r = subprocess.run([lg, "--port", str(port), "--qos", "1", "--protocol", proto,
                            "--duration", "2", "--warmup", "1", "--label", "mqrouter"],
                           capture_output=True, text=True, timeout=60)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
        assert r.returncode == 0 and line, "loadgen failed: %r %r" % (r.stdout, r.stderr)
        fields = dict(re.findall(r"(\w+)=(\S+)", line[0]))
        assert fields["status"] == "ok", line[0]
        assert int(fields["sent"]) > 10000, line[0]
        assert int(fields["lost"]) == 0, "QoS 1 messages lost: " + line[0]
        assert int(fields["sent"]) == int(fields["received"]), line[0]
        print("ok   QoS 1 closed-loop load, MQTT %s: %s msgs/s, p50 %s us, p99 %s us, lost 0" %
              ("3.1.1" if proto == "4" else "5", fields["msgs_per_s"], fields["p50_us"],
               fields["p99_us"]))


def main():
    with Workspace() as ws:
        script = ws.write("empty.lua", "-- no rules\n")
        port = free_port()
        ws.mqrouter(port, script)
        qos2_exactly_once(port)
        loadgen_no_loss(port)


if __name__ == "__main__":
    main()
