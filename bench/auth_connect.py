#!/usr/bin/python3
"""Password CONNECT rate, and what a flood of them does to everyone else.

Starts mqrouter (MQROUTER_BIN, default ./build/mqrouter) with one user added
at --iterations PBKDF2 iterations, connects one idle client, then opens N
sockets that each send CONNECT with the right password at once, and waits
for every CONNACK. Meanwhile the idle client sends PINGREQ every 5 ms and
the slowest PINGRESP is reported: the password checks run on the libuv
threadpool, so the loop keeps answering. Prints connects/s and ping times.

  bench/auth_connect.py [--iterations 100000] [--clients 200]
"""
import argparse
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def utf8(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_pkt(cid, user=None, pw=None):
    flags = 0x02 | (0xC0 if user else 0)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + utf8(cid)
    if user:
        body += utf8(user) + utf8(pw)
    return bytes([0x10, len(body)]) + body


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--clients", type=int, default=200)
    a = ap.parse_args()
    binary = os.environ.get("MQROUTER_BIN", "./build/mqrouter")
    d = tempfile.mkdtemp(prefix="mqr-authbench-")
    try:
        rules = os.path.join(d, "rules.lua")
        with open(rules, "w") as f:
            f.write('local mq = require "mqrouter"\n'
                    'assert(mq.users.add("dev", "secret", %d))\n' % a.iterations)
        port = free_port()
        p = subprocess.Popen([binary, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                              os.path.join(d, "data"), "--log-level", "warn", rules])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(connect_pkt("idle"))
        assert idle.recv(4)[0] == 0x20
        pings, stop = [], threading.Event()

        def pinger():
            while not stop.is_set():
                t = time.perf_counter()
                idle.sendall(b"\xc0\x00")
                assert idle.recv(2) == b"\xd0\x00"
                pings.append(time.perf_counter() - t)
                time.sleep(0.005)

        sel = selectors.DefaultSelector()
        socks = []
        for i in range(a.clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        th = threading.Thread(target=pinger)
        th.start()
        t0 = time.perf_counter()
        for i, s in enumerate(socks):
            s.send(connect_pkt("c%d" % i, "dev", "secret"))
            sel.register(s, selectors.EVENT_READ)
        ok = left = len(socks)
        ok = 0
        while left:
            for key, _ in sel.select(timeout=30):
                data = key.fileobj.recv(4)
                sel.unregister(key.fileobj)
                left -= 1
                ok += len(data) == 4 and data[3] == 0
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
        pings.sort()
        print("iterations %d: %d password CONNECTs accepted of %d in %.2f s = %.0f/s; "
              "idle client's PINGREQ round trip during them: median %.2f ms, max %.2f ms"
              % (a.iterations, ok, a.clients, dt, a.clients / dt,
                 1000 * pings[len(pings) // 2], 1000 * pings[-1]))
        for s in socks:
            s.close()
        idle.close()
        p.terminate()
        p.wait(10)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
