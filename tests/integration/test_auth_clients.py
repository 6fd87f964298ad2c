#!/usr/bin/python3
"""Authentication and authorisation of the embedded listener with real
clients: mosquitto_pub/sub -u/-P and paho (3.1.1 and 5) against users added
with `mqrouter --add-user`; the anonymous rule on loopback and non-loopback
listeners; mq.authenticate / mq.authorize hooks with the reason codes each
protocol gets (a hook that errors denies); a failed reload keeps the hooks;
SCRAM-SHA-256 over MQTT 5 AUTH packets driven by a raw-socket client written
here with hashlib/hmac (right and wrong password, unknown user, unknown
method, re-authentication)."""
import base64
import hashlib
import hmac
import os
import signal
import struct
import subprocess
import threading
import time

import paho.mqtt.client as mqtt

from mqr_it import BIN, Workspace, free_port, wait, wait_port
from mqtt_raw import Client, packet, parse_props, utf8, varint

failures = []


def check(name, fn):
    try:
        fn()
        print("ok  ", name)
    except Exception as e:  # noqa: BLE001 - report every case
        failures.append(name)
        print("FAIL", name, "-", repr(e))


def add_user(data, name, password):
    r = subprocess.run([BIN, "--data-dir", data, "--add-user", name], input=password + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def mosq_pub(port, *args):
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t/x",
                           "-m", "hi", *args], capture_output=True, text=True,
                          timeout=20).returncode


def paho_connect(port, v5, username=None, password=None, client_id=""):
    """The CONNACK code (3.1.1 return code or v5 reason), via paho."""
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(client_id=client_id, protocol=proto)
    if username is not None:
        c.username_pw_set(username, password)
    got = []
    if v5:
        c.on_connect = lambda cl, ud, fl, rc, props=None: got.append(rc.value)
    else:
        c.on_connect = lambda cl, ud, fl, rc: got.append(rc)
    c.connect("127.0.0.1", port)
    # driven here, not by loop_start(): stopping paho's thread takes up to
    # a second of its select timeout, per client
    deadline = time.time() + 10
    while not got and time.time() < deadline:
        c.loop(timeout=0.05)
    c.disconnect()
    c.loop(timeout=0.01)
    assert got, "no CONNACK"
    return got[0]


class Paho:
    """A connected paho client that records what it receives."""

    def __init__(self, port, cid, v5, username=None, password=None):
        self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        if username:
            self.c.username_pw_set(username, password)
        self.got, self.subacks, self.pubacks = [], [], []
        self.connected = threading.Event()
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_message = lambda cl, ud, m: self.got.append((m.topic, m.payload))
        if v5:
            self.c.on_subscribe = lambda cl, ud, mid, codes, props: self.subacks.append(
                [rc.value for rc in codes])
        else:
            self.c.on_subscribe = lambda cl, ud, mid, codes: self.subacks.append(list(codes))
        self.c.on_publish = lambda cl, ud, mid: self.pubacks.append(mid)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def subscribe(self, f, qos=1):
        n = len(self.subacks)
        self.c.subscribe(f, qos)
        wait(lambda: len(self.subacks) > n, what="SUBACK")
        return self.subacks[-1]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---- a raw MQTT 5 client for AUTH and reason codes --------------------------

def connect_v5_raw(cid, username=None, password=None, method=None, data=None):
    props = b""
    if method:
        props += b"\x15" + utf8(method)
    if data is not None:
        props += b"\x16" + struct.pack("!H", len(data)) + data
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", 60)
    body += varint(len(props)) + props + utf8(cid)
    if username:
        body += utf8(username)
    if password:
        body += utf8(password)
    return packet(0x10, body)


def auth_packet(reason, method, data):
    props = b"\x15" + utf8(method) + b"\x16" + struct.pack("!H", len(data)) + data
    return packet(0xF0, bytes([reason]) + varint(len(props)) + props)


def reason_and_props(body, skip=0):
    """(reason, props) of CONNACK (skip=1: flags byte first) or AUTH."""
    reason = body[skip]
    props, _ = parse_props(body[skip + 1:])
    return reason, props


class Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802 / 7677)."""

    def __init__(self, user, password):
        self.user, self.password = user, password
        self.cnonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"),
                                         self.cnonce)

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.cnonce) and len(attrs["r"]) > len(self.cnonce)
        salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + attrs["r"]
        auth_msg = ",".join([self.first_bare, sf, without_proof]).encode()
        sig = hmac.new(stored_key, auth_msg, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expect_v = base64.b64encode(hmac.new(server_key, auth_msg, "sha256").digest())
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify(self, server_final):
        assert server_final == b"v=" + self.expect_v, server_final


def scram_login(port, cid, user, password):
    """Runs the exchange; returns (CONNACK reason, CONNACK props, client, scram)."""
    c = Client(port)
    s = Scram(user, password)
    c.send(connect_v5_raw(cid, method="SCRAM-SHA-256", data=s.client_first()))
    first, body = c.read_packet()
    if first >> 4 == 2:  # refused straight away
        r, props = reason_and_props(body, 1)
        return r, props, c, s
    assert first == 0xF0, hex(first)
    r, props = reason_and_props(body)
    assert r == 0x18, hex(r)
    assert props[0x15] == [b"SCRAM-SHA-256"]
    c.send(auth_packet(0x18, "SCRAM-SHA-256", s.client_final(props[0x16][0])))
    first, body = c.read_packet()
    assert first >> 4 == 2, hex(first)
    r, props = reason_and_props(body, 1)
    return r, props, c, s


# ---- the tests ------------------------------------------------------------------

PLAIN = 'local mq = require "mqrouter"\n'

HOOKS = r'''
local mq = require "mqrouter"
mq.authenticate(function(c)
  if c.client_id == "banned-client" then return false, "banned" end
  if c.client_id == "hook-error" then error("authenticate exploded") end
  if c.username == "token-user" then return c.password == "let-me-in" end
  if c.username == "alice" then return c.authenticated end
  return c.username == nil
end)
mq.authorize(function(c, action, topic, qos, retain)
  if topic == "boom" then error("authorize exploded") end
  if topic == "spin" then while true do end end
  if topic:sub(1, 7) == "secret/" then return c.username == "alice" end
  if action == "subscribe" and topic == "forbidden/#" then return false end
  return true
end)
'''

with Workspace() as ws:
    data = ws.path("data")
    add_user(data, "alice", "wonderland")
    add_user(data, "bob", "builder")
    r = subprocess.run([BIN, "--data-dir", data, "--list-users"], capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.split() == ["alice", "bob"], r.stdout

    port, wide = free_port(), free_port()
    rules = ws.write("rules.lua", PLAIN)
    p = ws.mqrouter(port, rules, extra=("--listen", "0.0.0.0:%d" % wide, "--budget-ms", "300"))
    wait_port(wide)

    # -- credentials ---------------------------------------------------------
    def mosquitto_clients():
        for v in ("mqttv311", "mqttv5"):
            assert mosq_pub(port, "-V", v, "-u", "alice", "-P", "wonderland") == 0
        # mosquitto_pub exits with the CONNACK code
        assert mosq_pub(port, "-u", "alice", "-P", "nope") == 4
        assert mosq_pub(port, "-V", "mqttv5", "-u", "alice", "-P", "nope") == 0x86
        assert mosq_pub(port, "-u", "mallory", "-P", "x") == 4
    check("mosquitto_pub: right password in, wrong password and unknown user out",
          mosquitto_clients)

    def paho_clients():
        for v5 in (False, True):
            bad = 0x86 if v5 else 4
            assert paho_connect(port, v5, "bob", "builder") == 0
            assert paho_connect(port, v5, "bob", "builder!") == bad
            assert paho_connect(port, v5, "bob") == bad  # no password at all
            assert paho_connect(port, v5, "nobody", "x") == bad
    check("paho 3.1.1 and 5: right, wrong, missing password, unknown user", paho_clients)

    def anonymous():
        for v5 in (False, True):
            assert paho_connect(port, v5) == 0  # loopback listener: allowed
            assert paho_connect(wide, v5) == (0x87 if v5 else 5)  # 0.0.0.0: refused
            assert paho_connect(wide, v5, "alice", "wonderland") == 0
        assert mosq_pub(wide) == 5
    check("anonymous allowed on loopback, refused on 0.0.0.0, users still in", anonymous)

    def pipelined():
        # a SUBSCRIBE right behind the CONNECT waits for the password check
        c = Client(port)
        sub = packet(0x82, struct.pack("!H", 7) + b"\x00" + utf8("p/#") + b"\x01")
        c.send(connect_v5_raw("pipe", "alice", "wonderland") + sub)
        first, body = c.read_packet()
        assert first >> 4 == 2 and body[1] == 0, (hex(first), body)
        first, body = c.read_packet()
        assert first >> 4 == 9 and body[:2] == b"\x00\x07" and body[-1] == 1, (first, body)
        c.close()
        # ... and behind a refused one, a PUBLISH is never routed
        watcher = Paho(port, "watcher", True)
        watcher.subscribe("p/#")
        c = Client(port)
        pub = packet(0x30, utf8("p/leak") + b"\x00" + b"leaked")
        c.send(connect_v5_raw("pipe2", "alice", "wrong") + pub)
        first, body = c.read_packet()
        assert first >> 4 == 2 and body[1] == 0x86, (hex(first), body)
        time.sleep(0.3)
        assert watcher.got == [], watcher.got
        watcher.close()
        c.close()
    check("packets behind a CONNECT wait for its password check", pipelined)

    # -- SCRAM-SHA-256 -------------------------------------------------------------
    def scram_ok():
        r, props, c, s = scram_login(port, "scram-1", "alice", "wonderland")
        assert r == 0, hex(r)
        assert props[0x15] == [b"SCRAM-SHA-256"]
        s.verify(props[0x16][0])  # the server proved it knows the key too
        # the session works: a publish to ourselves comes back
        c.send(packet(0x82, struct.pack("!H", 1) + b"\x00" + utf8("s/1") + b"\x00"))
        assert c.read_packet()[0] >> 4 == 9
        c.send(packet(0x30, utf8("s/1") + b"\x00" + b"hello"))
        first, body = c.read_packet()
        assert first >> 4 == 3 and body.endswith(b"hello")
        # re-authentication (5.0 §4.12.1)
        s2 = Scram("alice", "wonderland")
        c.send(auth_packet(0x19, "SCRAM-SHA-256", s2.client_first()))
        first, body = c.read_packet()
        assert first == 0xF0, hex(first)
        r, props = reason_and_props(body)
        assert r == 0x18
        c.send(auth_packet(0x18, "SCRAM-SHA-256", s2.client_final(props[0x16][0])))
        first, body = c.read_packet()
        assert first == 0xF0, hex(first)
        r, props = reason_and_props(body)
        assert r == 0x00, hex(r)
        s2.verify(props[0x16][0])
        # a failed re-authentication ends the connection (DISCONNECT 0x86)
        s3 = Scram("alice", "wrong")
        c.send(auth_packet(0x19, "SCRAM-SHA-256", s3.client_first()))
        first, body = c.read_packet()
        r, props = reason_and_props(body)
        c.send(auth_packet(0x18, "SCRAM-SHA-256", s3.client_final(props[0x16][0])))
        first, body = c.read_packet()
        assert first >> 4 == 14 and body[0] == 0x86, (hex(first), body)
        c.close()
    check("SCRAM-SHA-256: right password, server signature, re-authentication", scram_ok)

    def scram_refused():
        r, _, c, _ = scram_login(port, "scram-2", "alice", "not-it")
        assert r == 0x86, hex(r)
        c.close()
        r, _, c, _ = scram_login(port, "scram-3", "nobody", "whatever")
        assert r == 0x86, hex(r)
        c.close()
        c = Client(port)
        c.send(connect_v5_raw("scram-4", method="KERBEROS", data=b"x"))
        first, body = c.read_packet()
        assert first >> 4 == 2 and body[1] == 0x8C, (hex(first), body)
        c.close()
    check("SCRAM-SHA-256: wrong password, unknown user, unknown method 0x8C", scram_refused)

    # -- hooks -----------------------------------------------------------------------
    ws.write("rules.lua", HOOKS)
    p.send_signal(signal.SIGHUP)
    wait(lambda: "authenticate" in open(rules).read() and ws.log().count("reloaded") >= 1,
         what="reload")

    def authn_hook():
        for v5 in (False, True):
            assert paho_connect(port, v5, client_id="banned-client") == (0x8A if v5 else 5)
            assert paho_connect(port, v5, client_id="hook-error") == (0x87 if v5 else 5)
            assert paho_connect(port, v5, "token-user", "let-me-in") == 0
            assert paho_connect(port, v5, "token-user", "guess") == (0x87 if v5 else 5)
            assert paho_connect(port, v5, "alice", "wonderland") == 0
            assert paho_connect(port, v5, "alice", "nope") == (0x86 if v5 else 4)
            assert paho_connect(port, v5, "bob", "builder") == (0x87 if v5 else 5)
        assert "authenticate hook failed" in ws.log() and "authenticate exploded" in ws.log()
    check("mq.authenticate: allow, deny with a reason, error denies", authn_hook)

    def authz_hook():
        alice = Paho(port, "alice-1", True, "alice", "wonderland")
        assert alice.subscribe("secret/#") == [1]
        v5 = Paho(port, "anon-5", True)
        v3 = Paho(port, "anon-3", False)
        assert v5.subscribe("secret/#") == [0x87]
        assert v5.subscribe("forbidden/#") == [0x87]
        assert v3.subscribe("secret/#") == [0x80]
        assert v5.subscribe("open/#") == [1]
        # v5 PUBACK 0x87, seen on the wire
        c = Client(port)
        c.send(connect_v5_raw("raw-anon"))
        assert c.read_packet()[0] >> 4 == 2
        c.send(packet(0x32, utf8("secret/a") + struct.pack("!H", 5) + b"\x00" + b"no"))
        first, body = c.read_packet()
        assert first >> 4 == 4 and body[:3] == b"\x00\x05\x87", (hex(first), body)
        c.send(packet(0x34, utf8("secret/a") + struct.pack("!H", 6) + b"\x00" + b"no"))
        first, body = c.read_packet()
        assert first >> 4 == 5 and body[:3] == b"\x00\x06\x87", (hex(first), body)
        c.send(packet(0x32, utf8("boom") + struct.pack("!H", 8) + b"\x00" + b"x"))
        first, body = c.read_packet()
        assert first >> 4 == 4 and body[:3] == b"\x00\x08\x87", (hex(first), body)
        # a hook stuck in a loop is stopped by the handler budget, and denies
        t0 = time.monotonic()
        c.send(packet(0x32, utf8("spin") + struct.pack("!H", 9) + b"\x00" + b"x"))
        first, body = c.read_packet()
        assert first >> 4 == 4 and body[:3] == b"\x00\x09\x87", (hex(first), body)
        assert time.monotonic() - t0 < 3
        assert "authorize hook stopped: exceeded its time budget" in ws.log()
        c.close()
        # 3.1.1: acknowledged, and dropped
        n = len(v3.pubacks)
        v3.c.publish("secret/b", b"dropped", qos=1)
        wait(lambda: len(v3.pubacks) > n, what="3.1.1 PUBACK")
        alice.c.publish("secret/c", b"kept", qos=1)
        wait(lambda: alice.got, what="alice's own message")
        assert alice.got == [("secret/c", b"kept")], alice.got
        v3.c.publish("open/x", b"fine", qos=1)
        wait(lambda: v5.got, what="open message")
        for cl in (alice, v5, v3):
            cl.close()
        assert "authorize hook failed" in ws.log()
        # a will is a publish: checked at CONNECT
        for v5 in (False, True):
            c = mqtt.Client(client_id="willing", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
            c.will_set("secret/will", b"bye")
            got = []
            c.on_connect = lambda cl, ud, fl, rc, props=None: got.append(
                rc.value if v5 else rc)
            c.connect("127.0.0.1", port)
            c.loop_start()
            wait(lambda: got, what="CONNACK")
            c.loop_stop()
            assert got[0] == (0x87 if v5 else 5), got
    check("mq.authorize: SUBACK 0x87/0x80, PUBACK/PUBREC 0x87, 3.1.1 dropped, will", authz_hook)

    def reloads():
        before = ws.log().count("reload of")
        ws.write("rules.lua", HOOKS + "\nthis is not lua\n")
        p.send_signal(signal.SIGHUP)
        wait(lambda: ws.log().count("reload of") > before, what="failed reload")
        assert paho_connect(port, True, client_id="banned-client") == 0x8A  # hooks kept
        n = ws.log().count("reloaded")
        ws.write("rules.lua", PLAIN)
        p.send_signal(signal.SIGHUP)
        wait(lambda: ws.log().count("reloaded") > n, what="reload")
        assert paho_connect(port, True, client_id="banned-client") == 0  # hooks gone
        anon = Paho(port, "anon-again", True)
        assert anon.subscribe("secret/#") == [1]
        anon.close()
    check("a failed reload keeps the hooks, a good one without hooks drops them", reloads)

    def cached():
        n = ws.log().count("reloaded")
        ws.write("rules.lua", r'''
local mq = require "mqrouter"
local calls = 0
mq.authorize(function(c, action, topic)
  calls = calls + 1
  return topic ~= "no/x"
end, { cache = true })
mq.route("calls/get", function() mq.publish("calls/n", tostring(calls)) end)
''')
        p.send_signal(signal.SIGHUP)
        wait(lambda: ws.log().count("reloaded") > n, what="reload")
        sub = Paho(port, "calls-sub", True)
        assert sub.subscribe("calls/n", 0) == [0]  # call 1
        c = Client(port)
        c.send(connect_v5_raw("cached-pub"))
        assert c.read_packet()[0] >> 4 == 2
        pid = 1
        for topic, times, code in (("a/x", 5, 0), ("no/x", 3, 0x87)):  # calls 2 and 3
            for _ in range(times):
                c.send(packet(0x32, utf8(topic) + struct.pack("!H", pid) + b"\x00" + b"x"))
                first, body = c.read_packet()
                got = body[2] if len(body) > 2 else 0  # success may be the short form
                assert first >> 4 == 4 and got == code, (topic, body)
                pid += 1
        c.send(packet(0x30, utf8("calls/get") + b"\x00" + b"?"))  # call 4
        wait(lambda: sub.got, what="calls/n")
        assert sub.got == [("calls/n", b"4")], sub.got
        sub.close()
        c.close()
    check("mq.authorize(fn, {cache = true}) asks once per client and topic", cached)

    ws2 = free_port()
    data2 = ws.path("data2")
    log = open(ws.path("open.log"), "ab")
    q = subprocess.Popen([BIN, "--listen", "0.0.0.0:%d" % ws2, "--allow-anonymous",
                          "--data-dir", data2, rules], stdout=log, stderr=log)
    ws.procs.append(q)
    wait_port(ws2)
    def allow_anonymous():
        for v5 in (False, True):
            assert paho_connect(ws2, v5) == 0
    check("--allow-anonymous opens a non-loopback listener", allow_anonymous)

    # -- TLS client certificates ---------------------------------------------------
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=ws.dir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=auth test CA")
    ws.write("san.cnf", "subjectAltName=IP:127.0.0.1\n")
    for name, subj, ext in (("server", "/CN=localhost", ["-extfile", "san.cnf"]),
                            ("dev9", "/O=Acme/CN=device-9", []), ("dev7", "/CN=device-7", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", subj)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", *ext)
    tls_rules = ws.write("tls.lua", r'''
local mq = require "mqrouter"
mq.authenticate(function(c)
  if c.cert_subject == "CN=device-9,O=Acme" then return true end
  return false, "banned"
end)
''')
    tls = free_port()
    log3 = open(ws.path("tls.log"), "ab")
    t = subprocess.Popen([BIN, "--no-listen", "--listen-tls", "0.0.0.0:%d" % tls, "--cert",
                          ws.path("server.pem"), "--key", ws.path("server.key"), "--cafile",
                          ws.path("ca.pem"), "--data-dir", ws.path("data3"), tls_rules],
                         stdout=log3, stderr=log3)
    ws.procs.append(t)
    wait_port(tls)

    def tls_pub(*args):
        return mosq_pub(tls, "--cafile", ws.path("ca.pem"), *args)

    def client_certs():
        # the hook sees the verified subject (RFC 2253 order)
        assert tls_pub("--cert", ws.path("dev9.pem"), "--key", ws.path("dev9.key")) == 0
        assert tls_pub("-V", "mqttv5", "--cert", ws.path("dev7.pem"), "--key",
                       ws.path("dev7.key")) == 0x8A
        # no certificate, no name: anonymous on 0.0.0.0, refused before the hook
        assert tls_pub() == 5
    check("TLS: a verified client certificate's subject reaches the hook", client_certs)

if failures:
    print("%d failed" % len(failures))
    raise SystemExit(1)
print("all passed")
