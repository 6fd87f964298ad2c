#!/usr/bin/python3
"""A subscriber that stops reading, against the mqrouter binary: a
publisher sends 40 MB of QoS 0 messages that the stalled subscriber should
get. Its output bound (max_out_bytes, 8 MiB by default) is hit, QoS 0
messages to it are dropped (not buffered without limit: the server's RSS
stays bounded), while a second, reading subscriber gets every message and
the publisher is never held back. Once the stalled one reads again it gets
what was kept and still answers a ping. (QoS >= 1 to a stalled client is
the sessions code's backpressure, tested there.)"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqr_it  # noqa: E402
from rawmqtt import PUBLISH, Client, publish  # noqa: E402

N = 40000
SIZE = 1000


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    with mqr_it.Workspace() as ws:
        port = mqr_it.free_port()
        proc = ws.mqrouter(port, ws.write("rules.lua", "-- no rules\n"))
        stalled = Client(port, rcvbuf=16384)
        stalled.login("stalled")
        stalled.sub("flood")
        good = Client(port)
        good.login("good")
        good.sub("flood")
        pub = Client(port)
        pub.login("pub")
        rss0 = rss_kb(proc.pid)

        got = [0]
        one = len(publish("flood", b"x" * SIZE))

        def read_good():
            # every packet is the same PUBLISH: count bytes, parse nothing
            n = 0
            good.sock.settimeout(5)
            while n < N * one:
                try:
                    d = good.sock.recv(1 << 20)
                except OSError:
                    break
                if not d:
                    break
                n += len(d)
            got[0] = n // one

        t = threading.Thread(target=read_good, daemon=True)
        t.start()
        payload = b"x" * SIZE
        t0 = time.monotonic()
        batch = b"".join(publish("flood", payload) for _ in range(100))
        for _ in range(N // 100):
            pub.send(batch)
            time.sleep(0.005)  # 20k msgs/s: well within what the reader keeps up with
        send_s = time.monotonic() - t0
        t.join(30)
        rss1 = rss_kb(proc.pid)
        print(f"published {N} x {SIZE} B in {send_s:.2f} s; the reading subscriber got {got[0]}; "
              f"server RSS {rss0} -> {rss1} kB")
        assert got[0] == N, f"the reading subscriber lost {N - got[0]} messages"
        # 40 MB were addressed to the stalled client; at most the 8 MiB
        # bound (plus allocator slack) may be held for it
        with open(f"/proc/{proc.pid}/maps") as f:
            sanitized = "asan" in f.read()  # quarantine and redzones: RSS means little
        if not sanitized:
            assert rss1 - rss0 < 24 * 1024, f"server grew by {rss1 - rss0} kB"
        pub.ping()

        # the stalled client drains what was kept, then works normally
        kept = 0
        while True:
            p = stalled.next(1.0)
            if p in (None, "closed"):
                break
            if p[0] == PUBLISH:
                kept += 1
        print(f"the stalled subscriber got {kept} of {N} once it read (the rest dropped)")
        assert p is None, "the stalled subscriber was disconnected"
        assert 0 < kept < N
        stalled.ping()
        print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
