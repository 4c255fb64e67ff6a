"""Event -> action latency on the wire, at an open-loop rate, on the live clock.

    python -m bench.latency --rate 300 --seconds 60 [--customers 1000] [--partitions 4]
                            [--warmup 5] [--settle 10] [--no-floor] [--floor-share 40]
                            [--json FILE] [--workdir DIR]

1. Starts the embedded Tansu broker, Redis and ONE worker on the live clock
   (:func:`streams.tools.runner.start_stack`, which waits until the worker is ready).
2. Starts a consumer of ``crm.actions`` in this process (no group, every partition
   assigned, from the beginning: the topic is new) that notes, for every action
   record, the wall time its fetch returned.
3. Drives an open-loop producer for ``--seconds`` s at ``--rate`` events/s: the
   storefront mix (:data:`streams.tools.simulator.MIXES`), each event dated at the
   moment it is generated, just before it is sent (the simulated clock is set to the
   wall clock, less one mean step, before each event: it steps ``1/rate`` s on
   average and never goes back), so event time is the wall clock. Open loop: each
   record is sent at its scheduled time, whatever the worker does
   (:func:`streams.tools.simulator.produce`). For every record the producer notes
   its ``event_id`` and the wall time it was sent.
4. After the last record, waits ``--settle`` s for the last actions, then scrapes the
   worker's ``/metrics`` (``crm_action_latency_seconds``,
   ``crm_processing_latency_seconds``).

Event -> action latency = (wall time the action arrived on the bench's consumer) -
(wall time the triggering event was sent by the bench's producer). The triggering
event is named by the action's ``trigger_event_ids`` (the latest sent of them when
there are several). Only actions an event triggered directly count:

- taken: ``clock == "event"`` (decided as an event was folded) and no ``not_before``;
- left out: ``clock == "wall"`` (care rules that fire on timers on the live clock,
  hours or days after their cause) and actions the contact policy deferred (they
  go out from a timer, with ``not_before`` set, keeping the event clock);
- left out: the cross-customer rules' actions (rule ids ``aggregates.*``, e.g. the
  mass logistics delay apology): decided when many customers' signals cross a
  threshold, they name the customer's own signal, an event up to the rule's window
  (hours) before the one that tipped it;
- left out: actions whose trigger was sent in the first ``--warmup`` s (start-up),
  and those naming no event this run sent (counted as ``unmatched``).

**The floor** (the baseline, in the same process tree; ``--no-floor`` leaves it out):
before and after the crmstream pass, the same open loop (same seed, rate and
length) goes to topics of its own, read by :mod:`bench.relay` in place of the
worker: a child process that reads the inputs with the worker's fetch wait and, for
one event in ``--floor-share``, sends an action-shaped record at once, with no work
in between. Its latency is what the embedded broker, this machine and the bench's
own clients cost two hops at that rate. crmstream's percentiles are reported against
the mean of the two floor passes' (``ratio_to_floor``). The worker is running but
idle (its own topics get nothing) during the floor passes.

**Whether it was a steady state.** An open loop faster than the worker (or the
broker) sustains builds a queue, and the percentiles then grow with the run's length.
Each pass also reports (``quarters``) the counted actions' p50 and p99 in four equal
spans of the time their triggers were sent, with the last span's median over the
first's (``last_to_first_p50``), and the CPU its processes used while the producer
ran, as shares of one CPU (``cpu``: the worker, its event loop's thread alone, the
broker, this process; a floor pass's relay instead of the worker). ``verdict`` names
what says the crmstream pass was not steady: its event loop busy 90 % of the time or
more (it did not keep up), or its median latency doubled from the first quarter to the
last, read against the floor passes' (if theirs doubled too, the broker slowed: the
embedded broker does as it holds more records). Both are printed.

**Whether the machine was full.** ``cpu`` also has the whole machine's busy time over
the same window (``machine``, from ``/proc/stat``: every process, the VM's steal
included; ``steal`` apart), as a share of one CPU. When it reaches 85 % of the CPUs
(``crowded``), the report says so: the worker, the broker and the bench's own clients
then wait for a CPU, and the percentiles carry those waits. The floor passes' rows
print their machine's share too.

Not a test: nothing is asserted. Prints a table, writes JSON (``--json``, default
``bench/results/latency.json``) with the percentiles, counts, quarters, CPU shares, the
verdict and whether the CPUs were nearly full, the worker's histograms and the
machine's load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.throughput import (
    _run_async,
    cpu_seconds,
    load_average,
    machine_cpu,
    machine_facts,
    memory_probe_row,
)
from schemas import codec
from schemas.errors import CrmStreamError, EmbeddedServiceError
from streams.app import PRODUCER_LINGER_MS
from streams.settings import Settings
from streams.tools.embedded import Child, Stack
from streams.tools.runner import Running, StackOptions, handle_sigterm, say, start_stack
from streams.tools.simulator import MIXES, SimRecord, Simulator, produce
from streams.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "latency.json"
#: The worker's own histograms reported beside the bench's figures.
HISTOGRAMS = (
    "crm_action_latency_seconds",
    "crm_processing_latency_seconds",
    # What a round does: its records and its wall time.
    "crm_batch_records",
    "crm_batch_duration_seconds",
)
QUANTILES = (0.5, 0.95, 0.99)
#: Rule ids of the cross-customer rules (agents.aggregate_rules): their actions are
#: decided when many customers' signals cross a threshold, and name the customer's own
#: signal (an event up to the rule's window earlier), not the event that tipped it.
CROSS_CUSTOMER = "aggregates."
#: A worker whose event loop's thread was busy this share of the producing window or
#: more did not keep up: its rounds grow until they take as long as their records took
#: to come, and the percentiles measure the queue.
LOOP_FULL = 0.9
#: A pass whose last quarter's median latency was this many times its first's was not
#: in a steady state (:func:`verdict`). The embedded broker slows as it holds more: at
#: 6,000 events/s for 60 s the relay that does nothing read a median of 21 ms in the
#: first quarter and 109 ms in the last, the broker at 96 % of one CPU (bench/README.md).
GREW = 2.0
#: A pass during which the machine's CPUs were busy this share of the time or more (all
#: its processes, the VM's steal included) ran on a machine nearly full: its processes
#: waited for a CPU, and its percentiles carry those waits (:func:`crowded`). At 3,000
#: events/s on a 2-vCPU VM the worker, the broker and this process read 1.8 CPUs.
CROWDED = 0.85


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Event -> action latency on the wire at an open-loop rate (live clock).",
    )
    p.add_argument("--rate", type=float, required=True, help="events per second to produce")
    p.add_argument("--seconds", type=float, required=True, help="seconds to produce for")
    p.add_argument("--customers", type=int, default=1000, help="simulated customers (1000)")
    p.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (7)")
    p.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds at the start whose events' actions are not counted (5)",
    )
    p.add_argument(
        "--settle", type=float, default=10.0, help="seconds to wait for actions after the end"
    )
    p.add_argument(
        "--reader-fetch-wait-ms",
        type=int,
        default=10,
        help="fetch_max_wait_ms of the bench's crm.actions consumer (10; faust's consumer "
        "uses 1500, hard-coded in its aiokafka driver)",
    )
    p.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="leave out the floor passes (bench.relay before and after crmstream)",
    )
    p.add_argument(
        "--floor-share",
        type=int,
        default=40,
        help="the floor's relay answers one event in this many (40: 2.5 %%, about the "
        "storefront mix's share of events that become actions)",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_OUT, dest="out", help="JSON results")
    p.add_argument("--workdir", type=Path, help="logs and worker data (default: a temp dir)")
    p.add_argument("--keep-workdir", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.customers < 1 or args.floor_share < 1:
        say("bench: --rate, --seconds, --customers and --floor-share must be positive")
        return 2
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="crmstream-latency-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, workdir)
    except CrmStreamError as exc:
        say(f"bench: FAILED to start the stack: {exc}; logs in {workdir}")
        return 1
    except KeyboardInterrupt:
        say(f"bench: interrupted; logs in {workdir}")
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(codec.dumps_sorted(result))
    print(render(result))
    say(f"bench: results written to {args.out}")
    if temp and not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"bench: workdir kept: {workdir}")
    return 0


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    handle_sigterm()  # a killed bench stops its broker, Redis and worker too
    load_before = load_average()
    running = start_stack(
        StackOptions(workers=1, partitions=args.partitions, workdir=workdir, clock="live")
    )
    floors: list[dict[str, Any]] = []
    try:
        metrics_url = running.web_urls()[0] + "/metrics"
        if args.floor:
            floors.append(floor_pass(running, args, 1))
        say("bench: crmstream pass")
        worker = running.workers[0][0].proc.pid
        probe = cpu_probe(
            {
                "worker": (worker, None),
                "worker_loop": (worker, worker),
                "broker": (running.stack.broker.proc.pid, None),
            }
        )
        measured = _run_async(_measure(running.settings, args, probe))
        page = _fetch(metrics_url)
        if args.floor:
            floors.append(floor_pass(running, args, 2))
    finally:
        say("bench: stopping worker, Redis and broker ...")
        running.stack.close()
    sent_at, arrivals, produced_seconds, cpu = measured
    figures = on_the_wire(sent_at, arrivals, min(sent_at.values(), default=0.0) + args.warmup)
    load_after = load_average()  # before the machine facts' memory probe loads a CPU
    return {
        "benchmark": "latency-open-loop",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "parameters": {
            "rate": args.rate,
            "seconds": args.seconds,
            "customers": args.customers,
            "partitions": args.partitions,
            "seed": args.seed,
            "mix": "storefront",
            "warmup_s": args.warmup,
            "settle_s": args.settle,
            "clock": "live",
            "workers": 1,
            "batch_max": running.settings.batch_max,
            "merge_idle_s": running.settings.merge_idle_seconds,
            "reader_fetch_wait_ms": args.reader_fetch_wait_ms,
            "floor_share": args.floor_share if args.floor else None,
        },
        "events_sent": len(sent_at),
        "achieved_rate": round(len(sent_at) / produced_seconds, 1) if produced_seconds else None,
        "event_to_action": figures,
        "cpu": cpu,
        "verdict": verdict(figures, cpu, floors),
        "crowded": crowded(cpu, os.cpu_count() or 1),
        "floor": floors,
        "ratio_to_floor": ratio_to_floor(figures, [f["event_to_action"] for f in floors]),
        "worker_histograms": worker_histograms(page),
    }


def floor_settings(settings: Settings, n: int) -> Settings:
    """``settings`` with every topic renamed ``bench-floor-N.<name>``: a floor pass's
    records and actions never meet the worker's or another pass's."""
    topics = settings.topics
    renamed = {
        name: f"bench-floor-{n}.{getattr(topics, name)}" for name in type(topics).model_fields
    }
    return settings.replace(topics=topics.replace(**renamed))


def floor_pass(running: Running, args: argparse.Namespace, n: int) -> dict[str, Any]:
    """The same open loop through :mod:`bench.relay` instead of the worker."""
    settings = floor_settings(running.settings, n)
    _run_async(ensure_topics(settings))
    relay = start_relay(running.stack, settings, args.floor_share, f"relay-{n}")
    try:
        say(f"bench: floor pass {n} (bench.relay in place of the worker)")
        broker = running.stack.broker.proc.pid
        probe = cpu_probe({"relay": (relay.proc.pid, None), "broker": (broker, None)})
        sent_at, arrivals, produced_seconds, cpu = _run_async(_measure(settings, args, probe))
    finally:
        relay.stop()
    counted_from = min(sent_at.values(), default=0.0) + args.warmup
    return {
        "events_sent": len(sent_at),
        "achieved_rate": round(len(sent_at) / produced_seconds, 1) if produced_seconds else None,
        "event_to_action": on_the_wire(sent_at, arrivals, counted_from),
        "cpu": cpu,
        "load_average_after": load_average(),
    }


def start_relay(stack: Stack, settings: Settings, share: int, name: str) -> Child:
    """Start :mod:`bench.relay` on ``settings``' inputs and actions topic, with the
    worker's fetch wait and producer linger, and wait until it is positioned."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    relay = stack.spawn(
        name,
        [
            sys.executable,
            "-m",
            "bench.relay",
            "--bootstrap",
            settings.broker_bootstrap,
            "--inputs",
            ",".join(settings.topics.inputs),
            "--output",
            settings.topics.actions,
            "--share",
            str(share),
            "--fetch-wait-ms",
            str(round(settings.fetch_wait * 1000)),
            "--linger-ms",
            str(PRODUCER_LINGER_MS),
        ],
        env={"PYTHONPATH": python_path},
    )
    try:
        wait_for_line(relay, "relay ready", timeout=60.0)
    except BaseException:
        relay.stop()
        raise
    return relay


def wait_for_line(child: Child, text: str, timeout: float) -> None:
    """Wait until ``child``'s log holds ``text``; it exiting first, or the timeout, is an
    error naming its log."""
    deadline = time.monotonic() + timeout
    while text not in child.log_path.read_text(errors="replace"):
        if child.proc.poll() is not None:
            raise EmbeddedServiceError(
                f"{child.name} exited with code {child.proc.returncode}; see {child.log_path}"
            )
        if time.monotonic() > deadline:
            raise EmbeddedServiceError(f"{child.name} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def ratio_to_floor(figures: dict[str, Any], floors: list[dict[str, Any]]) -> dict[str, float]:
    """crmstream's percentiles over the mean of the floor passes' (empty without any)."""
    out: dict[str, float] = {}
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        base = [f[key] for f in floors if key in f]
        if key in figures and base and sum(base) > 0:
            out[key.removesuffix("_ms")] = round(figures[key] / (sum(base) / len(base)), 2)
    return out


Probe = Callable[[], dict[str, float]]


def cpu_probe(processes: dict[str, tuple[int, int | None]]) -> Probe:
    """A reading of CPU seconds so far: per name, the process (or, with a thread id, that
    thread alone: a process's main thread has its pid) of ``processes``; this process's
    own, ``bench`` (the producer and the actions' reader); and the whole machine's,
    ``machine`` and ``steal`` (:func:`bench.throughput.machine_cpu`; left out where there
    is no ``/proc/stat``)."""

    def read() -> dict[str, float]:
        now = {name: cpu_seconds(pid, thread) for name, (pid, thread) in processes.items()}
        now["bench"] = time.process_time()
        now |= machine_cpu()
        return now

    return read


def cpu_shares(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """CPU used between two readings of a :func:`cpu_probe` over ``seconds`` of wall time,
    as a share of one CPU, for the names both readings have."""
    if seconds <= 0:
        return {}
    return {
        name: round((after[name] - before[name]) / seconds, 2) for name in before if name in after
    }


def verdict(
    figures: dict[str, Any], cpu: dict[str, float], floors: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """What says the crmstream pass was not a steady state (empty: nothing does), so that
    its percentiles describe a queue that grew with the run rather than the worker:

    - its event loop's thread busy :data:`LOOP_FULL` of the producing window or more: the
      worker did not keep up;
    - its last quarter's median latency :data:`GREW` times its first's or more; read
      against the floor passes' (``floors``): if theirs grew as much, with nothing but the
      broker between an event and its action, the broker slowed; if not, the worker fell
      behind, or its work per event grew as the customers' states filled."""
    out: list[str] = []
    if not figures.get("counted"):
        return out
    loop = cpu.get("worker_loop")
    if loop is not None and loop >= LOOP_FULL:
        out.append(
            f"the worker did not keep up: its event loop was busy {round(loop * 100)} % of "
            "the time, so this rate is at or over what it sustains here"
        )
    grew = figures.get("last_to_first_p50")
    if grew is None or grew < GREW:
        return out
    line = f"the median latency grew {grew:g}x from the first quarter of the window to the last"
    floor_grew = [
        g for f in floors if (g := f["event_to_action"].get("last_to_first_p50")) is not None
    ]
    if not floor_grew:
        out.append(
            line + ": the worker fell behind, its work per event grew as the customers' "
            "states filled, or the broker slowed (no floor pass to tell which)"
        )
        return out
    shown = " and ".join(f"{g:g}x" for g in floor_grew)
    if max(floor_grew) >= GREW:
        broker = [b for f in floors if (b := f.get("cpu", {}).get("broker")) is not None]
        busy = f", at up to {round(max(broker) * 100)} % of one CPU" if broker else ""
        out.append(
            f"{line}; so did the floor's ({shown}), with nothing but the broker between an "
            f"event and its action: the embedded broker slowed as it held more records{busy}"
        )
    else:
        out.append(
            f"{line}; the floor's did not ({shown}): the worker fell behind, or its work per "
            "event grew as the customers' states filled"
        )
    return out


def crowded(cpu: dict[str, float], cpus: int) -> str | None:
    """What to say of a pass during which the machine's ``cpus`` CPUs were busy
    :data:`CROWDED` of the time or more (``cpu["machine"]``, a share of one CPU), or None:
    its processes (the worker, the broker, this bench's producer and reader, anything
    else) waited for a CPU, and its percentiles include those waits, a cost of this
    machine rather than of the worker alone."""
    busy = cpu.get("machine")
    if busy is None or cpus <= 0 or busy < CROWDED * cpus:
        return None
    steal = cpu.get("steal", 0.0)
    return (
        f"the machine was busy {round(busy / cpus * 100)} % of its {cpus} CPUs while "
        f"producing (steal {round(steal / cpus * 100)} %): its processes waited for a CPU, "
        "and the percentiles include those waits"
    )


async def _measure(
    settings: Settings, args: argparse.Namespace, probe: Probe | None = None
) -> tuple[dict[str, float], list[tuple[float, float, bytes]], float, dict[str, float]]:
    """Produce at the rate, consuming the actions meanwhile; returns (event id -> sent
    time, [(arrival time, action record's timestamp, its value)], seconds spent
    producing, and the CPU ``probe`` read over them as shares of one CPU)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A fetch that finds nothing waits at most 10 ms on the broker (aiokafka's
        # default, 500 ms, would be the bench's own delay, not the worker's).
        fetch_max_wait_ms=args.reader_fetch_wait_ms,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    arrivals: list[tuple[float, float, bytes]] = []
    stop = asyncio.Event()

    async def consume() -> None:
        topic = settings.topics.actions
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for records in batches.values():
                arrivals.extend((now, r.timestamp / 1000.0, r.value) for r in records)

    reader = asyncio.create_task(consume())
    sent_at: dict[str, float] = {}
    loads = orjson.loads

    def on_sent(record: SimRecord) -> None:
        event_id = loads(record.value).get("event_id")
        if isinstance(event_id, str):
            sent_at[event_id] = time.time()

    step = dt.timedelta(seconds=1.0 / args.rate)
    simulator = Simulator(
        seed=args.seed,
        customers=args.customers,
        malformed_rate=0.0,
        retry_rate=0.0,
        **(MIXES["storefront"] | {"step_seconds": step.total_seconds()}),
    )

    def on_the_wall_clock() -> Iterator[SimRecord]:
        while True:  # dated now (+/- a step's jitter), in order
            simulator.clock = max(simulator.clock, dt.datetime.now(dt.UTC) - step)
            yield simulator.next()

    try:
        await asyncio.sleep(1.0)  # the reader is assigned before the first event goes out
        say(f"bench: producing {args.rate:g} events/s for {args.seconds:g} s ...")
        cpu_before = probe() if probe is not None else {}
        started = time.perf_counter()
        sent = await produce(
            settings, on_the_wall_clock(), rate=args.rate, duration=args.seconds, on_sent=on_sent
        )
        produced = time.perf_counter() - started
        cpu = cpu_shares(cpu_before, probe(), produced) if probe is not None else {}
        say(
            f"bench: sent {sent:,} events in {produced:.1f} s ({sent / produced:,.0f}/s); "
            f"waiting {args.settle:g} s for the last actions ..."
        )
        await asyncio.sleep(args.settle)
    finally:
        stop.set()
        await reader
        await consumer.stop()
    return sent_at, arrivals, produced, cpu


def on_the_wire(
    sent_at: dict[str, float], arrivals: list[tuple[float, float, bytes]], counted_from: float
) -> dict[str, Any]:
    """Percentiles of arrival - trigger sent, over the actions an event triggered directly;
    and its two parts: trigger sent -> the action record's timestamp (the worker's
    producer's send time, same machine clock) and that -> arrival on the bench."""
    kinds: Counter[str] = Counter()
    latencies: list[float] = []
    by_type: dict[str, list[float]] = {}
    #: (latency, action type, rule, arrival - the action's created_at, triggers named,
    #: triggers this run sent)
    examples: list[tuple[float, str, str, float, int, int]] = []
    to_send: list[float] = []
    to_arrive: list[float] = []
    #: (when its trigger was sent, latency) of each counted action
    timed: list[tuple[float, float]] = []
    for arrived, stamped, value in arrivals:
        action = orjson.loads(value)
        if action.get("clock") != "event":
            kinds["timer (clock wall)"] += 1
            continue
        if action.get("not_before") is not None:
            kinds["deferred by the contact policy"] += 1
            continue
        if str(action.get("rule_id", "")).startswith(CROSS_CUSTOMER):
            kinds["cross-customer (aggregates.*)"] += 1
            continue
        sent = [sent_at[e] for e in action.get("trigger_event_ids", ()) if e in sent_at]
        if not sent:
            kinds["unmatched (no trigger this run sent)"] += 1
            continue
        if max(sent) < counted_from:
            kinds["warm-up"] += 1
            continue
        kinds["counted"] += 1
        latency = arrived - max(sent)
        latencies.append(latency)
        timed.append((max(sent), latency))
        to_send.append(stamped - max(sent))
        to_arrive.append(arrived - stamped)
        by_type.setdefault(str(action.get("action_type")), []).append(latency)
        created = dt.datetime.fromisoformat(str(action.get("created_at"))).timestamp()
        triggers = action.get("trigger_event_ids", ())
        examples.append(
            (
                latency,
                action.get("action_type"),
                action.get("rule_id"),
                arrived - created,
                len(triggers),
                len(sent),
            )
        )
    latencies.sort()
    quarters = by_quarter(timed, counted_from)
    first, last = (quarters[0]["p50_ms"], quarters[-1]["p50_ms"]) if quarters else (None, None)
    out: dict[str, Any] = {
        "actions_received": len(arrivals),
        "by_kind": dict(sorted(kinds.items())),
        "counted": len(latencies),
        "quarters": quarters,
        "last_to_first_p50": round(last / first, 2) if first and last is not None else None,
    }
    if latencies:
        out |= {f"p{round(q * 100)}_ms": round(1000 * _rank(latencies, q), 1) for q in QUANTILES}
        out["max_ms"] = round(1000 * latencies[-1], 1)
        out["mean_ms"] = round(1000 * sum(latencies) / len(latencies), 1)
        for name, part in (("worker_sent", to_send), ("delivered", to_arrive)):
            part.sort()
            out[name] = {
                f"p{round(q * 100)}_ms": round(1000 * _rank(part, q), 1) for q in QUANTILES
            }
            out[name]["max_ms"] = round(1000 * part[-1], 1)
        out["by_action_type"] = {
            kind: {
                "counted": len(values),
                "p50_ms": round(1000 * _rank(sorted(values), 0.5), 1),
                "p99_ms": round(1000 * _rank(sorted(values), 0.99), 1),
            }
            for kind, values in sorted(by_type.items())
        }
        out["slowest"] = [
            {
                "latency_ms": round(1000 * lat, 1),
                "action_type": kind,
                "rule_id": rule,
                "since_created_at_ms": round(1000 * since, 1),
                "trigger_event_ids": named,
                "triggers_sent_this_run": known,
            }
            for lat, kind, rule, since, named, known in sorted(examples, reverse=True)[:5]
        ]
    return out


def by_quarter(timed: list[tuple[float, float]], start: float) -> list[dict[str, Any]]:
    """The counted actions in four equal spans of the time their triggers were sent, from
    ``start`` to the last one (which the last span holds): per span, the actions counted
    and their p50 and p99 (None where none was). A worker that keeps up reads about the
    same in all four; one that falls behind, more in each (:func:`verdict`)."""
    if not timed:
        return []
    span = (max(t for t, _ in timed) - start) / 4
    spans: list[list[float]] = [[], [], [], []]
    for sent, latency in timed:
        spans[3 if span <= 0 else min(3, max(0, int((sent - start) / span)))].append(latency)
    out = []
    for values in spans:
        values.sort()
        out.append(
            {
                "counted": len(values),
                "p50_ms": round(1000 * _rank(values, 0.5), 1) if values else None,
                "p99_ms": round(1000 * _rank(values, 0.99), 1) if values else None,
            }
        )
    return out


def _rank(ordered: list[float], q: float) -> float:
    """The nearest-rank q-quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def worker_histograms(page: str) -> dict[str, Any]:
    """Count, sum and cumulative buckets of the worker's latency histograms, and each
    quantile's bucket bound (the smallest ``le`` holding at least that share)."""
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(page):
        if family.name not in HISTOGRAMS:
            continue
        buckets: list[tuple[float, float]] = []
        count = total = 0.0
        for s in family.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value
        buckets.sort()
        quantiles = {}
        for q in QUANTILES:
            bound = next((le for le, n in buckets if count and n >= q * count), None)
            quantiles[f"p{round(q * 100)}_le_s"] = bound
        out[family.name] = {
            "count": int(count),
            "mean_s": round(total / count, 4) if count else None,
            **quantiles,
            "buckets": [[le, int(n)] for le, n in buckets],
        }
    return out


def render(r: dict[str, Any]) -> str:
    p, e = r["parameters"], r["event_to_action"]
    head = (
        f"crmstream event -> action latency: {p['rate']:g} events/s open loop for "
        f"{p['seconds']:g} s ({r['achieved_rate']} achieved), {p['customers']:,} customers, "
        f"storefront mix, live clock, 1 worker, {r['machine']['nproc']} CPUs"
    )
    rows = [("events sent", f"{r['events_sent']:,}")]
    rows.append(("actions received", f"{e['actions_received']:,} ({e['by_kind']})"))
    if e["counted"]:
        rows.append(
            (
                f"event -> action on the wire ({e['counted']:,} actions)",
                f"p50 {e['p50_ms']:,.1f} ms, p95 {e['p95_ms']:,.1f} ms, p99 {e['p99_ms']:,.1f} ms,"
                f" max {e['max_ms']:,.1f} ms",
            )
        )
        for part, what in (
            ("worker_sent", "  of it: trigger sent -> action's record timestamp"),
            ("delivered", "  of it: action's record timestamp -> arrival"),
        ):
            q = e[part]
            rows.append(
                (
                    what,
                    f"p50 {q['p50_ms']:,.1f} ms, p99 {q['p99_ms']:,.1f} ms, "
                    f"max {q['max_ms']:,.1f} ms",
                )
            )
        quarters = e.get("quarters") or []
        if quarters:
            grew = e.get("last_to_first_p50")
            rows.append(
                (
                    "  by quarter of the window (trigger sent)",
                    f"p50 {_listed(q['p50_ms'] for q in quarters)} ms, "
                    f"p99 {_listed(q['p99_ms'] for q in quarters)} ms"
                    + (f" (last / first p50: {grew:.2f})" if grew is not None else ""),
                )
            )
    cpu = r.get("cpu") or {}
    if cpu:
        parts = []
        if "worker" in cpu:
            loop = cpu.get("worker_loop")
            parts.append(
                f"worker {round(cpu['worker'] * 100)} %"
                + (f" (event loop {round(loop * 100)} %)" if loop is not None else "")
            )
        elif "worker_loop" in cpu:
            parts.append(f"worker's event loop {round(cpu['worker_loop'] * 100)} %")
        parts += [
            f"{name} {round(cpu[name] * 100)} %" for name in ("broker", "bench") if name in cpu
        ]
        shown = ", ".join(parts)
        if "machine" in cpu:
            cpus = (r.get("machine") or {}).get("nproc") or os.cpu_count() or 1
            shown += (
                f"; the machine {round(cpu['machine'] * 100)} % of {cpus * 100} % "
                f"(steal {round(cpu.get('steal', 0.0) * 100)} %)"
            )
        rows.append(("CPU while producing (share of one CPU)", shown))
    if r.get("crowded"):
        rows.append(("the CPUs nearly full", r["crowded"]))
    for finding in r.get("verdict") or ():
        rows.append(("not a steady state", finding))
    for n, floor in enumerate(r.get("floor", ()), 1):
        f = floor["event_to_action"]
        if f["counted"]:
            rows.append(
                (
                    f"floor pass {n}: bench.relay, no work ({f['counted']:,} actions)",
                    f"p50 {f['p50_ms']:,.1f} ms, p95 {f['p95_ms']:,.1f} ms, "
                    f"p99 {f['p99_ms']:,.1f} ms, max {f['max_ms']:,.1f} ms",
                )
            )
            if f.get("quarters"):
                broker = floor.get("cpu", {}).get("broker")
                machine = floor.get("cpu", {}).get("machine")
                rows.append(
                    (
                        "  by quarter of the window (trigger sent)",
                        f"p50 {_listed(q['p50_ms'] for q in f['quarters'])} ms"
                        + (
                            f"; the broker at {round(broker * 100)} % of one CPU"
                            if broker is not None
                            else ""
                        )
                        + (
                            f", the machine at {round(machine * 100)} %"
                            if machine is not None
                            else ""
                        ),
                    )
                )
        else:
            rows.append((f"floor pass {n}: bench.relay, no work", "no action counted"))
    if r.get("ratio_to_floor"):
        rows.append(
            (
                "crmstream / floor (mean of the floor passes)",
                ", ".join(f"{k} {v:.2f}x" for k, v in r["ratio_to_floor"].items()),
            )
        )
    for name, h in r["worker_histograms"].items():
        unit = "" if name == "crm_batch_records" else " s"
        rows.append(
            (
                f"worker {name}",
                f"count {h['count']:,}, mean {h['mean_s']}{unit}, p50 <= {h['p50_le_s']}{unit}, "
                f"p95 <= {h['p95_le_s']}{unit}, p99 <= {h['p99_le_s']}{unit}",
            )
        )
    rows.append(
        (
            "load average before / after",
            f"{' '.join(map(str, r['load_average_before']))} / "
            f"{' '.join(map(str, r['load_average_after']))}",
        )
    )
    probe = memory_probe_row(r.get("machine"))
    if probe:
        rows.append(probe)
    width = max(len(k) for k, _ in rows)
    return "\n".join([head, "-" * len(head), *(f"{k:<{width}}  {v}" for k, v in rows)])


def _listed(values: Iterable[float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:,.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
