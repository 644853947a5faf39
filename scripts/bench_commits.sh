#!/usr/bin/env bash
# bench_commits.sh: the same benchmark against the gateway as built at several commits,
# interleaved in rounds, so every optimisation is compared with its predecessor in one
# series on one machine (docs/benchmarks.md, "Before and after").
#
# Usage: scripts/bench_commits.sh COMMIT [COMMIT...] [-- extra hookrelay-bench arguments]
# Environment: ROUNDS=2, OUT=target/bench-commits (worktree, builds, JSON results).
# The bench tool itself is the one of the working tree (built first), so all commits are
# measured by the same instrument.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
OUT=${OUT:-target/bench-commits}
commits=()
while (($#)) && [[ $1 != -- ]]; do
    commits+=("$1")
    shift
done
[[ ${1:-} == -- ]] && shift
((${#commits[@]})) || {
    sed -n '2,10p' "$0"
    exit 2
}
mkdir -p "$OUT/bin"
cargo build --release --bin hookrelay-bench
bench=target/release/hookrelay-bench

# One worktree and one target dir for all the builds: each commit builds incrementally.
tree="$OUT/worktree"
[[ -d $tree ]] || git worktree add --detach "$tree" HEAD >/dev/null
for commit in "${commits[@]}"; do
    short=$(git rev-parse --short "$commit")
    [[ -x $OUT/bin/$short ]] && continue
    git -C "$tree" checkout --quiet --detach "$commit"
    CARGO_TARGET_DIR="$PWD/$OUT/target" cargo build --release --bin hookrelay --manifest-path "$tree/Cargo.toml"
    cp "$OUT/target/release/hookrelay" "$OUT/bin/$short"
done

for round in $(seq 1 "$ROUNDS"); do
    for commit in "${commits[@]}"; do
        short=$(git rev-parse --short "$commit")
        echo "=== round $round, $short: $(git log -1 --format=%s "$commit")"
        "$bench" --gateway-bin "$OUT/bin/$short" --json "$OUT/$short-$round.json" "$@" 2>&1 | tail -n 17
    done
done

python3 - "$OUT" "$ROUNDS" "${commits[@]}" <<'EOF'
import json, subprocess, sys

out, rounds, commits = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| commit | change | ingest events/s | deliveries/s | CPU-s per 1,000 deliveries | peak RSS MiB | written per event KB | ingest vs limit |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for commit in commits:
    short = subprocess.run(["git", "rev-parse", "--short", commit], capture_output=True, text=True).stdout.strip()
    subject = subprocess.run(["git", "log", "-1", "--format=%s", commit], capture_output=True, text=True).stdout.strip()
    runs = [json.load(open(f"{out}/{short}-{r}.json")) for r in range(1, rounds + 1)]
    def col(get, fmt):
        return " / ".join(fmt(get(r)) for r in runs)
    print(f"| `{short}` | {subject} "
          f"| {col(lambda r: r['ingest']['rate_per_s'], lambda v: f'{v:,.0f}')} "
          f"| {col(lambda r: r['delivery']['rate_per_s'], lambda v: f'{v:,.0f}')} "
          f"| {col(lambda r: r['resources']['gateway_cpu_s_per_1000_deliveries'], lambda v: f'{v:.3f}')} "
          f"| {col(lambda r: r['resources']['gateway_peak_rss_bytes'] / 2**20, lambda v: f'{v:.0f}')} "
          f"| {col(lambda r: r['resources']['gateway_disk_write_bytes_per_event'] / 1000, lambda v: f'{v:.1f}')} "
          f"| {col(lambda r: r['ingest_vs_limit'], lambda v: f'{100 * v:.1f} %')} |")
EOF
