"""A round folds its records customer by customer (issue 14).

The event-time merge releases a round's records in time order, which interleaves the
customers: at 5k customers a full round holds about three records of each, and each
one found its customer's state gone from the CPU's caches. A round now folds each
customer's records together, in the order released (``agents.customer_events.by_customer``):
in-process the fold costs ~15 % less (bench/README.md). A customer's fold reads and
changes its own state alone, so what is decided is the same. What is not keyed by
customer keeps the release order: the signals (the aggregates agent's merge reads each
source partition's in log order), the dead letters (each source partition's in log
order), and the offsets marked handled (the last of each partition, whichever customer
it was).

The customer agent's shell on a producer whose broker acknowledges when the test says
so (tests.unit.test_latency_metrics). Unit tier: no broker, no Redis.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from agents import customer_events
from agents.customer_events import by_customer
from agents.records import Item
from schemas import codec
from schemas.control import ClockTick
from schemas.deadletter import DeadLetter
from schemas.signals import PROGRESS
from streams.settings import Settings
from tests.unit.conftest import T0
from tests.unit.test_latency_metrics import agent_on
from tests.unit.test_pipelined_rounds import RecordingAcks
from tests.unit.test_write_behind import _round, _settled

Record = tuple[str, bytes | None, bytes]  # (customer, key, value)


def _records(records: list[Record]) -> list[Any]:
    return [
        SimpleNamespace(key=key, value=value, offset=offset, timestamp=int(time.time() * 1000))
        for offset, (_, key, value) in enumerate(records)
    ]


def _event(
    payload_factory: Callable[..., dict[str, Any]], kind: str, customer: str, hour: int, **more: Any
) -> Record:
    payload = payload_factory(kind, customer_id=customer, at=T0 + dt.timedelta(hours=hour), **more)
    return customer, customer.encode(), codec.dumps(payload)


def _agent(topic: str, records: list[Record]) -> tuple[RecordingAcks, Any, list[dict[Any, int]]]:
    """The agent's shell with ``records`` on partition 0 of ``topic`` (an attribute of
    ``Settings.topics``), and the offsets each round marks handled."""
    producer = RecordingAcks()
    settings = Settings(
        clock="replay", proposal_lookahead=0, batch_seconds=0, state_flush_interval=0
    )
    agent = agent_on(producer, settings)
    handled: list[dict[Any, int]] = []
    agent.feed = SimpleNamespace(handled=lambda offsets: handled.append(dict(offsets)))
    tp = SimpleNamespace(topic=getattr(settings.topics, topic), partition=0)
    agent.inputs.accept(tp, _records(records), len(records), len(records))
    return producer, agent, handled


def _one_round(agent: Any, producer: RecordingAcks) -> None:
    async def scenario() -> None:
        assert await _round(agent, producer) is False
        await _settled(agent, producer)

    asyncio.run(scenario())


def _sent(producer: RecordingAcks, topic: str) -> list[dict[str, Any]]:
    return [
        codec.loads(value) for t, records in producer.batches if t == topic for _, value in records
    ]


def test_a_round_folds_each_customers_records_together_in_the_order_released(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two customers whose orders alternate in event time on one partition
    records = [
        _event(payload_factory, "order.placed", customer, hour, order_id=f"{customer}-{hour}")
        for hour, customer in enumerate(["cust-b", "cust-a", "cust-b", "cust-a"])
    ]
    producer, agent, _ = _agent("orders", records)
    decided: list[tuple[str, str]] = []
    decide = customer_events.decide

    def spy(state: Any, event: Any, *args: Any) -> Any:
        decided.append((state.customer_id, event.order_id))
        return decide(state, event, *args)

    monkeypatch.setattr(customer_events, "decide", spy)

    # When one round folds them
    _one_round(agent, producer)

    # Then each customer's records were folded together, each customer's in event time
    assert decided == [
        ("cust-a", "cust-a-1"),
        ("cust-a", "cust-a-3"),
        ("cust-b", "cust-b-0"),
        ("cust-b", "cust-b-2"),
    ]
    # And what each was decided is what it would have been alone
    assert agent.customers.data["cust-a"].activity.order_count == 2
    assert agent.customers.data["cust-b"].activity.order_count == 2


def test_a_rounds_signals_go_out_in_the_order_their_records_were_released(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    # Given complaints of two customers, alternating in event time (each gives a signal)
    customers = ["cust-b", "cust-a", "cust-b", "cust-a"]
    records = [
        _event(
            payload_factory,
            "complaint.opened",
            customer,
            hour,
            complaint_id=f"{customer}-{hour}",
            event_id=f"evt-{hour}",
        )
        for hour, customer in enumerate(customers)
    ]
    producer, agent, _ = _agent("complaints", records)

    # When one round folds them, customer by customer
    _one_round(agent, producer)

    # Then the signals went out in the release order, not the fold's
    signals = [s for s in _sent(producer, agent.topics.signals) if s["kind"] != PROGRESS]
    assert [s["signal_id"] for s in signals] == ["evt-0", "evt-1", "evt-2", "evt-3"]
    assert [s["customer_id"] for s in signals] == customers


def test_a_rounds_dead_letters_go_out_in_log_order_and_its_last_offset_is_marked_handled(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    # Given, on one partition, a malformed record keyed by a customer who sorts last,
    # an order of a customer who sorts first, and a malformed one of that customer
    records = [
        ("cust-z", b"cust-z", b"{not json"),
        _event(payload_factory, "order.placed", "cust-a", 0, order_id="o-1"),
        ("cust-a", b"cust-a", b"{not json either"),
    ]
    producer, agent, handled = _agent("orders", records)

    # When one round folds them, customer by customer
    _one_round(agent, producer)

    # Then the dead letters went out in the partition's log order
    letters = _sent(producer, agent.topics.dlq)
    assert [d["source_offset"] for d in letters] == [0, 2]
    # And the round marked the partition handled through its last record
    assert handled == [{next(iter(handled[0])): 3}]
    assert agent.customers.data["cust-a"].activity.order_count == 1


def test_by_customer_groups_stably_and_numbers_the_release_order() -> None:
    meta = SimpleNamespace(topic="t", partition=0, offset=0)

    def item(payload: Any, key: bytes | None = None) -> Item:
        return Item(0.0, 0, 0, "orders", payload, meta, key)

    def event(customer: str) -> Any:
        return SimpleNamespace(customer_id=customer)

    letter = DeadLetter.model_construct()
    tick = ClockTick.model_construct()
    released = [
        item(event("b")),
        item(letter, b"b"),
        item(event("a")),
        item(tick),
        item(letter, None),
        item(event("b")),
    ]

    grouped = by_customer(released, first=10)

    assert [i.seq for i in released] == [10, 11, 12, 13, 14, 15]
    assert [i.seq for i in grouped] == [13, 14, 12, 10, 11, 15]
