"""A batch's time budget (CRM_BATCH_SECONDS, issue 14).

A backlog drains in batches of up to CRM_BATCH_MAX records; the worker answers its
HTTP pages (/livez, /metrics, the customer page) only between batches. So a batch
also stops taking records once it has folded for CRM_BATCH_SECONDS, says that more
is ready, and the next batch goes on from there: nothing is skipped, nothing is done
twice.

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

from schemas import codec
from streams import customer_agent
from streams.settings import Settings
from tests.unit.conftest import T0
from tests.unit.test_latency_metrics import agent_on
from tests.unit.test_pipelined_rounds import RecordingAcks
from tests.unit.test_write_behind import _round, _settled


def _orders(
    payload_factory: Callable[..., dict[str, Any]], customer: str, hours: list[int], first: int = 0
) -> Any:
    """``customer``'s orders at ``hours`` after T0, at offsets from ``first`` on."""
    return [
        SimpleNamespace(
            key=customer.encode(),
            value=codec.dumps(
                payload_factory(
                    "order.placed",
                    customer_id=customer,
                    order_id=f"{customer}-{h}",
                    at=T0 + dt.timedelta(hours=h),
                )
            ),
            offset=offset,
            timestamp=int(time.time() * 1000),
        )
        for offset, h in enumerate(hours, first)
    ]


def _agent_with(
    payload_factory: Callable[..., dict[str, Any]],
    budget: float,
    partitions: tuple[tuple[int, str, list[int]], ...],
) -> tuple[RecordingAcks, Any]:
    """The agent's shell with each partition's orders (partition, customer, hours)."""
    producer = RecordingAcks()
    settings = Settings(
        clock="replay", proposal_lookahead=0, batch_seconds=budget, state_flush_interval=0
    )
    agent = agent_on(producer, settings)
    agent.feed = SimpleNamespace(handled=lambda offsets: None)
    for partition, customer, hours in partitions:
        tp = SimpleNamespace(topic=settings.topics.orders, partition=partition)
        agent.inputs.accept(tp, _orders(payload_factory, customer, hours), len(hours), len(hours))
    return producer, agent


def _agent_with_two_partitions(
    payload_factory: Callable[..., dict[str, Any]], budget: float
) -> tuple[RecordingAcks, Any]:
    """Two partitions whose orders alternate in event time: four runs of one record."""
    return _agent_with(
        payload_factory, budget, ((0, "cust-0001", [0, 2]), (1, "cust-0002", [1, 3]))
    )


def _buffered(agent: Any) -> int:
    return sum(len(merge) for merge in agent.inputs.merges.values())


def _order_counts(agent: Any) -> dict[str, int]:
    data = agent.customers.data
    return {c: data[c].activity.order_count for c in ("cust-0001", "cust-0002") if c in data}


def test_a_batch_whose_time_is_spent_stops_taking_records_and_the_next_goes_on(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        # Given a budget any run of records spends
        producer, agent = _agent_with_two_partitions(payload_factory, budget=1e-9)

        # When a batch is handled
        more = await _round(agent, producer)
        # Then it folded one run and says more is ready
        assert more is True
        assert _buffered(agent) == 3

        # And the next batches take the rest, in event time, each record once
        rounds = 1
        while await _round(agent, producer):
            rounds += 1
        await _settled(agent, producer)
        assert rounds == 4
        assert _buffered(agent) == 0
        assert _order_counts(agent) == {"cust-0001": 2, "cust-0002": 2}

    asyncio.run(scenario())


def test_without_a_budget_a_batch_takes_what_its_size_allows(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        producer, agent = _agent_with_two_partitions(payload_factory, budget=0)

        assert await _round(agent, producer) is False
        await _settled(agent, producer)
        assert _buffered(agent) == 0
        assert _order_counts(agent) == {"cust-0001": 2, "cust-0002": 2}

    asyncio.run(scenario())


def test_with_one_partition_a_batch_checks_its_budget_every_run_of_records(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One partition's records are one run up to the batch's size; a run is cut at
    RUN_RECORDS, so the budget still ends a batch of a single partition."""
    monkeypatch.setattr(customer_agent, "RUN_RECORDS", 1)

    async def scenario() -> None:
        producer, agent = _agent_with(payload_factory, 1e-9, ((0, "cust-0001", [0, 1, 2]),))

        assert await _round(agent, producer) is True
        assert _buffered(agent) == 2
        while await _round(agent, producer):
            pass
        await _settled(agent, producer)
        assert _buffered(agent) == 0
        assert _order_counts(agent) == {"cust-0001": 3}

    asyncio.run(scenario())


def test_a_batch_takes_in_as_many_records_as_fold_in_its_budget_before_it_looks_at_its_time(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    """A batch folds its records in slices, each customer's records of a slice together
    (agents.customer_events.by_customer): a slice holds what the cost per record lately
    says fits in the budget, and the batch looks at its time after each."""

    async def scenario() -> None:
        # Given a budget of two records at the cost per record lately
        producer, agent = _agent_with_two_partitions(payload_factory, budget=1e-9)
        agent.fold_cost = 0.5e-9

        # When a batch is handled
        more = await _round(agent, producer)

        # Then it folded two runs of one record, then found its time spent
        assert more is True
        assert _buffered(agent) == 2
        # And it learnt what a record costs here
        assert agent.fold_cost > 0.5e-9

    asyncio.run(scenario())
