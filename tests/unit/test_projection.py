"""The Redis profile projection's pure parts (streams.projection): the hash of one
customer, the table values it reads, and the write-behind's CPU budget and back-off.
tests/integration/test_projection.py runs the write-behind against a real Redis."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import ModuleType

import pytest
from pydantic import BaseModel

from agents.rules import Rules
from agents.state import CustomerState
from streams.projection import (
    MOST_BACKOFF,
    as_state,
    backoff_after,
    profile_fields,
    rest_after,
)
from tests.unit.conftest import T0

Make = Callable[..., BaseModel]


def test_a_customer_who_never_bought_has_no_stage_since_and_no_recency(
    engine: ModuleType, event_factory: Make
) -> None:
    rules = Rules()
    state = CustomerState(customer_id="c-1")
    engine.decide(state, event_factory("browse.view", customer_id="c-1"), rules)

    fields = profile_fields(state, rules)

    assert fields is not None
    assert fields["stage"] == "potential"
    assert fields["stage_since"] == ""
    assert fields["recency_days"] == ""
    assert fields["as_of"] == fields["evaluated_at"] == "2024-03-01T09:00:00Z"


def test_a_profile_is_evaluated_as_of_the_latest_event_even_one_that_changed_nothing(
    engine: ModuleType, event_factory: Make
) -> None:
    """A view three days after an order does not assess the customer again; the profile
    is still as of the view: the stage and RFM hold at that time."""
    rules = Rules()
    state = CustomerState(customer_id="c-1")
    placed, viewed = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=3)
    engine.decide(state, event_factory("order.placed", customer_id="c-1", at=placed), rules)
    engine.decide(state, event_factory("browse.view", customer_id="c-1", at=viewed), rules)
    assert state.assessment.assessed_at == placed.timestamp()

    fields = profile_fields(state, rules)

    assert fields is not None
    assert fields["as_of"] == fields["evaluated_at"] == "2024-03-04T09:00:00Z"
    assert fields["stage_since"] == "2024-03-01T10:00:00Z"
    assert fields["recency_days"] == "3"


def test_an_erased_customer_or_one_without_events_has_no_profile(
    engine: ModuleType, event_factory: Make
) -> None:
    rules = Rules()
    assert profile_fields(CustomerState(customer_id="c-1"), rules) is None
    state = CustomerState(customer_id="c-1")
    engine.decide(state, event_factory("order.placed", customer_id="c-1"), rules)
    engine.decide(state, event_factory("customer.erasure_requested", customer_id="c-1"), rules)

    assert profile_fields(state, rules) is None


def test_a_table_value_is_read_as_a_state_whatever_form_it_is_in(
    engine: ModuleType, event_factory: Make
) -> None:
    state = CustomerState(customer_id="c-1")
    engine.decide(state, event_factory("order.placed", customer_id="c-1"), Rules())

    assert as_state(None) is None
    assert as_state(state) is state
    for stored in (state.to_bytes(), state.to_dict()):
        read = as_state(stored)
        assert isinstance(read, CustomerState)
        assert read.to_dict() == state.to_dict()


@pytest.mark.parametrize("share", [0.04, 0.5])
def test_while_customers_wait_the_write_behind_takes_its_share_of_the_loop(share: float) -> None:
    busy = 0.012

    rest = rest_after(busy, share, interval=0.25, more=True)

    assert busy / (busy + rest) == pytest.approx(share)
    assert rest_after(busy, share, interval=0.25, more=False) == 0.25


def test_failed_tries_back_off_twice_as_long_each_time_up_to_a_limit() -> None:
    rests = [0.25]
    for _ in range(8):
        rests.append(backoff_after(rests[-1]))

    assert rests[:7] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, MOST_BACKOFF]
    assert rests[-1] == MOST_BACKOFF == 10.0
