#!/usr/bin/python3
"""test_transports: the mqrouter binary's TLS and WebSocket listeners against
real clients.

Certificates are made at test time with the `openssl` command (a CA, a
server certificate for 127.0.0.1/localhost, a client certificate). One
mqrouter serves --listen (TCP), --listen-tls (client certificates optional),
--listen-ws and --listen-wss on free loopback ports; a second one requires
client certificates. Checked:
- mosquitto_sub over TLS receives what mosquitto_pub publishes over TLS;
- with --require-cert a client without a certificate is refused and one
  with a certificate signed by the CA gets through;
- a plaintext MQTT client on the TLS port is dropped and the TLS clients
  already connected keep working; a client that connects and sends nothing
  (a stalled handshake) does not hold up anyone else;
- paho over WebSocket (ws and wss, MQTT 3.1.1 and 5) publishes and receives
  QoS 0 and 1, including a message bigger than one read;
- a hand-made WebSocket client: a CONNECT split over two frames, two
  packets in one frame, a ping answered with a pong, a close answered with a
  close; text frames close the connection;
- bad upgrade requests get an HTTP error (400 without the "mqtt"
  subprotocol, 426 for another WebSocket version, 405 for POST), a good
  one 101 with "Sec-WebSocket-Protocol: mqtt";
- a client id connected on TCP is taken over by the same id on WebSocket
  (one client-id space for every listener).
Every wait is bounded; everything started is killed and removed on exit.
"""
import base64
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import paho.mqtt.client as mqtt
except ImportError:  # a python3 other than Debian's comes first on PATH
    sys.path.append("/usr/lib/python3/dist-packages")
    import paho.mqtt.client as mqtt

MQROUTER = os.environ.get("MQROUTER_BIN")
TIMEOUT = 5.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(proc, port, log):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mqrouter exited at start:\n" + open(log).read())
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


def make_certs(d):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=mqrouter test CA")
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "san.cnf"]),
                          ("client", "client1", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=" + cn)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", *ext)
    # a CA the server does not trust, for a client certificate it must refuse
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out",
        "rogue.pem", "-days", "2", "-subj", "/CN=rogue")


class T:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="mqr-tp-")
        self.procs = []
        self.failures = 0
        make_certs(self.tmp)
        self.ca = self.p("ca.pem")

    def p(self, name):
        return os.path.join(self.tmp, name)

    def start(self, name, args):
        rules = self.p("rules.lua")
        with open(rules, "w") as f:
            f.write("-- no rules\n")
        log = self.p(name + ".log")
        with open(log, "a") as lf:
            proc = subprocess.Popen([MQROUTER, *args, "--cert", self.p("server.pem"), "--key",
                                     self.p("server.key"), "--cafile", self.ca, "--data-dir",
                                     self.p(name + "-data"), "--no-watch", rules],
                                    stdout=lf, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc, log

    def close(self):
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check(self, name, fn):
        try:
            fn()
            print("ok   %s" % name)
        except Exception:
            self.failures += 1
            print("FAIL %s" % name)
            traceback.print_exc()


def run(cmd, timeout=TIMEOUT):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def paho(port, cid, proto=mqtt.MQTTv311, transport="tcp", ca=None, cert=None):
    c = mqtt.Client(client_id=cid, protocol=proto, transport=transport)
    if ca:
        c.tls_set(ca_certs=ca, certfile=cert[0] if cert else None,
                  keyfile=cert[1] if cert else None)
    got = []
    cond = threading.Condition()

    def on_message(cl, ud, m):
        with cond:
            got.append((m.topic, m.payload, m.qos))
            cond.notify_all()
    c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert connected.wait(TIMEOUT), "%s: no CONNACK" % cid
    c.got, c.cond = got, cond
    return c


def subscribe(c, flt, qos=1):
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(flt, qos)
    assert done.wait(TIMEOUT), "no SUBACK"


def wait_msgs(c, n):
    with c.cond:
        c.cond.wait_for(lambda: len(c.got) >= n, TIMEOUT)
    assert len(c.got) >= n, "got %d of %d messages: %r" % (len(c.got), n, c.got)
    return c.got


def stop(*clients):
    for c in clients:
        c.disconnect()
        c.loop_stop()


# ---- a raw WebSocket client -------------------------------------------------

def ws_frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def recv_some(s, timeout=TIMEOUT):
    s.settimeout(timeout)
    try:
        return s.recv(65536)
    except socket.timeout:
        return None
    except ConnectionResetError:
        return b""


def upgrade(port, headers):
    s = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    s.sendall(headers.encode())
    resp = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in resp and time.monotonic() < deadline:
        chunk = recv_some(s)
        if not chunk:
            break
        resp += chunk
    return s, resp


def ws_request(port, protocol="mqtt", version="13", method="GET"):
    key = base64.b64encode(os.urandom(16)).decode()
    h = ("%s /mqtt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n"
         % (method, port, key, version))
    if protocol is not None:
        h += "Sec-WebSocket-Protocol: %s\r\n" % protocol
    if method == "POST":
        h += "Content-Length: 0\r\n"
    return h + "\r\n"


def read_frames(s, want, timeout=TIMEOUT):
    """Reads server frames until `want` of them arrived; returns [(op, payload)]."""
    buf = b""
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < want and time.monotonic() < deadline:
        while len(buf) >= 2:
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            frames.append((op, buf[off:off + n]))
            buf = buf[off + n:]
        if len(frames) >= want:
            break
        chunk = recv_some(s, max(0.05, deadline - time.monotonic()))
        if not chunk:
            break
        buf += chunk
    return frames


CONNECT_V4 = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 2]) + b"rw"
PINGREQ = bytes([0xC0, 0])


def main():
    if not MQROUTER:
        print("MQROUTER_BIN is not set")
        return 2
    t = T()
    try:
        tcp, tls, ws, wss, tls_req = (free_port() for _ in range(5))
        proc, log = t.start("a", ["--listen", "127.0.0.1:%d" % tcp, "--listen-tls",
                                  "127.0.0.1:%d" % tls, "--listen-ws", "127.0.0.1:%d" % ws,
                                  "--listen-wss", "127.0.0.1:%d" % wss])
        for port in (tcp, tls, ws, wss):
            wait_port(proc, port, log)
        proc2, log2 = t.start("b", ["--listen-tls", "127.0.0.1:%d" % tls_req,
                                    "--require-cert"])
        wait_port(proc2, tls_req, log2)

        def tls_pub_sub():
            sub = subprocess.Popen(["mosquitto_sub", "--cafile", t.ca, "-h", "127.0.0.1", "-p",
                                    str(tls), "-t", "tls/t", "-C", "1", "-W", "10"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # publish until the subscriber (whose SUBSCRIBE races us) has it
            deadline = time.monotonic() + TIMEOUT
            while sub.poll() is None and time.monotonic() < deadline:
                r = run(["mosquitto_pub", "--cafile", t.ca, "-h", "127.0.0.1", "-p", str(tls),
                         "-t", "tls/t", "-m", "hello over tls", "-q", "1"])
                assert r.returncode == 0, r.stderr
                time.sleep(0.2)
            out, err = sub.communicate(timeout=TIMEOUT)
            assert sub.returncode == 0, err
            assert out == b"hello over tls\n", out
        t.check("mosquitto_pub -> mosquitto_sub over TLS", tls_pub_sub)

        def tls_wrong_ca():
            # the client does not trust a server certificate it cannot verify
            r = run(["mosquitto_pub", "--cafile", t.p("rogue.pem"), "-h", "127.0.0.1", "-p",
                     str(tls), "-t", "x", "-m", "x"])
            assert r.returncode != 0
        t.check("a client that does not trust the server certificate cannot publish",
                tls_wrong_ca)

        def require_cert():
            base = ["mosquitto_pub", "--cafile", t.ca, "-h", "127.0.0.1", "-p", str(tls_req),
                    "-t", "req/t", "-m", "x", "-q", "1"]
            r = run(base)
            assert r.returncode != 0, "accepted without a client certificate"
            r = run(base + ["--cert", t.p("rogue.pem"), "--key", t.p("rogue.key")])
            assert r.returncode != 0, "accepted a certificate from an unknown CA"
            r = run(base + ["--cert", t.p("client.pem"), "--key", t.p("client.key")])
            assert r.returncode == 0, r.stderr
            c = paho(tls_req, "certified", ca=t.ca, cert=(t.p("client.pem"), t.p("client.key")))
            subscribe(c, "req/#")
            c.publish("req/x", b"yes", 1)
            assert wait_msgs(c, 1)[0][1] == b"yes"
            stop(c)
        t.check("--require-cert: refused without a certificate, accepted with one",
                require_cert)

        def plaintext_on_tls():
            a = paho(tls, "tls-a", ca=t.ca)
            subscribe(a, "keep/#")
            s = socket.create_connection(("127.0.0.1", tls), TIMEOUT)
            s.sendall(CONNECT_V4)
            data = recv_some(s)
            # an alert at most, never a CONNACK, then the end
            while data:
                assert not data.startswith(b"\x20\x02"), "CONNACK to plaintext"
                data = recv_some(s)
            assert data == b"", "plaintext client not dropped"
            s.close()
            a.publish("keep/x", b"still here", 1)
            assert wait_msgs(a, 1)[0][1] == b"still here"
            stop(a)
        t.check("a plaintext client on the TLS port is dropped, others go on", plaintext_on_tls)

        def silent_client():
            idle = [socket.create_connection(("127.0.0.1", p), TIMEOUT) for p in (tls, wss, ws)]
            idle[0].sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
            t0 = time.monotonic()
            a = paho(tls, "tls-b", ca=t.ca)
            subscribe(a, "slow/#")
            b = paho(wss, "wss-b", transport="websockets", ca=t.ca)
            b.publish("slow/x", b"not blocked", 1)
            assert wait_msgs(a, 1)[0][1] == b"not blocked"
            assert time.monotonic() - t0 < 3, "took %.1f s" % (time.monotonic() - t0)
            stop(a, b)
            for s in idle:
                s.close()
        t.check("silent clients mid-handshake block nobody", silent_client)

        def websocket_paho(port, ca):
            for proto in (mqtt.MQTTv311, mqtt.MQTTv5):
                tag = "%d-%d" % (port, proto)
                s = paho(port, "ws-s-" + tag, proto, "websockets", ca)
                subscribe(s, "ws/%s/#" % tag)
                p = paho(port, "ws-p-" + tag, proto, "websockets", ca)
                big = os.urandom(300000)
                p.publish("ws/%s/a" % tag, b"zero", 0)
                p.publish("ws/%s/b" % tag, big, 1).wait_for_publish()
                got = wait_msgs(s, 2)
                assert (got[0][1], got[0][2]) == (b"zero", 0), got[0]
                assert (got[1][1], got[1][2]) == (big, 1), "big message differs"
                stop(s, p)
        t.check("paho over ws://, MQTT 3.1.1 and 5, QoS 0 and 1", lambda: websocket_paho(ws, None))
        t.check("paho over wss://, MQTT 3.1.1 and 5, QoS 0 and 1",
                lambda: websocket_paho(wss, t.ca))

        def upgrade_errors():
            for kw, code in (({"protocol": None}, b"400"), ({"protocol": "mqttv3.1"}, b"400"),
                             ({"version": "8"}, b"426"), ({"method": "POST"}, b"405")):
                s, resp = upgrade(ws, ws_request(ws, **kw))
                assert resp.startswith(b"HTTP/1.1 " + code), (kw, resp)
                assert recv_some(s) == b"", "connection left open after %r" % kw
                s.close()
            s, resp = upgrade(ws, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert resp.startswith(b"HTTP/1.1 400"), resp
            s.close()
            s, resp = upgrade(ws, "\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00")
            assert resp.startswith(b"HTTP/1.1 400") or resp == b"", resp
            s.close()
        t.check("bad upgrade requests get an HTTP error", upgrade_errors)

        def raw_websocket():
            s, resp = upgrade(ws, ws_request(ws, protocol="foo, mqtt"))
            assert resp.startswith(b"HTTP/1.1 101"), resp
            assert b"Sec-WebSocket-Protocol: mqtt\r\n" in resp, resp
            # CONNECT split over a fragmented message's two frames
            s.sendall(ws_frame(0x2, CONNECT_V4[:7], fin=False) + ws_frame(0x0, CONNECT_V4[7:]))
            op, payload = read_frames(s, 1)[0]
            assert (op, payload) == (0x2, b"\x20\x02\x00\x00"), (op, payload)
            # two PINGREQs in one frame, then a WebSocket ping
            s.sendall(ws_frame(0x2, PINGREQ + PINGREQ))
            s.sendall(ws_frame(0x9, b"are you there"))
            got = b""
            pong = None
            for op, payload in read_frames(s, 3, 2.0):
                if op == 0x2:
                    got += payload
                elif op == 0xA:
                    pong = payload
            assert got == b"\xd0\x00\xd0\x00", got
            assert pong == b"are you there", pong
            # close: answered with a close
            s.sendall(ws_frame(0x8, struct.pack(">H", 1000)))
            frames = read_frames(s, 1)
            assert frames and frames[0][0] == 0x8, frames
            s.close()
            # a text frame closes the connection (MQTT 6.0.0-1)
            s, resp = upgrade(ws, ws_request(ws))
            s.sendall(ws_frame(0x1, CONNECT_V4))
            frames = read_frames(s, 1)
            assert frames and frames[0][0] == 0x8, frames
            assert struct.unpack(">H", frames[0][1][:2])[0] == 1003, frames
            s.close()
        t.check("raw WebSocket: split and packed frames, ping, close, text", raw_websocket)

        def unmasked_frame():
            # RFC 6455 5.1: client frames must be masked; wslay refuses, we close
            s, resp = upgrade(ws, ws_request(ws))
            assert resp.startswith(b"HTTP/1.1 101"), resp
            s.sendall(bytes([0x82, len(CONNECT_V4)]) + CONNECT_V4)
            frames = read_frames(s, 1)
            assert frames and frames[0][0] == 0x8, frames
            assert struct.unpack(">H", frames[0][1][:2])[0] == 1002, frames
            assert recv_some(s) == b"", "connection left open"
            s.close()
        t.check("an unmasked frame gets close 1002 and the end", unmasked_frame)

        def takeover_across_listeners():
            gone = threading.Event()
            a = paho(tcp, "same-id")
            a.on_disconnect = lambda *x: gone.set()
            b = paho(ws, "same-id", transport="websockets")
            assert gone.wait(TIMEOUT), "the TCP connection was not taken over"
            a.loop_stop()
            subscribe(b, "same/#")
            stop(b)
        t.check("a client id is taken over across listeners", takeover_across_listeners)

        def check_mode():
            # --check validates mq.listen without taking the (busy) port
            rules = t.p("listen.lua")
            with open(rules, "w") as f:
                f.write('local mq = require "mqrouter"\n'
                        'local l = mq.listen{ port = %d }\n'
                        'mq.listen{ type = "tls", port = %d, cert = "%s", key = "%s" }\n'
                        'assert(l:port() == nil)\n'
                        % (tcp, tls, t.p("server.pem"), t.p("server.key")))
            r = run([MQROUTER, "--check", rules])
            assert r.returncode == 0 and b"OK" in r.stdout, (r.stdout, r.stderr)
            with open(rules, "a") as f:
                f.write('mq.listen{ type = "tls", port = 1, cert = "/nonexistent.pem", '
                        'key = "/nonexistent.key" }\n')
            r = run([MQROUTER, "--check", rules])
            assert r.returncode != 0 and b"/nonexistent.pem" in r.stderr, (r.stdout, r.stderr)
        t.check("--check validates listeners without binding", check_mode)

        def clean_exit():
            # a clean stop with clients of every transport still connected
            # (under the sanitizers, a leak or an error makes this fail)
            keep = [paho(tls, "left-tls", ca=t.ca), paho(ws, "left-ws", transport="websockets"),
                    paho(wss, "left-wss", transport="websockets", ca=t.ca)]
            for p, lg in ((proc, log), (proc2, log2)):
                assert p.poll() is None, "mqrouter died:\n" + open(lg).read()[-3000:]
                p.send_signal(signal.SIGTERM)
                rc = p.wait(TIMEOUT * 2)
                assert rc == 0, "exit status %d:\n%s" % (rc, open(lg).read()[-3000:])
            for c in keep:
                c.loop_stop()
        t.check("stops cleanly with clients connected on every transport", clean_exit)
    except Exception:
        traceback.print_exc()
        t.failures += 1
    finally:
        if t.failures:
            for _, lg in t.procs:
                try:
                    sys.stdout.write("--- %s (tail)\n%s\n" % (lg, open(lg).read()[-4000:]))
                except OSError:
                    pass
        t.close()
    print("%d failed" % t.failures)
    return 1 if t.failures else 0


if __name__ == "__main__":
    sys.exit(main())
