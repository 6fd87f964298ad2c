"""A raw MQTT client for the abuse tests: builds packets by hand (so a test
can send exactly the broken, truncated or out-of-order bytes it means) and
reads the server's packets back. Blocking sockets with timeouts; nothing
here retries or hides an error."""
import socket
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(client_id, version=4, keepalive=60, clean=True):
    props = b"\x00" if version == 5 else b""
    body = s("MQTT") + bytes([version, 0x02 if clean else 0]) + struct.pack("!H", keepalive)
    return packet(0x10, body + props + s(client_id))


def publish(topic, payload, qos=0, pid=1, version=4, retain=False):
    body = s(topic) + (struct.pack("!H", pid) if qos else b"")
    body += (b"\x00" if version == 5 else b"") + payload
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body)


def subscribe(topic, qos=0, pid=1, version=4):
    body = struct.pack("!H", pid) + (b"\x00" if version == 5 else b"") + s(topic) + bytes([qos])
    return packet(0x82, body)


def ack(kind, pid, version=4, reason=None):
    first = (kind << 4) | (2 if kind == PUBREL else 0)
    body = struct.pack("!H", pid)
    if version == 5 and reason is not None:
        body += bytes([reason])
    return packet(first, body)


PING = b"\xc0\x00"


def read_varint(data, i):
    """(value, index after it) of the Variable Byte Integer at data[i], or
    None when data ends inside it."""
    n, mult = 0, 1
    while i < len(data):
        b = data[i]
        n += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            return n, i
    return None


def split_packet(buf):
    """(first byte, body, rest) of the first whole packet in buf, or None
    while it is incomplete."""
    whole = packet_at(buf, 0)
    if whole is None:
        return None
    first, body, end = whole
    return first, body, buf[end:]


def packet_at(buf, pos):
    """(first byte, body, end) of the whole packet starting at buf[pos], or
    None while it is incomplete: for reading many packets out of one buffer
    without copying the rest after each (split_packet does)."""
    v = read_varint(buf, pos + 1)
    if v is None or len(buf) < v[1] + v[0]:
        return None
    n, i = v
    return buf[pos], buf[i:i + n], i + n


class Client:
    def __init__(self, port, rcvbuf=None, timeout=5.0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.version = 4

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return b""
        return d

    def next(self, timeout=5.0):
        """(type, flags, body), or None after timeout, or 'closed'."""
        deadline = time.time() + timeout
        while True:
            whole = split_packet(self.buf)
            if whole:
                first, body, self.buf = whole
                return first >> 4, first & 15, body
            left = deadline - time.time()
            if left <= 0:
                return None
            d = self._fill(left)
            if d is None:
                return None
            if d == b"":
                return "closed"
            self.buf += d

    def expect(self, kind, timeout=5.0):
        p = self.next(timeout)
        assert p not in (None, "closed"), f"expected packet type {kind}, got {p!r}"
        assert p[0] == kind, f"expected packet type {kind}, got {p[0]} ({p!r})"
        return p

    def expect_closed(self, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.next(deadline - time.time())
            if p == "closed":
                return
            if p is None:
                break
        raise AssertionError("connection still open")

    def login(self, client_id, version=4, keepalive=60):
        self.version = version
        self.send(connect(client_id, version, keepalive))
        p = self.expect(CONNACK)
        assert p[2][1] == 0, f"CONNACK refused: {p!r}"

    def sub(self, topic, qos=0):
        self.send(subscribe(topic, qos, 1, self.version))
        p = self.expect(SUBACK)
        return p

    def ping(self, timeout=5.0):
        self.send(PING)
        while True:
            p = self.next(timeout)
            assert p not in (None, "closed"), f"no PINGRESP: {p!r}"
            if p[0] == PINGRESP:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def publish_fields(body, flags, version=4):
    """(topic, payload) of a PUBLISH body."""
    tl = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + tl].decode()
    off = 2 + tl + (2 if (flags >> 1) & 3 else 0)
    if version == 5:
        n, mult = 0, 1
        while True:
            b = body[off]
            off += 1
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        off += n
    return topic, body[off:]


def ack_reason(p):
    """The reason code of a PUBACK/PUBREC/PUBCOMP packet (0 when absent)."""
    body = p[2]
    return body[2] if len(body) > 2 else 0


def refused_when_full(port, topic):
    """Against a listener whose route for `topic` keeps two messages and then
    has no room (a full queue, a full session buffer): an MQTT 5 publisher's
    two QoS 1 PUBLISHes are accepted, the next QoS 1 gets PUBACK 0x97 and a
    QoS 2 PUBREC 0x97, and it stays connected; a 3.1.1 publisher's refused
    QoS 1 closes its connection unacknowledged. Returns the two clients."""
    v5 = Client(port)
    v5.login("v5-pub", version=5)
    for pid in (1, 2):
        v5.send(publish(topic, b"ok", qos=1, pid=pid, version=5))
        p = v5.expect(PUBACK)
        assert struct.unpack("!H", p[2][:2])[0] == pid and ack_reason(p) == 0, p
    v5.send(publish(topic, b"no room", qos=1, pid=3, version=5))
    p = v5.expect(PUBACK)
    assert struct.unpack("!H", p[2][:2])[0] == 3 and ack_reason(p) == 0x97, \
        f"expected Quota exceeded, got {p!r}"
    v5.send(publish(topic, b"no room", qos=2, pid=4, version=5))
    p = v5.expect(PUBREC)
    assert ack_reason(p) == 0x97, p
    v5.ping()  # still connected
    print("v5: accepted twice, then PUBACK/PUBREC 0x97")

    v3 = Client(port)
    v3.login("v3-pub", version=4)
    v3.send(publish(topic, b"no room", qos=1, pid=7, version=4))
    v3.expect_closed()
    print("v3.1.1: closed without a PUBACK")
    return v5, v3
