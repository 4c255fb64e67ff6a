"""In-process fold benchmark: the per-batch CPU work of the worker, without the broker.

    python -m bench.fold [--events 200000] [--customers 5000] [--batch 1800]
                         [--repeat 3] [--profile {state-only,full-model}]
                         [--states {in-place,copied}] [--gc {worker,default}]

Generates ``--events`` simulator records once, then admits and folds them with the
product's code in batches of ``--batch``, customer by customer as the worker's rounds
fold (:func:`agents.customer_events.by_customer`), alternating a state-only pass
(``[model] enabled = false``) and a full-model pass, each from an empty table. Per
batch it also does what ``handle_batch`` does with the result on the CPU: the stored
JSON of every changed state (the changelog record) and of every segment change; the
next batch folds the states in place, as the worker's rounds do (``--states copied``:
on a copy of each, as they did before). The collector runs with the worker's thresholds
(``--gc default``: CPython's, as this bench did before the fifteenth session). No broker,
no Redis, no faust: the ratio here is an upper bound on the worker's, which
also pays for record delivery and the producer (the same in both pipelines).

``--profile PIPELINE`` runs one pass of that pipeline under cProfile and
prints the top functions by internal and cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from typing import Any

from schemas import codec


def records(events: int, customers: int, seed: int, mix: str = "simulator") -> list[Any]:
    """``events`` simulator records as the consumer hands them over."""
    from agents.customer_events import RawRecord
    from schemas.deadletter import RecordMeta
    from streams.settings import Topics
    from streams.tools.simulator import MIXES, Simulator

    topics = Topics().by_family
    simulator = Simulator(
        seed=seed, customers=customers, malformed_rate=0.0, retry_rate=0.0, **MIXES[mix]
    )
    out = []
    for n, record in enumerate(simulator, 1):
        meta = RecordMeta(topics[record.family], 0, n, None)
        out.append(RawRecord(record.family, record.key, record.value, meta))
        if n == events:
            break
    return out


def run_pass(batch: list[Any], rules: Any, size: int, in_place: bool = True) -> float:
    """Fold every record as the worker would; return the seconds it took.
    ``in_place``: a batch folds the states the last ones wrote where they lie (the
    worker hands them over ``Owned``); else on a copy of each."""
    from agents.customer_events import Owned, admitted, by_customer, fold_items, stored_forms
    from schemas.base import json_encoder
    from schemas.changes import CustomerChange

    encode = json_encoder(CustomerChange)  # as streams.outputs.CHANGES, without its imports

    table: dict[str, Any] = {}
    started = time.perf_counter()
    for i in range(0, len(batch), size):
        items = by_customer(admitted(batch[i : i + size]))  # as the worker's rounds fold
        result = fold_items(items, table.get, rules)
        for change in result.changes:
            encode(change)  # as streams.outputs.send serialises it
        forms = stored_forms(result, table.get, rules)
        for customer_id in result.changed:
            state = result.states[customer_id][1]
            table[customer_id] = Owned(state, forms[customer_id]) if in_place else state
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from agents.rules import Rules

    p = argparse.ArgumentParser(prog="python -m bench.fold", description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=1_800)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--gc",
        choices=("worker", "default"),
        default="worker",
        help="the collector's thresholds: the worker's (streams.worker.gc_thresholds, "
        "CRM_GC_THRESHOLD; the default) or CPython's (700, 10, 10), as this bench ran "
        "before the fifteenth session",
    )
    p.add_argument("--mix", choices=("simulator", "storefront"), default="simulator")
    p.add_argument("--profile", choices=("state-only", "full-model"))
    p.add_argument(
        "--states",
        choices=("in-place", "copied"),
        default="in-place",
        help="fold the states in place, as the worker does (default), or on a copy of "
        "each, as it did before",
    )
    args = p.parse_args(argv)
    pipelines = {
        "state-only": Rules.from_mapping({"model": {"enabled": False}}),
        "full-model": Rules(),
    }
    batch = records(args.events, args.customers, args.seed, args.mix)
    in_place = args.states == "in-place"
    # The worker never holds the whole backlog: keep these records out of the
    # collector's full passes, or they dominate both pipelines' timings.
    gc.collect()
    gc.freeze()
    if args.gc == "worker":
        from streams.settings import Settings
        from streams.worker import gc_thresholds

        gc.set_threshold(*gc_thresholds(Settings.from_env()))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_pass(batch, pipelines[args.profile], args.batch, in_place)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
        return 0
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    ratios = []
    for _ in range(args.repeat):
        for name, rules in pipelines.items():
            rates[name].append(len(batch) / run_pass(batch, rules, args.batch, in_place))
        ratios.append(rates["full-model"][-1] / rates["state-only"][-1])
    out = {
        "events": len(batch),
        "customers": args.customers,
        "batch": args.batch,
        "mix": args.mix,
        "states": args.states,
        "gc_thresholds": list(gc.get_threshold()),
        "events_per_s": {k: [round(v) for v in vs] for k, vs in rates.items()},
        "ratio_per_repeat": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
    }
    print(codec.dumps_sorted(out).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
