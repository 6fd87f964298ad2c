#!/usr/bin/python3
"""A v5 client that breaks the protocol gets DISCONNECT with the reason code
and a Reason String saying why; other clients are not affected."""
from mqr_it import Workspace, free_port
import mqtt_raw as m

with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", 'local mq = require "mqrouter"\n'))
    bystander = m.Client(port)
    bystander.send(m.connect_v5("bystander"))
    assert bystander.read_packet()[0] == 0x20

    bad = m.Client(port)
    bad.send(m.connect_v5("bad"))
    assert bad.read_packet()[0] == 0x20
    bad.send(m.publish_v5("a/+/b", b"x"))  # wildcard in a topic name
    first, body = bad.read_packet()
    assert first == 0xE0, f"expected DISCONNECT, got {first:#x}"
    assert body[0] == 0x90, f"reason {body[0]:#x}, expected 0x90 topic name invalid"
    props, _ = m.parse_props(body[1:])
    why = props[0x1F][0].decode()
    assert why, "no reason string"
    print(f"ok: DISCONNECT 0x90 with reason string {why!r}")
    assert bad.read_packet() is None  # then closed

    bystander.send(bytes([0xC0, 0]))  # PINGREQ
    assert bystander.read_packet()[0] == 0xD0
    print("ok: the other client still answers")
