#!/usr/bin/env bash
# bench.sh: build the release binaries, then run hookrelay-bench (see docs/benchmarks.md).
#
# Usage: scripts/bench.sh WHAT [extra hookrelay-bench arguments...]
#   quick            full run with 2,000 events (seconds)
#   full             full run: limit phase, then 20,000 events, 20 merchants x 5 endpoints, 64 senders
#   open RATE SECS   open loop at RATE events/s for SECS seconds
#   backlog N        N deliveries queued while the endpoints are down, then drained
#   floor            full run and open 2500/s 15 s against hookrelay-floor, the gateway's HTTP
#                    work with no store (what the store costs = gateway - floor, same hour)
#   all              full, open 1000/s 30 s, open 2500/s 15 s, backlog $BACKLOG (default 1000000),
#                    then the plot docs/bench.png (needs python3 with matplotlib)
# Environment: OUT=target/bench (JSON results and logs), BACKLOG=1000000, NO_BUILD=1 (skip the
# build), QUIET_WAIT=SECS (wait up to that long before each run for the machine to be idle).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/bench}
BACKLOG=${BACKLOG:-1000000}
mkdir -p "$OUT"
if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --bins
fi
bench=target/release/hookrelay-bench

# Busy share of all CPUs over 2 s, in percent, from /proc/stat.
busy_percent() {
    local a b
    read -ra a < <(head -1 /proc/stat)
    sleep 2
    read -ra b < <(head -1 /proc/stat)
    local total=0 idle=$(( (b[4] + b[5]) - (a[4] + a[5]) ))
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

# The machine may be shared: with QUIET_WAIT=SECS, wait up to that long for it to be
# less than 15% busy before a run.
wait_quiet() {
    local deadline=$((SECONDS + ${QUIET_WAIT:-0})) busy
    while (( SECONDS < deadline )); do
        busy=$(busy_percent)
        (( busy < 15 )) && return
        echo "machine ${busy}% busy; waiting (QUIET_WAIT)" >&2
    done
}

run() {
    local name=$1
    shift
    wait_quiet
    echo "=== $name: $(uptime), busy $(busy_percent)% just before" | tee -a "$OUT/uptime.log"
    "$bench" --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.txt"
}

what=${1:-quick}
shift || true
case $what in
    quick) run quick --events 2000 "$@" ;;
    full) run full "$@" ;;
    open)
        rate=${1:?open needs RATE SECS}
        secs=${2:?open needs RATE SECS}
        shift 2
        run "open-$rate" --mode open --rate "$rate" --duration "$secs" "$@"
        ;;
    backlog)
        n=${1:?backlog needs N}
        shift
        run "backlog-$n" --mode backlog --deliveries "$n" "$@"
        ;;
    floor)
        run floor-full --floor "$@"
        run floor-open-2500 --floor --mode open --rate 2500 --duration 15 "$@"
        ;;
    all)
        run full "$@"
        run open-1000 --mode open --rate 1000 --duration 30 "$@"
        run open-2500 --mode open --rate 2500 --duration 15 "$@"
        run "backlog-$BACKLOG" --mode backlog --deliveries "$BACKLOG" "$@"
        python3 scripts/plot_bench.py -o docs/bench.png "$OUT/full.json" "$OUT/open-1000.json" \
            "$OUT/open-2500.json" "$OUT/backlog-$BACKLOG.json"
        ;;
    *)
        sed -n '2,16p' "$0"
        exit 2
        ;;
esac
