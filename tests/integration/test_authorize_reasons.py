#!/usr/bin/python3
"""mq.authorize naming its reason code (`return false, 0x80`), with raw
MQTT 5 and 3.1.1 clients that read the exact acknowledgement bytes: a v5
SUBACK / PUBACK / PUBREC carries the named code when the spec allows it in
that packet (5.0 §3.9.3, §3.4.2.1, §3.5.2.1), else the hook's call fails
with a clear error in the log and 0x87 goes out; 3.1.1 gets SUBACK 0x80
and a plain PUBACK, as before. A denied PUBLISH is never routed."""
from mqr_it import Workspace, free_port
from rawmqtt import (PUBACK, PUBLISH, PUBREC, SUBACK, Client, publish,
                     publish_fields, subscribe)

# deny/<hex> is denied with that code, deny/quota by name, deny/plain with none
RULES = """
local mq = require "mqrouter"
mq.authorize(function(c, action, topic, qos, retain)
  local code = topic:match("^deny/(%w+)")
  if not code then return true end
  if code == "plain" then return false end
  if code == "quota" then return false, "quota_exceeded" end
  if code == "text" then return false, "not for you" end
  return false, tonumber(code, 16)
end)
"""


def skip_props(body, off):
    """The offset past a v5 property block (the server may add a Reason
    String to a failure)."""
    n, mult = 0, 1
    while True:
        b = body[off]
        off += 1
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return off + n


def suback_code(c, topic, pid):
    c.send(subscribe(topic, 1, pid, c.version))
    kind, _, body = c.expect(SUBACK)
    assert body[:2] == bytes([pid >> 8, pid & 255]), body
    codes = body[skip_props(body, 2):] if c.version == 5 else body[2:]
    assert len(codes) == 1, body
    return codes[0]


def ack_code(c, topic, qos, pid):
    c.send(publish(topic, b"x", qos, pid, c.version))
    kind, _, body = c.expect(PUBACK if qos == 1 else PUBREC)
    assert body[:2] == bytes([pid >> 8, pid & 255]), body
    return body[2] if len(body) > 2 else 0


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES))

    v5 = Client(port)
    v5.login("v5", version=5)
    cases = [("deny/80", 0x80), ("deny/A2", 0xA2), ("deny/97", 0x97), ("deny/quota", 0x97),
             ("deny/plain", 0x87), ("deny/text", 0x87),
             # not SUBACK codes: 0x90 is PUBACK's only, 0x05 a success code
             ("deny/90", 0x87), ("deny/05", 0x87), ("ok/x", 0x01)]
    for i, (topic, want) in enumerate(cases):
        got = suback_code(v5, topic, 10 + i)
        assert got == want, f"SUBACK for {topic}: 0x{got:02X}, want 0x{want:02X}"
    log = ws.log()
    assert "authorize: reason 0x90 is not a SUBACK failure code" in log, log[-3000:]
    assert "authorize: reason 0x05 is not a SUBACK failure code" in log, log[-3000:]
    print("ok: v5 SUBACK carries the hook's reason; a code SUBACK cannot carry is 0x87 and logged")

    watch = Client(port)
    watch.login("watch", version=5)
    assert suback_code(watch, "#", 1) == 0x01  # granted QoS 1
    cases = [("deny/80", 1, 0x80), ("deny/90", 2, 0x90), ("deny/99", 1, 0x99),
             ("deny/quota", 2, 0x97), ("deny/plain", 1, 0x87),
             ("deny/A2", 1, 0x87), ("deny/10", 2, 0x87)]  # SUBACK-only; a success code
    for i, (topic, qos, want) in enumerate(cases):
        got = ack_code(v5, topic, qos, 100 + i)
        assert got == want, f"QoS {qos} ack for {topic}: 0x{got:02X}, want 0x{want:02X}"
    log = ws.log()
    assert "authorize: reason 0xA2 is not a PUBACK/PUBREC failure code" in log, log[-3000:]
    assert "authorize: reason 0x10 is not a PUBACK/PUBREC failure code" in log, log[-3000:]
    # none of them was routed: the watcher sees only the allowed marker
    assert ack_code(v5, "ok/end", 1, 200) == 0
    kind, flags, body = watch.expect(PUBLISH)
    topic, payload = publish_fields(body, flags, 5)
    assert topic == "ok/end", topic
    print("ok: v5 PUBACK/PUBREC carry the hook's reason; denied publishes are not routed")

    v3 = Client(port)
    v3.login("v3", version=4)
    for i, topic in enumerate(("deny/80", "deny/05", "deny/plain")):
        assert suback_code(v3, topic, 300 + i) == 0x80
    assert ack_code(v3, "deny/80", 1, 400) == 0  # a plain PUBACK: 3.1.1 has no reason
    assert ack_code(v3, "ok/end3", 1, 401) == 0
    kind, flags, body = watch.expect(PUBLISH)
    assert publish_fields(body, flags, 5)[0] == "ok/end3"
    print("ok: 3.1.1: SUBACK 0x80, denied PUBLISH acknowledged and dropped")
    for c in (v5, watch, v3):
        c.close()
