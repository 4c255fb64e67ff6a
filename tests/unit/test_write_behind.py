"""States written behind a draining backlog (CRM_STATE_FLUSH_INTERVAL, issue 14).

While rounds come full (a backlog), the customer agent holds its changed states back
and writes each customer once per flush, with its latest state, then marks the held
rounds' offsets handled: so a customer that several rounds touch costs one packing
and one changelog record, not one per round. Outputs still go out (and are
acknowledged, and noted in the ledger) round by round. A round that finds the input
caught up, the flush interval, and a rebalance or shutdown (:meth:`settle`) each
write what is held.

The customer agent's shell on a producer whose broker acknowledges when the test
says so (tests.unit.test_latency_metrics). Unit tier: no broker, no Redis.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from agents.state import _FIELDS, Activity
from schemas import codec
from streams.inflight import MAX_HELD, HeldWrites
from streams.settings import Settings
from tests.unit.test_latency_metrics import PROCESSING, agent_on, sample, settle
from tests.unit.test_pipelined_rounds import RecordingAcks

_ORDER_COUNT = _FIELDS[Activity].index("order_count")


def _orders(payload_factory: Callable[..., dict[str, Any]], n: int) -> list[Any]:
    return [
        SimpleNamespace(
            key=b"cust-0001",
            value=codec.dumps(payload_factory("order.placed", order_id=f"o-{offset}")),
            offset=offset,
            timestamp=int(time.time() * 1000),
        )
        for offset in range(n)
    ]


def _draining_agent(interval: float) -> tuple[RecordingAcks, Any, list[dict[Any, int]], Any]:
    """The agent's shell taking rounds of two records, its broker acknowledging at once."""
    producer = RecordingAcks()
    settings = Settings(
        clock="replay", proposal_lookahead=0, batch_max=2, state_flush_interval=interval
    )
    agent = agent_on(producer, settings)
    marked: list[dict[Any, int]] = []
    agent.feed = SimpleNamespace(handled=lambda offsets: marked.append(dict(offsets)))
    return producer, agent, marked, SimpleNamespace(topic=settings.topics.orders, partition=0)


async def _round(agent: Any, producer: RecordingAcks) -> bool:
    """One round, the broker acknowledging everything it is sent meanwhile."""
    handling = asyncio.create_task(agent.handle_round())
    while not handling.done():
        producer.ack()
        await settle()
    more: bool = handling.result()
    return more


async def _settled(agent: Any, producer: RecordingAcks, held_too: bool = True) -> None:
    """The rounds' writes finished, the broker acknowledging; ``held_too``: and what is
    held back written (:meth:`CustomerAgent.settle`), else only the rounds in flight."""
    settling = asyncio.create_task(agent.settle() if held_too else agent.writes.settle())
    while not settling.done():
        producer.ack()
        await settle()
    settling.result()


def _order_counts(producer: RecordingAcks) -> list[int]:
    return [w["activity"][_ORDER_COUNT] for w in producer.changelog(b"cust-0001")]


def test_a_customer_several_full_rounds_touch_is_written_once_when_the_input_is_caught_up(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _draining_agent(interval=60.0)
        agent.inputs.accept(tp, _orders(payload_factory, 5), 5, 5)

        # When two full rounds drain the backlog
        assert await _round(agent, producer) is True
        assert await _round(agent, producer) is True
        await _settled(agent, producer, held_too=False)
        # Then their outputs went out, but no state and no offset yet
        assert producer.changelog(b"cust-0001") == []
        assert marked == []
        assert any(topic == agent.settings.topics.actions for topic, _ in producer.batches)

        # When the last round finds the input caught up
        assert await _round(agent, producer) is False
        await _settled(agent, producer)
        # Then the customer is written once, with every order, and the offsets marked
        assert _order_counts(producer) == [5]
        assert marked == [{("crm.orders", 0): 5}]
        assert agent.customers.data["cust-0001"].activity.order_count == 5
        assert agent.unwritten == {}

    asyncio.run(scenario())


def test_states_held_back_are_written_before_partitions_move_or_the_worker_stops(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _draining_agent(interval=60.0)
        agent.inputs.accept(tp, _orders(payload_factory, 6), 6, 8)  # two more to come
        processed = sample(f"{PROCESSING}_count")
        for _ in range(3):
            assert await _round(agent, producer) is True
        await _settled(agent, producer, held_too=False)
        assert producer.changelog(b"cust-0001") == [] and marked == []
        # Their records are not handled yet: no processing latency observed
        assert sample(f"{PROCESSING}_count") == processed

        # When the writes settle (what a rebalance and the shutdown wait for)
        await _settled(agent, producer)
        # Then what was held is written and its offsets marked
        assert _order_counts(producer) == [6]
        assert marked == [{("crm.orders", 0): 6}]
        assert sample(f"{PROCESSING}_count") == processed + 6

    asyncio.run(scenario())


def test_the_flush_interval_bounds_how_long_full_rounds_hold_their_states(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _draining_agent(interval=0.0)
        agent.inputs.accept(tp, _orders(payload_factory, 6), 6, 8)
        for _ in range(3):
            assert await _round(agent, producer) is True
        await _settled(agent, producer)
        # With no interval every round writes, as before write-behind
        assert _order_counts(producer) == [2, 4, 6]
        assert [o[("crm.orders", 0)] for o in marked] == [2, 4, 6]

        producer, agent, marked, tp = _draining_agent(interval=0.2)
        agent.inputs.accept(tp, _orders(payload_factory, 6), 6, 8)
        assert await _round(agent, producer) is True
        assert await _round(agent, producer) is True
        await asyncio.sleep(0.25)
        assert await _round(agent, producer) is True
        await _settled(agent, producer, held_too=False)
        # The third round came after the interval: it wrote the three rounds' state
        assert _order_counts(producer) == [6]
        assert [o[("crm.orders", 0)] for o in marked] == [6]

    asyncio.run(scenario())


def test_held_writes_keep_each_customers_latest_form_and_each_partitions_furthest_offset() -> None:
    held = HeldWrites()
    assert not held
    first, second = object(), object()
    held.hold(
        forms={"a": b"1", "b": b"1"},
        states={"a": (0, first), "b": (1, first), "c": (1, first)},
        clocks={0: {"t": 1}},
        handled={("crm.orders", 0): 10, ("crm.browse", 1): 4},
        moves={("stage", "new"): 1},
        appended_at=[1.0],
        now=100.0,
    )
    held.hold(
        forms={"a": b"2"},
        states={"a": (0, second)},
        clocks={0: {"t": 2}, 1: {"t": 1}},
        handled={("crm.orders", 0): 12},
        moves={("stage", "new"): -1, ("stage", "active"): 1},
        appended_at=[2.0, 3.0],
        now=101.0,
    )
    assert held and held.since == 100.0
    taken = held.take()
    assert not held and held.since is None
    assert taken.forms == {"a": b"2", "b": b"1"}
    assert taken.states == {"a": (0, second), "b": (1, first), "c": (1, first)}
    assert taken.clocks == {0: {"t": 2}, 1: {"t": 1}}
    assert taken.handled == {("crm.orders", 0): 12, ("crm.browse", 1): 4}
    assert +taken.moves == {("stage", "active"): 1}
    assert taken.appended_at == [1.0, 2.0, 3.0]


def test_a_held_rounds_state_is_not_written_if_its_outputs_were_not_acknowledged(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent, marked, tp = _draining_agent(interval=60.0)
        agent.inputs.accept(tp, _orders(payload_factory, 4), 4, 8)
        # Given a full round whose outputs the broker refuses
        assert await asyncio.wait_for(agent.handle_round(), 1) is True
        for _, _, future in producer.waiting:
            future.set_exception(RuntimeError("broker said no"))
        producer.waiting.clear()
        await settle()
        # And the next round, which learns of it (the worker then stops), its writes
        # collected with the failed round's
        with pytest.raises(RuntimeError, match="broker said no"):
            await asyncio.wait_for(agent.handle_round(), 1)
        await settle()
        with pytest.raises(RuntimeError, match="broker said no"):
            await agent.writes.trim()
        assert len(agent.writes) == 0
        # When the worker stops (it settles its writes)
        with pytest.raises(RuntimeError, match="broker said no"):
            await _settled(agent, producer)
        # Then the held state is not written: its records are read again after the
        # restart, and its actions sent again (the ledger never noted them)
        assert producer.changelog(b"cust-0001") == []
        assert marked == []

    asyncio.run(scenario())


def test_a_rounds_records_are_let_go_once_it_has_folded_not_when_its_writes_end(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    """A round's admitted records (about 2 KB each, parsed) are what its fold needs, and
    its retry of a customer after a failure; kept until the round's writes end, they
    stayed alive beside the next round's, so peak memory grew with two rounds of them."""

    async def scenario() -> None:
        producer, agent, _, tp = _draining_agent(interval=60.0)
        agent.inputs.accept(tp, _orders(payload_factory, 2), 2, 4)
        (lane,) = agent.inputs.merges[0].lanes.values()
        events = [weakref.ref(item.payload) for item in lane.queue]
        assert len(events) == 2

        # When a round folds them and its outputs wait for the broker's acks
        handling = asyncio.create_task(agent.handle_round())
        await settle()
        assert handling.done() and handling.result() is True
        assert len(agent.writes) == 1, "the round's writes are still in flight"
        gc.collect()

        # Then its records are gone already
        assert [ref() for ref in events] == [None, None]
        await _settled(agent, producer)

    asyncio.run(scenario())


def test_held_writes_are_due_once_caught_up_at_the_interval_or_at_the_most_held() -> None:
    held = HeldWrites()
    held.hold({"c-1": b"{}"}, {}, {}, {}, {}, [], now=100.0)

    assert not held.due(False, 5.0, 104.9)
    assert held.due(False, 5.0, 105.0)  # the interval to the second
    assert held.due(True, 5.0, 100.0)  # caught up: at once

    many = HeldWrites()
    many.hold({f"c-{n}": b"{}" for n in range(MAX_HELD)}, {}, {}, {}, {}, [], now=100.0)
    assert many.due(False, 5.0, 100.0)  # at the most it holds
    fewer = HeldWrites()
    fewer.hold({f"c-{n}": b"{}" for n in range(MAX_HELD - 1)}, {}, {}, {}, {}, [], now=100.0)
    assert not fewer.due(False, 5.0, 100.0)
