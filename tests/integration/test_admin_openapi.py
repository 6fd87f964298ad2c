#!/usr/bin/python3
"""docs/openapi.yaml against the real server: the file's method + path pairs
are exactly the server's (GET /api/v1 lists its route table), every
operation answers with a status the file documents for it, a documented JSON
body parses and has the properties its schema lists (with their types), and
operations the file marks `security: []` answer without a token while every
other one answers 401 without it."""
import json
import os
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqr_it import SRC, Workspace, free_port, wait_port  # noqa: E402

TOKEN = "openapi-token"
RULES = """
local mq = require "mqrouter"
local jobs = mq.queue("jobs", { dead_letter = true })
mq.route("jobs/#", jobs)
mq.route("a/#", function(msg) end)
"""
NAME = {"/api/v1/sessions/{name}": "s1"}  # default for {name}: the queue
TOPIC = "t/1"
BODIES = {
    ("POST", "/api/v1/publish"): {"topic": "jobs/1", "payload": "x"},
    ("POST", "/api/v1/publish/batch"): {"messages": [{"topic": "a/1", "payload": "y"}]},
    ("POST", "/api/v1/sessions"): {"name": "s1", "uri": "tcp://127.0.0.1:1"},
    ("POST", "/api/v1/queues/{name}/redrive"): {"max": 0},
    ("PUT", "/api/v1/retained/{topic}"): {"payload": "on"},
    ("POST", "/api/v1/devices"): {"id": "dev-1", "type": "pump", "metadata": {"a": 1}},
    ("PATCH", "/api/v1/devices/{id}"): {"status": "offline"},
    ("POST", "/api/v1/topics/validate"): {"topic": "a/+", "wildcards": True},
}
QUERY = {"/api/v1/topics/info": "?topic=t/1", "/api/v1/topics/validate": "?topic=a/b"}
ORDER = {"POST": 0, "PUT": 1, "PATCH": 1, "GET": 2, "DELETE": 3}
TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool,
         "array": list, "object": dict}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        sys.stderr.write("FAIL: " + what + "\n")


def deref(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def check_body(spec, what, schema, doc):
    schema = deref(spec, schema)
    if schema.get("type") != "object":
        return
    check(isinstance(doc, dict), f"{what}: body is not an object")
    if not isinstance(doc, dict):
        return
    for key in schema.get("required", []):
        check(key in doc, f"{what}: required '{key}' missing")
    for key, prop in (schema.get("properties") or {}).items():
        prop = deref(spec, prop)
        check(key in doc, f"{what}: documented property '{key}' missing")
        if key not in doc or "type" not in prop:
            continue
        v = doc[key]
        if v is None:
            check(prop.get("nullable", False), f"{what}: '{key}' is null, not nullable")
            continue
        ok = isinstance(v, TYPES[prop["type"]]) and not (
            prop["type"] in ("integer", "number") and isinstance(v, bool))
        if prop["type"] == "integer" and isinstance(v, float):
            ok = v == int(v)
        check(ok, f"{what}: '{key}' = {v!r} is not {prop['type']}")


def curl(base, method, path, body=None, token=TOKEN):
    args = ["curl", "-sS", "--max-time", "10", "-X", method, "-D", "-",
            "-w", "\n%{http_code}", base + path]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    r = subprocess.run(args, input=data, capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    rest, _, code = out.rpartition("\n")
    head, _, text = rest.partition("\r\n\r\n")
    ctype = ""
    for line in head.split("\r\n"):
        if line.lower().startswith("content-type:"):
            ctype = line.split(":", 1)[1].strip()
    return int(code or 0), ctype, text


def main():
    with open(os.path.join(SRC, "docs", "openapi.yaml")) as f:
        spec = yaml.safe_load(f)
    check(spec.get("openapi", "").startswith("3."), "an OpenAPI 3 document")
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            ops.append((method.upper(), path, op))
    with Workspace() as ws:
        mport, aport = free_port(), free_port()
        script = ws.write("rules.lua", RULES)
        tokens = ws.write("tokens", TOKEN + "\n")
        ws.mqrouter(mport, script, extra=["--no-watch", "--admin", f"127.0.0.1:{aport}",
                                         "--admin-tokens", tokens])
        wait_port(aport)
        base = f"http://127.0.0.1:{aport}"

        code, _, text = curl(base, "GET", "/api/v1")
        server = {(e["method"], e["path"]) for e in json.loads(text)["endpoints"]}
        documented = {(m, p) for m, p, _ in ops}
        for m, p in sorted(server - documented):
            check(False, f"the server has {m} {p}, docs/openapi.yaml does not")
        for m, p in sorted(documented - server):
            check(False, f"docs/openapi.yaml has {m} {p}, the server does not")

        ops.sort(key=lambda o: (ORDER[o[0]], o[1]))
        for method, path, op in ops:
            what = f"{method} {path}"
            url = path.replace("{name}", NAME.get(path, "jobs")).replace("{topic}", TOPIC)
            url = url.replace("{id}", "dev-1") + QUERY.get(path, "")
            open_op = op.get("security", spec.get("security")) == []
            code, _, _ = curl(base, method, url, BODIES.get((method, path)), token=None)
            if open_op:
                check(code != 401, f"{what}: documented without security, answered 401")
            else:
                check(code == 401, f"{what}: answered {code} without a token, not 401")
                check("401" in op.get("responses", {}), f"{what}: 401 not documented")
            code, ctype, text = curl(base, method, url, BODIES.get((method, path)))
            responses = op.get("responses", {})
            check(str(code) in responses, f"{what}: status {code} is not documented ({text[:200]})")
            resp = deref(spec, responses.get(str(code), {}))
            content = resp.get("content") or {}
            if "application/json" in content:
                check(ctype.startswith("application/json"), f"{what}: content type {ctype}")
                try:
                    doc = json.loads(text)
                except ValueError:
                    check(False, f"{what}: body is not JSON: {text[:200]}")
                    continue
                schema = content["application/json"].get("schema")
                if schema:
                    check_body(spec, what, schema, doc)
            elif "text/plain" in content:
                check(ctype.startswith("text/plain"), f"{what}: content type {ctype}")
            print(f"{what}: {code}")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
