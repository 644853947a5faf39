#!/usr/bin/env bash
# store-items.sh: what a queued backlog is in the store, tree by tree.
#
# Usage: scripts/store-items.sh [DELIVERIES]   (default 1000000)
#
# Runs `hookrelay-bench --mode backlog`; the moment the bench reports every delivery
# queued, stops the gateway (SIGSTOP), copies its data directory, lets it go on
# (SIGCONT), and once the run is over counts the copy's items per sled tree
# (examples/store_items.rs). The copy is what a crash at that moment would leave,
# which sled recovers like any other. Outputs in $OUT (default target/store-items): the
# bench's JSON and log, and the copy (removed at the end unless KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."

DELIVERIES=${1:-1000000}
OUT=${OUT:-target/store-items}
cargo build --release --bins --example store_items
mkdir -p "$OUT"
rm -rf "$OUT/copy"
target/release/hookrelay-bench --mode backlog --deliveries "$DELIVERIES" --skip-limit \
    --json "$OUT/backlog.json" 2> "$OUT/bench.log" &
bench=$!
until grep -q "queued .* deliveries in" "$OUT/bench.log"; do
    kill -0 "$bench" 2> /dev/null || { echo "store-items.sh: the bench ended first; see $OUT/bench.log" >&2; exit 1; }
    sleep 0.1
done
pid=$(sed -n 's/.*gateway pid \([0-9]*\).*/\1/p' "$OUT/bench.log" | head -1)
data=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^HOOKRELAY_DATA_DIR=//p')
kill -STOP "$pid"
cp -r "$data" "$OUT/copy"
kill -CONT "$pid"
echo "store-items.sh: copied $(du -sh "$OUT/copy" | cut -f1) with every delivery queued"
wait "$bench"
grep -E "queue depth|RSS queued" "$OUT/bench.log" || true
target/release/examples/store_items "$OUT/copy"
[[ ${KEEP:-0} == 1 ]] || rm -rf "$OUT/copy"
