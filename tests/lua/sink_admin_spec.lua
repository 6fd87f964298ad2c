-- Sinks in the admin API (GET /api/v1/sinks) and /metrics: listed with
-- their counters and state, the password out of the target.
local mqrouter = require "mqrouter"
local h = require "helpers"
local mosq = require "mosquitto"

describe("sinks in the admin API", function()
  it("lists sinks with counters and a redacted target, and exports metrics", function()
    mqrouter.capture_logs(true)
    local e = h.engine()
    local dir = h.tmpdir()
    local got = e:capture("port")
    assert(e:load(string.format([[
      local mq = require "mqrouter"
      local port = assert(mq.admin{ port = 0, tokens = { "tok" } })
      local f = mq.file{ path = %q, name = "audit" }
      local c = mq.http{ name = "hooks", base_url = "http://bob:s3cret@127.0.0.1:1" }
      mq.spawn(function() f:write_sync("x"); f:write_sync("y"); mq.publish("port", tostring(port)) end)
    ]], dir .. "/a.jsonl")))
    assert.is_true(e:run_until(function() return got:count() >= 1 end, 5))
    local port = tonumber(got:messages()[1].payload)
    -- curl runs in the background while the loop serves it; done when
    -- the second answer is written
    assert(mosq.sh(("(curl -s -m 5 -H 'Authorization: Bearer tok' "
      .. "http://127.0.0.1:%d/api/v1/sinks > %s/sinks.json; curl -s -m 5 "
      .. "-H 'Authorization: Bearer tok' http://127.0.0.1:%d/metrics > %s/metrics.part; "
      .. "mv %s/metrics.part %s/metrics.txt) &"):format(port, dir, port, dir, dir, dir)))
    assert.is_true(e:run_until(function()
      local f = io.open(dir .. "/metrics.txt")
      if f then f:close() end
      return f ~= nil
    end, 5))
    local f = io.open(dir .. "/sinks.json")
    local body = f:read("*a")
    f:close()
    local json = require "mqrouter.json"
    local list = assert(json.decode(body)).items
    assert.are.equal(2, #list)
    assert.are.same({ "audit", "file", 2, true }, { list[1].name, list[1].kind, list[1].ok, list[1].up })
    assert.are.equal("hooks", list[2].name)
    assert.are.equal("http://bob:***@127.0.0.1:1", list[2].target)
    assert.is_nil(body:find("s3cret", 1, true))
    f = io.open(dir .. "/metrics.txt")
    local metrics = f:read("*a")
    f:close()
    assert.truthy(metrics:find('mqrouter_sink_ok_total{sink="audit",kind="file"} 2', 1, true))
    assert.truthy(metrics:find('mqrouter_sink_request_duration_seconds_count{sink="audit"} 2', 1, true))
    e:close()
    mqrouter.capture_logs(false)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
