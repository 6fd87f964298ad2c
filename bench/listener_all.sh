#!/usr/bin/env bash
# listener_all.sh: the listener scenarios of bench/README.md, each a
# listener_compare.sh run (Mosquitto and mqrouter in the same run, with the
# ratio): QoS 0 and QoS 1, fan-in (4 publishers -> 1 subscriber) and
# fan-out (1 publisher -> 50 subscribers), 64-byte payloads, closed loop and
# fixed rate; the fan-in again with unbatched writes and reads; 1 000
# publishers at a fixed rate, alone and among 9 000 idle clients. Extra arguments go to every listener_compare.sh run (e.g.
# --runs 1 --duration 5). A benchmark: it never passes or fails on figures.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run() {
    echo "==== $*"
    "$here/listener_compare.sh" "$@" | sed -n '/^QoS /,$p'
}
run --publishers 4 --subscribers 1 --qos 0 --rate 40000 "$@"
run --publishers 4 --subscribers 1 --qos 1 --rate 20000 "$@"
run --publishers 1 --subscribers 50 --qos 0 --rate 2000 "$@"
run --publishers 1 --subscribers 50 --qos 1 --rate 1000 "$@"
# The fan-in again as ordinary clients load a broker: one write per PUBLISH
# (--batch 1) and a subscriber woken for every arrival (--rcvlowat 0).
run --publishers 4 --subscribers 1 --qos 0 --rate 40000 --batch 1 --rcvlowat 0 "$@"
run --publishers 4 --subscribers 1 --qos 1 --rate 20000 --batch 1 --rcvlowat 0 "$@"
# Many connections: 1 000 publishers at 40 msg/s each, one wildcard
# subscriber, ordinary writes and reads, fixed rate only.
run --publishers 1000 --subscribers 1 --qos 0 --rate 40000 --batch 1 --rcvlowat 0 --modes rate "$@"
# The same with 10 000 clients connected: 9 000 more, idle.
run --publishers 1000 --subscribers 1 --qos 0 --rate 40000 --batch 1 --rcvlowat 0 --modes rate \
    --idle 9000 "$@"
