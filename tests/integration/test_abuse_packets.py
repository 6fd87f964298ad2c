#!/usr/bin/python3
"""Bad input against the mqrouter binary's listener, from raw sockets:
truncated packets, packets out of order (acks for packet ids not in use),
oversized and malformed packets. Each one is answered as the spec says
(v5: the reason code in PUBCOMP/PUBREL/DISCONNECT) and touches no other
client: a probe subscriber connected throughout gets every message
published around the abuse, and the server still answers a ping."""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqr_it  # noqa: E402
from rawmqtt import (CONNACK, DISCONNECT, PUBCOMP, PUBLISH, PUBREC, PUBREL, PUBACK,  # noqa: E402
                     Client, ack, connect, packet, publish, publish_fields, s, varint)

results = []


def reason(p):
    """The reason code of a v5 ack (absent means 0, 5.0 §3.4.2.1)."""
    return p[2][2] if len(p[2]) > 2 else 0


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, then fail
        results.append((name, e))
        print(f"FAIL {name}: {e!r}")


def main():
    with mqr_it.Workspace() as ws:
        port = mqr_it.free_port()
        ws.mqrouter(port, ws.write("rules.lua", "-- no rules\n"))

        probe = Client(port)
        probe.login("probe")
        probe.sub("probe/#")
        pub = Client(port)
        pub.login("probe-pub")
        seq = [0]

        def probe_ok():
            """A message through the server, to the probe, in order."""
            seq[0] += 1
            pub.send(publish("probe/x", str(seq[0]).encode()))
            while True:
                p = probe.expect(PUBLISH, 3)
                topic, payload = publish_fields(p[2], p[1])
                if payload == str(seq[0]).encode():
                    return

        def truncated_then_keepalive():
            c = Client(port)
            c.login("trunc", keepalive=1)
            whole = publish("t/x", b"y" * 100)
            c.send(whole[:20])  # and never the rest
            t0 = time.time()
            c.expect_closed(4)  # 1.5 x keep-alive of silence
            assert time.time() - t0 >= 1.0, "closed before the keep-alive ran out"
            probe_ok()

        def truncated_then_close():
            c = Client(port)
            c.login("trunc2")
            c.send(publish("t/x", b"y" * 5000)[:3000])
            c.close()
            probe_ok()

        def truncated_connect():
            # half a CONNECT, then the client goes away: nothing to answer
            c = Client(port)
            c.send(connect("half")[:7])
            c.close()
            probe_ok()

        def unknown_ids_v5():
            c = Client(port)
            c.login("odd5", version=5)
            c.send(ack(PUBREL, 77, 5, 0))
            p = c.expect(PUBCOMP)
            assert p[2][:2] == struct.pack("!H", 77) and p[2][2] == 0x92, p
            c.send(ack(PUBREC, 78, 5, 0))
            p = c.expect(PUBREL)
            assert p[2][:2] == struct.pack("!H", 78) and p[2][2] == 0x92, p
            c.send(ack(PUBACK, 79, 5, 0))  # nothing to answer
            c.send(ack(PUBCOMP, 80, 5, 0))
            c.ping()
            c.close()
            probe_ok()

        def unknown_ids_v4():
            c = Client(port)
            c.login("odd4")
            c.send(ack(PUBREL, 5, 4))
            p = c.expect(PUBCOMP)  # 3.1.1: a plain PUBCOMP (no reason codes)
            assert p[2] == struct.pack("!H", 5), p
            c.send(ack(PUBACK, 6, 4))
            c.ping()
            c.close()
            probe_ok()

        def qos2_before_pubrel_v5():
            # PUBREL before its PUBLISH, then the PUBLISH: exactly one delivery
            c = Client(port)
            c.login("order5", version=5)
            c.send(ack(PUBREL, 9, 5, 0))
            assert reason(c.expect(PUBCOMP)) == 0x92
            c.send(publish("probe/q2", b"once", qos=2, pid=9, version=5))
            c.expect(PUBREC)
            c.send(ack(PUBREL, 9, 5, 0))
            assert reason(c.expect(PUBCOMP)) == 0
            p = probe.expect(PUBLISH, 3)
            assert publish_fields(p[2], p[1])[1] == b"once"
            c.close()

        def oversized_v5():
            c = Client(port)
            c.login("big5", version=5)
            # a header that announces 2 MiB (default limit 1 MiB): refused as
            # soon as the length is known, without the body
            c.send(bytes([0x30]) + varint(2 * 1024 * 1024) + s("t") + b"\x00" + b"z" * 100)
            p = c.expect(DISCONNECT)
            assert p[2][0] == 0x95, p
            c.expect_closed()
            probe_ok()

        def oversized_v4():
            c = Client(port)
            c.login("big4")
            c.send(bytes([0x30]) + varint(2 * 1024 * 1024) + s("t") + b"z" * 100)
            c.expect_closed()
            probe_ok()

        def bad_remaining_length():
            c = Client(port)
            c.login("varint5", version=5)
            c.send(b"\x30\xff\xff\xff\xff\x01")  # five-byte Remaining Length
            p = c.expect(DISCONNECT)
            assert p[2][0] == 0x81, p
            probe_ok()

        def reserved_type():
            c = Client(port)
            c.login("zero")
            c.send(b"\x00\x00")
            c.expect_closed()
            probe_ok()

        def garbage_before_connect():
            # an HTTP client on the MQTT port: "GE" reads as a PUBACK of 69
            # bytes, not a CONNECT
            c = Client(port)
            c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/7.88.1\r\n"
                   b"Accept: */*\r\n\r\n")
            c.expect_closed()
            probe_ok()

        def subscribe_qos3():
            c = Client(port)
            c.login("q3", version=5)
            c.send(packet(0x82, struct.pack("!H", 1) + b"\x00" + s("a/b") + b"\x03"))
            p = c.expect(DISCONNECT)
            assert p[2][0] == 0x82, p  # 5.0 §3.8.3.1: QoS 3 is a Protocol Error
            probe_ok()

        def connect_twice():
            c = Client(port)
            c.login("twice", version=5)
            c.send(connect("twice", 5))
            p = c.expect(DISCONNECT)
            assert p[2][0] == 0x82, p
            probe_ok()

        def publish_before_connack_wait():
            # CONNECT and PUBLISH in one write: both handled, in order
            c = Client(port)
            c.send(connect("eager") + publish("probe/eager", b"early"))
            assert c.expect(CONNACK)[2][1] == 0
            p = probe.expect(PUBLISH, 3)
            assert publish_fields(p[2], p[1])[1] == b"early"
            c.close()

        for name, fn in [
            ("truncated PUBLISH, then silence: keep-alive closes", truncated_then_keepalive),
            ("truncated PUBLISH, then close", truncated_then_close),
            ("truncated CONNECT, then close", truncated_connect),
            ("v5 acks for unknown packet ids: 0x92", unknown_ids_v5),
            ("3.1.1 acks for unknown packet ids", unknown_ids_v4),
            ("v5 PUBREL before its PUBLISH", qos2_before_pubrel_v5),
            ("v5 oversized PUBLISH: DISCONNECT 0x95", oversized_v5),
            ("3.1.1 oversized PUBLISH: closed", oversized_v4),
            ("bad Remaining Length: DISCONNECT 0x81", bad_remaining_length),
            ("reserved packet type 0: closed", reserved_type),
            ("HTTP request instead of CONNECT: closed", garbage_before_connect),
            ("SUBSCRIBE with QoS 3: DISCONNECT 0x82", subscribe_qos3),
            ("second CONNECT: DISCONNECT 0x82", connect_twice),
            ("CONNECT and PUBLISH in one write", publish_before_connack_wait),
        ]:
            check(name, fn)
        check("probe still served", probe_ok)
        probe.ping()
    failed = [n for n, e in results if e]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
