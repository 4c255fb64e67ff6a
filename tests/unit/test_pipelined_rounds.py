"""Pipelined rounds (CRM_WRITES_IN_FLIGHT): the next round folds while the broker
acknowledges the last one's writes, and nothing about the outcome changes.

- :class:`streams.inflight.InFlight`: how many rounds stay in flight, in what order
  they finish, and how a failure reaches the agent;
- the customer agent's shell on a producer whose broker acknowledges only when the
  test says so (tests.unit.test_latency_metrics): a round folds on the states of
  the round still in flight, state records go out in round order, and offsets are
  marked handled in round order, each only after its own round's state is written.

Unit tier: no broker, no Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from agents.state import _FIELDS, Activity, CustomerState
from schemas import codec
from streams.inflight import InFlight
from streams.settings import Settings
from tests.unit.test_latency_metrics import HeldAcks, agent_on, settle

CHANGELOG = "customers-log"
#: Where ``order_count`` sits in the stored ``activity`` array.
_ORDER_COUNT = _FIELDS[Activity].index("order_count")


# -- InFlight ----------------------------------------------------------------------


def test_trim_keeps_at_most_depth_rounds_in_flight() -> None:
    async def scenario() -> None:
        writes = InFlight(1)
        gates = [asyncio.Event() for _ in range(3)]
        done: list[int] = []

        async def round_writes(n: int) -> None:
            await gates[n].wait()
            done.append(n)

        writes.start(round_writes(0))
        await writes.trim()
        assert len(writes) == 1  # one round may stay in flight

        writes.start(round_writes(1))
        trimming = asyncio.create_task(writes.trim())
        await settle()
        assert not trimming.done()  # two in flight: waits for the oldest
        gates[0].set()
        await asyncio.wait_for(trimming, 1)
        assert done == [0] and len(writes) == 1

        gates[1].set()
        gates[2].set()
        await writes.settle()
        assert done == [0, 1] and len(writes) == 0

    asyncio.run(scenario())


def test_depth_zero_waits_for_the_round_just_started() -> None:
    async def scenario() -> None:
        writes = InFlight(0)
        done: list[str] = []

        async def round_writes() -> None:
            await asyncio.sleep(0.01)
            done.append("written")

        writes.start(round_writes())
        await writes.trim()
        assert done == ["written"] and len(writes) == 0

    asyncio.run(scenario())


def test_a_failed_round_is_raised_at_the_next_trim_and_settle_waits_for_the_rest() -> None:
    async def scenario() -> None:
        writes = InFlight(2)
        gate = asyncio.Event()
        done: list[int] = []

        async def failing() -> None:
            raise RuntimeError("broker said no")

        async def later(previous: asyncio.Task[None] | None) -> None:
            await gate.wait()
            if previous is not None:
                await previous  # the agent's rounds wait for the one before
            done.append(1)

        writes.start(failing())
        writes.start(later(writes.last))
        await settle()
        with pytest.raises(RuntimeError, match="broker said no"):
            await writes.trim()  # the failed oldest is collected
        gate.set()
        with pytest.raises(RuntimeError, match="broker said no"):
            await writes.settle()  # the round after it failed with it, nothing written
        assert done == [] and len(writes) == 0

    asyncio.run(scenario())


def test_a_trim_and_a_settle_waiting_for_the_same_round_both_finish() -> None:
    # A rebalance's settle may wait for a round's writes while the round's own trim does
    async def scenario() -> None:
        writes = InFlight(0)
        gate = asyncio.Event()
        done: list[str] = []

        async def round_writes() -> None:
            await gate.wait()
            done.append("written")

        writes.start(round_writes())
        settling = asyncio.create_task(writes.settle())  # the first to wake collects it
        trimming = asyncio.create_task(writes.trim())
        await settle()
        gate.set()
        await asyncio.wait_for(asyncio.gather(trimming, settling), 1)
        assert done == ["written"] and len(writes) == 0

    asyncio.run(scenario())


# -- the customer agent's rounds ---------------------------------------------------


class RecordingAcks(HeldAcks):
    """:class:`HeldAcks` that also keeps each batch's records, in send order."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, list[tuple[bytes, bytes | None]]]] = []

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        self.batches.append((topic, list(batch.records)))
        return await super().send_batch(batch, topic, partition)

    def ack_outputs(self) -> None:
        """Acknowledge what was sent, except the state records (the changelog)."""
        held = [w for w in self.waiting if w[0] == CHANGELOG]
        self.waiting = [w for w in self.waiting if w[0] != CHANGELOG]
        self.ack()
        self.waiting = held

    def changelog(self, key: bytes) -> list[dict[str, Any]]:
        """The values written for ``key`` to the changelog, in send order."""
        return [codec.loads_stored(value) for value in self.changelog_raw(key)]

    def changelog_raw(self, key: bytes) -> list[bytes]:
        """The bytes written for ``key`` to the changelog, in send order."""
        return [
            value
            for topic, records in self.batches
            if topic == CHANGELOG
            for k, value in records
            if k == key and value is not None
        ]


def _order(payload_factory: Callable[..., dict[str, Any]], offset: int) -> Any:
    return SimpleNamespace(
        key=b"cust-0001",
        value=codec.dumps(payload_factory("order.placed", order_id=f"o-{offset}")),
        offset=offset,
        timestamp=0,
    )


def _pipelined_agent() -> tuple[RecordingAcks, Any, list[dict[Any, int]], Any]:
    """The agent's shell with one round in flight at most: its producer, the agent, the
    offsets it marks handled (one dict per round), and the orders partition."""
    producer = RecordingAcks()
    settings = Settings(clock="replay", proposal_lookahead=0, writes_in_flight=1)
    agent = agent_on(producer, settings)
    marked: list[dict[Any, int]] = []
    agent.feed = SimpleNamespace(handled=lambda offsets: marked.append(dict(offsets)))
    return producer, agent, marked, SimpleNamespace(topic=settings.topics.orders, partition=0)


def _offsets(marked: list[dict[Any, int]]) -> list[int]:
    """The offset each round marked handled (one partition per round here)."""
    return [offsets[next(iter(offsets))] for offsets in marked]


def test_a_round_folds_on_the_states_of_the_round_still_in_flight_and_writes_after_it(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _pipelined_agent()
        # Given a first order, handled by a round whose writes the broker has not
        # acknowledged yet
        agent.inputs.accept(tp, [_order(payload_factory, 0)], 1, 1)
        await asyncio.wait_for(agent.handle_round(), 1)
        assert len(agent.writes) == 1 and marked == []
        assert "cust-0001" not in agent.customers.data  # not written yet

        # When a second order of the same customer is handled in the next round
        agent.inputs.accept(tp, [_order(payload_factory, 1)], 2, 2)
        second = asyncio.create_task(agent.handle_round())
        await settle()
        # Then it waits for the first round's writes (two would be in flight)
        assert not second.done()

        # When the broker acknowledges everything, as it comes
        for _ in range(10):
            producer.ack()
            await settle()
        await asyncio.wait_for(second, 1)
        producer.ack()
        await asyncio.wait_for(agent.writes.settle(), 1)

        # Then the second round counted both orders (it folded on the first's state)
        written = producer.changelog(b"cust-0001")
        assert [w["activity"][_ORDER_COUNT] for w in written] == [1, 2]
        assert agent.customers.data["cust-0001"].activity.order_count == 2
        assert agent.unwritten == {}
        # And the offsets were marked handled in round order, after each round's write
        assert _offsets(marked) == [1, 2]

    asyncio.run(scenario())


def test_a_rounds_state_waits_for_the_previous_rounds_state_to_be_acknowledged(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _pipelined_agent()
        # Given a first round whose outputs are acknowledged and whose state is sent
        agent.inputs.accept(tp, [_order(payload_factory, 0)], 1, 1)
        await asyncio.wait_for(agent.handle_round(), 1)
        producer.ack_outputs()
        await settle()
        assert len(producer.changelog(b"cust-0001")) == 1
        # When a second round's outputs are acknowledged before the first one's state
        agent.inputs.accept(tp, [_order(payload_factory, 1)], 2, 2)
        second = asyncio.create_task(agent.handle_round())
        await settle()
        producer.ack_outputs()
        await settle()
        # Then its state is not sent and nothing is marked handled
        assert len(producer.changelog(b"cust-0001")) == 1
        assert marked == []
        # When the first round's state is acknowledged: the first is marked, then the second
        producer.ack()
        await settle()
        assert len(marked) == 1 and len(producer.changelog(b"cust-0001")) == 2
        producer.ack()
        await asyncio.wait_for(second, 1)
        await asyncio.wait_for(agent.writes.settle(), 1)
        assert _offsets(marked) == [1, 2]

    asyncio.run(scenario())


def test_a_rounds_offsets_are_not_marked_before_its_state_is_acknowledged(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _pipelined_agent()
        agent.inputs.accept(tp, [_order(payload_factory, 0)], 1, 1)
        await asyncio.wait_for(agent.handle_round(), 1)

        producer.ack()  # the outputs
        await settle()
        assert any(topic == CHANGELOG for topic, _ in producer.batches)
        assert marked == []  # the state is sent, not acknowledged

        producer.ack()  # the state
        await asyncio.wait_for(agent.writes.settle(), 1)
        assert len(marked) == 1

    asyncio.run(scenario())


# -- the feed: a rebalance commits only after the rounds in flight --------------------


def test_a_rebalance_commits_the_offsets_of_the_rounds_still_writing() -> None:
    from streams.kafka import InputFeed

    async def scenario() -> None:
        commits: list[dict[Any, int]] = []

        async def commit(offsets: dict[Any, int]) -> bool:
            commits.append(dict(offsets))
            return True

        app = SimpleNamespace(consumer=SimpleNamespace(_commit=commit))
        feed = InputFeed(app, {}, buffer_limit=10, commit_interval=60.0)
        tp = ("crm.orders", 0)
        feed._positions = {tp: 0}
        writes = InFlight(1)
        feed.track(writes)
        gate = asyncio.Event()

        async def round_writes() -> None:
            await gate.wait()  # the broker has not acknowledged the state yet
            feed.handled({tp: 5})

        writes.start(round_writes())
        # When partitions are revoked while a round is still writing
        revoking = asyncio.create_task(feed._on_revoked(None))
        await settle()
        # Then nothing is committed until its state is written
        assert commits == [] and not revoking.done()
        gate.set()
        await asyncio.wait_for(revoking, 1)
        # And then its offsets are
        assert commits == [{tp: 5}]

    asyncio.run(scenario())


@pytest.mark.parametrize("level", [0, 1, 9])
def test_a_round_writes_its_states_packed_at_the_configured_level(
    payload_factory: Callable[..., dict[str, Any]], level: int
) -> None:
    async def scenario() -> None:
        producer = RecordingAcks()
        settings = Settings(
            clock="replay", proposal_lookahead=0, writes_in_flight=1, state_packing=level
        )
        agent = agent_on(producer, settings)
        agent.feed = SimpleNamespace(handled=lambda offsets: None)
        tp = SimpleNamespace(topic=settings.topics.orders, partition=0)

        # When a round folds an order and the broker acknowledges its writes
        agent.inputs.accept(tp, [_order(payload_factory, 0)], 1, 1)
        await asyncio.wait_for(agent.handle_round(), 1)
        for _ in range(10):
            producer.ack()
            await settle()
        await asyncio.wait_for(agent.writes.settle(), 1)

        # Then the changelog got the state packed at that level (plain JSON at 0),
        # and it reads back as the state the table holds
        [raw] = [
            value
            for topic, records in producer.batches
            if topic == CHANGELOG
            for key, value in records
            if key == b"cust-0001"
        ]
        assert raw is not None
        assert raw[:1] == (bytes([codec.PACKING]) if level else b"{")
        assert CustomerState.from_bytes(raw) == agent.customers.data["cust-0001"]

    asyncio.run(scenario())
