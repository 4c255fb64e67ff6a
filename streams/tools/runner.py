"""``crmstream demo`` and ``crmstream up``: the embedded stack, end to end.

Starts the Tansu broker and a Redis server, creates the topics, starts N
workers (child processes, one web port each) and waits until they are ready;
``demo`` then runs the simulator and shows what flows. Ctrl-C (or the end of
``--duration``) stops everything, workers first.

A worker that exits is started again (:class:`Supervisor`, with back-off:
:class:`RestartPolicy`) under the same name, web port, data directory and (a
lone worker with a session timeout over 3 s only, see :func:`worker_env`) static
group membership name, so it takes its partitions back; one that keeps dying (5
exits within a minute) stops the stack with a message naming its log.

The workers get the user's settings (:func:`stack_settings`): every ``CRM_*``
variable of the environment passes through, a flag (``--partitions``,
``--rules``, ``--clock``, ``--clock-lateness``) wins over its variable, and the
stack's defaults fill in what neither gives. Only what the embedded stack must
own is set by it: ``KAFKA_BROKER``, ``REDIS_URL``, per worker ``CRM_WEB_PORT``
and ``CRM_DATA_DIR``, and no Kafka or Redis credentials (its loopback broker and
Redis take none) (:data:`STACK_OWNED`). Bad values stop it before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.rules import Rules
from schemas import codec
from schemas.errors import ConfigError, EmbeddedServiceError
from streams.settings import Env, Settings
from streams.tools.embedded import Child, Stack, free_port
from streams.tools.replay import duration_text
from streams.tools.simulator import SimRecord, Simulator, produce
from streams.tools.watch import Tally, follow
from streams.topics import ensure_topics

#: Variables the embedded stack sets itself, whatever the environment says (plus
#: ``CRM_PARTITIONS`` when ``--partitions`` is given).
STACK_OWNED = (
    Env.KAFKA_BROKER,
    Env.REDIS_URL,
    Env.WEB_PORT,
    Env.DATA_DIR,
    # The stack's broker and Redis are plain-text and password-less on loopback:
    # credentials meant for a production cluster would only break them.
    Env.KAFKA_SECURITY_PROTOCOL,
    Env.KAFKA_SASL_MECHANISM,
    Env.KAFKA_SASL_USERNAME,
    Env.KAFKA_SASL_PASSWORD,
    Env.KAFKA_SSL_CA_FILE,
    Env.KAFKA_SSL_CERT_FILE,
    Env.KAFKA_SSL_KEY_FILE,
    Env.KAFKA_SSL_KEY_PASSWORD,
    Env.REDIS_USERNAME,
    Env.REDIS_PASSWORD,
    Env.REDIS_SSL_CA_FILE,
    Env.REDIS_SSL_CERT_FILE,
    Env.REDIS_SSL_KEY_FILE,
)

#: The stack's own defaults, for settings neither a flag nor the environment gives:
#: short consumer-group timeouts, so rebalances and restarts take seconds (a 3 s
#: session: :data:`STATIC_AFTER`; a heartbeat a second, sent from faust's consumer
#: thread, which a busy event loop does not hold up), and a short
#: assignment watch: on the embedded broker a worker stopped in the middle of a
#: rebalance can stay the group's leader (deploy/RUNBOOK.md, "A worker never gets
#: partitions") until a member leaves and rejoins.
STACK_DEFAULTS: dict[str, float] = {
    "session_timeout": 3.0,
    "rebalance_timeout": 6.0,
    "assignment_timeout": 20.0,
}
_DEFAULT_ENV = {
    "session_timeout": Env.SESSION_TIMEOUT,
    "rebalance_timeout": Env.REBALANCE_TIMEOUT,
    "assignment_timeout": Env.ASSIGNMENT_TIMEOUT,
}

#: The true conversion uplift the demo's simulated messaging service gives each action
#: type (``crmstream demo --messaging``); the rest have none.
DEMO_UPLIFT = {"repurchase_reminder": 0.05, "welcome_back": 0.03, "browse_recommendation": 0.02}

#: The demo's clock: the simulator keeps its own compressed timeline (events minutes
#: apart, from 2026-01-01), so timers fire on that event time (the replay clock), an
#: hour behind each partition's latest event.
DEMO_CLOCK = ("replay", 3600.0)


@dataclass
class StackOptions:
    workers: int = 1
    #: None: ``CRM_PARTITIONS``, else the settings' default (4).
    partitions: int | None = None
    workdir: Path | None = None
    #: None: ``CRM_RULES_FILE``, else domain.md's defaults.
    rules_file: str | None = None
    ready_timeout: float = 120.0
    #: "live" or "replay"; None: ``CRM_CLOCK``, else ``clock_default``'s clock.
    clock: str | None = None
    #: Seconds; None: ``CRM_CLOCK_LATENESS``, else ``clock_default``'s lateness when
    #: the clock is that one, else the settings' default (0).
    clock_lateness: float | None = None
    #: (clock, lateness) when neither a flag nor the environment names the clock.
    clock_default: tuple[str, float] = ("live", 0.0)
    #: The environment the settings come from (None: this process's).
    environ: Mapping[str, str] | None = field(default=None, repr=False)


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
    #: Run the simulated messaging service too (streams.tools.messaging): outcomes and
    #: conversions flow, and ``crmstream report actions`` fills in. Off: the demo's
    #: own orders stay the simulator's alone.
    messaging: bool = False


@dataclass
class Running:
    stack: Stack
    settings: Settings
    workers: list[tuple[Child, int]]
    #: The settings' variables taken from the user's environment (names only).
    from_env: list[str] = field(default_factory=list)

    def web_urls(self) -> list[str]:
        host = self.settings.web_host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return [f"http://{host}:{port}" for _, port in self.workers]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def handle_sigterm() -> None:
    """SIGTERM stops the stack like Ctrl-C does (children are stopped, not orphaned)."""
    signal.signal(signal.SIGTERM, _interrupt)


def stack_settings(
    options: StackOptions,
    environ: Mapping[str, str],
    *,
    broker_url: str | None = None,
    redis_url: str | None = None,
) -> Settings:
    """The embedded stack's settings: flags > ``environ`` > the stack's defaults > the
    settings' defaults; ``KAFKA_BROKER`` and ``REDIS_URL`` are the stack's own
    (``broker_url``, ``redis_url``; None: a placeholder, to check the rest before
    the stack starts; the ``REDIS_*`` security variables are folded into the Redis
    URL). :class:`ConfigError` names the variable (or flag) that is wrong.
    """
    defaults = Settings()
    flags = _flags(options)
    overridden = set(flags)
    env = {k: v for k, v in environ.items() if k not in STACK_OWNED and k not in overridden}
    env[Env.KAFKA_BROKER] = broker_url or defaults.kafka_broker
    env[Env.REDIS_URL] = redis_url or defaults.redis_url.get_secret_value()
    settings = Settings.from_env(env)
    given = {name for name, value in env.items() if value != ""}
    values: dict[str, Any] = {
        name: value for name, value in STACK_DEFAULTS.items() if _DEFAULT_ENV[name] not in given
    }
    default_clock, default_lateness = options.clock_default
    clock = options.clock or (settings.clock if Env.CLOCK in given else default_clock)
    values["clock"] = clock
    if options.clock_lateness is not None:
        values["clock_lateness"] = options.clock_lateness
    elif Env.CLOCK_LATENESS not in given and clock == default_clock:
        values["clock_lateness"] = default_lateness
    if options.partitions is not None:
        values["partitions"] = options.partitions
    if options.rules_file is not None:
        values["rules_file"] = options.rules_file
    try:
        settings = settings.replace(**values)
    except ConfigError as exc:
        if exc.key in overridden:
            raise ConfigError(flags[exc.key][0], exc.problem) from None
        raise
    return settings


def _flags(options: StackOptions) -> dict[str, tuple[str, object]]:
    """Variable -> (flag, value) of the flags given (they win over the variable)."""
    flags = {
        Env.PARTITIONS: ("--partitions", options.partitions),
        Env.RULES_FILE: ("--rules", options.rules_file),
        Env.CLOCK: ("--clock", options.clock),
        Env.CLOCK_LATENESS: ("--clock-lateness", options.clock_lateness),
    }
    return {name: flag for name, flag in flags.items() if flag[1] is not None}


def given_variables(options: StackOptions, environ: Mapping[str, str]) -> list[str]:
    """The settings' variables of ``environ`` that reach the workers (names only):
    set, not owned by the stack, not replaced by a flag."""
    known = set(Settings().as_env()) | {
        Env.REDIS_USERNAME,
        Env.REDIS_PASSWORD,
        Env.REDIS_SSL_CA_FILE,
        Env.REDIS_SSL_CERT_FILE,
        Env.REDIS_SSL_KEY_FILE,
    }
    skip = {*STACK_OWNED, *_flags(options)}
    return sorted(k for k, v in environ.items() if k in known and v and k not in skip)


#: The session timeout (seconds) above which the stack's lone worker is a static member
#: (:func:`worker_env`). The embedded broker holds a static member's JoinGroup and
#: SyncGroup 3 s each, whatever the timeouts: 6 s of every start. It holds a dynamic
#: member's JoinGroup half its session timeout, in whole seconds, and a crashed one
#: keeps its partitions until its session ends. Measured (``bench.restart``, 50k
#: customers): static, ready 8.3 s after a stop or a crash; dynamic at a 3 s session,
#: 4.3-4.6 s after either; at 6 s, 5.3 s after a stop and 13.6 s after a crash.
STATIC_AFTER = 3.0


def worker_env(
    settings: Settings,
    port: int,
    data_dir: Path,
    index: int | str | None = None,
    workers: int = 1,
) -> dict[str, str]:
    """A worker's environment: every setting, plus its own web port and data directory,
    and (``index`` given, ``workers`` -- how many run at once -- 1, and a session
    timeout over :data:`STATIC_AFTER`) its own static group membership name, so a
    restarted worker takes its partitions back without waiting out the session
    timeout. With the stack's own 3 s session a lone worker is a dynamic member:
    on the embedded broker that restarts faster, after a stop or a crash.

    A name is given only to a lone worker: the embedded broker (Tansu
    0.6) mishandles static members that rebalance among themselves -- one stopped
    mid-rebalance stays the leader of a group that never forms, or its successor
    under the same name is fenced after every join (measured: bench.determinism's
    rebalance scenario stalled 4 of 4 times, for good) -- while dynamic members are
    expired after the session timeout as they should be (deploy/RUNBOOK.md).
    """
    env = settings.as_env() | {Env.WEB_PORT: str(port), Env.DATA_DIR: str(data_dir)}
    if index is not None and workers == 1 and settings.session_timeout > STATIC_AFTER:
        env[Env.GROUP_INSTANCE_ID] = static_member_name(settings, index)
    return env


def static_member_name(settings: Settings, index: int | str) -> str:
    """The static group membership name of the stack's worker ``index``."""
    prefix = settings.group_instance_id or settings.app_id
    return f"{prefix}-worker-{index}"


@dataclass
class RestartPolicy:
    """When to start a worker that exited again, and when to give up (pure).

    The n-th exit within ``window`` seconds waits ``first_delay * 2**(n-1)``
    seconds (at most ``max_delay``) before the restart; the ``max_exits``-th
    within the window gives up. Exits older than the window are forgotten, so a
    worker that runs for a while starts again from the first delay.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    max_exits: int = 5
    window: float = 60.0
    exits: list[float] = field(default_factory=list)

    def exited(self, now: float) -> float | None:
        """Count an exit at ``now``: seconds to wait before the restart, or None (give up)."""
        self.exits = [t for t in self.exits if now - t < self.window]
        self.exits.append(now)
        if len(self.exits) >= self.max_exits:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (len(self.exits) - 1))

    @property
    def attempt(self) -> int:
        """Exits within the window, the last one included (the restart's attempt number)."""
        return len(self.exits)


@dataclass
class _Slot:
    index: int
    policy: RestartPolicy
    restart_at: float | None = None
    restarted: bool = False


class Supervisor:
    """Starts the stack's workers again when they exit (see :class:`RestartPolicy`).

    :meth:`poll` is called every half second by ``up`` and ``demo``; it never blocks
    for long. A restarted worker keeps its name, log, web port, data directory and
    ``CRM_GROUP_INSTANCE_ID``. Raises :class:`EmbeddedServiceError` when one keeps
    dying.
    """

    def __init__(
        self,
        running: Running,
        *,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.running = running
        self._clock = clock
        template = policy or RestartPolicy()
        self._slots = [
            _Slot(i, dataclasses.replace(template, exits=[])) for i in range(len(running.workers))
        ]

    def poll(self) -> None:
        now = self._clock()
        urls = self.running.web_urls()
        for slot in self._slots:
            child, port = self.running.workers[slot.index]
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    slot.restart_at = None
                    slot.restarted = True
                    self.running.workers[slot.index] = (self.running.stack.respawn(child), port)
                continue
            code = child.proc.poll()
            if code is None:
                if slot.restarted and _answers_ready(urls[slot.index]):
                    slot.restarted = False
                    say(f"crmstream: {child.name} ready again at {urls[slot.index]}")
                continue
            delay = slot.policy.exited(now)
            if delay is None:
                raise EmbeddedServiceError(
                    f"{child.name} exited {slot.policy.attempt} times within "
                    f"{slot.policy.window:.0f} s (last: {exit_text(code)}); stopping the stack. "
                    f"See its log: {child.log_path}"
                )
            say(
                f"crmstream: {child.name} exited ({exit_text(code)}); restarting in "
                f"{delay:g} s (attempt {slot.policy.attempt}); log: {child.log_path}"
            )
            slot.restart_at = now + delay


def exit_text(code: int) -> str:
    """A process's exit status in words: ``code 1``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"code {code}"


def _answers_ready(url: str) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(url + "/readyz", timeout=1) as r,
    ):
        return bool(r.status == 200)
    return False


def start_stack(options: StackOptions) -> Running:
    environ = os.environ if options.environ is None else options.environ
    # Every setting and the rules are checked before anything starts.
    Rules.load(stack_settings(options, environ).rules_file)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="crmstream-"))
    stack = Stack(workdir)
    try:
        say(f"crmstream: starting Tansu broker and Redis (logs in {workdir})")
        stack.start_broker()
        stack.start_redis()
        settings = stack_settings(
            options, environ, broker_url=stack.broker_url, redis_url=stack.redis_url
        )
        asyncio.run(ensure_topics(settings))
        workers = []
        for index in range(options.workers):
            port = free_port()
            env = worker_env(settings, port, workdir / f"worker-{index}", index, options.workers)
            workers.append((stack.start_worker(f"worker-{index}", env), port))
        running = Running(stack, settings, workers, given_variables(options, environ))
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
    say(f"  Redis:                   {s.redis_url_shown}")
    for url in running.web_urls():
        say(f"  worker metrics:          {url}/metrics   (ready: {url}/readyz)")
    say(f"  clock:      {clock_text(s)}")
    say(f"  topics in:  {', '.join(s.topics.inputs)}")
    say(f"  topics out: {', '.join(s.topics.outputs)}")
    say(f"  logs:       {running.stack.workdir}")
    if running.from_env:
        say(f"  from the environment: {', '.join(running.from_env)}")
    say("")


def clock_text(s: Settings) -> str:
    """The clock in a few words, for the banner and the live view."""
    late = duration_text(s.clock_lateness)
    if s.clock == "replay":
        where = f"{late} behind" if s.clock_lateness else "at"
        return (
            f"replay (timers fire on event time, {where} each partition's stream time; "
            "see crmstream clock show)"
        )
    behind = f", {late} behind" if s.clock_lateness else ""
    return f"live (timers fire on the wall clock{behind} once inputs are caught up)"


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
    # Unless told otherwise, timers fire on the simulator's event time (DEMO_CLOCK):
    # follow-ups, reminders and win-backs appear as the simulated days pass, and the
    # same seed gives the same actions.
    running = start_stack(dataclasses.replace(options, clock_default=DEMO_CLOCK))
    try:
        print_addresses(running)
        tally = asyncio.run(_simulate_and_watch(running, demo_options))
        if demo_options.messaging:
            _print_action_report(running)
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


def _print_action_report(running: Running) -> None:
    """The uplift report (``crmstream report actions``) of what the demo produced."""
    from agents.uplift import table
    from streams.tools.report import action_report

    try:
        report = asyncio.run(action_report(running.settings, read_timeout=60.0))
    except Exception as exc:  # the demo's summary matters more than the report
        say(f"crmstream: no action report ({type(exc).__name__}: {exc})")
        return
    say("crmstream: actions, treated vs held out (crmstream report actions):")
    say(table(report))


async def _simulate_and_watch(running: Running, options: DemoOptions) -> Tally:
    from streams.tools.live import LiveView

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
    failure: list[BaseException] = []
    supervisor = asyncio.create_task(_supervise(Supervisor(running), stop, failure))
    watcher = asyncio.create_task(follow(running.settings, tally, stop))
    view = LiveView(
        tally, running.web_urls(), live=options.live, clock=clock_text(running.settings)
    )
    painter = asyncio.create_task(view.run(stop))
    tasks: list[asyncio.Task[Any]] = [watcher, painter, supervisor]
    if options.messaging:
        from streams.tools.messaging import MessagingConfig
        from streams.tools.messaging import run as answer_actions

        config = MessagingConfig(uplift=DEMO_UPLIFT, seed=options.seed)
        tasks.append(asyncio.create_task(answer_actions(running.settings, config, stop=stop)))
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
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if failure:
        raise failure[0]
    return tally


async def _supervise(
    supervisor: Supervisor, stop: asyncio.Event, failure: list[BaseException]
) -> None:
    """The demo's :class:`Supervisor` loop; a worker that keeps dying stops the demo."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(supervisor.poll)
        except EmbeddedServiceError as exc:
            failure.append(exc)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


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
    """Until Ctrl-C or SIGTERM, start workers that exit again (:class:`Supervisor`)."""
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    supervisor = Supervisor(running)
    while not stop:
        supervisor.poll()
        time.sleep(0.5)
