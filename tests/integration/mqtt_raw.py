"""A minimal MQTT 5 client over a raw socket, for tests that need to see or
send exactly the bytes a library would hide (topic aliases, properties,
malformed packets). Only what the tests use."""
import socket
import struct
import time

from rawmqtt import read_varint, split_packet


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(type_flags, body):
    return bytes([type_flags]) + varint(len(body)) + body


def connect_v5(client_id, keepalive=60, props=b"", clean=True):
    flags = 0x02 if clean else 0
    body = utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive)
    body += varint(len(props)) + props + utf8(client_id)
    return packet(0x10, body)


def subscribe_v5(pid, topic_filter, qos=0, props=b""):
    body = struct.pack("!H", pid) + varint(len(props)) + props + utf8(topic_filter) + bytes([qos])
    return packet(0x82, body)


def publish_v5(topic, payload, qos=0, pid=1, props=b"", retain=False):
    body = utf8(topic) + (struct.pack("!H", pid) if qos else b"") + varint(len(props)) + props
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body + payload)


class Client:
    def __init__(self, port, host="127.0.0.1", timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_packet(self, timeout=5):
        """Returns (first byte, body) of the next packet, or None at EOF."""
        deadline = time.time() + timeout
        while True:
            whole = split_packet(self.buf)
            if whole:
                first, body, self.buf = whole
                return first, body
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no complete packet")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def close(self):
        self.sock.close()


def parse_props(data):
    """Returns (props dict id -> list of raw values, rest). Integers for the
    numeric types, bytes for strings/binary, (k, v) for user properties."""
    n, i = read_varint(data, 0)
    raw, rest = data[i:i + n], data[i + n:]
    props, j = {}, 0
    while j < len(raw):
        pid = raw[j]
        j += 1
        if pid in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            v = raw[j]; j += 1
        elif pid in (0x13, 0x21, 0x22, 0x23):
            v = struct.unpack("!H", raw[j:j + 2])[0]; j += 2
        elif pid in (0x02, 0x11, 0x18, 0x27):
            v = struct.unpack("!I", raw[j:j + 4])[0]; j += 4
        elif pid == 0x0B:
            v, mult = 0, 1
            while True:
                b = raw[j]; j += 1
                v += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
        elif pid == 0x26:
            k = struct.unpack("!H", raw[j:j + 2])[0]; key = raw[j + 2:j + 2 + k]; j += 2 + k
            k2 = struct.unpack("!H", raw[j:j + 2])[0]; val = raw[j + 2:j + 2 + k2]; j += 2 + k2
            v = (key, val)
        else:
            k = struct.unpack("!H", raw[j:j + 2])[0]
            v = raw[j + 2:j + 2 + k]
            j += 2 + k
        props.setdefault(pid, []).append(v)
    return props, rest


def parse_publish_v5(first, body):
    """(topic bytes, pid or None, props, payload) of a v5 PUBLISH."""
    tl = struct.unpack("!H", body[:2])[0]
    topic, rest = body[2:2 + tl], body[2 + tl:]
    pid = None
    if (first >> 1) & 3:
        pid = struct.unpack("!H", rest[:2])[0]
        rest = rest[2:]
    props, payload = parse_props(rest)
    return topic, pid, props, payload
