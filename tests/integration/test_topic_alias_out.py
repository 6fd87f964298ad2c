#!/usr/bin/python3
"""Server-to-client topic aliases (MQTT 5): a client that allows aliases gets
each topic in full once with an alias, then the alias with an empty topic;
aliases stop at the client's Topic Alias Maximum; a client that allows none
gets full topics only."""
from mqr_it import Workspace, free_port
import mqtt_raw as m


def session(port, client_id, alias_max):
    c = m.Client(port)
    props = b"" if alias_max is None else bytes([0x22]) + alias_max.to_bytes(2, "big")
    c.send(m.connect_v5(client_id, props=props))
    first, body = c.read_packet()
    assert first == 0x20 and body[1] == 0, f"CONNACK refused: {body!r}"
    c.send(m.subscribe_v5(1, "t/#"))
    first, body = c.read_packet()
    assert first == 0x90, f"expected SUBACK, got {first:#x}"
    return c


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", 'local mq = require "mqrouter"\n'))
    aliased = session(port, "aliased", 2)
    plain = session(port, "plain", None)
    pub = m.Client(port)
    pub.send(m.connect_v5("pub"))
    assert pub.read_packet()[0] == 0x20
    topics = ["t/a", "t/b", "t/a", "t/c", "t/b", "t/c"]
    for i, t in enumerate(topics):
        pub.send(m.publish_v5(t, str(i).encode()))

    seen = []
    for i, t in enumerate(topics):
        first, body = aliased.read_packet()
        topic, _, props, payload = m.parse_publish_v5(first, body)
        assert payload == str(i).encode()
        seen.append((topic, props.get(0x23, [None])[0]))
    # t/a -> alias 1, t/b -> alias 2, t/c: no alias left, always in full
    assert seen == [(b"t/a", 1), (b"t/b", 2), (b"", 1), (b"t/c", None), (b"", 2), (b"t/c", None)], seen
    print("ok: aliases assigned, reused, and capped at the client's maximum")

    for i, t in enumerate(topics):
        first, body = plain.read_packet()
        topic, _, props, payload = m.parse_publish_v5(first, body)
        assert topic == t.encode() and 0x23 not in props, (topic, props)
    print("ok: no aliases for a client that allows none")
    for c in (aliased, plain, pub):
        c.close()
