"""The runtime boundary: every use of faust's and aiokafka's internals lives here.

faust keeps what it does well -- consumer-group membership and the
co-partitioned assignment, tables and their changelog recovery, the web
server, the producer. This module replaces its per-record delivery for the
topics our agents read (measured: ~31 µs of framework work per record) with
one fetch loop that hands whole fetches to *sinks*, and does the rest of what
that path did: flow control around rebalances, back-pressure, positions,
commits. Its interface:

* :class:`InputFeed` -- install it on the app (:meth:`InputFeed.install`); it
  fetches in batches, passes each owned topic-partition's records to its
  sink, tells every sink each partition's fetch position and end offset after
  every fetch (so the event-time merge knows what is caught up), and commits
  the offsets the agents report handled (:meth:`InputFeed.handled`) -- on a
  timer, before partitions are revoked, and at shutdown. Each agent holds its
  own lock (:meth:`InputFeed.lock_of`) while handling a batch, and a rebalance
  takes them all (:meth:`InputFeed.quiet`), so it never cuts a batch in half;
  one agent's wait for the broker holds up no other agent.
* :meth:`InputFeed.serve` -- the agents' batch loop around it: wait for records,
  handle one batch under the agent's lock, commit when due, stop the worker on a
  failure.
* :func:`write_changelog` -- one changelog record batch per partition for a
  table written in batches; :func:`send_keyed` -- records to a topic, one
  record batch per partition.
* :class:`TableManager` -- faust's, without the second its start sleeps (the App
  takes it as its ``TableManager``).

Positions: after every (re)assignment each owned partition is sought to its
committed offset (or the log start if the group never committed), and a
fetch that does not start where the last one ended is sought back, so no
record is skipped whatever faust's own seeking does; a record read twice is
recognised downstream (each customer's state records the input offsets it
applied).

Pinned: faust-streaming, mode-streaming and aiokafka are pinned exactly in
pyproject.toml; every private attribute used here is listed in
``tests/unit/test_kafka_boundary.py``, which fails naming the one an installed
version lacks (the integration tier runs them against the real broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.protocol.group import LeaveGroupRequest
from faust.serializers import codecs
from faust.stores.memory import Store as MemoryStore
from faust.tables import TableManager as FaustTableManager
from faust.types import TP

from schemas import codec
from streams import failpoints

log = logging.getLogger(__name__)

#: Seconds the fetch loop waits before it looks again while no partition is active
#: (:meth:`InputFeed.drain`; faust's own loop sleeps a whole second there).
NOTHING_ACTIVE_PAUSE = 0.05


class _TableJson(codecs.Codec):
    """The tables' value codec: our JSON (schemas.codec), objects with ``to_dict`` as
    dicts; reads packed values too (:func:`schemas.codec.loads_stored`), and gives
    back the bytes of one it cannot unpack (``CustomerState.from_bytes`` refuses it
    where it is read, so that customer's events wait in the DLQ)."""

    def _dumps(self, obj: Any) -> bytes:
        if hasattr(obj, "to_dict"):
            obj = obj.to_dict()
        return codec.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        try:
            return codec.loads_stored(s)
        except codec.PackingError:
            return s  # a newer release's packing: StoredStateError where it is read


#: Name of the tables' value codec (registered with faust on import of this module).
TABLE_CODEC = "crmjson"
codecs.register(TABLE_CODEC, _TableJson())


class TableManager(FaustTableManager):
    """faust's table manager, less the second its start sleeps before it registers the
    tables' changelogs and starts the recovery: that sleep gives tables declared after
    the app starts time to be added. Every crmstream table is declared in
    ``create_app``, before the app starts, and one added later still fails loudly
    (faust's "Too late to add tables at this point"). The App takes it as its
    ``TableManager`` (``streams.app.create_app``)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class Sink(Protocol):
    """Where the fetched records of some topics go (one sink may take several topics)."""

    #: Set by the feed whenever a fetch brought records or positions moved.
    arrived: asyncio.Event

    def accept(self, tp: Any, records: Sequence[Any], position: int, end: int | None) -> None:
        """Records of ``tp`` (aiokafka ``ConsumerRecord``, in log order), the fetch
        position after them and the partition's end offset as last seen."""

    def note(self, tp: Any, position: int | None, end: int | None) -> None:
        """After every fetch: ``tp``'s fetch position and end offset (no new records)."""

    def buffered(self, tp: Any) -> int:
        """Records of ``tp`` taken but not yet handled (for back-pressure)."""

    def revoke(self, tps: Iterable[Any]) -> None:
        """Forget every buffered record of ``tps`` (they are read again from the commit)."""


class Settles(Protocol):
    """An agent's writes still in flight, which the feed waits for before it commits."""

    async def settle(self) -> None:
        """Finish every write in flight; raise the first that failed."""


class RecordQueue:
    """A sink that keeps each partition's records in log order, with no merge of any
    kind: :meth:`take` hands them out in batches (the feed's own tests read with it)."""

    def __init__(self) -> None:
        self._queues: dict[Any, deque[Any]] = {}
        self.arrived = asyncio.Event()

    def accept(self, tp: Any, records: Sequence[Any], position: int, end: int | None) -> None:
        self._queues.setdefault(tp, deque()).extend(records)

    def note(self, tp: Any, position: int | None, end: int | None) -> None:
        return None

    def buffered(self, tp: Any) -> int:
        queue = self._queues.get(tp)
        return 0 if queue is None else len(queue)

    def revoke(self, tps: Iterable[Any]) -> None:
        self._queues.clear()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` records, partition after partition, each in log order."""
        out: list[Any] = []
        for queue in self._queues.values():
            while queue and len(out) < limit:
                out.append(queue.popleft())
        return out


@functools.lru_cache(maxsize=1 << 14)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2), as any producer picks it.

    Kept for the last 16,384 keys (about 4 MB at most): aiokafka's murmur2 is pure
    Python (about 1.9 µs for a customer id, against 0.1 for the lookup), and the same
    customers' keys come back with every output (1.4 % of the worker's CPU on the
    simulator mix)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class InputFeed:
    """Fetches the topics of ``sinks`` in batches and commits what was handled.

    ``sinks``: topic name -> sink. ``buffer_limit``: records buffered per
    topic-partition before its fetching pauses (resumed below half).
    ``fetch_wait``: seconds a fetch waits at the broker when no record is there
    (faust hard-codes 1.5 s).
    """

    def __init__(
        self,
        app: Any,
        sinks: Mapping[str, Sink],
        buffer_limit: int,
        commit_interval: float,
        fetch_wait: float = 0.03,
    ) -> None:
        self.app = app
        self.sinks = dict(sinks)
        self.buffer_limit = buffer_limit
        self.commit_interval = commit_interval
        #: The consumer's fetch_max_wait_ms: how long a fetch waits at the broker for records.
        self.fetch_wait_ms = round(fetch_wait * 1000)
        #: Per agent (:meth:`serve`'s name): held while it handles a batch. A rebalance,
        #: the positioning after it and the shutdown take them all (:meth:`quiet`).
        self._locks: dict[str, asyncio.Lock] = {}
        #: Set while partitions are assigned and positioned; agents wait on it.
        self.active = asyncio.Event()
        self._positions: dict[Any, int] = {}
        self._generation: int | None = None
        #: Set when partitions are assigned; the fetch loop positions them once flow resumes.
        self._assigned = False
        self._positionings = 0
        self._handled: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}
        self._paused: set[Any] = set()
        self._last_commit = time.monotonic()
        #: Changelog topic -> table, restored in bulk (:meth:`restore_tables`).
        self._changelogs: dict[str, Any] = {}
        #: Changelog records restored in bulk since start (for the recovery gauges).
        self.restored = 0
        #: Called with the number of records of each batch restored (the metrics' counter).
        self.on_restored: Callable[[int], None] | None = None
        #: The agents' rounds whose writes may be in flight (:meth:`track`).
        self._in_flight: list[Settles] = []

    @property
    def generation(self) -> int:
        """How many times the owned partitions were positioned (after an assignment):
        an agent that sees it change rebuilds what it keeps about its partitions."""
        return self._positionings

    def lock_of(self, agent: str) -> asyncio.Lock:
        """The lock ``agent`` (:meth:`serve`'s name) holds while it handles a batch.

        One per agent, not one for the worker: the aggregates agent's batch waits for
        the broker's acknowledgements and its changelog write, and the customer agent's
        rounds waited behind it (at 12,000 events/s, a quarter of the worker's time)."""
        lock = self._locks.get(agent)
        if lock is None:
            lock = self._locks[agent] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        """Every agent's batch in hand finished, and none started until the block ends
        (the locks taken in one order). An agent that starts serving meanwhile waits
        for :attr:`active`, which whoever is quiet has cleared or sets last."""
        async with contextlib.AsyncExitStack() as stack:
            for agent in sorted(self._locks):
                await stack.enter_async_context(self._locks[agent])
            yield

    # -- installing ------------------------------------------------------------------

    def track(self, writes: Settles) -> None:
        """An agent's rounds in flight (anything with an async ``settle()``: an
        :class:`~streams.inflight.InFlight`, or the agent writing what it holds back):
        finished before offsets commit ahead of a rebalance or at shutdown (:meth:`settle`)."""
        self._in_flight.append(writes)

    async def settle(self) -> None:
        """Wait for the agents' rounds in flight. A round that failed stops the worker
        (its offsets are not marked handled: the next owner reads it again)."""
        for writes in self._in_flight:
            try:
                await writes.settle()
            except Exception as exc:
                log.exception("a batch's writes failed; stopping the worker")
                await self.app.crash(exc)

    def install(self) -> None:
        """Take over faust's record delivery for our topics (call before the worker starts)."""
        app = self.app
        feed = self

        def new_consumer() -> Any:
            consumer = type(app)._new_consumer(app)
            # faust's Fetcher service runs ``consumer._drain_messages(fetcher)``.
            consumer._drain_messages = feed.drain
            thread = consumer._thread
            create = thread._create_worker_consumer

            def create_worker_consumer(transport: Any) -> Any:
                client = create(transport)
                # faust hard-codes 1,500 ms: a fetch waited that long when no record was
                # there (the embedded broker answers a waiting fetch only at its end).
                client._fetch_max_wait_ms = feed.fetch_wait_ms
                start = client.start

                async def start_without_prefetch_backoff() -> None:
                    await start()
                    # A partition whose lane is full has its fetched records left in the
                    # fetcher (faust's getmany skips it), and aiokafka then sent no fetch
                    # for any partition until they were 100 ms old (``prefetch_backoff``,
                    # fixed by its consumer): a promise, a progress record or a live
                    # event waited that long behind a full lane. The partition left
                    # waiting is still not fetched again until it is taken.
                    client._fetcher._prefetch_backoff = 0.0

                client.start = start_without_prefetch_backoff
                return client

            thread._create_worker_consumer = create_worker_consumer
            return consumer

        app._new_consumer = new_consumer
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_before_shutdown.connect(self._on_shutdown)

    # -- the fetch loop --------------------------------------------------------------

    async def drain(self, fetcher: Any) -> None:
        """faust's Fetcher calls this in place of ``Consumer._drain_messages``."""
        consumer = self.app.consumer
        stopped = consumer._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                generation = self.app.consumer_generation_id
                if self._assigned and not self.app.rebalancing and consumer.flow_active:
                    await self._position(generation)  # partitions assigned and recovered
                    continue
                positioned = self.active.is_set()
                # Unpositioned (recovering, or the streams' partitions about to resume): a
                # short wait, so positioning follows the recovery's end at once.
                wait = 1.0 if positioned else NOTHING_ACTIVE_PAUSE
                records = await self._next_records(consumer, wait)
                if consumer.should_stop:
                    return
                if self._assigned or not self.active.is_set():
                    positioned = False  # a rebalance while fetching: read again from positions
                if records:
                    # Unpositioned, only faust's own records (changelogs during recovery)
                    # are delivered: ours are read again from the positions.
                    await self._deliver(consumer, records, ours=positioned)
                if not positioned:
                    continue
                self._note_all(consumer)
                self._wake()
                await self.maybe_commit()
                await asyncio.sleep(0)
        except consumer.consumer_stopped_errors:
            if not self.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.app.should_stop:
                raise

    @staticmethod
    async def _next_records(consumer: Any, timeout: float) -> Mapping[Any, list[Any]]:
        """The next fetched records, waiting up to ``timeout`` s: faust's
        ``_wait_next_records`` (which waits first while the flow is suspended), but while
        the flow is on and no partition is active -- after a recovery, until the streams'
        partitions resume -- faust sleeps a whole second, and a restarted worker
        positioned its partitions that much later (``bench.restart``); here the loop
        looks again after :data:`NOTHING_ACTIVE_PAUSE`."""
        if consumer.flow_active and not consumer._get_active_partitions():
            await asyncio.sleep(NOTHING_ACTIVE_PAUSE)
            return {}
        records, _ = await consumer._wait_next_records(timeout)
        return records or {}

    async def _deliver(
        self, consumer: Any, records: Mapping[Any, list[Any]], ours: bool = True
    ) -> None:
        sinks = self.sinks
        positions = self._positions
        for tp, batch in records.items():
            sink = sinks.get(tp.topic)
            if sink is None:
                if not await self._restore(consumer, tp, batch):
                    await self._to_faust(consumer, tp, batch)
                continue
            if not ours:
                continue
            expected = positions.get(tp)
            if expected is None or not batch:
                continue  # not ours (any more)
            first = batch[0].offset
            if first < expected:  # fetched again: keep what is new
                batch = [r for r in batch if r.offset >= expected]
                if not batch:
                    continue
                first = batch[0].offset
            if first > expected and not await self._gap_is_retention(consumer, tp, expected):
                log.info(
                    "%s[%d]: fetch skipped to %d, seeking back to %d",
                    tp.topic,
                    tp.partition,
                    first,
                    expected,
                )
                await self._seek(consumer, {tp: expected})
                continue
            tp = TP(tp.topic, tp.partition)  # faust's own type (its flow control asserts it)
            position = batch[-1].offset + 1
            positions[tp] = position
            sink.accept(tp, batch, position, consumer.highwater(tp))
            if sink.buffered(tp) >= self.buffer_limit and tp not in self._paused:
                self._paused.add(tp)
                consumer.on_buffer_full(tp)

    async def _gap_is_retention(self, consumer: Any, tp: Any, expected: int) -> bool:
        """A hole before the fetched records is real only if retention deleted them."""
        try:
            earliest = (await consumer.earliest_offsets(tp)).get(tp)
        except Exception:  # unknown: seek back and try again
            return False
        if earliest is not None and earliest > expected:
            log.warning(
                "%s[%d]: records %d..%d were deleted by retention before they were read",
                tp.topic,
                tp.partition,
                expected,
                earliest - 1,
            )
            return True
        return False

    def restore_tables(self, tables: Iterable[Any]) -> None:
        """Restore these tables' changelogs in bulk during recovery (see :meth:`_restore`)."""
        for table in tables:
            self._changelogs[table.changelog_topic.get_topic_name()] = table

    async def _restore(self, consumer: Any, tp: Any, records: list[Any]) -> bool:
        """Apply a fetched changelog batch of an actively recovering table partition in one
        go (faust's own path handles each record as an event: ~3k records/s).

        The records go straight into the table's store (:func:`_apply_restored`: the
        memory store keeps the value bytes until recovery ends, RocksDB writes them
        and the persisted offset); recovery's offset for the partition is set to
        the last one's, which then goes through faust's path too -- skipped there as
        already seen -- so its recovery loop notices at once that the partition is
        done. False: not ours to restore
        (a standby partition, or not recovering) -- faust's path takes it.
        """
        table = self._changelogs.get(tp.topic)
        recovery = getattr(self.app.tables, "recovery", None)
        if table is None or recovery is None or tp not in recovery.active_tps:
            return False
        seen = recovery.active_offsets.get(tp)
        fresh = [r for r in records if seen is None or r.offset > seen]
        if fresh:
            _apply_restored(table, tp, fresh)
            # Recovery's offset first: faust's loop then skips the record below (applying
            # it later, after newer ones of the next batch, would bring an old value back)
            # and only checks whether the partition is done.
            recovery.active_offsets[tp] = fresh[-1].offset
            self.restored += len(fresh)
            if self.on_restored is not None:
                self.on_restored(len(fresh))
            await self._to_faust(consumer, tp, fresh[-1:])
            await failpoints.hold("during_restore", "holding recovery")
        return True

    async def _to_faust(self, consumer: Any, tp: Any, records: list[Any]) -> None:
        """faust's own per-record path, for the topics it handles (table changelogs)."""
        callback = consumer.callback
        read_offset = consumer._read_offset
        to_message = consumer._to_message
        suspended = consumer.suspend_flow.wait
        for record in records:
            offset = record.offset
            last = read_offset[tp]
            if last is None or offset >= last:
                await consumer.wait_first(callback(to_message(tp, record)), suspended())
                read_offset[tp] = offset

    def _note_all(self, consumer: Any) -> None:
        for tp, position in self._positions.items():
            sink = self.sinks[tp.topic]
            sink.note(tp, position, consumer.highwater(tp))
            if tp in self._paused and sink.buffered(tp) < self.buffer_limit // 2:
                self._paused.discard(tp)
                consumer.on_buffer_drop(tp)

    def resume_drained(self) -> None:
        """Resume fetching partitions whose buffers drained (agents call it after a batch)."""
        if not self._paused:
            return
        consumer = self.app.consumer
        for tp in list(self._paused):
            if self.sinks[tp.topic].buffered(tp) < self.buffer_limit // 2:
                self._paused.discard(tp)
                consumer.on_buffer_drop(tp)

    # -- the agents' batch loop ------------------------------------------------------

    async def serve(
        self,
        name: str,
        arrived: asyncio.Event,
        handle: Callable[[], Awaitable[bool]],
        idle: float,
        positioned: Callable[[], None] | None = None,
    ) -> None:
        """An agent's batch loop: take, fold, send, write, mark handled -- in ``handle``.

        Waits for records to arrive (at most ``idle`` seconds: a round with none still
        fires due timers), then, holding its lock (:meth:`lock_of` ``name``) so a
        rebalance never cuts a batch in half, runs ``handle()`` (True: more is ready at
        once) and commits if due. ``positioned()`` runs before the first batch after
        each (re)assignment. A batch that raises stops the worker before its offsets
        commit: its records are handled again after the restart, recognised one by one.
        """
        app = self.app
        lock = self.lock_of(name)
        generation = -1
        more = False
        while not app.should_stop:
            await self.active.wait()
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), idle)
                arrived.clear()
            async with lock:
                if not self.active.is_set():
                    continue
                if generation != self.generation:
                    generation = self.generation
                    if positioned is not None:
                        positioned()
                try:
                    more = await handle()
                    await self.maybe_commit()
                except Exception as exc:
                    log.exception(
                        "a batch of %s failed; stopping the worker (it is handled again "
                        "after the restart)",
                        name,
                    )
                    await app.crash(exc)
                    return
            self.resume_drained()

    # -- positions -------------------------------------------------------------------

    def owned(self) -> list[Any]:
        """Our topic-partitions assigned to this worker."""
        return [tp for tp in self.app.consumer.assignment() if tp.topic in self.sinks]

    async def _position(self, generation: int) -> None:
        """Seek every owned partition to its committed offset (or the log start)."""
        async with self.quiet():
            try:
                await self._seek_committed(generation)
            except IllegalStateError as exc:  # the partitions moved on meanwhile
                log.info("positioning cut short by another rebalance (%s)", exc)

    async def _seek_committed(self, generation: int) -> None:
        consumer = self.app.consumer
        owned = self.owned()
        for sink in self.sinks.values():
            sink.revoke([tp for tp in self._positions if tp.topic in self.sinks])
        committed = await self.committed(owned)
        # Never committed: from offset 0. Should retention have deleted the start, the
        # broker answers from the log start and the hole is accepted then
        # (_gap_is_retention): no log-start lookup here (seconds on the embedded broker,
        # on every start).
        positions: dict[Any, int] = {tp: committed.get(tp) or 0 for tp in owned}
        await self._seek(consumer, positions)
        self._positions = positions
        self._handled = {}
        for tp in owned:
            offset = committed.get(tp)
            if offset is not None:
                self._handled[tp] = offset
        self._committed = dict(self._handled)
        for tp in list(self._paused):
            consumer.on_buffer_drop(tp)
        self._paused.clear()
        self._generation = generation
        self._assigned = False
        self._positionings += 1
        for tp in owned:
            self.sinks[tp.topic].note(tp, positions[tp], consumer.highwater(tp))
        log.info(
            "reading %d partitions from their committed offsets (generation %s)",
            len(owned),
            generation,
        )
        self.active.set()
        self._wake()

    @staticmethod
    async def _seek(consumer: Any, positions: Mapping[Any, int]) -> None:
        """Seek partitions to offsets on the consumer's own thread, in one call.

        faust's ``Consumer.seek`` runs aiokafka's ``seek`` on the calling (the worker's)
        event loop, while aiokafka's fetcher lives on faust's consumer thread: the two
        then change the fetcher's partition states and fetched-record table at once --
        its background fetch task can die of it (an assertion in ``reset_to`` after
        a seek between its check and its reset) or a fetch raise ``KeyError``, and
        the worker fetches nothing more. faust's own recovery seeks through
        ``call_thread`` (``seek_wait``); so does this.
        """
        thread = consumer._thread
        await thread.call_thread(_seek_all, thread._ensure_consumer(), dict(positions))
        read_offset = consumer._read_offset  # what faust's Consumer.seek notes as well
        for tp, offset in positions.items():
            read_offset[tp] = offset if offset else None

    def _wake(self) -> None:
        for sink in {id(s): s for s in self.sinks.values()}.values():
            sink.arrived.set()

    async def committed(self, tps: Iterable[Any]) -> dict[Any, int | None]:
        """The group's committed offset of each partition (None: never committed), in one
        OffsetFetch request (aiokafka's public ``committed`` asks one partition at a time)."""
        consumer = self.app.consumer
        aio = consumer._thread._ensure_consumer()
        wanted = list(tps)
        found = await consumer._thread.call_thread(aio._coordinator.fetch_committed_offsets, wanted)
        out: dict[Any, int | None] = {}
        for tp in wanted:
            meta = found.get(tp)
            offset = None if meta is None else meta.offset
            out[tp] = offset if offset is not None and offset >= 0 else None
        return out

    # -- commits ---------------------------------------------------------------------

    def handled(self, offsets: Mapping[Any, int]) -> None:
        """The agents handled every record of each partition before ``offset``."""
        handled = self._handled
        for tp, offset in offsets.items():
            if offset > handled.get(tp, -1):
                handled[tp] = offset

    def committed_offsets(self) -> dict[Any, int]:
        """What this worker last committed, per owned partition (for the lag gauge)."""
        return dict(self._committed)

    async def maybe_commit(self) -> None:
        """Commit if the commit interval has passed (agents call it after each batch, the
        fetch loop after each fetch)."""
        if time.monotonic() - self._last_commit >= self.commit_interval:
            await self.commit()

    async def commit(self) -> None:
        """Commit the handled offsets that moved since the last commit."""
        self._last_commit = time.monotonic()
        owned = set(self._positions)
        due = {
            tp: offset
            for tp, offset in self._handled.items()
            if tp in owned and offset > self._committed.get(tp, -1)
        }
        if not due:
            return
        if await self.app.consumer._commit(due):
            self._committed.update(due)

    async def _on_revoked(self, sender: object, *args: object, **kwargs: object) -> None:
        """Before partitions move: finish the batch in hand, commit, forget buffers."""
        self.active.clear()
        async with self.quiet():
            await self.settle()
            try:
                await self.commit()
            except Exception as exc:  # the next owner re-reads from the older commit
                log.warning("commit before the rebalance failed: %s", exc)
            for sink in self.sinks.values():
                sink.revoke(list(self._positions))
            self._positions = {}
            self._generation = None

    async def _on_assigned(self, sender: object, *args: object, **kwargs: object) -> None:
        self.active.clear()
        self._assigned = True

    async def _on_shutdown(self, sender: object, **kwargs: object) -> None:
        # A static member sends no LeaveGroup (KIP-345): restarted under its name within
        # the session timeout it takes its partitions back without a rebalance; if it
        # does not come back, the broker expires it after the session timeout.
        self.active.clear()
        async with self.quiet():
            try:
                await asyncio.wait_for(self.settle(), timeout=10.0)
            except TimeoutError:
                log.warning(
                    "batches still writing after 10 s at shutdown: their records are read "
                    "again after the restart"
                )
            try:
                await asyncio.wait_for(self.commit(), timeout=10.0)
                log.info("offsets committed on shutdown")
            except Exception as exc:
                log.warning("offsets not committed on shutdown (%s)", type(exc).__name__)


def _apply_restored(table: Any, tp: Any, records: list[Any]) -> None:
    """Put fetched changelog records (aiokafka ``ConsumerRecord``, in log order) of
    ``tp`` into ``table``'s store.

    faust's memory store (its ``data`` dict and ``_key_partition``, the partition of
    each key, which drops the keys of partitions given up when recovery ends): each
    key's value **bytes**, or the key removed for a tombstone. Decoding every record
    cost more than everything else in a restore together (orjson, ~20 µs for a
    customer's state) and a changelog holds several versions of a key; only the last
    one is decoded, by :func:`decode_restored` when recovery ends. Any other store
    (RocksDB) gets the records through its own ``apply_changelog_batch``: it stores
    the bytes as they are and the partition's persisted offset.
    """
    store = table.data
    partition = tp.partition
    if isinstance(store, MemoryStore):
        values, partitions = store.data, store._key_partition
        for record in records:
            key = record.key.decode()
            value = record.value
            if value is None:
                values.pop(key, None)
                partitions.pop(key, None)
            else:
                values[key] = value
                partitions[key] = partition
        return
    table.apply_changelog_batch([_ChangelogEvent(r, tp, partition) for r in records])


def decode_restored(store: Any, prefix: str = "") -> int:
    """Decode the values :func:`_apply_restored` left as bytes in a memory store (call
    when recovery ends, before anything reads the table); returns how many.
    ``prefix``: only those of the keys starting with it (the others stay bytes, to be
    parsed where they are read: ``streams.parsed``).

    A value that does not decode (packed with a dictionary a newer release added,
    or corrupted) stays bytes: reading that customer's state then raises
    ``StoredStateError`` and its events wait in the DLQ, like a newer layout's."""
    if not isinstance(store, MemoryStore):
        return 0
    values, loads = store.data, codec.loads_stored
    decoded = 0
    for key, value in values.items():
        if type(value) is bytes and key.startswith(prefix):
            try:
                values[key] = loads(value)
            except ValueError:
                continue
            decoded += 1
    return decoded


async def _seek_all(aio_consumer: Any, positions: Mapping[Any, int]) -> None:
    """Run on faust's consumer thread (its event loop owns the aiokafka consumer)."""
    for tp, offset in positions.items():
        aio_consumer.seek(tp, offset)


class _ChangelogMessage:
    """What a table store reads of a changelog message (faust's ``Message`` is heavier)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, record: Any, tp: Any, partition: int) -> None:
        self.key = record.key
        self.value = record.value
        self.tp = tp
        self.partition = partition
        self.offset = record.offset


class _ChangelogEvent:
    """What a table store reads of a changelog event: the decoded key and the value
    (RocksDB stores read the message's bytes and never decode it)."""

    __slots__ = ("key", "message", "value")

    def __init__(self, record: Any, tp: Any, partition: int) -> None:
        self.message = _ChangelogMessage(record, tp, partition)
        self.key = record.key.decode() if record.key is not None else None
        self.value = record.value


# -- the consumer's group and connections ---------------------------------------------


def app_last_response(app: Any) -> float | None:
    """:func:`consumer_last_response` of the app's consumer if faust made it (faust's
    ``app._consumer``; ``app.consumer`` would make one, e.g. in a process that only
    collects the metrics)."""
    return consumer_last_response(getattr(app, "_consumer", None))


def consumer_last_response(consumer: Any) -> float | None:
    """``time.monotonic()`` of the last response the worker's Kafka consumer read from
    any broker, or None when it has no connection (or no client yet).

    Private attributes: faust's ``consumer._thread``
    (AIOKafkaConsumerThread) and its ``_consumer`` (the aiokafka AIOKafkaConsumer,
    None until the consumer thread started), that consumer's ``_client._conns`` (one
    AIOKafkaConnection per broker and connection group: fetches, the group
    coordinator) and each connection's ``connected()`` and ``_last_action`` (set
    when a response is read, and when the connection is made, after its ApiVersions
    answer). The dictionary belongs to the consumer's own thread: it is copied, and a
    copy that fails counts as no answer.
    """
    thread = getattr(consumer, "_thread", None)
    client = getattr(getattr(thread, "_consumer", None), "_client", None)
    conns = getattr(client, "_conns", None)
    if not conns:
        return None
    try:
        connections = list(conns.values())
    except RuntimeError:  # changed size while copied (the consumer thread)
        return None
    times = [c._last_action for c in connections if c.connected()]
    return max(times) if times else None


async def leave_and_rejoin(consumer: Any) -> str:
    """Leave the consumer group and join it again; returns what the LeaveGroup did.

    aiokafka sends no LeaveGroup for a static member (KIP-345: the coordinator
    expires it) nor at generation 0 (Tansu's first), so this sends one itself.
    Private attributes: faust's ``consumer._thread``
    (``call_thread`` runs a coroutine on the consumer's own event loop;
    ``_ensure_consumer()``, the aiokafka consumer) and that consumer's
    ``_coordinator`` (aiokafka GroupCoordinator: ``group_id``, ``member_id``,
    ``_send_req()``, ``reset_generation()``, which forgets the member id and asks
    the coordination task to join again).
    """
    thread = consumer._thread
    coordinator = thread._ensure_consumer()._coordinator
    outcome: str = await thread.call_thread(_leave_and_rejoin, coordinator)
    return outcome


async def _leave_and_rejoin(coordinator: Any) -> str:
    member = coordinator.member_id
    if not member:
        outcome = "not a member yet: joining again"
    else:
        try:
            response = await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member))
            outcome = f"left as {member} (LeaveGroup error code {response.error_code})"
        except KafkaError as exc:
            outcome = f"LeaveGroup as {member} failed ({exc}); joining again"
    coordinator.reset_generation()
    return outcome


# -- producing ------------------------------------------------------------------------


def _producer(app: Any) -> Any:
    """The aiokafka producer inside faust's (started with the app)."""
    return app.producer._ensure_producer()


async def send_keyed(
    app: Any,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    partitions: int,
    then_everywhere: Sequence[tuple[bytes, bytes]] = (),
) -> list[Any]:
    """Send ``(key, value)`` records to ``topic``, one record batch per partition.

    The partition is Kafka's default for the key (murmur2), as any producer
    would pick. ``then_everywhere``: records that follow them in every partition,
    in the same record batch, so a reader gets both or neither (up to the batch's
    size). Returns the futures of the broker's acknowledgements.
    """
    if not records and not then_everywhere:
        return []
    producer = _producer(app)
    n = _partition_count(producer, topic, partitions)
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        by_partition.setdefault(partition_for(key, n), []).append((key, value))
    if then_everywhere:
        for partition in range(n):
            by_partition.setdefault(partition, []).extend(then_everywhere)
    return await _send_batches(producer, topic, by_partition)


async def send_everywhere(
    app: Any, topic: str, records: Sequence[tuple[bytes, bytes]], partitions: int
) -> list[Any]:
    """Send the same ``(key, value)`` records to every partition of ``topic``
    (:func:`send_keyed` with nothing keyed before them).

    Returns the futures of the broker's acknowledgements."""
    return await send_keyed(app, topic, (), partitions, then_everywhere=records)


def _partition_count(producer: Any, topic: str, partitions: int) -> int:
    """``topic``'s partitions as the producer's metadata knows them, else ``partitions``."""
    known = producer.client.cluster.partitions_for_topic(topic)
    return len(known) if known else partitions


async def _send_batches(
    producer: Any, topic: str, by_partition: Mapping[int, Sequence[tuple[bytes, bytes | None]]]
) -> list[Any]:
    """Each partition's records in record batches filled here, then closed: aiokafka's
    sender holds a batch still open for the producer's linger (faust's
    ``producer_linger_ms``) in case more is appended, and nothing is. Closed, it goes at
    once: the action-heavy backfill drains 3-16 % faster, and the median latency falls
    by about 10 ms at 3,000 events/s (``bench/README.md``, forty-first session)."""
    pending = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: closed
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


async def write_changelog(
    app: Any,
    table: Any,
    writes: Mapping[int, Sequence[tuple[str, Any, bytes]]],
    seal_key: bytes | None,
) -> None:
    """Store ``{partition: [(key, value, value bytes), ...]}`` in ``table`` and its changelog.

    Returns once the broker acknowledged every record. ``seal_key``: after each
    partition's records, a tombstone for that reserved key alone in its own
    record batch -- the embedded broker (Tansu) reports a partition's end
    offset as the base offset of its last record batch + 1, short when that
    batch holds several records, and a recovering worker would stop early.
    ``None`` on brokers that report end offsets exactly (Apache Kafka).
    """
    producer = _producer(app)
    topic = table.changelog_topic.get_topic_name()
    data = table.data
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for partition, items in writes.items():
        rows = by_partition.setdefault(partition, [])
        for key, value, raw in items:
            _store_put(data, key, value, raw, partition)
            rows.append((key.encode(), raw))
    pending = await _send_batches(producer, topic, by_partition)
    if seal_key is not None:
        seals = {p: [(seal_key, None)] for p in by_partition}
        pending += await _send_batches(producer, topic, seals)
    for metadata in await asyncio.gather(*pending):
        # RocksDB keeps the last persisted offset to resume recovery from it.
        data.set_persisted_offset(metadata.topic_partition, metadata.offset)


def in_memory(store: Any) -> bool:
    """Whether a table's store holds its values in memory (faust's memory store), as
    opposed to reading them from disk (RocksDB)."""
    return isinstance(store, MemoryStore)


def _store_put(store: Any, key: str, value: Any, raw: bytes, partition: int) -> None:
    """``store[key] = value`` in ``partition``, outside faust's per-event context.

    faust's RocksDB store keeps one database per partition and takes the
    partition from the event being iterated; batches have none, so the
    partition is given here. It keeps ``raw``, the bytes the changelog gets (a
    packed state stays packed on disk). The memory store has no partitions, and
    keeps ``value``.
    """
    if hasattr(store, "_db_for_partition"):
        encoded = store._encode_key(key)
        store._key_index[encoded] = partition
        store._db_for_partition(partition).put(encoded, raw)
    else:
        store[key] = value


def assigned_active_partitions(app: Any) -> set[int]:
    """Table partitions this worker is active for."""
    return {tp.partition for tp in app.assignor.assigned_actives()}
