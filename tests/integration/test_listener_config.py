#!/usr/bin/python3
"""Listener limits from the command line (--limit KEY=VALUE) and from the
rules script (mq.listen{...}) reach the listener: Maximum QoS is announced
and enforced, anonymous clients can be refused per listener."""
from mqr_it import Workspace, free_port
import mqtt_raw as m

with Workspace() as ws:
    port, scripted = free_port(), free_port()
    rules = ws.write("rules.lua", f"""
local mq = require "mqrouter"
mq.listen{{ port = {scripted}, allow_anonymous = false, max_qos = 0 }}
""")
    ws.mqrouter(port, rules, extra=("--limit", "max_qos=1", "--limit", "max_keepalive=30"))

    c = m.Client(port)
    c.send(m.connect_v5("limited", keepalive=600))
    first, body = c.read_packet()
    assert first == 0x20 and body[1] == 0, body
    props, _ = m.parse_props(body[2:])
    assert props.get(0x24) == [1], f"Maximum QoS {props.get(0x24)}"
    assert props.get(0x13) == [30], f"Server Keep Alive {props.get(0x13)}"
    c.send(m.publish_v5("t", b"x", qos=2, pid=7))
    first, body = c.read_packet()
    assert first == 0xE0 and body[0] == 0x9B, f"expected DISCONNECT 0x9B, got {first:#x} {body!r}"
    print("ok: --limit max_qos=1 announced and enforced, max_keepalive told")

    from mqr_it import wait_port
    wait_port(scripted)
    a = m.Client(scripted)
    a.send(m.connect_v5("anon"))
    first, body = a.read_packet()
    assert first == 0x20 and body[1] == 0x87, f"anonymous not refused: {body!r}"
    print("ok: mq.listen{allow_anonymous = false} refuses anonymous clients")
