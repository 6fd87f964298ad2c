-- lua/host/upstream.lua: the Lua half of the upstream broker sessions
-- (bindings/l_upstream*.c), compiled into the binary at build time
-- (cmake/embed_lua.cmake) and run once in every rules state, outside the
-- sandbox, as the chunk "=upstream".
--
-- It receives the rules table (mq), the methods table of upstream session
-- handles and the C helpers (C); it adds mq.wait_ready, mq.on,
-- mq.handle, mq.publish_to, mq.session_messages, the wrappers of
-- mq.upstream / mq.session, and the session methods publish_sync,
-- publish_json, publish_batch, subscribe_sync, unsubscribe_sync, ping and
-- messages; it returns the dispatcher C calls with every event.
--
-- Must not: block (a coroutine waits by yielding, and is resumed only from
-- a loop callback: an event, a message, a timer), set globals, or keep
-- anything C would need to free (what it adds is plain functions).
local mq, methods, C = ...
local traceback, yield = C.traceback, coroutine.yield
local EVENTS = { session_added = true, session_connecting = true, session_connected = true,
  session_ready = true, session_disconnected = true, session_reconnecting = true,
  session_removed = true, session_state_changed = true, session_failed = true,
  device_online = true, device_offline = true, sink_up = true, sink_down = true }
local handlers, ready_waits, pubs = {}, {}, {}
-- every waiting coroutine is resumed through async.lua's step, which tells
-- an async route or consumer when its handler ended
local resume = C.resume
local function current(what)
  local co, main = coroutine.running()
  if not co or main then
    error(what .. ' must be called from a coroutine (start one with mq.spawn)', 3)
  end
  return co
end
local function is_ready(name)
  if name then local st = C.status(name); return st ~= nil and st.ready end
  local names = C.names()
  if #names == 0 then return false end
  for _, n in ipairs(names) do
    local st = C.status(n)
    if st and not st.ready then return false end
  end
  return true
end
local function no_session(name) return "ENOENT: no session '" .. name .. "'" end
function mq.wait_ready(name, timeout)
  if name ~= nil and type(name) ~= 'string' then
    error('mq.wait_ready: bad argument #1 (session name or nil expected, got ' .. type(name) .. ')', 2)
  end
  if timeout ~= nil and type(timeout) ~= 'number' then
    error('mq.wait_ready: bad argument #2 (seconds expected, got ' .. type(timeout) .. ')', 2)
  end
  local co = current('mq.wait_ready')
  if name and not C.status(name) then return nil, no_session(name), 'ENOENT' end
  if is_ready(name) then return true end
  local w = { co = co, name = name }
  ready_waits[w] = true
  if timeout then
    w.timer = mq.after(timeout, function()
      if not ready_waits[w] then return end
      ready_waits[w] = nil
      resume(co, nil, string.format('ETIMEDOUT: %s not ready after %g s',
        name and ("session '" .. name .. "'") or 'sessions', timeout), 'ETIMEDOUT')
    end)
  end
  return yield()
end
function mq.on(event, fn)
  if not EVENTS[event] then
    local names = {}
    for k in pairs(EVENTS) do names[#names + 1] = k end
    table.sort(names)
    error("mq.on: unknown event '" .. tostring(event) .. "' (it knows " .. table.concat(names, ', ') .. ')', 2)
  end
  if type(fn) ~= 'function' then
    error('mq.on: bad argument #2 (function expected, got ' .. type(fn) .. ')', 2)
  end
  local list = handlers[event] or {}
  handlers[event] = list
  local entry = { fn = fn }
  list[#list + 1] = entry
  return { stop = function()
    for i, e in ipairs(list) do if e == entry then table.remove(list, i) break end end
  end }
end
local function dispatch(ev)
  if ev.type == '_publish_done' then
    local co = pubs[ev.id]
    if not co then return end
    pubs[ev.id] = nil
    if ev.ok then resume(co, true, nil, ev.reason) else resume(co, nil, ev.err, ev.reason) end
    return
  end
  local list = handlers[ev.type]
  if list then
    local copy = { unpack(list) }
    for _, e in ipairs(copy) do
      local ok, err = xpcall(function() return e.fn(ev) end, traceback)
      if not ok then mq.log.error(ev.type .. ' handler failed: ' .. tostring(err)) end
    end
  end
  local done = {}
  for w in pairs(ready_waits) do
    if is_ready(w.name) or (w.name and not C.status(w.name)) then done[#done + 1] = w end
  end
  for _, w in ipairs(done) do
    ready_waits[w] = nil
    if w.timer then w.timer:stop() end
    if is_ready(w.name) then resume(w.co, true)
    else resume(w.co, nil, no_session(w.name), 'ENOENT') end -- removed meanwhile
  end
end
local function wait_answer(co, id, timeout, what)
  pubs[id] = co
  local t = mq.after(timeout, function()
    if not pubs[id] then return end
    pubs[id] = nil
    resume(co, nil, string.format('ETIMEDOUT: no answer to the %s after %g s', what, timeout),
      'ETIMEDOUT')
  end)
  local a, b, c = yield()
  t:stop()
  return a, b, c
end
function methods.publish_sync(self, topic, payload, opts)
  local co = current('session:publish_sync')
  local id, err, name = C.publish_async(self, topic, payload, opts)
  if not id then return nil, err, name end
  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5, 'publish on ' .. topic)
  if ok then return true end
  return nil, e, reason
end
function methods.subscribe_sync(self, filter, opts)
  if opts ~= nil then C.check_options(opts, 'session:subscribe_sync', { 'qos', 'timeout' }) end
  local co = current('session:subscribe_sync')
  local id, err, name = C.subscribe_async(self, filter, opts and opts.qos or 0)
  if not id then return nil, err, name end
  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5,
    'subscription to ' .. filter)
  if ok then return reason end
  return nil, e, reason
end
function methods.unsubscribe_sync(self, filter, opts)
  if opts ~= nil then C.check_options(opts, 'session:unsubscribe_sync', { 'timeout' }) end
  local co = current('session:unsubscribe_sync')
  local id, err, name = C.unsubscribe_async(self, filter)
  if not id then return nil, err, name end
  local ok, e, reason = wait_answer(co, id, opts and opts.timeout or 5,
    'unsubscribe from ' .. filter)
  if ok then return true, reason end
  return nil, e, reason
end
function methods.ping(self, timeout)
  local co = current('session:ping')
  local t0 = mq.now()
  local id, err, name = C.ping_async(self)
  if not id then return nil, err, name end
  local ok, e, reason = wait_answer(co, id, timeout or 5, 'ping')
  if ok then return mq.now() - t0 end
  return nil, e, reason
end
function mq.publish_to(sessions, topic, payload, opts)
  if type(sessions) ~= 'table' then
    error('mq.publish_to: bad argument #1 (list of sessions expected, got ' .. type(sessions) .. ')', 2)
  end
  local published, failed, failures = 0, 0, {}
  for i, s in ipairs(sessions) do
    local ok, err, name = s:publish(topic, payload, opts)
    if ok then published = published + 1
    else
      failed = failed + 1
      failures[#failures + 1] = { index = i, session = s:name(), err = err, name = name }
    end
  end
  return published, failed, failures
end
local json
function methods.publish_json(self, topic, value, opts)
  json = json or require('cjson')
  local ok, text = pcall(json.encode, value)
  if not ok then return nil, 'EPAYLOAD: ' .. tostring(text), 'EPAYLOAD' end
  return self:publish(topic, text, opts)
end
local BATCH_ITEM = { topic = true, payload = true, qos = true, retain = true,
  properties = true }
function methods.publish_batch(self, list, opts)
  if type(list) ~= 'table' then
    error('session:publish_batch: bad argument #1 (table expected, got ' .. type(list) .. ')', 2)
  end
  local published, failed, failures = 0, 0, {}
  for i, m in ipairs(list) do
    if type(m) ~= 'table' then
      error('session:publish_batch: item ' .. i .. ' must be a table, not a ' .. type(m), 2)
    end
    for k in pairs(m) do
      if type(k) == 'string' and not BATCH_ITEM[k] then
        error('session:publish_batch: item ' .. i .. ": unknown option '" .. k ..
          "' (it takes topic, payload, qos, retain, properties)", 2)
      end
    end
    local topic, payload = m.topic or m[1], m.payload or m[2] or ''
    local o = (m.qos or m.retain or m.properties)
      and { qos = m.qos, retain = m.retain, properties = m.properties } or opts
    local ok, res, err = pcall(self.publish, self, topic, payload, o)
    if ok and res then published = published + 1
    else
      failed = failed + 1
      failures[#failures + 1] = { index = i, topic = topic, err = ok and err or tostring(res) }
    end
  end
  return published, failed, failures
end
-- The messages that arrive while no coroutine waits wait in a C buffer
-- (l_iter.c), so a reload can hand them to the new rules; wake is how
-- that buffer hands them to a coroutine waiting in the new ones.
-- The iterators' options less max: those of the routes they make.
local function route_opts(opts, fname)
  if opts == nil then return nil end
  C.check_options(opts, fname, { 'max', 'qos', 'dead_letter', 'no_local',
    'retain_as_published', 'retain_handling' })
  local r = {}
  for k, v in pairs(opts) do if k ~= 'max' then r[k] = v end end
  return r
end
local function message_iterator(fname, make_route, source, filter, opts)
  local max = opts and opts.max or 1000
  if type(max) ~= 'number' or max < 1 then
    error(fname .. ': option max must be a number >= 1, not ' .. tostring(max), 3)
  end
  local waiting, stopped, buf = nil, false, nil
  local function hand(...) local co = waiting; waiting = nil; resume(co, ...) end
  buf = C.iter_new(source, filter, max, function()
    if waiting and not stopped then local m = buf:pop(); if m then hand(m) end end
  end)
  local it = {}
  it.route = make_route(function(msg)
    if stopped then return end
    if waiting then hand(msg) else buf:push(msg) end
  end)
  function it.next(timeout)
    local m = buf:pop()
    if m or stopped then return m end
    local co = current('the message iterator')
    waiting = co
    local t
    if type(timeout) == 'number' then
      t = mq.after(timeout, function()
        if waiting == co then hand(nil, 'ETIMEDOUT: no message', 'ETIMEDOUT') end
      end)
    end
    local m2, err, name = yield()
    if t then t:stop() end
    return m2, err, name
  end
  -- Ends the subscription and the for loop: a coroutine waiting gets nil
  -- now, next() returns nil from now on; what waited is counted dropped.
  function it.stop()
    if stopped then return end
    stopped = true
    it.route:stop()
    buf:stop()
    if waiting then hand(nil) end
  end
  return setmetatable(it, { __call = function(self) return self.next() end,
    __index = function(_, k) if k == 'dropped' then return buf:dropped() end end })
end
function methods.messages(self, filter, opts)
  if type(filter) ~= 'string' then
    error('session:messages: bad argument #1 (filter expected, got ' .. type(filter) .. ')', 2)
  end
  local ropts = route_opts(opts, 'session:messages')
  return message_iterator('session:messages',
    function(fn) return self:route(filter, fn, ropts) end, self:name(), filter, opts)
end
local declared, handles = {}, {}
-- mq.upstream{...} and its older name mq.session{...} (the C functions,
-- which name themselves in their errors) also route every mq.handle filter
-- on the new session. Errors are raised at the script's line: level 3 is
-- the caller of mq.upstream / mq.session (never a tail call below).
local function declare(raw, cfg)
  local ok, s = pcall(raw, cfg)
  if not ok then error((tostring(s):gsub('^upstream:%d+: ', '')), 3) end
  declared[#declared + 1] = s
  for _, h in ipairs(handles) do
    if not h.stopped then h.routes[#h.routes + 1] = s:route(h.filter, h.fn, h.opts) end
  end
  return s
end
local raw_upstream, raw_session = mq.upstream, mq.session
function mq.upstream(cfg)
  local s = declare(raw_upstream, cfg)
  return s
end
function mq.session(cfg)
  local s = declare(raw_session, cfg)
  return s
end
local handle_mt = { __index = {
  stop = function(h)
    if h.stopped then return end
    h.stopped = true
    for _, r in ipairs(h.routes) do r:stop() end
  end } }
function mq.handle(filter, fn, opts)
  if type(filter) ~= 'string' then
    error('mq.handle: bad argument #1 (filter expected, got ' .. type(filter) .. ')', 2)
  end
  if type(fn) ~= 'function' then
    error('mq.handle: bad argument #2 (function expected, got ' .. type(fn) .. ')', 2)
  end
  if opts ~= nil then
    C.check_options(opts, 'mq.handle', { 'qos', 'dead_letter', 'no_local',
      'retain_as_published', 'retain_handling', 'async', 'concurrency', 'max_pending' })
  end
  local h = setmetatable({ filter = filter, fn = fn, opts = opts, routes = {} }, handle_mt)
  for _, s in ipairs(declared) do h.routes[#h.routes + 1] = s:route(filter, fn, opts) end
  handles[#handles + 1] = h
  return h
end
function mq.session_messages(filter, opts)
  if type(filter) ~= 'string' then
    error('mq.session_messages: bad argument #1 (filter expected, got ' .. type(filter) .. ')', 2)
  end
  local ropts = route_opts(opts, 'mq.session_messages')
  return message_iterator('mq.session_messages',
    function(fn) return mq.handle(filter, fn, ropts) end,
    nil, filter, opts)
end
return dispatch
