#!/usr/bin/env bash
# heap-profile.sh: where the gateway's memory is while a backlog is queued.
#
# Usage: scripts/heap-profile.sh [DELIVERIES]   (default 1000000)
#
# Builds the binaries with jemalloc's heap profiler (`--features heap-profiling`, in a
# target directory of its own so the ordinary build is not disturbed), runs
# `hookrelay-bench --mode backlog` with the profiler sampling every 256 KiB allocated on
# average and dumping a profile each GiB allocated, takes the last dump written before
# every delivery was queued, and prints its live heap grouped by owner
# (scripts/heap_profile.py). Outputs in $OUT (default target/heap-profile): the bench's
# JSON and log, the dumps, and the chosen one as collapsed stacks (`heap.collapsed`, one
# line per stack: frames outermost first, then bytes) for a flame graph.
# Needs perl and addr2line (jeprof, built with jemalloc, symbolises the dumps).
set -euo pipefail
cd "$(dirname "$0")/.."

DELIVERIES=${1:-1000000}
OUT=${OUT:-target/heap-profile}
BUILD="$OUT/build"
mkdir -p "$OUT"
CARGO_TARGET_DIR="$BUILD" cargo build --release --bins --features heap-profiling
bin="$BUILD/release"
jeprof=$(find "$BUILD/release/build" -path '*tikv-jemalloc-sys-*/out/build/bin/jeprof' | head -1)
[[ -n $jeprof ]] || { echo "heap-profile.sh: jeprof not found under $BUILD" >&2; exit 1; }

rm -rf "$OUT/dumps" && mkdir -p "$OUT/dumps"
dumps=$(cd "$OUT/dumps" && pwd)
export _RJEM_MALLOC_CONF="prof:true,lg_prof_sample:18,lg_prof_interval:30,prof_prefix:$dumps/hr"
"$bin/hookrelay-bench" --mode backlog --deliveries "$DELIVERIES" --skip-limit \
    --json "$OUT/backlog.json" 2> "$OUT/bench.log" &
bench=$!
# The bench logs "queued N deliveries" the moment the last event was answered, just
# before the sink comes up: note the time, to pick the dump written closest before it.
queued_at=""
while kill -0 "$bench" 2> /dev/null; do
    if [[ -z $queued_at ]] && grep -q "queued .* deliveries in" "$OUT/bench.log"; then
        queued_at=$(date +%s.%N)
    fi
    sleep 0.1
done
wait "$bench"
unset _RJEM_MALLOC_CONF
[[ -n $queued_at ]] || { echo "heap-profile.sh: the backlog was never queued; see $OUT/bench.log" >&2; exit 1; }

chosen=$(find "$dumps" -name '*.heap' -printf '%T@ %p\n' |
    awk -v t="$queued_at" '$1 <= t' | sort -n | tail -1 | cut -d' ' -f2)
[[ -n $chosen ]] || { echo "heap-profile.sh: no dump before the backlog was queued" >&2; exit 1; }
echo "heap-profile.sh: $(basename "$chosen"), the last dump before all deliveries were queued"
perl "$jeprof" --collapsed "$bin/hookrelay" "$chosen" 2> /dev/null > "$OUT/heap.collapsed"
python3 scripts/heap_profile.py "$OUT/heap.collapsed"
grep -E "queued|rss" "$OUT/bench.log" || true
