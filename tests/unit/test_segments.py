"""Segment changes through ``decide``: one record per stage, RFM group or grade transition.

``decide(state, event, rules)`` folds the event and re-assesses the customer
on its own clock (the latest event time seen); time-driven stages (dormant,
churned) are caught up when the next event arrives, dated the day reached.
"""

from __future__ import annotations

import datetime as dt

import pytest

from schemas.changes import Dimension, change_id_for
from streams.rules import Rules

#: Care triggers and timed stage changes off, marketing consent opt-out (the
#: contact policy has its own tests): these tests are about other rules.
RULES = Rules.from_mapping(
    {
        "care": {"enabled": False, "timed_stage_changes": False},
        "policy": {"consent": {"marketing": "opt_out"}},
    }
)


@pytest.fixture
def decide_changes(engine):
    """``decide_changes(state, event, rules=RULES) -> [(dimension, before, after), ...]``."""

    def run(state, event, rules=RULES):
        return [
            (c.dimension.value, c.before, c.after)
            for c in engine.decide(state, event, rules).changes
        ]

    return run


@pytest.fixture
def midnight(moment):
    def make(days: int) -> dt.datetime:
        return moment(days=days).replace(hour=0, minute=0, second=0, microsecond=0)

    return make


@pytest.fixture
def active_customer(engine, customer_state_factory, order_factory, moment):
    """A customer who bought on day 0 and day 1 (new -> active), all changes consumed."""

    def make():
        state = customer_state_factory()
        engine.decide(state, order_factory(at=moment(days=0), event_id="evt-o0"), RULES)
        engine.decide(state, order_factory(at=moment(days=1), event_id="evt-o1"), RULES)
        assert state.stage == "active"
        return state

    return make


def test_first_purchase_emits_stage_rfm_group_and_grade(
    engine, customer_state_factory, order_factory, moment
):
    # Given a customer who has never bought
    state = customer_state_factory()
    order = order_factory(at=moment(), event_id="evt-first")

    # When their first order is decided
    changes = engine.decide(state, order, RULES).changes

    # Then the stage moves from potential and the first group and grade appear (before=None)
    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.STAGE, "potential", "new"),
        (Dimension.RFM_GROUP, None, "other"),
        (Dimension.GRADE, None, "potential"),
    ]
    assert all(c.trigger_event_id == "evt-first" for c in changes)
    assert all(c.customer_id == "cust-0001" for c in changes)
    assert [c.change_id for c in changes] == [
        change_id_for("cust-0001", "stage", "evt-first", "new"),
        change_id_for("cust-0001", "rfm_group", "evt-first", "other"),
        change_id_for("cust-0001", "grade", "evt-first", "potential"),
    ]
    assert changes[0].reason == "first purchase 0 days ago (new for 30 days)"
    assert changes[2].reason == "score 69.4 >= 50"
    assert changes[1].occurred_at == moment()
    assert changes[2].occurred_at == moment()
    assert (state.stage, state.rfm_group, state.grade) == ("new", "other", "potential")


def test_first_purchase_stage_change_happens_at_the_event_time(
    engine, customer_state_factory, order_factory, moment
):
    state = customer_state_factory()

    changes = engine.decide(state, order_factory(at=moment()), RULES).changes

    assert changes[0].after == "new"
    assert changes[0].occurred_at == moment()  # actual: 2024-03-01T00:00Z, the event is 09:00Z


def test_same_input_gives_the_same_change_ids(
    engine, customer_state_factory, order_factory, moment
):
    # Given the same first order decided twice on fresh states (a replay)
    def ids():
        state = customer_state_factory()
        order = order_factory(at=moment(), event_id="evt-first")
        return [c.change_id for c in engine.decide(state, order, RULES).changes]

    first, again = ids(), ids()

    # Then the change ids repeat, and they are distinct per dimension
    assert first == again
    assert len(set(first)) == 3


def test_an_unchanged_assessment_emits_nothing(
    decide_changes, customer_state_factory, order_factory, event_factory, moment
):
    # Given a first order already decided
    state = customer_state_factory()
    assert len(decide_changes(state, order_factory(at=moment()))) == 3

    # When a browse event arrives later the same day
    changes = decide_changes(state, event_factory("browse.view", at=moment(seconds=3600)))

    # Then nothing changed, so nothing is published
    assert changes == []


def test_each_transition_is_emitted_once(
    decide_changes, customer_state_factory, order_factory, moment
):
    state = customer_state_factory()
    decide_changes(state, order_factory(at=moment(days=0)))

    second = decide_changes(state, order_factory(at=moment(days=1)))
    third = decide_changes(state, order_factory(at=moment(days=2)))

    assert second == [("stage", "new", "active")]
    assert third == []


def test_purchase_after_40_silent_days_emits_dormant_then_reactivated(
    engine, active_customer, order_factory, moment, midnight
):
    # Given an active customer whose last order is on day 1
    state = active_customer()

    # When they buy again on day 41
    changes = engine.decide(
        state, order_factory(at=moment(days=41), event_id="evt-back"), RULES
    ).changes

    # Then the time-driven dormancy comes first, dated the day R reached 30, then the comeback
    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.STAGE, "active", "dormant"),
        (Dimension.STAGE, "dormant", "reactivated"),
    ]
    dormant, back = changes
    assert dormant.occurred_at == midnight(31)
    assert "dormant after 30" in dormant.reason
    assert back.reason == "bought again on 2024-04-11 after 40 days without a purchase"
    assert {c.trigger_event_id for c in changes} == {"evt-back"}
    assert len({c.change_id for c in changes}) == 2
    assert state.stage == "reactivated"


def test_reactivation_happens_at_the_event_time(engine, active_customer, order_factory, moment):
    state = active_customer()

    changes = engine.decide(state, order_factory(at=moment(days=41)), RULES).changes

    assert changes[-1].after == "reactivated"
    assert changes[-1].occurred_at == moment(days=41)  # actual: 2024-04-11T00:00Z, not 09:00Z


def test_browse_after_100_silent_days_catches_up_to_churned_once(
    engine, active_customer, event_factory, moment, midnight
):
    # Given an active customer whose last order is on day 1
    state = active_customer()

    # When they browse on day 101, and again on day 102
    first = engine.decide(state, event_factory("browse.view", at=moment(days=101)), RULES)
    second = engine.decide(state, event_factory("browse.view", at=moment(days=102)), RULES)

    # Then one stage record goes straight to churned, dated the day R reached 90,
    # with the RFM group that 100 silent days give; the next day adds nothing
    assert [(c.dimension, c.before, c.after) for c in first.changes] == [
        (Dimension.STAGE, "active", "churned"),
        (Dimension.RFM_GROUP, "other", "sleeping"),
    ]
    assert first.changes[0].occurred_at == midnight(91)
    assert first.changes[0].reason == "no purchase for 100 days (churned after 90)"
    assert first.changes[1].occurred_at == moment(days=101)
    assert second.changes == []
    assert state.stage == "churned"


def test_a_late_event_never_moves_the_clock_back(
    decide_changes, active_customer, event_factory, order_factory, moment, midnight
):
    # Given a customer found dormant on day 40
    state = active_customer()
    assert decide_changes(state, event_factory("browse.view", at=moment(days=40))) == [
        ("stage", "active", "dormant"),
        ("rfm_group", "other", "sleeping"),
    ]

    # When a browse from day 10 and an order from day 5 arrive late
    late_browse = decide_changes(state, event_factory("browse.view", at=moment(days=10)))
    late_order = decide_changes(state, order_factory(at=moment(days=5)))

    # Then the customer is still assessed on day 40: still dormant, nothing published
    assert late_browse == []
    assert late_order == []
    assert state.stage == "dormant"
    assert state.stage_since == midnight(31).timestamp()
    assert state.assessed_at == moment(days=40).timestamp()


def test_a_late_order_inside_the_silence_is_a_real_correction(
    decide_changes, active_customer, event_factory, order_factory, moment
):
    # Given a customer found dormant on day 40
    state = active_customer()
    decide_changes(state, event_factory("browse.view", at=moment(days=40)))

    # When an order from day 12 arrives late (R on day 40 is really 28)
    changes = decide_changes(state, order_factory(at=moment(days=12)))

    # Then stage and group move to what day 40 really is (R=28), on the customer's clock
    assert changes == [("stage", "dormant", "active"), ("rfm_group", "sleeping", "other")]
    assert state.stage == "active"
    assert state.assessed_at == moment(days=40).timestamp()


def test_no_changes_after_erasure(
    decide_changes, customer_state_factory, order_factory, event_factory, moment
):
    # Given a customer with a first order
    state = customer_state_factory()
    decide_changes(state, order_factory(at=moment(days=0)))

    # When they ask for erasure, then buy again
    on_erasure = decide_changes(
        state, event_factory("customer.erasure_requested", at=moment(days=1))
    )
    after = decide_changes(state, order_factory(at=moment(days=2)))

    # Then nothing about them is published any more
    assert on_erasure == []
    assert after == []


def test_disabled_model_emits_no_changes(
    decide_changes, customer_state_factory, order_factory, rules_factory, moment
):
    rules = rules_factory(model={"enabled": False})
    state = customer_state_factory()

    first = decide_changes(state, order_factory(at=moment(days=0)), rules=rules)
    later = decide_changes(state, order_factory(at=moment(days=40)), rules=rules)

    assert first == later == []
    assert state.stage == "potential"
    assert (state.rfm_group, state.grade) == (None, None)
    assert state.days == []


def test_every_change_record_keeps_its_contract(
    engine, customer_state_factory, order_factory, event_factory, moment
):
    # Change records are built without validation on the hot path: each one must
    # still be exactly what the published contract accepts.
    from schemas.changes import CustomerChange, change_record

    state = customer_state_factory()
    history = [
        order_factory(at=moment(), amount=900),
        order_factory(at=moment(days=2), amount=900),
        event_factory("order.paid", at=moment(days=3)),
        event_factory("browse.view", at=moment(days=45)),
        order_factory(at=moment(days=46), amount=900),
        event_factory("review.posted", at=moment(days=47), rating=1),
    ]
    changes = [c for event in history for c in engine.decide(state, event, RULES).changes]

    assert {c.dimension for c in changes} == set(Dimension)
    for change in changes:
        dumped = change.model_dump(mode="json")
        assert CustomerChange.model_validate(dumped).model_dump(mode="json") == dumped
        # the hot path's own serialisation says the same, field for field
        fast = change_record(change)
        assert CustomerChange.model_validate(fast) == CustomerChange.model_validate(dumped)
        assert set(fast) == set(dumped)
        assert dumped["schema_version"] == 1 and dumped["clock"] == "event"
