-- Every `lua` example in docs/lua-api.md loads cleanly into a fresh engine,
-- and its "-- test: publish T P -> T2 P2" lines hold. The loop runs after
-- each publish (up to 3 s) so that work done on later loop turns (queue
-- consumers, retries) counts too.
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
local blocks = examples(src .. "/docs/lua-api.md")

describe("docs/lua-api.md examples", function()
  it("has examples", function() assert.is_true(#blocks >= 8) end)

  for i, code in ipairs(blocks) do
    it("example " .. i .. " runs", function()
      local e = h.engine()
      local ok, err = e:load(code, "example" .. i .. ".lua")
      assert(ok, err)
      for topic, payload, out_topic, out_payload in
          code:gmatch("%-%- test: publish (%S+) (%S+) %-> (%S+) ?([^\n]*)") do
        if out_topic == "nothing" then
          local cap = e:capture("#")
          assert(e:publish(topic, payload))
          e:run(0.05)
          assert.are.equal(1, cap:count()) -- only the published message itself
          cap:stop()
        else
          local cap = e:capture(out_topic)
          assert(e:publish(topic, payload))
          e:run_until(function() return cap:count() >= 1 end, 3)
          local got = cap:messages()
          assert.are.equal(1, #got, "no " .. out_topic .. " after " .. topic)
          assert.are.equal(out_payload, got[1].payload)
          cap:stop()
        end
      end
      e:close()
    end)
  end
end)
