#!/usr/bin/env python3
"""http_fault_server.py — a scriptable HTTP/1.1 server for the HTTP sink's
C tests (tests/c/test_sink_http.c), keep-alive on, one thread per
connection. Usage: http_fault_server.py PORT [CERT KEY] (TLS with both).

  /echo            200, the request as JSON: method, path, headers (names
                   lower-cased), body
  /status/N        status N, a short body, header x-status: N
  /slow?ms=N       200 after N ms; stops early when the client goes away
  /drop            promises 100 bytes, sends 10, resets the connection
  /big?n=N         200 with N bytes
  /close-next      200, keep-alive; the next request on that connection
                   gets no answer: the connection closes (a server that
                   timed it out as the request came)
  /chunked         200, body "hello world" in two chunks
  /early-hints     103 Early Hints (a Link header), then 200 "ok" (x-final)
  /until-close     HTTP/1.0 200 with no length: the body ends at close
  /idle-close?ms=N 200, keep-alive; then closes the connection if no
                   other request came on it within N ms (a server's
                   keep-alive timeout)
  /stats           {"connections": C, "active": A}: C counts connections
                   that carried a request other than /stats; A the requests
                   being answered now
Anything else: 404. It must not be named test_*: ctest would run it.
"""
import json
import select
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
stats = {"connections": 0, "active": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without this the body waits
    # for the client's delayed ACK (40 ms a request)
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.counted = False
        self.drop_next = False

    def reply(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def wait(self, seconds):
        """Sleeps, but False as soon as the client closes the connection
        (so "active" counts only requests a client still waits for)."""
        end = time.monotonic() + seconds
        tls = isinstance(self.connection, ssl.SSLSocket)
        while time.monotonic() < end:
            if tls:
                time.sleep(0.01)
                continue
            r, _, _ = select.select([self.connection], [], [], 0.01)
            if r:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except OSError:
                    return False
                time.sleep(0.01)  # a request behind this one: keep waiting
        return True

    def handle_any(self):
        if self.drop_next:
            self.close_connection = True
            return
        u = urlparse(self.path)
        q = parse_qs(u.query)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if u.path == "/stats":
            with lock:
                out = json.dumps(stats).encode()
            return self.reply(200, out)
        with lock:
            if not self.counted:
                self.counted = True
                stats["connections"] += 1
            stats["active"] += 1
        try:
            self.route(u, q, body)
        finally:
            with lock:
                stats["active"] -= 1

    def route(self, u, q, body):
        if u.path == "/echo":
            out = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }
            return self.reply(200, json.dumps(out).encode())
        if u.path.startswith("/status/"):
            code = int(u.path[len("/status/"):])
            text = b"" if code in (204, 304) else b"status body"  # no body allowed
            return self.reply(code, text, "text/plain", [("X-Status", str(code))])
        if u.path == "/slow":
            if self.wait(int(q.get("ms", ["1000"])[0]) / 1000.0):
                return self.reply(200, b"slow")
            self.close_connection = True  # the client went away
            return
        if u.path == "/close-next":
            self.drop_next = True
            return self.reply(200, b"close-next", "text/plain")
        if u.path == "/early-hints":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok")
            return
        if u.path == "/chunked":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            return
        if u.path == "/until-close":
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
            self.close_connection = True
            return
        if u.path == "/idle-close":
            self.reply(200, b"idle-close", "text/plain")
            self.wfile.flush()
            r, _, _ = select.select([self.connection], [], [],
                                    int(q.get("ms", ["100"])[0]) / 1000.0)
            if not r:
                self.close_connection = True
            return
        if u.path == "/big":
            return self.reply(200, b"x" * int(q.get("n", ["0"])[0]), "text/plain")
        if u.path == "/drop":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            # SO_LINGER 0: close sends RST, as a crashed peer would
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        return self.reply(404, b"no such path", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a 6th connection at once
    # would wait for the SYN to be sent again (1 s)
    request_queue_size = 128
    daemon_threads = True


def main():
    port = int(sys.argv[1])
    srv = Server(("127.0.0.1", port), Handler)
    if len(sys.argv) >= 4:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        # the handshake happens in the connection's thread, not in accept
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True,
                                     do_handshake_on_connect=False)
    srv.serve_forever()


if __name__ == "__main__":
    main()
