-- audit_log.lua — an audit trail: every message that passes, as a JSON
-- line in a file rotated daily or at 100 MB, the last 30 files kept, each
-- batch fsync'ed before it counts as written.
--
--   AUDIT_FILE=/var/log/mqrouter/audit.jsonl mqrouter audit_log.lua
--   tail -f /var/log/mqrouter/audit.jsonl
local mq = require "mqrouter"

local audit = mq.file{ name = "audit", path = os.getenv("AUDIT_FILE") or "data/audit.jsonl",
  rotate_bytes = 100 * 1000 * 1000, rotate_seconds = 86400, keep = 30, fsync = "batch" }

mq.route("#", function(msg)
  local ok, err = audit:write({ time = msg.time, topic = msg.topic, qos = msg.qos,
    retain = msg.retain, source = msg.source, payload = msg.payload })
  if not ok then mq.log.warn("audit write refused:", err) end
end)
