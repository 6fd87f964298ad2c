-- readings_to_postgres.lua — every reading into a PostgreSQL (or
-- TimescaleDB) table, in batches, at least once.
--
-- Readings arrive on plant/<device>/<metric> as a number. They wait in a
-- durable queue; mq.deliver inserts each as a row (device, metric, value,
-- ts); the client gathers the rows of many messages into one multi-row
-- INSERT (up to 1 000 rows or 5 ms), and a message is acked once its row
-- is committed. A lost connection or a server restart retries; a bad
-- value (not a number) is a dead letter at once. The table:
--
--   CREATE TABLE readings (device text, metric text, value double precision,
--                          ts timestamptz);   -- SELECT create_hypertable(...)
--
--   PG_CONNINFO="host=127.0.0.1 dbname=plant user=ingest" mqrouter readings_to_postgres.lua
local mq = require "mqrouter"

local db = mq.pg{ name = "plant-db",
  conninfo = os.getenv("PG_CONNINFO") or "host=127.0.0.1 dbname=plant user=ingest",
  connections = 2 }
local q = mq.queue("readings-db", { durable = true, max_attempts = 50, backoff = { 1, 60 },
  max_messages = 1000000 })
mq.route("plant/+/+", q)

mq.deliver(q, function(msg)
  local device, metric = msg.topic:match("^plant/([^/]+)/([^/]+)$")
  local value = tonumber(msg.payload)
  if not value then
    return nil, "EINVAL: not a number: " .. msg.payload, "EINVAL", "permanent"
  end
  return db:insert("readings", { device = device, metric = metric, value = value,
    ts = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(msg.time)) })
end, { concurrency = 500 })
