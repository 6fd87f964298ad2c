-- mq.http from rules, against a real HTTP server (tests/c/http_fault_server.py
-- on a free loopback port): responses, JSON bodies, a base URL and default
-- headers, failures named and classed (retry or permanent), at least once
-- through a durable queue with mq.deliver, and the misuse that raises.
local mqrouter = require "mqrouter"
local h = require "helpers"
local mosq = require "mosquitto"

local src = os.getenv("MQROUTER_SRC") or "."

local function start_server(dir)
  local port = mosq.free_port()
  local pidfile = dir .. "/http.pid"
  assert(mosq.sh(("python3 %s/tests/c/http_fault_server.py %d >%s/http.log 2>&1 & echo $! > %s")
    :format(src, port, dir, pidfile)))
  assert(mosq.wait_sh(("curl -s -o /dev/null http://127.0.0.1:%d/stats"):format(port)),
    "the HTTP test server did not start")
  mosq.reap_with_us(("kill $(cat %s)"):format(pidfile))
  return port, function() mosq.sh(("kill $(cat %s) 2>/dev/null"):format(pidfile)) end
end

describe("mq.http", function()
  local e, dir, port, stop
  setup(function()
    dir = h.tmpdir()
    port, stop = start_server(dir)
  end)
  teardown(function()
    stop()
    os.execute("rm -rf '" .. dir .. "'")
  end)
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  local function run_rules(code) return h.run_rules(e, ("PORT = %d\n"):format(port), code) end

  it("posts JSON to a base URL with default headers and reads the answer", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local json = require "mqrouter.json"
      local hooks = mq.http{ base_url = "http://127.0.0.1:" .. PORT, headers = { ["X-Token"] = "t1" } }
      mq.spawn(function()
        local res, err = hooks:post("/echo", { alert = "hot", temp = 41 })
        assert(res, err)
        local echo = json.decode(res.body)
        mq.publish("out", table.concat({ res.status, res.headers["content-type"], echo.method,
          echo.path, echo.headers["x-token"], echo.headers["content-type"], echo.body }, "|"))
      end)
    ]])
    assert.are.equal('200|application/json|POST|/echo|t1|application/json|{"alert":"hot","temp":41}', got)
  end)

  it("answers the same through libcurl (transport = \"curl\")", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local json = require "mqrouter.json"
      local hooks = mq.http{ base_url = "http://127.0.0.1:" .. PORT, transport = "curl" }
      mq.spawn(function()
        local res, err = hooks:post("/echo", { alert = "hot" })
        assert(res, err)
        local echo = json.decode(res.body)
        mq.publish("out", table.concat({ res.status, echo.method, echo.body }, "|"))
      end)
    ]])
    assert.are.equal('200|POST|{"alert":"hot"}', got)
  end)

  it("uses a default client for mq.http.get", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      mq.spawn(function()
        local res = assert(mq.http.get("http://127.0.0.1:" .. PORT .. "/status/204"))
        mq.publish("out", tostring(res.status))
      end)
    ]])
    assert.are.equal("204", got)
  end)

  it("names failures and says whether a retry may help", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local c = mq.http{ base_url = "http://127.0.0.1:" .. PORT, timeout = 0.3 }
      mq.spawn(function()
        local out = {}
        local function try(path)
          local res, err, name, kind, resp = c:get(path)
          out[#out + 1] = table.concat({ tostring(res), name, kind, resp and resp.status or "-" }, " ")
        end
        try("/status/503")
        try("/status/404")
        try("/slow?ms=2000")
        local dead = mq.http{ name = "dead" }
        local _, _, name, kind = dead:get("http://127.0.0.1:1/")
        out[#out + 1] = name .. " " .. kind
        local _, err, name2, kind2 = dead:get("ftp://example.com/")
        out[#out + 1] = name2 .. " " .. kind2
        mq.publish("out", table.concat(out, ";"))
      end)
    ]])
    assert.are.equal("nil EHTTP retry 503;nil EHTTP permanent 404;nil ETIMEDOUT retry -;"
      .. "ECONNREFUSED retry;EINVAL permanent", got)
  end)

  it("delivers at least once through a durable queue, dead-lettering what fails for good", function()
    local stats = e:capture("stats")
    assert(e:load(("PORT = %d\n"):format(port) .. [[
      local mq = require "mqrouter"
      local c = mq.http{ base_url = "http://127.0.0.1:" .. PORT }
      local q = mq.queue("hooks", { durable = false, max_attempts = 3, backoff = { 0.01, 0.02 } })
      mq.route("alerts/#", q)
      mq.deliver(q, function(msg)
        return c:post(msg.payload == "gone" and "/status/410" or "/echo", msg.payload)
      end, { concurrency = 4 })
      mq.every(0.02, function()
        local s = q:stats()
        mq.publish("stats", s.acked .. " " .. s.dead .. " " .. s.in_flight)
      end)
    ]]))
    for i = 1, 10 do e:publish("alerts/a", "x" .. i) end
    e:publish("alerts/a", "gone")
    assert.is_true(e:run_until(function()
      local n = stats:count()
      return n > 0 and stats:messages()[n].payload == "10 1 0"
    end, 5))
  end)

  it("sends without waiting from a plain route, counting and logging failures", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local c = mq.http{ name = "fire", base_url = "http://127.0.0.1:" .. PORT }
      mq.after(0.01, function() -- a plain timer: not a coroutine
        assert(c:send{ url = "/echo", body = { a = 1 } })
        assert(c:send{ url = "/status/500" })
      end)
      mq.every(0.02, function()
        local s = c:stats()
        if s.ok + s.retried == 2 then mq.publish("out", s.ok .. " " .. s.retried) end
      end)
    ]])
    assert.are.equal("1 1", got)
    assert.truthy(h.find_log(mqrouter.logs(), "http 'fire': a request sent without waiting failed: HTTP 500", true))
  end)

  it("raises on misuse", function()
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.http{ colour = "red" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find("mq.http: unknown option 'colour'", 1, true))
    ok, err = e:load([[
      local mq = require "mqrouter"
      mq.http{ transport = "carrier-pigeon" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find('mq.http: transport must be "native" or "curl"', 1, true))
    assert(e:load([[
      local mq = require "mqrouter"
      local c = mq.http{ name = "m" }
      mq.route("sync", function() c:get("http://127.0.0.1:1/") end)
    ]]))
    e:publish("sync", "")
    assert.truthy(h.find_log(mqrouter.logs(), "http:request must be called from a coroutine", true))
  end)
end)
