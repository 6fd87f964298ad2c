-- Every `lua` example in docs/lua-api.md and docs/stdlib.md loads cleanly
-- into a fresh engine, and its test lines hold, in order:
--   -- test: publish T P -> T2 P2     publishing T P makes T2 P2 come out
--   -- test: publish T P -> nothing   ... and nothing else
--   -- test: advance S -> T2 P2       (stdlib.md: a fake clock) moving time
--                                     S seconds makes T2 P2 come out
-- The loop runs after each publish (up to 3 s) so that work done on later
-- loop turns (queue consumers, retries) counts too.
local h = require "helpers"

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
      it("example " .. i .. " runs", function()
        local opts = {}
        for k, v in pairs(doc.opts or {}) do opts[k] = v end
        local e = h.engine(opts)
        local ok, err = e:load(code, "example" .. i .. ".lua")
        assert(ok, err)
        for verb, arg1, arg2, out_topic, out_payload in
            code:gmatch("%-%- test: (%a+) (%S+) ?(%S*) %-> (%S+) ?([^\n]*)") do
          local cap = e:capture(out_topic == "nothing" and "#" or out_topic)
          if verb == "advance" then
            e:advance(tonumber(arg1))
          else
            assert(e:publish(arg1, arg2))
          end
          if out_topic == "nothing" then
            e:run(0.05)
            -- only the published message itself
            assert.are.equal(verb == "publish" and 1 or 0, cap:count())
          else
            e:run_until(function() return cap:count() >= 1 end, verb == "advance" and 0.2 or 3)
            local got = cap:messages()
            assert.are.equal(1, #got, "no " .. out_topic .. " after " .. verb .. " " .. arg1)
            assert.are.equal(out_payload, got[1].payload)
          end
          cap:stop()
        end
        e:close()
      end)
    end
  end)
end
