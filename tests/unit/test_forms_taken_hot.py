"""A customer's stored form is taken as its run of records ends (issue 14).

A round folds its records customer by customer (``by_customer``), then stores every
changed state. At the end of a round of 13k records for 5k customers the states are out
of the CPU's caches, and serialising one there cost ~19 µs against ~13 µs right after its
fold (bench/README.md). So the fold takes each customer's stored form as the customer's
run of records ends (``customer_events.take_form``), and after a customer's timers fire.

What must hold: a form is only kept while it is what the state would serialise to now.
A later slice of the round, a timer, or a record done again (``isolate``) changes the
state, and drops the form taken before. ``stored_forms`` still gives every changed
customer's form, and each is the state's.

Unit tier: no broker, no Redis.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from agents import customer_events
from agents.customer_events import (
    BatchResult,
    Owned,
    RawRecord,
    admitted,
    by_customer,
    fire_timers,
    fold_items,
    stored_forms,
)
from agents.rules import Rules
from schemas import codec
from schemas.deadletter import RecordMeta
from streams.settings import Topics
from streams.tools.simulator import MIXES, Simulator

RULES = Rules()
#: The serialiser, as it is before a test logs its calls.
DUMPS = codec.dumps_str_keys
FAR_FUTURE = 4_000_000_000.0


def _records(n: int, customers: int, seed: int, mix: str) -> list[RawRecord]:
    topics = Topics().by_family
    simulator = Simulator(
        seed=seed, customers=customers, malformed_rate=0.0, retry_rate=0.0, **MIXES[mix]
    )
    return [
        RawRecord(r.family, r.key, r.value, RecordMeta(topics[r.family], 0, offset, None))
        for offset, r in enumerate(simulator.take(n))
    ]


def _fresh(result: BatchResult) -> dict[str, bytes]:
    return {c: DUMPS(result.states[c][1].to_dict()) for c in sorted(result.changed)}


def test_each_customers_form_is_taken_as_its_run_of_records_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order of the fold's work: a customer's records decided, then its form taken,
    then the next customer's records; nothing is left for the end of the round."""
    log: list[tuple[str, str]] = []
    decide = customer_events.decide
    dumps = codec.dumps_str_keys

    def logged_decide(state: Any, event: Any, rules: Any, now: Any = None) -> Any:
        log.append(("decide", state.customer_id))
        return decide(state, event, rules, now or customer_events.REPLAY)

    def logged_dumps(obj: Any) -> bytes:
        log.append(("form", obj["customer_id"]))
        return dumps(obj)

    monkeypatch.setattr(customer_events, "decide", logged_decide)
    monkeypatch.setattr(codec, "dumps_str_keys", logged_dumps)
    records = _records(300, 20, seed=3, mix="storefront")
    result = fold_items(by_customer(admitted(records)), {}.get, RULES)
    runs = [entry for i, entry in enumerate(log) if i == 0 or entry != log[i - 1]]
    assert runs == [entry for c in sorted(result.changed) for entry in (("decide", c), ("form", c))]
    assert result.forms == _fresh(result)
    log.clear()
    assert stored_forms(result, {}.get, RULES) == _fresh(result)
    assert log == [], "every form was taken during the fold"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_form_taken_then_changed_again_is_taken_again(seed: int) -> None:
    """Random slices of one round, each folded customer by customer (a customer is in
    several of them), then half the customers' timers: each stored form is the state's as
    the round ends."""
    rng = random.Random(seed)
    records = _records(1500, 40, seed=seed, mix="simulator")
    assert len(records) == 1500
    table: dict[str, Any] = {}
    for start in range(0, len(records), 500):  # three rounds, the states folded in place
        chunk = records[start : start + 500]
        result = BatchResult()
        cuts = sorted(rng.sample(range(1, len(chunk)), 3))
        for lo, hi in zip([0, *cuts], [*cuts, len(chunk)], strict=True):
            fold_items(by_customer(admitted(chunk[lo:hi])), table.get, RULES, result=result)
        customers = sorted({*result.changed, *table})
        due = [(c, 0) for c in rng.sample(customers, len(customers) // 2)]  # the rest: not
        fire_timers(result, due, table.get, lambda _: (FAR_FUTURE, False), RULES)
        forms = stored_forms(result, table.get, RULES)
        assert forms == _fresh(result)
        for customer in result.changed:
            table[customer] = Owned(result.states[customer][1], forms[customer])


def test_a_record_done_again_drops_the_form_taken_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rule fails on one customer's record in a later slice: its batch is done again
    from the state loaded (``isolate``); the form stored is the state done again."""
    records = _records(400, 10, seed=9, mix="simulator")
    victim = records[350].key.decode()
    failing = {records[350].value}
    apply = customer_events._apply

    def failing_apply(result: Any, state: Any, item: Any, rules: Any, now: Any) -> None:
        if item.value in failing:
            raise RuntimeError("a bug in a rule")
        apply(result, state, item, rules, now)

    monkeypatch.setattr(customer_events, "_apply", failing_apply)
    result = BatchResult()
    fold_items(by_customer(admitted(records[:300])), {}.get, RULES, result=result)
    assert victim in result.forms
    fold_items(by_customer(admitted(records[300:])), {}.get, RULES, result=result)
    assert victim in result.isolated
    assert stored_forms(result, {}.get, RULES) == _fresh(result)


def test_a_sweep_leaves_a_folded_customer_with_nothing_due_alone() -> None:
    """A customer's timers due before one of its events fire as that event is folded
    (``decide``), so the round's sweep often finds nothing left due for a customer it
    folded: 43 % of the sweeps of a simulator-mix drain (bench/README.md). Such a
    customer keeps the form the fold took (not serialised again) and gets no sweep step;
    one the round did not fold is still marked changed, so its timers are indexed again."""
    records = _records(560, 60, seed=5, mix="simulator")
    table: dict[str, Any] = {}
    first = fold_items(by_customer(admitted(records[:500])), table.get, RULES)
    for customer in first.changed:
        table[customer] = first.states[customer][1]
    result = fold_items(by_customer(admitted(records[500:])), table.get, RULES)
    folded = sorted(result.changed)
    idle = sorted(table.keys() - result.changed)
    assert folded and idle
    taken = dict(result.forms)

    # Nothing is due before time 0
    fire_timers(result, [(c, 0) for c in folded + idle], table.get, lambda _: (0.0, False), RULES)

    for customer in folded:
        assert result.forms[customer] is taken[customer], customer
        assert not any(type(step) is customer_events.Step for step in result.steps[customer])
    assert set(idle) <= result.changed
    assert stored_forms(result, table.get, RULES) == _fresh(result)
