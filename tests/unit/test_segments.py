"""Segment changes through ``decide``: one record per stage, RFM group or grade transition.

``decide(state, event, rules)`` folds the event and re-assesses the customer
on its own clock (the latest event time seen); time-driven stages (dormant,
churned) are caught up when the next event arrives, dated the day reached.
"""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from agents.rules import Rules
from schemas.changes import Dimension, change_id_for

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
        assert state.assessment.stage == "active"
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
    assert (state.assessment.stage, state.assessment.rfm_group, state.assessment.grade) == (
        "new",
        "other",
        "potential",
    )


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
    # The dormancy names the purchase it counts from; the comeback, the new order
    assert [c.trigger_event_id for c in changes] == ["evt-o1", "evt-back"]
    assert len({c.change_id for c in changes}) == 2
    assert state.assessment.stage == "reactivated"


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
    assert state.assessment.stage == "churned"


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
    assert state.assessment.stage == "dormant"
    assert state.assessment.stage_since == midnight(31).timestamp()
    assert state.assessment.assessed_at == moment(days=40).timestamp()


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
    assert state.assessment.stage == "active"
    assert state.assessment.assessed_at == moment(days=40).timestamp()


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
    assert state.assessment.stage == "potential"
    assert (state.assessment.rfm_group, state.assessment.grade) == (None, None)
    assert state.activity.days == []


def test_every_change_record_keeps_its_contract(
    engine, customer_state_factory, order_factory, event_factory, moment
):
    # Change records are built without validation on the hot path: each one must
    # still be exactly what the published contract accepts.
    from schemas.changes import CustomerChange
    from streams.outputs import CHANGES

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
        # the record sent says the same, field for field
        sent = orjson.loads(CHANGES.encode(change))
        assert sent == dumped
        assert CustomerChange.model_validate(sent) == CustomerChange.model_validate(dumped)
        assert dumped["schema_version"] == 1 and dumped["clock"] == "event"


# -- re-assessing only when something can have changed ----------------------------


def _simulated_events(seed: int, customers: int, count: int, late_every: int):
    """Valid simulator events, with every ``late_every``-th one delivered later (late events)."""
    from schemas.deadletter import RecordMeta
    from schemas.ingress import admit
    from streams.tools.simulator import Simulator

    events = []
    # One event every ~6 hours: each customer's events are days apart, so stages,
    # groups and grades move by time too (dormant, churned, windows running out).
    simulator = Simulator(
        seed=seed, customers=customers, malformed_rate=0.0, retry_rate=0.0, step_seconds=6 * 3600
    )
    for n, record in enumerate(simulator.take(count)):
        events.append(admit(record.family, record.key, record.value, RecordMeta("t", 0, n, None)))
    for i in range(0, len(events) - 60, late_every):
        events[i], events[i + 50] = events[i + 50], events[i]
    return events


_CHANGED_RULES = {
    "rfm": {
        "windows_days": [30, 60],
        "group_window_days": 60,
        "groups": [
            {"name": "top", "r_max_days": 3, "f_min": 1.5, "m_min": 266.67},
            {"name": "mid", "r_min_days": 5, "r_max_days": 20},
            {"name": "low", "r_min_days": 10, "m_max": 100.01},
        ],
    },
    "lifecycle": {
        "dormant_after_days": 10,
        "churned_after_days": 20,
        "reactivated_days": 5,
        "new_days": 14,
        "active_window_days": 5,
        "loyal_min_tenure_days": 20,
        "loyal_window_days": 40,
        "loyal_min_orders": 2,
    },
    "grade": {"window_days": 60},
    # timed changes off: the comparison is between event-driven re-assessments
    "care": {
        "timed_stage_changes": False,
        "vip": {"enabled": False},
        "tier_nudge": {"enabled": False},
    },
}


@pytest.mark.parametrize("changed", [False, True], ids=["defaults", "changed-rules"])
def test_skipping_reassessments_never_hides_or_moves_a_change(engine, rules_factory, changed):
    # Given the same events (some late) folded twice: by decide as it is, and by a
    # reference that re-assesses everything after every event
    from agents.state import CustomerState

    rules = rules_factory(**_CHANGED_RULES) if changed else RULES
    events = _simulated_events(seed=5, customers=60, count=4000, late_every=9)
    fast: dict[str, CustomerState] = {}
    full: dict[str, CustomerState] = {}
    published: dict[str, list[tuple]] = {"fast": [], "full": []}
    for event in events:
        for name, table in (("fast", fast), ("full", full)):
            state = table.setdefault(event.customer_id, CustomerState(event.customer_id))
            if name == "full" and state.assessment.assessed_at is not None:
                state.assessment.next_change_day = (
                    0  # always due: a full re-assessment, stage before too
                )
            published[name] += [
                (c.change_id, c.dimension, c.before, c.after, c.reason, c.occurred_at)
                for c in engine.decide(state, event, rules).changes
            ]

    # Then both publish the same changes, with the same reasons and dates
    assert len(published["fast"]) > 500
    assert {d for _, d, *_ in published["fast"]} == set(Dimension)
    assert published["fast"] == published["full"]
    # and end with the same stage, group and grade
    for customer_id, state in fast.items():
        other = full[customer_id]
        assert (
            state.assessment.stage,
            state.assessment.stage_since,
            state.assessment.rfm_group,
            state.assessment.grade,
            state.assessment.score,
        ) == (
            other.assessment.stage,
            other.assessment.stage_since,
            other.assessment.rfm_group,
            other.assessment.grade,
            other.assessment.score,
        )


def test_an_r_bound_that_cannot_change_the_group_is_not_a_change_day(
    engine, active_customer, order_factory, moment
):
    from agents.model import day_of

    # Given a customer whose F and M are far below every group's: "other" at any R < 30
    state = active_customer()
    engine.decide(state, order_factory(at=moment(days=20), amount=1), RULES)
    assert state.assessment.rfm_group == "other"

    # Then R = 8 and R = 16 (high value's and potential's R bounds) are not change
    # days; the next one is R = 30 (dormant, and "sleeping" may start)
    last = day_of(moment(days=20).timestamp())
    assert state.assessment.next_change_day == last + 30


def test_a_payment_re_assesses_the_grade_alone_with_the_same_result(
    engine, customer_state_factory, order_factory, event_factory, moment
):
    # Given two copies of an "ordinary" customer: two orders, a return, a complaint
    state = customer_state_factory()
    for event in (
        order_factory(at=moment(days=0), amount=40),
        order_factory(at=moment(days=2), amount=40),
        event_factory("order.returned", at=moment(days=2), refund_amount=40),
        event_factory("complaint.opened", at=moment(days=2)),
    ):
        engine.decide(state, event, RULES)
    assert state.assessment.grade == "ordinary"
    reference = state.copy()
    assert state.assessment.next_change_day is not None
    assert state.assessment.next_change_day > int(moment(days=3).timestamp() // 86_400)

    # When both see the payments, one as it is and one always fully re-assessed
    payments = [event_factory("order.paid", at=moment(days=3)) for _ in range(2)]
    fast = [c for p in payments for c in engine.decide(state, p, RULES).changes]
    full = []
    for p in payments:
        reference.assessment.next_change_day = 0
        full += engine.decide(reference, p, RULES).changes

    # Then the grade moves the same way, and everything else is the same
    assert [(c.dimension, c.before, c.after, c.reason) for c in fast] == [
        (c.dimension, c.before, c.after, c.reason) for c in full
    ]
    assert [(c.dimension, c.before, c.after) for c in fast] == [
        (Dimension.GRADE, "ordinary", "potential")
    ]
    for name in ("stage", "stage_reason", "stage_since", "rfm_group", "grade", "score"):
        assert getattr(state.assessment, name) == getattr(reference.assessment, name), name
    assert (
        state.assessment.assessed_at
        == reference.assessment.assessed_at
        == moment(days=3).timestamp()
    )


def test_a_complaint_brings_the_next_change_day_to_its_row_leaving_the_grade_window(
    engine, customer_state_factory, order_factory, event_factory, moment
):
    from agents.model import day_of

    # Given a customer whose next change day is when they turn dormant (day 30)
    state = customer_state_factory()
    engine.decide(state, order_factory(at=moment(days=0), amount=40), RULES)
    engine.decide(state, order_factory(at=moment(days=1), amount=40), RULES)

    # When a complaint from a year ago arrives late, inside the grade's 365-day window
    engine.decide(state, event_factory("complaint.opened", at=moment(days=-360)), RULES)

    # Then its row leaving the grade window (day 5) is the next change day
    assert state.assessment.next_change_day == day_of(moment(days=-360).timestamp()) + 365


# Each time-driven change day, checked on its own: a later browse (which feeds no
# rule) must find the change, so the day it can happen must be a change day.


def test_orders_leaving_the_active_window_of_a_new_customer_make_it_new_again(
    engine, rules_factory, customer_state_factory, order_factory, event_factory, moment
):
    rules = rules_factory(lifecycle={"new_days": 30, "active_window_days": 5})
    state = customer_state_factory()
    engine.decide(state, order_factory(at=moment(days=0)), rules)
    engine.decide(state, order_factory(at=moment(days=1)), rules)
    assert state.assessment.stage == "active"  # two orders in 5 days

    changes = engine.decide(state, event_factory("browse.view", at=moment(days=6)), rules).changes

    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.STAGE, "active", "new")
    ]


def test_a_new_customer_turns_active_when_new_days_run_out(
    engine, rules_factory, customer_state_factory, order_factory, event_factory, moment
):
    rules = rules_factory(lifecycle={"new_days": 10})
    state = customer_state_factory()
    engine.decide(state, order_factory(at=moment(days=0)), rules)
    assert state.assessment.stage == "new"

    changes = engine.decide(state, event_factory("browse.view", at=moment(days=11)), rules).changes

    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.STAGE, "new", "active")
    ]


def test_an_order_leaving_the_loyal_window_ends_loyalty(
    engine, rules_factory, customer_state_factory, order_factory, event_factory, moment
):
    rules = rules_factory(
        lifecycle={"loyal_min_tenure_days": 10, "loyal_window_days": 20, "loyal_min_orders": 2}
    )
    state = customer_state_factory()
    engine.decide(state, order_factory(at=moment(days=0)), rules)
    engine.decide(state, order_factory(at=moment(days=12)), rules)
    assert state.assessment.stage == "loyal"

    changes = engine.decide(state, event_factory("browse.view", at=moment(days=21)), rules).changes

    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.STAGE, "loyal", "active")
    ]


def test_complaints_leaving_the_grade_window_raise_the_grade(
    engine, rules_factory, customer_state_factory, order_factory, event_factory, moment
):
    rules = rules_factory(grade={"window_days": 60})
    state = customer_state_factory()
    for _ in range(3):
        engine.decide(state, event_factory("complaint.opened", at=moment(days=-40)), rules)
    for event in (
        order_factory(at=moment(days=5), amount=40),
        event_factory("order.paid", at=moment(days=5)),
        event_factory("review.posted", at=moment(days=5), rating=5),
        event_factory("order.returned", at=moment(days=5), refund_amount=40),
    ):
        engine.decide(state, event, rules)
    assert state.assessment.grade == "ordinary"
    # The complaints' row (day -40) leaves the 60-day grade window on day 20, before
    # any other change day (it is in no other window the customer's stage reads).

    changes = engine.decide(state, event_factory("browse.view", at=moment(days=21)), rules).changes

    assert [(c.dimension, c.before, c.after) for c in changes] == [
        (Dimension.GRADE, "ordinary", "potential")
    ]


def test_a_return_re_assesses_the_rfm_group_at_once(
    engine, customer_state_factory, order_factory, event_factory, moment
):
    # Given a "potential" customer: 6 orders, 1,800 in 90 days (2/month, 600/month)
    state = customer_state_factory()
    for n in range(6):
        engine.decide(state, order_factory(at=moment(days=n), amount=300), RULES)
    assert state.assessment.rfm_group == "potential"

    # When 400 is refunded the next day (M falls to 1,400: 466.67/month < 500)
    changes = engine.decide(
        state, event_factory("order.returned", at=moment(days=6), refund_amount=400), RULES
    ).changes

    # Then the group changes with that event
    assert (Dimension.RFM_GROUP, "potential", "other") in [
        (c.dimension, c.before, c.after) for c in changes
    ]


# -- change ids over a long history ----------------------------------------------------


def _long_history(event_factory, customer: str, seed: int, start: dt.datetime) -> list:
    """Three years of bursts of orders with long silences between them (so customers go
    new -> active -> dormant -> churned -> reactivated, again and again), returns and reviews."""
    import random

    rng = random.Random(seed)
    at = start
    events = []
    n = 0
    while at < start + dt.timedelta(days=3 * 365):
        for _ in range(rng.randint(1, 6)):
            n += 1
            at += dt.timedelta(days=rng.uniform(0.2, 12))
            events.append(
                event_factory(
                    "order.placed",
                    customer_id=customer,
                    event_id=f"{customer}-o{n}",
                    order_id=f"{customer}-o{n}",
                    amount=round(rng.uniform(5, 900), 2),
                    at=at,
                )
            )
            if rng.random() < 0.15:
                events.append(
                    event_factory(
                        "order.returned",
                        customer_id=customer,
                        event_id=f"{customer}-r{n}",
                        order_id=f"{customer}-o{n}",
                        refund_amount=5.0,
                        at=at + dt.timedelta(days=3),
                    )
                )
            if rng.random() < 0.2:
                events.append(
                    event_factory(
                        "review.posted",
                        customer_id=customer,
                        event_id=f"{customer}-v{n}",
                        review_id=f"{customer}-v{n}",
                        rating=rng.randint(1, 5),
                        at=at + dt.timedelta(days=5),
                    )
                )
        at += dt.timedelta(days=rng.choice([10, 35, 45, 100, 200]))
    return sorted(events, key=lambda e: e.occurred_at)


def test_no_two_different_transitions_share_a_change_id_over_a_long_history(
    engine, event_factory, moment
):
    # Given 40 customers with three years of bursts and silences, timed changes on
    rules = Rules.from_mapping(
        {"care": {"enabled": True}, "policy": {"consent": {"marketing": "opt_out"}}}
    )
    end = moment(days=4 * 365).timestamp()
    changes = []
    last_purchase: dict[str, list[tuple[float, str]]] = {}
    for i in range(40):
        customer = f"long-{i}"
        state = engine.CustomerState(customer_id=customer)
        for event in _long_history(event_factory, customer, i, moment()):
            # When every event is decided in time order (its due timers fire first) ...
            changes += engine.decide(state, event, rules).changes
            if event.type == "order.placed":
                last_purchase.setdefault(customer, []).append(
                    (event.occurred_at.timestamp(), event.event_id)
                )
        decision = engine.Decision()
        engine.fire_due(state, end, True, rules, decision)  # ... and the rest of the timers
        changes += decision.changes

    # Then each change id names one transition only
    by_id: dict[str, set] = {}
    for c in changes:
        transition = (c.customer_id, c.dimension, c.before, c.after, c.occurred_at)
        by_id.setdefault(c.change_id, set()).add(transition)
    assert len(changes) > 2000
    assert {cid: t for cid, t in by_id.items() if len(t) > 1} == {}
    # And a dormant or churned change names the last purchase before it
    timed = [c for c in changes if c.after in ("dormant", "churned")]
    assert len(timed) > 100
    for c in timed:
        before = [e for t, e in last_purchase[c.customer_id] if t <= c.occurred_at.timestamp()]
        assert c.trigger_event_id == before[-1], c
