#!/usr/bin/env python3
"""Plot hookrelay-bench results: throughput over time, latency distributions, backlog.

Usage: scripts/plot_bench.py [-o docs/bench.png] RESULT.json [RESULT.json ...]

Each RESULT.json is what `hookrelay-bench --json FILE` wrote; give the runs of one
session (full, open, backlog) to get all four panels. Needs matplotlib
(`pip install matplotlib`).
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(run):
    mode = run["mode"]
    s = run["settings"]
    if mode == "open":
        return f"open {s['rate']:.0f}/s"
    if mode == "backlog":
        return f"backlog {s['deliveries']:,}"
    if mode == "full":
        return f"closed {s['senders']} senders"
    return mode


def rates(timeline, phases, field):
    """(t, per-second rate of `field`) between consecutive samples of the phases."""
    pts = [p for p in timeline if p["phase"] in phases]
    out_t, out_r = [], []
    for a, b in zip(pts, pts[1:]):
        dt = b["t_s"] - a["t_s"]
        if dt > 0:
            out_t.append(b["t_s"])
            out_r.append((b[field] - a[field]) / dt)
    return out_t, out_r


def smooth(values, n=5):
    out = []
    for i in range(len(values)):
        window = values[max(0, i - n + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def x_of(percentile):
    """HdrHistogram-style x axis: 1 / (1 - p), so the tail gets room."""
    return 1.0 / max(1e-5, 1.0 - percentile / 100.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("-o", "--output", default="docs/bench.png")
    args = parser.parse_args()
    runs = []
    for path in args.results:
        with open(path) as f:
            runs.append(json.load(f))
    full = next((r for r in runs if r["mode"] == "full"), None)
    backlog = next((r for r in runs if r["mode"] == "backlog"), None)

    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    machine = runs[0]["machine"]
    fig.suptitle(
        f"hookrelay-bench on {machine['cores']} cores ({machine['cpu_model']}), "
        f"{', '.join(label(r) for r in runs)}",
        fontsize=12,
    )

    # (a) the closed-loop run over time
    ax = axes[0][0]
    if full:
        t0 = next((p["t_s"] for p in full["timeline"] if p["phase"] == "ingest"), 0.0)
        t, ingest = rates(full["timeline"], ("ingest", "deliver", "done"), "answered")
        ax.plot([x - t0 for x in t], smooth(ingest, 10), label="ingest 2xx/s")
        t, delivered = rates(full["timeline"], ("ingest", "deliver", "done"), "arrived")
        ax.plot([x - t0 for x in t], smooth(delivered, 10), label="deliveries/s at the sink")
        if full.get("limit"):
            ax.axhline(full["limit"]["rate_per_s"], color="grey", ls="--", label="limit: sink alone (req/s)")
        ax.axhline(5000, color="tab:blue", ls=":", lw=1, label="target ingest 5,000/s")
        ax.axhline(20000, color="tab:orange", ls=":", lw=1, label="target deliveries 20,000/s")
        ax.set_title(f"{label(full)}: throughput over time (1 s moving average)")
        ax.set_xlabel("seconds since the first ingest")
        ax.set_ylabel("per second")
        ax.set_yscale("symlog", linthresh=100)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    else:
        ax.set_axis_off()

    # (b) latency distributions
    ax = axes[0][1]
    for run in runs:
        if run["mode"] == "backlog":
            continue
        name = label(run)
        if run.get("ingest"):
            curve = run["ingest"]["latency"]["curve"]
            ax.plot([x_of(p) for p, _ in curve], [v for _, v in curve], marker=".", label=f"{name}: ingest")
        if run.get("delivery"):
            curve = run["delivery"]["end_to_end"]["curve"]
            ax.plot([x_of(p) for p, _ in curve], [v for _, v in curve], ls="--", marker=".", label=f"{name}: end-to-end")
    if full and full.get("limit"):
        curve = full["limit"]["latency"]["curve"]
        ax.plot([x_of(p) for p, _ in curve], [v for _, v in curve], color="grey", ls=":", label="limit: sink alone")
    ax.axhline(10, color="red", lw=0.8, ls=":", label="target ingest p99 10 ms (2,500/s)")
    ax.axhline(15, color="purple", lw=0.8, ls=":", label="target e2e p99 15 ms (1,000/s)")
    ticks = [0, 50, 90, 99, 99.9, 99.99, 100]
    ax.set_xscale("log")
    ax.set_xticks([x_of(p) for p in ticks])
    ax.set_xticklabels([f"p{p:g}" if p < 100 else "max" for p in ticks])
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms")
    ax.set_title("latency by percentile (open loop: from the scheduled send)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")

    # (c) the backlog run: queue depth and RSS
    ax = axes[1][0]
    if backlog:
        tl = [p for p in backlog["timeline"] if p["phase"] in ("queue", "hold", "drain", "done")]
        t0 = tl[0]["t_s"] if tl else 0.0
        depth = [(p["t_s"] - t0, p["queue_depth"]) for p in tl if p["queue_depth"] is not None]
        ax.plot([d[0] for d in depth], [d[1] for d in depth], color="tab:red", label="queue depth")
        ax.set_ylabel("queued deliveries")
        up = next((p["t_s"] - t0 for p in tl if p["phase"] == "drain"), None)
        if up is not None:
            ax.axvline(up, color="grey", ls="--", label="sink up")
        ax2 = ax.twinx()
        rss = [(p["t_s"] - t0, p["gateway_rss_bytes"] / 2**20) for p in tl if p["gateway_rss_bytes"]]
        ax2.plot([r[0] for r in rss], [r[1] for r in rss], color="tab:green", label="gateway RSS (MiB)")
        ax2.axhline(100, color="tab:green", ls=":", lw=0.8, label="target RSS 100 MiB")
        ax2.set_ylabel("RSS, MiB")
        b = backlog["backlog"]
        ax.set_title(
            f"{label(backlog)}: queued then drained at {b['drain_rate_per_s']:.0f}/s "
            f"({b['disk_bytes_per_queued_delivery'] or 0:.0f} B disk per queued delivery)"
        )
        ax.set_xlabel("seconds since the first ingest")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    else:
        ax.set_axis_off()

    # (d) throughput figures against the limit and the targets
    ax = axes[1][1]
    # (name, value, ratio to the limit of the same run, target)
    bars = []
    if full and full.get("limit"):
        bars.append(("limit (sink alone)", full["limit"]["rate_per_s"], None, None))
    if full and full.get("ingest"):
        bars.append(("ingest events/s", full["ingest"]["rate_per_s"], full.get("ingest_vs_limit"), 5000))
    if full and full.get("delivery"):
        d = full["delivery"]
        bars.append(("deliveries/s", d["rate_per_s"], d.get("rate_vs_limit"), 20000))
    if backlog and backlog.get("backlog"):
        b = backlog["backlog"]
        bars.append(("backlog drain/s", b["drain_rate_per_s"], b.get("drain_vs_limit"), None))
    if bars:
        names = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colors = ["grey" if b[0].startswith("limit") else "tab:blue" for b in bars]
        ax.bar(names, values, color=colors)
        for i, (name, value, ratio, target) in enumerate(bars):
            text = f"{value:,.0f}"
            if ratio:
                text += f"\n{ratio:.0%} of its run's limit"
            ax.text(i, value, text, ha="center", va="bottom", fontsize=8)
            if target:
                ax.plot([i - 0.4, i + 0.4], [target, target], color="red", lw=2)
        ax.plot([], [], color="red", lw=2, label="target")
        ax.set_yscale("log")
        ax.set_ylabel("per second (log)")
        ax.set_title("throughput vs the loopback limit of the same run")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    else:
        ax.set_axis_off()

    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
