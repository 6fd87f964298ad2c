#!/usr/bin/python3
"""A connection flood against the mqrouter binary: 2000 connections in a
burst, half of them sending CONNECT, half never saying anything. The
listener must answer every CONNECT, close every silent socket when its
connect timeout (10 s by default) runs out and not before, and meanwhile
keep serving a well-behaved publisher/subscriber pair: every probe message
arrives, in order, with bounded latency. Then the same flood against a
second listener (declared in the rules with mq.listen) whose
max_connections is 600 and CONNECT timeout 3 s: the excess is refused
(closed at accept, or CONNACK 0x03 for the few read beyond the limit), the
admitted clients stay, the silent ones go after 3 s, and the probe on the
first listener does not notice. connect_rate and the v5 refusal codes are
tested in tests/c/test_listener_limits.c."""
import os
import resource
import selectors
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqr_it  # noqa: E402
from rawmqtt import PUBLISH, Client, connect, publish, publish_fields  # noqa: E402

FLOOD = 2000
CONNECT_TIMEOUT_S = 10.0  # the listener's default connect_timeout_ms


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= FLOOD + 200, "RLIMIT_NOFILE too low"


class Probe(threading.Thread):
    """Publishes a timestamped QoS 0 message every 10 ms and measures when
    the subscriber gets it."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sub = Client(port)
        self.sub.login("probe-sub")
        self.sub.sub("probe/t")
        self.pub = Client(port)
        self.pub.login("probe-pub")
        self.stop = threading.Event()
        self.sent = 0
        self.lat = []
        self.order_ok = True
        self.reader = threading.Thread(target=self.read, daemon=True)

    def run(self):
        self.reader.start()
        while not self.stop.is_set():
            self.sent += 1
            self.pub.send(publish("probe/t", struct.pack("!Qd", self.sent, time.monotonic())))
            time.sleep(0.01)

    def read(self):
        expect = 1
        while True:
            p = self.sub.next(2.0)
            if p is None:
                if self.stop.is_set() and expect > self.sent:
                    return
                continue
            if p == "closed":
                return
            if p[0] != PUBLISH:
                continue
            seq, t = struct.unpack("!Qd", publish_fields(p[2], p[1])[1])
            if seq != expect:
                self.order_ok = False
            expect = seq + 1
            self.lat.append(time.monotonic() - t)


def flood(port, n, seconds, prefix):
    """n connections in a burst to port, every other one sending CONNECT.
    Returns (talkers, {i: CONNACK reason}, {i: seconds until the server
    closed it}, sockets), watching for `seconds`."""
    sel = selectors.DefaultSelector()
    socks = []
    t0 = time.monotonic()
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
    talkers = set(range(0, n, 2))
    connack, closed_at, buf = {}, {}, {}
    deadline = t0 + seconds
    while time.monotonic() < deadline and len(connack) + len(closed_at) < n + len(talkers):
        for key, ev in sel.select(0.2):
            i, s = key.data, key.fileobj
            if ev & selectors.EVENT_WRITE:
                try:
                    if i in talkers:
                        s.send(connect(f"{prefix}-{i}"))
                    sel.modify(s, selectors.EVENT_READ, i)
                except OSError:  # refused at accept before we could write
                    closed_at[i] = time.monotonic() - t0
                    sel.unregister(s)
                continue
            try:
                d = s.recv(64)
            except (ConnectionResetError, BlockingIOError):
                d = b""
            if d == b"":
                closed_at[i] = time.monotonic() - t0
                sel.unregister(s)
                continue
            buf[i] = buf.get(i, b"") + d
            if len(buf[i]) >= 4 and i not in connack:
                assert buf[i][:3] == b"\x20\x02\x00", f"CONNACK of {i}: {buf[i]!r}"
                connack[i] = buf[i][3]
    sel.close()
    return talkers, connack, closed_at, socks


def probe_report(probe):
    lat = sorted(probe.lat)
    p50 = lat[len(lat) // 2] * 1000 if lat else 0
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0
    mx = lat[-1] * 1000 if lat else 0
    print(f"probe: sent {probe.sent}, received {len(lat)}, in order {probe.order_ok}, "
          f"latency ms p50 {p50:.2f} p99 {p99:.2f} max {mx:.2f}")
    assert len(lat) == probe.sent, f"probe lost {probe.sent - len(lat)} messages"
    assert probe.order_ok, "probe messages out of order"
    assert p99 < 250, f"probe p99 latency {p99:.1f} ms during the flood"
    assert mx < 1000, f"probe max latency {mx:.1f} ms during the flood"


LIMIT = 600
LIMIT_TIMEOUT_S = 3.0


def main():
    raise_nofile()
    with mqr_it.Workspace() as ws:
        port = mqr_it.free_port()
        port2 = mqr_it.free_port()
        # a second listener with a connection limit and a short CONNECT timeout
        rules = ws.write("rules.lua", f"""local mq = require "mqrouter"
mq.listen{{ host = "127.0.0.1", port = {port2}, max_connections = {LIMIT},
            connect_timeout_ms = {int(LIMIT_TIMEOUT_S * 1000)} }}
""")
        ws.mqrouter(port, rules)
        mqr_it.wait_port(port2)

        # ---- 1: the default listener (10 s CONNECT timeout, no tight limit)
        probe = Probe(port)
        probe.start()
        time.sleep(0.3)
        talkers, connack, closed_at, socks = flood(port, FLOOD, CONNECT_TIMEOUT_S + 5, "f1")
        probe.stop.set()
        probe.join(5)
        probe.reader.join(5)
        silent_closed = [closed_at[i] for i in closed_at if i not in talkers]
        talker_closed = [i for i in closed_at if i in talkers]
        print(f"flood 1: {len(connack)}/{len(talkers)} CONNACKs, "
              f"{len(silent_closed)}/{FLOOD - len(talkers)} silent sockets closed "
              f"(first at {min(silent_closed, default=0):.1f} s, last at "
              f"{max(silent_closed, default=0):.1f} s), {len(talker_closed)} clients closed")
        probe_report(probe)
        assert len(connack) == len(talkers), "a CONNECT went unanswered"
        assert all(r == 0 for r in connack.values()), "a CONNECT was refused"
        assert not talker_closed, f"connected clients were closed: {talker_closed[:5]}"
        assert len(silent_closed) == FLOOD - len(talkers), "silent sockets left open"
        assert min(silent_closed) >= CONNECT_TIMEOUT_S - 1.0, "closed before the connect timeout"
        assert max(silent_closed) <= CONNECT_TIMEOUT_S + 2.0, "closed long after the timeout"
        for s in socks:
            s.close()

        # ---- 2: the limited listener: the excess is refused, the rest served
        time.sleep(0.5)
        probe = Probe(port)
        probe.start()
        time.sleep(0.3)
        talkers, connack, closed_at, socks = flood(port2, FLOOD, LIMIT_TIMEOUT_S + 3, "f2")
        probe.stop.set()
        probe.join(5)
        probe.reader.join(5)
        ok = [i for i, r in connack.items() if r == 0]
        busy = [i for i, r in connack.items() if r == 3]  # 3.1.1: Server unavailable
        refused = [i for i in talkers if i not in connack and i in closed_at]
        silent_closed = [closed_at[i] for i in closed_at if i not in talkers]
        ok_closed = [i for i in ok if i in closed_at]
        print(f"flood 2 (max_connections {LIMIT}): {len(ok)} CONNACK 0, {len(busy)} CONNACK 3, "
              f"{len(refused)} closed without CONNACK, {len(silent_closed)} silent closed "
              f"(last at {max(silent_closed, default=0):.1f} s), {len(ok_closed)} clients closed")
        probe_report(probe)
        assert 0 < len(ok) <= LIMIT, "the limit let too many in"
        assert len(ok) + len(busy) + len(refused) == len(talkers), "a CONNECT went unanswered"
        assert len(refused) + len(busy) >= len(talkers) - LIMIT, "the excess was not refused"
        assert not ok_closed, "admitted clients were closed"
        assert len(silent_closed) == FLOOD - len(talkers), "silent sockets left open"
        assert max(silent_closed) <= LIMIT_TIMEOUT_S + 2.0, "silent sockets kept too long"
        for s in socks:
            s.close()
        # once the flood is gone the limited listener takes clients again
        time.sleep(0.5)
        c = Client(port2)
        c.login("after2")
        c.ping()
        c = Client(port)
        c.login("after")
        c.ping()
        print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
