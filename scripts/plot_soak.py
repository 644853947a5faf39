#!/usr/bin/env python3
"""Plots a soak CSV written by the fault suite (tests/faults/soak.rs).

    python3 scripts/plot_soak.py docs/soak.csv docs/soak.png

Columns: elapsed_s, rss_kib, disk_bytes, ingested, delivered, queue_depth.
Needs matplotlib (pip install matplotlib).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: plot_soak.py SOAK.csv OUT.png")
    source, target = sys.argv[1], sys.argv[2]
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{source}: no samples")
    t = [float(r["elapsed_s"]) for r in rows]
    rss = [int(r["rss_kib"]) / 1024 for r in rows]
    disk = [int(r["disk_bytes"]) / 2**20 for r in rows]
    ingested = [int(r["ingested"]) for r in rows]
    delivered = [int(r["delivered"]) for r in rows]
    depth = [float(r["queue_depth"]) for r in rows]

    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    top.plot(t, rss, label="gateway RSS (MiB)", color="tab:blue")
    top.plot(t, disk, label="data directory on disk (MiB)", color="tab:orange")
    top.set_ylabel("MiB")
    top.set_title(f"hookrelay soak: {source}")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)

    middle.plot(t, ingested, label="events accepted", color="tab:green")
    middle.plot(t, delivered, label="deliveries received", color="tab:purple")
    middle.set_ylabel("count")
    middle.legend(loc="upper left")
    middle.grid(alpha=0.3)

    bottom.plot(t, depth, label="hookrelay_queue_depth", color="tab:red")
    bottom.set_ylabel("pending deliveries")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left")
    bottom.grid(alpha=0.3)

    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target} ({len(rows)} samples)")


if __name__ == "__main__":
    main()
