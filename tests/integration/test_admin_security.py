#!/usr/bin/python3
"""The admin API against what a web page in a browser on the same machine
can send it (docs/security.md): the cross-site "simple" POST that needs no
preflight, DNS rebinding (a foreign Host, reads included), a text/plain
body, a browser's cross-site write without Origin; what must still work
(same-origin JSON, a configured Host name and origin with CORS, tokens);
the headers every answer carries; and connection exhaustion: /health
answers within a second while 100 connections trickle a header byte a
second, and while 1 000 idle connections are open. Real HTTP over real
sockets, a real paho subscriber watching that nothing refused is published.
"""
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import BIN, Workspace, free_port, wait, wait_port  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

RULES = 'local mq = require "mqrouter"\n'
TOKEN = "admin-token-7"

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        sys.stderr.write("FAIL: " + what + "\n")


def http(port, method, path, headers=(), body=None, timeout=5):
    """One request on its own connection: (status, {header: value}, body
    bytes). headers are sent exactly as given (no Host is added)."""
    lines = [f"{method} {path} HTTP/1.1", *headers, "Connection: close"]
    data = body.encode() if isinstance(body, str) else (body or b"")
    if body is not None:
        lines.append(f"Content-Length: {len(data)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    head, _, rest = out.partition(b"\r\n\r\n")
    first, *hlines = head.decode("latin-1").split("\r\n")
    status = int(first.split()[1])
    hdrs = {}
    for h in hlines:
        k, _, v = h.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def metric(port, name, host=None):
    _, _, body = http(port, "GET", "/metrics", [f"Host: {host or f'127.0.0.1:{port}'}"])
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def expect(port, what, status, code, method, path, headers, body=None):
    st, hdrs, b = http(port, method, path, headers, body)
    check(st == status, f"{what}: status {st}, wanted {status}: {b[:200]!r}")
    if code:
        check(error_code(b) == code, f"{what}: error code {error_code(b)}, wanted {code}")
    return hdrs


def main():
    with Workspace() as ws:
        mport, aport = free_port(), free_port()
        script = ws.write("rules.lua", RULES)
        ws.mqrouter(mport, script, extra=[
            "--no-watch", "--admin", f"127.0.0.1:{aport}", "--admin-host", "Admin.Example",
            "--admin-origin", "http://dash.example:9000"])
        wait_port(aport)
        mode = os.stat(ws.path("data")).st_mode & 0o777
        check(mode == 0o700, f"the data directory is the engine user's only: {oct(mode)}")
        own = f"127.0.0.1:{aport}"
        host = f"Host: {own}"

        got = []
        sub = mqtt.Client()
        sub.on_connect = lambda c, u, f, rc: c.subscribe("csrf/#", 1)
        sub.on_subscribe = lambda c, u, mid, q: got.append(("subscribed", None))
        sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
        sub.connect("127.0.0.1", mport)
        sub.loop_start()
        wait(lambda: ("subscribed", None) in got, what="SUBACK of csrf/#")

        pub = '{"topic":"csrf/x","payload":"pwned"}'
        refused = {"host": 0, "origin": 0, "fetch_site": 0, "content_type": 0}

        # ---- the attack of the issue: a page at evil.example, rebound to us ----
        expect(aport, "cross-site simple POST, rebound Host", 421, "host_not_allowed",
               "POST", "/api/v1/publish",
               ["Content-Type: text/plain", "Origin: http://evil.example",
                f"Host: evil.example:{aport}"], pub)
        refused["host"] += 1
        # DNS rebinding reads: every method, /health included
        for method, path in (("GET", "/api/v1/stats"), ("GET", "/health"), ("GET", "/metrics"),
                             ("DELETE", "/api/v1/devices/d1"), ("POST", "/api/v1/rules/reload")):
            expect(aport, f"{method} {path} with a foreign Host", 421, "host_not_allowed", method,
                   path, [f"Host: evil.example:{aport}"])
            refused["host"] += 1
        expect(aport, "a foreign Host without a port", 421, "host_not_allowed", "GET", "/health",
               ["Host: evil.example"])
        refused["host"] += 1
        expect(aport, "a Host whose name only starts like ours", 421, "host_not_allowed", "GET",
               "/health", [f"Host: 127.0.0.1.evil.example:{aport}"])
        refused["host"] += 1
        # the right Host, but a page of another origin: refused for every method
        expect(aport, "foreign Origin, text/plain", 403, "origin_not_allowed", "POST",
               "/api/v1/publish", ["Content-Type: text/plain", "Origin: http://evil.example",
                                   host], pub)
        refused["origin"] += 1
        expect(aport, "foreign Origin, JSON", 403, "origin_not_allowed", "POST",
               "/api/v1/publish", ["Content-Type: application/json",
                                   "Origin: http://evil.example", host], pub)
        refused["origin"] += 1
        expect(aport, "foreign Origin, GET", 403, "origin_not_allowed", "GET", "/api/v1/stats",
               ["Origin: http://evil.example", host])
        refused["origin"] += 1
        expect(aport, "another port of localhost is another origin", 403, "origin_not_allowed",
               "POST", "/api/v1/publish", ["Content-Type: application/json",
                                           "Origin: http://127.0.0.1:3000", host], pub)
        refused["origin"] += 1
        expect(aport, "Origin: null (a sandboxed page)", 403, "origin_not_allowed", "POST",
               "/api/v1/publish", ["Content-Type: application/json", "Origin: null", host], pub)
        refused["origin"] += 1
        expect(aport, "a foreign origin's preflight", 403, "origin_not_allowed", "OPTIONS",
               "/api/v1/publish", ["Origin: http://evil.example", host,
                                   "Access-Control-Request-Method: POST"])
        refused["origin"] += 1
        # no Origin, but a browser says it came from another site
        for site in ("cross-site", "same-site"):
            expect(aport, f"Sec-Fetch-Site: {site} without Origin", 403, "cross_site", "POST",
                   "/api/v1/publish", ["Content-Type: application/json",
                                       f"Sec-Fetch-Site: {site}", host], pub)
            refused["fetch_site"] += 1
        # bodies that a cross-site page can send without a preflight
        for ct in ("text/plain", "application/x-www-form-urlencoded",
                   "multipart/form-data; boundary=x", "application/jsonx"):
            expect(aport, f"a {ct} body", 415, "unsupported_media_type", "POST",
                   "/api/v1/publish", [f"Content-Type: {ct}", host], pub)
            refused["content_type"] += 1
        expect(aport, "a body without Content-Type", 415, "unsupported_media_type", "POST",
               "/api/v1/publish", [host], pub)
        refused["content_type"] += 1
        # malformed Host headers
        expect(aport, "HTTP/1.1 without Host", 400, "bad_request", "GET", "/health", [])
        expect(aport, "two Host headers", 400, "bad_request", "GET", "/health",
               [host, "Host: evil.example"])

        # ---- what must work ----
        n = 0
        for what, hdrs in (
                ("same-origin JSON", ["Content-Type: application/json",
                                      f"Origin: http://{own}", host]),
                ("localhost same-origin", ["Content-Type: application/json; charset=utf-8",
                                           f"Origin: http://localhost:{aport}",
                                           f"Host: localhost:{aport}"]),
                ("no Origin, Sec-Fetch-Site: same-origin",
                 ["Content-Type: application/json", "Sec-Fetch-Site: same-origin", host]),
                ("a user typing the URL (Sec-Fetch-Site: none)",
                 ["Content-Type: application/json", "Sec-Fetch-Site: none", host]),
                ("curl-like: no Origin, no fetch metadata", ["Content-Type: application/json",
                                                             host]),
                ("configured Host name, any case", ["Content-Type: application/json",
                                                    f"Host: ADMIN.example:{aport}"]),
                ("a tunnel's port on localhost", ["Content-Type: application/json",
                                                  "Host: localhost:9999",
                                                  "Origin: http://localhost:9999"])):
            n += 1
            st, _, b = http(aport, "POST", "/api/v1/publish", hdrs,
                            json.dumps({"topic": f"csrf/ok/{n}", "payload": what}))
            check(st == 200 and json.loads(b) == {"published": 1}, f"{what}: {st} {b[:200]!r}")
        # a configured origin: CORS answers and a preflight
        dash = "http://dash.example:9000"
        hdrs = expect(aport, "configured origin", 200, None, "POST", "/api/v1/publish",
                      ["Content-Type: application/json", f"Origin: {dash}", host],
                      json.dumps({"topic": "csrf/ok/dash", "payload": "dash"}))
        n += 1
        check(hdrs.get("access-control-allow-origin") == dash, f"CORS allow-origin: {hdrs}")
        check(hdrs.get("vary") == "Origin", f"Vary: Origin: {hdrs}")
        hdrs = expect(aport, "configured origin's preflight", 204, None, "OPTIONS",
                      "/api/v1/publish", [f"Origin: {dash}", host,
                                          "Access-Control-Request-Method: POST",
                                          "Access-Control-Request-Headers: content-type"])
        check(hdrs.get("access-control-allow-origin") == dash, f"preflight origin: {hdrs}")
        check("POST" in hdrs.get("access-control-allow-methods", ""), f"preflight methods: {hdrs}")
        check("content-type" in hdrs.get("access-control-allow-headers", "").lower(),
              f"preflight headers: {hdrs}")
        st, hdrs, _ = http(aport, "OPTIONS", "/api/v1/publish", [host])
        check(st == 405 and "access-control-allow-origin" not in hdrs,
              f"no preflight without a configured origin: {st} {hdrs}")
        # own-origin answers carry no CORS header
        _, hdrs, _ = http(aport, "GET", "/api/v1/stats", [host, f"Origin: http://{own}"])
        check("access-control-allow-origin" not in hdrs, f"same origin needs no CORS: {hdrs}")

        # every answer carries the browser-facing headers
        for what, (method, path) in (("200", ("GET", "/health")), ("404", ("GET", "/nothing")),
                                     ("metrics", ("GET", "/metrics"))):
            _, hdrs, _ = http(aport, method, path, [host])
            check(hdrs.get("x-content-type-options") == "nosniff", f"{what}: nosniff {hdrs}")
            check(hdrs.get("cache-control") == "no-store", f"{what}: no-store {hdrs}")
            check(hdrs.get("x-frame-options") == "DENY", f"{what}: X-Frame-Options {hdrs}")
            check("frame-ancestors 'none'" in hdrs.get("content-security-policy", "") and
                  "default-src 'none'" in hdrs.get("content-security-policy", ""),
                  f"{what}: CSP {hdrs}")
        _, hdrs, _ = http(aport, "GET", "/health", [f"Host: evil.example:{aport}"])
        refused["host"] += 1
        check(hdrs.get("x-content-type-options") == "nosniff", "a refusal carries nosniff too")

        # nothing refused was published: the accepted ones arrive, in order, after it would have
        wait(lambda: sum(1 for t, _ in got if t and t.startswith("csrf/ok/")) == n,
             what="the accepted publishes")
        bad = [(t, p) for t, p in got if t == "csrf/x"]
        check(not bad, f"a refused request published: {bad}")
        for reason, count in refused.items():
            v = metric(aport, f'mqrouter_admin_requests_refused_total{{reason="{reason}"}}')
            check(v == count, f"refused {reason}: {v}, wanted {count}")
        check("refused a request (host)" in ws.log(), "a refusal is logged")

        # ---- slowloris: 100 connections trickle a header byte a second ----
        stop = threading.Event()
        slow = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", aport), timeout=5)
            slow.append(s)
        req = f"GET /health HTTP/1.1\r\n{host}\r\nX-Slow: ".encode() + b"a" * 100

        sent = [0]  # header bytes each trickling connection has sent

        def trickle():
            while not stop.is_set() and sent[0] < len(req):
                for s in slow:
                    try:
                        s.send(req[sent[0]:sent[0] + 1])
                    except OSError:
                        pass
                sent[0] += 1
                stop.wait(1)

        t = threading.Thread(target=trickle)
        t.start()
        try:
            for k in range(1, 5):  # a probe after each of the first four bytes
                wait(lambda: sent[0] >= k, what=f"byte {k} trickled")
                t0 = time.monotonic()
                st, _, _ = http(aport, "GET", "/health", [host], timeout=1)
                dt = time.monotonic() - t0
                check(st == 200 and dt < 1.0, f"/health under slowloris: {st} in {dt:.3f} s")
            # the server ends requests that do not arrive whole in time (10 s)
            wait(lambda: metric(aport, 'mqrouter_admin_connections_closed_total'
                                '{reason="request_timeout"}') == 100,
                 timeout=20, what="the trickling connections closed by the request timeout")
        finally:
            stop.set()
            t.join()
            for s in slow:
                s.close()

        # ---- 1 000 idle connections: the oldest idle ones make room ----
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
        idle = [socket.create_connection(("127.0.0.1", aport), timeout=5) for _ in range(1000)]
        try:
            for _ in range(3):
                t0 = time.monotonic()
                st, _, _ = http(aport, "GET", "/health", [host], timeout=1)
                dt = time.monotonic() - t0
                check(st == 200 and dt < 1.0, f"/health with 1000 idle connections: {st} in "
                                              f"{dt:.3f} s")
            # 1000 idle fill the 256 places (744 evicted), the first probe
            # evicts one more; the later ones and this scrape take the place
            # the probe before left
            v = metric(aport, 'mqrouter_admin_connections_closed_total{reason="evicted"}')
            check(v == 1000 + 1 - 256, f"evicted {v}, wanted {1000 + 1 - 256}")
        finally:
            for s in idle:
                s.close()
        sub.loop_stop()

    # ---- tokens: required on loopback when asked to, and still enforced ----
    with Workspace() as ws:
        mport, aport = free_port(), free_port()
        script = ws.write("rules.lua", RULES)
        r = subprocess.run([BIN, "--listen", f"127.0.0.1:{mport}", "--data-dir", ws.path("d"),
                            "--admin", f"127.0.0.1:{aport}", "--admin-require-token", script],
                           capture_output=True, timeout=20)
        err = r.stderr.decode()
        check(r.returncode != 0 and "tokens are required" in err,
              f"--admin-require-token without tokens: exit {r.returncode}: {err[-300:]}")
        r = subprocess.run([BIN, "--listen", f"127.0.0.1:{mport}", "--data-dir", ws.path("d"),
                            "--admin", f"127.0.0.1:{aport}", "--admin-origin", "evil.example",
                            script], capture_output=True, timeout=20)
        err = r.stderr.decode()
        check(r.returncode != 0 and "evil.example" in err and "scheme://host" in err,
              f"a malformed --admin-origin: exit {r.returncode}: {err[-300:]}")
        tokens = ws.write("tokens", TOKEN + "\n")
        ws.mqrouter(mport, script, extra=["--no-watch", "--admin", f"127.0.0.1:{aport}",
                                         "--admin-tokens", tokens, "--admin-require-token"])
        wait_port(aport)
        host = f"Host: 127.0.0.1:{aport}"
        expect(aport, "no token", 401, "unauthorized", "GET", "/api/v1/stats", [host])
        expect(aport, "no token, same origin", 401, "unauthorized", "POST", "/api/v1/publish",
               ["Content-Type: application/json", f"Origin: http://127.0.0.1:{aport}", host],
               '{"topic":"a","payload":"x"}')
        expect(aport, "right token", 200, None, "GET", "/api/v1/stats",
               [host, f"Authorization: Bearer {TOKEN}"])
        expect(aport, "right token, foreign Origin", 403, "origin_not_allowed", "POST",
               "/api/v1/publish", ["Content-Type: application/json",
                                   "Origin: http://evil.example", host,
                                   f"Authorization: Bearer {TOKEN}"],
               '{"topic":"a","payload":"x"}')
        expect(aport, "right token, foreign Host", 421, "host_not_allowed", "GET",
               "/api/v1/stats", [f"Host: evil.example:{aport}", f"Authorization: Bearer {TOKEN}"])

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("admin security: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
