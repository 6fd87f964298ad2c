-- The "Testing your rules" example of README.md, run as it is written: the
-- block defines its describe/it at load time of this file.
local src = os.getenv("MQROUTER_SRC") or "."
local f = assert(io.open(src .. "/README.md", "rb"))
local text = f:read("*a")
f:close()
local block = text:match("\n## Testing your rules\n.-```lua\n(.-)```")
assert(block, "README.md has no Testing your rules example")
local chunk = assert(loadstring(block, "=README.md (Testing your rules)"))
setfenv(chunk, getfenv(1)) -- busted's describe, it, assert
chunk()
