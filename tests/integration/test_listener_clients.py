#!/usr/bin/python3
"""test_listener_clients: the real mqrouter binary's embedded listener against
real clients -- mosquitto_pub/mosquitto_sub (MQTT 3.1.1 and 5) and Python
paho-mqtt 1.6 (both versions).

It starts `$MQROUTER_BIN --listen 127.0.0.1:<free port> --data-dir <tmp>
<tmp>/rules.lua` (an empty script), checks publish/subscribe at QoS 0 and 1,
wildcards, retained messages, v5 subscription options, and that a retained
message survives a restart (SIGTERM, start again on the same data dir). Every
wait is bounded; everything it started is killed and removed on exit.
"""
import os
import select
import shutil
import signal
import socket
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

MQROUTER = os.environ.get("MQROUTER_BIN")
TIMEOUT = 5.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Router:
    """One mqrouter process on a port and data dir."""

    def __init__(self, tmp, port):
        self.tmp = tmp
        self.port = port
        self.proc = None
        self.log_path = os.path.join(tmp, "mqrouter.log")

    def start(self):
        rules = os.path.join(self.tmp, "rules.lua")
        with open(rules, "w") as f:
            f.write("-- no rules: the listener alone\n")
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [MQROUTER, "--listen", "127.0.0.1:%d" % self.port, "--data-dir",
             os.path.join(self.tmp, "data"), "--no-watch", rules],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mqrouter exited at start:\n" + self.log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mqrouter does not listen on %d:\n%s" % (self.port, self.log()))

    def stop(self, sig=signal.SIGTERM):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("mqrouter did not stop on SIGTERM")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def run(cmd, timeout=TIMEOUT):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- mosquitto_pub / mosquitto_sub ----------------------------------------

_probe_seq = [0]


def sub_start(port, version, topic, count, fmt="%t %p", qos=1):
    """mosquitto_sub in the background, returned once it is subscribed.

    mosquitto_sub has no "ready" signal, so it also subscribes (in the same
    SUBSCRIBE) to a probe topic holding a retained message: that message comes
    right after the SUBACK, so once it is printed every filter is in place."""
    _probe_seq[0] += 1
    probe = "probe/%d/%d" % (os.getpid(), _probe_seq[0])
    pub(port, version, probe, "ready", retain=True)
    p = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", probe,
         "-t", topic, "-q", str(qos), "-C", str(count + 1), "-F", fmt, "-W", str(int(TIMEOUT))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = b""
    deadline = time.monotonic() + TIMEOUT
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            b = os.read(p.stdout.fileno(), 1)
            if not b:
                break
            line += b
    check(line.startswith(probe.encode()), "mosquitto_sub not ready: %r" % line)
    p.probe = (port, probe)
    return p


def sub_wait(p):
    out, err = p.communicate(timeout=TIMEOUT + 2)
    check(p.returncode == 0, "mosquitto_sub failed (%s): %s %s" % (p.returncode, out, err))
    port, probe = p.probe
    pub(port, "mqttv311", probe, "", retain=True)  # now: it would have counted as a message
    return out.decode().splitlines()


def pub(port, version, topic, msg, qos=0, retain=False):
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", topic,
           "-m", msg, "-q", str(qos)]
    if retain:
        cmd.append("-r")
    r = run(cmd)
    check(r.returncode == 0, "mosquitto_pub %s failed: %s" % (cmd, r.stderr))


def test_mosquitto_clients(port):
    for sv in ("mqttv311", "mqttv5"):
        for pv in ("mqttv311", "mqttv5"):
            s = sub_start(port, sv, "mc/+/data", 2, fmt="%t %q %p")
            pub(port, pv, "mc/a/data", "zero-%s" % pv, qos=0)
            pub(port, pv, "mc/b/other", "not-for-us", qos=1)
            pub(port, pv, "mc/b/data", "one-%s" % pv, qos=1)
            lines = sub_wait(s)
            check(lines == ["mc/a/data 0 zero-%s" % pv, "mc/b/data 1 one-%s" % pv],
                  "sub %s <- pub %s: %r" % (sv, pv, lines))


def test_mosquitto_retained(port):
    pub(port, "mqttv311", "mr/x", "kept311", qos=1, retain=True)
    pub(port, "mqttv5", "mr/y", "kept5", qos=0, retain=True)
    for sv in ("mqttv311", "mqttv5"):
        lines = sub_wait(sub_start(port, sv, "mr/#", 2, fmt="%t %r %p"))
        check(sorted(lines) == ["mr/x 1 kept311", "mr/y 1 kept5"], "retained %s: %r" % (sv, lines))
    # an empty retained message clears it: a marker is then the first thing seen
    pub(port, "mqttv5", "mr/x", "", retain=True)
    s = sub_start(port, "mqttv311", "mr/x", 1, fmt="%t %r %p")
    pub(port, "mqttv311", "mr/x", "marker")
    lines = sub_wait(s)
    check(lines == ["mr/x 0 marker"], "cleared retained: %r" % lines)


# ---- paho ---------------------------------------------------------------

class Paho:
    def __init__(self, port, protocol, client_id=""):
        self.msgs = []
        self.cv = threading.Condition()
        self.connected = threading.Event()
        self.subacked = threading.Event()
        self.rc = None
        kw = {"client_id": client_id, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kw["clean_session"] = True
        self.c = mqtt.Client(**kw)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        if protocol == mqtt.MQTTv5:
            self.c.connect("127.0.0.1", port, 30, clean_start=True)
        else:
            self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        check(self.connected.wait(TIMEOUT), "paho did not connect")
        check(self.rc == 0, "paho CONNACK %s" % self.rc)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self.rc = rc if isinstance(rc, int) else rc.value
        self.connected.set()

    def _on_subscribe(self, *args):
        self.subacked.set()

    def _on_message(self, client, userdata, msg):
        with self.cv:
            self.msgs.append(msg)
            self.cv.notify_all()

    def subscribe(self, topic, **kw):
        self.subacked.clear()
        self.c.subscribe(topic, **kw)
        check(self.subacked.wait(TIMEOUT), "no SUBACK for %s" % topic)

    def wait(self, n):
        with self.cv:
            self.cv.wait_for(lambda: len(self.msgs) >= n, TIMEOUT)
            return list(self.msgs)

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(TIMEOUT)
        check(info.is_published(), "publish %s not acknowledged" % topic)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_paho(port):
    for sp in (mqtt.MQTTv311, mqtt.MQTTv5):
        for pp in (mqtt.MQTTv311, mqtt.MQTTv5):
            s = Paho(port, sp)
            if sp == mqtt.MQTTv5:
                s.subscribe("pa/+/x", options=SubscribeOptions(qos=1))
            else:
                s.subscribe("pa/+/x", qos=1)
            p = Paho(port, pp)
            p.publish("pa/1/x", b"q0", qos=0)
            p.publish("pa/1/y", b"nope", qos=1)
            p.publish("pa/2/x", b"q1", qos=1)
            got = s.wait(2)
            check([(m.topic, m.payload, m.qos) for m in got] ==
                  [("pa/1/x", b"q0", 0), ("pa/2/x", b"q1", 1)],
                  "paho %s <- %s: %r" % (sp, pp, [(m.topic, m.payload, m.qos) for m in got]))
            p.close()
            s.close()


def test_paho_v5_options(port):
    # subscription identifier echoed, no-local honoured, retain as published
    c = Paho(port, mqtt.MQTTv5, "opts")
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = 42
    c.subscribe("po/#", options=SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True),
                properties=props)
    c.publish("po/self", b"mine", qos=1)
    other = Paho(port, mqtt.MQTTv5, "other")
    other.publish("po/ret", b"r", qos=1, retain=True)
    got = c.wait(1)
    time.sleep(0.2)
    got = c.wait(1)
    check(len(got) == 1, "no-local: %r" % [(m.topic, m.payload) for m in got])
    m = got[0]
    check(m.topic == "po/ret" and m.payload == b"r" and m.retain, "rap: %r" % m)
    check(getattr(m.properties, "SubscriptionIdentifier", None) == [42],
          "subscription id: %r" % m.properties)
    # retained message cleared for the following tests
    other.publish("po/ret", b"", qos=1, retain=True)
    other.close()
    c.close()


def test_retained_survives_restart(router):
    pub(router.port, "mqttv311", "persist/me", "across-restart", qos=1, retain=True)
    rc = router.stop()
    check(rc == 0, "mqrouter exit status %s on SIGTERM:\n%s" % (rc, router.log()))
    router.start()
    for sv in ("mqttv311", "mqttv5"):
        lines = sub_wait(sub_start(router.port, sv, "persist/#", 1, fmt="%t %r %p"))
        check(lines == ["persist/me 1 across-restart"], "after restart (%s): %r" % (sv, lines))
    s = Paho(router.port, mqtt.MQTTv5)
    s.subscribe("persist/+", options=SubscribeOptions(qos=1))
    got = s.wait(1)
    check(len(got) == 1 and got[0].payload == b"across-restart" and got[0].retain,
          "paho after restart: %r" % got)
    s.close()


def main():
    if not MQROUTER or not os.access(MQROUTER, os.X_OK):
        print("MQROUTER_BIN is not set to an executable", file=sys.stderr)
        return 1
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if not shutil.which(tool):
            print("%s not installed" % tool, file=sys.stderr)
            return 1
    tmp = tempfile.mkdtemp(prefix="mqr-listener-it-")
    router = Router(tmp, free_port())
    failed = 0
    try:
        router.start()
        tests = [
            ("mosquitto clients 3.1.1/5 QoS 0/1, wildcard", lambda: test_mosquitto_clients(router.port)),
            ("mosquitto retained", lambda: test_mosquitto_retained(router.port)),
            ("paho 3.1.1/5 QoS 0/1, wildcard", lambda: test_paho(router.port)),
            ("paho v5 subscription options", lambda: test_paho_v5_options(router.port)),
            ("retained survives a restart", lambda: test_retained_survives_restart(router)),
        ]
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fn()
                print("ok   %s (%.2fs)" % (name, time.monotonic() - t0))
            except Exception:
                failed += 1
                print("FAIL %s" % name)
                traceback.print_exc()
                if router.proc and router.proc.poll() is not None:
                    print("mqrouter died:\n" + router.log())
                    break
        rc = router.stop()
        if rc not in (0, None):
            failed += 1
            print("FAIL mqrouter exit status %s:\n%s" % (rc, router.log()))
    finally:
        try:
            router.stop(signal.SIGKILL)
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
