"""When the customer agent observes its two latency histograms (deploy/METRICS.md).

``crm_action_latency_seconds`` ends at the broker's acknowledgement of the action and
starts at the triggering event's time, or at the due time of the timer that sent it
(a deferred action goes out from a timer due at its ``not_before``).
``crm_processing_latency_seconds`` ends once the batch is handled: its outputs
acknowledged by the broker and the customers' states written (changelog acknowledged).

The shell runs on a stand-in producer whose broker acknowledges only when the test
says so, so each observation is checked against the acknowledgements it must follow.
Unit tier: no broker, no Redis (the ledger and the projection are stand-ins too).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agents.customer_events import BatchResult
from agents.rules import Rules
from agents.timers import TimerIndex
from schemas import codec
from schemas.actions import Action, ActionType, ClockMode, Priority
from schemas.base import Channel
from streams.customer_agent import FOLD_COST_GUESS, READ_RATE_GUESS, CustomerAgent, InputMerges
from streams.inflight import HeldWrites, InFlight, Packer
from streams.parsed import parsed_states
from streams.settings import Settings

ACTION = "crm_action_latency_seconds"
PROCESSING = "crm_processing_latency_seconds"


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, key: bytes, value: bytes | None, timestamp: Any) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        pass


class HeldAcks:
    """A producer whose broker acknowledges what was sent only on :meth:`ack`."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, int, asyncio.Future[Any]]] = []
        self.sent: list[str] = []
        self.client = SimpleNamespace(
            cluster=SimpleNamespace(partitions_for_topic=lambda topic: {0, 1, 2, 3})
        )

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((topic, partition, future))
        self.sent.append(topic)
        return future

    def ack(self) -> list[str]:
        """Acknowledge everything sent so far; the topics acknowledged."""
        acked = []
        for offset, (topic, partition, future) in enumerate(self.waiting):
            meta = SimpleNamespace(topic_partition=(topic, partition), offset=offset)
            future.set_result(meta)
            acked.append(topic)
        self.waiting.clear()
        return acked


class Store(dict[str, Any]):
    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        pass


class Ledger:
    async def unsent(self, ids: list[str]) -> set[str]:
        return set(ids)

    async def record(self, ids: list[str]) -> None:
        pass


def agent_on(producer: HeldAcks, settings: Settings) -> CustomerAgent:
    """The customer agent's shell on stand-ins for the app, table, feed, ledger and Redis."""
    customers = SimpleNamespace(
        data=Store(), changelog_topic=SimpleNamespace(get_topic_name=lambda: "customers-log")
    )
    agent = CustomerAgent.__new__(CustomerAgent)
    agent.settings = settings
    # Marketing without an explicit grant (the welcome goes out with no consent event)
    agent.rules = Rules.from_mapping({"policy": {"consent": {"marketing": "opt_out"}}})
    agent.app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    agent.feed = SimpleNamespace(handled=lambda offsets: None)
    agent.customers = customers
    agent.topics = settings.topics
    agent.ledger = Ledger()  # type: ignore[assignment]
    agent.inputs = InputMerges(settings, customers)
    agent.projection = SimpleNamespace(mark=lambda changed: None)  # type: ignore[assignment]
    agent.timer_index = TimerIndex()
    agent.progress_sent = {}
    agent.writes = InFlight(settings.writes_in_flight)
    agent.held = HeldWrites()
    agent.packer = Packer()
    agent.unwritten = {}
    agent.parsed = parsed_states(settings)
    agent.noteworthy = set()
    agent.fold_cost = FOLD_COST_GUESS
    agent.read_rate = READ_RATE_GUESS
    return agent


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("in_flight", [0, 1], ids=["round-waits", "round-in-flight"])
def test_both_latencies_are_observed_only_after_the_acks_they_end_at(
    payload_factory: Callable[..., dict[str, Any]], in_flight: int
) -> None:
    async def scenario() -> None:
        producer = HeldAcks()
        settings = Settings(clock="replay", proposal_lookahead=0, writes_in_flight=in_flight)
        agent = agent_on(producer, settings)
        # Given a first order of a new customer (a welcome action), fetched and merged
        appended = time.time() - 0.25
        record = SimpleNamespace(
            key=b"cust-0001",
            value=codec.dumps(payload_factory("order.placed")),
            offset=0,
            timestamp=int(appended * 1000),
        )
        tp = SimpleNamespace(topic=settings.topics.orders, partition=0)
        agent.inputs.accept(tp, [record], 1, 1)
        actions, processed = sample(f"{ACTION}_count"), sample(f"{PROCESSING}_count")

        # When the batch is handled and the broker has acknowledged nothing yet
        handling = asyncio.create_task(agent.handle_round())
        await settle()
        assert settings.topics.actions in producer.sent
        # Then neither latency is observed
        assert sample(f"{ACTION}_count") == actions
        assert sample(f"{PROCESSING}_count") == processed

        # When the outputs are acknowledged (the state write is sent only then)
        acked = producer.ack()
        assert "customers-log" not in acked
        await settle()
        # Then the action's latency is observed, the processing latency not yet
        assert sample(f"{ACTION}_count") == actions + 1
        assert sample(f"{PROCESSING}_count") == processed
        assert "customers-log" in producer.sent

        # When the state write is acknowledged too
        producer.ack()
        await asyncio.wait_for(handling, 5)
        await asyncio.wait_for(agent.writes.settle(), 5)
        # Then the record's processing latency is observed, from its append time
        assert sample(f"{PROCESSING}_count") == processed + 1

    asyncio.run(scenario())


def _action(created_at: dt.datetime, not_before: dt.datetime | None) -> Action:
    return Action(
        action_id="act-1",
        customer_id="cust-0001",
        action_type=ActionType.REPURCHASE_REMINDER,
        priority=Priority.MARKETING,
        channel=Channel.EMAIL,
        template_id="tpl",
        reason="test",
        rule_id="care.repurchase",
        trigger_event_ids=["evt-1"],
        created_at=created_at,
        clock=ClockMode.EVENT,
        not_before=not_before,
    )


def _observed_latency(action: Action) -> float:
    """The value ``crm_action_latency_seconds`` gets when the shell sends ``action``."""

    async def scenario() -> float:
        producer = HeldAcks()
        agent = agent_on(
            producer,
            Settings(
                clock="replay",
                proposal_lookahead=0,
            ),
        )
        before = sample(f"{ACTION}_sum")
        pending, sent = await agent._send(BatchResult(actions=[action]))
        acknowledged = asyncio.create_task(agent._acknowledged(pending, sent))
        await settle()
        producer.ack()
        await asyncio.wait_for(acknowledged, 5)
        return sample(f"{ACTION}_sum") - before

    return asyncio.run(scenario())


def test_an_action_sent_at_once_counts_from_its_triggering_event() -> None:
    now = dt.datetime.now(dt.UTC)

    latency = _observed_latency(_action(now - dt.timedelta(seconds=2), None))

    assert 2.0 <= latency < 3.0


def test_a_deferred_action_counts_from_the_timer_that_sent_it_not_from_its_event() -> None:
    # Given an action the contact policy deferred by three hours, due a second ago
    now = dt.datetime.now(dt.UTC)
    action = _action(now - dt.timedelta(hours=3), not_before=now - dt.timedelta(seconds=1))

    latency = _observed_latency(action)

    # Then its latency runs from the deferral timer's due time, not the event's
    assert 1.0 <= latency < 2.0
