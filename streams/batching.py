"""Batch delivery from faust's consumer, without faust's per-event stream machinery.

faust delivers each record through its conductor into a channel queue, wraps
it in an ``Event``, and a ``Stream`` pulls it out, runs processors and acks
it: measured here at ~15k records/s at best, whatever the agent does. The
raw consumer on the same broker reads ~180k records/s.

:class:`RawBatchTopic` keeps everything of faust that carries guarantees --
the consumer group and co-partitioned assignment of input topics and table
changelogs, flow control and queue clearing on rebalance, table recovery,
tracking of unacked messages, and committing only acked offsets after the
producer is flushed -- and replaces only the per-record path: the conductor
hands the raw ``Message`` (no decode, no ``Event``) to a :class:`BatchBuffer`,
and the agent takes whole batches out of it and acks each message after its
batch is fully handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from faust.types import Message

log = logging.getLogger(__name__)


class BatchBuffer:
    """Stands where a channel's queue would: the conductor appends, the agent takes batches.

    Back-pressure works as in faust: past ``maxsize * high_watermark`` the
    fetcher is told to stop fetching the partition (``on_pressure_high``);
    once drained below half, fetching resumes (``on_pressure_drop``).
    """

    def __init__(self, maxsize: int, high_watermark: float = 0.75) -> None:
        self.maxsize = maxsize
        self._high = int(maxsize * high_watermark)
        self._items: list[Message] = []
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._pressure_drops: dict[Any, Callable[[], None]] = {}
        #: Offset of the first message delivered per partition since :meth:`forget_offsets`.
        self.first_offsets: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    # -- the conductor's side (same interface as faust's FlowControlQueue) --------

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait_enhanced(
        self,
        value: Message,
        *,
        on_pressure_high: Callable[[], None],
        on_pressure_drop: Callable[[], None],
    ) -> None:
        self._items.append(value)
        self._arrived.set()
        self.first_offsets.setdefault(value.tp, value.offset)
        if len(self._items) >= self._high and id(on_pressure_drop) not in self._pressure_drops:
            self._pressure_drops[id(on_pressure_drop)] = on_pressure_drop
            on_pressure_high()

    async def put(self, value: Message) -> None:
        while self.full():
            self._drained.clear()
            await self._drained.wait()
        self._items.append(value)
        self._arrived.set()
        self.first_offsets.setdefault(value.tp, value.offset)

    def forget_offsets(self) -> None:
        """Start noting first delivered offsets afresh (at the start of a rebalance)."""
        self.first_offsets.clear()

    def clear(self) -> None:
        """Drop undelivered messages (rebalance, flow resume): never acked, so re-read later.

        Their partitions count as not delivered again, so the post-rebalance
        check (``reseek_after_rebalance``) seeks back to them.
        """
        self._items.clear()
        self.first_offsets.clear()
        self._arrived.clear()
        self._release_pressure()

    # -- the agent's side ----------------------------------------------------------------

    async def take(self, max_n: int, within: float, idle: float | None = None) -> list[Message]:
        """Wait for messages; return up to ``max_n``, waiting at most ``within`` s to fill up.

        ``idle``: return an empty batch after this many seconds without any message
        (so the caller can do periodic work); ``None`` waits for the first message.
        """
        while not self._items:
            self._arrived.clear()
            if idle is None:
                await self._arrived.wait()
                continue
            try:
                await asyncio.wait_for(self._arrived.wait(), idle)
            except TimeoutError:
                return []
        if len(self._items) < max_n:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while len(self._items) < max_n:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
        batch = self._items[:max_n]
        del self._items[:max_n]
        if len(self._items) <= self.maxsize // 2:
            self._release_pressure()
        self._drained.set()
        return batch

    def _release_pressure(self) -> None:
        drops = list(self._pressure_drops.values())
        self._pressure_drops.clear()
        for drop in drops:
            drop()
        self._drained.set()


class RawBatchTopic(faust.Topic):
    """A faust topic whose records go, undecoded, into one shared :class:`BatchBuffer`.

    Subscribe it with :meth:`subscribe`; read it with ``topic.buffer.take``.
    """

    def __init__(self, *args: Any, buffer: BatchBuffer, **kwargs: Any) -> None:
        self.buffer = buffer
        super().__init__(*args, **kwargs)

    def subscribe(self) -> None:
        """Join the app's subscriptions. Call once the event loop is set: this binds
        to ``app.loop``, and binding at import time would pin faust to a loop that
        never runs."""
        self.app.flow_control.manage_queue(self.buffer)  # type: ignore[arg-type]
        self.app.topics.add(self)

    def _compile_decode(self) -> None:
        async def raw(message: Message, *, propagate: bool = False) -> Message:
            return message

        self.decode = raw  # type: ignore[method-assign,assignment]

    @property
    def queue(self) -> BatchBuffer:  # type: ignore[override]
        return self.buffer

    async def put(self, event: Any) -> None:
        await self.buffer.put(event)

    def _clone_args(self) -> dict[str, Any]:
        return {**super()._clone_args(), "buffer": self.buffer}


async def reseek_undelivered(consumer: Any, buffer: BatchBuffer, tps: Iterable[Any]) -> list[Any]:
    """Seek each partition in ``tps`` back to its start offset unless ``buffer`` got
    that offset first since the rebalance began; return the partitions sought.

    The start offset is the last commit (what recovery sought to), or the log
    start if the partition was never committed. faust can resume partitions
    before seeking them, so records fetched in between are dropped with the
    fetch position already past them; this puts the position back. A record
    read twice is dropped downstream (dedupe, ledger); none is skipped.
    """
    tps = list(tps)
    starts = dict(consumer._committed_offset)
    never_committed = [tp for tp in tps if starts.get(tp) is None]
    if never_committed:
        starts.update(await consumer.earliest_offsets(*never_committed))
    sought = []
    for tp in tps:
        start = starts[tp]
        delivered = buffer.first_offsets.get(tp)
        if delivered is None or delivered > start:  # nothing yet, or a hole before it
            await consumer.seek(tp, start)
            sought.append(tp)
    return sought


async def consume_batches(
    app: Any,
    buffer: BatchBuffer,
    handle: Callable[[list[Message]], Awaitable[None]],
    max_n: int,
    within: float,
    idle: float | None = None,
) -> None:
    """Take batches from ``buffer``, ``handle`` each, then ack its records.

    Acked only once ``handle`` returns (its output sent and its state written),
    so offsets commit for fully handled input only. A batch that fails is a
    broker failure, never bad input (that is dead-lettered): the worker
    crashes before committing, and the batch is handled again after restart.
    ``idle``: see :meth:`BatchBuffer.take` (empty batches, for periodic work).
    """
    consumer = app.consumer
    while not app.should_stop:
        batch = await buffer.take(max_n, within, idle)
        try:
            await handle(batch)
        except Exception as exc:
            log.exception("batch of %d records failed; stopping the worker", len(batch))
            await app.crash(exc)
            return
        for message in batch:
            message.ack(consumer)
