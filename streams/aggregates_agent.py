"""Agent ``aggregate_signals``: counts across customers (mass delays, complaint surges).

Consumes: ``crm.signals`` (raw bytes, keyed by aggregation key; see
:mod:`schemas.signals`), which the customer agent fills from
:func:`agents.aggregate_rules.signals_for`.
Owns: table ``aggregates`` (aggregation key -> :class:`~agents.aggregate_rules.KeyState`).
Emits: ``logistics_apology`` proposals as ``care.requested`` commands on
``crm.commands`` (keyed by customer id: the customer agent puts each through
that customer's contact policy and sends it, or records why not);
``logistics_delay`` and ``complaint_surge`` flags on ``crm.flags``
(keyed by the flag's subject); the gauges
``crm_complaint_week_over_week_ratio`` and ``crm_complaint_surge_level``;
bad signal records on ``crm.dlq``.

Order: the signals come from every customer partition; a
:class:`~streams.source_merge.SourceMerge` per signals partition releases them
in the order of their sources' stream times, not of their arrival (see there),
and its bookkeeping is stored in the table (key ``~merge/<partition>``) with the
keys' states.

Promises (replay clock, ``CRM_PROPOSAL_LOOKAHEAD`` > 0): a proposal is dated the
lookahead after the signal that caused it (its stream time), so none of the
proposals still to come from a signals partition is dated before its merge's
:meth:`~streams.source_merge.SourceMerge.floor` plus the lookahead. After each batch
whose commands the broker acknowledged, and again every second while the customer
partitions report progress, the agent tells
every commands partition so (:class:`~schemas.commands.ProposalProgress`); the
customer partitions hold their records until no proposal can come before them
(``streams.merge``), so a proposal enters its customer's stream at its place in
event time, whichever worker was faster.

Per batch: the pure :func:`~agents.aggregate_rules.fold_signals` applies the
released records to copies of their keys' states; dead letters are sent; actions and
flags that pass the Redis ledger are sent and acknowledged by the broker, then
recorded in the ledger; then each touched key's state is written once; only
then are the records acked. So a restart or replay never sends an action or
flag twice (the ledger, and the state: each key remembers the last offset and
the recent signal ids it applied), and a crash loses none.

Failure policy: a bad signal becomes a dead letter; a broker failure crashes
the worker before offsets commit (the batch is processed again after restart);
a Redis outage degrades the ledger to state-only idempotency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agents.aggregate_rules import (
    COMPLAINT_KEYS,
    KeyState,
    SignalBatch,
    SignalRecord,
    fold_signals,
    key_state,
    surge_readings,
)
from schemas import codec
from schemas.commands import PROMISE_KEY, promise_record
from schemas.deadletter import RecordMeta
from streams import failpoints, metrics, outputs
from streams.app import SEAL_KEY, Runtime
from streams.kafka import partition_for, send_everywhere, write_changelog
from streams.ledger import ActionLedger
from streams.source_merge import NONE_YET, SourceMerge

log = logging.getLogger(__name__)

#: Seconds between two writes of the merges' bookkeeping when only progress records
#: came (with signals it is written with their keys' states, every batch).
BOOKKEEPING_EVERY = 1.0
#: Seconds between two sends of the same promises (a customer partition that restarted
#: or moved learns them again within this).
PROMISE_EVERY = 1.0


class AggregatesAgent:
    """The aggregates agent's I/O shell on one runtime: its signal queue, flag ledger
    and surge gauges, and the task, timer and handler :meth:`install` registers."""

    def __init__(self, rt: Runtime) -> None:
        self.settings = rt.settings
        self.rules = rt.rules
        self.app = rt.app
        self.feed = rt.feed
        self.aggregates = rt.aggregates
        self.topics = rt.settings.topics
        self.ledger = ActionLedger(
            rt.settings.redis_url.get_secret_value(), rt.settings.ledger_ttl_days
        )
        #: The feed's sink for the signals topic: one merge of the sources per partition.
        self.signal_queue = SignalMerges(
            rt.settings.partitions, rt.settings.merge_idle_seconds, self._stored_merge
        )
        #: Complaint-type keys this worker has state for (at most one per ComplaintType).
        self.complaint_keys: set[str] = set()
        #: Monotonic time the merges' bookkeeping was last written.
        self._bookkept = 0.0
        #: How long after its signal a proposal is dated (0: no promises, see above).
        self.lookahead = rt.settings.proposal_lookahead if rt.proposals_promised else 0.0
        #: Per owned signals partition, the promise last made (sent after every command it
        #: covers was acknowledged; the timer sends these again, never newer ones).
        self.promised: dict[int, float] = {}

    def install(self) -> None:
        """Read the signals topic and register the agent's task, timer and handler."""
        app = self.app
        self.feed.sinks[self.topics.signals] = self.signal_queue
        app.task(self.aggregate_signals)
        app.timer(interval=10.0)(self.refresh_surge_gauges)
        app.on_partitions_revoked.connect(self._forget_gauges)  # type: ignore[arg-type]
        if self.lookahead:
            app.timer(interval=PROMISE_EVERY)(self.promise_again)

    async def aggregate_signals(self) -> None:
        """Take batches of signal records, handle them, then mark them handled."""
        await self.feed.serve("signals", self.signal_queue.arrived, self.handle_batch, idle=1.0)

    def _stored_merge(self, partition: int) -> Any:
        stored = self.aggregates.data.get(merge_key(partition))
        return codec.loads(stored) if isinstance(stored, bytes) else stored

    async def handle_batch(self) -> bool:
        """One batch of signals: released by the merges, handled, then marked handled;
        True if more is waiting.

        A batch that only took progress records writes the merges' bookkeeping (and
        marks them handled) at most every BOOKKEEPING_EVERY seconds: they come after
        every round of every customer partition, and a write waits for the broker."""
        queue = self.signal_queue
        now = time.monotonic()
        records = queue.release(self.settings.batch_max, now)
        if records:
            await self.handle_signals(records, queue.moved())
        elif queue.any_moved() and now - self._bookkept >= BOOKKEEPING_EVERY:
            await self._write({}, queue.moved())
        else:
            await self.promise()  # progress records moved the floors
            return False
        await self.promise()
        self._bookkept = now
        self.feed.handled(queue.first_held())
        idle, skipped = queue.take_counts()
        if idle:
            metrics.MERGE_IDLE_RELEASES.inc(idle)
        if skipped:  # read again after a restart: counted as the fold's repeats are
            metrics.DUPLICATE_EVENTS.labels(self.topics.signals).inc(skipped)
        return len(records) >= self.settings.batch_max

    async def handle_signals(
        self, records: list[Any], moved: dict[int, dict[str, Any]] | None = None
    ) -> None:
        """Fold a batch, send its dead letters, new actions and flags, then write state
        (and ``moved``: the merges' bookkeeping, by partition)."""
        result = fold_signals(
            [to_record(r) for r in records],
            self.aggregates.data.get,
            self.rules.aggregates,
            self.lookahead,
        )
        pending = await outputs.send(
            self.app, self.settings, outputs.DEAD_LETTERS, result.dead_letters
        )
        # Proposals are never sent from here: each goes to its customer's agent as a
        # command, through that customer's contact policy like every other action
        # (schemas.commands); a repeated command is recognised there by its id (the
        # action's), and the action ledger is the customer agent's, on the real send.
        # Two keys of one late delivery (carrier, region) propose one apology under one
        # id, each in its own words: both go, and the customer's merge puts them in one
        # order (time, id, bytes), whichever batch each fell in. (Keeping one per batch
        # kept a different one when the two fell in one batch or in two: the runs'
        # batches differ, and so did the apology a customer got.)
        actions = result.actions
        flags = list({f.flag_id: f for f in result.flags}.values())
        fresh = await self.ledger.unsent([f.flag_id for f in flags])
        new_flags = [f for f in flags if f.flag_id in fresh]
        pending += await outputs.send(self.app, self.settings, outputs.COMMANDS, actions)
        pending += await outputs.send(self.app, self.settings, outputs.FLAGS, new_flags)
        await failpoints.hold("signals_unacknowledged", "waiting for good")
        if pending:
            await asyncio.gather(*pending)  # broker acks before the ledger and state say "done"
        await self.ledger.record([f.flag_id for f in new_flags])
        for f in new_flags:
            metrics.FLAGS.labels(f.kind.value).inc()

        writes: dict[int, list[tuple[str, Any, bytes]]] = {}
        for key in result.changed:
            partition, state = result.states[key]
            writes.setdefault(partition, []).append((key, state, codec.dumps(state.to_dict())))
            if key in COMPLAINT_KEYS:
                self.complaint_keys.add(key)
        await self._write(writes, moved or {})
        self._observe(result)
        if any(key in COMPLAINT_KEYS for key in result.changed):
            self.refresh_surge_gauges_now()

    async def promise(self) -> None:
        """Tell every commands partition how far this worker's signals partitions have
        come: none of their proposals still to come is dated before ``floor +
        lookahead``. Only after the commands of every signal released so far were
        acknowledged (:meth:`handle_batch` calls it then), so a promise never passes a
        command that is still on its way."""
        if not self.lookahead:
            return
        made = []
        for tp, merge in self.signal_queue.merges.items():
            floor = merge.floor()
            if floor == NONE_YET:
                continue  # a source has said nothing yet
            until = floor + self.lookahead
            if self.promised.get(tp.partition) != until:
                self.promised[tp.partition] = until
                made.append((tp.partition, until))
        await self._send_promises(made)

    async def promise_again(self) -> None:
        """Every PROMISE_EVERY seconds: the promises made, again (never newer ones: those
        wait for their commands' acknowledgements), for a customer partition that
        restarted or moved meanwhile: those of the signals partitions a customer
        partition reported its progress to since (one that restarted reports afresh).
        Not when none did: nothing moves, and the commands topic stays still (drained;
        a source whose inputs are never seen caught up kept it moving for ever)."""
        heard = set()
        for tp, merge in self.signal_queue.merges.items():
            if merge.heard:
                merge.heard = False
                heard.add(tp.partition)
        await self._send_promises([(q, u) for q, u in self.promised.items() if q in heard])

    async def _send_promises(self, promises: list[tuple[int, float]]) -> None:
        if not promises:
            return
        pending = await send_everywhere(
            self.app,
            self.topics.commands,
            [(PROMISE_KEY, promise_record(q, until)) for q, until in sorted(promises)],
            self.settings.partitions,
        )
        await asyncio.gather(*pending)

    async def _write(
        self, writes: dict[int, list[tuple[str, Any, bytes]]], moved: dict[int, dict[str, Any]]
    ) -> None:
        """The keys' states and the merges' bookkeeping: one changelog record each."""
        for partition, snapshot in moved.items():
            key = merge_key(partition)
            writes.setdefault(partition, []).append((key, snapshot, codec.dumps(snapshot)))
        await write_changelog(
            self.app,
            self.aggregates,
            writes,
            SEAL_KEY.encode() if self.settings.changelog_seal else None,
        )

    def _observe(self, result: SignalBatch) -> None:
        for dl in result.dead_letters:
            metrics.DEAD_LETTERS.labels(dl.source_topic, dl.error_code.value).inc()
        if result.skipped.get("signal_id"):
            metrics.DUPLICATE_EVENTS.labels(self.topics.signals).inc(result.skipped["signal_id"])

    def _owned_partitions(self) -> set[int]:
        return {
            tp.partition
            for tp in self.app.assignor.assigned_actives()
            if tp.topic == self.topics.signals
        }

    def _stored_state(self, key: str) -> KeyState | None:
        return key_state(self.aggregates.data.get(key))

    def refresh_surge_gauges_now(self) -> None:
        """Set the surge gauges of the complaint types this worker owns, as of the newest
        complaint time among them; drop the series of types without a ratio."""
        owned = self._owned_partitions()
        n = self.settings.partitions
        states = [
            s
            for key in sorted(self.complaint_keys)
            if partition_for(key.encode(), n) in owned
            and (s := self._stored_state(key)) is not None
        ]
        readings = surge_readings(states, self.rules.aggregates.complaint_surge)
        for ctype in COMPLAINT_KEYS.values():
            reading = readings.get(ctype)
            if reading is None or reading.ratio is None:
                _remove(metrics.COMPLAINT_SURGE_RATIO, ctype)
                _remove(metrics.COMPLAINT_SURGE_LEVEL, ctype)
            else:
                metrics.COMPLAINT_SURGE_RATIO.labels(ctype).set(reading.ratio)
                metrics.COMPLAINT_SURGE_LEVEL.labels(ctype).set(reading.level)

    async def refresh_surge_gauges(self) -> None:
        """Every 10 s: find complaint-type keys in the table (after a restart or a
        rebalance, before any new signal) and refresh the gauges."""
        owned = self._owned_partitions()
        n = self.settings.partitions
        for key in COMPLAINT_KEYS:
            if (
                partition_for(key.encode(), n) in owned
                and self.aggregates.data.get(key) is not None
            ):
                self.complaint_keys.add(key)
        self.refresh_surge_gauges_now()

    async def _forget_gauges(self, sender: object, *args: object, **kwargs: object) -> None:
        self.promised.clear()  # the next owner promises for them
        self.complaint_keys.clear()
        metrics.COMPLAINT_SURGE_RATIO.clear()
        metrics.COMPLAINT_SURGE_LEVEL.clear()


def merge_key(partition: int) -> str:
    """The table key of a signals partition's merge bookkeeping (no aggregation key
    starts with ``~``)."""
    return f"~merge/{partition}"


class SignalMerges:
    """The feed's sink for the signals topic: a :class:`SourceMerge` per partition,
    restored from the table when its partition's first records arrive."""

    def __init__(self, sources: int, idle_after: float, stored: Callable[[int], Any]) -> None:
        self.sources = sources
        self.idle_after = idle_after
        self.stored = stored
        self.merges: dict[Any, SourceMerge] = {}
        self.arrived = asyncio.Event()

    def _merge(self, tp: Any) -> SourceMerge:
        merge = self.merges.get(tp)
        if merge is None:
            merge = self.merges[tp] = SourceMerge(self.sources, self.idle_after)
            merge.restore(self.stored(tp.partition))
        return merge

    def accept(self, tp: Any, records: Sequence[Any], position: int, end: int | None) -> None:
        self._merge(tp).accept(records)

    def note(self, tp: Any, position: int | None, end: int | None) -> None:
        """An owned partition (records or not): its merge, restored from the table, so a
        new owner promises for it (``AggregatesAgent.promise``) even if no signal comes."""
        self._merge(tp)

    def buffered(self, tp: Any) -> int:
        """What the merge holds, unless it waits for a source: then 0, so that fetching
        goes on (the progress it waits for may be further on in this partition)."""
        merge = self.merges.get(tp)
        return 0 if merge is None or merge.waiting else len(merge)

    def revoke(self, tps: Iterable[Any]) -> None:
        self.merges.clear()  # read again from the commit, restored from the table

    def __len__(self) -> int:
        return sum(len(m) for m in self.merges.values())

    def release(self, limit: int, monotonic_now: float) -> list[Any]:
        """Up to ``limit`` records, partition after partition, each in merge order."""
        out: list[Any] = []
        for merge in self.merges.values():
            if len(out) >= limit:
                break
            out += merge.release(limit - len(out), monotonic_now)
        return out

    def any_moved(self) -> bool:
        return any(m.moved for m in self.merges.values())

    def moved(self) -> dict[int, dict[str, Any]]:
        """The bookkeeping of each merge that moved since it was last taken, by partition."""
        return {tp.partition: m.snapshot() for tp, m in self.merges.items() if m.moved}

    def first_held(self) -> dict[Any, int]:
        """Per partition, the offset up to which every record is handled."""
        return {
            tp: offset for tp, m in self.merges.items() if (offset := m.first_held()) is not None
        }

    def take_counts(self) -> tuple[int, int]:
        """(signals released without waiting longer for a silent source, records read
        again and skipped) since last asked."""
        idle = skipped = 0
        for m in self.merges.values():
            idle += m.counts.idle_releases
            skipped += m.counts.skipped
            m.counts.idle_releases = m.counts.skipped = 0
        return idle, skipped


def to_record(record: Any) -> SignalRecord:
    """A fetched signal record (aiokafka ``ConsumerRecord``) for the pure fold."""
    return SignalRecord(
        record.key,
        record.value,
        RecordMeta(record.topic, record.partition, record.offset, record.timestamp),
    )


def _remove(gauge: Any, label: str) -> None:
    with contextlib.suppress(KeyError):  # no series for it yet
        gauge.remove(label)
