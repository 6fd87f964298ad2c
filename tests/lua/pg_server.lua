-- pg_server.lua — a throw-away PostgreSQL 15 cluster on a free loopback
-- port for the specs (the shell twin of tests/c/pg_harness.h): initdb with
-- trust auth and no fsync in a temp dir, the server as `nobody` when the
-- specs run as root (postgres refuses root), stopped and removed by stop().
local h = require "helpers"
local mosq = require "mosquitto"

local M = {}
local BIN = "/usr/lib/postgresql/15/bin"

function M.start()
  assert(mosq.sh("test -x " .. BIN .. "/initdb -a -x " .. BIN .. "/pg_ctl"),
    "PostgreSQL 15 is not installed (deps/debian-packages.txt: postgresql-15)")
  local dir = h.tmpdir()
  local port = mosq.free_port()
  local as = mosq.sh("test $(id -u) = 0") and "runuser -u nobody -- " or ""
  if as ~= "" then assert(mosq.sh("chown nobody " .. dir)) end
  assert(mosq.sh(("%s%s/initdb -D %s/data -N -U mqr --auth=trust >%s/initdb.log 2>&1")
    :format(as, BIN, dir, dir)), "initdb failed")
  assert(mosq.sh(("%s%s/pg_ctl -D %s/data -l %s/pg.log -w -t 20 -o \"-p %d -k %s "
    .. "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    .. "-c full_page_writes=off\" start >/dev/null"):format(as, BIN, dir, dir, port, dir)),
    "postgres did not start")
  mosq.reap_with_us(("%s%s/pg_ctl -D %s/data -m immediate stop; rm -rf '%s'"):format(as, BIN, dir, dir))
  local s = { port = port, dir = dir,
    conninfo = ("host=127.0.0.1 port=%d dbname=postgres user=mqr"):format(port) }
  function s.psql(sql)
    local p = io.popen(("env -u LD_PRELOAD psql -X -A -t -h 127.0.0.1 -p %d -U mqr -d postgres -c %q 2>&1")
      :format(port, sql))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
  end
  function s.stop()
    mosq.sh(("%s%s/pg_ctl -D %s/data -m immediate stop >/dev/null 2>&1"):format(as, BIN, dir))
    mosq.sh("rm -rf '" .. dir .. "'")
  end
  return s
end

return M
