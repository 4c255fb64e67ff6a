"""Determinism acceptance (issue 11): one input history, processed from scratch in
several ways, must give the same outputs and the same final state per customer.

    python -m bench.determinism                        # every scenario, default size
    python -m bench.determinism --short                # the CI-sized run (< 3 min)
    python -m bench.determinism --scenarios reference,again --json det.json

A black-box test through the real broker (Tansu) and Redis:

1. Starts the embedded stack (or uses one given to :func:`run_on_stack`, e.g. the
   integration tests' session stack).
2. Produces ONE simulator history (fixed seed, customers and events; malformed
   records and retries included) into fresh input topics, waits for every ack,
   and takes each partition's exact end offset from the acks (Tansu's
   ``ListOffsets(latest)`` reads short: base offset of the last batch + 1).
3. Runs each scenario with its own consumer group (``CRM_APP_ID``), its own
   output topics and commands topic (written by its own aggregates agent), its own
   Redis database (the action ledger) and the replay clock:

   - ``reference``: one worker from scratch until drained;
   - ``again``: the same, a second time;
   - ``rebalance``: worker 1; worker 2 joins; worker 1 stops (SIGTERM); worker 1
     comes back; until drained;
   - ``sigkill``: one worker, SIGKILLed after ``--first-kill-after`` seconds, then
     every ``--kill-every`` seconds, and restarted at once, until the input is
     drained.

   A fault scenario must inject its faults while input is left: one whose worker 2
   joined, or whose worker 1 was stopped, once the input had drained, or that
   drained before its first SIGKILL, tested nothing and fails ("NOT EXERCISED", with
   the option to change).

   Drained = the group's committed offset of every input partition has reached
   its end (and of every partition of its signals and commands topics its listed
   end), every running
   worker answers ``/readyz``, and no output record has appeared for
   ``--settle`` seconds. A scenario fails when it does not drain within
   ``--drain-timeout``, when its committed input moves by less than 100 records
   in ``--stall-timeout`` (e.g. a worker killed faster than it can commit), or
   when a worker exits by itself.
4. Reads every output topic and the ``{app_id}-customers-changelog`` from the
   beginning and compares each scenario with ``reference``: actions by
   ``action_id``, decisions by ``decision_id``, changes by ``change_id``, flags by
   (``flag_id``, ``status``), dead letters by (source topic, partition, offset,
   code; ``received_at`` is wall time and left out), and the final state of
   every customer. That includes the customers the aggregates agent proposed an
   action to (the workers promise how far proposals are dated,
   ``--proposal-lookahead``); with ``--proposal-lookahead 0`` a proposal enters
   where it arrives, and those customers are compared on their own, reported and
   not required to agree (set aside).

Exit 0 only when every difference is 0 (repeats of an id with identical content
are reported, not counted: the system is at-least-once with deterministic ids);
1 otherwise (differences, a scenario that did not drain or stalled, a worker that
crashed); 2 for a usage error.
Progress goes to stderr, the report to stdout; ``--json FILE`` writes all figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.rules import Rules
from schemas import codec
from schemas.base import zoned_timestamp
from schemas.commands import PROMISE_KEY, read_promise
from schemas.errors import BrokerUnreachable, CrmStreamError
from streams.app import proposals_promised
from streams.settings import Settings, Topics
from streams.tools.embedded import Child, Stack, free_port
from streams.tools.runner import STACK_DEFAULTS, handle_sigterm, worker_env
from streams.tools.simulator import MIXES, Simulator
from streams.tools.topic_read import read_to_end
from streams.topics import ensure_topics

SCENARIOS = ("reference", "again", "rebalance", "sigkill")
#: The table whose changelog holds the final state per customer.
CUSTOMERS_TABLE = "customers"
#: Table keys starting with this are reserved (seal and clock records), never customers.
RESERVED_KEY_PREFIX = "\x00"
#: How many example ids / customers a report shows per family.
EXAMPLES = 3
#: Committed input records that count as progress for --stall-timeout.
STALL_STEP = 100


def say(message: str) -> None:
    print(f"determinism: {message}", file=sys.stderr, flush=True)


class ScenarioError(Exception):
    """A scenario could not finish (did not drain, a worker died, ...); says why."""


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """One run's parameters. :data:`DEFAULT` and :data:`SHORT` are the two presets."""

    seed: int = 7
    customers: int = 2_000
    events: int = 60_000
    #: The history's mix (streams.tools.simulator.MIXES): the personas' own
    #: ("simulator": about half the events orders, complaints and reviews, minutes apart,
    #: so care timers fire and actions go out for about one event in two), or a shop's
    #: traffic ("storefront": mostly views and searches, seconds apart).
    mix: str = "simulator"
    partitions: int = 4
    malformed_rate: float = 0.01
    retry_rate: float = 0.01
    scenarios: tuple[str, ...] = SCENARIOS
    #: sigkill: seconds between SIGKILLs (each followed at once by a restart).
    kill_every: float = 8.0
    #: sigkill: seconds from the start to the first SIGKILL (0: kill_every). Early: the
    #: default history drains in about 9 s of one worker's work, and a scenario whose
    #: faults all come once the input has drained fails as not exercised.
    first_kill_after: float = 2.0
    #: sigkill: count each interval from the restarted worker's readiness (seconds of
    #: work between kills) rather than from its spawn.
    kill_after_ready: bool = True
    #: rebalance: seconds after worker 1 starts before worker 2 starts (and joins).
    join_after: float = 6.0
    #: rebalance: seconds after both workers are ready before worker 1 is stopped (SIGTERM).
    stop_after: float = 0.5
    #: rebalance: seconds after worker 1 stopped before it starts again (0: it stays down).
    restart_after: float = 3.0
    #: Seconds without a new output record before a scenario counts as drained.
    settle: float = 5.0
    #: Seconds a scenario may take, from its first worker's start to drained.
    drain_timeout: float = 300.0
    #: Seconds in which the committed lag must drop by STALL_STEP records (or to 0),
    #: else the scenario fails as stalled.
    stall_timeout: float = 90.0
    #: Restart a worker that exits by itself (as a supervisor would) instead of failing
    #: the scenario at once; the crash is still reported and still fails the run.
    restart_crashed: bool = False
    #: Seconds a worker may take to answer /readyz (when the script waits for it).
    ready_timeout: float = 120.0
    clock_lateness: float = 0.0
    #: The workers' CRM_BATCH_MAX (0: the worker's default), the same in every
    #: scenario of a run; outcomes must not depend on it either.
    batch_max: int = 0
    #: The workers' CRM_STATES_PARSED (None: the worker's default): below the customers'
    #: count, states are let go for their bytes and parsed again when read.
    states_parsed: int | None = None
    #: The workers' CRM_PROPOSAL_LOOKAHEAD (None: the worker's default). Above 0, the
    #: customers the aggregates agent proposed an action to must agree like every other;
    #: at 0 a proposal enters its customer's stream where it arrives, so they are
    #: compared on their own and reported, not required to agree (set aside).
    proposal_lookahead: float | None = None
    log_level: str = "info"
    #: Scenario i (in SCENARIOS order) uses Redis database redis_db_base + i.
    redis_db_base: int = 1


DEFAULT = Options()
SHORT = Options(
    # Enough input to outlast worker 2's join (about 7 s on the embedded broker), so
    # that worker 1 is stopped while input is left (121 of its 1,500 customers get a
    # cross-customer proposal).
    customers=1_500,
    events=50_000,
    # SIGKILLs mid-stream: the first 1.5 s after the worker reads, then every 8 s of
    # work (a restart reads again 4-9 s after its spawn on the embedded broker, once the
    # killed member has left the group; the interval counts from then: bench/README.md,
    # "Timing and sizes"). Every 3 s left a worker with 1,500 customers no time to commit
    # its first round: it stalled.
    first_kill_after=1.5,
    kill_every=8.0,
    join_after=3.0,
    stop_after=0.5,
    restart_after=2.0,
    settle=4.0,
    drain_timeout=150.0,
    stall_timeout=60.0,
    ready_timeout=90.0,
)


class _HelpFormatter(argparse.HelpFormatter):
    """Paragraphs wrapped without breaking ``--option-names`` at their hyphens."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.determinism",
        formatter_class=_HelpFormatter,
        description=(
            "Determinism acceptance: one simulator history, processed from scratch by one "
            "worker (reference), again, by two workers with rebalances, and by a worker "
            "SIGKILLed every few seconds; every scenario's actions, decisions, changes, "
            "flags, dead letters and final state per customer are compared with the "
            "reference. Exit 0 only when every difference is 0."
        ),
        epilog=(
            f"Full-run defaults: {_preset_flags(DEFAULT)}. "
            f"--short: {_preset_flags(SHORT, DEFAULT)}. "
            "Options given explicitly override the preset."
        ),
    )
    p.add_argument("--short", action="store_true", help="the CI-sized preset (well under 3 min)")
    p.add_argument(
        "--scenarios",
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: all; reference always runs)",
    )
    p.add_argument("--seed", type=int, help="simulator seed")
    p.add_argument(
        "--mix",
        choices=sorted(MIXES),
        help="the history's mix: the personas' own (simulator, the default: actions for "
        "about one event in two) or a shop's traffic (storefront: mostly browsing)",
    )
    p.add_argument("--customers", type=int, help="simulated customers")
    p.add_argument("--events", type=int, help="input records to produce (malformed included)")
    p.add_argument("--partitions", type=int, help="partitions of every topic (default: 4)")
    p.add_argument("--malformed-rate", type=float, help="share of malformed records (0.01)")
    p.add_argument("--retry-rate", type=float, help="share of retried (repeated) records (0.01)")
    p.add_argument(
        "--kill-every", type=float, help="sigkill: seconds between SIGKILLs (default: 8)"
    )
    p.add_argument(
        "--first-kill-after",
        type=float,
        help="sigkill: seconds from the start to the first SIGKILL (default: 2; 0: --kill-every)",
    )
    p.add_argument(
        "--kill-from-spawn",
        dest="kill_after_ready",
        action="store_const",
        const=False,
        help="sigkill: count --kill-every from each restart's spawn instead of from the "
        "moment it reads again (on the embedded broker a restart spends 4-9 s joining the "
        "group, so 10 s from spawn leaves it ~2 s of work per life)",
    )
    p.add_argument(
        "--join-after", type=float, help="rebalance: seconds from worker 1 start to worker 2 start"
    )
    p.add_argument(
        "--stop-after",
        type=float,
        help="rebalance: seconds from both ready to worker 1 stop (default: 0.5)",
    )
    p.add_argument(
        "--restart-after",
        type=float,
        help="rebalance: seconds from worker 1 stop to its restart (0: no restart)",
    )
    p.add_argument("--settle", type=float, help="seconds without new output = drained (5)")
    p.add_argument("--drain-timeout", type=float, help="seconds a scenario may take to drain")
    p.add_argument(
        "--stall-timeout",
        type=float,
        help="seconds in which the committed input must move by 100 records (or to the "
        "end), else the scenario fails as stalled",
    )
    p.add_argument(
        "--restart-crashed",
        action="store_true",
        default=None,
        help="restart a worker that exits by itself (reported, still a failure) "
        "instead of failing the scenario at once",
    )
    p.add_argument("--ready-timeout", type=float, help="seconds a worker may take to be ready")
    p.add_argument("--clock-lateness", type=float, help="the workers' CRM_CLOCK_LATENESS (0)")
    p.add_argument(
        "--batch-max", type=int, help="the workers' CRM_BATCH_MAX (0: the worker's default)"
    )
    p.add_argument(
        "--states-parsed",
        type=int,
        help="the workers' CRM_STATES_PARSED (the worker's default: 20,000)",
    )
    p.add_argument(
        "--proposal-lookahead",
        type=float,
        help="the workers' CRM_PROPOSAL_LOOKAHEAD, seconds (the worker's default: 86400); 0: "
        "proposals enter where they arrive, and the customers they went to are set aside",
    )
    p.add_argument("--log-level", help="the workers' CRM_LOG_LEVEL (info)")
    p.add_argument(
        "--redis-db-base",
        type=int,
        help="first Redis database number; scenario i uses base + i, FLUSHed first (1)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--workdir", type=Path, help="logs and worker data (default: a temp dir)")
    p.add_argument(
        "--keep-workdir", action="store_true", help="keep the temp workdir even when all is equal"
    )
    return p


def _preset_flags(preset: Options, unlike: Options | None = None) -> str:
    """The preset's values as command-line flags (only those differing from ``unlike``)."""
    flags = []
    for f in dataclasses.fields(Options):
        value = getattr(preset, f.name)
        if f.name == "scenarios" or isinstance(value, bool) or value is None:
            continue  # None: the worker's own default
        if unlike is None or value != getattr(unlike, f.name):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            flags.append(f"--{f.name.replace('_', '-')} {shown}")
    return " ".join(flags)


def options_from_args(args: argparse.Namespace) -> Options:
    base = SHORT if args.short else DEFAULT
    given: dict[str, Any] = {}
    for f in dataclasses.fields(Options):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "scenarios":
            given[f.name] = value
    if args.scenarios:
        given["scenarios"] = parse_scenarios(args.scenarios)
    return dataclasses.replace(base, **given)


def parse_scenarios(text: str) -> tuple[str, ...]:
    wanted = {s.strip() for s in text.split(",") if s.strip()}
    unknown = sorted(wanted - set(SCENARIOS))
    if unknown:
        raise ValueError(
            f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(SCENARIOS)})"
        )
    wanted.add("reference")
    return tuple(s for s in SCENARIOS if s in wanted)


def check_options(o: Options) -> str | None:
    """A usage error's message, or None."""
    if o.batch_max < 0:
        return "--batch-max must be >= 0"
    if o.proposal_lookahead is not None and not 0 <= o.proposal_lookahead <= 7 * 86_400:
        return "--proposal-lookahead must be between 0 and 604800 (7 days)"
    if o.states_parsed is not None and o.states_parsed < 0:
        return "--states-parsed must be >= 0"
    if o.events < 1 or o.customers < 1 or o.partitions < 1:
        return "--events, --customers and --partitions must be positive"
    if o.mix not in MIXES:
        return f"--mix must be one of {', '.join(sorted(MIXES))} (got {o.mix!r})"
    if not 0 <= o.malformed_rate < 1 or not 0 <= o.retry_rate < 1:
        return "--malformed-rate and --retry-rate must be in [0, 1)"
    if min(o.kill_every, o.settle, o.drain_timeout, o.stall_timeout, o.ready_timeout) <= 0:
        return "--kill-every, --settle and the timeouts must be positive"
    if min(o.join_after, o.stop_after, o.restart_after, o.clock_lateness) < 0:
        return "--join-after, --stop-after, --restart-after and --clock-lateness must be >= 0"
    if o.first_kill_after < 0:
        return "--first-kill-after must be >= 0"
    if o.redis_db_base < 0 or o.redis_db_base + len(SCENARIOS) > 16:
        return f"--redis-db-base must leave room for {len(SCENARIOS)} databases below 16"
    return None


# -- the families compared --------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One output family: its topic, what identifies a record, what is left out."""

    name: str
    topic_attr: str  # attribute of Topics
    key: Callable[[dict[str, Any]], Hashable]
    #: Fields of wall time (not decided by the input), left out of the comparison.
    ignore: frozenset[str] = frozenset()
    #: Which records of the topic belong to this family.
    select: Callable[[dict[str, Any]], bool] = lambda v: True


def _customer_flag(v: dict[str, Any]) -> bool:
    return v.get("customer_id") is not None


FAMILIES = (
    Family("actions", "actions", lambda v: v.get("action_id")),
    Family("decisions", "action_decisions", lambda v: v.get("decision_id")),
    Family("changes", "customer_changes", lambda v: v.get("change_id")),
    Family("conversions", "conversions", lambda v: (v.get("conversion_id"), v.get("revision"))),
    Family("flags", "flags", lambda v: (v.get("flag_id"), v.get("status")), select=_customer_flag),
    # Complaint surges and delay episodes counted across customers (the aggregates
    # agent merges the signals of all partitions in their stream order).
    Family(
        "aggregate flags",
        "flags",
        lambda v: (v.get("flag_id"), v.get("status")),
        select=lambda v: not _customer_flag(v),
    ),
    Family(
        "dead letters",
        "dlq",
        lambda v: (
            v.get("source_topic"),
            v.get("source_partition"),
            v.get("source_offset"),
            v.get("error_code"),
        ),
        ignore=frozenset({"received_at"}),
    ),
)


def show_key(key: Hashable) -> str:
    if isinstance(key, tuple):
        return "/".join(str(part) for part in key)
    return str(key)


#: Fields that say what a record is about, for the examples in a report.
_WHAT = ("action_type", "decision", "dimension", "kind", "error_code")


def describe(key: Hashable, content: Any) -> str:
    """``id (customer, what)``: enough to find the record, never a whole record."""
    if not isinstance(content, dict):
        return show_key(key)
    about = [str(content[f]) for f in ("customer_id", *_WHAT) if content.get(f) is not None]
    return f"{show_key(key)} ({' '.join(about)})" if about else show_key(key)


# -- results ------------------------------------------------------------------------


@dataclass
class FamilyFigures:
    records: int = 0
    distinct: int = 0
    #: Records whose id came before (records - distinct): allowed, reported.
    repeats: int = 0
    #: Repeats whose content differs from the id's first copy: a difference.
    repeats_differing: int = 0
    only_in_reference: int = 0
    only_in_scenario: int = 0
    #: Ids on both sides with different content (first copies compared).
    differing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return (
            self.repeats_differing + self.only_in_reference + self.only_in_scenario + self.differing
        )


@dataclass
class CustomerFigures:
    customers: int = 0
    only_in_reference: int = 0
    only_in_scenario: int = 0
    differing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.only_in_reference + self.only_in_scenario + self.differing


@dataclass
class AsideFigures:
    """The customers the aggregates agent proposed an action to (in either run): without
    promises (``--proposal-lookahead 0``) compared, reported, not required to agree (see
    :func:`aside_of`); with them, only counted: they must agree like every other."""

    ids: set[str] = field(default_factory=set)
    #: The commands topics: their dead letters are set aside too.
    topics: set[str] = field(default_factory=set)
    #: Their records (every family) only on one side or differing.
    records: int = 0
    #: Their final states that differ.
    states: int = 0
    #: Their ids repeated (after a crash or rebalance) with content unlike the first
    #: copy: a re-derivation can meet a proposal where the first pass had not.
    repeats_differing: int = 0
    #: Proposals this scenario refused (dead letters of its commands topic: too late).
    refused: int = 0
    #: With promises: the customers proposed to (none set aside: ``ids`` is empty).
    proposed_to: int = 0
    #: Whether the workers promised (CRM_PROPOSAL_LOOKAHEAD > 0): nothing set aside.
    required: bool = False
    #: Proposals on this scenario's commands topic that came after every signals
    #: partition had promised past them (:func:`promises_broken`): must be 0.
    promises_broken: int = 0
    #: ... of those that came once every signals partition had promised something.
    promises_checked: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "required": self.required,
            "proposed_to": self.proposed_to if self.required else len(self.ids),
            "customers": len(self.ids),
            "records": self.records,
            "states": self.states,
            "repeats_differing": self.repeats_differing,
            "refused": self.refused,
            "promises_broken": self.promises_broken,
            "promises_checked": self.promises_checked,
        }


@dataclass
class ScenarioResult:
    name: str
    app_id: str
    redis_db: int
    drained: bool = False
    error: str | None = None
    seconds: float = 0.0
    workers_started: int = 0
    kills: int = 0
    #: Workers that exited by itself (restarted with --restart-crashed).
    crashes: int = 0
    #: The scenario's faults that came once the input had drained, or never came (a
    #: SIGKILL, a join, a stop): a scenario that injected nothing while input was left
    #: tested nothing, and fails.
    unexercised: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    families: dict[str, FamilyFigures] = field(default_factory=dict)
    customers: CustomerFigures = field(default_factory=CustomerFigures)
    aside: AsideFigures = field(default_factory=AsideFigures)
    signals: int = 0
    compared: bool = False

    @property
    def differences(self) -> int:
        return sum(f.differences for f in self.families.values()) + self.customers.differences

    @property
    def ok(self) -> bool:
        return (
            self.drained
            and self.error is None
            and not self.crashes
            and not self.unexercised
            and not self.differences
            and not self.aside.promises_broken
        )


@dataclass
class History:
    """The input history: what was produced, and each partition's exact end offset."""

    topics: Topics
    records: int
    malformed: int
    retries: int
    per_topic: dict[str, int]
    ends: dict[TopicPartition, int]
    listed_ends: dict[TopicPartition, int]
    seconds: float

    @property
    def input_tps(self) -> list[TopicPartition]:
        return sorted(self.ends, key=lambda tp: (tp.topic, tp.partition))

    def as_json(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics.inputs),
            "records": self.records,
            "malformed": self.malformed,
            "retries": self.retries,
            "per_topic": self.per_topic,
            "end_offsets": {f"{tp.topic}/{tp.partition}": n for tp, n in self.ends.items()},
            "listed_end_offsets_short_by": sum(self.ends.values()) - sum(self.listed_ends.values()),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Report:
    options: Options
    run_tag: str
    history: History | None = None
    scenarios: list[ScenarioResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def differences(self) -> int:
        return sum(s.differences for s in self.scenarios)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and bool(self.scenarios)
            and all(s.ok for s in self.scenarios)
            and all(s.compared for s in self.scenarios)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": "determinism",
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "options": dataclasses.asdict(self.options),
            "run_tag": self.run_tag,
            "input": self.history.as_json() if self.history else None,
            "scenarios": [
                {
                    **{
                        k: v
                        for k, v in dataclasses.asdict(s).items()
                        if k not in ("families", "customers", "aside")
                    },
                    "families": {n: dataclasses.asdict(f) for n, f in s.families.items()},
                    "customers": dataclasses.asdict(s.customers),
                    "set_aside": s.aside.as_json(),
                    "differences": s.differences,
                    "ok": s.ok,
                }
                for s in self.scenarios
            ],
            "differences": self.differences,
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "ok": self.ok,
        }


# -- 1. the input history ------------------------------------------------------------


def input_topics(run_tag: str) -> Topics:
    """Fresh topic names for this run (outputs get scenario-specific names later)."""
    return Topics(**{name: f"{run_tag}.{f.default}" for name, f in Topics.model_fields.items()})


def scenario_topics(run_tag: str, scenario: str, inputs: Topics) -> Topics:
    """The run's input topics; this scenario's own output topics, and its own commands
    topic: an input of the customer agent, but written by the scenario's own aggregates
    agent (shared, a later scenario would read the commands of every earlier one,
    already in place before its own came)."""
    own = input_topics(f"{run_tag}-{scenario}")
    shared = {family: getattr(inputs, family) for family in inputs.by_family}
    del shared["commands"]
    return own.replace(**shared)


def history_simulator(o: Options) -> Simulator:
    """The simulator of the run's one history: ``o``'s seed, customers, rates and mix."""
    return Simulator(
        seed=o.seed,
        customers=o.customers,
        malformed_rate=o.malformed_rate,
        retry_rate=o.retry_rate,
        **MIXES[o.mix],
    )


async def produce_history(settings: Settings, o: Options) -> History:
    """Send the simulator's history and wait for every ack; exact end offsets from the acks."""
    simulator = history_simulator(o)
    topics = settings.topics
    by_family = topics.by_family
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_bootstrap,
        linger_ms=5,
        **settings.kafka_client_options(),
    )
    started = time.monotonic()
    per_topic: Counter[str] = Counter()
    malformed = retries = 0
    seen: set[bytes] = set()
    ends: dict[TopicPartition, int] = {}
    await producer.start()
    try:
        pending = []
        for record in simulator.take(o.events):
            topic = by_family[record.family]
            per_topic[topic] += 1
            malformed += record.malformed
            if record.value in seen:
                retries += 1  # the simulator re-sends an earlier record as it is
            seen.add(record.value)
            pending.append(await producer.send(topic, record.value, key=record.key))
            if len(pending) >= 5_000:
                _note_acks(ends, await asyncio.gather(*pending))
                pending.clear()
        _note_acks(ends, await asyncio.gather(*pending))
    finally:
        await producer.stop()
    for topic in topics.inputs:  # a partition nothing went to ends at 0
        for p in range(settings.partitions):
            ends.setdefault(TopicPartition(topic, p), 0)
    listed = await _listed_ends(settings, list(ends))
    return History(
        topics=topics,
        records=sum(per_topic.values()),
        malformed=malformed,
        retries=retries,
        per_topic=dict(sorted(per_topic.items())),
        ends=ends,
        listed_ends=listed,
        seconds=time.monotonic() - started,
    )


def _note_acks(ends: dict[TopicPartition, int], acks: Iterable[Any]) -> None:
    for meta in acks:
        tp = TopicPartition(meta.topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)


async def _listed_ends(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


# -- 2. workers ----------------------------------------------------------------------


@dataclass
class Slot:
    child: Child
    port: int
    #: Stopped or killed by us: its exit is expected.
    ended: bool = False
    #: It answered /readyz at least once.
    was_ready: bool = False


class Pool:
    """One scenario's workers, by slot name ("w1", "w2"); restarts reuse the slot."""

    def __init__(
        self, stack: Stack, settings: Settings, data_root: Path, o: Options, workers: int = 1
    ) -> None:
        self.stack = stack
        #: How many workers run at once (worker_env: a lone one is a static member only at a
        #: session over STATIC_AFTER; at the stack's 3 s, which these runs use, it is dynamic).
        self.workers = workers
        self.settings = settings
        self.data_root = data_root
        data_root.mkdir(parents=True, exist_ok=True)
        self.options = o
        self.slots: dict[str, Slot] = {}
        self.started = 0
        self.exit_codes: list[tuple[str, int | None]] = []

    def start(self, slot: str) -> None:
        port = free_port()
        # The slot names a static member where worker_env gives one (a lone worker at a
        # session over STATIC_AFTER); at the stack's 3 s session every worker is dynamic.
        env = worker_env(self.settings, port, self.data_root / slot, slot, self.workers)
        child = self.stack.start_worker(f"{self.settings.app_id}-{slot}", env)
        self.slots[slot] = Slot(child, port)
        self.started += 1

    def running(self) -> dict[str, Slot]:
        return {name: s for name, s in self.slots.items() if not s.ended}

    def crashed(self) -> list[tuple[str, str]]:
        """Workers we did not stop that have exited: ``(slot, what happened)``."""
        found = []
        for name, slot in self.running().items():
            code = slot.child.proc.poll()
            if code is not None:
                slot.ended = True
                self._forget(slot.child)
                found.append(
                    (
                        name,
                        f"worker {name} exited by itself with code {code}; "
                        f"see {slot.child.log_path}\n{log_tail(slot.child)}",
                    )
                )
        return found

    async def kill(self, slot: str) -> None:
        """SIGKILL; returns once the process is gone."""
        s = self.slots[slot]
        s.ended = True  # on the event loop, before check() can see the exit
        await asyncio.to_thread(s.child.kill)
        self._forget(s.child)

    async def stop(self, slot: str) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; the exit code."""
        s = self.slots[slot]
        s.ended = True
        alive = s.child.proc.poll() is None
        code = await asyncio.to_thread(s.child.stop)
        if alive and s.was_ready:  # a stop during start-up may well end in -15
            self.exit_codes.append((slot, code))
        self._forget(s.child)
        return code

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self.running())))

    def _forget(self, child: Child) -> None:
        if child in self.stack.children:
            self.stack.children.remove(child)

    async def wait_ready(self, slot: str) -> None:
        """Until the slot's worker answers /readyz with 200 (following a restart of a
        crashed worker); a crash without --restart-crashed is the watcher's to report."""
        deadline = time.monotonic() + self.options.ready_timeout
        while True:
            s = self.slots[slot]
            if not s.ended and await asyncio.to_thread(_ready, s.port):
                s.was_ready = True
                return
            if time.monotonic() > deadline:
                raise ScenarioError(
                    f"worker {slot} not ready after {self.options.ready_timeout:.0f} s\n"
                    f"{log_tail(s.child)}"
                )
            await asyncio.sleep(0.5)

    async def all_ready(self) -> bool:
        slots = list(self.running().values())
        if not slots:
            return False
        answers = await asyncio.gather(*(asyncio.to_thread(_ready, s.port) for s in slots))
        for slot, ready in zip(slots, answers, strict=True):
            slot.was_ready = slot.was_ready or ready
        return all(answers)

    def describe(self) -> str:
        names = sorted(self.running())
        return ", ".join(names) if names else "none running"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def log_tail(child: Child, lines: int = 8) -> str:
    """The first error of the worker's last start (its log appends across restarts),
    then the last lines."""
    try:
        text = child.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {child.log_path})"
    starts = [i for i, line in enumerate(text) if "[^Worker]: Starting..." in line]
    last_run = text[starts[-1] :] if starts else text
    errors = [line for line in last_run if "[ERROR]" in line or "[CRITICAL]" in line]
    first = f"  first error: {errors[0].strip()}\n" if errors else ""
    tail = "\n".join(f"    | {line}" for line in last_run[-lines:])
    return f"{first}  last lines of {child.log_path}:\n{tail}"


# -- 3. watching a scenario --------------------------------------------------------------


@dataclass
class Progress:
    """What the watcher last saw; drivers read it (e.g. stop killing once drained)."""

    started: float
    name: str
    input_lag: int = -1
    signals_lag: int = -1
    outputs: int = 0
    kills: int = 0
    crashes: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    #: Faults the scenario is for that came once the input had drained, or never came:
    #: they tested nothing (:attr:`ScenarioResult.unexercised`).
    unexercised: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        elapsed = time.monotonic() - self.started
        lag = "?" if self.input_lag < 0 else f"{self.input_lag:,}"
        line = f"{elapsed:6.1f} s  {what} (input lag {lag})"
        self.timeline.append(line)
        say(f"[{self.name}] {line}")

    def check_input_left(self, fault: str, option: str) -> None:
        """Record ``fault`` as unexercised if the input has drained by now (the join or
        stop about to happen would test nothing): ``option`` is the one to lower."""
        if self.input_lag == 0:
            self.unexercised.append(
                f"{fault} once the input had drained: lower {option}, or raise --events"
            )


class Probe:
    """Committed offsets of the scenario's group (read, never joined or committed) and
    a count of the records on its output topics."""

    def __init__(self, settings: Settings, history: History) -> None:
        self.settings = settings
        self.history = history
        options = settings.kafka_client_options()
        # assign(), never subscribe(): this consumer must not join the workers' group.
        self.group = AIOKafkaConsumer(
            bootstrap_servers=settings.broker_bootstrap,
            group_id=settings.app_id,
            enable_auto_commit=False,
            **options,
        )
        self.tail = AIOKafkaConsumer(
            bootstrap_servers=settings.broker_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **options,
        )
        # The internal topics between the scenario's own agents (signals, commands):
        # drained when their committed offsets reach their ends.
        self.signal_tps = [
            TopicPartition(topic, p)
            for topic in (settings.topics.signals, settings.topics.commands)
            for p in range(settings.partitions)
        ]
        self.committed: dict[TopicPartition, int] = {}
        self.outputs = 0

    async def start(self) -> None:
        await self.group.start()
        tps = [*self.history.input_tps, *self.signal_tps]
        self.group.assign(tps)
        self.group.pause(*tps)  # offsets only: no records fetched
        await self.tail.start()
        out = [
            TopicPartition(topic, p)
            for topic in self.settings.topics.outputs
            for p in range(self.settings.partitions)
        ]
        self.tail.assign(out)
        await self.tail.seek_to_beginning(*out)

    async def stop(self) -> None:
        for consumer in (self.group, self.tail):
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def sample(self) -> tuple[dict[TopicPartition, int], int, int]:
        """(input lag per partition, signals and commands lag, output records seen so far)."""
        for tp in [*self.history.input_tps, *self.signal_tps]:
            try:
                self.committed[tp] = await self.group.committed(tp) or 0
            except Exception as exc:  # a broker hiccup: keep the last value
                say(f"[{self.settings.app_id}] committed({tp.topic}/{tp.partition}): {exc!r}")
        lag = {tp: max(0, end - self.committed.get(tp, 0)) for tp, end in self.history.ends.items()}
        try:
            signal_ends = await self.group.end_offsets(self.signal_tps)
        except Exception:
            signal_ends = {}
        signals_lag = sum(
            max(0, end - self.committed.get(tp, 0)) for tp, end in signal_ends.items()
        )
        batch = await self.tail.getmany(timeout_ms=0)
        self.outputs += sum(len(records) for records in batch.values())
        return lag, signals_lag, self.outputs


Driver = Callable[[Pool, Progress, Options], Coroutine[Any, Any, None]]


async def drive_one_worker(pool: Pool, progress: Progress, o: Options) -> None:
    pool.start("w1")
    progress.note("worker 1 started")
    await pool.wait_ready("w1")
    progress.note("worker 1 ready")


async def drive_rebalance(pool: Pool, progress: Progress, o: Options) -> None:
    pool.start("w1")
    progress.note("worker 1 started")
    # From worker 1's start, not its readiness: /readyz answers 200 a few seconds
    # after the first batch, and the join should land while input is left.
    await asyncio.sleep(o.join_after)
    progress.check_input_left(
        f"worker 2 joined {o.join_after:g} s after worker 1 started,", "--join-after"
    )
    pool.start("w2")
    progress.note("worker 2 started (joins: rebalance)")
    await pool.wait_ready("w2")
    if not pool.slots["w1"].was_ready:
        await pool.wait_ready("w1")
    progress.note("workers 1 and 2 ready")
    await asyncio.sleep(o.stop_after)
    progress.check_input_left(
        f"worker 1 was stopped {o.stop_after:g} s after both were ready,", "--stop-after"
    )
    progress.note("stopping worker 1 with SIGTERM (rebalance)")
    code = await pool.stop("w1")
    progress.note(f"worker 1 stopped with SIGTERM, exit code {code} (rebalance)")
    if o.restart_after > 0:
        await asyncio.sleep(o.restart_after)
        pool.start("w1")
        progress.note("worker 1 started again (rebalance)")
        await pool.wait_ready("w1")
        progress.note("worker 1 ready")


async def drive_sigkill(pool: Pool, progress: Progress, o: Options) -> None:
    pool.start("w1")
    progress.note("worker 1 started")
    first = wait = o.first_kill_after or o.kill_every
    while True:
        if o.kill_after_ready:
            # Every kill_every seconds of work: on the embedded broker a restarted
            # worker spends ~8 s joining the group (Tansu holds each join and sync for
            # 3 s) before it reads again.
            await pool.wait_ready("w1")
        await asyncio.sleep(wait)
        wait = o.kill_every
        if progress.input_lag == 0:
            progress.note(f"input drained after {progress.kills} SIGKILL(s): no more kills")
            if not progress.kills:
                progress.unexercised.append(
                    f"no SIGKILL: the input drained within {first:g} s of the worker's "
                    + ("readiness" if o.kill_after_ready else "start")
                    + ": lower --first-kill-after, or raise --events"
                )
            return
        await pool.kill("w1")
        progress.kills += 1
        pool.start("w1")
        progress.note(f"SIGKILL #{progress.kills}, worker 1 restarted")


DRIVERS: dict[str, Driver] = {
    "reference": drive_one_worker,
    "again": drive_one_worker,
    "rebalance": drive_rebalance,
    "sigkill": drive_sigkill,
}


async def watch(
    pool: Pool, probe: Probe, driver: asyncio.Task[None], progress: Progress, o: Options
) -> None:
    """Return once drained; raise :class:`ScenarioError` on a timeout or a dead worker."""
    deadline = progress.started + o.drain_timeout
    stable_since = moved_at = time.monotonic()
    last_outputs = -1
    mark_lag = -1
    next_report = 0.0
    total = sum(probe.history.ends.values())
    while True:
        if driver.done() and not driver.cancelled() and driver.exception() is not None:
            exc = driver.exception()
            raise ScenarioError(str(exc)) from exc
        for slot, what in pool.crashed():
            progress.crashes.append(what)
            if not o.restart_crashed:
                raise ScenarioError(what)
            progress.note(f"worker {slot} CRASHED (see the report); restarted")
            pool.start(slot)
        lag, signals_lag, outputs = await probe.sample()
        progress.input_lag = sum(lag.values())
        # Progress: the committed lag down by STALL_STEP records (or to 0). Output is
        # no sign of it: restarted workers re-emit for input they never commit, and a
        # trickle of a few records a second is a stall too.
        if mark_lag < 0 or progress.input_lag <= mark_lag - min(STALL_STEP, mark_lag):
            moved_at, mark_lag = time.monotonic(), progress.input_lag
        progress.signals_lag = signals_lag
        progress.outputs = outputs
        ready = await pool.all_ready()
        now = time.monotonic()
        if outputs != last_outputs or not ready or not driver.done():
            stable_since = now
            last_outputs = outputs
        quiet = now - stable_since
        if progress.input_lag == 0 and signals_lag == 0 and quiet >= o.settle:
            return
        if now >= next_report:
            say(
                f"[{progress.name}] {now - progress.started:6.1f} s  input lag "
                f"{progress.input_lag:,} of {total:,}, internal lag {signals_lag:,}, "
                f"outputs {outputs:,}, workers: {pool.describe()}"
                f"{' (ready)' if ready else ' (not ready)'}"
            )
            next_report = now + 5.0
        stalled = progress.input_lag > 0 and now - moved_at > o.stall_timeout
        if now > deadline or stalled:
            behind = ", ".join(
                f"{tp.topic}/{tp.partition}: {n:,}" for tp, n in sorted(lag.items()) if n
            )
            why = (
                f"stalled: committed input moved by less than {STALL_STEP} records "
                f"in {o.stall_timeout:.0f} s"
                + (f" ({progress.kills} SIGKILLs so far)" if progress.kills else "")
                if stalled
                else f"did not drain in {o.drain_timeout:.0f} s"
            )
            raise ScenarioError(
                f"scenario {progress.name} {why}: "
                f"input lag {progress.input_lag:,} of {total:,} records"
                f"{f' ({behind})' if behind else ''}, internal lag {signals_lag:,}, "
                f"outputs {outputs:,}, quiet for {quiet:.1f} s, "
                f"workers {pool.describe()} {'ready' if ready else 'not ready'}"
            )
        await asyncio.sleep(1.0)


# -- 4. collecting and comparing ---------------------------------------------------------


@dataclass
class Copies:
    """An id's first copy (content as compared) and how its repeats relate to it."""

    first: Any
    copies: int = 1
    differing: int = 0
    #: The fields in which the first differing repeat differs from the first copy.
    differing_fields: str = ""


@dataclass
class Outputs:
    families: dict[str, dict[Hashable, Copies]]
    records: dict[str, int]
    states: dict[str, Any]
    signals: int
    #: Customers the aggregates agent proposed an action to (``care.requested``).
    proposed: set[str] = field(default_factory=set)
    #: The scenario's own commands topic (its dead letters are set aside with them).
    commands_topic: str = ""
    #: Proposals that came after every signals partition had promised past them, and
    #: those that came once every one had promised something (:func:`promises_broken`).
    promises: tuple[int, int] = (0, 0)


Record = tuple[bytes | None, bytes | None]
INF = float("inf")


async def read_all(
    settings: Settings, topics: Sequence[str], timeout: float = 120.0
) -> dict[str, dict[int, list[Record]]]:
    """Every record of ``topics`` by partition (each in offset order), from the beginning
    to the end (:func:`streams.tools.topic_read.read_to_end`: to the listed end offsets,
    short on Tansu, then one more empty fetch)."""
    try:
        read = await read_to_end(
            settings,
            topics,
            lambda r: (r.key, r.value),  # tombstones (value None) too: the changelog's
            read_timeout=timeout,
            poll_ms=500,
            last_poll_ms=500,
            max_records=10_000,
        )
    except BrokerUnreachable as exc:
        raise ScenarioError(f"reading {', '.join(topics)} took more than {timeout:.0f} s") from exc
    return {topic: dict(parts) for topic, parts in read.items()}


def promises_broken(partitions: Mapping[int, Sequence[Record]], proposers: int) -> tuple[int, int]:
    """The proposals on a commands topic that came after their partition had been promised
    past them: the aggregates agents' promise (``proposal_progress.v1``) was that none of
    a signals partition's commands still to come is dated before ``until``, and a
    customer partition releases its records up to the least latest promise of the
    ``proposers`` signals partitions (``streams.merge``). So, in each partition's log
    order, a ``care.requested`` dated before the highest such bound reached before it
    entered its customer's stream late: whichever signals partition sent it, every one
    had promised past it. A command whose id came before is a repeat (a restarted agent
    sends its last commands again; the customer recognises them) and is not counted.
    A promise of none until new input (every source caught up) bounds nothing here: what
    comes after new input may be late, a limit the README states ("Event time").

    Returns ``(broken, checked)``: ``checked`` counts the proposals that came once every
    signals partition had promised something (a run whose proposals all came before
    any promise would check nothing)."""
    broken = checked = 0
    for records in partitions.values():
        latest: dict[int, float] = {}
        bound = -INF
        seen: set[str] = set()
        for key, value in records:
            if key == PROMISE_KEY:
                promise = read_promise(value)
                if promise is not None and promise[0] < proposers:
                    latest[promise[0]] = promise[1]
                    least = min(latest.values())
                    if len(latest) == proposers and least != INF:
                        bound = max(bound, least)
                continue
            command = _decode(value)
            if not isinstance(command, dict) or command.get("type") != "care.requested":
                continue
            event_id = str(command.get("event_id"))
            if event_id in seen:
                continue
            seen.add(event_id)
            at = zoned_timestamp(str(command.get("occurred_at")))
            if at is None or bound == -INF:
                continue
            checked += 1
            if at < bound:
                broken += 1
    return broken, checked


def _decode(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        return codec.loads_stored(value)  # the changelog's states may be packed
    except ValueError:
        return {"_undecodable": value.decode("utf-8", "replace")}


async def collect(settings: Settings) -> Outputs:
    topics = settings.topics
    changelog = f"{settings.app_id}-{CUSTOMERS_TABLE}-changelog"
    names = [getattr(topics, f.topic_attr) for f in FAMILIES]
    parts = await read_all(
        settings, list(dict.fromkeys([*names, topics.signals, topics.commands, changelog]))
    )
    raw = {topic: [r for records in p.values() for r in records] for topic, p in parts.items()}
    families: dict[str, dict[Hashable, Copies]] = {}
    records: dict[str, int] = {}
    for family, topic in zip(FAMILIES, names, strict=True):
        seen: dict[Hashable, Copies] = {}
        count = 0
        for _, value in raw[topic]:
            content = _decode(value)
            if not isinstance(content, dict):
                content = {"_not_an_object": content}
            if not family.select(content):
                continue
            count += 1
            key = family.key(content)
            if family.ignore:
                content = {k: v for k, v in content.items() if k not in family.ignore}
            copies = seen.get(key)
            if copies is None:
                seen[key] = Copies(content)
            else:
                copies.copies += 1
                if content != copies.first:
                    copies.differing += 1
                    if not copies.differing_fields:
                        copies.differing_fields = differing_fields(copies.first, content)
        families[family.name] = seen
        records[family.name] = count
    states: dict[str, Any] = {}
    for key, value in raw[changelog]:
        customer = (key or b"").decode("utf-8", "replace")
        if customer.startswith(RESERVED_KEY_PREFIX):
            continue
        if value is None:
            states.pop(customer, None)  # a tombstone: no state
        else:
            states[customer] = _decode(value)
    proposed = set()
    for _, value in raw[topics.commands]:
        command = _decode(value)
        if isinstance(command, dict) and command.get("type") == "care.requested":
            proposed.add(str(command.get("customer_id")))
    return Outputs(
        families,
        records,
        states,
        len(raw[topics.signals]),
        proposed,
        topics.commands,
        promises_broken(parts[topics.commands], settings.partitions),
    )


def differing_fields(a: Any, b: Any, limit: int = 4) -> str:
    """The fields in which ``a`` and ``b`` differ, each with its two values (shortened):
    ``not_before ('2026-01-04T07:00:00Z' -> '2026-01-05T07:00:00Z')``."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "(whole value)"
    missing = object()
    names = sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))
    more = f", +{len(names) - limit} more" if len(names) > limit else ""
    return (
        ", ".join(
            f"{k} ({_shown(a.get(k, missing), missing)} -> {_shown(b.get(k, missing), missing)})"
            for k in names[:limit]
        )
        + more
    )


def _shown(value: Any, missing: object, width: int = 48) -> str:
    text = "(absent)" if value is missing else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def aside_of(outputs: Outputs, reference: Outputs | None, promised: bool = False) -> AsideFigures:
    """What is compared but not required to agree: the customers the aggregates agent
    proposed an action to in either run, and the dead letters of the commands topics
    (proposals refused ``too_late``). Without promises a proposal enters its customer's
    stream where it arrives, so what that customer is decided later may differ (README,
    "Event time"). With them (``promised``) nothing is set aside: they are counted only."""
    ids = set(outputs.proposed)
    topics = {outputs.commands_topic}
    if reference is not None:
        ids |= reference.proposed
        topics.add(reference.commands_topic)
    refused = sum(
        1
        for c in outputs.families["dead letters"].values()
        if isinstance(c.first, dict) and c.first.get("source_topic") in topics
    )
    if promised:
        return AsideFigures(
            refused=refused,
            proposed_to=len(ids),
            required=True,
            promises_broken=outputs.promises[0],
            promises_checked=outputs.promises[1],
        )
    aside = AsideFigures(ids, topics - {""})
    aside.refused = refused
    return aside


def _outside(aside: AsideFigures | None) -> Callable[[Copies], bool]:
    ids = aside.ids if aside is not None else set()
    topics = aside.topics if aside is not None else set()

    def outside(c: Copies) -> bool:
        if not isinstance(c.first, dict):
            return True
        return c.first.get("customer_id") not in ids and c.first.get("source_topic") not in topics

    return outside


def figures_of(
    outputs: Outputs, reference: Outputs | None, aside: AsideFigures | None = None
) -> dict[str, FamilyFigures]:
    """Each family's figures; the records of the customers set aside (``aside``) are
    compared on their own and counted there."""
    keep = _outside(aside)
    result: dict[str, FamilyFigures] = {}
    for family in FAMILIES:
        everything = outputs.families[family.name]
        mine = {k: c for k, c in everything.items() if keep(c)}
        fig = FamilyFigures(records=outputs.records[family.name], distinct=len(everything))
        fig.repeats = fig.records - fig.distinct
        fig.repeats_differing = sum(c.differing for c in mine.values())
        if aside is not None:
            aside.repeats_differing += sum(c.differing for c in everything.values()) - (
                fig.repeats_differing
            )
        for key, c in mine.items():
            if c.differing and len(fig.examples) < EXAMPLES:
                fig.examples.append(
                    f"{describe(key, c.first)}: a repeat differs from the first copy "
                    f"in {c.differing_fields}"
                )
        if reference is not None:
            all_theirs = reference.families[family.name]
            theirs = {k: c for k, c in all_theirs.items() if keep(c)}
            only_ref = [k for k in theirs if k not in everything]
            only_here = [k for k in mine if k not in all_theirs]
            differ = [k for k in mine if k in theirs and mine[k].first != theirs[k].first]
            fig.only_in_reference = len(only_ref)
            fig.only_in_scenario = len(only_here)
            fig.differing = len(differ)
            for key in differ[:EXAMPLES]:
                fields = differing_fields(theirs[key].first, mine[key].first)
                fig.examples.append(f"{describe(key, mine[key].first)}: differs in {fields}")
            for key in only_ref[:EXAMPLES]:
                fig.examples.append(f"{describe(key, theirs[key].first)}: only in reference")
            for key in only_here[:EXAMPLES]:
                fig.examples.append(f"{describe(key, mine[key].first)}: only in this scenario")
            if aside is not None:
                set_aside = {k: c for k, c in everything.items() if not keep(c)}
                theirs_aside = {k: c for k, c in all_theirs.items() if not keep(c)}
                aside.records += sum(
                    1
                    for k in set_aside.keys() | theirs_aside.keys()
                    if k not in set_aside
                    or k not in theirs_aside
                    or set_aside[k].first != theirs_aside[k].first
                )
        result[family.name] = fig
    return result


def customers_of(
    outputs: Outputs, reference: Outputs | None, aside: AsideFigures | None = None
) -> CustomerFigures:
    fig = CustomerFigures(customers=len(outputs.states))
    if reference is None:
        return fig
    ids = aside.ids if aside is not None else set()
    mine = {c: v for c, v in outputs.states.items() if c not in ids}
    theirs = {c: v for c, v in reference.states.items() if c not in ids}
    only_ref = sorted(set(theirs) - set(mine))
    only_here = sorted(set(mine) - set(theirs))
    differ = sorted(c for c in mine if c in theirs and mine[c] != theirs[c])
    fig.only_in_reference, fig.only_in_scenario, fig.differing = (
        len(only_ref),
        len(only_here),
        len(differ),
    )
    for customer in differ[:EXAMPLES]:
        fig.examples.append(f"{customer}: {differing_fields(theirs[customer], mine[customer])}")
    fig.examples += [f"{c}: only in reference" for c in only_ref[:EXAMPLES]]
    fig.examples += [f"{c}: only in this scenario" for c in only_here[:EXAMPLES]]
    if aside is not None:
        aside.states = sum(1 for c in ids if outputs.states.get(c) != reference.states.get(c))
    return fig


# -- 5. a whole run ----------------------------------------------------------------------


def base_settings(stack: Stack, o: Options) -> Settings:
    defaults = Settings()
    return defaults.replace(
        batch_max=o.batch_max or defaults.batch_max,
        states_parsed=defaults.states_parsed if o.states_parsed is None else o.states_parsed,
        proposal_lookahead=(
            defaults.proposal_lookahead if o.proposal_lookahead is None else o.proposal_lookahead
        ),
        kafka_broker=stack.broker_url,
        redis_url=stack.redis_url,
        partitions=o.partitions,
        session_timeout=STACK_DEFAULTS["session_timeout"],
        rebalance_timeout=STACK_DEFAULTS["rebalance_timeout"],
        # A worker stopped mid-rebalance can stay the embedded broker's group leader
        # until a member leaves and rejoins (deploy/RUNBOOK.md): the watch does that.
        assignment_timeout=STACK_DEFAULTS["assignment_timeout"],
        clock="replay",
        clock_lateness=o.clock_lateness,
        log_level=o.log_level,
    )


def flush_redis(stack: Stack, db: int) -> None:
    """Empty this scenario's own Redis database (its action ledger and profiles)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=stack.redis_port, db=db)
    try:
        client.flushdb()
    finally:
        client.close()


async def run_scenario(
    stack: Stack,
    name: str,
    o: Options,
    run_tag: str,
    history: History,
    base: Settings,
    workdir: Path,
) -> tuple[ScenarioResult, Outputs | None]:
    db = o.redis_db_base + SCENARIOS.index(name)
    settings = base.replace(
        app_id=f"{run_tag}-{name}",
        redis_url=f"redis://127.0.0.1:{stack.redis_port}/{db}",
        topics=scenario_topics(run_tag, name, history.topics),
    )
    result = ScenarioResult(name=name, app_id=settings.app_id, redis_db=db)
    await asyncio.to_thread(flush_redis, stack, db)
    await ensure_topics(settings)
    say(f"[{name}] app id {settings.app_id}, Redis db {db}, outputs {settings.topics.actions} ...")
    # The rebalance scenario runs two workers at once: dynamic members (worker_env).
    pool = Pool(stack, settings, workdir / name, o, workers=2 if name == "rebalance" else 1)
    probe = Probe(settings, history)
    progress = Progress(started=time.monotonic(), name=name)
    driver: asyncio.Task[None] | None = None
    try:
        await probe.start()
        driver = asyncio.create_task(DRIVERS[name](pool, progress, o))
        await watch(pool, probe, driver, progress, o)
        result.drained = True
        progress.note("drained")
    except ScenarioError as exc:
        result.error = str(exc)
        say(f"[{name}] FAILED: {exc}")
    finally:
        result.seconds = time.monotonic() - progress.started
        if driver is not None:
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)
        await probe.stop()
        await pool.close()
    for slot, code in pool.exit_codes:
        if code not in (0, None):
            result.notes.append(f"worker {slot} exited with code {code} on SIGTERM")
    result.workers_started = pool.started
    result.kills = progress.kills
    result.crashes = len(progress.crashes)
    result.unexercised = list(progress.unexercised)
    if o.restart_crashed:
        result.notes += [f"crash: {what}" for what in progress.crashes]
    result.timeline = progress.timeline
    try:
        outputs = await collect(settings)
    except Exception as exc:  # report it; the other scenarios still run
        result.error = (result.error + "; " if result.error else "") + f"collecting: {exc!r}"
        return result, None
    result.signals = outputs.signals
    return result, outputs


async def _run(stack: Stack, o: Options, report: Report, workdir: Path) -> None:
    started = time.monotonic()
    base = base_settings(stack, o)
    inputs = base.replace(topics=input_topics(report.run_tag))
    await ensure_topics(inputs)
    say(
        f"producing {o.events:,} events for {o.customers:,} customers "
        f"({o.mix} mix, seed {o.seed}) into {inputs.topics.orders} ... ({o.partitions} partitions)"
    )
    history = await produce_history(inputs, o)
    report.history = history
    short_by = sum(history.ends.values()) - sum(history.listed_ends.values())
    say(
        f"produced {history.records:,} records ({history.malformed:,} malformed, "
        f"{history.retries:,} retries) in {history.seconds:.1f} s, every one acked"
        + (f"; the broker lists end offsets {short_by:,} short (Tansu)" if short_by else "")
    )
    reference: Outputs | None = None
    # Whether the workers promise, as they decide it (settings and rules file alike).
    promised = proposals_promised(base, Rules.load(base.rules_file))
    for name in o.scenarios:
        result, outputs = await run_scenario(stack, name, o, report.run_tag, history, base, workdir)
        if name == "reference":
            reference = outputs
        if outputs is not None and (name == "reference" or reference is not None):
            against = None if name == "reference" else reference
            result.aside = aside_of(outputs, against, promised)
            result.families = figures_of(outputs, against, result.aside)
            result.customers = customers_of(outputs, against, result.aside)
            result.compared = True
        report.scenarios.append(result)
        say(
            f"[{name}] {'drained' if result.drained else 'NOT drained'} in {result.seconds:.1f} s; "
            f"{result.differences:,} difference(s)"
        )
    report.seconds = time.monotonic() - started


def run_on_stack(stack: Stack, options: Options, workdir: Path | None = None) -> Report:
    """Run on an existing stack (broker and Redis started), e.g. a test session's.

    Uses fresh topics and consumer groups (a random run tag) and Redis databases
    ``redis_db_base`` .. ``redis_db_base + 3`` (flushed first); stops the workers
    it started.
    """
    run_tag = f"det{options.seed}-{uuid.uuid4().hex[:6]}"
    report = Report(options=options, run_tag=run_tag)
    root = (workdir or stack.workdir) / run_tag
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        asyncio.run(_run(stack, options, report, root))
    except Exception as exc:  # reported (and failing) rather than a traceback
        report.error = f"{type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - started
    return report


def run(options: Options, workdir: Path) -> Report:
    """Start a broker and Redis in ``workdir``, run, stop everything."""
    with Stack(workdir) as stack:
        say(f"starting Tansu broker and Redis (logs in {workdir})")
        stack.start_broker()
        stack.start_redis()
        return run_on_stack(stack, options, workdir)


# -- 6. the report -------------------------------------------------------------------------


def render(report: Report) -> str:
    o = report.options
    lines: list[str] = []
    h = report.history
    lines.append(
        f"determinism: seed {o.seed}, {o.customers:,} customers, {o.events:,} events, "
        f"{o.partitions} partitions, clock replay (lateness {o.clock_lateness:g} s), "
        f"batches of {o.batch_max or Settings().batch_max:,} at most, "
        f"{Settings().states_parsed if o.states_parsed is None else o.states_parsed:,} "
        "states kept parsed, "
        f"run {report.run_tag}"
    )
    if h is not None:
        lines.append(
            f"input: {h.records:,} records ({h.malformed:,} malformed, {h.retries:,} retries): "
            + ", ".join(f"{t.rsplit('.', 1)[-1]} {n:,}" for t, n in h.per_topic.items())
        )
    header = (
        f"  {'family':<17}{'records':>9}{'distinct':>10}{'repeats':>9}{'rep≠':>6}"
        f"{'only-ref':>10}{'only-here':>11}{'differing':>11}"
    )
    for s in report.scenarios:
        lines.append("")
        status = "drained" if s.drained else "DID NOT DRAIN"
        extra = f", {s.kills} SIGKILL(s)" if s.kills else ""
        extra += f", {s.crashes} CRASH(ES)" if s.crashes else ""
        lines.append(
            f"== {s.name}: {status} in {s.seconds:.1f} s, {s.workers_started} worker start(s)"
            f"{extra}; app id {s.app_id}, Redis db {s.redis_db}"
        )
        for line in s.timeline:
            lines.append(f"   {line}")
        if s.error:
            lines.append(f"   error: {s.error}")
        for note in s.notes:
            lines.append(f"   note: {note}")
        if not s.compared:
            lines.append("   (not compared: no outputs collected)")
            continue
        lines.append(header)
        reference = s.name == "reference"
        for name, f in s.families.items():
            cells = (
                ("-", "-", "-")
                if reference
                else (
                    f"{f.only_in_reference:,}",
                    f"{f.only_in_scenario:,}",
                    f"{f.differing:,}",
                )
            )
            lines.append(
                f"  {name:<17}{f.records:>9,}{f.distinct:>10,}{f.repeats:>9,}"
                f"{f.repeats_differing:>6,}{cells[0]:>10}{cells[1]:>11}{cells[2]:>11}"
            )
        c = s.customers
        if reference:
            lines.append(f"  customers (final state): {c.customers:,}; signals {s.signals:,}")
        else:
            lines.append(
                f"  customers (final state): {c.customers:,}; differing {c.differing:,}, "
                f"only in reference {c.only_in_reference:,}, only here {c.only_in_scenario:,}"
            )
        a = s.aside
        if a.required:
            lines.append(
                f"  * proposals: {a.proposed_to:,} customers the aggregates agent proposed an "
                f"action to, {a.refused:,} proposals refused as too late, "
                f"{a.promises_broken:,} of {a.promises_checked:,} after a promise past them "
                "(compared with the rest: the workers promise, CRM_PROPOSAL_LOOKAHEAD)"
            )
        else:
            lines.append(
                f"  * set aside: {len(a.ids):,} customers the aggregates agent proposed an "
                f"action to, {a.refused:,} proposals refused as too late (compared, not "
                "required)"
                + (
                    ""
                    if reference
                    else f": {a.records:,} records and {a.states:,} final states differ"
                )
                + (f"; {a.repeats_differing:,} repeats differ" if a.repeats_differing else "")
            )
        for name, f in s.families.items():
            for example in f.examples:
                lines.append(f"    {name}: {example}")
        for example in c.examples:
            lines.append(f"    customer {example}")
        if not s.drained or s.error or s.crashes:
            verdict = f"FAILED (see above); {s.differences:,} difference(s) so far"
        elif reference:
            verdict = "the reference" + (
                "" if s.ok else f": {s.differences:,} repeat(s) with differing content"
            )
        elif s.unexercised:
            verdict = (
                "NOT EXERCISED: "
                + "; ".join(s.unexercised)
                + (f" ({s.differences:,} difference(s))" if s.differences else "")
            )
        elif s.ok:
            verdict = "IDENTICAL to reference"
        else:
            verdict = f"DIFFERENT from reference: {s.differences:,} difference(s)"
        lines.append(f"  verdict: {verdict}")
    lines.append("")
    if report.error:
        lines.append(f"determinism: ERROR: {report.error}")
    bad = [s.name for s in report.scenarios if not s.ok]
    if report.ok:
        lines.append(
            f"determinism: PASS: every scenario identical to reference "
            f"({', '.join(s.name for s in report.scenarios)}) in {report.seconds:.0f} s"
        )
    else:
        idle = [s.name for s in report.scenarios if s.unexercised]
        lines.append(
            f"determinism: FAIL: {report.differences:,} difference(s); "
            f"not identical: {', '.join(bad) or '-'}"
            + (f" (not exercised: {', '.join(idle)})" if idle else "")
            + f"; wall time {report.seconds:.0f} s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    problem = check_options(options)
    if problem:
        parser.error(problem)
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="crmstream-determinism-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    handle_sigterm()  # a killed run stops its broker, Redis and workers too
    try:
        report = run(options, workdir)
    except CrmStreamError as exc:
        say(f"FAILED to start the stack: {exc}; logs in {workdir}")
        return 1
    except KeyboardInterrupt:
        say(f"interrupted; logs in {workdir}")
        return 130
    print(render(report), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(codec.dumps_sorted(report.as_json()))
        say(f"figures written to {args.json}")
    if temp and report.ok and not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"logs kept in {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
