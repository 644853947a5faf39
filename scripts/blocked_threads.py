#!/usr/bin/env python3
"""blocked_threads.py: which of a process's threads wait on the kernel, where, and for how long.

Usage: scripts/blocked_threads.py COMM SECONDS [--log FILE]

Waits for a process whose /proc/PID/comm is COMM (the first 15 bytes of the binary's
name: `hookrelay` for target/release/hookrelay), then every 5 ms reads the state of each
of its threads. A thread in state D (uninterruptible: waiting for the disk, a page, a
lock held across I/O) is recorded with its kernel stack (/proc/PID/task/TID/stack, which
needs root). At the end it prints, per thread name and innermost frames, how many samples
were blocked, and per thread the longest unbroken blocked stretch. With --log, every
sample goes to FILE as `unix-time thread frame < frame < ...`.

Meant to run beside a benchmark, for instance while `hookrelay-bench --mode open` runs:
a latency tail in which the gateway uses little CPU is a wait, and this says on what.
The samples are 5 ms apart, so a stretch is known to within about 10 ms.
"""

import argparse
import collections
import glob
import time

SAMPLE_GAP_S = 0.005
# Two samples further apart than this end a stretch.
STRETCH_BREAK_S = 0.015


def find_process(comm, deadline):
    while time.time() < deadline:
        for path in glob.glob("/proc/[0-9]*/comm"):
            try:
                with open(path) as f:
                    if f.read().strip() == comm:
                        return path.split("/")[2]
            except OSError:
                pass
        time.sleep(0.05)
    return None


def blocked_threads(pid):
    """(thread name, tid, kernel frames) for each thread of pid in state D."""
    found = []
    for stat_path in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            with open(stat_path) as f:
                stat = f.read()
        except OSError:
            continue
        name_end = stat.rindex(")")
        if stat[name_end + 2] != "D":
            continue
        name = stat[stat.index("(") + 1 : name_end]
        tid = stat_path.split("/")[4]
        try:
            with open(f"/proc/{pid}/task/{tid}/stack") as f:
                lines = [line for line in f.read().split("\n") if line]
        except OSError:
            lines = []
        frames = [line.split(" ", 1)[-1].split("+")[0] for line in lines]
        found.append((name, tid, frames))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("comm")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--log")
    args = parser.parse_args()

    deadline = time.time() + args.seconds
    pid = find_process(args.comm, deadline)
    if pid is None:
        raise SystemExit(f"no process named {args.comm} appeared in {args.seconds} s")
    print(f"sampling pid {pid} ({args.comm})", flush=True)

    log = open(args.log, "w") if args.log else None
    by_place = collections.Counter()
    # Per thread id: (name, start of the current stretch, last blocked sample, longest).
    stretches = {}
    while time.time() < deadline:
        now = time.time()
        for name, tid, frames in blocked_threads(pid):
            by_place[(name, " < ".join(frames[:5]))] += 1
            if log:
                log.write(f"{now:.3f} {name} {' < '.join(frames[:12])}\n")
            _, start, last, longest = stretches.get(tid, (name, now, now, 0.0))
            if now - last > STRETCH_BREAK_S:
                start = now
            stretches[tid] = (name, start, now, max(longest, now - start))
        time.sleep(SAMPLE_GAP_S)
    if log:
        log.close()

    print("\nblocked samples by thread and innermost frames:")
    for (name, place), count in by_place.most_common(15):
        print(f"{count:6}  {name:18} {place}")
    print("\nlongest unbroken blocked stretch per thread (ms):")
    for name, _, _, longest in sorted(stretches.values(), key=lambda s: -s[3])[:10]:
        print(f"{longest * 1000:6.0f}  {name}")


if __name__ == "__main__":
    main()
