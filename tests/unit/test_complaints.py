"""Complaint lifecycle and SLA deadlines (domain.md §5): pure functions, injected clock.

Time only moves when a test says so: events carry their ``at``, and
:func:`fire_due` plays the timer engine, popping every complaint timer due by a
given moment and firing it with that moment as ``now``.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agents import timers
from agents.complaints import (
    COMPLAINT_TIMER_KINDS,
    FIRST_RESPONSE,
    FOLLOW_UP,
    SOLUTION,
    ComplaintOutcome,
    add_working_days,
    on_complaint_event,
    on_complaint_timer,
    open_complaints,
)
from agents.rules import Rules, WorkCalendar
from agents.state import CustomerState
from schemas.actions import Action, ActionType, ClockMode, Priority, action_id_for
from schemas.base import Channel
from schemas.errors import ConfigError

RULES = Rules()
#: T0 of the unit tier is Friday 2024-03-01 09:00 UTC.
T0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
LONDON = {"timezone": "Europe/London"}


def ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def fire_due(
    state: CustomerState,
    until: dt.datetime,
    rules: Rules = RULES,
    clock: ClockMode = ClockMode.EVENT,
) -> ComplaintOutcome:
    """Fire every timer due at or before ``until`` (now = ``until``); the merged outcome."""
    merged = ComplaintOutcome()
    while (timer := timers.pop_next(state.timers, ts(until))) is not None:
        assert timer.kind in COMPLAINT_TIMER_KINDS
        out = on_complaint_timer(state, timer, ts(until), clock, rules)
        merged.actions += out.actions
        merged.breaches += out.breaches
        merged.met += out.met
    return merged


@pytest.fixture
def complaint(event_factory: Callable[..., Any]) -> Callable[..., Any]:
    """``complaint(kind, complaint_id="cmp-1", at=T0, **fields) -> complaint event``."""

    def make(kind: str, complaint_id: str = "cmp-1", at: dt.datetime = T0, **fields: Any) -> Any:
        return event_factory(f"complaint.{kind}", complaint_id=complaint_id, at=at, **fields)

    return make


@pytest.fixture
def opened(complaint: Callable[..., Any]) -> Callable[..., Any]:
    """``opened(complaint_type="logistics", channel="online", severity="medium", **kw)``."""

    def make(
        complaint_type: str = "logistics",
        channel: str = "online",
        severity: str = "medium",
        **kwargs: Any,
    ) -> Any:
        return complaint(
            "opened", complaint_type=complaint_type, channel=channel, severity=severity, **kwargs
        )

    return make


@pytest.fixture
def state(customer_state_factory: Callable[..., CustomerState]) -> CustomerState:
    return customer_state_factory("cust-9")


def timer_kinds(state: CustomerState) -> list[tuple[str, str]]:
    return [(row[timers.T_KIND], row[timers.T_KEY]) for row in state.timers]


def only_action(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


# -- first response -----------------------------------------------------------------


def test_opening_sets_a_two_hour_first_response_timer(state, opened):
    out = on_complaint_event(state, opened(event_id="evt-open"), RULES)

    assert out.opened == ["logistics"]
    assert out.actions == []
    timer = timers.find(state.timers, FIRST_RESPONSE, "cmp-1")
    assert timer is not None
    assert timer.due == ts(T0 + 2 * HOUR)
    assert timer.cause == "evt-open"
    assert state.complaints["cmp-1"]["state"] == "opened"
    assert open_complaints(state) == 1


def test_acknowledgment_at_one_hour_59_meets_the_deadline_and_cancels_the_timer(
    state, opened, complaint
):
    on_complaint_event(state, opened(), RULES)

    out = on_complaint_event(state, complaint("acknowledged", at=T0 + 2 * HOUR - MINUTE), RULES)

    assert out.met == [("logistics", "first_response")]
    assert out.breaches == []
    assert timers.find(state.timers, FIRST_RESPONSE, "cmp-1") is None
    assert state.complaints["cmp-1"]["state"] == "acknowledged"
    # Nothing fires later
    later = fire_due(state, T0 + 10 * HOUR)
    assert later.actions == [] and later.breaches == []


def test_no_response_by_exactly_two_hours_is_one_escalation(state, opened):
    on_complaint_event(state, opened(event_id="evt-open", order_id="ord-5"), RULES)

    # One second before the deadline nothing fires
    assert fire_due(state, T0 + 2 * HOUR - dt.timedelta(seconds=1)).actions == []

    out = fire_due(state, T0 + 2 * HOUR)

    action = only_action(out.actions)
    assert out.breaches == [("logistics", "first_response")]
    assert action.action_type is ActionType.COMPLAINT_ESCALATION
    assert action.priority is Priority.SERVICE
    assert action.channel is Channel.PHONE
    assert action.template_id == "complaint_escalation"
    assert action.rule_id == "complaint.first_response"
    assert action.customer_id == "cust-9"
    assert action.trigger_event_ids == ["evt-open"]
    assert action.created_at == T0 + 2 * HOUR
    assert action.clock is ClockMode.EVENT
    assert action.action_id == action_id_for(
        "complaint.first_response", "cust-9", "cmp-1:first_response:0"
    )
    assert action.params == {
        "complaint_id": "cmp-1",
        "complaint_type": "logistics",
        "deadline_kind": "first_response",
        "deadline": (T0 + 2 * HOUR).isoformat(),
        "suggestion": "reship_and_late_delivery_compensation",
    }
    assert "2 h" in action.reason and "cmp-1" in action.reason


@pytest.mark.parametrize("ack_first", [True, False], ids=["ack-then-timer", "timer-then-ack"])
def test_acknowledgment_at_exactly_the_deadline_is_a_breach_in_either_order(
    state, opened, complaint, ack_first
):
    on_complaint_event(state, opened(), RULES)
    ack = complaint("acknowledged", at=T0 + 2 * HOUR)

    if ack_first:
        first = on_complaint_event(state, ack, RULES)
        fired = fire_due(state, T0 + 2 * HOUR)
    else:
        fired = fire_due(state, T0 + 2 * HOUR)
        first = on_complaint_event(state, ack, RULES)

    assert first.met == [] and first.actions == []
    assert fired.breaches == [("logistics", "first_response")]
    assert len(fired.actions) == 1
    assert fire_due(state, T0 + 30 * HOUR).actions == []
    assert state.complaints["cmp-1"]["first_response"] == "breached"


def test_social_media_complaint_must_be_answered_within_one_hour(state, opened, complaint):
    on_complaint_event(state, opened(channel="social"), RULES)

    assert timers.find(state.timers, FIRST_RESPONSE, "cmp-1").due == ts(T0 + HOUR)
    out = fire_due(state, T0 + HOUR + MINUTE)

    assert out.breaches == [("logistics", "first_response")]
    assert "1 h" in only_action(out.actions).reason


def test_social_media_acknowledged_in_59_minutes_is_met(state, opened, complaint):
    on_complaint_event(state, opened(channel="social"), RULES)

    out = on_complaint_event(state, complaint("acknowledged", at=T0 + 59 * MINUTE), RULES)

    assert out.met == [("logistics", "first_response")]
    assert fire_due(state, T0 + 3 * HOUR).actions == []


def test_a_resolution_is_also_a_first_response(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)

    out = on_complaint_event(state, complaint("resolved", at=T0 + 30 * MINUTE), RULES)

    assert out.met == [("logistics", "first_response")]
    assert timer_kinds(state) == [(FOLLOW_UP, "cmp-1")]


def test_fast_response_hours_are_configurable(state, opened, rules_factory):
    rules = rules_factory(complaints={"first_response": {"hours": 4, "fast_hours": 0.5}})

    on_complaint_event(state, opened(complaint_id="a", channel="email"), rules)
    on_complaint_event(state, opened(complaint_id="b", channel="social"), rules)

    assert timers.find(state.timers, FIRST_RESPONSE, "a").due == ts(T0 + 4 * HOUR)
    assert timers.find(state.timers, FIRST_RESPONSE, "b").due == ts(T0 + 30 * MINUTE)


# -- solution within working days ---------------------------------------------------

FRIDAY_4PM = dt.datetime(2024, 3, 1, 16, 0, tzinfo=dt.UTC)


def test_three_working_days_from_friday_skip_the_weekend():
    due = add_working_days(ts(FRIDAY_4PM), 3, WorkCalendar())

    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 3, 6, 16, 0, tzinfo=dt.UTC)


def test_holidays_are_skipped_like_weekends():
    calendar = WorkCalendar(holidays=("2024-03-04",))

    due = add_working_days(ts(FRIDAY_4PM), 3, calendar)

    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 3, 7, 16, 0, tzinfo=dt.UTC)


def test_working_days_across_a_dst_change_keep_the_local_time():
    # Given London: Friday 29 March 2024 16:00 GMT; clocks go forward on Sunday 31 March;
    # Easter Monday 1 April is a holiday
    calendar = WorkCalendar(timezone="Europe/London", holidays=("2024-04-01",))
    start = dt.datetime(2024, 3, 29, 16, 0, tzinfo=dt.UTC)

    due = add_working_days(ts(start), 3, calendar)

    # Then Tue, Wed, Thu -> Thursday 4 April 16:00 BST = 15:00 UTC
    local = dt.datetime.fromtimestamp(due, ZoneInfo("Europe/London"))
    assert (local.date(), local.hour, local.minute) == (dt.date(2024, 4, 4), 16, 0)
    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 4, 4, 15, 0, tzinfo=dt.UTC)


def test_a_due_wall_time_the_clocks_skip_moves_by_the_gap_and_one_they_repeat_comes_first():
    # Given Berlin, where every day works: 02:30 does not exist on Sunday 31 March 2024
    # (02:00 CET -> 03:00 CEST) and comes twice on Sunday 27 October (03:00 CEST -> 02:00 CET)
    berlin = ZoneInfo("Europe/Berlin")
    every_day = WorkCalendar(timezone="Europe/Berlin", working_weekdays=(1, 2, 3, 4, 5, 6, 7))

    spring = add_working_days(ts(dt.datetime(2024, 3, 28, 2, 30, tzinfo=berlin)), 3, every_day)
    autumn = add_working_days(ts(dt.datetime(2024, 10, 24, 2, 30, tzinfo=berlin)), 3, every_day)

    # Then 02:30 CET, an hour into the gap: 03:30 CEST; and the first 02:30, in CEST
    assert dt.datetime.fromtimestamp(spring, dt.UTC) == dt.datetime(
        2024, 3, 31, 1, 30, tzinfo=dt.UTC
    )
    assert dt.datetime.fromtimestamp(autumn, dt.UTC) == dt.datetime(
        2024, 10, 27, 0, 30, tzinfo=dt.UTC
    )


def test_working_weekdays_are_configurable():
    six_day_week = WorkCalendar(working_weekdays=(1, 2, 3, 4, 5, 6))

    due = add_working_days(ts(FRIDAY_4PM), 3, six_day_week)

    # Saturday, Monday, Tuesday
    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 3, 5, 16, 0, tzinfo=dt.UTC)


def test_complex_complaint_gets_a_solution_timer_in_the_calendar(
    state, opened, complaint, rules_factory
):
    rules = rules_factory(complaints={"calendar": {**LONDON, "holidays": ["2024-04-01"]}})
    start = dt.datetime(2024, 3, 29, 16, 0, tzinfo=dt.UTC)

    on_complaint_event(
        state, opened(severity="high", complaint_type="product", at=start, event_id="e1"), rules
    )

    timer = timers.find(state.timers, SOLUTION, "cmp-1")
    assert timer is not None
    assert timer.due == ts(dt.datetime(2024, 4, 4, 15, 0, tzinfo=dt.UTC))
    assert timer.cause == "e1"


def test_resolution_before_the_solution_deadline_is_met(state, opened, complaint):
    on_complaint_event(state, opened(severity="critical", at=FRIDAY_4PM), RULES)
    on_complaint_event(state, complaint("acknowledged", at=FRIDAY_4PM + HOUR), RULES)

    out = on_complaint_event(
        state, complaint("resolved", at=dt.datetime(2024, 3, 6, 15, 59, tzinfo=dt.UTC)), RULES
    )

    assert out.met == [("logistics", "solution")]
    assert timers.find(state.timers, SOLUTION, "cmp-1") is None


@pytest.mark.parametrize(
    "resolved_first", [True, False], ids=["resolved-then-timer", "timer-then-resolved"]
)
def test_a_resolution_at_exactly_the_solution_deadline_is_a_breach_in_either_order(
    state, opened, complaint, resolved_first
):
    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM), RULES)
    on_complaint_event(state, complaint("acknowledged", at=FRIDAY_4PM + HOUR), RULES)
    due = dt.datetime(2024, 3, 6, 16, 0, tzinfo=dt.UTC)
    resolved = complaint("resolved", at=due)

    if resolved_first:
        first = on_complaint_event(state, resolved, RULES)
        fired = fire_due(state, due)
    else:
        fired = fire_due(state, due)
        first = on_complaint_event(state, resolved, RULES)

    assert first.met == [] and first.breaches == []
    assert fired.breaches == [("logistics", "solution")]
    assert only_action(fired.actions).rule_id == "complaint.solution"
    assert state.complaints["cmp-1"]["solution"] == "breached"


def test_a_solution_timer_of_an_earlier_round_does_nothing(state, opened, complaint):
    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM), RULES)
    stale = timers.find(state.timers, SOLUTION, "cmp-1")
    on_complaint_event(state, complaint("resolved", at=FRIDAY_4PM + HOUR), RULES)
    on_complaint_event(state, complaint("reopened", at=FRIDAY_4PM + 2 * HOUR), RULES)

    # The first round's deadline passes while the reopened round's is still ahead
    out = on_complaint_timer(state, stale, stale.due, ClockMode.EVENT, RULES)

    assert out == ComplaintOutcome()
    assert state.complaints["cmp-1"]["solution"] is None


def test_unsolved_complex_complaint_escalates_when_the_working_days_run_out(
    state, opened, complaint
):
    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM, event_id="e-open"), RULES)
    on_complaint_event(state, complaint("acknowledged", at=FRIDAY_4PM + HOUR), RULES)
    due = dt.datetime(2024, 3, 6, 16, 0, tzinfo=dt.UTC)

    assert fire_due(state, due - MINUTE).actions == []
    out = fire_due(state, due, clock=ClockMode.WALL)

    action = only_action(out.actions)
    assert out.breaches == [("logistics", "solution")]
    assert action.rule_id == "complaint.solution"
    assert action.params["deadline_kind"] == "solution"
    assert action.params["deadline"] == due.isoformat()
    assert action.created_at == due
    assert action.clock is ClockMode.WALL
    assert action.trigger_event_ids == ["e-open"]
    assert "3 working days" in action.reason


def test_simple_complaint_has_no_solution_deadline(state, opened):
    on_complaint_event(state, opened(severity="medium"), RULES)

    assert timer_kinds(state) == [(FIRST_RESPONSE, "cmp-1")]


def test_complex_types_are_configurable(state, opened, rules_factory):
    rules = rules_factory(complaints={"solution": {"complex_types": ["payment"]}})

    on_complaint_event(state, opened(complaint_type="payment", severity="low"), rules)

    assert timers.find(state.timers, SOLUTION, "cmp-1") is not None


def test_update_to_high_severity_starts_the_solution_deadline_from_the_opening(
    state, opened, complaint
):
    on_complaint_event(state, opened(severity="low", at=FRIDAY_4PM), RULES)

    on_complaint_event(
        state, complaint("updated", severity="high", at=FRIDAY_4PM + 5 * HOUR), RULES
    )

    timer = timers.find(state.timers, SOLUTION, "cmp-1")
    assert timer.due == ts(dt.datetime(2024, 3, 6, 16, 0, tzinfo=dt.UTC))
    assert state.complaints["cmp-1"]["state"] == "updated"
    # And back down: the deadline goes away without counting
    out = on_complaint_event(
        state, complaint("updated", severity="low", at=FRIDAY_4PM + 6 * HOUR), RULES
    )
    assert timers.find(state.timers, SOLUTION, "cmp-1") is None
    assert out.met == [] and out.breaches == []


def test_an_update_changes_the_type_and_a_late_one_does_not_undo_a_later_one(
    state, opened, complaint
):
    on_complaint_event(state, opened(complaint_type="logistics", severity="low"), RULES)
    on_complaint_event(
        state,
        complaint("updated", complaint_type="product", severity="medium", at=T0 + 2 * HOUR),
        RULES,
    )

    rec = state.complaints["cmp-1"]
    assert (rec["type"], rec["severity"], rec["state"]) == ("product", "medium", "updated")

    # An update dated before it, arriving after it: its type and severity do not apply
    on_complaint_event(
        state,
        complaint("updated", complaint_type="payment", severity="high", at=T0 + HOUR),
        RULES,
    )
    assert rec["type"] == "product"
    assert rec["severity"] == "medium"


def test_a_late_update_fills_in_a_type_and_severity_nothing_set_yet(state, complaint):
    # Given a complaint known only from its acknowledgment (its opening not read yet)
    on_complaint_event(state, complaint("acknowledged", at=T0 + 2 * HOUR), RULES)

    on_complaint_event(
        state,
        complaint("updated", complaint_type="product", severity="critical", at=T0 + HOUR),
        RULES,
    )

    rec = state.complaints["cmp-1"]
    assert (rec["type"], rec["severity"], rec["state"]) == ("product", "critical", "acknowledged")


def test_a_late_update_leaves_the_complaint_where_later_events_put_it(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("acknowledged", at=T0 + 2 * HOUR), RULES)

    on_complaint_event(state, complaint("updated", at=T0 + HOUR), RULES)

    assert state.complaints["cmp-1"]["state"] == "acknowledged"


def test_a_resolution_dated_before_the_last_event_still_resolves_the_complaint(
    state, opened, complaint
):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("acknowledged", at=T0 + 2 * HOUR), RULES)

    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    rec = state.complaints["cmp-1"]
    assert (rec["state"], rec["resolved_at"]) == ("resolved", ts(T0 + HOUR))
    assert timers.find(state.timers, FOLLOW_UP, "cmp-1") is not None


def test_an_event_at_the_same_instant_as_the_last_one_is_not_late(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)

    on_complaint_event(state, complaint("acknowledged", at=T0), RULES)

    assert state.complaints["cmp-1"]["state"] == "acknowledged"


# -- satisfaction follow-up ---------------------------------------------------------


def test_satisfaction_follow_up_24_hours_after_resolution(state, opened, complaint):
    state.profile.preferred_channels = ["sms", "email"]
    on_complaint_event(state, opened(complaint_type="product"), RULES)
    resolved_at = T0 + HOUR
    on_complaint_event(state, complaint("resolved", at=resolved_at, event_id="e-res"), RULES)

    assert fire_due(state, resolved_at + 24 * HOUR - MINUTE).actions == []
    out = fire_due(state, resolved_at + 24 * HOUR)

    action = only_action(out.actions)
    assert out.met == [("product", "follow_up")]
    assert action.action_type is ActionType.SATISFACTION_FOLLOW_UP
    assert action.priority is Priority.SERVICE
    assert action.channel is Channel.SMS  # the customer's preferred channel
    assert action.template_id == "complaint_satisfaction_follow_up"
    assert action.rule_id == "complaint.satisfaction_follow_up"
    assert action.trigger_event_ids == ["e-res"]
    assert action.created_at == resolved_at + 24 * HOUR
    assert action.expires_at == resolved_at + 72 * HOUR
    assert action.params == {
        "complaint_id": "cmp-1",
        "complaint_type": "product",
        "survey": "complaint_satisfaction",
    }
    assert action.action_id == action_id_for(
        "complaint.satisfaction_follow_up", "cust-9", "cmp-1:follow_up:0"
    )
    assert state.complaints["cmp-1"]["state"] == "resolved"


def test_follow_up_uses_the_configured_channel_and_template_without_a_preference(
    state, opened, complaint, rules_factory
):
    rules = rules_factory(
        complaints={"follow_up": {"channel": "push", "template_id": "csat_v2", "after_hours": 12}}
    )
    on_complaint_event(state, opened(), rules)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), rules)

    action = only_action(fire_due(state, T0 + 13 * HOUR, rules).actions)

    assert action.channel is Channel.PUSH
    assert action.template_id == "csat_v2"


def test_a_disabled_follow_up_is_not_scheduled(state, opened, complaint, rules_factory):
    rules = rules_factory(complaints={"follow_up": {"enabled": False}})
    on_complaint_event(state, opened(), rules)

    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), rules)

    assert timers.find(state.timers, FOLLOW_UP, "cmp-1") is None
    assert fire_due(state, T0 + 30 * HOUR, rules).actions == []


def test_follow_up_firing_after_its_expiry_is_a_breach_and_sends_nothing(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    # The worker was down for days: the timer fires long after it was due
    out = fire_due(state, T0 + HOUR + 24 * HOUR + 48 * HOUR)

    assert out.actions == []
    assert out.breaches == [("logistics", "follow_up")]


def test_closing_with_a_known_satisfaction_cancels_the_follow_up(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    out = on_complaint_event(state, complaint("closed", satisfied=True, at=T0 + 2 * HOUR), RULES)

    assert out.actions == []
    assert timer_kinds(state) == []
    assert state.complaints["cmp-1"]["state"] == "closed"
    assert open_complaints(state) == 0


def test_closing_without_a_satisfaction_answer_keeps_the_follow_up(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)
    on_complaint_event(state, complaint("closed", satisfied=None, at=T0 + 2 * HOUR), RULES)

    out = fire_due(state, T0 + 25 * HOUR)

    assert only_action(out.actions).action_type is ActionType.SATISFACTION_FOLLOW_UP


def test_a_follow_up_timer_of_an_earlier_round_asks_nothing(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)
    stale = timers.find(state.timers, FOLLOW_UP, "cmp-1")
    on_complaint_event(state, complaint("reopened", at=T0 + 2 * HOUR), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + 3 * HOUR), RULES)

    out = on_complaint_timer(state, stale, stale.due, ClockMode.EVENT, RULES)

    assert out == ComplaintOutcome()


# -- reopened, still unhappy --------------------------------------------------------


def test_reopening_escalates_once_per_reopening(state, opened, complaint):
    on_complaint_event(state, opened(complaint_type="service"), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    first = on_complaint_event(state, complaint("reopened", at=T0 + 5 * HOUR, event_id="r1"), RULES)
    repeat = on_complaint_event(state, complaint("reopened", at=T0 + 6 * HOUR), RULES)

    action = only_action(first.actions)
    assert action.action_type is ActionType.COMPLAINT_ESCALATION
    assert action.rule_id == "complaint.reopened"
    assert action.trigger_event_ids == ["r1"]
    assert action.created_at == T0 + 5 * HOUR
    assert action.params == {
        "complaint_id": "cmp-1",
        "complaint_type": "service",
        "deadline_kind": "reopened",
        "suggestion": "coupon_and_dedicated_agent",
    }
    assert "was reopened (reopening 1)" in action.reason
    assert repeat.actions == []
    # The reopening cancelled the satisfaction follow-up
    assert timers.find(state.timers, FOLLOW_UP, "cmp-1") is None
    assert state.complaints["cmp-1"]["state"] == "reopened"
    assert open_complaints(state) == 1

    # Resolved and reopened again: a second, different escalation
    on_complaint_event(state, complaint("resolved", at=T0 + 7 * HOUR), RULES)
    second = on_complaint_event(state, complaint("reopened", at=T0 + 8 * HOUR), RULES)
    assert only_action(second.actions).action_id != action.action_id
    assert "was reopened (reopening 2)" in second.actions[0].reason
    assert state.complaints["cmp-1"]["reopens"] == 2


def test_reopened_complex_complaint_gets_a_new_solution_deadline(state, opened, complaint):
    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM), RULES)
    on_complaint_event(state, complaint("resolved", at=FRIDAY_4PM + HOUR), RULES)
    reopened_at = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)  # Monday

    on_complaint_event(state, complaint("reopened", at=reopened_at, event_id="r1"), RULES)

    timer = timers.find(state.timers, SOLUTION, "cmp-1")
    assert timer.due == ts(dt.datetime(2024, 3, 7, 10, 0, tzinfo=dt.UTC))
    assert timer.cause == "r1"


def test_closed_unsatisfied_escalates_to_a_supervisor(state, opened, complaint):
    on_complaint_event(state, opened(complaint_type="product", severity="low"), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    out = on_complaint_event(
        state, complaint("closed", satisfied=False, at=T0 + 30 * HOUR, event_id="c1"), RULES
    )

    action = only_action(out.actions)
    assert action.rule_id == "complaint.unsatisfied"
    assert action.params["deadline_kind"] == "unsatisfied"
    assert action.params["suggestion"] == "exchange_with_extended_warranty"
    assert action.trigger_event_ids == ["c1"]
    assert "deadline" not in action.params
    assert timer_kinds(state) == []


def test_closed_satisfied_emits_nothing(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), RULES)

    out = on_complaint_event(state, complaint("closed", satisfied=True, at=T0 + 3 * HOUR), RULES)

    assert out.actions == []


# -- suggestions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("complaint_type", "severity", "suggestion"),
    [
        ("product", "medium", "exchange_with_extended_warranty"),
        ("product", "critical", "refund_with_20pct_coupon"),
        ("service", "low", "coupon_and_dedicated_agent"),
        ("logistics", "high", "reship_and_late_delivery_compensation"),
        ("payment", "medium", "supervisor_review"),
    ],
)
def test_escalation_suggests_a_resolution_by_type(
    state, opened, complaint_type, severity, suggestion
):
    on_complaint_event(state, opened(complaint_type=complaint_type, severity=severity), RULES)

    action = only_action(fire_due(state, T0 + 2 * HOUR).actions)

    assert action.params["suggestion"] == suggestion


def test_suggestions_come_from_configuration(state, opened, rules_factory):
    rules = rules_factory(
        complaints={
            "suggestions": [{"complaint_type": "payment", "suggestion": "refund_check"}],
            "default_suggestion": "call_customer",
        }
    )
    on_complaint_event(state, opened(complaint_id="a", complaint_type="payment"), rules)
    on_complaint_event(state, opened(complaint_id="b", complaint_type="product"), rules)

    actions = fire_due(state, T0 + 2 * HOUR, rules).actions

    assert sorted(a.params["suggestion"] for a in actions) == ["call_customer", "refund_check"]


# -- bounds, unknown and out-of-order events ----------------------------------------


def test_complaints_past_max_open_are_counted_but_not_tracked(state, opened, rules_factory):
    rules = rules_factory(complaints={"max_open": 2})

    for i in range(2):
        on_complaint_event(state, opened(complaint_id=f"c{i}"), rules)
    out = on_complaint_event(state, opened(complaint_id="c2", complaint_type="payment"), rules)

    assert out.opened == ["payment"]
    assert out.untracked == ["payment"]
    assert set(state.complaints) == {"c0", "c1"}
    assert timers.find(state.timers, FIRST_RESPONSE, "c2") is None
    assert open_complaints(state) == 2


def test_past_max_open_an_unknown_complaint_is_tracked_only_if_its_event_settles_it(
    state, opened, complaint, rules_factory
):
    rules = rules_factory(complaints={"max_open": 2})
    for i in range(2):
        on_complaint_event(state, opened(complaint_id=f"c{i}"), rules)

    on_complaint_event(state, complaint("acknowledged", complaint_id="acked"), rules)
    on_complaint_event(state, complaint("closed", complaint_id="closed", satisfied=True), rules)

    assert set(state.complaints) == {"c0", "c1", "closed"}
    assert open_complaints(state) == 2


def test_settled_complaints_are_kept_up_to_keep_settled(state, opened, complaint, rules_factory):
    rules = rules_factory(complaints={"keep_settled": 2})

    for i in range(4):
        at = T0 + i * HOUR
        on_complaint_event(state, opened(complaint_id=f"c{i}", at=at), rules)
        on_complaint_event(state, complaint("resolved", complaint_id=f"c{i}", at=at), rules)
    on_complaint_event(state, complaint("closed", complaint_id="c3", at=T0 + 9 * HOUR), rules)

    # The oldest resolved ones went as the newer ones settled, with their timers
    assert set(state.complaints) == {"c2", "c3"}
    assert timer_kinds(state) == [(FOLLOW_UP, "c2")]


def test_closed_complaints_are_dropped_before_resolved_ones(
    state, opened, complaint, rules_factory
):
    rules = rules_factory(complaints={"keep_settled": 1})
    on_complaint_event(state, opened(complaint_id="old"), rules)
    on_complaint_event(state, complaint("resolved", complaint_id="old", at=T0 + HOUR), rules)
    on_complaint_event(state, opened(complaint_id="new", at=T0 + 2 * HOUR), rules)

    # Closing "new" makes two settled complaints: the closed one is dropped,
    # the resolved one keeps its pending follow-up
    on_complaint_event(state, complaint("closed", complaint_id="new", at=T0 + 3 * HOUR), rules)

    assert set(state.complaints) == {"old"}
    assert timer_kinds(state) == [(FOLLOW_UP, "old")]


def test_many_complaints_keep_the_state_bounded(state, opened, complaint, rules_factory):
    rules = rules_factory(complaints={"max_open": 3, "keep_settled": 2})

    for i in range(50):
        at = T0 + i * HOUR
        on_complaint_event(state, opened(complaint_id=f"c{i}", at=at), rules)
        if i % 2:
            on_complaint_event(state, complaint("closed", complaint_id=f"c{i}", at=at), rules)

    assert open_complaints(state) <= 3
    assert len(state.complaints) <= 3 + 2
    assert len(state.timers) <= 3 * len(state.complaints)


def test_acknowledgment_of_an_unknown_complaint_is_recorded(state, opened, complaint):
    # Given an acknowledgment that arrives before its opening
    out = on_complaint_event(state, complaint("acknowledged", at=T0 + 30 * MINUTE), RULES)

    assert out.actions == [] and out.met == [] and out.opened == []
    rec = state.complaints["cmp-1"]
    assert rec["state"] == "acknowledged"
    assert rec["type"] is None and rec["opened_at"] is None
    assert state.timers == []

    # When the opening arrives, the response is found to have been in time
    late_open = on_complaint_event(state, opened(complaint_type="payment", at=T0), RULES)

    assert late_open.opened == ["payment"]
    assert late_open.met == [("payment", "first_response")]
    assert state.timers == []
    assert rec is state.complaints["cmp-1"] and rec["type"] == "payment"
    assert rec["state"] == "acknowledged"


def test_an_opening_that_arrives_after_its_round_began_does_not_take_its_cause(
    state, opened, complaint
):
    # Given the acknowledgment first, then the opening: the opening causes the deadline
    on_complaint_event(
        state, complaint("acknowledged", at=FRIDAY_4PM + HOUR, event_id="e-ack"), RULES
    )
    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM, event_id="e-open"), RULES)

    assert timers.find(state.timers, SOLUTION, "cmp-1").cause == "e-open"


def test_an_opening_that_arrives_after_a_reopening_leaves_the_reopening_the_cause(
    state, opened, complaint
):
    on_complaint_event(state, complaint("resolved", at=FRIDAY_4PM + HOUR), RULES)
    reopened_at = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)  # Monday
    on_complaint_event(state, complaint("reopened", at=reopened_at, event_id="r1"), RULES)

    on_complaint_event(state, opened(severity="high", at=FRIDAY_4PM, event_id="e-open"), RULES)

    timer = timers.find(state.timers, SOLUTION, "cmp-1")
    assert timer.cause == "r1"
    assert timer.due == ts(dt.datetime(2024, 3, 7, 10, 0, tzinfo=dt.UTC))


def test_a_resolution_that_arrives_after_the_closing_records_when_it_was_resolved(
    state, opened, complaint
):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("closed", at=T0 + 3 * HOUR), RULES)
    rec = state.complaints["cmp-1"]

    on_complaint_event(state, complaint("acknowledged", at=T0 + HOUR), RULES)  # late, not one
    assert rec["resolved_at"] is None

    on_complaint_event(state, complaint("resolved", at=T0 + 2 * HOUR), RULES)
    assert rec["state"] == "closed"
    assert rec["resolved_at"] == ts(T0 + 2 * HOUR)


def test_late_opening_after_a_late_response_fires_the_overdue_breach(state, opened, complaint):
    on_complaint_event(state, complaint("acknowledged", at=T0 + 3 * HOUR), RULES)
    on_complaint_event(state, opened(at=T0), RULES)

    out = fire_due(state, T0 + 3 * HOUR)

    assert out.breaches == [("logistics", "first_response")]
    assert len(out.actions) == 1


@pytest.mark.parametrize("kind", ["updated", "resolved", "reopened", "closed"])
def test_any_event_for_an_unknown_complaint_does_not_crash(state, complaint, kind):
    fields = {"satisfied": False} if kind == "closed" else {}
    out = on_complaint_event(state, complaint(kind, complaint_id="ghost", **fields), RULES)

    assert "ghost" in state.complaints
    assert out.opened == [] and out.breaches == [] and out.met == []
    for action in out.actions:  # reopen / unhappy close still reach a supervisor
        assert action.params["complaint_type"] == "unknown"
        assert action.params["suggestion"] == "supervisor_review"


def test_a_late_acknowledgment_changes_no_state(state, opened, complaint):
    on_complaint_event(state, opened(), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + 3 * HOUR), RULES)

    on_complaint_event(state, complaint("acknowledged", at=T0 + HOUR), RULES)

    rec = state.complaints["cmp-1"]
    assert rec["state"] == "resolved"
    assert rec["acknowledged_at"] == ts(T0 + HOUR)


def test_a_complaint_settled_at_or_before_its_opening_took_no_time_to_handle(
    state, opened, complaint
):
    on_complaint_event(state, opened(complaint_id="at-once"), RULES)
    at_once = on_complaint_event(state, complaint("resolved", complaint_id="at-once"), RULES)
    # A feed's clock behind another's: the resolution is dated before the opening
    on_complaint_event(state, complaint("resolved", complaint_id="skewed"), RULES)
    skewed = on_complaint_event(state, opened(complaint_id="skewed", at=T0 + MINUTE), RULES)

    assert at_once.handling == [("logistics", 0.0)]
    assert skewed.handling == [("logistics", 0.0)]


def test_the_handling_time_ends_at_the_resolution_or_a_closing_without_one(
    state, opened, complaint
):
    on_complaint_event(state, opened(complaint_id="resolved"), RULES)
    on_complaint_event(state, opened(complaint_id="closed"), RULES)

    resolved = on_complaint_event(
        state, complaint("resolved", complaint_id="resolved", at=T0 + HOUR), RULES
    )
    closed_after = on_complaint_event(
        state, complaint("closed", complaint_id="resolved", at=T0 + 2 * HOUR), RULES
    )
    closed = on_complaint_event(
        state, complaint("closed", complaint_id="closed", at=T0 + 3 * HOUR), RULES
    )

    assert resolved.handling == [("logistics", 3600.0)]
    assert closed_after.handling == []
    assert closed.handling == [("logistics", 3 * 3600.0)]


def test_a_repeated_opening_is_ignored(state, opened):
    on_complaint_event(state, opened(), RULES)

    out = on_complaint_event(state, opened(at=T0 + HOUR), RULES)

    assert out.opened == []
    assert timers.find(state.timers, FIRST_RESPONSE, "cmp-1").due == ts(T0 + 2 * HOUR)


def test_non_complaint_events_are_ignored(state, order_factory):
    out = on_complaint_event(state, order_factory(), RULES)

    assert out == ComplaintOutcome()
    assert state.complaints == {}


def test_a_timer_for_a_dropped_complaint_does_nothing(state):
    timer = timers.Timer(ts(T0), FIRST_RESPONSE, "gone", "evt-x", {"round": 0})

    out = on_complaint_timer(state, timer, ts(T0), ClockMode.EVENT, RULES)

    assert out == ComplaintOutcome()


def test_timer_limit_refusal_is_reported(state, opened):
    state.timers.append([ts(T0 + 99 * HOUR), "care.follow_up", "", "evt-0", {}])

    out = on_complaint_event(state, opened(), RULES, timer_limit=1)

    assert out.unscheduled == [("logistics", "first_response")]
    assert timer_kinds(state) == [("care.follow_up", "")]


# -- determinism, privacy, state ----------------------------------------------------


def test_replaying_the_same_script_gives_the_same_actions(
    customer_state_factory, opened, complaint
):
    script = [
        opened(event_id="e1", complaint_type="product", severity="high"),
        complaint("resolved", at=T0 + 130 * HOUR, event_id="e2"),
        complaint("reopened", at=T0 + 190 * HOUR, event_id="e3"),
    ]

    def run() -> list[str]:
        state = customer_state_factory("cust-9")
        actions: list[Action] = []
        for event in script:
            actions += fire_due(state, event.occurred_at).actions
            actions += on_complaint_event(state, event, RULES).actions
        actions += fire_due(state, T0 + 2000 * HOUR).actions
        return [a.model_dump_json() for a in actions]

    first = run()
    assert first == run()
    kinds = [Action.model_validate_json(a).rule_id for a in first]
    assert kinds == [
        "complaint.first_response",
        "complaint.solution",
        "complaint.satisfaction_follow_up",
        "complaint.reopened",
        "complaint.solution",
    ]


def test_the_complaint_note_never_reaches_an_action(state, opened, complaint):
    secret = "call me on 07700 900123, Jane Doe"
    on_complaint_event(state, opened(note=secret), RULES)
    on_complaint_event(state, complaint("resolved", at=T0 + 3 * HOUR, note=secret), RULES)
    actions = fire_due(state, T0 + 40 * HOUR).actions
    actions += on_complaint_event(
        state, complaint("closed", satisfied=False, at=T0 + 41 * HOUR, note=secret), RULES
    ).actions

    assert len(actions) == 3
    for action in actions:
        assert "07700" not in action.model_dump_json()
        assert "Jane" not in action.model_dump_json()
    assert "07700" not in repr(state.complaints)


def test_complaints_and_timers_survive_the_stored_form_and_copies(state, opened):
    on_complaint_event(state, opened(severity="high"), RULES)

    restored = CustomerState.from_dict(state.to_dict())
    clone = state.copy()
    clone.complaints["cmp-1"]["state"] = "closed"
    timers.pop_next(clone.timers, float("inf"))  # timer rows are replaced, never changed

    assert restored.complaints == state.complaints
    assert restored.timers == state.timers
    assert state.complaints["cmp-1"]["state"] == "opened"
    assert len(state.timers) == len(restored.timers) == len(clone.timers) + 1


def test_erasure_forgets_complaints_and_their_timers(state, opened, event_factory):
    on_complaint_event(state, opened(severity="high"), RULES)
    assert state.complaints and state.timers

    state.apply(event_factory("customer.erasure_requested", customer_id="cust-9"), RULES)

    assert state.complaints == {}
    assert state.timers == []


def test_disabled_rules_track_complaints_but_set_no_deadlines(
    state, opened, complaint, rules_factory
):
    rules = rules_factory(complaints={"enabled": False})

    on_complaint_event(state, opened(severity="high"), rules)
    on_complaint_event(state, complaint("resolved", at=T0 + HOUR), rules)
    out = on_complaint_event(state, complaint("reopened", at=T0 + 2 * HOUR), rules)

    assert out.actions == []
    assert state.timers == []
    assert open_complaints(state) == 1


# -- configuration ------------------------------------------------------------------


def test_defaults_are_the_handbooks_examples():
    rules = Rules().complaints

    assert rules.first_response.hours == 2
    assert rules.first_response.fast_hours == 1
    assert rules.first_response.fast_channels == ("social",)
    assert rules.solution.working_days == 3
    assert rules.solution.complex_severities == ("high", "critical")
    assert rules.follow_up.after_hours == 24
    assert rules.escalation.channel == "phone"
    assert rules.calendar.working_weekdays == (1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"calendar": {"timezone": "Mars/Olympus"}}, "complaints.calendar.timezone"),
        ({"calendar": {"working_weekdays": [1, 8]}}, "complaints.calendar.working_weekdays[1]"),
        ({"calendar": {"working_weekdays": []}}, "complaints.calendar.working_weekdays"),
        ({"calendar": {"working_weekdays": [1, 1]}}, "complaints.calendar.working_weekdays"),
        ({"calendar": {"holidays": ["2024-02-30"]}}, "complaints.calendar.holidays[0]"),
        ({"first_response": {"hours": 0}}, "complaints.first_response.hours"),
        ({"first_response": {"fast_hours": 3}}, "complaints.first_response.fast_hours"),
        (
            {"first_response": {"fast_channels": ["tiktok"]}},
            "complaints.first_response.fast_channels[0]",
        ),
        ({"solution": {"working_days": 0}}, "complaints.solution.working_days"),
        (
            {"solution": {"complex_severities": ["urgent"]}},
            "complaints.solution.complex_severities[0]",
        ),
        ({"solution": {"complex_types": ["weather"]}}, "complaints.solution.complex_types[0]"),
        ({"follow_up": {"channel": "fax"}}, "complaints.follow_up.channel"),
        ({"follow_up": {"after_hours": 0}}, "complaints.follow_up.after_hours"),
        ({"escalation": {"channel": "pigeon"}}, "complaints.escalation.channel"),
        ({"max_open": 0}, "complaints.max_open"),
        (
            {"suggestions": [{"complaint_type": "weather", "suggestion": "x"}]},
            "complaints.suggestions[0].complaint_type",
        ),
        (
            {
                "suggestions": [
                    {"complaint_type": "product", "suggestion": "x", "severities": ["x"]}
                ]
            },
            "complaints.suggestions[0].severities[0]",
        ),
        ({"suggestions": [{"complaint_type": "product"}]}, "complaints.suggestions[0].suggestion"),
        ({"sla_hours": 2}, "complaints.sla_hours"),
    ],
)
def test_configuration_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as err:
        Rules.from_mapping({"complaints": section})

    assert f"'{key}'" in str(err.value)


def test_a_rules_file_sets_the_calendar(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        "[complaints.calendar]\n"
        'timezone = "Asia/Shanghai"\n'
        'holidays = ["2024-10-01", "2024-10-02"]\n'
        "[complaints.solution]\nworking_days = 5\n",
        encoding="utf-8",
    )

    rules = Rules.load(path).complaints

    assert rules.calendar.timezone == "Asia/Shanghai"
    assert rules.calendar.holiday_dates == {dt.date(2024, 10, 1), dt.date(2024, 10, 2)}
    assert rules.solution.working_days == 5


def test_the_documented_configuration_is_the_defaults():
    doc = (Path(__file__).parents[2] / "docs" / "complaints.md").read_text(encoding="utf-8")
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]

    assert Rules.from_mapping(tomllib.loads(block)) == Rules()
