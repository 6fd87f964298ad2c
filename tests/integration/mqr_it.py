"""Helpers for the Python integration tests: free ports, starting mqrouter
and Mosquitto on loopback, and cleaning up whatever a test started."""
import os
import shutil
import signal
import sqlite3
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ["MQROUTER_BIN"]
SRC = os.environ["MQROUTER_SRC"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port}")


def wait(pred, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Retained:
    """The latest payload (text) of a retained topic on mqrouter's listener:
    how tests read figures the rules publish (e.g. a session's status)."""

    def __init__(self, port, topic):
        import paho.mqtt.client as mqtt
        self.value = None
        self.c = mqtt.Client()
        self.c.on_connect = lambda c, u, f, rc: c.subscribe(topic)
        self.c.on_message = lambda c, u, m: setattr(self, "value", m.payload.decode())
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def number(self):
        return int(float(self.value)) if self.value is not None else -1

    def close(self):
        self.c.loop_stop()


class Workspace:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mqr-it-")
        self.procs = []
        self.routers = []  # mqrouter processes: a stop must exit 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        tmp = self.path(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path(name))  # atomic, like an editor's save
        return self.path(name)

    def mqrouter(self, port, script, data="data", extra=()):
        log = open(self.path("mqrouter.log"), "ab")
        p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{port}", "--data-dir",
                              self.path(data), *extra, script], stdout=log, stderr=log)
        self.procs.append(p)
        self.routers.append(p)
        wait_port(port)
        return p

    def mosquitto(self, port, extra=""):
        """A Mosquitto on port; extra: more lines of its configuration."""
        conf = self.write(f"mosquitto-{port}.conf",
                          f"listener {port} 127.0.0.1\nallow_anonymous true\n{extra}")
        log = open(self.path(f"mosquitto-{port}.log"), "ab")
        p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdout=log, stderr=log)
        self.procs.append(p)
        wait_port(port)
        return p

    def log(self):
        try:
            with open(self.path("mqrouter.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self, check=True):
        """Stops what is still running. An mqrouter stopped here must exit 0:
        a graceful stop that fails, crashes or (under the sanitizers) reports
        a leak fails the test. Processes the test killed itself are not
        checked."""
        stopped = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                stopped.append(p)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        bad = [p.returncode for p in self.routers if p in stopped and p.returncode != 0]
        if check and bad:
            sys.stderr.write("--- mqrouter log:\n" + self.log()[-6000:])
            shutil.rmtree(self.dir, ignore_errors=True)
            raise AssertionError(f"mqrouter did not stop cleanly on SIGTERM: exit {bad}")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            sys.stderr.write("--- mqrouter log:\n" + self.log()[-4000:])
        self.close(check=exc[0] is None)


def upstream_records(ws, session):
    """Records an upstream session keeps, read while mqrouter is not running:
    Paho's in data/upstream.db (kept locked while it runs), the native
    transport's in the engine store's upstream_outbox (data/mqrouter.db);
    -1 when neither file has a table for them."""
    n, found = 0, False
    for name, table in (("upstream.db", "records"), ("mqrouter.db", "upstream_outbox")):
        db = ws.path("data/" + name)
        if not os.path.exists(db):
            continue
        con = sqlite3.connect(db, timeout=5)
        try:
            n += con.execute(f"SELECT count(*) FROM {table} WHERE session = ?",
                             (session,)).fetchone()[0]
            found = True
        except sqlite3.OperationalError:
            pass  # no such table: this file holds none of them
        finally:
            con.close()
    return n if found else -1
