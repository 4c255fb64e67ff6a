"""An order placed is assessed once: the segments' assessment serves the tier nudge.

``decide`` re-assesses a customer's stage, RFM group and grade after an order
(``agents.segments.reassess``), and the tier nudge (``agents.care._nudge``) then asked
for the same RFM view again, as of the same instant and on the same state: 16 % of an
order's cost, an order placed being 13.5 % of the simulator's events at ~200 µs each
(bench/README.md). The nudge now takes the segments' view when it is of its own
instant, and assesses on its own otherwise (a late order, the model off, a
grade-only re-assessment).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from agents import care, model
from agents.customer_events import RawRecord, fold_batch
from agents.rules import Rules
from schemas import codec
from schemas.deadletter import RecordMeta
from streams.settings import Topics
from streams.tools.simulator import MIXES, Simulator

RULES = Rules()


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every call of ``agents.model.assess``, by the instant asked for."""
    calls: list[float] = []
    real = model.assess

    def counted(state: Any, at: float, rules: Rules) -> Any:
        calls.append(at)
        return real(state, at, rules)

    for module in ("agents.model", "agents.care", "agents.segments", "agents.customer_events"):
        monkeypatch.setattr(f"{module}.assess", counted, raising=False)
    return calls


def test_an_order_placed_is_assessed_once(
    engine, customer_state_factory, order_factory, moment, monkeypatch
):
    # Given a customer with two orders, so the tier nudge looks at the next rung
    state = customer_state_factory()
    for days in (0, 20):
        engine.decide(state, order_factory(at=moment(days=days), amount=120), RULES)
    calls = _counting(monkeypatch)

    # When a third order is placed, in order
    order = order_factory(at=moment(days=200), amount=120)
    engine.decide(state, order, RULES)

    # Then its RFM group and grade are worked out once as of its time, for the segments
    # and the nudge (the timers that fall due before it re-assess at their own times)
    assert calls.count(order.at) == 1


def test_an_order_read_after_a_later_event_is_assessed_at_both_instants(
    engine, customer_state_factory, order_factory, event_factory, moment, monkeypatch
):
    # Given a customer whose clock (a later view) is past the order about to arrive, and
    # whose last purchase is before it (so the nudge still looks)
    state = customer_state_factory()
    for days in (0, 20):
        engine.decide(state, order_factory(at=moment(days=days), amount=120), RULES)
    engine.decide(state, event_factory("browse.view", at=moment(days=200)), RULES)
    calls = _counting(monkeypatch)

    # When an order placed earlier is read now
    order = order_factory(at=moment(days=100), amount=120)
    engine.decide(state, order, RULES)

    # Then the segments assess at the customer's clock and the nudge at the order's time
    assert calls.count(moment(days=200).timestamp()) == 1
    assert calls.count(order.at) == 1


def _fold_simulated(mix: str, events: int) -> tuple[dict[str, list[bytes]], dict[str, bytes]]:
    """Every output (as JSON) and every final state (its stored form) of a simulated
    history, folded in batches of 2,000."""
    topics = Topics().by_family
    simulator = Simulator(seed=5, customers=400, malformed_rate=0.0, retry_rate=0.0, **MIXES[mix])
    table: dict[str, Any] = {}
    outputs: dict[str, list[bytes]] = defaultdict(list)
    batch: list[RawRecord] = []
    for n, record in enumerate(simulator, 1):
        batch.append(
            RawRecord(
                record.family,
                record.key,
                record.value,
                RecordMeta(topics[record.family], 0, n, None),
            )
        )
        if len(batch) == 2000 or n == events:
            result = fold_batch(batch, table.get, RULES)
            for customer_id in result.changed:
                table[customer_id] = result.states[customer_id][1]
            for name in ("actions", "changes", "verdicts", "flags", "conversions"):
                outputs[name] += [r.model_dump_json().encode() for r in getattr(result, name)]
            batch = []
        if n == events:
            break
    return outputs, {c: codec.dumps(s.to_dict()) for c, s in table.items()}


def test_the_nudge_decides_the_same_with_the_segments_view_as_with_its_own(monkeypatch):
    # Given a simulated history with many orders, some of them late
    with_theirs = _fold_simulated("simulator", 24_000)

    # When the nudge always assesses on its own, as before
    monkeypatch.setattr(
        care, "_rfm_view", lambda state, at, rules, assessed: model.assess(state, at, rules)
    )
    on_its_own = _fold_simulated("simulator", 24_000)

    # Then every output and every state is the same
    assert with_theirs[0].keys() == on_its_own[0].keys()
    for name, records in with_theirs[0].items():
        assert records == on_its_own[0][name], name
    assert with_theirs[1] == on_its_own[1]
    assert len(with_theirs[0]["actions"]) > 1000
    assert any(b'"tier_nudge"' in a for a in with_theirs[0]["actions"])
