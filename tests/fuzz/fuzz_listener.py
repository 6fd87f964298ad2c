#!/usr/bin/python3
"""fuzz_listener.py — throws random and mutated MQTT packet streams at a live
mqrouter listener and checks that it survives them: after every batch a
probe client still gets its own message through, and at the end the server
exits cleanly with no sanitizer report in its log. Meant for a build with
-DMQR_SANITIZE=ON (ASan + UBSan), where a memory error aborts the server
and the fuzzer says which stream did it (the stream is saved to a file so
the case can be replayed with --replay FILE).

ctest runs it for 8 s from a fixed seed (fuzz/listener_seed, so the same
first streams every build, under the sanitizers in that pass); longer runs
are by hand, for as long as you ask. Usage:

    cmake -S . -B build-asan -DMQR_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DMQR_BENCH=OFF
    cmake --build build-asan -j2 --target mqrouter
    tests/fuzz/fuzz_listener.py --bin build-asan/mqrouter --seconds 300

Streams: a valid session (CONNECT v3.1.1 or v5, SUBSCRIBE, PUBLISH at
QoS 0-2, acks, PINGREQ, UNSUBSCRIBE, DISCONNECT) built from a random
seed, then mutated: bit flips, byte overwrites, truncation, duplicated or
dropped slices, random Remaining Length bytes, or wholly random bytes;
sent in random-sized pieces, with the connection closed abruptly or left
to the server. It prints executions, distinct server answers seen, and
failures.
"""
import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "integration"))
from rawmqtt import (PUBLISH, Client, ack, connect, packet, publish,  # noqa: E402
                     publish_fields, s, subscribe, varint)

PUBREC, PUBREL, PUBCOMP, PUBACK = 5, 6, 7, 4


def v5props(rng):
    """A random but mostly well-formed v5 property block."""
    props = b""
    for _ in range(rng.randint(0, 3)):
        pid = rng.choice([0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x21, 0x22, 0x23, 0x26, 0x27])
        if pid in (0x01,):
            props += bytes([pid, rng.randint(0, 2)])
        elif pid in (0x02, 0x11, 0x27):
            props += bytes([pid]) + struct.pack("!I", rng.randint(0, 2**32 - 1))
        elif pid in (0x21, 0x22, 0x23):
            props += bytes([pid]) + struct.pack("!H", rng.randint(0, 70))
        elif pid == 0x0B:
            props += bytes([pid]) + varint(rng.randint(0, 300))
        elif pid == 0x26:
            props += bytes([pid]) + s("k" * rng.randint(0, 5)) + s("v" * rng.randint(0, 5))
        else:
            props += bytes([pid]) + s(rng.choice(["a/b", "", "text/plain", "x" * 40]))
    return varint(len(props)) + props


def session(rng):
    v = rng.choice([4, 5])
    out = [connect(f"fz{rng.randint(0, 50)}", v, keepalive=rng.choice([0, 1, 60]),
                   clean=rng.random() < 0.8)]
    if v == 5 and rng.random() < 0.5:
        # rebuild CONNECT with properties
        body = s("MQTT") + bytes([5, rng.choice([0, 2, 6, 0x2e, 0x36])]) + struct.pack("!H", 30)
        body += v5props(rng) + s(f"fz{rng.randint(0, 50)}")
        if body[7] & 4:
            body += v5props(rng) + s("will/t") + s(b"bye")
        out[0] = packet(0x10, body)
    topics = ["a/b", "a/+", "#", "$SYS/#", "fz/+/x", "$share/g/a/#", "a//b", "+/+/+", "/", "x" * 300]
    for _ in range(rng.randint(1, 12)):
        k = rng.random()
        pid = rng.randint(1, 8)
        if k < 0.25:
            out.append(subscribe(rng.choice(topics), rng.randint(0, 2), pid, v))
        elif k < 0.6:
            qos = rng.randint(0, 2)
            t = rng.choice(["a/b", "fz/1/x", "probe/no", "", "a/+", "$SYS/x", "z" * 200])
            payload = os.urandom(rng.choice([0, 1, 10, 200, 3000]))
            if v == 5 and rng.random() < 0.5:
                body = s(t) + (struct.pack("!H", pid) if qos else b"") + v5props(rng) + payload
                out.append(packet(0x30 | (qos << 1) | rng.randint(0, 1), body))
            else:
                out.append(publish(t, payload, qos, pid, v, retain=rng.random() < 0.2))
        elif k < 0.8:
            out.append(ack(rng.choice([PUBACK, PUBREC, PUBREL, PUBCOMP]), pid, v,
                           rng.choice([None, 0, 0x10, 0x80, 0x92])))
        elif k < 0.88:
            out.append(b"\xc0\x00")
        elif k < 0.95:
            body = struct.pack("!H", pid) + (b"\x00" if v == 5 else b"") + s(rng.choice(topics))
            out.append(packet(0xA2, body))
        else:
            out.append(packet(0xE0, bytes([rng.choice([0, 4, 0x80])]) + b"\x00") if v == 5
                       else b"\xe0\x00")
    return b"".join(out)


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(0, 6)):
        if not data:
            break
        m = rng.random()
        i = rng.randrange(len(data))
        if m < 0.3:
            data[i] ^= 1 << rng.randrange(8)
        elif m < 0.5:
            data[i] = rng.randrange(256)
        elif m < 0.6:
            del data[i:]
        elif m < 0.7:
            j = rng.randrange(i, min(len(data), i + 64) + 1)
            data[i:i] = data[i:j]
        elif m < 0.8:
            j = rng.randrange(i, min(len(data), i + 16) + 1)
            del data[i:j]
        elif m < 0.9:
            data[i:i + 1] = bytes([0xff, 0xff, 0xff, 0x7f])[:rng.randint(1, 5)]
        else:
            data[i:i] = os.urandom(rng.randint(1, 32))
    if rng.random() < 0.05:
        data = bytearray(os.urandom(rng.randint(1, 512)))
    return bytes(data)


def send_stream(port, data, rng):
    c = socket.socket()
    c.settimeout(2)
    c.connect(("127.0.0.1", port))
    got = set()
    try:
        off = 0
        while off < len(data):
            n = rng.randint(1, 1500)
            c.sendall(data[off:off + n])
            off += n
            if rng.random() < 0.1:
                time.sleep(0.001)
        c.settimeout(0.05 if rng.random() < 0.8 else 0.3)
        while True:
            d = c.recv(65536)
            if not d:
                break
            got.add(d[0] >> 4)
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        if rng.random() < 0.5:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        c.close()
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("MQROUTER_BIN", "build-asan/mqrouter"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--replay", help="send one saved stream and check the server")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="fuzz-listener-")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    pnum = port.getsockname()[1]
    port.close()
    with open(os.path.join(work, "rules.lua"), "w") as f:
        f.write("-- fuzz: no rules\n")
    log = open(os.path.join(work, "mqrouter.log"), "wb")
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=1:detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    proc = subprocess.Popen([args.bin, "--listen", f"127.0.0.1:{pnum}", "--data-dir",
                             os.path.join(work, "data"), "--log-level", "error",
                             os.path.join(work, "rules.lua")], stdout=log, stderr=log, env=env)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", pnum), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    probe = Client(pnum)
    probe.login("fuzz-probe", keepalive=0)  # silent for minutes: no keep-alive
    probe.sub("probe/#")
    pub = Client(pnum)
    pub.login("fuzz-probe-pub", keepalive=0)

    def alive(i):
        pub.send(publish("probe/x", str(i).encode()))
        while True:
            p = probe.next(5)
            assert p not in (None, "closed"), "probe got nothing: the server is stuck or gone"
            if p[0] == PUBLISH and publish_fields(p[2], p[1])[1] == str(i).encode():
                return

    execs, answers, failure = 0, set(), None
    end = time.time() + args.seconds
    try:
        if args.replay:
            data = open(args.replay, "rb").read()
            answers |= send_stream(pnum, data, rng)
            execs = 1
            alive(0)
        while not args.replay and time.time() < end:
            data = mutate(rng, session(rng))
            last = os.path.join(work, "last-stream.bin")
            with open(last, "wb") as f:
                f.write(data)
            answers |= send_stream(pnum, data, rng)
            execs += 1
            if proc.poll() is not None:
                failure = f"server exited ({proc.returncode}) on stream {execs}"
                break
            if execs % 50 == 0:
                alive(execs)
        alive(execs + 1)
    except AssertionError as e:
        failure = str(e)
    finally:
        probe.close()
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                failure = failure or "server did not stop on SIGTERM"
        log.close()
    text = open(os.path.join(work, "mqrouter.log"), errors="replace").read()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in text:
            failure = failure or f"sanitizer: {marker}"
    if proc.returncode not in (0, None) and not failure:
        failure = f"server exit status {proc.returncode}"
    print(f"seed {seed}: {execs} streams in {args.seconds:.0f} s, server answered with packet "
          f"types {sorted(answers)}; {'FAILED: ' + failure if failure else 'no failure'}")
    if failure:
        saved = os.path.join(work, "last-stream.bin")
        print(f"log and last stream kept in {work} (replay: --replay {saved})")
        print(text[-3000:])
        return 1
    subprocess.run(["rm", "-rf", work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
