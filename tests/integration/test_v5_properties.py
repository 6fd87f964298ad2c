#!/usr/bin/python3
"""MQTT 5 request/response through mqrouter with real paho clients: response
topic, correlation data, content type, payload format and user properties
pass through unchanged, both straight through the listener and when a Lua
rule answers the request."""
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqr_it import Workspace, free_port, wait

RULES = """
local mq = require "mqrouter"
mq.route("service/echo", function(msg)
  local p = msg.properties
  mq.publish(p.response_topic, "echo:" .. msg.payload, { qos = 1, properties = {
    correlation_data = p.correlation_data,
    user = { handled_by = "lua", trace = p.user and p.user.trace } } })
end)
"""


def client(port, cid):
    c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
    got, subscribed = [], threading.Event()
    c.on_message = lambda cl, ud, msg: got.append(msg)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, got, subscribed


with Workspace() as ws:
    port = free_port()
    ws.mqrouter(port, ws.write("rules.lua", RULES))

    sub, got, subscribed = client(port, "responder")
    sub.subscribe("req/#", qos=1)
    assert subscribed.wait(5)
    req, replies, rsub = client(port, "requester")
    req.subscribe("reply/requester", qos=1)
    assert rsub.wait(5)

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "reply/requester"
    props.CorrelationData = b"\x00\x01corr"
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("trace", "t-42"), ("trace", "t-43"), ("tenant", "a")]
    req.publish("req/lookup", b'{"q":1}', qos=1, properties=props).wait_for_publish(5)
    wait(lambda: len(got) == 1, 5, "the request at the responder")
    p = got[0].properties
    assert p.ResponseTopic == "reply/requester"
    assert p.CorrelationData == b"\x00\x01corr"
    assert p.ContentType == "application/json"
    assert p.PayloadFormatIndicator == 1
    assert p.UserProperty == [("trace", "t-42"), ("trace", "t-43"), ("tenant", "a")], p.UserProperty
    print("ok: v5 properties pass through the listener in order")

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "reply/requester"
    props.CorrelationData = b"c-7"
    props.UserProperty = [("trace", "t-7")]
    req.publish("service/echo", b"hello", qos=1, properties=props).wait_for_publish(5)
    wait(lambda: len(replies) == 1, 5, "the rule's reply")
    r = replies[0]
    assert r.topic == "reply/requester" and r.payload == b"echo:hello"
    assert r.properties.CorrelationData == b"c-7"
    assert ("handled_by", "lua") in r.properties.UserProperty
    assert ("trace", "t-7") in r.properties.UserProperty
    print("ok: request/response answered by a Lua rule")
    for c in (sub, req):
        c.loop_stop()
