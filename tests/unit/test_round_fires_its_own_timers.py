"""A round fires the timers its own records set that are due by its watermark.

A round folds its records, then sweeps the customers the timer index holds as due. A
customer's timers are indexed only after the sweep, so a timer one of the round's
records set, due before the round's watermark, waited for the next round. With the
replay clock's promises (CRM_PROPOSAL_LOOKAHEAD) a round spans about a day of event
time, and the backfill's care follow-ups are due a day after their orders: each
promise cycle ran a second round of its own for them (36-76 customers of about 900,
bench/README.md, forty-second session), on the event loop the aggregates agent needs
for the next promise. The sweep now also takes the round's changed customers whose
timers are due by the watermark; they fire at their due times as before.

The customer agent's shell (tests.unit.test_round_budget). Unit tier: no broker, no
Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from agents import timers
from agents.state import CustomerState
from schemas import codec
from streams.settings import Settings
from tests.unit.conftest import T0
from tests.unit.test_latency_metrics import agent_on
from tests.unit.test_pipelined_rounds import RecordingAcks
from tests.unit.test_round_budget import _orders
from tests.unit.test_write_behind import _round, _settled

FOLLOW_UP = "care.follow_up"  # set by an order placed, due a day later
ACTIONS = Settings().topics.actions


def _agent(payload_factory: Callable[..., dict[str, Any]]) -> tuple[RecordingAcks, Any]:
    """One partition: cust-0001's order at T0, then cust-0002's two days later."""
    producer = RecordingAcks()
    settings = Settings(
        clock="replay", proposal_lookahead=0, batch_seconds=0, state_flush_interval=0
    )
    agent = agent_on(producer, settings)
    agent.feed = SimpleNamespace(handled=lambda offsets: None)
    tp = SimpleNamespace(topic=settings.topics.orders, partition=0)
    records = _orders(payload_factory, "cust-0001", [0]) + _orders(
        payload_factory, "cust-0002", [48], first=1
    )
    agent.inputs.accept(tp, records, len(records), len(records))
    return producer, agent


def _state(agent: Any, customer: str) -> CustomerState:
    entry = agent.unwritten.get(customer)
    value: CustomerState = entry.state if entry is not None else agent.customers.data[customer]
    return value


def _kinds(state: CustomerState) -> list[str]:
    return [timers.Timer.of(row).kind for row in state.timers]


def test_a_timer_a_round_sets_that_is_due_by_its_watermark_fires_in_that_round(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        # Given cust-0001's order (its follow-up due a day later) and, on the same
        # partition, cust-0002's order two days later: the watermark passes the follow-up
        producer, agent = _agent(payload_factory)

        # When one round folds both
        more = await _round(agent, producer)

        # Then cust-0001's follow-up has fired in it, at its due time
        assert more is False
        first = _state(agent, "cust-0001")
        assert FOLLOW_UP not in _kinds(first)
        follow_ups = [
            codec.loads(value)
            for topic, records in producer.batches
            if topic == ACTIONS
            for key, value in records
            if codec.loads(value)["action_type"] == "follow_up"
        ]
        assert [(a["customer_id"], a["created_at"]) for a in follow_ups] == [
            ("cust-0001", "2024-03-02T09:00:00Z")  # T0 + 24 h
        ]
        watermark = agent.inputs.watermark(0, time.time())
        assert watermark is not None and watermark[0] == T0.timestamp() + 48 * 3600
        # cust-0002's follow-up is due after the watermark: it waits
        assert FOLLOW_UP in _kinds(_state(agent, "cust-0002"))

        # And the next round has nothing left to fire: nothing is due in the index
        def until(partition: int) -> tuple[float, bool] | None:
            return agent.inputs.watermark(partition, time.time())

        assert agent.timer_index.pop_due(until, 100) == []
        await _settled(agent, producer)

    asyncio.run(scenario())
