"""State size per customer: fold simulator events for many customers, then measure.

    python -m bench.state_size [--customers 100000] [--events 1000000] [--seed 7]
                               [--mix simulator|storefront]

Folds the history as a worker does (:func:`fold_history`: each partition's records
released by the worker's event-time merge, then the product's pure fold with the
full customer model) in this process, no broker: what it measures is the state
itself. Reports, per customer, the stored form's size (what goes to the
changelog and a RocksDB store: the JSON packed at ``--packing`` with
``--dictionary``, defaults ``CRM_STATE_PACKING``'s and ``CRM_STATE_DICTIONARY``'s,
:func:`schemas.codec.pack`) and the JSON's, each as
mean / p50 / p99 / max; the CPU time to pack and to unpack a state, and to read one
from its bytes as a batch does (``CustomerState.from_bytes``); the largest
daily-row and category counts (both bounded by the rules), the mean bytes each
part of the state takes in the JSON, and the Python heap per state, parsed (a deep
``sys.getsizeof`` over a sample of 5,000) and kept as its stored bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from schemas import codec
from streams.settings import Settings
from streams.tools.runner import say


def fold_history(
    mix: str,
    seed: int,
    customers: int,
    events: int,
    progress: bool = False,
    rules: Any = None,
    allowed_lateness: float | None = None,
) -> dict[str, Any]:
    """Customer id -> state after ``events`` simulated events of ``mix`` (no malformed
    records, no retries), folded in batches of 2,000 as a worker folds them: each
    partition's records released by the worker's event-time merge
    (:class:`streams.merge.PartitionMerge`, its inputs caught up), which dates each
    record's recognition horizon (the partition's stream time minus
    ``allowed_lateness``, ``CRM_ALLOWED_LATENESS``'s default unless given: the event
    keys a state remembers, :mod:`agents.seen`, are forgotten past it), then the
    product's pure fold, customer by customer. Folded without the horizon, a state
    remembered every event it ever applied: 1,328 bytes stored at the p99 of 10
    storefront events per customer, against 1,150 as a worker keeps it."""
    from agents.customer_events import RawRecord, admitted, by_customer, fold_items
    from agents.rules import Rules
    from schemas.deadletter import RecordMeta
    from streams.merge import PartitionMerge
    from streams.settings import Topics
    from streams.tools.replay import partition_for
    from streams.tools.simulator import MIXES, Simulator

    rules = Rules() if rules is None else rules
    if allowed_lateness is None:
        allowed_lateness = Settings.model_fields["allowed_lateness"].default
    partitions = Settings.model_fields["partitions"].default
    topics = Topics().by_family
    merges = [
        PartitionMerge(p, topics, idle=1.0, allowed_lateness=allowed_lateness)
        for p in range(partitions)
    ]
    for merge in merges:  # every input caught up: a record waits for none
        for family in topics:
            merge.note(family, 0, 0)
    offsets: dict[tuple[str, int], int] = {}
    simulator = Simulator(
        seed=seed, customers=customers, malformed_rate=0.0, retry_rate=0.0, **MIXES[mix]
    )
    table: dict[str, Any] = {}
    started = time.perf_counter()
    batch: list[RawRecord] = []
    for n, record in enumerate(simulator, 1):
        partition = partition_for(record.key, partitions)
        offset = offsets[record.family, partition] = offsets.get((record.family, partition), -1) + 1
        meta = RecordMeta(topics[record.family], partition, offset, None)
        batch.append(RawRecord(record.family, record.key, record.value, meta))
        if len(batch) == 2000 or n == events:
            fetched: dict[tuple[int, str], list[Any]] = {}
            for item in admitted(batch):
                fetched.setdefault((item.meta.partition, item.family), []).append(item)
            for (partition, family), items in fetched.items():
                merges[partition].push(family, items, items[-1].offset + 1, items[-1].offset + 1)
            released = []
            for merge in merges:
                released.extend(merge.release_run(len(batch), 0.0)[0])
            result = fold_items(by_customer(released), table.get, rules)
            for customer_id in result.changed:
                table[customer_id] = result.states[customer_id][1]
            batch = []
            if progress and n % 100_000 == 0:
                rate = n / (time.perf_counter() - started)
                say(f"bench: state size: {n:>9,} / {events:,} events ({rate:,.0f}/s)")
        if n == events:
            break
    return table


def measure(
    customers: int,
    events: int,
    seed: int,
    progress: bool = True,
    mix: str = "simulator",
    packing: int | None = None,
    dictionary: int = codec.PACKING,
) -> dict[str, Any]:
    from agents.rules import Rules
    from agents.state import CustomerState

    rules = Rules()
    started = time.perf_counter()
    table = fold_history(mix, seed, customers, events, progress, rules)
    states = list(table.values())
    sample = states[:: max(1, len(states) // 5000)]
    if packing is None:
        packing = Settings.model_fields["state_packing"].default
    stored = [s.to_dict() for s in table.values()]
    forms = [codec.dumps_str_keys(s) for s in stored]
    json_sizes = sorted(map(len, forms))
    clock = time.perf_counter()
    packed = [codec.pack(f, packing, dictionary) for f in forms]
    pack_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    for p in packed:
        codec.unpack(p)
    unpack_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    for p in packed:
        CustomerState.from_bytes(p)
    read_seconds = time.perf_counter() - clock
    sizes = sorted(map(len, packed))
    parts: dict[str, int] = {}
    for s in stored:
        for name, value in s.items():
            parts[name] = parts.get(name, 0) + len(codec.dumps(value))
    return {
        "customers_with_state": len(table),
        "events": events,
        "mix": mix,
        "packing": packing,
        "dictionary": dictionary,
        "stored_bytes_per_customer": _spread(sizes),
        "json_bytes_per_customer": _spread(json_sizes),
        "pack_us_per_state": round(pack_seconds / len(forms) * 1e6, 1),
        "unpack_us_per_state": round(unpack_seconds / len(forms) * 1e6, 1),
        # What a batch pays for a state kept as bytes: unpacked, decoded and built.
        "read_us_per_state": round(read_seconds / len(forms) * 1e6, 1),
        "stored_bytes_per_part_mean": {k: round(n / len(stored), 1) for k, n in parts.items()},
        "heap_bytes_per_customer": round(
            statistics.fmean(deep_size(st) for st in sample) if sample else 0.0, 1
        ),
        # A state kept as its stored bytes (CRM_STATES_PARSED): the bytes object alone.
        "heap_bytes_per_customer_as_bytes": round(statistics.fmean(map(sys.getsizeof, packed)), 1),
        "max_daily_rows": max(len(s.activity.days) for s in table.values()),
        "history_days_bound": rules.history_days,
        "max_categories": max(len(s.activity.categories) for s in table.values()),
        "category_slots_bound": rules.tags.category_slots,
        "fold_events_per_s": round(events / (time.perf_counter() - started), 1),
    }


def _spread(sizes: list[int]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(sizes), 1),
        "p50": sizes[len(sizes) // 2],
        "p99": sizes[int(len(sizes) * 0.99)],
        "max": sizes[-1],
    }


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes an object and everything it holds take on the Python heap (approximate)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set):
        size += sum(deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, name), seen) for name in obj.__slots__)
    return size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.state_size", description=__doc__)
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mix", choices=("simulator", "storefront"), default="simulator")
    p.add_argument(
        "--packing",
        type=int,
        choices=range(20),
        metavar="0-19",
        help="compression level of the stored form (default: CRM_STATE_PACKING's default, "
        f"{codec.LEVEL}; 0: plain JSON)",
    )
    p.add_argument(
        "--dictionary",
        type=int,
        choices=sorted(codec.PACKINGS),
        default=codec.PACKING,
        help=f"packing: 2 zstd, 1 deflate (default: CRM_STATE_DICTIONARY's, {codec.PACKING})",
    )
    args = p.parse_args(argv)
    result = measure(
        args.customers,
        args.events,
        args.seed,
        mix=args.mix,
        packing=args.packing,
        dictionary=args.dictionary,
    )
    print(codec.dumps_sorted(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
