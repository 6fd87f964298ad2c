#!/usr/bin/env bash
# private_headers.sh — a core/ folder's private headers are its own.
#
# Each folder under core/ is a module; its headers are its interface,
# except the private ones (*_int.h, queue_impl.h), which only the files of
# that folder may include (docs/architecture.md). The engine's struct lives
# in core/engine/engine_int.h for the same reason. Fails naming every
# include that crosses a module's wall.
set -euo pipefail
src=${MQROUTER_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src"

bad=0
while IFS= read -r header; do
  name=$(basename "$header")
  home=$(dirname "$header")
  # every file that includes it, by any path, outside its folder
  while IFS=: read -r file line _; do
    [[ $(dirname "$file") == "$home" ]] && continue
    echo "private_headers: $file:$line includes $name, private to $home/"
    bad=1
  done < <(grep -rnE "#include \"([a-z_]+/)?$name\"" core bindings tests bench cli ||
    [[ $? == 1 ]]) # 1: none found; 2, an error, fails

done < <(find core -name '*_int.h' -o -name 'queue_impl.h' | sort)

if ((bad)); then
  exit 1
fi
n=$(find core -name '*_int.h' -o -name 'queue_impl.h' | wc -l)
echo "private_headers: $n private headers, none included from outside its folder"
