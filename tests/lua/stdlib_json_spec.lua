-- mqrouter.json and mqrouter.payload, inside the sandbox (loaded by rules).
local t = require "mqrouter.testing"

local function run(code)
  local h = t.load_string(code)
  local out = h:payloads("out")
  h:close()
  return out
end

describe("mqrouter.json", function()
  it("encodes and decodes, with null, arrays and empty arrays", function()
    local out = run([[
      local mq = require "mqrouter"
      local json = require "mqrouter.json"
      mq.publish("out", json.encode({ a = 1, b = { 1, 2 }, c = json.array(), d = json.null }))
      local v = json.decode('{"x":[1,2,{"y":null}],"z":"s"}')
      mq.publish("out", tostring(v.x[2]) .. " " .. tostring(v.x[3].y == json.null) .. " " .. v.z)
      mq.publish("out", json.encode({ [1] = "a", [3] = "c" }))
      mq.publish("out", json.encode({ topic = "a/b", odd = "x\\/y", z = 1, a = 2 }))
      mq.publish("out", json.decode(json.encode({ s = "x\\/y" })).s)
    ]])
    local cjson = require "cjson"
    local first = cjson.decode(out[1])
    assert.are.equal(1, first.a)
    assert.are.same({ 1, 2 }, first.b)
    assert.truthy(out[1]:find('"c":[]', 1, true))
    assert.truthy(out[1]:find('"d":null', 1, true))
    assert.are.equal("2 true s", out[2])
    assert.are.equal('["a",null,"c"]', out[3])
    assert.are.equal('{"a":2,"odd":"x\\\\/y","topic":"a/b","z":1}', out[4]) -- sorted, "/" unescaped
    assert.are.equal("x\\/y", out[5])
  end)

  it("returns nil, EJSON errors naming the problem and the topic", function()
    local out = run([[
      local mq = require "mqrouter"
      local json = require "mqrouter.json"
      local v, err, name = json.decode("{bad")
      mq.publish("out", tostring(v) .. "|" .. name .. "|" .. err)
      local _, err2 = json.decode("")
      mq.publish("out", err2)
      local _, err3 = json.encode({ f = function() end })
      mq.publish("out", err3)
      mq.route("in", function(msg)
        local _, e = json.decode_msg(msg)
        mq.publish("out", e)
      end)
      local ok, e4 = pcall(json.decode, 42)
      mq.publish("out", tostring(ok) .. " " .. e4)
    ]])
    assert.truthy(out[1]:match("^nil|EJSON|EJSON: .*[Ee]xpected"))
    assert.are.equal("EJSON: empty text", out[2])
    assert.truthy(out[3]:match("^EJSON: .*function"))
    assert.truthy(out[4]:find("string expected", 1, true))
  end)

  it("decode_msg names the topic", function()
    local h = t.load_string([[
      local mq = require "mqrouter"
      local json = require "mqrouter.json"
      mq.route("in/#", function(msg)
        local _, e = json.decode_msg(msg)
        mq.publish("out", e)
      end)
    ]])
    h:publish("in/dev1", "nope")
    assert.truthy(h:last("out").payload:match("^EJSON: payload of in/dev1: "))
    h:close()
  end)
end)

describe("mqrouter.payload", function()
  it("parses numbers in text, with units, commas and JSON fields", function()
    local out = run([[
      local mq = require "mqrouter"
      local p = require "mqrouter.payload"
      local r = {}
      for _, s in ipairs({ "21.5", " 21.5\n", "21.5 C", "21,5", "-3e2", "0x1F", "42%", "12 kWh" }) do
        r[#r + 1] = tostring(p.number(s))
      end
      mq.publish("out", table.concat(r, " "))
      mq.publish("out", tostring(p.number('{"t":{"v":"7.5"}}', "t.v")))
      local v, err, name = p.number("abc")
      mq.publish("out", tostring(v) .. "|" .. err .. "|" .. name)
      local _, err2 = p.number('{"t":true}', "t")
      mq.publish("out", err2)
      local _, err3 = p.number("21.5.3")
      mq.publish("out", err3)
      mq.publish("out", select(2, p.number("inf")) .. " " .. select(2, p.number("nan")))
    ]])
    assert.are.equal("21.5 21.5 21.5 21.5 -300 31 42 12", out[1])
    assert.are.equal("7.5", out[2])
    assert.are.equal('nil|EPAYLOAD: "abc" is not a number|EPAYLOAD', out[3])
    assert.are.equal("EPAYLOAD: field 't' is not a number", out[4])
    assert.truthy(out[5]:find("is not a number"))
    assert.are.equal('EPAYLOAD: "inf" is not a finite number EPAYLOAD: "nan" is not a finite number', out[6])
  end)

  it("hex, base64, binary fields and their errors", function()
    local out = run([[
      local mq = require "mqrouter"
      local p = require "mqrouter.payload"
      mq.publish("out", p.hex("\1\171\255"))
      mq.publish("out", p.from_hex("01ab ff") == "\1\171\255" and "ok" or "bad")
      mq.publish("out", p.base64("hello!") .. " " .. p.base64("hi") .. " " .. p.base64("h"))
      mq.publish("out", p.from_base64("aGVsbG8h") .. p.from_base64("aGk=") .. p.from_base64("aA"))
      local s = p.pack("u16be", 258) .. p.pack("i16le", -2) .. p.pack("f32le", 1.5) .. p.pack("f64be", -0.1) .. p.pack("u32le", 4000000000)
      local v = p.unpack("u16be i16le f32le f64be u32le", s)
      mq.publish("out", table.concat(v, " "))
      local w = p.unpack("<u16 x i8", "\2\1\0\255")
      mq.publish("out", table.concat(w, " "))
      local n, err = p.read("\1", "u16")
      mq.publish("out", tostring(n) .. " " .. err)
      mq.publish("out", tostring(p.read(p.pack("f32be", 3.14159), "f32be")))
      local ok, e = pcall(p.pack, "u8", 256)
      mq.publish("out", e)
      local ok2, e2 = pcall(p.read, "x", "u12")
      mq.publish("out", e2)
      mq.publish("out", tostring(select(2, p.from_hex("abc"))))
    ]])
    assert.are.equal("01abff", out[1])
    assert.are.equal("ok", out[2])
    assert.are.equal("aGVsbG8h aGk= aA==", out[3])
    assert.are.equal("hello!hih", out[4])
    assert.are.equal("258 -2 1.5 -0.1 4000000000", out[5])
    assert.are.equal("258 -1", out[6])
    assert.are.equal("nil EPAYLOAD: u16 at byte 1 needs 2 bytes, payload has 1", out[7])
    assert.truthy(math.abs(tonumber(out[8]) - 3.14159) < 1e-6)
    assert.truthy(out[9]:find("does not fit in u8", 1, true))
    assert.truthy(out[10]:find("unknown field type 'u12'", 1, true))
    assert.are.equal("EPAYLOAD: not hex", out[11])
  end)

  it("compresses with lua-zlib", function()
    local out = run([[
      local mq = require "mqrouter"
      local p = require "mqrouter.payload"
      local big = string.rep("reading 21.5;", 100)
      local z = assert(p.compress(big))
      mq.publish("out", tostring(p.compression) .. " " .. tostring(#z < #big / 5) .. " " .. tostring(p.decompress(z) == big))
      local v, err = p.decompress("not zlib")
      mq.publish("out", tostring(v) .. " " .. err)
    ]])
    assert.are.equal("true true true", out[1])
    assert.truthy(out[2]:match("^nil EPAYLOAD: not a zlib/gzip stream"))
  end)
end)
