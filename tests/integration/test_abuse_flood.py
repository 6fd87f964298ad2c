#!/usr/bin/python3
"""A connection flood against the mqrouter binary: 2000 connections in a
burst, half of them sending CONNECT, half never saying anything. The
listener must answer every CONNECT, close every silent socket when its
connect timeout (10 s by default) runs out and not before, and meanwhile
keep serving a well-behaved publisher/subscriber pair: every probe message
arrives, in order, with bounded latency. The refusals of the connection
limits (max_connections, connect_rate) are tested in
tests/c/test_listener_limits.c, where the options can be set."""
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


def main():
    raise_nofile()
    with mqr_it.Workspace() as ws:
        port = mqr_it.free_port()
        ws.mqrouter(port, ws.write("rules.lua", "-- no rules\n"))
        probe = Probe(port)
        probe.start()
        time.sleep(0.3)

        sel = selectors.DefaultSelector()
        socks = []
        t0 = time.monotonic()
        for i in range(FLOOD):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, i)
        talkers = set(range(0, FLOOD, 2))
        connacked, closed_at = set(), {}
        buf = {}
        deadline = t0 + CONNECT_TIMEOUT_S + 5
        while time.monotonic() < deadline and (len(connacked) < len(talkers)
                                               or len(closed_at) < FLOOD - len(talkers)):
            for key, ev in sel.select(0.2):
                i, s = key.data, key.fileobj
                if ev & selectors.EVENT_WRITE:
                    if i in talkers:
                        s.send(connect(f"flood-{i}"))
                    sel.modify(s, selectors.EVENT_READ, i)
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
                if len(buf[i]) >= 4:
                    assert buf[i][:4] == b"\x20\x02\x00\x00", f"CONNACK of {i}: {buf[i]!r}"
                    connacked.add(i)
        probe.stop.set()
        probe.join(5)
        probe.reader.join(5)

        silent_closed = [closed_at[i] for i in closed_at if i not in talkers]
        talker_closed = [i for i in closed_at if i in talkers]
        print(f"flood: {len(connacked)}/{len(talkers)} CONNACKs, "
              f"{len(silent_closed)}/{FLOOD - len(talkers)} silent sockets closed "
              f"(first at {min(silent_closed, default=0):.1f} s, last at "
              f"{max(silent_closed, default=0):.1f} s), {len(talker_closed)} clients closed")
        lat = sorted(probe.lat)
        p50 = lat[len(lat) // 2] * 1000 if lat else 0
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0
        mx = lat[-1] * 1000 if lat else 0
        print(f"probe: sent {probe.sent}, received {len(lat)}, in order {probe.order_ok}, "
              f"latency ms p50 {p50:.2f} p99 {p99:.2f} max {mx:.2f}")

        assert len(connacked) == len(talkers), "a CONNECT went unanswered"
        assert not talker_closed, f"connected clients were closed: {talker_closed[:5]}"
        assert len(silent_closed) == FLOOD - len(talkers), "silent sockets left open"
        assert min(silent_closed) >= CONNECT_TIMEOUT_S - 1.0, "closed before the connect timeout"
        assert max(silent_closed) <= CONNECT_TIMEOUT_S + 2.0, "closed long after the timeout"
        assert len(lat) == probe.sent, f"probe lost {probe.sent - len(lat)} messages"
        assert probe.order_ok, "probe messages out of order"
        assert p99 < 250, f"probe p99 latency {p99:.1f} ms during the flood"
        assert mx < 1000, f"probe max latency {mx:.1f} ms during the flood"
        for s in socks:
            s.close()
        # the server is still fine
        c = Client(port)
        c.login("after")
        c.ping()
        print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
