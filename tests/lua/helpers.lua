-- helpers.lua — shared set-up for the busted specs: an engine with no
-- listener and an in-memory store, and small waiting helpers.
local mqrouter = require "mqrouter"

local M = {}

mqrouter.set_log_level(os.getenv("MQR_TEST_LOG_LEVEL") or "warn")

function M.engine(opts)
  opts = opts or {}
  if opts.data_dir == nil then opts.data_dir = "" end
  local e = assert(mqrouter.engine(opts))
  return e
end

-- Runs the engine's loop until pred() is true or timeout seconds passed.
function M.run_until(e, pred, timeout)
  local deadline = os.clock() + (timeout or 2)
  local t0 = os.time()
  while not pred() do
    e:run(0.02)
    if os.clock() > deadline or os.time() - t0 > (timeout or 2) + 1 then return pred() end
  end
  return true
end

-- Loads prelude .. code into e and waits (5 s at most) for the rules to
-- publish on "out"; returns that payload. For specs whose rules answer
-- once, from a coroutine or a timer.
function M.run_rules(e, prelude, code)
  local out = e:capture("out")
  assert(e:load(prelude .. code))
  assert(M.run_until(e, function() return out:count() >= 1 end, 5), "the rules published nothing on out")
  return out:messages()[1].payload
end

function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. p) == 0)
  return p
end

function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The first line that has pattern (plain text when plain is true).
function M.find_log(lines, pattern, plain)
  for _, l in ipairs(lines) do
    if l:find(pattern, 1, plain) then return l end
  end
end

return M
