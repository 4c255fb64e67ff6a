"""A customer's batch done again when something fails in it (``agents.customer_events.isolate``):
every output of the batch is what it would have been without the record that failed,
and a sweep done again one timer at a time keeps its limit and its timers' lateness.

Found by ``./dev mutate agents/customer_events.py`` (lines 641-1305): the fold's tests
checked the actions of an isolated batch, not its segment changes, flags, decision
records, signals, conversions, messaging outcomes or counted facts, and never isolated
a sweep that fired a timer. Unit tier: a rule made to fail by ``monkeypatch`` (a bug,
not bad input), no broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import agents.customer_events as engine
from agents import care
from agents.rules import Rules
from agents.state import CustomerState, named_form
from schemas import codec
from schemas.deadletter import ErrorCode

RULES = Rules.from_mapping({"policy": {"consent": {"marketing": "opt_out"}}})
NOW = 1_709_283_600.0  # 2024-03-01T09:00:00Z: the latencies' clock

#: The outputs of a batch, as lists of records or entries.
OUTPUTS = (
    "actions",
    "changes",
    "flags",
    "verdicts",
    "conversions",
    "outcomes",
    "deadlines",
    "complaints_opened",
    "satisfaction",
    "handling",
    "fired",
)


def _history(record_factory: Callable[..., Any], moment: Callable[..., Any], c: str) -> list:
    """A week of one customer: every output of a batch has an entry of theirs."""

    def r(event_type: str, days: float, **kw: Any) -> Any:
        at = moment(days=days)
        appended = int(at.timestamp() * 1000) + 1_000  # reached the broker a second later
        return record_factory(event_type, customer_id=c, at=at, timestamp_ms=appended, **kw)

    return [
        r("customer.profile_upserted", 0, preferred_channels=["email"], event_id=f"{c}-p"),
        r("order.placed", 0.6, event_id=f"{c}-o1", order_id=f"{c}-o1"),
        r("order.placed", 0.6, event_id=f"{c}-o1", order_id=f"{c}-o1"),  # sent again
        r("outcome.bounced", 0.7, event_id=f"{c}-b", action_id="act-x"),
        r("order.returned", 1, event_id=f"{c}-r1", order_id=f"{c}-o1"),
        r("order.placed", 2, event_id=f"{c}-o2", order_id=f"{c}-o2"),
        r("order.returned", 3, event_id=f"{c}-r2", order_id=f"{c}-o2"),
        r("order.placed", 4, event_id=f"{c}-o3", order_id=f"{c}-o3"),
        r("order.returned", 5, event_id=f"{c}-r3", order_id=f"{c}-o3"),
        r("complaint.opened", 5.1, event_id=f"{c}-c1", complaint_id=f"{c}-c1"),
        r("complaint.closed", 6, event_id=f"{c}-c2", complaint_id=f"{c}-c1", satisfied=False),
        r("order.placed", 7, event_id=f"{c}-o4", order_id=f"{c}-o4"),
    ]


def _entries(result: engine.BatchResult, name: str) -> list[str]:
    """One output of a batch, each entry as text, in a fixed order (a customer's batch
    done again adds its outputs after the others')."""
    return sorted(
        codec.dumps(e.model_dump(mode="json")).decode() if hasattr(e, "model_dump") else repr(e)
        for e in getattr(result, name)
    )


@pytest.mark.parametrize("poisoned", ["A", "B"])
def test_a_record_a_rule_fails_on_leaves_every_output_as_if_it_had_not_been_there(
    poisoned: str, record_factory: Callable[..., Any], moment: Callable[..., Any], monkeypatch
) -> None:
    # Given two customers' weeks in one batch, every output with entries of each, and a
    # rule that fails on one customer's second return (the first or the second customer)
    records = _history(record_factory, moment, "A") + _history(record_factory, moment, "B")
    poison = f"{poisoned}-r2"
    clean = engine.fold_batch(
        [r for r in records if codec.loads(r.value)["event_id"] != poison], {}.get, RULES, NOW
    )
    real = engine.welcome

    def welcome(before: Any, state: CustomerState, event: Any, rules: Rules) -> Any:
        if event.event_id == poison:
            raise ZeroDivisionError("a bug in a rule")
        return real(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", welcome)

    # When the batch is folded
    result = engine.fold_batch(records, {}.get, RULES, NOW)

    # Then that record alone is a dead letter, and every output, count and state is the
    # batch's without it (but for the input offset the state keeps)
    assert [(d.error_code, d.error) for d in result.dead_letters] == [
        (ErrorCode.PROCESSING_FAILED, "ZeroDivisionError while applying order.returned")
    ]
    for name in OUTPUTS:
        assert getattr(clean, name), f"the history has no {name}: the test would not see them"
        assert _entries(result, name) == _entries(clean, name), name
    assert sorted(map(repr, result.signals)) == sorted(map(repr, clean.signals))
    assert len(result.signal_seqs) == len(result.signals)
    assert result.events_in == clean.events_in
    assert result.duplicates == clean.duplicates == {"crm.orders": 2}
    assert clean.appended_at, "the records carry no broker time: the test would not see it"
    assert sorted(result.appended_at) == sorted(clean.appended_at)
    for customer in ("A", "B"):
        got = named_form(result.states[customer][1].to_dict())
        want = named_form(clean.states[customer][1].to_dict())
        got["intake"].pop("input_offsets")
        want["intake"].pop("input_offsets")
        assert got == want, customer


def test_two_records_of_one_customer_that_fail_in_one_batch_are_each_dead_lettered_once(
    record_factory: Callable[..., Any], moment: Callable[..., Any], monkeypatch
) -> None:
    # Given a rule that fails on two of a customer's returns in one batch
    records = _history(record_factory, moment, "A") + _history(record_factory, moment, "B")
    poison = {"A-r1", "A-r3"}
    real = engine.welcome

    def welcome(before: Any, state: CustomerState, event: Any, rules: Rules) -> Any:
        if event.event_id in poison:
            raise ZeroDivisionError("a bug in a rule")
        return real(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", welcome)

    # When the batch is folded
    result = engine.fold_batch(records, {}.get, RULES, NOW)

    # Then each of them is on the dead-letter topic once, and the rest is counted once
    failed = [(d.error_code, d.source_offset) for d in result.dead_letters]
    offsets = [r.meta.offset for r in records if codec.loads(r.value)["event_id"] in poison]
    assert sorted(failed) == [(ErrorCode.PROCESSING_FAILED, offset) for offset in offsets]
    assert result.events_in[("crm.orders", "order.returned")] == 4


def _timer(due: float, key: str) -> list[Any]:
    return [due, care.FOLLOW_UP, key, "evt-1", {}]


@pytest.mark.parametrize("wall", [None, 5_000.0])
def test_a_sweep_done_again_drops_the_timer_that_fails_and_keeps_its_limit(
    wall: float | None, monkeypatch, caplog
) -> None:
    # Given a customer with four follow-up timers due, the second failing when it fires
    state = CustomerState("cust-1")
    state.timers = [_timer(1_000.0, "a"), _timer(2_000.0, "bad"), _timer(3_000.0, "c")]
    state.timers.append(_timer(3_500.0, "d"))
    stored = state.to_dict()
    fired: list[str] = []

    def on_timer(state: CustomerState, timer: Any, *args: Any, **kwargs: Any) -> list:
        if timer.key == "bad":
            raise KeyError("a bug in a timer rule")
        fired.append(timer.key)
        return []

    monkeypatch.setattr(care, "on_timer", on_timer)

    # When a sweep up to 4,000 s fires at most three of them
    result = engine.BatchResult()
    now = engine.Now(wall)
    engine.fire_timers(
        result, [("cust-1", 0)], {"cust-1": stored}.get, lambda _: (4_000.0, False), RULES, now, 3
    )

    # Then the failing one is dropped and counted, the first and third fired once each
    # (again after the first pass), the fourth waits: the failed one used up the limit
    assert result.timers_failed == 1
    assert fired == ["a", "a", "c"]
    _, after = result.states["cust-1"]
    assert [row[2] for row in after.timers] == ["d"]
    # and each fired with its lateness on the sweep's clock (the watermark on the replay
    # clock, the wall on the live one)
    clock = 4_000.0 if wall is None else wall
    assert result.fired == [(care.FOLLOW_UP, clock - 1_000.0), (care.FOLLOW_UP, clock - 3_000.0)]
    # and the timer dropped is logged, once, by its kind
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [f"a {care.FOLLOW_UP} timer failed to fire; dropped"]
