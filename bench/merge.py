"""In-process merge: the worker's rounds releasing a backlog in event time, alone.

    python -m bench.merge [--events 100000] [--customers 5000] [--partitions 4]
                          [--mix storefront] [--batch 2000] [--repeat 5] [--json FILE]

Generates ``--events`` simulator records and admits them once. It spreads them over
``--partitions`` partitions by key, as a producer does (Kafka's default partitioner),
with one event-time merge per partition and one lane per input family. Every record is
fetched and every lane is caught up. Then, ``--repeat`` times:

- **crmstream**: drains them as the worker's rounds do, up to ``--batch`` records a
  round (:func:`streams.customer_agent.release_in_time_order`). A round cuts the
  records into runs: one partition's records up to the next partition's head.
- **anchor**: merges the same lanes with :func:`heapq.merge`, by the same
  ``(time, partition, rank, offset)``. That is the floor of an event-time merge in
  Python: no waiting rules, no stamps, no rounds.

It prints µs per record for both, the fastest repeat and the median, and their ratio.
The collector runs with the worker's thresholds. Nothing is folded, and there is no
broker: what this measures is the merge's own share of a worker's CPU per event.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import statistics
import sys
import time
from collections import Counter
from operator import attrgetter
from pathlib import Path
from typing import Any

from schemas import codec


def partitioned(
    events: int, customers: int, partitions: int, seed: int, mix: str
) -> dict[int, dict[str, list[Any]]]:
    """The simulator's records, admitted, as merge items per partition and input family
    (log order: each lane's offsets count from 0)."""
    from agents.customer_events import time_of
    from agents.records import FAMILY_RANK, NO_TIME, Item
    from bench.fold import records
    from schemas.deadletter import DeadLetter, RecordMeta
    from schemas.ingress import admit
    from streams.kafka import partition_for

    lanes: dict[int, dict[str, list[Any]]] = {p: {} for p in range(partitions)}
    offsets: Counter[tuple[int, str]] = Counter()
    for record in records(events, customers, seed, mix):
        partition = partition_for(record.key, partitions)
        event = admit(record.family, record.key, record.value, record.meta)
        at = NO_TIME if isinstance(event, DeadLetter) else time_of(event)
        offset = offsets[partition, record.family]
        offsets[partition, record.family] += 1
        meta = RecordMeta(record.meta.topic, partition, offset, None)
        item = Item(at, FAMILY_RANK[record.family], offset, record.family, event, meta)
        lanes[partition].setdefault(record.family, []).append(item)
    return lanes


def _merges(lanes: dict[int, dict[str, list[Any]]]) -> list[Any]:
    """One merge per partition, every record fetched, every lane caught up."""
    from agents.records import FAMILY_RANK, Item
    from streams.merge import PartitionMerge

    merges = []
    for partition, families in lanes.items():
        merge = PartitionMerge(partition, FAMILY_RANK, idle=30.0, allowed_lateness=1e12)
        for family in FAMILY_RANK:
            queue = families.get(family, [])
            copies = [Item(i.at, i.rank, i.offset, i.family, i.payload, i.meta) for i in queue]
            merge.push(family, copies, len(queue), len(queue))
        merges.append(merge)
    return merges


def crmstream_pass(lanes: dict[int, dict[str, list[Any]]], batch: int) -> tuple[float, int, int]:
    """Seconds to drain every record through the worker's rounds; records and runs."""
    from streams.customer_agent import release_in_time_order

    merges = _merges(lanes)
    released = runs = 0
    started = time.perf_counter()
    while True:
        got = 0
        for items in release_in_time_order(merges, batch, 0.0):
            got += len(items)
            runs += 1
        if not got:
            break
        released += got
    return time.perf_counter() - started, released, runs


def anchor_pass(lanes: dict[int, dict[str, list[Any]]]) -> tuple[float, int]:
    """Seconds to merge the same lanes with :func:`heapq.merge`; records."""
    key = attrgetter("at", "meta.partition", "rank", "offset")
    queues = [queue for families in lanes.values() for queue in families.values()]
    started = time.perf_counter()
    released = sum(1 for _ in heapq.merge(*queues, key=key))
    return time.perf_counter() - started, released


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--mix", choices=("simulator", "storefront"), default="storefront")
    p.add_argument(
        "--batch",
        type=int,
        default=2_000,
        help="records per round (default: 2000, the worker's CRM_BATCH_MAX until the "
        "nineteenth session, so figures compare across sessions)",
    )
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    if min(args.events, args.partitions, args.batch, args.repeat) < 1:
        p.error("--events, --partitions, --batch and --repeat must be at least 1")

    from streams.settings import Settings
    from streams.worker import gc_thresholds

    print(f"bench.merge: generating and admitting {args.events:,} records ...", file=sys.stderr)
    lanes = partitioned(args.events, args.customers, args.partitions, args.seed, args.mix)
    total = sum(len(q) for families in lanes.values() for q in families.values())
    gc.collect()
    gc.freeze()  # the backlog itself is not what the worker's collector scans
    gc.set_threshold(*gc_thresholds(Settings.from_env()))
    ours: list[float] = []
    anchor: list[float] = []
    runs = 0
    for n in range(1, args.repeat + 1):
        seconds, released, runs = crmstream_pass(lanes, args.batch)
        if released != total:
            raise SystemExit(f"bench.merge: the rounds released {released:,} of {total:,} records")
        ours.append(seconds / total * 1e6)
        seconds, released = anchor_pass(lanes)
        anchor.append(seconds / released * 1e6)
        print(
            f"bench.merge: repeat {n}/{args.repeat}: crmstream {ours[-1]:.3f} µs/record, "
            f"heapq.merge {anchor[-1]:.3f}",
            file=sys.stderr,
        )
    out = {
        "benchmark": "merge",
        "events": total,
        "customers": args.customers,
        "partitions": args.partitions,
        "mix": args.mix,
        "batch": args.batch,
        "gc_thresholds": list(gc.get_threshold()),
        "records_per_run": round(total / runs, 3),
        "crmstream_us_per_record": [round(v, 3) for v in ours],
        "anchor_us_per_record": [round(v, 3) for v in anchor],
        "crmstream_us_per_record_min": round(min(ours), 3),
        "crmstream_us_per_record_median": round(statistics.median(ours), 3),
        "anchor_us_per_record_min": round(min(anchor), 3),
        "ratio_to_anchor_median": round(
            statistics.median(o / a for o, a in zip(ours, anchor, strict=True)), 2
        ),
    }
    text = codec.dumps_sorted(out)
    if args.json:
        args.json.write_bytes(text)
    print(text.decode(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
