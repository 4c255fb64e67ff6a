"""BatchBuffer: the hand-over between faust's conductor and the batch agent (no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streams.batching import BatchBuffer


@dataclass
class FakeMessage:
    """Stands in for faust's Message: the buffer only reads ``tp`` and ``offset``."""

    tp: tuple[str, int]
    offset: int


def deliver(buffer: BatchBuffer, *messages: FakeMessage, high=None, drop=None) -> None:
    for m in messages:
        buffer.put_nowait_enhanced(
            m,  # type: ignore[arg-type]
            on_pressure_high=high or (lambda: None),
            on_pressure_drop=drop or (lambda: None),
        )


def test_take_returns_at_most_max_and_keeps_the_rest_in_order():
    async def scenario():
        buffer = BatchBuffer(maxsize=100)
        deliver(buffer, *(FakeMessage(("t", 0), i) for i in range(5)))
        first = await buffer.take(3, within=0.01)
        second = await buffer.take(3, within=0.01)
        return [m.offset for m in first], [m.offset for m in second]

    assert asyncio.run(scenario()) == ([0, 1, 2], [3, 4])


def test_take_waits_for_the_first_message_then_at_most_within_seconds():
    async def scenario():
        buffer = BatchBuffer(maxsize=100)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, deliver, buffer, FakeMessage(("t", 0), 7))
        started = loop.time()
        batch = await buffer.take(10, within=0.05)
        return [m.offset for m in batch], loop.time() - started

    offsets, waited = asyncio.run(scenario())
    assert offsets == [7]
    assert 0.05 <= waited < 1.0


def test_pressure_high_past_the_watermark_and_drop_once_drained():
    events = []

    async def scenario():
        buffer = BatchBuffer(maxsize=8, high_watermark=0.5)
        deliver(
            buffer,
            *(FakeMessage(("t", 0), i) for i in range(6)),
            high=lambda: events.append("high"),
            drop=lambda: events.append("drop"),
        )
        assert events == ["high"]  # once, not once per message past the mark
        await buffer.take(6, within=0.01)

    asyncio.run(scenario())
    assert events == ["high", "drop"]


def test_first_offsets_are_noted_per_partition_and_forgotten_on_clear():
    buffer = BatchBuffer(maxsize=100)
    deliver(buffer, FakeMessage(("t", 0), 5), FakeMessage(("t", 0), 6), FakeMessage(("t", 1), 2))
    assert buffer.first_offsets == {("t", 0): 5, ("t", 1): 2}

    buffer.clear()  # undelivered messages dropped: their partitions must be re-read

    assert len(buffer) == 0
    assert buffer.first_offsets == {}
