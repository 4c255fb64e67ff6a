"""An event that causes nothing decides nothing, without building a decision (issue 14).

Most storefront events are browsing events that send nothing, raise nothing and change
no segment. :func:`agents.customer_events.decide` built a :class:`Decision` of eleven
empty lists for each of them and the fold threw it away: ~0.7 us of a view's ~6 us,
in-process. Such events now return the shared :data:`~agents.customer_events.NOTHING`,
whose lists compare equal to ``[]`` and refuse to grow. Unit tier: the pure fold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import fields

import pytest
from pydantic import BaseModel

from agents import customer_events
from agents.customer_events import NOTHING, BatchResult, Decision, decide
from agents.rules import Rules
from agents.state import CustomerState
from tests.unit.conftest import CUSTOMER, T0


def test_events_that_cause_nothing_share_one_decision(
    event_factory: Callable[..., BaseModel],
) -> None:
    state = CustomerState(CUSTOMER)
    rules = Rules()
    decide(state, event_factory("browse.view", at=T0), rules)  # the first assessment
    first = decide(state, event_factory("browse.view", at=T0 + dt.timedelta(minutes=1)), rules)
    second = decide(state, event_factory("browse.search", at=T0 + dt.timedelta(minutes=2)), rules)

    assert first is second  # one shared decision, not one built per event
    assert first.actions == [] and first.changes == [] and first.fired == []


@pytest.mark.parametrize("name", [f.name for f in fields(Decision)])
def test_the_shared_decision_refuses_to_grow(name: str) -> None:
    shared = getattr(NOTHING, name)

    with pytest.raises(TypeError, match="NOTHING is shared"):
        shared.append(1)
    with pytest.raises(TypeError, match="NOTHING is shared"):
        shared.extend([1])
    with pytest.raises(TypeError, match="NOTHING is shared"):
        shared += [1]
    assert shared == []


def test_an_event_that_causes_something_gets_its_own_decision(
    event_factory: Callable[..., BaseModel],
) -> None:
    state = CustomerState(CUSTOMER)
    rules = Rules()
    decide(state, event_factory("browse.view", at=T0), rules)

    placed = decide(state, event_factory("order.placed", at=T0 + dt.timedelta(hours=1)), rules)
    nothing = decide(state, event_factory("browse.view", at=T0 + dt.timedelta(hours=2)), rules)

    assert placed is not NOTHING
    assert [v.action_type.value for v in placed.verdicts] == ["welcome"]
    assert ("stage", "new") in [(c.dimension.value, c.after) for c in placed.changes]
    assert nothing is NOTHING and NOTHING.actions == [] and NOTHING.changes == []


def test_a_due_timer_gets_its_own_decision(event_factory: Callable[..., BaseModel]) -> None:
    state = CustomerState(CUSTOMER)
    rules = Rules()
    decide(state, event_factory("browse.view", at=T0), rules)  # sets the abandonment timer

    later = decide(state, event_factory("browse.search", at=T0 + dt.timedelta(days=3)), rules)

    assert later is not NOTHING
    assert [kind for kind, _ in later.fired] == ["care.abandoned"]
    assert NOTHING.fired == []


def test_collecting_nothing_adds_nothing() -> None:
    result = BatchResult()

    customer_events._collect(result, NOTHING, T0.timestamp(), CUSTOMER)

    assert result == BatchResult()
