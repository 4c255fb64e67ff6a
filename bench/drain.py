"""In-process drain: the worker's rounds over one long backlog, and what grows with it.

    python -m bench.drain [--events 300000] [--customers 5000] [--mix simulator]
                          [--batch 1800] [--profile N [N ...]]

Generates ``--events`` simulator records, puts them all in an event-time merge
(:class:`streams.merge.PartitionMerge`, one partition, every input lane behind,
as in a backlog) and drains it as :meth:`streams.customer_agent.CustomerAgent.
handle_round` does, without broker, Redis or faust: release up to ``--batch``
records, fold them customer by customer (:func:`agents.customer_events.fold_items`,
:func:`~agents.customer_events.by_customer`), sweep the
timers due by the watermark from the :class:`agents.timers.TimerIndex`
(:func:`agents.customer_events.fire_timers`), build the stored form of every
changed state and the JSON of every output, write the states back and note
their timers in the index. Replay clock, ``clock_lateness`` 3600 s (as
``bench.throughput``).

It prints, per quarter of the records, the CPU per event (``time.process_time``:
steadier than wall time on a shared machine) and the collector's share of it
(``gc.callbacks``; the worker's thresholds, ``--gc``), the timers pending at
the end, timers fired, customers swept, the timer index's heap entries (stale ones
included), actions, and the mean stored state,
timers and contact history per customer. ``--profile 1 4`` profiles the rounds
of quarters 1 and 4 with cProfile (process CPU time) and prints the top
functions of each to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from schemas import codec

LATENESS = 3600.0


def items(events: int, customers: int, seed: int, mix: str) -> dict[str, list[Any]]:
    """The simulator's records as merge items, per input family (log order)."""
    from agents.customer_events import time_of
    from agents.records import FAMILY_RANK, NO_TIME, Item
    from bench.fold import records
    from schemas.deadletter import DeadLetter, RecordMeta
    from schemas.ingress import admit

    lanes: dict[str, list[Any]] = {}
    offsets: Counter[str] = Counter()
    for record in records(events, customers, seed, mix):
        event = admit(record.family, record.key, record.value, record.meta)
        at = NO_TIME if isinstance(event, DeadLetter) else time_of(event)
        offset = offsets[record.family]
        offsets[record.family] += 1
        lane = lanes.setdefault(record.family, [])
        meta = RecordMeta(record.meta.topic, 0, offset, None)
        lane.append(
            Item(
                at,
                FAMILY_RANK.get(record.family, len(FAMILY_RANK)),
                offset,
                record.family,
                event,
                meta,
                record.key,
                record.value,
            )
        )
    return lanes


class _GcTime:
    """The collector's time (process CPU) and full collections, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.by_generation = [0.0, 0.0, 0.0]
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            took = time.process_time() - self._started
            self.seconds += took
            self.by_generation[info["generation"]] += took
            self.full += info["generation"] == 2

    def reset(self) -> None:
        self.seconds = 0.0
        self.by_generation = [0.0, 0.0, 0.0]
        self.full = 0


def drain(
    lanes: dict[str, list[Any]], rules: Any, batch: int, profile: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Drain the merge round by round; the figures per quarter of the records."""
    from agents.customer_events import (
        BatchResult,
        by_customer,
        due_after_fold,
        fire_timers,
        fold_items,
        stored_forms,
    )
    from agents.timers import TimerIndex
    from schemas.actions import Action
    from schemas.base import json_encoder
    from schemas.changes import CustomerChange
    from schemas.decisions import ActionDecision
    from schemas.flags import Flag
    from schemas.signals import Signal
    from streams.customer_agent import TIMERS_PER_SWEEP
    from streams.merge import PartitionMerge

    # streams.outputs' encoders, without its imports (faust, aiokafka)
    encoders = {c: json_encoder(c) for c in (Action, ActionDecision, Flag, Signal, CustomerChange)}
    total = sum(len(v) for v in lanes.values())
    merge = PartitionMerge(0, lanes, idle=0.0, allowed_lateness=LATENESS)
    for family, queue in lanes.items():
        merge.push(family, queue, len(queue), len(queue))
    table: dict[str, Any] = {}
    index = TimerIndex()
    wall = time.time()
    quarters: list[dict[str, Any]] = []
    done = 0
    bound = total / 4
    figures: Counter[str] = Counter()
    cpu = 0.0
    profilers = {q: cProfile.Profile(time.process_time) for q in profile}
    collector = _GcTime()
    gc.callbacks.append(collector)
    mono = 0.0
    while True:
        quarter = min(3, int(done / bound)) + 1
        profiler = profilers.get(quarter)
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        mono += 1.0
        released = merge.release(batch, mono)
        result = BatchResult()
        fold_items(by_customer(released), table.get, rules, result=result)  # as a round does
        mark = merge.watermark(False, wall, LATENESS)

        def until(partition: int, mark: Any = mark) -> Any:
            return mark

        due = index.pop_due(until, batch)
        sweep = due + due_after_fold(result, due, until)  # as a round does
        fire_timers(result, sweep, table.get, until, rules, limit=TIMERS_PER_SWEEP)
        if mark is not None and len(due) < batch:
            merge.fired(mark[0])
        stored_forms(result, table.get, rules)
        for encode, records in (
            (encoders[Action], result.actions),
            (encoders[ActionDecision], result.verdicts),
            (encoders[Flag], result.flags),
            (encoders[Signal], result.signals),
            (encoders[CustomerChange], result.changes),
        ):
            for record in records:  # as streams.outputs.send serialises them
                encode(record)
        for customer_id in result.changed:
            state = result.states[customer_id][1]
            table[customer_id] = state
            index.note(customer_id, 0, state.timers)
        if profiler is not None:
            profiler.disable()
        cpu += time.process_time() - started
        done += len(released)
        figures["events"] += len(released)
        figures["rounds"] += 1
        figures["fired"] += len(result.fired)
        figures["actions"] += len(result.actions)
        figures["due_customers"] += len(due)
        end_of_quarter = not released or done >= bound * quarter
        if end_of_quarter and figures["events"]:
            states = list(table.values())
            quarters.append(
                {
                    "quarter": quarter,
                    "events": figures["events"],
                    "rounds": figures["rounds"],
                    "cpu_us_per_event": round(1e6 * cpu / figures["events"], 1),
                    "gc_us_per_event": round(1e6 * collector.seconds / figures["events"], 1),
                    "gc_full_collections": collector.full,
                    "gc_s_by_generation": [round(x, 2) for x in collector.by_generation],
                    "gc_tracked_objects": len(gc.get_objects()),
                    "timers_fired": figures["fired"],
                    "customers_swept": figures["due_customers"],
                    "actions": figures["actions"],
                    "timers_pending_at_end": index.pending,
                    "customers_with_timers": len(index),
                    "timer_index_entries": index.entries,
                    "stored_bytes_per_customer": round(
                        sum(len(codec.dumps(s.to_dict())) for s in states) / len(states)
                    ),
                    "contacts_per_customer": round(
                        sum(len(s.contact.contacts) for s in states) / len(states), 2
                    ),
                    "timers_per_customer": round(
                        sum(len(s.timers) for s in states) / len(states), 2
                    ),
                }
            )
            figures.clear()
            cpu = 0.0
            collector.reset()
        if not released and not due:
            break
    gc.callbacks.remove(collector)
    for quarter, profiler in profilers.items():
        print(f"== quarter {quarter} ==", file=sys.stderr)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    return quarters


def main(argv: list[str] | None = None) -> int:
    from agents.rules import Rules

    p = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=1_800)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mix", choices=("simulator", "storefront"), default="simulator")
    p.add_argument(
        "--gc",
        choices=("worker", "default", "off"),
        default="worker",
        help="collector thresholds: the worker's (streams.worker.gc_thresholds: CRM_GC_THRESHOLD), "
        "Python's, or no collector",
    )
    p.add_argument(
        "--profile",
        type=int,
        nargs="+",
        choices=(1, 2, 3, 4),
        default=[],
        help="profile these quarters (cProfile; to stderr)",
    )
    args = p.parse_args(argv)
    lanes = items(args.events, args.customers, args.seed, args.mix)
    gc.collect()
    gc.freeze()
    if args.gc == "worker":
        from streams.settings import Settings
        from streams.worker import gc_thresholds

        gc.set_threshold(*gc_thresholds(Settings.from_env()))
    elif args.gc == "off":
        gc.disable()
    quarters = drain(lanes, Rules(), args.batch, args.profile)
    print(codec.dumps_sorted({"parameters": vars(args), "quarters": quarters}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
