"""What ``decide``, ``route`` and ``fire_due`` wire together (agents.customer_events),
each held by its own small case: the timers fired before an event, the journal, an
operator's flag review, a cross-customer rule's proposal, the round's limit on timers
fired, the clock a re-assessment records, a send journalled and remembered, a deferral
without room for its timer, a re-assessment timer once the model is switched off, and
one brought forward when a complaint brings the next change forward.
Pure: an explicit clock, no broker, no Redis.

Found by ``./dev mutate agents/customer_events.py`` (lines 316-640): each of these
changes passed the wider unit tier before these tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from agents import timers
from agents.customer_events import (
    DEFERRED,
    REPLAY,
    Decision,
    Now,
    decide,
    fire_due,
    requested_action,
    route,
)
from agents.journal import O_CHANNEL, O_REASON, O_VERDICT
from agents.rules import Rules
from agents.state import CustomerState, Profile
from schemas.actions import ClockMode
from schemas.changes import Dimension
from schemas.decisions import Verdict
from tests.unit.conftest import CUSTOMER, T0
from tests.unit.test_outcomes import action as reminder  # a marketing e-mail

Make = Callable[..., BaseModel]
DAY = 86_400.0


def _rules(**sections: Any) -> Rules:
    return Rules.from_mapping(sections)


def test_a_timer_due_at_the_events_instant_fires_after_the_event(event_factory: Make) -> None:
    # Given timers due a second before an event and at its very instant
    t = T0.timestamp()
    state = CustomerState(CUSTOMER)
    state.timers = [[t - 1, "test.before", "", "e-0", {}], [t, "test.at", "", "e-0", {}]]

    # When the event is decided
    decision = decide(state, event_factory("browse.view", at=T0), _rules(care={"enabled": False}))

    # Then only the earlier one fired before it; the other waits for the round's sweep
    assert decision.fired == [("test.before", t - 1)]
    assert [row[1] for row in state.timers] == ["test.at"]


def test_the_events_a_customer_lives_through_are_in_their_journal_until_erasure(
    event_factory: Make,
) -> None:
    rules = Rules()
    state = CustomerState(CUSTOMER)

    decide(state, event_factory("order.placed", at=T0, event_id="evt-1"), rules)
    noted = [row[1] for row in state.journal.events]
    decide(state, event_factory("customer.erasure_requested", at=T0 + dt.timedelta(hours=1)), rules)
    decide(state, event_factory("order.placed", at=T0 + dt.timedelta(hours=2)), rules)

    assert noted == ["order.placed"]
    assert state.journal.events == []


def test_an_operators_review_of_a_raised_flag_is_on_the_record_and_of_another_is_not(
    event_factory: Make,
) -> None:
    # Given a customer flagged for three returns in a month
    rules = Rules()
    state = CustomerState(CUSTOMER)
    raised = []
    for i in range(3):
        returned = event_factory(
            "order.returned",
            at=T0 + dt.timedelta(days=i),
            event_id=f"ret-{i}",
            order_id=f"o-{i}",
            refund_amount=5.0,
        )
        raised += decide(state, returned, rules).flags
    (flag,) = raised

    # When an operator clears it, and reviews a flag the customer does not hold
    def review(flag_id: str, hours: int) -> Decision:
        command = event_factory(
            "customer.flag_reviewed", at=T0 + dt.timedelta(days=5, hours=hours), flag_id=flag_id
        )
        return decide(state, command, rules)

    cleared = review(flag.flag_id, 0)
    unknown = review("flag-never-raised", 1)

    # Then the first is one audit record of that flag, cleared; the second is nothing
    (audit,) = cleared.flags
    assert (audit.flag_id, audit.status.value) == (flag.flag_id, "cleared")
    assert unknown.flags == []


def test_a_proposed_action_goes_to_the_customers_first_preferred_channel(
    event_factory: Make,
) -> None:
    command: Any = event_factory("care.requested", at=T0)  # proposed on e-mail
    rules = Rules()

    def channel(preferred: list[str]) -> str:
        state = CustomerState(CUSTOMER, profile=Profile(preferred_channels=preferred))
        return str(requested_action(state, command, rules).channel.value)

    assert channel(["sms", "email"]) == "sms"
    assert channel(["email", "sms"]) == "email"
    assert channel([]) == "email"


def test_fire_due_stops_at_its_limit_only_while_more_are_due() -> None:
    t = T0.timestamp()
    rows = [[t + i, "test.tick", str(i), "e-0", {}] for i in range(3)]
    rules = _rules(care={"enabled": False})

    def fire(limit: int) -> tuple[bool, int, int]:
        state = CustomerState(CUSTOMER)
        state.timers = [list(r) for r in rows]
        decision = Decision()
        stopped = fire_due(state, t + 10, True, rules, decision, REPLAY, limit)
        return stopped, len(decision.fired), len(state.timers)

    assert fire(2) == (True, 2, 1)
    assert fire(3) == (False, 3, 0)
    assert fire(4) == (False, 3, 0)


def test_a_reassessment_fired_on_the_live_clock_says_so(order_factory: Make) -> None:
    # Given a customer whose one purchase will make them dormant by time alone
    rules = Rules()
    state = CustomerState(CUSTOMER)
    decide(state, order_factory(at=T0), rules)
    assert state.assessment.next_change_day is not None
    due = state.assessment.next_change_day * DAY

    def changes(now: Now) -> set[tuple[str, ClockMode]]:
        copy = CustomerState.from_dict(state.to_dict())
        decision = Decision()
        fire_due(copy, due + 2 * 365 * DAY, True, rules, decision, now)
        return {(c.dimension.value, c.clock) for c in decision.changes}

    # When the re-assessment timers fire on the replay clock, and on the live one
    replayed, live = changes(REPLAY), changes(Now(wall=due + 2 * 365 * DAY))

    # Then the stage moves either way, and each change names the clock that moved it
    assert (Dimension.STAGE.value, ClockMode.EVENT) in replayed
    assert {clock for _, clock in replayed} == {ClockMode.EVENT}
    assert {clock for _, clock in live} == {ClockMode.WALL}


def test_timers_an_event_overtakes_on_the_live_clock_fire_on_the_live_clock(
    event_factory: Make, order_factory: Make
) -> None:
    # Given a customer whose re-assessment timer is due, and a live worker that reads a
    # later event of theirs
    rules = Rules()
    state = CustomerState(CUSTOMER)
    decide(state, order_factory(at=T0), rules)
    assert state.assessment.next_change_day is not None
    due = state.assessment.next_change_day * DAY
    later = dt.datetime.fromtimestamp(due + 2 * 365 * DAY, dt.UTC)

    # When the event is decided on the live clock
    decision = decide(state, event_factory("browse.view", at=later), rules, Now(later.timestamp()))

    # Then the changes the timers found before it (the view changes nothing itself) name
    # the live clock
    assert Dimension.STAGE in {c.dimension for c in decision.changes}
    assert {c.clock for c in decision.changes} == {ClockMode.WALL}


def test_a_send_is_journalled_with_the_actions_reason_and_remembered_once() -> None:
    # Given a customer who takes marketing e-mail, and no quiet hours or caps in the way
    rules = _rules(
        policy={
            "quiet_hours": {"enabled": False},
            "caps": {"per_channel_day": 50, "per_channel_week": 50},
        },
        outcomes={"enabled": False},
    )
    state = CustomerState(
        CUSTOMER, profile=Profile(preferred_channels=["email"], consents={"marketing:email": True})
    )
    sent = reminder(T0)

    # When it is routed, and routed again (a batch done again)
    for _ in range(2):
        decision = Decision()
        route(state, [sent], None, rules, decision)
        assert [a.action_id for a in decision.actions] == ["act-1"]

    # Then the journal says it went out on e-mail for the action's own reason, and the
    # contact history remembers it once
    row = state.journal.outcomes[-1]
    assert (row[O_VERDICT], row[O_CHANNEL], row[O_REASON]) == ("sent", "email", sent.reason)
    assert [r[0] for r in state.contact.recent_actions] == ["act-1"]


def test_a_deferral_that_finds_no_room_for_its_timer_is_counted_dropped() -> None:
    # Given a customer already holding as many timers as the rules allow (four), and a
    # marketing e-mail decided at 23:30 local time (quiet hours: deferred to 08:00)
    rules = _rules(care={"max_timers": 4}, outcomes={"enabled": False})
    state = CustomerState(
        CUSTOMER,
        profile=Profile(
            preferred_channels=["email"], consents={"marketing:email": True}, timezone="UTC"
        ),
    )
    state.timers = [[T0.timestamp() + 30 * DAY, "test.held", str(i), "e-0", {}] for i in range(4)]
    night = T0.replace(hour=23, minute=30)
    action = reminder(night)
    timers.take_dropped()  # the tally of other tests

    # When the policy defers it
    decision = Decision()
    route(state, [action], None, rules, decision)

    # Then it is on the record as deferred, its timer is not set, and it is counted dropped
    assert [v.decision for v in decision.verdicts] == [Verdict.DEFER]
    assert [row[1] for row in state.timers] == ["test.held"] * 4
    assert timers.take_dropped() == {DEFERRED: 1}


def test_a_reassessment_timer_left_from_before_the_model_was_switched_off_changes_nothing(
    order_factory: Make,
) -> None:
    # Given a customer with a re-assessment timer pending, and the model switched off since
    state = CustomerState(CUSTOMER)
    decide(state, order_factory(at=T0), Rules())
    assert "model.reassess" in [row[1] for row in state.timers]

    # When the timer fires
    decision = Decision()
    fire_due(
        state, T0.timestamp() + 2 * 365 * DAY, True, _rules(model={"enabled": False}), decision
    )

    # Then it is taken off and assesses nothing
    assert decision.changes == []
    assert "model.reassess" not in [row[1] for row in state.timers]


def test_a_complaint_that_brings_the_next_change_forward_brings_the_reassessment_with_it(
    event_factory: Make,
) -> None:
    # Given a 30-day grade window in which one complaint costs the disputes component
    # everything, and a customer whose order of day 0 and five-star review of day 1 have
    # left it by day 40 (dormant since day 30; the next change then is churn, on day 90)
    rules = _rules(grade={"window_days": 30, "disputes_cap": 1}, care={"enabled": False})
    state = CustomerState(CUSTOMER)

    def day(n: int) -> dt.datetime:
        return T0 + dt.timedelta(days=n)

    decide(state, event_factory("order.placed", at=day(0)), rules)
    decide(state, event_factory("review.posted", at=day(1), rating=5), rules)
    fire_due(state, day(40).timestamp(), False, rules, Decision())

    # When a complaint on day 40 lowers the grade, until it leaves the window on day 70
    changes = decide(state, event_factory("complaint.opened", at=day(40)), rules).changes
    later = Decision()
    fire_due(state, day(200).timestamp(), False, rules, later)

    # Then the grade comes back on day 70, before the churn of day 90, each on its own day
    seen = [(c.dimension, c.after, c.occurred_at) for c in changes + later.changes]
    assert seen == [
        (Dimension.GRADE, "ordinary", day(40)),
        (Dimension.GRADE, "potential", day(70).replace(hour=0)),
        (Dimension.STAGE, "churned", day(90).replace(hour=0)),
    ]
