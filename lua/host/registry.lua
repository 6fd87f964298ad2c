-- lua/host/registry.lua — the Lua half of mq.devices, compiled into the
-- binary (bindings/l_registry.c loads it): register() takes metadata as a
-- table and hands the C half its JSON (cjson). Receives the mq.devices
-- table. Runs outside the sandbox: it must set no global.
local devices = ...
local register = devices.register
devices.register = function(spec)
  if type(spec) ~= 'table' then
    error('mq.devices.register: bad argument #1 (table expected, got ' .. type(spec) .. ')', 2)
  end
  if type(spec.metadata) == 'table' then
    local copy = {}
    for k, v in pairs(spec) do copy[k] = v end
    copy.metadata = require('cjson').encode(spec.metadata)
    spec = copy
  end
  return register(spec)
end
