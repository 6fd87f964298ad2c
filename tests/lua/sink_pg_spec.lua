-- mq.pg from rules, against a throw-away PostgreSQL 15 (pg_server.lua):
-- parameters never spliced, rows batched into INSERTs and waited for,
-- failures named with their SQLSTATE and classed, misuse that raises, and
-- readings stored at least once through a durable queue.
local mqrouter = require "mqrouter"
local h = require "helpers"
local pg_server = require "pg_server"

describe("mq.pg", function()
  local e, srv
  setup(function()
    srv = pg_server.start()
    assert.are.equal("CREATE TABLE", srv.psql(
      "CREATE TABLE readings (device text NOT NULL, value double precision, note text, "
      .. "meta jsonb, id serial PRIMARY KEY)"))
    srv.psql("CREATE TABLE uniq (k text PRIMARY KEY)")
  end)
  teardown(function() srv.stop() end)
  before_each(function()
    mqrouter.capture_logs(true)
    e = h.engine()
  end)
  after_each(function()
    e:close()
    mqrouter.capture_logs(false)
  end)

  local function run_rules(code) return h.run_rules(e, ("CONNINFO = %q\n"):format(srv.conninfo), code) end

  it("queries with parameters and inserts rows in batches", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local db = mq.pg{ conninfo = CONNINFO }
      mq.spawn(function()
        local res = assert(db:query("SELECT $1::text AS a, $2::int + 1 AS b, $3::text AS c",
          { "it's \"quoted\"", 41, mq.pg.null }))
        local rows = {}
        for i = 1, 500 do
          rows[i] = { device = "d" .. (i % 5), value = i, meta = { i = i } }
        end
        assert(db:insert("readings", rows))
        assert(db:insert("readings", { device = "solo", note = "x'); DROP TABLE readings; --" }))
        local n = assert(db:query("SELECT count(*) AS n, sum(value) AS s FROM readings"))
        mq.publish("out", table.concat({ res.rows[1].a, res.rows[1].b, tostring(res.rows[1].c),
          n.rows[1].n, n.rows[1].s }, "|"))
      end)
    ]])
    assert.are.equal([[it's "quoted"|42|nil|501|125250]], got)
    assert.are.equal("x'); DROP TABLE readings; --", srv.psql("SELECT note FROM readings WHERE device = 'solo'"))
    assert.are.equal("250", srv.psql("SELECT meta->>'i' FROM readings WHERE value = 250"))
  end)

  it("names failures with their SQLSTATE and kind", function()
    local got = run_rules([[
      local mq = require "mqrouter"
      local db = mq.pg{ conninfo = CONNINFO, name = "db2" }
      mq.spawn(function()
        local out = {}
        assert(db:insert("uniq", { k = "a" }))
        local _, err, name, kind, state = db:insert("uniq", { k = "a" })
        out[#out + 1] = table.concat({ name, kind, state }, " ")
        _, err, name, kind, state = db:query("SELEC 1")
        out[#out + 1] = table.concat({ name, kind, state }, " ")
        _, err, name, kind, state = db:insert("no_such_table", { x = 1 })
        out[#out + 1] = table.concat({ name, kind, state }, " ")
        mq.publish("out", table.concat(out, ";"))
      end)
    ]])
    assert.are.equal("EPG permanent 23505;EPG permanent 42601;EPG permanent 42P01", got)
  end)

  it("raises on misuse and keeps the password out of errors", function()
    local ok, err = e:load([[
      local mq = require "mqrouter"
      mq.pg{ conninfo = "host=127.0.0.1 password=s3cret bogus=1" }
    ]])
    assert.is_nil(ok)
    assert.truthy(err:find("mq.pg:", 1, true))
    assert.is_nil(err:find("s3cret", 1, true))
    ok, err = e:load([[
      local mq = require "mqrouter"
      local db = mq.pg{ conninfo = "host=127.0.0.1 port=1", name = "m" }
      mq.route("sync", function() db:query("SELECT 1") end)
      mq.route("bad", function() mq.spawn(function() db:insert("t", { { 1, 2 } }) end) end)
    ]])
    assert(ok, err)
    e:publish("sync", "")
    assert.truthy(h.find_log(mqrouter.logs(), "pg:query must be called from a coroutine", true))
    e:publish("bad", "")
    assert.truthy(h.find_log(mqrouter.logs(), "pg:insert: row 1 has a key that is not a column name", true))
  end)

  it("stores readings at least once through a durable queue", function()
    local data = h.tmpdir()
    local e2 = h.engine({ data_dir = data })
    local stats = e2:capture("stats")
    assert(e2:load(("CONNINFO = %q\n"):format(srv.conninfo) .. [[
      local mq = require "mqrouter"
      local db = mq.pg{ conninfo = CONNINFO, name = "store" }
      local q = mq.queue("to-pg", { durable = true, backoff = { 0.05, 0.2 } })
      mq.route("plant/+/power", q)
      mq.deliver(q, function(msg)
        return db:insert("readings", { device = msg.topic:match("^plant/([^/]+)"),
          value = tonumber(msg.payload) })
      end, { concurrency = 32 })
      mq.every(0.05, function()
        local s = q:stats()
        mq.publish("stats", s.acked .. " " .. s.depth)
      end)
    ]]))
    for i = 1, 300 do e2:publish("plant/p" .. (i % 3) .. "/power", tostring(i), { qos = 1 }) end
    assert.is_true(e2:run_until(function()
      local n = stats:count()
      return n > 0 and stats:messages()[n].payload == "300 0"
    end, 10))
    assert.are.equal("300", srv.psql("SELECT count(*) FROM readings WHERE device LIKE 'p_'"))
    e2:close()
    os.execute("rm -rf '" .. data .. "'")
  end)

  it("delivers batches of messages as one multi-row insert each", function()
    local data = h.tmpdir()
    local e2 = h.engine({ data_dir = data })
    local stats = e2:capture("stats")
    assert(e2:load(("CONNINFO = %q\n"):format(srv.conninfo) .. [[
      local mq = require "mqrouter"
      local db = mq.pg{ conninfo = CONNINFO, name = "bulk" }
      local q = mq.queue("to-pg-bulk", { durable = true, backoff = { 0.05, 0.2 } })
      mq.route("bulk/+", q)
      mq.deliver(q, function(list)
        local rows = {}
        for i, msg in ipairs(list) do rows[i] = { device = "bulk", value = tonumber(msg.payload) } end
        return db:insert("readings", rows)
      end, { batch = 100 })
      mq.every(0.05, function()
        local s = q:stats()
        mq.publish("stats", s.acked .. " " .. s.depth)
      end)
    ]]))
    for i = 1, 500 do e2:publish("bulk/x", tostring(i), { qos = 1 }) end
    assert.is_true(e2:run_until(function()
      local n = stats:count()
      return n > 0 and stats:messages()[n].payload == "500 0"
    end, 10))
    assert.are.equal("500|125250", srv.psql("SELECT count(*) || '|' || sum(value) FROM readings WHERE device = 'bulk'"))
    e2:close()
    os.execute("rm -rf '" .. data .. "'")
  end)
end)
