"""Agent ``process_customer_events``: runs the per-customer fold on the input topics.

Consumes: ``crm.orders``, ``crm.browsing``, ``crm.reviews``, ``crm.complaints``,
``crm.customers``, ``crm.action-outcomes`` and the internal ``crm.commands`` (raw
bytes, fetched in batches by :class:`streams.kafka.InputFeed`; each record validated once, by
:mod:`schemas.ingress`, as it is fetched).
Owns: table ``customers`` (customer id -> :class:`~agents.state.CustomerState`,
plus one clock record per partition under a reserved key).
Emits: actions on ``crm.actions``; segment changes on ``crm.customer-changes``;
flags and flag reviews on ``crm.flags``; contact-policy decisions on
``crm.action-decisions``; conversions on ``crm.conversions``; cross-customer signals
on ``crm.signals``; dead letters
on ``crm.dlq``; Redis profiles (write-behind, :mod:`streams.projection`).

Per partition, the inputs are merged in event-time order (:mod:`streams.merge`) and
timers fire on the partition's watermark. Per batch (:func:`handle_round`): the
merges release up to ``CRM_BATCH_MAX`` records, every partition its share first,
until ``CRM_BATCH_SECONDS`` of folding is spent (the web pages are answered between
rounds) or ``CRM_BATCH_STATES_FROM_BYTES`` states have been read from their stored
bytes (each held parsed until written); the pure fold
(:mod:`agents.customer_events`) applies them and fires the timers due; the new
states are serialised (a state that cannot be stored sends the record that broke it
to the DLQ); dead letters and the actions that pass the Redis ledger are sent; then,
in a task while the next round folds (up to ``CRM_WRITES_IN_FLIGHT`` rounds behind,
:mod:`streams.inflight`), they are acknowledged by the broker, each touched
customer's state and each moved partition clock are written **once** after the
previous round's, and only then are the offsets marked handled and committed. While
a backlog drains, full rounds hold their states and offsets back
(``CRM_STATE_FLUSH_INTERVAL``, :class:`~streams.inflight.HeldWrites`) and a later
round writes each customer once for all of them. A round folds on the states of the
rounds still being written (:attr:`CustomerAgent.unwritten`), and on the parsed
states of the memory store, in place (:meth:`CustomerAgent._loader`).

Failure policy: see :mod:`agents.customer_events` for records and rules. A Redis
outage degrades the ledger to state-only idempotency. A Kafka send failure
crashes the worker before offsets commit: the batch is handled again after the
restart, recognised record by record, with deterministic ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import heapq
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from agents import timers
from agents.aggregate_rules import SIGNAL_EVENT_TYPES
from agents.customer_events import (
    REPLAY,
    BatchResult,
    Now,
    Owned,
    by_customer,
    due_after_fold,
    fire_timers,
    fold_items,
    gauge_moves,
    keys_of_basis,
    noteworthy,
    stored_forms,
    takeover,
    time_of,
)
from agents.records import FAMILY_RANK, NO_TIME, Item
from agents.state import CustomerState, StoredStateError
from agents.timers import TimerIndex
from schemas import codec
from schemas.actions import Action
from schemas.changes import Dimension
from schemas.commands import PROMISE_KEY, read_promise
from schemas.deadletter import DeadLetter, RecordMeta
from schemas.decisions import Verdict
from schemas.flags import FlagStatus
from schemas.ingress import admit
from schemas.signals import PROGRESS, PROGRESS_KEY
from streams import failpoints, metrics, outputs
from streams.app import RESERVED_PREFIX, SEAL_KEY, Runtime
from streams.inflight import HeldWrites, InFlight, Packer
from streams.kafka import in_memory, partition_for, write_changelog
from streams.ledger import ActionLedger
from streams.merge import FRESH, INF, PROMISED, PartitionMerge
from streams.parsed import ParsedStates, parsed_states
from streams.projection import ProfileProjection
from streams.settings import INPUT_FAMILIES, Settings

log = logging.getLogger(__name__)
#: At most this many timers fire per customer per sweep (the rest on the next one).
TIMERS_PER_SWEEP = 100
#: A timer this late on the active clock counts as overdue (crm_timers_overdue).
OVERDUE_AFTER = 60.0


#: The customer agent's name in the feed's batch loop (streams.kafka.InputFeed.serve).
SERVED_AS = "customer events"


def clock_key(partition: int) -> str:
    """The reserved table key of partition ``partition``'s clock record."""
    return f"{RESERVED_PREFIX}clock:{partition}"


class InputMerges:
    """The feed's sink for the input topics: admits each fetched record and pushes it
    into its partition's event-time merge (one :class:`PartitionMerge` per owned partition,
    starting from the clock recorded in the table)."""

    def __init__(self, settings: Settings, customers: Any, promised: bool | None = None) -> None:
        """``promised``: whether the merges wait for the aggregates agent's promises
        (``streams.app.proposals_promised``; None: as the settings say)."""
        self.settings = settings
        self.customers = customers
        #: Timers on the live clock fire on wall time (once caught up); on the replay
        #: clock on event time alone.
        self.live = settings.clock == "live"
        #: The merges' ``settle`` (streams.merge): the live clock's alone.
        self.settle = settings.clock_settle if self.live else 0.0
        self.family_of = settings.topics.family_of
        # Read for every fetch and round: plain attributes (a pydantic model's are slower).
        self.clock_lateness = settings.clock_lateness
        self.max_clock_skew = settings.max_clock_skew
        self.arrived = asyncio.Event()
        self.merges: dict[int, PartitionMerge] = {}
        #: The clock records as last handed over to be written: (stream time, fired
        #: through, handled offsets) per partition.
        self.written: dict[int, tuple[Any, ...]] = {}
        #: Signals partitions whose promises gate each merge's commands (0: none; the
        #: replay clock with CRM_PROPOSAL_LOOKAHEAD and a rule that proposes, streams.merge).
        if promised is None:
            promised = settings.proposals_promised
        self.proposers = settings.partitions if promised else 0
        self.lookahead = settings.proposal_lookahead if self.proposers else 0.0
        self.commands_topic = settings.topics.commands

    def merge_for(self, partition: int) -> PartitionMerge:
        merge = self.merges.get(partition)
        if merge is None:
            stored = self.customers.data.get(clock_key(partition))
            clock = stored if isinstance(stored, dict) else {}
            merge = PartitionMerge(
                partition,
                # With promises every input is known from the start: one not fetched yet
                # must hold the partition's progress back, not go unseen.
                INPUT_FAMILIES if self.proposers else (),
                idle=self.settings.merge_idle_seconds,
                allowed_lateness=self.settings.allowed_lateness,
                grace=self.settings.merge_grace_seconds,
                settle=self.settle,
                stream_time=clock.get("stream_time"),
                fired_through=clock.get("fired_through"),
                handled=clock.get("handled"),
                proposers=self.proposers,
            )
            stream_time = merge.stream_time
            if merge.settle and stream_time is not None and stream_time < time.time() - FRESH:
                # Taken over (a rebalance, a restart) behind the wall clock: a feed may be
                # catching up, so the clock settles as after a backlog that arrived now.
                merge.last_backlog_arrived = time.monotonic()
            self.merges[partition] = merge
            self.written[partition] = self._clock_of(merge)
        return merge

    @staticmethod
    def _clock_of(merge: PartitionMerge) -> tuple[Any, ...]:
        return (merge.stream_time, merge.fired_through, tuple(sorted(merge.handled.items())))

    def commands_held_from(self, handled: dict[tuple[str, int], int]) -> None:
        """With promises, a merge releases its commands out of log order: each partition's
        commands are handled only up to the first one it still holds (``handled`` is the
        round's, set here: its offsets commit, and mark records read again, no further)."""
        if not self.proposers:
            return
        for partition, merge in self.merges.items():
            held_from = merge.held_from(PROMISED)
            if held_from is not None:
                handled[(self.commands_topic, partition)] = held_from

    def note_handled(self, handled: dict[tuple[str, int], int]) -> None:
        """The batch handled records up to these offsets (written with the next clock)."""
        for (topic, partition), offset in handled.items():
            merge = self.merges.get(partition)
            family = self.family_of(topic)
            if merge is not None and family is not None:
                merge.handled[family] = max(offset, merge.handled.get(family, 0))

    def accept(self, tp: Any, records: Any, position: int, end: int | None) -> None:
        family = self.family_of(tp.topic)
        assert family is not None
        rank = FAMILY_RANK[family]
        wall = time.time()
        not_after = wall + self.max_clock_skew
        topic, partition = tp.topic, tp.partition
        fetched = time.monotonic()
        # A record's age on the broker (its Kafka timestamp, ms), in monotonic time: the
        # merge waits for a caught-up input only for records that reached it just now.
        epoch_ms = (fetched - wall) * 1000.0
        items = []
        merge = self.merge_for(partition)
        promises = merge.proposers and topic == self.commands_topic
        if promises:  # a proposal is dated the lookahead after its signal (which was trusted)
            not_after += self.lookahead
        for r in records:
            if promises and r.key == PROMISE_KEY and (promise := read_promise(r.value)):
                merge.promise(*promise)  # not a command: it moves the merge's gate
                continue
            meta = RecordMeta(topic, partition, r.offset, r.timestamp)
            event = admit(family, r.key, r.value, meta, not_after)
            at = NO_TIME if isinstance(event, DeadLetter) else time_of(event)
            produced = (r.timestamp + epoch_ms) / 1000.0
            item = Item(at, rank, r.offset, family, event, meta, r.key, r.value)
            item.arrived = produced if produced < fetched else fetched
            items.append(item)
        merge.add_lane(family)
        merge.push(family, items, position, end, fetched, wall - FRESH)

    def note(self, tp: Any, position: int | None, end: int | None) -> None:
        family = self.family_of(tp.topic)
        assert family is not None
        merge = self.merge_for(tp.partition)
        merge.add_lane(family)
        merge.note(family, position, end, time.monotonic())

    def buffered(self, tp: Any) -> int:
        merge = self.merges.get(tp.partition)
        if merge is None:
            return 0
        lane = merge.lanes.get(self.family_of(tp.topic) or "")
        # A promised lane's commands wait for promises further on in the same partition:
        # its fetching never pauses.
        return 0 if lane is None or lane.promised else len(lane.queue)

    def revoke(self, tps: Iterable[Any]) -> None:
        self.merges.clear()
        self.written.clear()

    def watermark(self, partition: int, wall: float) -> tuple[float, bool] | None:
        merge = self.merges.get(partition)
        if merge is None:
            return None
        return merge.watermark(self.live, wall, self.clock_lateness)

    def changed_clocks(self) -> dict[int, dict[str, Any]]:
        """Clock records that moved since last handed over, to write with the round (the
        next round writes them only if they move again): stream time, timers fired
        through, and the offsets handled per input."""
        out = {}
        for partition, merge in self.merges.items():
            now = self._clock_of(merge)
            if now != self.written.get(partition):
                self.written[partition] = now
                out[partition] = {
                    "stream_time": merge.stream_time,
                    "fired_through": merge.fired_through,
                    "handled": dict(merge.handled),
                }
        return out

    def snapshot(self, wall: float) -> dict[str, Any]:
        """The clock of every owned partition, for ``/clock`` and the lookup."""
        parts: dict[str, Any] = {}
        for partition, merge in sorted(self.merges.items()):
            mark = merge.watermark(self.live, wall, self.clock_lateness)
            parts[str(partition)] = {
                "stream_time": _iso(merge.stream_time),
                "watermark": None if mark is None else _iso(mark[0]),
                "timers_fired_through": _iso(merge.fired_through),
                "caught_up": merge.settled,
                # Caught up, but the live clock waits CRM_CLOCK_SETTLE after a backlog.
                "settling": merge.settled and not merge.backlog_settled,
                "buffered": len(merge),
                "inputs": {
                    family: {
                        "position": lane.position,
                        "end": lane.end,
                        "buffered": len(lane.queue),
                        "waiting_since_s": None
                        if lane.lagging_since is None
                        else round(time.monotonic() - lane.lagging_since, 1),
                        "seen_s_ago": None
                        if lane.seen_at == -INF
                        else round(time.monotonic() - lane.seen_at, 1),
                    }
                    for family, lane in sorted(merge.lanes.items())
                },
            }
            if merge.proposers:  # records wait for the aggregates agent's promises
                parts[str(partition)]["proposals_until"] = _iso_or_inf(merge.proposals_until)
        return {
            "clock": self.settings.clock,
            "clock_lateness_seconds": self.settings.clock_lateness,
            "allowed_lateness_seconds": self.settings.allowed_lateness,
            "max_clock_skew_seconds": self.settings.max_clock_skew,
            "merge_grace_seconds": self.settings.merge_grace_seconds,
            "clock_settle_seconds": self.settle,
            "partitions": parts,
        }


def _iso_or_inf(at: float) -> str | None:
    """A promise for ``/clock``: an ISO time, "unbounded" (INF) or None (not every
    signals partition has promised yet)."""
    if at == INF:
        return "unbounded"
    return None if at == -INF else _iso(at)


def _iso(at: float | None) -> str | None:
    return None if at is None else dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


_GAUGES = {
    "stage": metrics.CUSTOMERS_BY_STAGE,
    "rfm_group": metrics.CUSTOMERS_BY_RFM_GROUP,
    "complaint": metrics.COMPLAINTS_OPEN,
    "flag": metrics.FLAGS_OPEN,
    "buyers": metrics.CUSTOMERS_BUYERS,
    "net_spend_cents": metrics.CUSTOMERS_NET_SPEND,
}


def _move_gauges(delta: Counter[tuple[str, str]]) -> None:
    for (gauge, label), n in delta.items():
        if n:
            _GAUGES[gauge].labels(label).inc(n)


class CustomerAgent:
    """The customer agent's I/O shell on one runtime: its input merges, action ledger,
    timer index and Redis projection, and the tasks, timers and signal handlers that
    :meth:`install` registers on the App."""

    def __init__(self, rt: Runtime) -> None:
        settings = rt.settings
        self.settings = settings
        self.rules = rt.rules
        self.app = rt.app
        self.feed = rt.feed
        self.customers = rt.customers
        self.topics = settings.topics
        self.ledger = ActionLedger(settings.redis_url.get_secret_value(), settings.ledger_ttl_days)
        self.inputs = InputMerges(settings, rt.customers, rt.proposals_promised)
        self.projection = ProfileProjection(
            settings.redis_url.get_secret_value(), rt.rules, self._stored, self.owned_customers
        )
        self.timer_index = TimerIndex()
        #: Per owned partition, the progress last sent to the signals topic:
        #: (stream time, caught up).
        self.progress_sent: dict[int, tuple[float | None, bool]] = {}
        #: The writes of the rounds still awaiting the broker (CRM_WRITES_IN_FLIGHT).
        self.writes = InFlight(settings.writes_in_flight)
        #: The states and offsets full rounds hold back (CRM_STATE_FLUSH_INTERVAL).
        self.held = HeldWrites()
        #: Packs the states a round writes, a batch of them off the event loop's thread.
        self.packer = Packer()
        #: Customer id -> state of the rounds in flight, until written to the table,
        #: with its stored form (the next round folds it in place: :meth:`_loader`).
        self.unwritten: dict[str, Owned] = {}
        #: Seconds a record's fold took lately (per slice, smoothed): how many records a
        #: round takes in before it folds them and looks at its time (:meth:`_slice`).
        self.fold_cost = FOLD_COST_GUESS
        #: States read from their bytes per record folded lately (per slice, smoothed):
        #: how many records a slice takes in under CRM_BATCH_STATES_FROM_BYTES.
        self.read_rate = READ_RATE_GUESS
        #: The customers whose state the memory store keeps parsed (CRM_STATES_PARSED,
        #: CRM_STATES_PARSED_MIN), and how the reads find them.
        self.parsed: ParsedStates = parsed_states(settings)
        #: The owned customers whose state holds a raised flag or a complaint: the ones
        #: the operator page reads (the others may be kept as bytes: not parsed for it).
        self.noteworthy: set[str] = set()

    def install(self) -> None:
        """Read the input topics and register the agent's tasks, timers and handlers."""
        app = self.app
        failpoints.arm(self.settings.failpoints)
        self.feed.sinks.update(dict.fromkeys(self.topics.inputs, self.inputs))
        self.feed.track(self)
        app.timer(interval=5.0)(self.observe_timers)
        app.task(self.project_profiles)
        app.task(self.process_customer_events)
        app.on_before_shutdown.connect(self._flush_projection)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._rebalancing)  # type: ignore[arg-type]

    def _owned(self) -> list[tuple[str, int]]:
        """(customer id, partition) of the table partitions this worker is active for."""
        assigned = {tp.partition for tp in self.app.assignor.assigned_actives()}
        n = self.settings.partitions
        owned = []
        for key in list(self.customers.data.keys()):
            if not key.startswith(RESERVED_PREFIX):
                partition = partition_for(key.encode(), n)
                if partition in assigned:
                    owned.append((key, partition))
        return owned

    def owned_customers(self) -> list[str]:
        """Customer ids of the table partitions this worker is active for."""
        return [key for key, _ in self._owned()]

    def noteworthy_customers(self) -> list[str]:
        """Customer ids of the owned customers holding a raised flag or a complaint."""
        return sorted(self.noteworthy)

    def _note_worthy(self, customer_id: str, worthy: bool) -> None:
        if worthy:
            self.noteworthy.add(customer_id)
        else:
            self.noteworthy.discard(customer_id)

    def _stored(self, customer_id: str) -> Any:
        # Looked up on each call: touching ``customers.data`` creates the store, which
        # must happen on the worker's event loop (else faust's start-up hangs).
        return self.customers.data.get(customer_id)

    def _rebuild_timer_index(self) -> None:
        """Index the timers of every customer this worker now owns, recount the
        population gauges and the operator page's customers: once per rebalance, never
        per tick. Each state is read where it lies (:func:`takeover`), not built."""
        data = self.customers.data
        owned = []
        counts: Counter[tuple[str, str]] = Counter()
        unreadable: list[str] = []
        for key, partition in self._owned():
            stored = data.get(key)
            if stored is None:
                continue
            try:
                # Read where it lies: after a restart every state is its stored bytes
                rows, basis, worthy = takeover(stored)
            except StoredStateError as exc:
                unreadable.append(str(exc))
                continue
            owned.append((key, partition, rows))
            counts.update(keys_of_basis(basis))
            self._note_worthy(key, worthy)
        if unreadable:
            log.error(
                "%d stored customer states cannot be read by this version (first: %s); their "
                "events go to the DLQ (processing_failed) and their timers wait until a "
                "crmstream that reads them runs: deploy/RUNBOOK.md, 'Stored states this "
                "version cannot read'",
                len(unreadable),
                unreadable[0],
            )
        self.timer_index.rebuild(owned)
        for gauge in _GAUGES.values():
            gauge.clear()
        _move_gauges(counts)
        log.info(
            "timer index rebuilt: %d timers on %d customers",
            self.timer_index.pending,
            len(self.timer_index),
        )

    async def observe_timers(self) -> None:
        """The timer gauges (pending, as every round also sets it; overdue against each
        partition's watermark) and clocks."""
        metrics.TIMERS_PENDING.set(self.timer_index.pending)
        wall = time.time()
        overdue = 0
        for partition, merge in list(self.inputs.merges.items()):
            mark = self.inputs.watermark(partition, wall)
            if mark is not None:
                overdue += self.timer_index.overdue(mark[0] - OVERDUE_AFTER, partition)
                metrics.WATERMARK.labels(str(partition)).set(mark[0])
            if merge.stream_time is not None:
                metrics.STREAM_TIME.labels(str(partition)).set(merge.stream_time)
        metrics.TIMERS_OVERDUE.set(overdue)

    async def project_profiles(self) -> None:
        """The Redis profile projection's write-behind loop (see streams.projection)."""
        if not self.rules.model.enabled:
            return
        await self.projection.run(lambda: self.app.should_stop)

    async def _flush_projection(self, sender: object, **kwargs: object) -> None:
        if not self.rules.model.enabled:
            return
        try:
            written = await asyncio.wait_for(self.projection.flush(), timeout=10.0)
            log.info("projection flushed on shutdown: %d profiles", written)
        except Exception as exc:  # best effort: the next start resyncs anyway
            log.warning("projection not flushed on shutdown (%s)", type(exc).__name__)

    async def process_customer_events(self) -> None:
        """Release merged records, handle them with their due timers, write, mark handled."""
        metrics.INPUT_BUFFER.set_function(
            lambda: sum(len(m) for m in list(self.inputs.merges.values()))
        )
        log.info(
            "taking batches of up to %d records; timers on the %s clock",
            self.settings.batch_max,
            self.settings.clock,
        )
        # With nothing arriving, a round every timer tick: due timers still fire.
        await self.feed.serve(
            SERVED_AS,
            self.inputs.arrived,
            self.handle_round,
            idle=self.settings.timer_tick,
            positioned=self._on_assigned,
        )

    def _on_assigned(self) -> None:
        """Partitions are assigned, recovered and positioned: index timers, resync Redis,
        and move the restored states out of the collector's way."""
        self._rebuild_timer_index()
        # The restored states live long: frozen, the collector's full passes skip them
        # (they are still freed by reference counting when replaced).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        if self.rules.model.enabled:
            self.projection.resync("partitions assigned")
        metrics.set_ready(True)

    async def _rebalancing(self, sender: object, *args: object, **kwargs: object) -> None:
        metrics.set_ready(False)
        # Signal handlers run in no set order: this one may come before the feed's has
        # stopped the rounds, so it waits for the round in hand (this agent's lock).
        async with self.feed.lock_of(SERVED_AS):
            with contextlib.suppress(Exception):  # kept: InputFeed.settle stops the worker
                await self.settle()  # the rounds in flight mark their customers first
        self.progress_sent.clear()  # whoever owns a partition next reports it afresh
        self.projection.forget()
        self.timer_index.clear()
        self.noteworthy.clear()

    async def settle(self) -> None:
        """Write what full rounds held back, and wait for every round's writes (before
        partitions move, and at shutdown: :meth:`streams.kafka.InputFeed.settle`)."""
        self._flush()
        await self.writes.settle()

    def _flush(self) -> None:
        """Start writing what is held back, after the last round's writes. Not after a
        round whose writes failed: a held round's outputs may be the ones that failed,
        and its state must not say they went out (its records are read again)."""
        if self.held and self.writes.failure is None:
            self.writes.start(self._write_held(self.held.take(), self.writes.last))

    async def handle_round(self) -> bool:
        """One batch: release, fold, fire timers, send; then, in a task (:attr:`writes`)
        while the next round folds: outputs acknowledged; state written and offsets
        marked handled, for this round and the ones held before it, once due.

        Returns True if more is ready at once (a full batch, one whose
        CRM_BATCH_SECONDS ran out or that read CRM_BATCH_STATES_FROM_BYTES states from
        their bytes or started them for new customers, or timers left due). Such a round
        holds its states back (:attr:`held`, at most CRM_STATE_FLUSH_INTERVAL): a
        customer the next rounds touch again is written once, by the round that finds
        the input caught up or the interval over.
        """
        started = time.perf_counter()
        wall = time.time()
        now = Now(wall) if self.inputs.live else REPLAY
        load, read = self._loader()
        limit = self.settings.batch_max
        # At most this many states read from their bytes or started for new customers
        # (each held parsed until its round is written).
        cap = (
            self.settings.batch_states_from_bytes if self._tracks_parsed(self.customers.data) else 0
        )
        result = BatchResult()
        released = 0
        monotonic = time.monotonic()
        budget = self.settings.batch_seconds
        spent = False  # the batch's time or reads were up before its records (more ready)
        taken: list[Item] = []  # released, not folded yet
        size = self._slice(budget, limit, cap)
        for items in release_in_time_order(self.inputs.merges.values(), limit, monotonic, wall):
            released += len(items)
            taken += items
            if len(taken) < size:
                continue
            self._fold(taken, released - len(taken), load, now, result, read)
            taken = []
            if (budget and time.perf_counter() - started >= budget) or (cap and read[0] >= cap):
                spent = True
                break
            size = self._slice(budget, limit, cap and cap - read[0])
        if taken:
            self._fold(taken, released - len(taken), load, now, result, read)

        def until(partition: int) -> tuple[float, bool] | None:
            return self.inputs.watermark(partition, wall)

        # Where states are kept as bytes, a batch fires the timers of at most ``cap``
        # customers too (each may be one to parse; a new customer has no timers).
        due_limit = min(limit, cap) if cap and (read[1] or self.parsed.full) else limit
        due = self.timer_index.pop_due(until, due_limit)
        # With them, the timers this round's records set that are due already (held
        # parsed: no reads), not left for a round of their own.
        sweep = due + due_after_fold(result, due, until)
        cut = (
            fire_timers(result, sweep, load, until, self.rules, now, TIMERS_PER_SWEEP)
            if sweep
            else []
        )
        for partition, merge in self.inputs.merges.items():
            mark = until(partition)
            if mark is not None and not (len(due) >= due_limit):
                merge.fired(mark[0])
        self.inputs.commands_held_from(result.handled)
        self.inputs.note_handled(result.handled)
        clocks = self.inputs.changed_clocks()
        progress = self._progress()
        if not (released or result.changed or clocks or progress):
            self._flush()
            await self.writes.trim()
            return False
        stored = stored_forms(result, load, self.rules, now)  # before anything is sent
        result.in_release_order()
        failpoints.hit("after_fold")
        # The next round folds on these states, written or not yet (in place: the
        # population gauges move by what this round did, taken now).
        moves = gauge_moves(result.baselines, result.states)
        if result.isolated:
            self._replace_failed(result)
        result.let_go_of_inputs()  # not kept beside the next round's while writes wait
        for customer_id in result.changed:
            partition, state = result.states[customer_id]
            self.unwritten[customer_id] = Owned(state, stored[customer_id])
            self.timer_index.note(customer_id, partition, state.timers)
        # Here, not only on the 5-second tick (observe_timers): a short drain read 0.
        metrics.TIMERS_PENDING.set(self.timer_index.pending)
        pending, sent = await self._send(result, progress)
        more = spent or released >= limit or len(due) >= due_limit or bool(cut)
        held = self.held
        held.hold(
            stored,
            result.states,
            clocks,
            result.handled,
            moves,
            result.appended_at,
            monotonic,
        )
        due_now = held.due(not more, self.settings.state_flush_interval, time.monotonic())
        self.writes.start(
            self._finish(
                result,
                held.take() if due_now else None,
                pending,
                sent,
                self.writes.last,
                started,
                released,
            )
        )
        await self.writes.trim()
        metrics.TIMERS_CUT_SHORT.inc(len(cut))
        if result.timers_failed:
            metrics.TIMERS_FAILED.inc(result.timers_failed)
        return more

    def _slice(self, budget: float, limit: int, reads_left: int = 0) -> int:
        """How many released records a round folds at once: as many as fold in its time
        budget (CRM_BATCH_SECONDS) by the cost per record lately; it looks at its time
        after each slice. Without a budget, the whole round. The bigger the slice, the
        more of each customer's records it holds together: slices of a quarter of the
        budget (two per round) drained the storefront mix ~4 % slower than one (unpaired
        runs, bench/README.md). ``reads_left``: states the round may still read from
        their bytes (CRM_BATCH_STATES_FROM_BYTES; 0: no bound): as many records as read
        that many by the reads per record lately (at most one each; where every
        customer's state is kept parsed, none, and the bound leaves slices alone)."""
        size = limit if not budget else max(1, min(limit, int(budget / self.fold_cost)))
        if reads_left > 0 and reads_left < size * self.read_rate:
            return max(1, int(reads_left / self.read_rate))
        return size

    def _fold(
        self,
        items: list[Item],
        first: int,
        load: Any,
        now: Now,
        result: BatchResult,
        read: list[int],
    ) -> None:
        """Fold a slice of the round's released records (``first``: the place of the
        slice's first record in the round), customer by customer (:func:`by_customer`);
        ``read``: the round's counts of the states it holds parsed (:meth:`_loader`).
        Learns the cost and the reads per record lately (each halfway to the slice's
        own)."""
        started = time.perf_counter()
        before = read[0]
        fold_items(by_customer(items, first), load, self.rules, now, result)
        cost = (time.perf_counter() - started) / len(items)
        self.fold_cost = (self.fold_cost + cost) / 2
        self.read_rate = (self.read_rate + (read[0] - before) / len(items)) / 2

    def _replace_failed(self, result: BatchResult) -> None:
        """Where the fold did a customer's batch again without a record that failed, the
        parsed state the memory store holds took that record in before it failed: the
        table gets the batch's state in its place at once (it would at the write)."""
        data = self.customers.data
        if not in_memory(data):
            return
        for customer_id in result.isolated:
            if type(data.get(customer_id)) is CustomerState:
                data[customer_id] = result.states[customer_id][1]

    def _loader(self) -> tuple[Any, list[int]]:
        """How a round loads a customer's state: the latest, written or still in flight;
        and two counts, which ``load`` keeps. ``read[0]``: the states the round holds
        parsed that the store did not keep parsed (CRM_STATES_PARSED), the count the
        round's bound (CRM_BATCH_STATES_FROM_BYTES) is on. Those are the states it read
        as bytes, which the fold parses, and new customers' states, which start in the
        round: a burst of new customers (a first start, a backfill) held as much memory
        as reads from bytes (``tests/unit/test_round_states_from_bytes.py``).
        ``read[1]``: of them, the states read as bytes.

        A state held parsed goes to the fold :class:`Owned`, with the bytes it was
        stored as, to be changed in place rather than copied: one a round in flight
        wrote, or one the memory store keeps parsed (:attr:`parsed` has its bytes).
        Anything else (RocksDB, or every state kept parsed: ``CRM_STATES_PARSED=0``)
        is copied by the fold, as before."""
        data = self.customers.data
        get = data.get
        unwritten = self.unwritten
        from_bytes = metrics.STATES_READ_FROM_BYTES
        tracked = self._tracks_parsed(data)
        written = self.parsed.bytes_of if tracked else None
        unparsed = self.parsed.read_unparsed if tracked else None
        read = [0, 0]  # held parsed beyond the store's; of them, read from bytes

        def load(key: str) -> Any:
            entry = unwritten.get(key)
            if entry is not None:
                return entry
            stored = get(key)
            # Held parsed beyond the store's: read from its bytes, or a new customer's
            # state (None), which starts in the round.
            if stored is None or type(stored) is bytes:
                read[0] += 1
                if stored is not None:
                    from_bytes.inc()
                    read[1] += 1
                if unparsed is not None:
                    unparsed(key)
            elif type(stored) is CustomerState and written is not None:
                raw = written(key)
                if raw is not None:
                    return Owned(stored, raw)
            return stored

        return load, read

    async def _finish(
        self,
        result: BatchResult,
        held: HeldWrites | None,
        pending: list[Any],
        sent: list[Action],
        previous: asyncio.Task[None] | None,
        started: float,
        released: int,
    ) -> None:
        """A round's writes: its outputs acknowledged (then the ledger); then, after the
        previous round's writes, what it hands over of the rounds held (``held``, this
        one's included) written and marked handled."""
        await self._acknowledged(pending, sent)
        failpoints.hit("after_send")
        if previous is not None:
            await previous  # its failure is ours: nothing is written after a hole
        if held is not None:
            await self._written(held)
        self._observe(result, released, time.perf_counter() - started)

    async def _write_held(self, held: HeldWrites, previous: asyncio.Task[None] | None) -> None:
        """What full rounds held back, written after the last round's writes."""
        if previous is not None:
            await previous
        await self._written(held)

    async def _written(self, held: HeldWrites) -> None:
        """Held states and clocks written, then their rounds' offsets marked handled."""
        await self._write(held)
        failpoints.hit("after_write")
        self.feed.handled({_tp(topic, p): offset for (topic, p), offset in held.handled.items()})
        metrics.CUSTOMERS_TOUCHED.inc(len(held.forms))
        _move_gauges(held.moves)
        if self.rules.model.enabled:
            self.projection.mark(held.forms)
        handled_at = time.time()
        metrics.PROCESSING_LATENCY.observe_many(
            [max(0.0, handled_at - appended_at) for appended_at in held.appended_at]
        )

    async def _acknowledged(self, pending: list[Any], sent: list[Action]) -> None:
        """Wait for the broker's acks of a round's outputs, then note its actions sent in
        the ledger."""
        if pending:
            await asyncio.gather(*pending)
        acked_at = time.time()  # the broker acknowledged every output (the ledger is after)
        await self.ledger.record([a.action_id for a in sent])
        metrics.ACTION_LATENCY.observe_many(
            [max(0.0, acked_at - _latency_start(action)) for action in sent]
        )

    def _progress(self) -> list[bytes]:
        """Progress records (schemas.signals.SourceProgress) of the partitions whose stream
        time or caught-up state moved since they were last sent: after every round that
        moved them (the aggregates agent waits for them; a few records per round). Sent
        after the round's signals, in the same record batch per signals partition."""
        out = []
        for partition, merge in self.inputs.merges.items():
            if merge.proposers:  # the agent's promises move on the floor (streams.merge)
                floor = merge.signals_floor(SIGNAL_EVENT_TYPES)
                now = (merge.stream_time if floor == INF else floor, merge.inputs_settled)
            else:
                now = (merge.stream_time, merge.settled)
            if self.progress_sent.get(partition) != now:
                self.progress_sent[partition] = now
                out.append(progress_record(partition, *now))
        return out

    async def _send(
        self, result: BatchResult, progress: Sequence[bytes] = ()
    ) -> tuple[list[Any], list[Action]]:
        """Send the batch's signals (then the partitions' progress), dead letters, new
        actions, changes, flags and decisions: the futures of the broker's acks (to wait
        for before any state says "done"), and the actions sent (not ledger duplicates).

        The signals and progress go first: the aggregates agent waits for every
        partition's progress before it promises how far they may go next (with the
        replay clock's lookahead, a history moves on by about a lookahead per promise).
        After the ledger's round trip and the actions, they left about 26 ms later, of
        a promise cycle of about 400 ms on the backfill mix (bench/README.md)."""
        # The partitions' progress to every signals partition, after the signals and in
        # the same record batch: the aggregates agent reads both or neither, so it never
        # promises from a round's signals without the progress that came with them.
        pending = await outputs.send(
            self.app,
            self.settings,
            outputs.SIGNALS,
            result.signals,
            then_everywhere=[(PROGRESS_KEY, p) for p in progress],
        )
        pending += await outputs.send(
            self.app, self.settings, outputs.DEAD_LETTERS, result.dead_letters
        )
        fresh = await self.ledger.unsent([a.action_id for a in result.actions])
        sent: list[Action] = []
        tally: metrics.Tally = Counter()
        for action in result.actions:
            labels = (action.action_type.value, action.channel.value)
            if action.action_id not in fresh:
                tally[metrics.ACTIONS, (*labels, "duplicate_suppressed")] += 1
                continue
            sent.append(action)
            tally[metrics.ACTIONS, (*labels, "sent")] += 1
        pending += await outputs.send(self.app, self.settings, outputs.ACTIONS, sent)
        # Segment changes skip the ledger (its Redis writes cost more than the changes
        # themselves): at least once, with deterministic change ids; a repeat needs a
        # crash between the broker's ack and the state write, and carries the same id.
        for change in result.changes:
            tally[metrics.CUSTOMER_CHANGES, (change.dimension.value,)] += 1
        metrics.add_tally(tally)
        pending += await outputs.send(self.app, self.settings, outputs.CHANGES, result.changes)
        pending += await outputs.send(self.app, self.settings, outputs.FLAGS, result.flags)
        pending += await outputs.send(self.app, self.settings, outputs.DECISIONS, result.verdicts)
        if result.conversions:
            pending += await outputs.send(
                self.app, self.settings, outputs.CONVERSIONS, result.conversions
            )
        return pending, sent

    async def _write(self, held: HeldWrites) -> None:
        """Each held customer's state (packed: CRM_STATE_PACKING), then each moved
        partition clock: one record each. Packing here, after the outputs are sent,
        keeps its CPU off the way from the fold to the actions; a batch of states packs
        on a thread of its own while the loop folds the next round (:class:`Packer`)."""
        writes: dict[int, list[tuple[str, Any, bytes]]] = {}
        settings = self.settings
        forms = held.forms
        states = held.states
        packed = dict(
            zip(
                forms,
                await self.packer.pack(
                    list(forms.values()), settings.state_packing, settings.state_dictionary
                ),
                strict=True,
            )
        )
        unwritten = self.unwritten
        for customer_id, raw in packed.items():
            partition, state = states[customer_id]
            # A memory store gets the latest state: a later round's may already be
            # folded on this one (the same state, or a new one if it failed a record).
            latest = unwritten.get(customer_id)
            value = state if latest is None else latest.state
            writes.setdefault(partition, []).append((customer_id, value, raw))
        for partition, clock in held.clocks.items():
            writes.setdefault(partition, []).append(
                (clock_key(partition), clock, codec.dumps(clock))
            )
        await write_changelog(
            self.app,
            self.customers,
            writes,
            SEAL_KEY.encode() if self.settings.changelog_seal else None,
        )
        for customer_id, form in forms.items():
            entry = unwritten.get(customer_id)
            state = states[customer_id][1] if entry is None else entry.state
            # Its stored form, not the state, says whose entry it is: a later round
            # folds the same state in place, and its entry stays until it is written.
            if entry is not None and entry.before is form:
                del unwritten[customer_id]
            self._note_worthy(customer_id, noteworthy(state))
        data = self.customers.data
        if self._tracks_parsed(data):
            parsed = self.parsed
            metrics.STATES_RELEASED.inc(parsed.written(data, packed.items()))
            metrics.STATES_KEPT_PARSED.set(len(parsed))
            if parsed.estimate is not None:
                metrics.STATES_PARSED_OLDER_HIT_RATIO.set(parsed.estimate)

    def _tracks_parsed(self, data: Any) -> bool:
        """Whether :attr:`parsed` keeps the bytes of the states ``data`` holds parsed:
        :meth:`_write` notes them, and :meth:`_loader` folds those states in place."""
        return bool(self.parsed.limit) and in_memory(data)

    def _observe(self, result: BatchResult, size: int, batch_seconds: float) -> None:
        """A round's metrics, counted per round: each metric and label set once (its
        ``labels()`` and ``inc()`` cost ~1.3 µs; a round of the simulator's mix holds
        about two counted items an event), the histograms a round at a time."""
        for (topic, event_type), n in result.events_in.items():
            metrics.EVENTS_IN.labels(topic, event_type).inc(n)
        for topic, n in result.duplicates.items():
            metrics.DUPLICATE_EVENTS.labels(topic).inc(n)
        for topic, n in result.redelivered.items():
            metrics.REDELIVERED.labels(topic).inc(n)
        for topic, n in result.late.items():
            metrics.LATE_EVENTS.labels(topic).inc(n)
        tally: metrics.Tally = Counter()
        for dl in result.dead_letters:
            tally[metrics.DEAD_LETTERS, (dl.source_topic, dl.error_code.value)] += 1
        for f in result.flags:
            if f.status is FlagStatus.OPEN:
                tally[metrics.FLAGS, (f.kind.value,)] += 1
            else:
                tally[metrics.FLAG_REVIEWS, (f.kind.value, f.status.value)] += 1
        for d in result.verdicts:
            action_type = d.action_type.value if d.action_type is not None else "unknown"
            decision = d.decision.value
            code = d.code.value if d.code is not None else "none"
            tally[metrics.ACTION_DECISION_REASONS, (action_type, decision, code)] += 1
            if d.decision is Verdict.SEND or d.decision is Verdict.CHANNEL_CLOSED:
                continue  # a send is counted as it goes out; a closed channel is no action
            tally[metrics.ACTIONS, (action_type, d.channel or "none", decision)] += 1
        for _, action_type, channel, kind in result.outcomes:
            tally[metrics.ACTION_OUTCOMES, (action_type, channel, kind)] += 1
        for c in result.conversions:
            if c.revision == 0:
                channel = c.channel or "none"
                tally[metrics.CONVERSIONS, (c.action_type.value, channel, c.group.value)] += 1
        for complaint_type in result.complaints_opened:
            tally[metrics.COMPLAINTS_OPENED, (complaint_type,)] += 1
        for change in result.changes:
            if change.dimension is Dimension.STAGE:
                tally[metrics.STAGE_TRANSITIONS, (change.before or "none", change.after)] += 1
        for complaint_type, satisfied in result.satisfaction:
            answer = "yes" if satisfied else "no"
            tally[metrics.COMPLAINT_SATISFACTION, (complaint_type, answer)] += 1
        handling: dict[str, list[float]] = {}
        for complaint_type, handled_in in result.handling:
            handling.setdefault(complaint_type, []).append(handled_in)
        for complaint_type, values in handling.items():
            metrics.COMPLAINT_HANDLING.labels(complaint_type).observe_many(values)
        for complaint_type, deadline, outcome in result.deadlines:
            counter = metrics.SLA_MET if outcome == "met" else metrics.SLA_BREACHES
            tally[counter, (complaint_type, deadline)] += 1
        for kind, _ in result.fired:
            tally[metrics.TIMERS_FIRED, (kind,)] += 1
        metrics.TIMER_DELAY.observe_many([late for _, late in result.fired])
        for kind, n in timers.take_dropped().items():
            tally[metrics.TIMERS_DROPPED, (kind,)] += n
        metrics.add_tally(tally)
        merges = self.inputs.merges.values()
        idle = sum(m.counts.idle_releases for m in merges)
        if idle:
            metrics.MERGE_IDLE_RELEASES.inc(idle)
            for m in merges:
                m.counts.idle_releases = 0
        waited = sum(m.counts.promise_wait for m in merges)
        if waited:
            metrics.MERGE_PROMISE_WAIT.inc(waited)
            for m in merges:
                m.counts.promise_wait = 0.0
        if size:
            metrics.BATCH_SIZE.observe(size)
        metrics.BATCH_DURATION.observe(batch_seconds)


#: The cost per record a worker assumes before it has folded any (seconds; a storefront
#: drain's is ~30 us; the simulator's mix of orders, complaints and reviews folds at
#: ~100 us a record in-process, bench.fold).
FOLD_COST_GUESS = 100e-6
#: States read from their bytes per record folded, until a slice tells (at most 1): a
#: new worker's first slices hold the bound on reads even if every record reads one.
READ_RATE_GUESS = 1.0

#: Records a run of one partition holds at most (:func:`release_in_time_order`): how far
#: a round's slice can run past its size (the round looks at its time budget between
#: slices, :meth:`CustomerAgent._slice`).
RUN_RECORDS = 1000


def release_in_time_order(
    merges: Iterable[PartitionMerge],
    limit: int,
    monotonic_now: float,
    wall_now: float | None = None,
) -> Iterator[list[Item]]:
    """Up to ``limit`` records of the worker's partitions, in runs: each run is one
    partition's records up to the next partition's head, so the partitions' stream
    times move on together (a partition far ahead of the others would get the
    aggregates agent's commands days late: it waits for every partition). Within a
    partition, its merge decides the order, as always; a partition whose inputs do
    not allow its head yet sits the rest of the round out. Each partition's head time
    is asked once; a run's release finds the next one as it stops. A run holds at
    most :data:`RUN_RECORDS` records (a partition whose head stays first goes on in
    the next run), so a round that looks at its time budget (``CRM_BATCH_SECONDS``)
    after a slice of a few records does so even with one partition."""
    heap = [(at, i, m) for i, m in enumerate(merges) if (at := m.head_time()) is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    left = limit
    while heap and left > 0:
        _, i, merge = pop(heap)
        until = heap[0][0] if heap else INF
        items, at = merge.release_run(min(left, RUN_RECORDS), monotonic_now, until, wall_now)
        if not items:
            continue  # waits for an input: the others go on
        left -= len(items)
        yield items
        if at is not None:
            push(heap, (at, i, merge))


def progress_record(partition: int, stream_time: float | None, idle: bool) -> bytes:
    """A customer partition's :class:`~schemas.signals.SourceProgress` record."""
    return codec.dumps(
        {
            "schema_version": 1,
            "kind": PROGRESS,
            "source": partition,
            "stream_time": None
            if stream_time is None
            else dt.datetime.fromtimestamp(stream_time, dt.UTC).isoformat(),
            "idle": idle,
        }
    )


def _latency_start(action: Action) -> float:
    """Where ``crm_action_latency_seconds`` starts: the triggering event's time or the
    firing timer's due time (``created_at``); for an action that waited for its
    ``not_before`` (deferred by the contact policy, or asked for later by a command),
    the due time of the timer that sent it, its ``not_before``."""
    start = action.created_at.timestamp()
    if action.not_before is not None:
        start = max(start, action.not_before.timestamp())
    return start


def _tp(topic: str, partition: int) -> Any:
    from faust.types import TP

    return TP(topic, partition)
