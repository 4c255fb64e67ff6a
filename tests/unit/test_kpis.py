"""The facts behind the handbooks' KPIs (domain.md §8) that the pure fold returns:
complaint satisfaction answers and handling times, the buyer and net-spend population
keys, and that a batch done again after a failure counts each of them once.

Definitions and the PromQL that turns these into rates: deploy/METRICS.md, "KPIs".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from agents.complaints import on_complaint_event
from agents.rules import Rules
from agents.state import CustomerState
from schemas.deadletter import ErrorCode

RULES = Rules()
T0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)
HOUR = 3600.0


@pytest.fixture
def complaint(event_factory: Callable[..., Any]) -> Callable[..., Any]:
    """``complaint(kind, hours=0, complaint_id="cmp-1", **fields) -> event`` at T0 + hours."""

    def make(kind: str, hours: float = 0, complaint_id: str = "cmp-1", **fields: Any) -> Any:
        at = T0 + dt.timedelta(hours=hours)
        return event_factory(f"complaint.{kind}", complaint_id=complaint_id, at=at, **fields)

    return make


@pytest.fixture
def state(customer_state_factory: Callable[..., CustomerState]) -> CustomerState:
    return customer_state_factory("cust-1")


def _run(state: CustomerState, *events: Any) -> tuple[list[Any], list[Any]]:
    """Apply complaint events in order; all (satisfaction, handling) they reported."""
    satisfaction, handling = [], []
    for event in events:
        out = on_complaint_event(state, event, RULES)
        satisfaction += out.satisfaction
        handling += out.handling
    return satisfaction, handling


# -- satisfaction -------------------------------------------------------------------------


def test_a_closing_that_says_satisfied_or_not_is_one_answer_of_its_type(state, complaint):
    satisfaction, _ = _run(
        state,
        complaint("opened", complaint_type="product"),
        complaint("resolved", hours=5),
        complaint("closed", hours=30, satisfied=False),
        complaint("opened", complaint_id="cmp-2", complaint_type="logistics"),
        complaint("closed", hours=2, complaint_id="cmp-2", satisfied=True),
    )

    assert satisfaction == [("product", False), ("logistics", True)]


def test_a_closing_without_an_answer_or_a_repeated_closing_is_no_answer(state, complaint):
    satisfaction, _ = _run(
        state,
        complaint("opened"),
        complaint("closed", hours=3, satisfied=None),
        complaint("closed", hours=4, satisfied=True),  # a repeat of the closing: ignored
    )

    assert satisfaction == []


def test_a_reopened_complaint_closed_again_is_asked_again(state, complaint):
    satisfaction, _ = _run(
        state,
        complaint("opened"),
        complaint("closed", hours=3, satisfied=False),
        complaint("reopened", hours=4),
        complaint("closed", hours=9, satisfied=True),
    )

    assert satisfaction == [("logistics", False), ("logistics", True)]


# -- handling time ------------------------------------------------------------------------


def test_handling_time_runs_on_event_time_from_opening_to_resolution(state, complaint):
    _, handling = _run(
        state,
        complaint("opened"),
        complaint("acknowledged", hours=1),
        complaint("resolved", hours=26),
        complaint("closed", hours=50, satisfied=True),  # after the resolution: not again
    )

    assert handling == [("logistics", 26 * HOUR)]


def test_a_complaint_closed_without_a_resolution_is_handled_at_its_closing(state, complaint):
    _, handling = _run(state, complaint("opened"), complaint("closed", hours=7, satisfied=True))

    assert handling == [("logistics", 7 * HOUR)]


def test_a_reopened_round_counts_from_the_reopening(state, complaint):
    _, handling = _run(
        state,
        complaint("opened"),
        complaint("resolved", hours=2),
        complaint("reopened", hours=10),
        complaint("resolved", hours=13),
    )

    assert handling == [("logistics", 2 * HOUR), ("logistics", 3 * HOUR)]


def test_a_resolution_before_its_opening_arrived_is_timed_when_the_opening_comes(state, complaint):
    _, handling = _run(
        state,
        complaint("resolved", hours=6),
        complaint("opened", hours=0, complaint_type="payment"),
    )

    assert handling == [("payment", 6 * HOUR)]


def test_a_repeated_resolution_is_not_timed_twice(state, complaint):
    _, handling = _run(
        state, complaint("opened"), complaint("resolved", hours=2), complaint("resolved", hours=3)
    )

    assert handling == [("logistics", 2 * HOUR)]


# -- buyer populations ----------------------------------------------------------------------


def _buyer_keys(keys: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: n for k, n in keys.items() if k[0] in ("buyers", "net_spend_cents")}


def test_buyer_keys_say_once_or_repeat_and_carry_the_net_spend_in_cents(engine, event_factory):
    state = CustomerState(customer_id="cust-1")
    assert _buyer_keys(engine.gauge_keys(state)) == {}

    def apply(event_type: str, hours: float, **fields: Any) -> None:
        at = T0 + dt.timedelta(hours=hours)
        engine.decide(state, event_factory(event_type, at=at, **fields), RULES)

    apply("order.placed", 0, order_id="o1", amount=100.10)
    assert _buyer_keys(engine.gauge_keys(state)) == {
        ("buyers", "once"): 1,
        ("net_spend_cents", "once"): 10010,
    }

    apply("order.placed", 1, order_id="o2", amount=50.0)
    apply("order.cancelled", 2, order_id="o2", amount=50.0)
    apply("order.returned", 30, order_id="o1", amount=100.10, refund_amount=20.05)
    assert _buyer_keys(engine.gauge_keys(state)) == {
        ("buyers", "repeat"): 1,
        ("net_spend_cents", "repeat"): 8005,
    }


# -- a batch done again after a failure counts each fact once --------------------------------


def test_kpi_facts_of_a_batch_done_again_after_a_failure_are_counted_once(
    engine, record_factory, monkeypatch
):
    # Given a customer's complaint closed as satisfied, then a record a rule fails on,
    # all in one batch (the batch is done again record by record without the bad one)
    real_welcome = engine.welcome

    def buggy_welcome(before, state, event, rules):
        if getattr(event, "order_id", None) == "poison":
            raise ZeroDivisionError("bug")
        return real_welcome(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", buggy_welcome)
    at = T0
    records = [
        record_factory("complaint.opened", customer_id="c", at=at),
        record_factory("complaint.closed", customer_id="c", at=at + dt.timedelta(hours=5)),
        record_factory(
            "order.placed", customer_id="c", order_id="poison", at=at + dt.timedelta(hours=6)
        ),
    ]

    # When the batch is folded
    result = engine.fold_batch(records, lambda _: None, RULES)

    # Then the bad record is a dead letter, and the answer and the handling time are
    # counted once each
    assert [d.error_code for d in result.dead_letters] == [ErrorCode.PROCESSING_FAILED]
    assert result.satisfaction == [("logistics", True)]
    assert result.handling == [("logistics", 5 * HOUR)]


def test_complaints_opened_and_deadlines_of_a_batch_done_again_are_counted_once(
    engine, record_factory, monkeypatch
):
    # Given a complaint opened and acknowledged in time, then a record a rule fails on,
    # in one batch
    real_welcome = engine.welcome

    def buggy_welcome(before, state, event, rules):
        if getattr(event, "order_id", None) == "poison":
            raise ZeroDivisionError("bug")
        return real_welcome(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", buggy_welcome)
    records = [
        record_factory("complaint.opened", customer_id="c", at=T0),
        record_factory("complaint.acknowledged", customer_id="c", at=T0 + dt.timedelta(hours=1)),
        record_factory(
            "order.placed", customer_id="c", order_id="poison", at=T0 + dt.timedelta(hours=2)
        ),
    ]

    # When the batch is folded (and done again without the bad record)
    result = engine.fold_batch(records, lambda _: None, RULES)

    # Then crm_complaints_opened_total and crm_sla_met_total get one each, not two
    assert result.complaints_opened == ["logistics"]
    assert result.deadlines == [("logistics", "first_response", "met")]


# -- the shell turns them into metrics ------------------------------------------------------


def test_the_shell_observes_handling_times_and_leaves_the_batch_duration_its_own():
    # (The first version reused the batch's duration variable for the handling times:
    # crm_batch_duration_seconds observed days.)
    from types import SimpleNamespace

    from prometheus_client import REGISTRY

    from agents.customer_events import BatchResult
    from streams.customer_agent import CustomerAgent

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    result = BatchResult(handling=[("logistics", 2 * 86400.0)], satisfaction=[("product", False)])
    shell = SimpleNamespace(inputs=SimpleNamespace(merges={}))
    before = (
        value("crm_batch_duration_seconds_sum"),
        value("crm_complaint_handling_seconds_sum", complaint_type="logistics"),
        value("crm_complaint_satisfaction_total", complaint_type="product", satisfied="no"),
    )

    CustomerAgent._observe(shell, result, 1, 0.25)  # type: ignore[arg-type]

    after = (
        value("crm_batch_duration_seconds_sum"),
        value("crm_complaint_handling_seconds_sum", complaint_type="logistics"),
        value("crm_complaint_satisfaction_total", complaint_type="product", satisfied="no"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [0.25, 2 * 86400.0, 1.0]


# -- the population gauges move by what each batch changed -----------------------------------


def test_gauge_moves_over_batches_add_up_to_a_recount_of_every_state(engine, record_factory):
    # Given a history that moves every population: purchases (once, then repeat), a
    # cancellation (net spend), a complaint opened and closed, a bad review, and views
    # that move nothing; three customers interleaved, cut into batches of three
    from collections import Counter

    def at(hours: float) -> dt.datetime:
        return T0 + dt.timedelta(hours=hours)

    steps: list[tuple[str, float, dict[str, Any]]] = [
        ("browse.view", 0, {}),
        ("order.placed", 1, {"order_id": "{c}1", "amount": 80.0}),
        ("complaint.opened", 2, {"complaint_id": "k{c}"}),
        ("order.placed", 3, {"order_id": "{c}2", "amount": 20.0}),
        ("order.cancelled", 4, {"order_id": "{c}2", "amount": 20.0}),
        ("review.posted", 5, {"rating": 1}),
        ("complaint.closed", 30, {"complaint_id": "k{c}"}),
        ("browse.view", 31, {}),
    ]
    records = [
        record_factory(
            kind,
            customer_id=c,
            at=at(hours + n),
            **{k: v.format(c=c) if isinstance(v, str) else v for k, v in fields.items()},
        )
        for kind, hours, fields in steps
        for n, c in enumerate(("a", "b", "c"))
    ]
    table: dict[str, Any] = {}
    gauges: Counter[tuple[str, str]] = Counter()
    batches = moved = 0

    # When each batch moves the gauges by gauge_moves (as the worker does)
    for i in range(0, len(records), 3):
        result = engine.fold_batch(records[i : i + 3], table.get, RULES)
        moves = engine.gauge_moves(result.baselines, result.states)
        batches += 1
        moved += any(moves.values())
        gauges.update(moves)
        for customer_id in result.changed:
            table[customer_id] = result.states[customer_id][1]

    # Then they equal a recount of every state from scratch, and batches of views
    # moved nothing
    recount: Counter[tuple[str, str]] = Counter()
    for state in table.values():
        recount.update(engine.gauge_keys(state))
    assert +gauges == recount
    assert recount[("buyers", "repeat")] == 3
    assert 0 < moved < batches
