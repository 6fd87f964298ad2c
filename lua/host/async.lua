-- lua/host/async.lua: handlers that wait. Compiled into the binary
-- (bindings/embed_lua.cmake) and run once in every rules state, outside the
-- sandbox, as the chunk "=async", before upstream.lua.
--
-- A handler that waits (an async route's or queue consumer's, mq.spawn's
-- function) runs in a coroutine. When it calls something that answers later
-- (a sink, up:publish_sync...), it yields; the answer resumes it from a loop
-- callback through step(). When the coroutine ends, what started it learns
-- the outcome from its `job`: a C job (an async route's message, settled by
-- C.finished) or a Lua function (an async consumer's settle).
--
-- Receives the rules table (mq) and the C helpers (C.finished, C.traceback,
-- C.log_error); adds mq.spawn and mq.async_consumer; returns run, step,
-- wrap_consumer for C. Must not: block, set globals, or keep a coroutine
-- after it ended.
local mq, C = ...
local create, cresume, status, yield = coroutine.create, coroutine.resume, coroutine.status,
  coroutine.yield
local traceback, finished = C.traceback, C.finished
local type, error, tostring, ipairs = type, error, tostring, ipairs

-- the coroutines waiting, and the job each one's end is told to
local jobs = {}

local function ended(co, job, ok, ...)
  if not job then
    if not ok then mq.log.error('coroutine failed: ' .. traceback(co, tostring((...)))) end
  elseif type(job) == 'function' then
    if ok then job(true, ...) else job(false, traceback(co, tostring((...)))) end
  else
    if ok then finished(job, true) else finished(job, false, traceback(co, tostring((...)))) end
  end
end

-- Coroutines are reused: a worker runs handler after handler, yielding
-- DONE and the results between two; a handler that waits yields anything
-- else (C waiters yield nothing). A coroutine per message made the GC the
-- largest cost of an async route. An error ends the worker for good.
local DONE = {}
local idle, nidle, MAX_IDLE = {}, 0, 256
local function worker(fn, arg)
  while true do
    fn, arg = yield(DONE, fn(arg))
  end
end
local function take()
  if nidle == 0 then return create(worker) end
  local co = idle[nidle]
  idle[nidle] = nil
  nidle = nidle - 1
  return co
end
local function give_back(co)
  if nidle < MAX_IDLE then
    nidle = nidle + 1
    idle[nidle] = co
  end
end

-- After a resume: a worker that finished its handler (DONE) goes back to
-- the pool; a dead coroutine (an error, or a spawned one that returned)
-- has ended; anything else still waits.
local function stepped(co, job, ok, first, ...)
  if ok and first == DONE then
    jobs[co] = nil
    give_back(co)
    ended(co, job, true, ...)
  elseif status(co) == 'dead' then
    jobs[co] = nil
    if ok then ended(co, job, true, first, ...) else ended(co, job, false, first) end
  end
end

-- step(co, ...): resumes a waiting coroutine with the answer it waited for.
local function step(co, ...)
  return stepped(co, jobs[co], cresume(co, ...))
end

local function started(co, job, ok, first, ...)
  if ok and first == DONE then
    give_back(co)
    return false, ...
  end
  if not ok then error(traceback(co, tostring(first)), 0) end
  jobs[co] = job or false -- false: nobody to tell (a waiting coroutine's end is still seen)
  return true
end

-- run(fn, job, arg) -> waiting: calls fn(arg) in a coroutine. When it ends
-- without waiting, its error is raised here (the caller's protected call
-- counts it) and run returns false, then fn's results; when it waits, run
-- returns true and job learns the end later.
local function run(fn, job, arg)
  local co = take()
  return started(co, job, cresume(co, fn, arg))
end

function mq.spawn(fn, ...)
  if type(fn) ~= 'function' then
    error('mq.spawn: bad argument #1 (function expected, got ' .. type(fn) .. ')', 2)
  end
  local co = create(fn)
  local res = { cresume(co, ...) }
  if status(co) == 'dead' and not res[1] then
    mq.log.error('coroutine failed: ' .. traceback(co, tostring(res[2])))
  end
  return co
end

-- A queue consumer's handler that may wait: the message stays in flight
-- (deferred) until the coroutine ends; then a normal end acks it, false or
-- an error nacks it, unless the handler settled it itself. With batch, the
-- handler gets a list and its end settles every message of it.
local function wrap_consumer(fn, name, batch)
  local function settle_all(list, ok, res)
    for _, msg in ipairs(list) do
      if not ok or res == false then msg:nack() else msg:ack() end
    end
  end
  return function(arg)
    local waiting, r = run(fn, function(ok, res)
      if not ok then mq.log.error(name .. ' failed: ' .. tostring(res)) end
      settle_all(batch and arg or { arg }, ok, res)
    end, arg)
    if waiting then
      if batch then
        for _, msg in ipairs(arg) do msg:defer() end
      else
        arg:defer()
      end
      return
    end
    return r
  end
end

return run, step, wrap_consumer
