-- Every `lua` example in docs/lua-api.md and docs/stdlib.md loads cleanly
-- into a fresh engine, carries test lines, and they hold, in order:
--   -- test: STEP -> EXPECT
-- STEP is what is done:
--   publish T P     publish P on T into the engine
--   advance S       move the fake clock S seconds (a block with an advance
--                   step runs on the fake clock)
--   loaded          nothing: what loading the example did
-- EXPECT is what must follow:
--   T2 P2           exactly one message on T2, payload P2
--   nothing         no message but the one published
--   log TEXT        a log line containing TEXT (since the previous step)
--   session N F V   upstream session N's status field F reads V (state,
--                   ready, buffered, ...; polled up to 3 s)
-- The loop runs after each step (up to 3 s) so that work done on later
-- loop turns (queue consumers, retries) counts too.
local h = require "helpers"
local mqrouter = require "mqrouter"

local function examples(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  local list = {}
  for block in text:gmatch("```lua\n(.-)```") do list[#list + 1] = block end
  return list
end

local src = os.getenv("MQROUTER_SRC") or "."

local DOCS = {
  { file = "docs/lua-api.md", min = 8 },
  { file = "docs/stdlib.md", min = 10, opts = { clock = "fake", start_time = 1704067200 } },
}

for _, doc in ipairs(DOCS) do
  local blocks = examples(src .. "/" .. doc.file)
  describe(doc.file .. " examples", function()
    it("has examples", function() assert.is_true(#blocks >= doc.min) end)

    for i, code in ipairs(blocks) do
      it("example " .. i .. " is tested and its tests hold", function()
        assert.truthy(code:find("%-%- test: "), "example " .. i .. " has no -- test: line")
        local opts = {}
        for k, v in pairs(doc.opts or {}) do opts[k] = v end
        if code:find("%-%- test: advance ") then opts.clock = "fake" end
        mqrouter.set_log_level("info")
        mqrouter.capture_logs(true)
        mqrouter.logs() -- start from nothing
        local e = h.engine(opts)
        local ok, err = e:load(code, "example" .. i .. ".lua")
        assert(ok, err)
        for step, expect in code:gmatch("%-%- test: ([^\n]-) %-> ([^\n]*)") do
          local verb, arg1, arg2 = step:match("^(%a+) ?(%S*) ?(%S*)$")
          local out_topic, out_payload = expect:match("^(%S+) ?(.*)$")
          local kind = (out_topic == "log" or out_topic == "session" or out_topic == "nothing")
                       and out_topic or "message"
          local cap = kind ~= "log" and kind ~= "session" and
                      e:capture(kind == "nothing" and "#" or out_topic) or nil
          if verb == "advance" then
            e:advance(tonumber(arg1))
          elseif verb == "publish" then
            assert(e:publish(arg1, arg2))
          else
            assert.are.equal("loaded", verb, "unknown test step: " .. step)
          end
          if kind == "nothing" then
            e:run(0.05)
            -- only the published message itself
            assert.are.equal(verb == "publish" and 1 or 0, cap:count())
          elseif kind == "log" then
            local lines = {}
            assert.is_true(h.run_until(e, function()
              for _, l in ipairs(mqrouter.logs()) do lines[#lines + 1] = l end
              return h.find_log(lines, out_payload, true) ~= nil
            end, 3), "no log line with '" .. out_payload .. "' after " .. step .. ":\n" ..
                     table.concat(lines, "\n"))
          elseif kind == "session" then
            local name, field, want = out_payload:match("^(%S+) (%S+) (%S+)$")
            local got
            h.run_until(e, function()
              got = tostring(assert(e:session(name))[field])
              return got == want
            end, 3)
            assert.are.equal(want, got, "session " .. name .. " " .. field .. " after " .. step)
          else
            e:run_until(function() return cap:count() >= 1 end, verb == "advance" and 0.2 or 3)
            local got = cap:messages()
            assert.are.equal(1, #got, "no " .. out_topic .. " after " .. step)
            assert.are.equal(out_payload, got[1].payload)
          end
          if cap then cap:stop() end
        end
        e:close()
        mqrouter.capture_logs(false)
        mqrouter.set_log_level(os.getenv("MQR_TEST_LOG_LEVEL") or "warn")
      end)
    end
  end)
end
