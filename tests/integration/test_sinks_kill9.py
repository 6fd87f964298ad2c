#!/usr/bin/python3
"""test_sinks_kill9: QoS 1 messages routed through a durable queue to two
sinks (a JSON lines file and a real Redis stream) all arrive across
`kill -9` of mqrouter itself.

The real mqrouter binary runs rules that put every message on in/# into a
durable queue, and mq.deliver writes each one to the file (write_sync: on
disk before the next step) and then XADDs it to the stream (the ack waits
for Redis' answer), one at a time so that delivery is slow. A paho client
publishes N QoS 1 messages; every PUBACK means the message is in the
queue's SQLite store. Right after the last PUBACK, while deliveries are
still running, mqrouter gets SIGKILL; it is started again on the same data
directory. Then every message is in both sinks: at least once, with the
duplicates (a message written but not acked before the kill) counted and
printed, never a loss. Every wait is bounded; everything started is
stopped and removed on exit.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import Workspace, free_port, wait  # noqa: E402

try:
    import paho.mqtt.client as mqtt
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import paho.mqtt.client as mqtt

N = 300

RULES = """
local mq = require "mqrouter"
local f = mq.file{ path = %(file)r, name = "audit" }
local r = mq.redis{ port = %(redis_port)d, name = "stream", timeout = 2 }
local q = mq.queue("out", { durable = true, max_attempts = 1000, backoff = { 0.05, 0.5 } })
mq.route("in/#", q)
mq.deliver(q, function(msg)
  local ok, err, name, kind = f:write_sync({ id = msg.id, payload = msg.payload })
  if not ok then return nil, err, name, kind end
  return r:command{ "XADD", "s", "*", "payload", msg.payload }
end, { concurrency = 1 })
"""


def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                         timeout=10)
    return out.stdout


def stream_payloads(port):
    out = redis_cli(port, "XRANGE", "s", "-", "+")
    lines = [line for line in out.splitlines() if line.startswith("m-")]
    return lines


def file_payloads(path):
    import json
    got = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    got.append(json.loads(line)["payload"])
                except ValueError:  # a half line a kill left: cut when the sink reopens
                    pass
    except FileNotFoundError:
        pass
    return got


def main():
    with Workspace() as ws:
        rport = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", ws.dir],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ws.procs.append(redis)
        wait(lambda: redis_cli(rport, "PING").strip() == "PONG", what="redis-server up")
        audit = ws.path("audit.jsonl")
        script = ws.write("rules.lua", RULES % {"file": audit, "redis_port": rport})
        port = free_port()
        router = ws.mqrouter(port, script)

        pub = mqtt.Client("sinks-kill9-pub", clean_session=True)
        pub.connect("127.0.0.1", port, 30)
        pub.loop_start()
        infos = [pub.publish("in/x", "m-%04d" % i, qos=1) for i in range(N)]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published(), "a QoS 1 publish was not acknowledged"
        pub.disconnect()
        pub.loop_stop()

        before = len(stream_payloads(rport))
        router.kill()  # SIGKILL, with deliveries still running
        router.wait(timeout=10)
        assert before < N, "every message was delivered before the kill: nothing was tested"

        ws.mqrouter(port, script)  # the same data directory: the queue comes back
        want = {"m-%04d" % i for i in range(N)}
        wait(lambda: want <= set(stream_payloads(rport)), timeout=30,
             what="every message in the Redis stream")
        wait(lambda: want <= set(file_payloads(audit)), timeout=10,
             what="every message in the file")
        stream, lines = stream_payloads(rport), file_payloads(audit)
        print("delivered before the kill: %d of %d; stream %d entries (%d duplicates), "
              "file %d lines (%d duplicates)" % (before, N, len(stream), len(stream) - N,
                                                  len(lines), len(lines) - N))
        # at most the message in flight and one acked whose ack the kill
        # kept from being committed
        assert len(stream) - N <= 2 and len(lines) - N <= 2, "more duplicates than expected"
        stats = redis_cli(rport, "XLEN", "s").strip()
        assert int(stats) == len(stream)
    print("ok")


if __name__ == "__main__":
    main()
