#!/usr/bin/python3
"""The registry's admin endpoints (/api/v1/devices, /api/v1/topics) against a
running engine, driven with curl: register, get, change, list with filters
and cursors, unregister; topics seen, their info, validation; the registry's
figures in /api/v1/stats and /metrics; bad input (malformed JSON, unknown
ids, bad pagination and cursors, missing and wrong tokens); and tenant
tokens: two tenants' tokens each see and change only their own devices and
topics, and get 403 on engine-wide endpoints. A real paho client connects
as a device and publishes."""
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import Workspace, free_port, wait, wait_port  # noqa: E402
from test_admin_api import TOKEN, Api, check, failures  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402


ACME = "acme-token-2"
GLOBEX = "globex-token-3"
RULES = 'local mq = require "mqrouter"\nmq.route("#", function(msg) end)\n'


def q(s):
    return urllib.parse.quote(s, safe="")


def ids(doc):
    return [d["id"] for d in (doc or {}).get("items", [])]


def main():
    with Workspace() as ws:
        mport, aport = free_port(), free_port()
        script = ws.write("rules.lua", RULES)
        tokens = ws.write("tokens", f"{TOKEN}\n{ACME} tenant=acme\n  {GLOBEX}   tenant=globex \n")
        ws.mqrouter(mport, script, extra=["--no-watch", "--admin", f"127.0.0.1:{aport}",
                                         "--admin-tokens", tokens])
        wait_port(aport)
        api = Api(aport)

        # ---- authentication ----
        for m, p in [("GET", "/api/v1/devices"), ("POST", "/api/v1/devices"),
                     ("GET", "/api/v1/devices/x"), ("PATCH", "/api/v1/devices/x"),
                     ("DELETE", "/api/v1/devices/x"), ("GET", "/api/v1/topics"),
                     ("GET", "/api/v1/topics/info?topic=a"),
                     ("GET", "/api/v1/topics/validate?topic=a"),
                     ("POST", "/api/v1/topics/validate")]:
            api.err(m, p, token=None, status=401, code="unauthorized")
            api.err(m, p, token="wrong", status=401, code="invalid_token")
        # the tenant part of the file line is not part of the token
        api.err("GET", "/api/v1/devices", token=ACME + " tenant=acme", status=401)

        # ---- register ----
        d = api.ok("POST", "/api/v1/devices", {"id": "pump-1", "name": "Pump", "type": "pump",
                                               "metadata": {"site": "north", "n": [1, 2]}},
                   status=201)
        check(d and d["id"] == "pump-1" and d["tenant"] is None and d["name"] == "Pump"
              and d["type"] == "pump" and d["metadata"] == {"site": "north", "n": [1, 2]}
              and d["status"] == "unknown" and d["created_ms"] > 0, f"registered: {d}")
        d = api.ok("POST", "/api/v1/devices", {"id": "pump-1", "name": "Pump one"}, status=200)
        check(d and d["name"] == "Pump one" and d["type"] == "", f"re-registered: {d}")
        for i in range(2, 6):
            api.ok("POST", "/api/v1/devices", {"id": f"pump-{i}", "type": "pump"}, status=201)
        api.ok("POST", "/api/v1/devices", {"id": "valve-1", "type": "valve", "metadata": 7},
               status=201)
        api.ok("POST", "/api/v1/devices", {"id": "m-1", "tenant": "acme"}, status=201)
        # bad bodies
        api.err("POST", "/api/v1/devices", raw="{nope", code="malformed_json")
        api.err("POST", "/api/v1/devices", raw="", code="malformed_json")
        api.err("POST", "/api/v1/devices", raw="[1]", code="bad_request")
        api.err("POST", "/api/v1/devices", {"name": "no id"}, code="bad_request")
        api.err("POST", "/api/v1/devices", {"id": ""}, code="bad_request")
        api.err("POST", "/api/v1/devices", {"id": 5}, code="bad_request")
        api.err("POST", "/api/v1/devices", {"id": "x", "name": 3}, code="bad_request")
        api.err("POST", "/api/v1/devices", {"id": "x", "tenant": "a/b"}, code="bad_request")
        api.err("POST", "/api/v1/devices", {"id": "x" * 300}, code="bad_request")
        api.err("GET", "/api/v1/devices/x", status=404, code="not_found")

        # ---- get, list, filters, cursors ----
        d = api.ok("GET", "/api/v1/devices/pump-1")
        check(d and d["name"] == "Pump one", f"get: {d}")
        api.err("GET", "/api/v1/devices/nope", status=404, code="not_found")
        api.err("GET", "/api/v1/devices/m-1", status=404)  # acme's, not the default tenant's
        d = api.ok("GET", "/api/v1/devices/m-1?tenant=acme")
        check(d and d["tenant"] == "acme", f"get with ?tenant: {d}")
        api.err("GET", "/api/v1/devices/m-1?tenant=a%2Fb", code="bad_request")
        doc = api.ok("GET", "/api/v1/devices")
        check(ids(doc) == ["pump-1", "pump-2", "pump-3", "pump-4", "pump-5", "valve-1", "m-1"]
              and doc["next"] is None and doc["limit"] == 100, f"list all tenants: {doc}")
        doc = api.ok("GET", "/api/v1/devices?tenant=")
        check(len(ids(doc)) == 6, f"list ?tenant= (none): {ids(doc)}")
        check(ids(api.ok("GET", "/api/v1/devices?type=valve")) == ["valve-1"], "filter type")
        check(ids(api.ok("GET", "/api/v1/devices?prefix=pump-")) ==
              [f"pump-{i}" for i in range(1, 6)], "filter prefix")
        check(len(ids(api.ok("GET", "/api/v1/devices?status=unknown"))) == 7, "filter status")
        check(ids(api.ok("GET", "/api/v1/devices?status=online")) == [], "none online")
        seen, cursor, pages = [], "", 0
        while pages < 10:
            doc = api.ok("GET", f"/api/v1/devices?tenant=&limit=2&cursor={q(cursor)}")
            seen += ids(doc)
            pages += 1
            if not doc or doc["next"] is None:
                break
            cursor = doc["next"]
        check(pages == 3 and seen == ["pump-1", "pump-2", "pump-3", "pump-4", "pump-5",
                                      "valve-1"], f"paged by 2: {pages} {seen}")
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=x", "limit=", "cursor=nosep",
                    "cursor=%2F", "cursor=bad%20tenant%2Fx"]:
            api.err("GET", "/api/v1/devices?" + bad, code="bad_pagination")
        api.err("GET", "/api/v1/devices?status=sleepy", code="bad_request")

        # ---- status follows a real connection; PATCH ----
        c = mqtt.Client(client_id="pump-2")
        c.connect("127.0.0.1", mport)
        c.loop_start()
        wait(lambda: api.ok("GET", "/api/v1/devices/pump-2")["status"] == "online",
             what="pump-2 online")
        check(ids(api.ok("GET", "/api/v1/devices?status=online")) == ["pump-2"],
              "online filter")
        for i in range(3):
            c.publish(f"plant/pump-2/t{i}", b"42", qos=1).wait_for_publish(5)
        c.publish("acme/line/1", b"a", qos=1).wait_for_publish(5)
        c.publish("globex/x", b"g", retain=True, qos=1).wait_for_publish(5)
        d = api.ok("PATCH", "/api/v1/devices/pump-3",
                   {"status": "offline", "name": "P3", "metadata": {"k": True}})
        check(d and d["status"] == "offline" and d["name"] == "P3" and d["type"] == "pump"
              and d["metadata"] == {"k": True}, f"patched: {d}")
        d = api.ok("PATCH", "/api/v1/devices/pump-3", {"type": "big-pump"})
        check(d and d["name"] == "P3" and d["type"] == "big-pump" and d["status"] == "offline",
              f"patch keeps the other fields: {d}")
        api.err("PATCH", "/api/v1/devices/pump-3", {"status": "bogus"}, code="bad_request")
        api.err("PATCH", "/api/v1/devices/pump-3", raw="{", code="malformed_json")
        api.err("PATCH", "/api/v1/devices/nope", {"status": "online"}, status=404)
        check(api.ok("GET", "/api/v1/devices/pump-3")["name"] == "P3", "bad patch changed nothing")
        api.err("PUT", "/api/v1/devices/pump-3", {}, status=405, code="method_not_allowed")

        # ---- topics ----
        wait(lambda: api.ok("GET", "/api/v1/stats")["registry"]["topics"] >= 5,
             what="topics tracked")
        doc = api.ok("GET", "/api/v1/topics?prefix=plant/")
        check([t["topic"] for t in doc["items"]] == [f"plant/pump-2/t{i}" for i in range(3)]
              and doc["next"] is None, f"topics by prefix: {doc}")
        t = doc["items"][0]
        check(t["messages"] == 1 and t["last_message_ms"] > 0 and t["retained"] is False,
              f"topic item: {t}")
        doc = api.ok("GET", "/api/v1/topics?prefix=plant/&limit=2")
        check(len(doc["items"]) == 2 and doc["next"] == "plant/pump-2/t1", f"page: {doc}")
        doc = api.ok("GET", "/api/v1/topics?prefix=plant/&limit=2&cursor=" + q(doc["next"]))
        check([t["topic"] for t in doc["items"]] == ["plant/pump-2/t2"] and doc["next"] is None,
              f"second page: {doc}")
        api.err("GET", "/api/v1/topics?limit=0", code="bad_pagination")
        api.err("GET", "/api/v1/topics?limit=abc", code="bad_pagination")
        info = api.ok("GET", "/api/v1/topics/info?topic=globex/x")
        check(info and info["tracked"] and info["messages"] == 1 and info["retained"] is True,
              f"info: {info}")
        info = api.ok("GET", "/api/v1/topics/info?topic=never/seen")
        check(info and not info["tracked"] and info["messages"] == 0, f"untracked: {info}")
        api.err("GET", "/api/v1/topics/info?topic=a/%23", status=400)
        api.err("GET", "/api/v1/topics/info", code="bad_request")
        v = api.ok("GET", "/api/v1/topics/validate?topic=a/%2B/b")
        check(v and v["valid"] is False and isinstance(v["reason"], str) and v["reason"],
              f"wildcard refused in a name: {v}")
        v = api.ok("GET", "/api/v1/topics/validate?topic=a/%2B/b&wildcards=true")
        check(v and v["valid"] is True and v["reason"] is None, f"filter ok: {v}")
        v = api.ok("POST", "/api/v1/topics/validate", {"topic": "a/#/b", "wildcards": True})
        check(v and v["valid"] is False and v["reason"], f"# not last: {v}")
        v = api.ok("POST", "/api/v1/topics/validate", {"topic": "$share/g/a/+",
                                                       "wildcards": True})
        check(v and v["valid"] is True, f"shared filter: {v}")
        v = api.ok("POST", "/api/v1/topics/validate", {"topic": ""})
        check(v and v["valid"] is False, f"empty topic: {v}")
        api.err("POST", "/api/v1/topics/validate", raw="{x", code="malformed_json")
        api.err("POST", "/api/v1/topics/validate", {"topic": 1}, code="bad_request")
        api.err("POST", "/api/v1/topics/validate", {"topic": "a", "wildcards": "yes"},
                code="bad_request")
        api.err("GET", "/api/v1/topics/validate?topic=a&wildcards=maybe", code="bad_request")

        # ---- stats and metrics ----
        st = api.ok("GET", "/api/v1/stats")["registry"]
        check(st["devices"] == 7 and st["devices_online"] == 1 and st["topics"] >= 5
              and st["topics_max"] > 0 and st["topics_dropped"] == 0, f"stats: {st}")
        _, _, text = api.call("GET", "/metrics")
        for line in ["mqtt_devices 7", "mqtt_devices_online 1", "mqtt_topics_dropped_total 0"]:
            check(line + "\n" in text + "\n", f"/metrics has '{line}'")
        check("pump-1" not in text, "no series per device in /metrics")

        # ---- tenants ----
        d = api.ok("POST", "/api/v1/devices", {"id": "m-2", "type": "mixer"}, token=ACME,
                   status=201)
        check(d and d["tenant"] == "acme", f"registering forces the tenant: {d}")
        api.ok("POST", "/api/v1/devices", {"id": "m-1", "tenant": "globex"}, token=GLOBEX,
               status=201)
        api.err("POST", "/api/v1/devices", {"id": "z", "tenant": "globex"}, token=ACME,
                status=403, code="forbidden")
        doc = api.ok("GET", "/api/v1/devices", token=ACME)
        check(ids(doc) == ["m-1", "m-2"] and all(x["tenant"] == "acme" for x in doc["items"]),
              f"acme sees its own: {doc}")
        doc = api.ok("GET", "/api/v1/devices", token=GLOBEX)
        check(ids(doc) == ["m-1"] and doc["items"][0]["tenant"] == "globex",
              f"globex sees its own: {doc}")
        api.err("GET", "/api/v1/devices?tenant=globex", token=ACME, status=403)
        api.err("GET", "/api/v1/devices/pump-1", token=ACME, status=404)
        api.err("GET", "/api/v1/devices/m-2", token=GLOBEX, status=404)
        api.err("PATCH", "/api/v1/devices/m-2", {"name": "x"}, token=GLOBEX, status=404)
        api.err("DELETE", "/api/v1/devices/m-2", token=GLOBEX, status=404)
        api.err("DELETE", "/api/v1/devices/pump-1", token=ACME, status=404)
        check(api.ok("GET", "/api/v1/devices/m-2?tenant=acme")["name"] == "",
              "m-2 untouched by globex")
        d = api.ok("PATCH", "/api/v1/devices/m-2", {"name": "Mixer"}, token=ACME)
        check(d and d["name"] == "Mixer", f"acme patches its own: {d}")
        doc = api.ok("GET", "/api/v1/topics", token=ACME)
        check([t["topic"] for t in doc["items"]] == ["line/1"], f"acme's topics: {doc}")
        doc = api.ok("GET", "/api/v1/topics", token=GLOBEX)
        check([t["topic"] for t in doc["items"]] == ["x"], f"globex's topics: {doc}")
        info = api.ok("GET", "/api/v1/topics/info?topic=line/1", token=ACME)
        check(info and info["topic"] == "line/1" and info["messages"] == 1,
              f"acme's topic info: {info}")
        info = api.ok("GET", "/api/v1/topics/info?topic=x", token=ACME)
        check(info and info["messages"] == 0, f"globex's topic is not acme's: {info}")
        api.ok("GET", "/api/v1/topics/validate?topic=a", token=ACME)
        for m, p in [("GET", "/api/v1/stats"), ("GET", "/metrics"), ("GET", "/api/v1/sessions"),
                     ("POST", "/api/v1/sessions"), ("GET", "/api/v1/queues"),
                     ("GET", "/api/v1/rules"), ("POST", "/api/v1/rules/reload"),
                     ("GET", "/api/v1/retained"), ("PUT", "/api/v1/retained/acme/x"),
                     ("DELETE", "/api/v1/retained/globex/x")]:
            api.err(m, p, {"name": "s", "payload": "p"} if m in ("POST", "PUT") else None,
                    token=ACME, status=403, code="forbidden")
        # a tenant publishes under its prefix only: its topic names are relative
        got = []
        sub = mqtt.Client(client_id="watcher")
        sub.on_connect = lambda cl, u, f, rc: cl.subscribe("#", 1)
        sub.on_message = lambda cl, u, msg: None if msg.retain else got.append(msg.topic)
        sub.connect("127.0.0.1", mport)
        sub.loop_start()
        wait(lambda: api.ok("GET", "/api/v1/topics/info?topic=z/probe")["subscribers"] >= 2,
             what="watcher subscribed")
        r = api.ok("POST", "/api/v1/publish", {"topic": "line/2", "payload": "p"}, token=ACME)
        check(r == {"published": 1}, f"tenant publish: {r}")
        r = api.ok("POST", "/api/v1/publish/batch",
                   [{"topic": "globex/y", "payload": "p"}, {"topic": "a/#", "payload": "p"}],
                   token=ACME)
        check(r and r["published"] == 1 and r["failed"] == 1, f"tenant batch: {r}")
        wait(lambda: len(got) >= 2, what="tenant publishes delivered")
        check(sorted(got) == ["acme/globex/y", "acme/line/2"], f"under acme/ only: {got}")
        doc = api.ok("GET", "/api/v1/topics", token=ACME)
        check([t["topic"] for t in doc["items"]] == ["globex/y", "line/1", "line/2"],
              f"acme's topics after publishing: {doc}")
        check([t["topic"] for t in api.ok("GET", "/api/v1/topics", token=GLOBEX)["items"]]
              == ["x"], "globex does not see them")
        sub.loop_stop()
        sub.disconnect()
        api.ok("GET", "/api/v1", token=ACME)

        # ---- unregister ----
        api.ok("DELETE", "/api/v1/devices/m-2", token=ACME, status=204)
        api.err("DELETE", "/api/v1/devices/m-2", token=ACME, status=404, code="not_found")
        api.ok("DELETE", "/api/v1/devices/pump-2", status=204)
        api.err("GET", "/api/v1/devices/pump-2", status=404)
        check(api.ok("GET", "/api/v1/stats")["registry"]["devices"] == 7, "7 after two removals")
        c.loop_stop()
        c.disconnect()
        time.sleep(0.1)

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
