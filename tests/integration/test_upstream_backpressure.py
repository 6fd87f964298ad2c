#!/usr/bin/python3
"""Backpressure instead of EFULL: publishers faster than an upstream session
can forward are paused, not refused, and nothing acknowledged is lost.

qos1_overload: two raw MQTT 3.1.1 clients publish QoS 1 on the listener for 4 s, as fast
as a window of 1 000 unacknowledged messages each allows; a route forwards
every message to a native session on a Mosquitto that lets the session
have 2 QoS 1 messages in flight (v5 Receive Maximum), so the session falls
behind at once. Its max_buffered is 200: from 100 waiting it pauses the
publisher being routed, and lets it go at 50. Before backpressure the
201st waiting message was refused with EFULL and a 3.1.1 publisher's
connection closed unacknowledged.

Checked: neither publisher's connection closes, the session refused nothing
(publish_full 0) and paused publishers (publishers_paused > 0), and every
message a publisher got a PUBACK for reaches a subscriber on Mosquitto.
Run again on the Paho transport, whose backlog is its QoS 1/2 publishes
not completed yet: persistent (its writes make it fall behind) in a
window of 1 000.

qos0_stalled_broker: the broker (a raw socket here, with a 4 KiB receive
buffer) accepts the session and then reads nothing for a while; one 3.1.1
client publishes 30 000 QoS 0 messages through a route into the session,
whose max_buffered_bytes is 64 KiB. The session's output grows past 32 KiB
and the publisher is paused instead of its messages being dropped; when
the broker reads again, every message reaches it, in order, and the
publisher's connection is still open. (Through that 4 KiB window the
backlog drains at about 0.5 MB/s here, TCP's pace with mqrouter idle:
hence 30 000 messages, not more.)"""
import re
import socket
import subprocess
import threading
import time

from mqr_it import Workspace, free_port, wait
from rawmqtt import PUBACK, Client, packet, packet_at, publish

SECONDS = 4
WINDOW = 1000
BATCH = 100

RULES = """
local mq = require "mqrouter"
local up = mq.session{ name = "up", broker = "tcp://127.0.0.1:UP_PORT", SETTINGS }
mq.route("load/#", function(msg)
  local ok, err = up:publish(msg.topic, msg.payload, { qos = msg.qos })
  if not ok then mq.log.warn("REFUSED " .. tostring(err)) end
end)
mq.route("status", function()
  local st = up:status()
  mq.log.info(("STATUS full=%d paused=%d delivered=%d"):format(
    st.publish_full, st.publishers_paused, st.delivered))
end)
mq.every(0.2, function()
  local st = up:status()
  mq.log.info(("EVERY paused=%d full=%d"):format(st.publishers_paused, st.publish_full))
end)
mq.on("session_ready", function(ev) mq.log.info("READY " .. ev.name) end)
"""


def rules(up, settings):
    return RULES.replace("UP_PORT", str(up)).replace("SETTINGS", settings)


class Publisher:
    """One 3.1.1 client: a writer thread keeps up to WINDOW QoS 1 messages
    unacknowledged, a reader thread takes the PUBACKs."""

    def __init__(self, port, name):
        self.name = name
        self.c = Client(port, timeout=30)
        self.c.login(name, version=4)
        self.lock = threading.Lock()
        self.room = threading.Semaphore(WINDOW)
        self.free = list(range(1, WINDOW + 1))
        self.unacked = {}  # packet id -> payload
        self.acked = set()  # payloads acknowledged
        self.sent = 0
        self.closed = False
        self.stop = False
        self.reader = threading.Thread(target=self.read)
        self.writer = threading.Thread(target=self.write)
        self.reader.start()
        self.writer.start()

    def write(self):
        end = time.time() + SECONDS
        seq = 0
        while time.time() < end and not self.closed:
            out = []
            for _ in range(BATCH):
                if not self.room.acquire(timeout=0.5):
                    break
                payload = f"{self.name}-{seq}"
                with self.lock:
                    pid = self.free.pop()
                    self.unacked[pid] = payload
                out.append(publish(f"load/{self.name}", payload.encode(), qos=1, pid=pid))
                seq += 1
            if out:
                self.c.send(b"".join(out))  # blocks while the listener is not reading
                self.sent = seq

    def read(self):
        while not self.stop:
            p = self.c.next(timeout=0.5)
            if p is None:
                continue
            if p == "closed":
                self.closed = True
                return
            if p[0] == PUBACK:
                pid = int.from_bytes(p[2][:2], "big")
                with self.lock:
                    self.acked.add(self.unacked.pop(pid))
                    self.free.append(pid)
                self.room.release()

    def finish(self):
        self.writer.join()
        wait(lambda: self.closed or not self.unacked, 60, f"{self.name}'s PUBACKs")
        self.stop = True
        self.reader.join()
        assert not self.closed, f"{self.name}: connection closed (refused for a full session?)"
        self.c.send(packet(0xE0, b""))
        self.c.close()


def qos1_overload(transport, upstream_conf, settings):
    with Workspace() as ws:
        up, port = free_port(), free_port()
        ws.mosquitto(up, upstream_conf + "max_queued_messages 10000000\n")
        out = open(ws.path("sub.out"), "w")
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(up), "-q", "1",
                                "-i", "bp-sub", "-t", "load/#", "-t", "probe"], stdout=out)
        ws.procs.append(sub)

        def received():
            with open(ws.path("sub.out")) as f:
                return set(f.read().split())

        def probe_seen():
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(up), "-t", "probe",
                            "-m", "probe"], check=True)
            return "probe" in received()

        wait(probe_seen, 10, "the subscriber on Mosquitto")
        ws.mqrouter(port, ws.write("rules.lua", rules(
            up, f'version = 5, max_buffered = 200, transport = "{transport}", {settings}')))
        wait(lambda: "READY up" in ws.log(), 10, "the session to be ready")

        pubs = [Publisher(port, f"p{i}") for i in range(2)]
        for p in pubs:
            p.finish()
        sent = sum(p.sent for p in pubs)
        acked = set().union(*(p.acked for p in pubs))
        assert len(acked) == sent, f"{sent} sent, {len(acked)} acknowledged"

        status = Client(port)
        status.login("bp-status", version=4)
        status.send(publish("status", b"", qos=0))
        wait(lambda: "STATUS " in ws.log(), 5, "the session's status")
        full, paused = map(int, re.search(r"STATUS full=(\d+) paused=(\d+)", ws.log()).groups())
        assert full == 0, f"the session refused {full} publishes"
        assert paused > 0, "the session never paused a publisher"
        assert "REFUSED" not in ws.log(), "up:publish failed"

        wait(lambda: acked <= received(), 60, "every acknowledged message on Mosquitto")
        status.close()
        print(f"ok ({transport}): {sent} messages in {SECONDS} s from 2 publishers, all "
              f"acknowledged and delivered; publishers paused {paused} times, nothing refused")


class StalledBroker:
    """Accepts one MQTT 3.1.1 client, answers its CONNECT, reads nothing
    more until go() is called, then counts the PUBLISH payloads."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.go_ev = threading.Event()
        self.payloads = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        conn, _ = self.ls.accept()
        conn.settimeout(60)
        buf = b""
        connected = False
        while True:
            if connected and not self.go_ev.is_set():
                self.go_ev.wait(60)
            d = conn.recv(65536)
            if not d:
                return
            buf += d
            pos = 0
            while (whole := packet_at(buf, pos)):
                first, body, pos = whole
                kind = first >> 4
                if kind == 1:
                    conn.sendall(b"\x20\x02\x00\x00")
                    connected = True
                elif kind == 3:
                    tl = int.from_bytes(body[:2], "big")
                    self.payloads.append(body[2 + tl:])
                elif kind == 12:
                    conn.sendall(b"\xd0\x00")
            buf = buf[pos:]

    def go(self):
        self.go_ev.set()


def qos0_stalled_broker():
    n = 30000
    broker = StalledBroker()
    with Workspace() as ws:
        port = free_port()
        ws.mqrouter(port, ws.write("rules.lua", rules(
            broker.port, 'persist = false, max_buffered_bytes = 65536, transport = "native"')))
        wait(lambda: "READY up" in ws.log(), 10, "the session to be ready")

        pub = Client(port, timeout=60)
        pub.login("bp-q0", version=4)
        sent = [f"m{i:06d}".encode() + b"." * 57 for i in range(n)]

        def send_all():
            for k in range(0, n, 500):
                pub.send(b"".join(publish("load/q0", m) for m in sent[k:k + 500]))

        sender = threading.Thread(target=send_all)
        sender.start()
        wait(lambda: re.search(r"EVERY paused=[1-9]", ws.log()), 20,
             "the publisher to be paused while the broker reads nothing")
        assert not broker.payloads, "the broker read before it was let go"
        broker.go()
        sender.join(60)
        assert not sender.is_alive(), "the publisher could not send everything"
        wait(lambda: len(broker.payloads) >= n, 60, "every QoS 0 message at the broker")
        assert broker.payloads == sent, "QoS 0 messages lost, duplicated or out of order"
        pub.ping()  # still connected
        full = re.findall(r"EVERY paused=\d+ full=(\d+)", ws.log())[-1]
        assert full == "0", f"the session refused {full} QoS 0 publishes"
        pub.close()
        print(f"ok: {n} QoS 0 messages through a broker that stalled: publisher paused, "
              "none dropped, all in order")


qos0_stalled_broker()
qos1_overload("native", "max_inflight_messages 2\n", "persist = false")
# Paho with a window of 2 sends about two messages a second once it is
# full (its send thread waits for the receive thread's poll); it falls
# behind here for its persistence writes instead, in a window of 1 000.
qos1_overload("paho", "max_inflight_messages 1000\n", "persist = true")
