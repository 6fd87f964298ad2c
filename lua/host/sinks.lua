-- lua/host/sinks.lua: the Lua half of the egress clients (bindings/l_sink*.c),
-- compiled into the binary and run once in every rules state, outside the
-- sandbox, as the chunk "=sinks".
--
-- Receives the rules table (mq), the methods tables of file and HTTP sinks
-- and the C helpers (C.http_new); adds the file sink's write and write_sync
-- (a table is encoded as JSON), the HTTP client's request/get/post, and
-- mq.http (a client maker with a default client's request/get/post).
-- Must not: block (write_sync waits by yielding), or set globals.
local mq, file_methods, http_methods, redis_methods, pg_methods, C = ...
local json
local type, tostring, error = type, tostring, error

-- The bytes of a record: a string as it is, a table as JSON with the
-- stdlib's encoder (mqrouter.json: keys sorted, "/" unescaped), so equal
-- values give equal text.
local function encode(v, what)
  if type(v) == 'string' then return v end
  if type(v) ~= 'table' then
    error(what .. ': bad argument #1 (table or string expected, got ' .. type(v) .. ')', 3)
  end
  if not json then json = assert(loadfile(C.stdlib_dir .. '/mqrouter/json.lua'))() end
  local text, err = json.encode(v)
  if not text then return nil, 'EPAYLOAD: cannot encode as JSON: ' .. tostring(err) end
  return text
end

-- f:write(v) -> true | nil, err, name, kind: never waits; the record is on
-- disk later (f:flush() waits for that).
function file_methods.write(self, v)
  local text, err = encode(v, 'file:write')
  if not text then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_write(text)
end

-- f:write_sync(v) -> true | nil, err, name, kind: waits (in a coroutine)
-- until the record is written (and on disk, with fsync = "batch").
function file_methods.write_sync(self, v)
  local text, err = encode(v, 'file:write_sync')
  if not text then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_write_wait(text)
end

-- ---- HTTP ------------------------------------------------------------------

local HTTP_OPTS = { name = true, base_url = true, headers = true, timeout = true,
  connect_timeout = true, max_in_flight = true, max_queued = true,
  max_host_connections = true, max_response_bytes = true, ca = true, cert = true,
  key = true, insecure = true, transport = true }
local conf = setmetatable({}, { __mode = 'k' }) -- client -> { base_url, headers }

local function lower_keys(t, what)
  local out = {}
  if t == nil then return out end
  if type(t) ~= 'table' then error(what .. ': headers must be a table', 4) end
  for k, v in pairs(t) do
    if type(k) ~= 'string' or type(v) ~= 'string' then
      error(what .. ': headers must map names to strings', 4)
    end
    out[k:lower()] = v
  end
  return out
end

local function http_new(opts, level)
  if type(opts) ~= 'table' then
    error('mq.http: bad argument #1 (table expected, got ' .. type(opts) .. ')', level)
  end
  for k in pairs(opts) do
    if not HTTP_OPTS[k] then error("mq.http: unknown option '" .. tostring(k) .. "'", level) end
  end
  if opts.base_url ~= nil and type(opts.base_url) ~= 'string' then
    error('mq.http: base_url must be a string', level)
  end
  local c = C.http_new(opts)
  conf[c] = { base_url = opts.base_url and opts.base_url:gsub('/+$', ''),
    headers = lower_keys(opts.headers, 'mq.http') }
  return c
end

-- The request C takes: a url starting with "/" follows base_url, default
-- headers under the request's, a table body as JSON. nil, err when the
-- body cannot be encoded.
local function build(self, req, what)
  if type(req) ~= 'table' then
    error(what .. ': bad argument #1 (table expected, got ' .. type(req) .. ')', 3)
  end
  local cfg = conf[self] or {}
  local url = req.url
  if type(url) == 'string' and cfg.base_url and url:sub(1, 1) == '/' then url = cfg.base_url .. url end
  local headers = {}
  for k, v in pairs(cfg.headers or {}) do headers[k] = v end
  for k, v in pairs(lower_keys(req.headers, what)) do headers[k] = v end
  local body = req.body
  if type(body) == 'table' then
    local text, err = encode(body, what)
    if not text then return nil, err end
    body = text
    headers['content-type'] = headers['content-type'] or 'application/json'
  end
  return { method = req.method or (body and 'POST' or 'GET'), url = url, headers = headers,
    body = body, timeout = req.timeout }
end

-- c:request{ method, url, headers, body, timeout } -> response |
-- nil, err, name, "retry"|"permanent" [, response]: waits in a coroutine.
function http_methods.request(self, req)
  local r, err = build(self, req, 'http:request')
  if not r then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_request(r)
end

-- c:send{...} -> true | nil, err, name, kind: does not wait; a failure
-- later is counted in c:stats() and logged.
function http_methods.send(self, req)
  local r, err = build(self, req, 'http:send')
  if not r then return nil, err, 'EPAYLOAD', 'permanent' end
  return self:_send(r)
end

function http_methods.get(self, url, opts)
  opts = opts or {}
  return self:request({ method = 'GET', url = url, headers = opts.headers, timeout = opts.timeout })
end

function http_methods.post(self, url, body, opts)
  opts = opts or {}
  return self:request({ method = 'POST', url = url, body = body, headers = opts.headers,
    timeout = opts.timeout })
end

-- mq.http{...} makes a client; mq.http.request/get/post use a default one.
local default
local function default_client()
  if not default then default = http_new({ name = 'http' }, 4) end
  return default
end
mq.http = setmetatable({
  request = function(req) return default_client():request(req) end,
  get = function(url, opts) return default_client():get(url, opts) end,
  post = function(url, body, opts) return default_client():post(url, body, opts) end,
}, { __call = function(_, opts) return http_new(opts, 3) end })

-- ---- Redis -----------------------------------------------------------------

-- mq.redis{...} makes a client; mq.redis.null stands for Redis' nil reply.
mq.redis = setmetatable({ null = C.redis_null },
  { __call = function(_, opts)
      if type(opts) ~= 'table' then
        error('mq.redis: bad argument #1 (table expected, got ' .. type(opts) .. ')', 2)
      end
      return C.redis_new(opts)
    end })

-- The fields of a table as name, value pairs, names sorted (equal tables
-- give equal commands).
local function pairs_sorted(t, what)
  if type(t) ~= 'table' then error(what .. ': fields must be a table', 3) end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    if type(v) ~= 'string' and type(v) ~= 'number' and type(v) ~= 'boolean' then
      error(what .. ": field '" .. k .. "' is a " .. type(v) .. ' (strings, numbers, booleans)', 3)
    end
    out[#out + 1] = k
    out[#out + 1] = tostring(v)
  end
  return out
end

-- r:xadd(stream, fields [, { id = "*", maxlen = n }]) -> the entry's id
function redis_methods.xadd(self, stream, fields, opts)
  local cmd = { 'XADD', stream }
  if opts and opts.maxlen then
    cmd[#cmd + 1] = 'MAXLEN'
    cmd[#cmd + 1] = '~'
    cmd[#cmd + 1] = opts.maxlen
  end
  cmd[#cmd + 1] = opts and opts.id or '*'
  for _, v in ipairs(pairs_sorted(fields, 'redis:xadd')) do cmd[#cmd + 1] = v end
  return self:command(cmd)
end

-- r:publish(channel, message) -> subscribers that got it
function redis_methods.publish(self, channel, message)
  return self:command({ 'PUBLISH', channel, message })
end

-- r:set(key, value [, { ex = seconds }]) -> "OK"
function redis_methods.set(self, key, value, opts)
  if opts and opts.ex then return self:command({ 'SET', key, value, 'EX', opts.ex }) end
  return self:command({ 'SET', key, value })
end

-- r:get(key) -> the value or mq.redis.null
function redis_methods.get(self, key)
  return self:command({ 'GET', key })
end

-- r:hset(key, fields) -> fields added
function redis_methods.hset(self, key, fields)
  local cmd = { 'HSET', key }
  for _, v in ipairs(pairs_sorted(fields, 'redis:hset')) do cmd[#cmd + 1] = v end
  return self:command(cmd)
end

-- ---- PostgreSQL ------------------------------------------------------------

-- mq.pg{...} makes a client; mq.pg.null stands for SQL NULL in parameters.
local PG_NULL = setmetatable({}, { __tostring = function() return 'pg.null' end })
mq.pg = setmetatable({ null = PG_NULL },
  { __call = function(_, opts)
      if type(opts) ~= 'table' then
        error('mq.pg: bad argument #1 (table expected, got ' .. type(opts) .. ')', 2)
      end
      return C.pg_new(opts)
    end })

-- A Lua value as a text parameter: false stands for NULL.
local function pg_text(v, what, i)
  local t = type(v)
  if v == nil or v == PG_NULL then return false end
  if t == 'string' then return v end
  if t == 'number' then
    if v == math.floor(v) and v > -2^53 and v < 2^53 then return ('%d'):format(v) end
    return ('%.17g'):format(v)
  end
  if t == 'boolean' then return v and 'true' or 'false' end
  if t == 'table' then -- for json and jsonb columns
    local text, err = encode(v, what)
    if not text then error(what .. ': value ' .. tostring(i) .. ': ' .. err, 4) end
    return text
  end
  error(what .. ': value ' .. tostring(i) .. ' is a ' .. t .. ' (strings, numbers, booleans, '
    .. 'tables as JSON, mq.pg.null)', 4)
end

-- p:query(sql [, params]) -> { rows, columns, affected } | nil, err, name,
-- kind, sqlstate: waits in a coroutine; $1.. are params, never spliced.
function pg_methods.query(self, sql, params)
  if type(sql) ~= 'string' then
    error('pg:query: bad argument #1 (SQL string expected, got ' .. type(sql) .. ')', 2)
  end
  local list = {}
  if params ~= nil then
    if type(params) ~= 'table' then error('pg:query: params must be a list', 2) end
    for i = 1, table.maxn(params) do list[i] = pg_text(params[i], 'pg:query', i) end
  end
  return self:_query(sql, list)
end

-- The rows of insert grouped by their columns (sorted names), in order.
local function pg_groups(rows, what)
  if type(rows) ~= 'table' then
    error(what .. ': bad argument #2 (a row or a list of rows expected, got ' .. type(rows) .. ')', 3)
  end
  if rows[1] == nil then rows = { rows } end
  local groups, by_key = {}, {}
  for n, row in ipairs(rows) do
    if type(row) ~= 'table' then error(what .. ': row ' .. n .. ' is not a table', 3) end
    local cols = {}
    for k in pairs(row) do
      if type(k) ~= 'string' then error(what .. ': row ' .. n .. ' has a key that is not a column name', 3) end
      cols[#cols + 1] = k
    end
    if #cols == 0 then error(what .. ': row ' .. n .. ' has no columns', 3) end
    table.sort(cols)
    local key = table.concat(cols, '\0')
    local g = by_key[key]
    if not g then
      g = { cols = cols, rows = {} }
      by_key[key] = g
      groups[#groups + 1] = g
    end
    local vals = {}
    for i, c in ipairs(cols) do vals[i] = pg_text(row[c], what, c) end
    g.rows[#g.rows + 1] = vals
  end
  return groups
end

-- p:insert(table, row_or_rows) -> true | failure: waits (coroutine) until
-- every row is committed; rows are batched into multi-row INSERTs.
function pg_methods.insert(self, tbl, rows)
  if type(tbl) ~= 'string' then error('pg:insert: bad argument #1 (table name expected)', 2) end
  for _, g in ipairs(pg_groups(rows, 'pg:insert')) do
    local ok, err, name, kind, state = self:_insert(tbl, g.cols, g.rows, true)
    if not ok then return nil, err, name, kind, state end
  end
  return true
end

-- p:send_insert(table, row_or_rows) -> true | nil, "EFULL...": does not
-- wait; a failure later is counted in p:stats() and logged.
function pg_methods.send_insert(self, tbl, rows)
  if type(tbl) ~= 'string' then error('pg:send_insert: bad argument #1 (table name expected)', 2) end
  for _, g in ipairs(pg_groups(rows, 'pg:send_insert')) do
    local ok, err, name, kind = self:_insert(tbl, g.cols, g.rows, false)
    if not ok then return nil, err, name, kind end
  end
  return true
end

-- ---- at least once ---------------------------------------------------------

-- mq.deliver(q, fn [, { concurrency = n, batch = n }]) -> consumer: takes
-- q's messages and hands each (with batch, a list of up to n) to fn in a
-- coroutine (fn may wait for a sink); what fn returns settles the message
-- (every message of the list) as a sink's answer reads:
--   a true value                       ack
--   nil, err, name, "permanent"        dead letter now (msg:reject(err): the
--                                      dead letter carries err as mqrouter-error)
--   nil, err [, name, "retry"], false  nack: redelivered after the backoff,
--                                      dead-lettered after max_attempts
--   an error raised                    nack
-- Failures are logged with the message's queue id (the 1st, 2nd, 4th...).
local DELIVER_OPTS = { concurrency = true, batch = true }
function mq.deliver(q, fn, opts)
  if type(q) ~= 'userdata' or type(q.consume) ~= 'function' then
    error('mq.deliver: bad argument #1 (queue expected, got ' .. type(q) .. ')', 2)
  end
  if type(fn) ~= 'function' then
    error('mq.deliver: bad argument #2 (function expected, got ' .. type(fn) .. ')', 2)
  end
  if opts ~= nil then
    if type(opts) ~= 'table' then error('mq.deliver: options must be a table', 2) end
    for k in pairs(opts) do
      if not DELIVER_OPTS[k] then error("mq.deliver: unknown option '" .. tostring(k) .. "'", 2) end
    end
  end
  local batch = opts and opts.batch
  local qname, failures = q:name(), 0
  local function settle(list, res, err, _, kind)
    if res then return true end
    failures = failures + 1
    if bit.band(failures, failures - 1) == 0 then
      local m = list[1]
      mq.log.warn(('mq.deliver from queue %s: %s%s attempt %d: %s (%s; %d failures so far)')
        :format(qname, #list > 1 and (#list .. ' messages from ') or 'message ', tostring(m.id),
          m.attempts, tostring(err), kind == 'permanent' and 'dead-lettered' or 'will retry',
          failures))
    end
    if kind == 'permanent' then
      for _, m in ipairs(list) do m:reject(tostring(err)) end
      return true
    end
    return false
  end
  local handler
  if batch then
    handler = function(list) return settle(list, fn(list)) end
  else
    handler = function(msg) return settle({ msg }, fn(msg)) end
  end
  return q:consume(handler, { async = true, batch = batch,
    concurrency = opts and opts.concurrency or (batch and 4 or 16) })
end

-- ---- fakes for tests of rules (mqrouter.testing, fake_sinks = true) --------

-- Each call of a fake sink is published on $mqrouter/test/sinks/<name> as
-- JSON { method, args }, and answers at once: true, or what the kind's
-- client would give back (an empty HTTP 200, Redis OK, no rows). A message
-- on $mqrouter/test/sinks/<name>/fail with JSON { name, kind, times } makes
-- the next calls (all, without times) fail with nil, "NAME: told to fail",
-- NAME, kind.
if C.fake_sinks then
  local fails = {}
  local function load_json()
    if not json then json = assert(loadfile(C.stdlib_dir .. '/mqrouter/json.lua'))() end
    return json
  end
  mq.subscribe('$mqrouter/test/sinks/+/fail', function(msg)
    local name = msg.topic:match('^%$mqrouter/test/sinks/([^/]+)/fail$')
    fails[name] = load_json().decode(msg.payload) or nil
  end)
  local ANSWERS = {
    file = {}, http = { request = 'response', get = 'response', post = 'response' },
    redis = { command = 'OK', xadd = '0-1', set = 'OK', get = mq.redis.null, hset = 1, publish = 0 },
    pg = { query = 'rows' },
  }
  local function fake(kind, opts, default_name, methods)
    local name = type(opts) == 'table' and opts.name or default_name
    local f, calls = {}, 0
    for _, m in ipairs(methods) do
      f[m] = function(_, ...)
        calls = calls + 1
        local args = { ... }
        local text = encode({ method = m, args = args }, kind .. ':' .. m) or '{}'
        mq.publish('$mqrouter/test/sinks/' .. name, text)
        local fl = fails[name]
        if fl and (fl.times == nil or fl.times > 0) then
          if fl.times then fl.times = fl.times - 1 end
          local ename = fl.name or 'EFAKE'
          return nil, ename .. ': told to fail', ename, fl.kind or 'retry'
        end
        local a = ANSWERS[kind][m]
        if a == 'response' then return { status = 200, headers = {}, body = '', version = 1.1, seconds = 0 } end
        if a == 'rows' then return { rows = {}, columns = {}, affected = 0 } end
        if a ~= nil then return a end
        return true
      end
    end
    function f.stats() return { name = name, kind = kind, target = 'fake', up = true, requests = calls,
      ok = calls, retried = 0, failed = 0, in_flight = 0, queued = 0, reconnects = 0, errors = {} } end
    function f.name() return name end
    function f.close() end
    return f
  end
  mq.file = function(o) return fake('file', o, type(o) == 'table' and o.path or 'file',
    { 'write', 'write_sync', 'flush' }) end
  local http_fake = function(o) return fake('http', o, 'http', { 'request', 'get', 'post', 'send' }) end
  local default_http
  mq.http = setmetatable({
    request = function(r) default_http = default_http or http_fake(); return default_http:request(r) end,
    get = function(u, o) default_http = default_http or http_fake(); return default_http:get(u, o) end,
    post = function(u, b, o) default_http = default_http or http_fake(); return default_http:post(u, b, o) end,
  }, { __call = function(_, o) return http_fake(o) end })
  local null = mq.redis.null
  mq.redis = setmetatable({ null = null }, { __call = function(_, o)
    return fake('redis', o, 'redis', { 'command', 'send', 'xadd', 'publish', 'set', 'get', 'hset' })
  end })
  mq.pg = setmetatable({ null = mq.pg.null }, { __call = function(_, o)
    return fake('pg', o, 'pg', { 'query', 'insert', 'send_insert' })
  end })
end
