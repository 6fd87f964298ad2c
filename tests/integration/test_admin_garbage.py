#!/usr/bin/python3
"""The admin API's HTTP layer under malformed and mutated input: random
bytes, requests with bytes flipped, cut or repeated, chunked bodies, huge
headers, every endpoint with random JSON and random query strings, sent on
raw sockets in random pieces. The server must answer or close each one and
keep serving: /health answers every 50 requests (200, or 503 when a random
session failed), and the engine stops cleanly at the end (under ASan+UBSan
any memory error fails the run)."""
import json
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import Workspace, free_port, wait_port  # noqa: E402

RULES = """
local mq = require "mqrouter"
local q = mq.queue("jobs")
mq.route("jobs/#", q)
mq.route("a/#", function(msg) if msg.payload == "x" then error("x") end end)
"""
PATHS = ["/health", "/metrics", "/api/v1", "/api/v1/stats", "/api/v1/publish",
         "/api/v1/publish/batch", "/api/v1/sessions", "/api/v1/sessions/s",
         "/api/v1/queues", "/api/v1/queues/jobs", "/api/v1/queues/jobs/dlq",
         "/api/v1/queues/jobs/redrive", "/api/v1/rules", "/api/v1/rules/routes",
         "/api/v1/retained", "/api/v1/retained/a/b", "/api/v1/retained/%00",
         "/api/v1/retained/%", "/api/v1/retained/%zz", "//", "/api/v1/queues//dlq"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"]
VALID = [("GET", "/health"), ("GET", "/metrics"), ("GET", "/api/v1/stats"),
         ("POST", "/api/v1/publish"), ("POST", "/api/v1/publish/batch"),
         ("GET", "/api/v1/sessions"), ("POST", "/api/v1/sessions"), ("GET", "/api/v1/sessions/s"),
         ("DELETE", "/api/v1/sessions/s"), ("GET", "/api/v1/queues"),
         ("GET", "/api/v1/queues/jobs"), ("GET", "/api/v1/queues/jobs/dlq"),
         ("POST", "/api/v1/queues/jobs/redrive"), ("GET", "/api/v1/rules"),
         ("GET", "/api/v1/rules/routes"), ("GET", "/api/v1/retained"),
         ("GET", "/api/v1/retained/a/b"), ("PUT", "/api/v1/retained/a/b"),
         ("DELETE", "/api/v1/retained/a/b")]


def rand_json(rng, depth=0):
    k = rng.randrange(8 if depth < 3 else 5)
    if k == 0:
        return rng.choice([None, True, False])
    if k == 1:
        return rng.choice([0, -1, 2, 3, 1.5, 2 ** 63, -(2 ** 70), 1e308])
    if k == 2:
        return rng.choice(["", "a/b", "#", "a/+", "\u00e9", "x" * rng.randrange(200),
                           "\x00", "AAEC/w==", "!!"])
    if k in (3, 4):
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(20)))
    if k in (5, 6):
        keys = ["topic", "payload", "qos", "retain", "encoding", "messages", "name", "uri",
                "max", "subscriptions", "keepalive", "mqtt_version"]
        return {rng.choice(keys): rand_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [rand_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def request(rng, token):
    if rng.random() < 0.7:  # mostly real endpoints, so the handlers see the input
        method, path = rng.choice(VALID)
    else:
        method, path = rng.choice(METHODS), rng.choice(PATHS)
    if rng.random() < 0.4:
        path += "?" + "&".join(rng.choice(["limit=", "offset=", "filter=", "x", "limit=%", "="]) +
                               str(rng.choice([-1, 0, 1, 5, 1001, "abc", "%23", "a/%2B"]))
                               for _ in range(rng.randrange(4)))
    body = b""
    if rng.random() < 0.6:
        body = json.dumps(rand_json(rng)).encode()
        if method in ("POST", "PUT") and rng.random() < 0.5:  # plausible objects
            body = json.dumps({"topic": rng.choice(["a/1", "jobs/2", "a/#", ""]),
                               "payload": rand_json(rng), "qos": rng.choice([0, 1, 2, 3]),
                               "name": rng.choice(["s", "t"]), "uri": "tcp://127.0.0.1:1",
                               "max_reconnects": 1,
                               "messages": [rand_json(rng) for _ in range(3)]}).encode()
        if rng.random() < 0.2:
            body = body[:rng.randrange(len(body) + 1)]
    headers = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if rng.random() < 0.8:
        headers.append(f"Authorization: Bearer {token if rng.random() < 0.8 else 'bad'}")
    if rng.random() < 0.9:  # mostly JSON, so bodies get past the content-type check
        headers.append(rng.choice(["Content-Type: application/json",
                                   "Content-Type: application/json; charset=utf-8",
                                   "Content-Type: text/plain"]))
    chunked = rng.random() < 0.15
    if chunked:
        headers.append("Transfer-Encoding: chunked")
        parts, i = [], 0
        while i < len(body):
            n = rng.randrange(1, 20)
            parts.append(b"%x\r\n" % len(body[i:i + n]) + body[i:i + n] + b"\r\n")
            i += n
        body = b"".join(parts) + b"0\r\n\r\n"
    elif body or rng.random() < 0.5:
        headers.append(f"Content-Length: {len(body) + rng.choice([0, 0, 0, 1, -1])}")
    if rng.random() < 0.05:
        headers.append("X-Big: " + "y" * rng.choice([100, 20000]))
    data = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    r = rng.random()
    if r < 0.1:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    elif r < 0.25:
        b = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
    elif r < 0.3:
        data = data[:rng.randrange(len(data))]
    elif r < 0.35:
        data = data * rng.randrange(2, 5)
    return data


def send(port, data, rng):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        i = 0
        while i < len(data):
            n = rng.choice([1, 7, 64, len(data)])
            s.sendall(data[i:i + n])
            i += n
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:  # closed by the server first (timeouts and resets included)
        pass
    finally:
        s.close()


def health(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out


def main():
    rng = random.Random(int(os.environ.get("MQR_FUZZ_SEED", "1234")))
    rounds = int(os.environ.get("MQR_FUZZ_ROUNDS", "400"))
    with Workspace() as ws:
        mport, aport = free_port(), free_port()
        tokens = ws.write("tokens", "tok\n")
        ws.mqrouter(mport, ws.write("rules.lua", RULES),
                    extra=["--no-watch", "--admin", f"127.0.0.1:{aport}", "--admin-tokens", tokens])
        wait_port(aport)
        t0 = time.time()
        for i in range(rounds):
            send(aport, request(rng, "tok"), rng)
            if i % 50 == 49:
                out = health(aport)  # 503 is an answer too: a random session may fail
                if not (out.startswith(b"HTTP/1.1 200") or out.startswith(b"HTTP/1.1 503")):
                    print(f"round {i}: /health answered {out[:100]!r}")
                    return 1
        out = health(aport)
        if not (out.startswith(b"HTTP/1.1 200") or out.startswith(b"HTTP/1.1 503")):
            print(f"/health after the rounds: {out[:100]!r}")
            return 1
        print(f"{rounds} requests in {time.time() - t0:.1f} s, still serving")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
