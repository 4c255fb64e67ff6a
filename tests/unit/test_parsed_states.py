"""Customer states kept as their stored bytes past CRM_STATES_PARSED (streams.parsed):
the memory store holds the most recently written states parsed and every other one as
the bytes its changelog got, and everything that reads a state takes either form.

Unit tier: no broker, no Redis (the agent's shell on the stand-ins of
tests.unit.test_latency_metrics).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.stores.memory import Store as MemoryStore
from prometheus_client import REGISTRY

from agents.state import CustomerState
from schemas import codec
from streams import customer_agent
from streams.kafka import decode_restored
from streams.parsed import ParsedStates, parsed_states
from streams.settings import Settings
from streams.web import _urgent
from tests.unit.test_latency_metrics import HeldAcks, agent_on, settle

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def test_only_the_last_written_stay_parsed_and_the_rest_become_what_was_written() -> None:
    store: dict[str, Any] = {}
    parsed = ParsedStates(2)
    for key in "abc":
        store[key] = {"state": key}
    assert parsed.written(store, [("a", b"A"), ("b", b"B")]) == 0

    # When a third is written: the least recently written is let go for its bytes
    assert parsed.written(store, [("c", b"C")]) == 1
    assert store == {"a": b"A", "b": {"state": "b"}, "c": {"state": "c"}}

    # When b is written again, c is now the oldest parsed
    store["a"] = {"state": "a2"}
    assert parsed.written(store, [("b", b"B2"), ("a", b"A2")]) == 1
    assert store == {"a": {"state": "a2"}, "b": {"state": "b"}, "c": b"C"}
    assert len(parsed) == 2


def test_a_key_gone_from_the_store_is_not_put_back() -> None:
    # An erased customer, or one whose partition went to another worker
    store: dict[str, Any] = {"a": {"state": "a"}}
    parsed = ParsedStates(1)
    parsed.written(store, [("gone", b"G")])

    # When another key is written, the one gone is the one let go: nothing to replace
    assert parsed.written(store, [("a", b"A")]) == 0
    assert store == {"a": {"state": "a"}}


def test_a_recovery_decodes_only_the_prefixed_keys_when_asked() -> None:
    store = MemoryStore.__new__(MemoryStore)
    packed = codec.pack(codec.dumps({"v": 3}), 1)
    store.data = {"\x00clock-0": codec.dumps({"p": 0}), "cust-1": packed}

    assert decode_restored(store, "\x00") == 1
    assert store.data == {"\x00clock-0": {"p": 0}, "cust-1": packed}


async def _handle(agent: Any, producer: HeldAcks, tp: Any, records: list[Any]) -> None:
    """``records`` of ``tp`` fetched, then one round handled, its sends acknowledged."""
    end = records[-1].offset + 1
    agent.inputs.accept(tp, records, end, end)
    handling = asyncio.create_task(agent.handle_round())
    while not handling.done():
        producer.ack()
        await settle()
    await handling


def test_a_round_and_the_operator_page_read_a_state_kept_as_bytes(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in table is a dict: counted as a memory store here
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)

    def record(payload: dict[str, Any], offset: int) -> Any:
        return SimpleNamespace(
            key=payload["customer_id"].encode(),
            value=codec.dumps(payload),
            offset=offset,
            timestamp=0,
        )

    def order(customer: str, offset: int) -> Any:
        payload = payload_factory("order.placed", customer_id=customer, order_id=f"o-{offset}")
        return record(payload, offset)

    async def scenario() -> None:
        producer = HeldAcks()
        settings = Settings(
            clock="replay", proposal_lookahead=0, writes_in_flight=0, states_parsed=1
        )
        agent = agent_on(producer, settings)
        agent.parsed = ParsedStates(settings.states_parsed)
        tp = SimpleNamespace(topic=settings.topics.orders, partition=0)
        data = agent.customers.data

        async def handle(*records: Any, tp: Any = tp) -> None:
            await _handle(agent, producer, tp, list(records))

        # Given two customers' orders, written in two rounds: one kept parsed
        await handle(order("cust-a", 0))
        await handle(order("cust-b", 1))
        assert isinstance(data["cust-b"], CustomerState)
        assert isinstance(data["cust-a"], bytes)
        assert CustomerState.from_bytes(data["cust-a"]).activity.order_count == 1

        # When cust-a orders again
        read_from_bytes = REGISTRY.get_sample_value("crm_states_read_from_bytes_total")
        await handle(order("cust-a", 2))

        # Then its round folded on the stored bytes (counted), and it is the one kept
        # parsed now
        assert REGISTRY.get_sample_value("crm_states_read_from_bytes_total") == (
            read_from_bytes + 1
        )
        assert isinstance(data["cust-a"], CustomerState)
        assert data["cust-a"].activity.order_count == 2
        assert isinstance(data["cust-b"], bytes)

        # When cust-b opens a complaint and cust-a orders once more (cust-b kept as bytes)
        complaints = SimpleNamespace(topic=settings.topics.complaints, partition=0)
        await handle(
            record(payload_factory("complaint.opened", customer_id="cust-b"), 0), tp=complaints
        )
        await handle(order("cust-a", 3))
        assert isinstance(data["cust-b"], bytes)

        # Then the operator page reads cust-b, and only it, from its bytes
        assert agent.noteworthy_customers() == ["cust-b"]
        rt = SimpleNamespace(customers=agent.customers, settings=settings)
        urgent, _, scanned = _urgent(rt, agent.inputs, agent.noteworthy_customers)  # type: ignore[arg-type]
        assert scanned == 1
        assert [row["customer_id"] for row in urgent] == ["cust-b"]

    asyncio.run(scenario())


def _reads(parsed: ParsedStates, store: dict[str, Any], keys: list[str]) -> None:
    """A round's reads, as the customer agent's loader makes them: a state kept parsed
    is looked up for its bytes; one kept as bytes, or a new customer's, is not."""
    for key in keys:
        if key in store and type(store[key]) is not bytes:
            parsed.bytes_of(key)
        else:  # kept as bytes, or a new customer
            parsed.read_unparsed(key)


def _rounds(parsed: ParsedStates, store: dict[str, Any], customers: int, rounds: int) -> None:
    """``rounds`` rounds of 10 customers each, taken in turn from ``customers``: each
    round reads its customers' states, then writes them parsed."""
    for n in range(rounds):
        keys = [f"c{(n * 10 + i) % customers}" for i in range(10)]
        _reads(parsed, store, keys)
        for key in keys:
            store[key] = {"state": key}
        parsed.written(store, [(key, key.encode()) for key in keys])


def test_where_the_customers_far_outnumber_the_limit_only_the_least_stay_parsed() -> None:
    # Given a store that keeps the last 10 written parsed, and the 30 written before
    # them only where those serve a fifth of the reads
    store: dict[str, Any] = {}
    parsed = ParsedStates(40, least=10, hit_rate=0.2)

    # When 400 customers are read and written in turn, each one again only after the
    # 399 others (so the last 40 written never hold the next one read)
    _rounds(parsed, store, customers=400, rounds=200)

    # Then the store holds 10 parsed, every other one as the bytes it was written as
    kept = [key for key, value in store.items() if type(value) is not bytes]
    assert len(kept) == len(parsed) == 10
    assert all(store[f"c{n}"] == f"c{n}".encode() for n in range(400) if f"c{n}" not in kept)
    assert parsed.keep == 10
    assert parsed.estimate == 0.0


def test_where_the_customers_fit_the_limit_it_keeps_them_all_parsed() -> None:
    # Given the same store, and 30 customers: more than the least, within the limit
    store: dict[str, Any] = {}
    parsed = ParsedStates(40, least=10, hit_rate=0.2)

    # When they are read and written in turn: at first only 10 stay parsed
    _rounds(parsed, store, customers=30, rounds=3)
    assert len(parsed) == 10

    # Then once 40 reads (a decision's, at least 1,000 or the limit) found their
    # customer among the last 40 written but not the last 10 (let go, then), the store
    # keeps all 30 parsed
    _rounds(parsed, store, customers=30, rounds=6)
    assert parsed.keep == 40
    assert parsed.estimate == 1.0
    _rounds(parsed, store, customers=30, rounds=3)
    assert len(parsed) == 30
    assert not any(type(value) is bytes for value in store.values())


def test_it_lets_go_again_when_the_customers_outgrow_the_limit() -> None:
    # Given a store that keeps 30 customers parsed, all of them read again and again
    store: dict[str, Any] = {}
    parsed = ParsedStates(40, least=10, hit_rate=0.2)
    _rounds(parsed, store, customers=30, rounds=12)
    assert len(parsed) == 30

    # When 400 customers come in turn, each read again only after the 399 others, then
    # it holds the least again
    _rounds(parsed, store, customers=400, rounds=60)
    assert parsed.keep == 10
    assert len(parsed) == 10
    assert sum(type(value) is not bytes for value in store.values()) == 10


def test_customers_read_again_soon_after_they_were_written_do_not_make_it_keep_more() -> None:
    # Given the same store
    store: dict[str, Any] = {}
    parsed = ParsedStates(40, least=10, hit_rate=0.2)

    # When each of 400 customers is read twice in a row, two rounds apart (a session's
    # events, batch after batch), and never again
    for n in range(0, 400, 5):
        keys = [f"c{m}" for m in range(n, n + 5)]
        for _ in range(2):
            _reads(parsed, store, keys)
            for key in keys:
                store[key] = {"state": key}
            parsed.written(store, [(key, key.encode()) for key in keys])

    # Then the last 10 written served every read: it keeps 10
    assert parsed.estimate == 0.0
    assert parsed.keep == len(parsed) == 10


def test_one_window_s_swing_over_the_rate_does_not_make_it_keep_more() -> None:
    """A decision every ``least`` reads weighs the last ``limit`` reads or so: in a
    worker the timers' sweeps load customers in bursts, and one window of 5,000 reads
    swung over the rate at 100k customers."""
    # Given a store that keeps the last 1,000 written parsed, and the 3,000 before them
    # where they serve a quarter of the reads; 4,000 customers written in turn
    store: dict[str, Any] = {f"c{n}": {"state": n} for n in range(4000)}
    parsed = ParsedStates(4000, least=1000, hit_rate=0.25)
    parsed.written(store, [(f"c{n}", b"%d" % n) for n in range(4000)])
    assert parsed.window == 1000
    new = iter(range(4000, 100_000))

    def window(older_reads: int) -> int:
        """A window of 1,000 reads: ``older_reads`` of the 3,000 older customers, the
        rest new customers (not written: the older ones stay older). Returns what the
        store keeps after it."""
        for n in range(older_reads):
            parsed.read_unparsed(f"c{n}")
        for _ in range(1000 - older_reads):
            parsed.read_unparsed(f"c{next(new)}")
        parsed.written(store, [])
        return parsed.keep

    # When the older customers take 15 % of the reads, and once 30 %
    kept = [window(share) for share in (150, 150, 150, 300, 150, 150)]

    # Then it keeps 1,000 throughout
    assert kept == [1000] * 6
    assert parsed.estimate == pytest.approx(0.1875)

    # And when they take 30 % of them for long, it keeps 4,000
    kept = [window(300) for _ in range(4)]
    assert kept[-1] == 4000


def test_without_a_least_it_keeps_the_limit_whatever_the_reads() -> None:
    store: dict[str, Any] = {}
    parsed = ParsedStates(40)
    _rounds(parsed, store, customers=400, rounds=50)
    assert len(parsed) == 40
    assert parsed.keep == 40


async def _orders(
    agent: Any, producer: HeldAcks, payloads: Callable[..., dict[str, Any]], rounds: list[list[str]]
) -> None:
    """One order of each customer named, a round for each list."""
    tp = SimpleNamespace(topic=agent.settings.topics.orders, partition=0)
    offset = 0
    for customers in rounds:
        records = []
        for customer in customers:
            payload = payloads("order.placed", customer_id=customer, order_id=f"o-{offset}")
            records.append(
                SimpleNamespace(
                    key=customer.encode(), value=codec.dumps(payload), offset=offset, timestamp=0
                )
            )
            offset += 1
        await _handle(agent, producer, tp, records)


def _parsed_in(agent: Any) -> list[str]:
    return [key for key, value in agent.customers.data.items() if isinstance(value, CustomerState)]


def test_a_worker_whose_customers_outnumber_the_limit_keeps_only_the_least_parsed(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in table is a dict: counted as a memory store here
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)

    async def scenario() -> None:
        # Given a worker that may keep 8 states parsed, at least 2
        producer = HeldAcks()
        settings = Settings(
            clock="replay",
            proposal_lookahead=0,
            writes_in_flight=0,
            states_parsed=8,
            states_parsed_min=2,
        )
        agent = agent_on(producer, settings)

        # When 40 customers order in turn, 4 a round, three times over (each customer's
        # state read again only after the 39 others were written)
        rounds = [[f"cust-{n}" for n in range(first, first + 4)] for first in range(0, 40, 4)]
        await _orders(agent, producer, payload_factory, rounds * 3)

        # Then it keeps 2 states parsed, the rest as their bytes, and says why
        parsed = _parsed_in(agent)
        assert len(parsed) == 2
        assert REGISTRY.get_sample_value("crm_states_kept_parsed") == 2
        assert REGISTRY.get_sample_value("crm_states_parsed_older_hit_ratio") == 0.0
        # And every customer's orders are all counted
        data = agent.customers.data
        assert all(
            CustomerState.from_bytes(data[f"cust-{n}"]).activity.order_count == 3
            for n in range(40)
            if f"cust-{n}" not in parsed
        )

    asyncio.run(scenario())


def test_a_first_start_s_new_customers_count_as_reads_that_nothing_parsed_serves(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Early in a first start every customer read again was written lately: counting
    only those reads, the older states served them all, and the store took the states
    of a whole first pass of customers (a memory peak the allocator keeps)."""
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)

    async def scenario() -> None:
        # Given a worker that may keep 12 states parsed, at least 2, and keeps the 10
        # older ones where they serve a fifth of the reads
        producer = HeldAcks()
        settings = Settings(
            clock="replay",
            proposal_lookahead=0,
            writes_in_flight=0,
            states_parsed=12,
            states_parsed_min=2,
            states_parsed_hit_rate=0.2,
        )
        agent = agent_on(producer, settings)

        # When every round brings five new customers and one from two rounds before
        rounds = [[f"cust-{r}-{n}" for n in range(5)] for r in range(30)]
        for r in range(2, 30):
            rounds[r].append(f"cust-{r - 2}-0")
        await _orders(agent, producer, payload_factory, rounds)

        # Then one read in six was served by an older state: it keeps 2
        assert len(_parsed_in(agent)) == 2
        assert REGISTRY.get_sample_value("crm_states_kept_parsed") == 2
        assert REGISTRY.get_sample_value("crm_states_parsed_older_hit_ratio") == (
            pytest.approx(1 / 6, abs=0.1)
        )

    asyncio.run(scenario())


def test_what_it_holds_parsed_follows_the_share_of_reads_the_older_states_serve():
    """``ParsedStates`` step by step at limit 4, least 2, hit rate 0.5 (a window of 4
    reads): the states let go for their bytes, the estimate at its boundary, and what
    each write reports let go."""
    held = ParsedStates(4, least=2, hit_rate=0.5)
    store: dict[str, Any] = {}

    def write(key: str) -> int:
        store[key] = object()  # a parsed state
        return held.written(store, [(key, key.encode())])

    # Writing six customers holds the last two parsed, the rest as their bytes
    assert [write(k) for k in "abcdef"] == [0, 0, 1, 1, 1, 1]
    assert [k for k, v in store.items() if isinstance(v, bytes)] == ["a", "b", "c", "d"]
    assert len(held) == 2 and held.full

    # A window of reads: two of the two written before the last two (c, d), one of the
    # last two, one of a customer written longer ago (a: beyond the limit, not counted)
    held.read_unparsed("c")
    held.read_unparsed("d")
    assert held.bytes_of("e") == b"e"
    held.read_unparsed("a")

    # The next write decides: half the reads were the older ones', at the hit rate: hold 4
    assert write("g") == 0
    assert held.estimate == 0.5 and held.keep == 4
    assert len(held) == 3 and not held.full and not isinstance(store["e"], bytes)
    assert write("h") == 0
    assert len(held) == 4 and held.full
    # and past the limit the oldest held goes, as bytes
    assert write("k") == 1
    assert len(held) == 4 and isinstance(store["e"], bytes)

    # A window of reads of the last two only: hold 2 again, letting f, g and h go
    for key in "hkhk":
        assert held.bytes_of(key) == key.encode()
    assert write("i") == 3
    assert held.estimate == 0.0 and held.keep == 2 and len(held) == 2
    assert [k for k in "efghki" if isinstance(store[k], bytes)] == ["e", "f", "g", "h"]

    # Another such window decides nothing new: the write lets one go, as any write
    for key in "kiki":
        held.bytes_of(key)
    assert write("j") == 1


def test_a_hit_rate_of_zero_always_holds_the_limit():
    assert ParsedStates(4, least=2, hit_rate=0).least == 4


def test_every_state_kept_parsed_is_a_setting_the_worker_starts_with():
    # CRM_STATES_PARSED=0: "every state parsed" (the store keeps no bytes in their place;
    # the agent tracks nothing, streams.customer_agent._tracks_parsed). The agent builds
    # its ParsedStates from the settings when it starts: that divided by zero.
    held = parsed_states(Settings(clock="replay", states_parsed=0))

    assert held.limit == 0 and not held.full and len(held) == 0
