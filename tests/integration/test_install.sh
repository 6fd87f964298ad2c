#!/usr/bin/env bash
# Installing mqrouter to a prefix and embedding it from there: `cmake
# --install` into a temporary prefix; only public headers land there; the
# embedding example is built against the installed copy three ways (the
# compiler with `pkg-config --cflags --libs mqrouter`, the example's own
# CMake project with find_package(mqrouter) on the shared library, a tiny
# CMake project on mqrouter::mqrouter_static), and each build runs and
# reports the counts of its timeline.
source "$(dirname "$0")/lib.sh"

: "${MQROUTER_BUILD:?MQROUTER_BUILD must point at the build tree}"
prefix="$WORK/prefix"
# a sanitizer build installs sanitized libraries: build the hosts alike
san=""
[[ "${MQR_SANITIZE:-}" == 1 ]] && san="-fsanitize=address,undefined -fno-omit-frame-pointer"
cmake --install "$MQROUTER_BUILD" --prefix "$prefix" >"$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log"; fail "cmake --install failed"; }
note "installed to a temporary prefix"

pc=$(find "$prefix" -name mqrouter.pc | head -1)
[[ -n "$pc" ]] || fail "no mqrouter.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in include/mqrouter.h include/mqrouter_auth.h include/mqrouter_sinks.h include/mqrouter_lua.h bin/mqrouter; do
  [[ -f "$prefix/$f" ]] || fail "$f not installed"
done
[[ -e "$libdir/libmqrouter.so" && -f "$libdir/libmqrouter.a" ]] || fail "libraries not installed"
[[ -f "$libdir/cmake/mqrouter/mqrouterConfig.cmake" &&
   -f "$libdir/cmake/mqrouter/mqrouterConfigVersion.cmake" ]] || fail "no CMake package config"
if find "$prefix/include" -name '*.h' | grep -vE '/mqrouter(_auth|_sinks|_lua)?\.h$'; then
  fail "internal headers installed"
fi
if [[ -d "$MQROUTER_SRC/lua/stdlib" ]]; then
  (cd "$MQROUTER_SRC/lua/stdlib" && find . -name '*.lua') | while read -r f; do
    [[ -f "$prefix/share/mqrouter/lua/$f" ]] || fail "stdlib file $f not installed"
  done
fi
note "headers (public only), libraries, CLI, pkg-config and CMake files in place"

# each public header stands alone, in strict C99 and (when g++ is there) C++
lua_cflags=$(pkg-config --cflags luajit)
for h in mqrouter.h mqrouter_auth.h mqrouter_lua.h; do
  echo "#include <$h>" | cc -std=c99 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
    -I "$prefix/include" $lua_cflags -x c - || fail "$h does not compile alone as C99"
  if command -v g++ >/dev/null; then
    echo "#include <$h>" | g++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only \
      -I "$prefix/include" $lua_cflags -x c++ - || fail "$h does not compile alone as C++"
  fi
done
note "each public header compiles alone (C99, C++11)"

# where scripts' require finds the stdlib: $MQROUTER_LUA_DIR first, else the
# installed location compiled in, else (never installed there) the source tree
mkdir -p "$WORK/scripts" "$prefix/share/mqrouter/lua/mqrouter"
printf 'return { answer = 42 }\n' >"$prefix/share/mqrouter/lua/mqrouter/embedtest.lua"
printf 'local t = require "mqrouter.embedtest"\nassert(t.answer == 42)\n' >"$WORK/scripts/req.lua"
MQROUTER_LUA_DIR="$prefix/share/mqrouter/lua" "$prefix/bin/mqrouter" --check "$WORK/scripts/req.lua" \
  >"$WORK/req.out" 2>&1 || { cat "$WORK/req.out"; fail "stdlib module not found through MQROUTER_LUA_DIR"; }
if env -u MQROUTER_LUA_DIR "$prefix/bin/mqrouter" --check "$WORK/scripts/req.lua" >"$WORK/req.out" 2>&1; then
  fail "found the module without MQROUTER_LUA_DIR (the configured prefix is not $prefix)"
fi
grep -qE "not found in $WORK/scripts or (.*/share/mqrouter/lua|$MQROUTER_SRC/lua/stdlib)\b" "$WORK/req.out" \
  || { cat "$WORK/req.out"; fail "require did not look in the compiled-in stdlib directory"; }
note "require: MQROUTER_LUA_DIR first, then the compiled-in directory ($(grep -m1 -o 'or [^ ]*' "$WORK/req.out"))"

# the installed header's version macros match what the library says
hdr_version=$(sed -n 's/^#define MQR_VERSION_STRING "\(.*\)"$/\1/p' "$prefix/include/mqrouter.h")
[[ "$("$prefix/bin/mqrouter" --version)" == "mqrouter $hdr_version" ]] \
  || fail "installed CLI says $("$prefix/bin/mqrouter" --version), header $hdr_version"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[[ "$(pkg-config --modversion mqrouter)" == "$hdr_version" ]] || fail "pkg-config version"
note "version $hdr_version: header, CLI and pkg-config agree"

# the example's run must show the counts its timeline makes
check_run() { # check_run NAME BINARY
  local out="$WORK/$1.out"
  env -u MQROUTER_LUA_DIR "$2" >"$out" 2>&1 || { cat "$out"; fail "$1: the example failed"; }
  grep -q "embed: mqrouter $hdr_version (built against $hdr_version)" "$out" \
    || { cat "$out"; fail "$1: version line"; }
  grep -q "host ticks 20, host_limit calls 20, alerts seen by C 9, jobs done 9, job values sum 315, queue acked 9 depth 0" "$out" \
    || { cat "$out"; fail "$1: wrong counts"; }
  grep -qx "embed: uv_loop_close ok" "$out" || { cat "$out"; fail "$1: loop not closed"; }
  grep -qx "embed: ok" "$out" || { cat "$out"; fail "$1: not ok"; }
}

# 1. a plain compiler and pkg-config, against the installed shared library
cc -std=gnu11 -Wall -Wextra -Werror $san -o "$WORK/embed_pc" "$MQROUTER_SRC/scripts/examples/embed/embed.c" \
  $(pkg-config --cflags --libs mqrouter libuv) -Wl,-rpath,"$libdir" \
  || fail "building with pkg-config failed"
ldd "$WORK/embed_pc" >"$WORK/ldd.out" # (not piped into grep -q: SIGPIPE under pipefail)
grep -q "$libdir/libmqrouter.so" "$WORK/ldd.out" || fail "embed_pc does not use the installed library"
check_run pkg-config "$WORK/embed_pc"
note "built with pkg-config --cflags --libs mqrouter, ran, counts right"

# 2. the example's own CMake project: find_package(mqrouter), shared library
cmake -S "$MQROUTER_SRC/scripts/examples/embed" -B "$WORK/cm-shared" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" \
  >"$WORK/cm-shared.log" 2>&1 && cmake --build "$WORK/cm-shared" >>"$WORK/cm-shared.log" 2>&1 \
  || { cat "$WORK/cm-shared.log"; fail "building with find_package(mqrouter) failed"; }
ldd "$WORK/cm-shared/embed" >"$WORK/ldd.out"
grep -q "$libdir/libmqrouter.so" "$WORK/ldd.out" || fail "cmake build does not use the installed library"
check_run cmake-shared "$WORK/cm-shared/embed"
note "built with find_package(mqrouter) -> mqrouter::mqrouter, ran, counts right"

# 3. a tiny CMake project on the static library
mkdir -p "$WORK/tiny"
cat >"$WORK/tiny/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(tiny LANGUAGES C)
find_package(mqrouter $hdr_version EXACT REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
add_executable(tiny "$MQROUTER_SRC/scripts/examples/embed/embed.c")
target_link_libraries(tiny PRIVATE mqrouter::mqrouter_static PkgConfig::LIBUV)
CMAKE
cmake -S "$WORK/tiny" -B "$WORK/tiny/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >"$WORK/tiny.log" 2>&1 \
  && cmake --build "$WORK/tiny/build" >>"$WORK/tiny.log" 2>&1 \
  || { cat "$WORK/tiny.log"; fail "building on mqrouter::mqrouter_static failed"; }
ldd "$WORK/tiny/build/tiny" >"$WORK/ldd.out"
if grep -q libmqrouter "$WORK/ldd.out"; then fail "static build links libmqrouter.so"; fi
check_run cmake-static "$WORK/tiny/build/tiny"
note "built on mqrouter::mqrouter_static, ran, counts right"

# a version the package does not satisfy is refused
mkdir -p "$WORK/toonew"
printf 'cmake_minimum_required(VERSION 3.18)\nproject(n LANGUAGES C)\nfind_package(mqrouter 99 REQUIRED)\n' \
  >"$WORK/toonew/CMakeLists.txt"
if cmake -S "$WORK/toonew" -B "$WORK/toonew/b" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
  fail "find_package(mqrouter 99) succeeded"
fi
note "find_package(mqrouter 99) refused"

# the public API test, built from the installed headers alone (no source
# tree include path but the test's own helpers), passes there too
cc -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter $san -I "$MQROUTER_SRC/tests/c" \
  -o "$WORK/test_public_api" "$MQROUTER_SRC/tests/c/test_public_api.c" \
  $(pkg-config --cflags --libs mqrouter libuv cmocka) -Wl,-rpath,"$libdir" \
  || fail "test_public_api does not build against the installed headers"
env -u MQROUTER_LUA_DIR "$WORK/test_public_api" >"$WORK/api.out" 2>&1 \
  || { cat "$WORK/api.out"; fail "test_public_api failed against the installed library"; }
ntests=$(grep -c 'cmocka_unit_test(' "$MQROUTER_SRC/tests/c/test_public_api.c")
grep -q "PASSED  \] $ntests test(s)" "$WORK/api.out" || { cat "$WORK/api.out"; fail "not every API test ran"; }
note "test_public_api built from the installed headers and passed"

# the testing kit from the installed copy: the host module and the stdlib,
# found through LUA_CPATH / LUA_PATH as docs/stdlib.md says, test a rule
cat >"$WORK/kit.lua" <<'LUA'
local t = require "mqrouter.testing"
local h = t.load_string([[
local mq = require "mqrouter"
mq.route("in/#", function(msg) mq.publish("out/" .. msg.topic, msg.payload) end)
]])
assert(h:publish("in/a", "42"))
local got = h:published("out/#")
assert(#got == 1 and got[1].topic == "out/in/a" and got[1].payload == "42", "rule output")
h:close()
print("kit ok")
LUA
preload=""
[[ "${MQR_SANITIZE:-}" == 1 ]] && preload="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
modpath=$(find "$prefix" -path '*/lua/5.1/mqrouter.so' | head -1)
[[ -n "$modpath" ]] || fail "the busted host module (lib/lua/5.1/mqrouter.so) is not installed"
LD_PRELOAD="$preload" LUA_CPATH="$(dirname "$modpath")/?.so;;" \
  LUA_PATH="$prefix/share/mqrouter/lua/?.lua;;" MQROUTER_LUA_DIR="$prefix/share/mqrouter/lua" \
  luajit "$WORK/kit.lua" >"$WORK/kit.out" 2>&1 || { cat "$WORK/kit.out"; fail "the testing kit from the install"; }
grep -q "kit ok" "$WORK/kit.out" || { cat "$WORK/kit.out"; fail "the testing kit did not run"; }
note "mqrouter.testing ran from the installed module and stdlib"
