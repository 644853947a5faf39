#!/usr/bin/env python3
"""Groups a jemalloc heap profile (jeprof --collapsed) by what owns the memory.

Usage: heap_profile.py HEAP.collapsed

Each line of the input is one allocation stack (frames outermost first, `;`-separated)
and the live bytes sampled there. A stack belongs to the first owner in OWNERS with a
frame containing one of its markers; the order puts the specific before the general.
"""
import collections
import sys

OWNERS = [
    ("first attempts waiting in memory (store/sled/fresh.rs)", ["fresh::Fresh"]),
    ("sled metrics histograms (allocated zeroed, never written: not resident)", ["sled::metrics::Metrics"]),
    ("sled segment accounting (pages present per log segment)", ["SegmentAccountant", "SegmentCleaner"]),
    ("sled page table: locations of paged-out pages", ["PageCache::page_out"]),
    ("sled page table at start", ["PageCache::start"]),
    ("sled cache LRU", ["sled::lru"]),
    ("sled log buffers and reservations", ["sled::pagecache::iobuf", "logger::Log::reserve"]),
    ("sled nodes and values (the page cache, splits, reads)", ["sled::"]),
    ("tokio tasks (attempts in flight, connections)", ["tokio::runtime::task"]),
    ("HTTP (hyper, reqwest, actix)", ["hyper", "reqwest", "actix"]),
]


def main(path):
    owned = collections.Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, size = line.rstrip().rpartition(" ")
            if not stack:
                continue
            size = int(size)
            total += size
            frames = stack.split(";")
            owner = next(
                (name for name, markers in OWNERS if any(m in f for f in frames for m in markers)),
                "other",
            )
            owned[owner] += size
    mib = 1024 * 1024
    print(f"live heap sampled: {total / mib:.1f} MiB")
    print("| owner | MiB | share |")
    print("| --- | --- | --- |")
    for owner, size in owned.most_common():
        print(f"| {owner} | {size / mib:.1f} | {100 * size / max(total, 1):.1f} % |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
