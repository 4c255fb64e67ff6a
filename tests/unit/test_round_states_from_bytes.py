"""A batch's bound on the states it reads from their stored bytes
(CRM_BATCH_STATES_FROM_BYTES, issue 14).

With the memory store, a worker keeps the CRM_STATES_PARSED customers most recently
written parsed and every other one as its stored bytes. A batch parses each of the
latter it meets, and holds it parsed until its writes are done: at many customers
per worker most of a batch's records are such customers, so a batch of 16,000 records
held about 14,000 parsed states (6.5 KB each) beside the ones kept parsed. A batch
therefore also stops taking records once it has read this many states from bytes,
says that more is ready, and the next batch goes on from there: nothing is skipped,
nothing is done twice. States kept parsed do not count, so where a worker's customers
fit in CRM_STATES_PARSED its batches are as big as before. A new customer's state
counts (thirty-first session): it starts in the batch and is held parsed until
written, just the same.

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
from prometheus_client import REGISTRY

from agents import timers
from agents.customer_events import REASSESS
from agents.state import CustomerState
from schemas import codec
from streams import customer_agent
from streams.parsed import ParsedStates
from streams.settings import Env, Settings
from tests.unit.conftest import T0
from tests.unit.test_latency_metrics import agent_on
from tests.unit.test_pipelined_rounds import RecordingAcks
from tests.unit.test_round_budget import _buffered, _orders
from tests.unit.test_write_behind import _round, _settled

CUSTOMERS = [f"cust-{n:04d}" for n in range(5)]


def _agent(
    payload_factory: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    bound: int,
    stored_as_bytes: bool,
) -> tuple[RecordingAcks, Any]:
    """The agent's shell, its table holding each customer's state (as its stored bytes,
    or parsed), and one order of each waiting on a partition."""
    # The stand-in table is a dict: counted as a memory store here
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)
    # Runs of one record: the batch can stop after any of them
    monkeypatch.setattr(customer_agent, "RUN_RECORDS", 1)
    producer = RecordingAcks()
    settings = Settings(
        clock="replay",
        proposal_lookahead=0,
        batch_seconds=0,
        state_flush_interval=0,
        batch_states_from_bytes=bound,
    )
    agent = agent_on(producer, settings)
    agent.feed = SimpleNamespace(handled=lambda offsets: None)
    for customer in CUSTOMERS:
        state = CustomerState(customer)
        agent.customers.data[customer] = state.to_bytes() if stored_as_bytes else state
    tp = SimpleNamespace(topic=settings.topics.orders, partition=0)
    # One order per customer, an hour apart, on one partition
    orders = [
        record
        for n, customer in enumerate(CUSTOMERS)
        for record in _orders(payload_factory, customer, [n], first=n)
    ]
    agent.inputs.accept(tp, orders, len(CUSTOMERS), len(CUSTOMERS))
    return producer, agent


def _read_from_bytes() -> float:
    return REGISTRY.get_sample_value("crm_states_read_from_bytes_total") or 0.0


def _state(agent: Any, customer: str) -> CustomerState:
    """A customer's latest state: a round's still being written, or the table's."""
    entry = agent.unwritten.get(customer)
    value = entry.state if entry is not None else agent.customers.data[customer]
    return CustomerState.from_bytes(value) if isinstance(value, bytes) else value


def _order_counts(agent: Any) -> list[int]:
    return [_state(agent, customer).activity.order_count for customer in CUSTOMERS]


async def _rounds_until_caught_up(agent: Any, producer: RecordingAcks, more: bool) -> int:
    """How many batches it took, counting the first (which said ``more``), until one said
    nothing more is ready; their writes settled."""
    rounds = 1
    while more:
        more = await _round(agent, producer)
        rounds += 1
    await _settled(agent, producer)
    return rounds


def test_a_batch_stops_once_it_has_read_its_bound_of_states_from_bytes_and_the_next_goes_on(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        # Given five customers whose states are kept as their stored bytes, one order
        # each waiting, and a bound of two states read from bytes per batch
        producer, agent = _agent(payload_factory, monkeypatch, bound=2, stored_as_bytes=True)
        read = _read_from_bytes()

        # When a batch is handled
        more = await _round(agent, producer)

        # Then it read two states from bytes, folded their two records, and says more
        # is ready
        assert _read_from_bytes() - read == 2
        assert _buffered(agent) == 3
        assert more is True

        # And the next batches take the rest, in order, each record once
        assert await _rounds_until_caught_up(agent, producer, more) == 3
        assert _buffered(agent) == 0
        assert _read_from_bytes() - read == 5
        assert _order_counts(agent) == [1] * 5

    asyncio.run(scenario())


def test_a_batch_counts_the_new_customers_it_starts_against_its_bound_and_the_next_goes_on(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new customer's state is started in the batch and held parsed until written, as
    one read from bytes is. A burst of new customers (a first start, a backfill of a new
    market) is what set a draining worker's peak memory: a batch of 16,000 records at
    100k customers started some 14,000 states (bench/README.md)."""

    async def scenario() -> None:
        # Given five customers with no state yet, one order each waiting, and a bound of
        # two states per batch
        producer, agent = _agent(payload_factory, monkeypatch, bound=2, stored_as_bytes=True)
        for customer in CUSTOMERS:
            del agent.customers.data[customer]
        read = _read_from_bytes()

        # When a batch is handled
        more = await _round(agent, producer)

        # Then it started two states, folded their two records, and says more is ready;
        # none of them was read from bytes
        assert _buffered(agent) == 3
        assert more is True
        assert _read_from_bytes() - read == 0

        # And the next batches take the rest, in order, each record once
        assert await _rounds_until_caught_up(agent, producer, more) == 3
        assert _buffered(agent) == 0
        assert _order_counts(agent) == [1] * 5

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("bound", "stored_as_bytes"),
    [(2, False), (0, True)],
    ids=["states-kept-parsed-do-not-count", "a-bound-of-zero-is-no-bound"],
)
def test_a_batch_unbound_by_its_reads_takes_what_its_size_and_time_allow(
    payload_factory: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    bound: int,
    stored_as_bytes: bool,
) -> None:
    async def scenario() -> None:
        # Given states kept parsed (none read from bytes), or no bound at all
        producer, agent = _agent(payload_factory, monkeypatch, bound, stored_as_bytes)

        # When a batch is handled, then it takes every record, as before
        assert await _round(agent, producer) is False
        await _settled(agent, producer)
        assert _buffered(agent) == 0
        assert _order_counts(agent) == [1] * 5

    asyncio.run(scenario())


def test_the_bound_is_a_setting_with_a_default() -> None:
    assert Env.BATCH_STATES_FROM_BYTES == "CRM_BATCH_STATES_FROM_BYTES"
    assert Settings().batch_states_from_bytes == 2000
    assert Settings.from_env({Env.BATCH_STATES_FROM_BYTES: "100"}).batch_states_from_bytes == 100


def test_where_states_are_kept_as_bytes_a_batch_fires_the_timers_of_at_most_its_bound(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timers due fire customer by customer, each customer's state loaded (parsed from
    its bytes, most of them, at many customers): the bound holds for them too."""

    async def scenario() -> None:
        # Given five customers kept as bytes, each with a re-assessment due on the first
        # day, a store that has let states go for their bytes, and a bound of two
        producer, agent = _agent(payload_factory, monkeypatch, bound=2, stored_as_bytes=False)
        agent.inputs = customer_agent.InputMerges(agent.settings, agent.customers)
        data = agent.customers.data
        due = T0.timestamp()
        for customer in CUSTOMERS:
            state = CustomerState(customer)
            timers.set_timer(state.timers, timers.Timer(due, REASSESS, "", ""), 10)
            data[customer] = state.to_bytes()
            agent.timer_index.note(customer, 0, state.timers)
        agent.parsed = ParsedStates(1)
        agent.parsed.written(data, [("someone-else", b"{}")])
        # And a later order of another customer, which moves the clock past them
        late = payload_factory(
            "order.placed", customer_id="cust-late", order_id="late", at=T0 + dt.timedelta(days=3)
        )
        tp = SimpleNamespace(topic=agent.settings.topics.orders, partition=0)
        record = SimpleNamespace(
            key=b"cust-late", value=codec.dumps(late), offset=0, timestamp=int(time.time() * 1000)
        )
        agent.inputs.accept(tp, [record], 1, 1)

        # When a batch is handled
        more = await _round(agent, producer)

        def fired() -> list[str]:
            return [
                c for c in CUSTOMERS if not any(row[0] == due for row in _state(agent, c).timers)
            ]

        # Then it fired the timers of two customers, and says more is ready
        assert more is True
        assert fired() == CUSTOMERS[:2]

        # And the next batches fire the rest
        while more:
            more = await _round(agent, producer)
        await _settled(agent, producer)
        assert fired() == CUSTOMERS

    asyncio.run(scenario())


def test_a_slice_holds_as_many_records_as_read_the_states_left_by_the_reads_per_record_lately(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where every customer's state is kept parsed, a batch reads none from bytes: its
    slices stay as big as its size and time allow (a bound of 2,000 records per slice
    folded the storefront mix at 5k customers 7-28 % slower)."""

    async def scenario() -> None:
        producer, agent = _agent(payload_factory, monkeypatch, bound=2, stored_as_bytes=False)
        # A new worker assumes every record reads a state
        assert agent._slice(0, 16_000, 2_000) == 2_000

        # When a batch folds records whose states are kept parsed
        await _round(agent, producer)
        await _settled(agent, producer)

        # Then it learnt that records read fewer, and slices grow back to the size
        assert agent.read_rate < customer_agent.READ_RATE_GUESS
        agent.read_rate = 0.0
        assert agent._slice(0, 16_000, 2_000) == 16_000
        agent.read_rate = 0.5
        assert agent._slice(0, 16_000, 2_000) == 4_000
        assert agent._slice(0, 16_000, 0) == 16_000

    asyncio.run(scenario())
