"""``crmstream demo`` and ``crmstream up``: the embedded stack, end to end.

Starts the Tansu broker and a Redis server, creates the topics, starts N
workers (child processes, one web port each) and waits until they are ready;
``demo`` then runs the simulator and shows what flows. Ctrl-C (or the end of
``--duration``) stops everything, workers first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from streams import codec
from streams.embedded import Child, Stack, free_port
from streams.errors import EmbeddedServiceError
from streams.settings import Settings
from streams.simulator import SimRecord, Simulator, produce
from streams.topics import ensure_topics
from streams.watch import Tally, follow


@dataclass
class StackOptions:
    workers: int = 1
    partitions: int = 4
    workdir: Path | None = None
    rules_file: str = ""
    ready_timeout: float = 120.0
    #: "live" or "replay" (CRM_CLOCK); the demo replays the simulator's own timeline.
    clock: str = "live"
    clock_lateness: float = 0.0


@dataclass
class DemoOptions:
    seed: int = 7
    customers: int = 300
    rate: float = 200.0
    duration: float = 0.0
    malformed_rate: float = 0.02
    retry_rate: float = 0.01
    live: bool = True
    summary_path: Path | None = None


@dataclass
class Running:
    stack: Stack
    settings: Settings
    workers: list[tuple[Child, int]]

    def web_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for _, port in self.workers]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def handle_sigterm() -> None:
    """SIGTERM stops the stack like Ctrl-C does (children are stopped, not orphaned)."""
    signal.signal(signal.SIGTERM, _interrupt)


def start_stack(options: StackOptions) -> Running:
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="crmstream-"))
    stack = Stack(workdir)
    try:
        say(f"crmstream: starting Tansu broker and Redis (logs in {workdir})")
        stack.start_broker()
        stack.start_redis()
        settings = dataclasses.replace(
            Settings(),
            kafka_broker=stack.broker_url,
            redis_url=stack.redis_url,
            partitions=options.partitions,
            rules_file=options.rules_file,
            clock=options.clock,
            clock_lateness=options.clock_lateness,
            session_timeout=6.0,
            rebalance_timeout=6.0,
        )
        settings.validate()
        asyncio.run(ensure_topics(settings))
        workers = []
        for index in range(options.workers):
            port = free_port()
            env = settings.as_env() | {
                "CRM_WEB_PORT": str(port),
                "CRM_DATA_DIR": str(workdir / f"worker-{index}"),
            }
            workers.append((stack.start_worker(f"worker-{index}", env), port))
        running = Running(stack, settings, workers)
        say(f"crmstream: waiting for {options.workers} worker(s) to join the group ...")
        wait_ready(running, options.ready_timeout)
        return running
    except BaseException:
        stack.close()
        raise


def wait_ready(running: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(zip(running.web_urls(), running.workers, strict=True))
    while pending:
        for url, (child, _) in list(pending.items()):
            if child.proc.poll() is not None:
                raise EmbeddedServiceError(
                    f"{child.name} exited with code {child.proc.returncode}; see {child.log_path}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/readyz", timeout=2) as r,
            ):
                if r.status == 200:
                    say(f"crmstream: {child.name} ready at {url}")
                    del pending[url]
        if pending and time.monotonic() > deadline:
            raise EmbeddedServiceError(
                f"workers not ready after {timeout:.0f}s: {', '.join(pending)}"
            )
        time.sleep(0.5)


def print_addresses(running: Running) -> None:
    s = running.settings
    say("")
    say(f"  broker (Kafka protocol): {s.broker_bootstrap}")
    say(f"  Redis:                   {s.redis_url}")
    for url in running.web_urls():
        say(f"  worker metrics:          {url}/metrics   (ready: {url}/readyz)")
    say(f"  topics in:  {', '.join(s.topics.inputs)}")
    say(f"  topics out: {', '.join(s.topics.outputs)}")
    say(f"  logs:       {running.stack.workdir}")
    say("")


def up(options: StackOptions) -> int:
    """Start broker, Redis and workers; print where they are; run until Ctrl-C."""
    handle_sigterm()
    running = start_stack(options)
    try:
        print_addresses(running)
        say("crmstream: up. Point your producers at the broker above; Ctrl-C stops everything.")
        _wait_for_signal(running)
    finally:
        say("crmstream: stopping ...")
        running.stack.close()
    return 0


def demo(options: StackOptions, demo_options: DemoOptions) -> int:
    """The embedded stack plus the simulator, with a live view of what flows."""
    handle_sigterm()
    # The simulator keeps its own clock (events minutes apart, from 2026-01-01), so
    # timers fire on that event time (the replay clock), an hour behind the latest
    # event of each partition: follow-ups, reminders and win-backs appear as the
    # simulated days pass, and the same seed gives the same actions.
    running = start_stack(dataclasses.replace(options, clock="replay", clock_lateness=3600.0))
    try:
        print_addresses(running)
        tally = asyncio.run(_simulate_and_watch(running, demo_options))
    finally:
        say("crmstream: stopping workers, Redis and broker ...")
        running.stack.close()
    summary = tally.summary()
    say(
        f"crmstream: {summary['events_produced']} events sent "
        f"({summary['malformed_sent']} malformed), {summary['actions']} actions out, "
        f"{summary['dead_letters']} dead letters"
    )
    if demo_options.summary_path is not None:
        demo_options.summary_path.write_bytes(codec.dumps_sorted(summary))
    return 0


async def _simulate_and_watch(running: Running, options: DemoOptions) -> Tally:
    from streams.live import LiveView

    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def on_sent(record: SimRecord) -> None:
        tally.produced[record.family] += 1
        if record.malformed:
            tally.malformed_sent += 1
            tally.produced_types["(malformed)"] += 1
        else:
            tally.produced_types[codec.loads(record.value)["type"]] += 1

    simulator = Simulator(
        seed=options.seed,
        customers=options.customers,
        malformed_rate=options.malformed_rate,
        retry_rate=options.retry_rate,
    )
    watcher = asyncio.create_task(follow(running.settings, tally, stop))
    view = LiveView(tally, running.web_urls(), live=options.live)
    painter = asyncio.create_task(view.run(stop))
    try:
        await produce(
            running.settings,
            iter(simulator),
            rate=options.rate,
            duration=options.duration,
            on_sent=on_sent,
            stop=stop,
        )
        if not stop.is_set():
            await _drain(tally, stop, quiet_for=4.0, limit=30.0)
    finally:
        stop.set()
        await asyncio.gather(watcher, painter, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return tally


async def _drain(tally: Tally, stop: asyncio.Event, quiet_for: float, limit: float) -> None:
    """After the simulator stops, wait until actions and dead letters stop arriving."""
    last = (-1, -1)
    quiet_since = time.monotonic()
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        now = (sum(tally.actions.values()), sum(tally.dead_letters.values()))
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_for:
            return
        await asyncio.sleep(0.25)


def _wait_for_signal(running: Running) -> None:
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop:
        for child, _ in running.workers:
            if child.proc.poll() is not None:
                code = child.proc.returncode
                say(f"crmstream: {child.name} exited ({code}); see {child.log_path}")
                return
        time.sleep(0.5)
