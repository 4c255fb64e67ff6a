"""The contact policy (agents.policy): pure decisions with an explicit clock.

Every time is written as an aware ISO string; ``now`` is the logical decision
time. Dates used: 2024-06-10 is a Monday; Europe/London changes clocks on
2024-03-31 (01:00 GMT -> 02:00 BST) and 2024-10-27 (02:00 BST -> 01:00 GMT);
America/New_York on 2024-03-10 (02:00 EST -> 03:00 EDT) and 2024-11-03
(02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agents.policy import (
    DAY,
    ContactContext,
    PolicyDecision,
    ReasonCode,
    Verdict,
    decide,
    decision_record,
    expired_on_delivery,
    held_out,
    ranked,
    record_contact,
)
from agents.rules import PolicyRules, Rules
from schemas.actions import Action, ActionType, Priority
from schemas.decisions import ActionDecision, decision_id_for
from schemas.errors import ConfigError

MARKETING = Priority.MARKETING
SERVICE = Priority.SERVICE


def ts(text: str) -> float:
    """Epoch seconds of an aware ISO time."""
    moment = dt.datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment.timestamp()


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def policy(**sections: Any) -> PolicyRules:
    """PolicyRules from a ``[policy]`` mapping, through the same loader as the rules file."""
    return Rules.from_mapping({"policy": sections}).policy


def make_action(
    at: str = "2024-06-10T10:00:00+00:00",
    *,
    priority: Priority = MARKETING,
    channel: str = "email",
    action_type: ActionType = ActionType.WIN_BACK,
    expires_at: str | None = None,
    not_before: str | None = None,
    action_id: str = "act-1",
) -> Action:
    return Action(
        action_id=action_id,
        customer_id="cust-0001",
        action_type=action_type,
        priority=priority,
        channel=channel,
        template_id="tpl",
        reason="test",
        rule_id="test.rule",
        trigger_event_ids=["evt-1"],
        created_at=dt.datetime.fromisoformat(at),
        expires_at=None if expires_at is None else dt.datetime.fromisoformat(expires_at),
        not_before=None if not_before is None else dt.datetime.fromisoformat(not_before),
    )


GRANTED_EMAIL = {"marketing:email": True}


def make_ctx(
    *,
    customer_id: str = "cust-0001",
    timezone: str = "UTC",
    preferred: tuple[str, ...] = (),
    consents: dict[str, bool] | None = None,
    history: list[list[Any]] | None = None,
    **guards: Any,
) -> ContactContext:
    return ContactContext(
        customer_id=customer_id,
        timezone=timezone,
        preferred_channels=preferred,
        consents=GRANTED_EMAIL if consents is None else consents,
        history=history or [],
        **guards,
    )


def run(
    action: Action,
    ctx: ContactContext,
    rules: PolicyRules | None = None,
    now: str | float | None = None,
) -> PolicyDecision:
    at = (
        action.created_at.timestamp() if now is None else now if isinstance(now, float) else ts(now)
    )
    return decide(action, ctx, at, rules or PolicyRules())


def sent(
    channel: str, at: str, priority: Priority = MARKETING, action_type: str | None = None
) -> list[Any]:
    row = [ts(at), channel, priority.value]
    return row if action_type is None else [*row, action_type]


# -- consent -------------------------------------------------------------------


def test_opt_in_marketing_without_a_grant_is_suppressed_for_no_consent():
    decision = run(make_action(), make_ctx(consents={}))

    assert decision.verdict is Verdict.SUPPRESS
    assert decision.code is ReasonCode.NO_CONSENT
    assert decision.channel is None
    assert "email, push, sms" in decision.reason


def test_opt_in_marketing_goes_only_to_a_channel_with_an_explicit_grant():
    decision = run(make_action(channel="email"), make_ctx(consents={"marketing:push": True}))

    assert decision.verdict is Verdict.SEND
    assert decision.channel == "push"
    assert decision.code is None
    assert "instead of email (no consent there)" in decision.reason


def test_opt_in_service_consent_does_not_allow_marketing():
    decision = run(make_action(), make_ctx(consents={"service:email": True}))

    assert decision.code is ReasonCode.NO_CONSENT


def test_opt_out_marketing_goes_out_without_any_consent_record():
    decision = run(make_action(), make_ctx(consents={}), policy(consent={"marketing": "opt_out"}))

    assert decision.verdict is Verdict.SEND
    assert decision.channel == "email"


def test_opt_out_marketing_skips_a_channel_with_an_explicit_withdrawal():
    rules = policy(consent={"marketing": "opt_out"})

    one = run(make_action(), make_ctx(consents={"marketing:email": False}), rules)
    every = run(
        make_action(),
        make_ctx(consents={f"marketing:{c}": False for c in ("email", "push", "sms")}),
        rules,
    )

    assert (one.verdict, one.channel) == (Verdict.SEND, "push")
    assert (every.verdict, every.code) == (Verdict.SUPPRESS, ReasonCode.NO_CONSENT)


@pytest.mark.parametrize("mode", ["opt_in", "opt_out"])
def test_service_goes_out_on_its_own_legal_basis_without_marketing_consent(mode):
    # Given a customer who never granted anything and withdrew marketing on email
    ctx = make_ctx(consents={"marketing:email": False})

    decision = run(make_action(priority=SERVICE), ctx, policy(consent={"marketing": mode}))

    assert (decision.verdict, decision.channel) == (Verdict.SEND, "email")


def test_service_skips_a_channel_whose_service_consent_was_withdrawn():
    ctx = make_ctx(consents={"service:email": False})

    decision = run(make_action(priority=SERVICE), ctx)

    assert (decision.verdict, decision.channel) == (Verdict.SEND, "push")


def test_service_withdrawn_on_every_candidate_channel_is_suppressed():
    ctx = make_ctx(consents={f"service:{c}": False for c in ("email", "push", "sms")})

    decision = run(make_action(priority=SERVICE), ctx)

    assert (decision.verdict, decision.code) == (Verdict.SUPPRESS, ReasonCode.NO_CONSENT)
    assert "No service consent" in decision.reason


# -- channel -------------------------------------------------------------------


def test_the_actions_own_channel_comes_first_when_it_has_consent():
    ctx = make_ctx(preferred=("sms",), consents={"marketing:sms": True, "marketing:push": True})

    decision = run(make_action(channel="push"), ctx)

    assert decision.channel == "push"


def test_preferred_channels_come_before_the_fallback_order_in_their_order():
    ctx = make_ctx(
        preferred=("wechat", "sms"),
        consents={"marketing:push": True, "marketing:sms": True, "marketing:wechat": True},
    )

    decision = run(make_action(channel="email"), ctx)

    assert decision.channel == "wechat"


def test_the_configured_fallback_order_decides_without_preferences():
    ctx = make_ctx(consents={"marketing:push": True, "marketing:sms": True})

    default = run(make_action(channel="email"), ctx)
    configured = run(make_action(channel="email"), ctx, policy(fallback_channels=["sms", "push"]))

    assert default.channel == "push"
    assert configured.channel == "sms"


def test_a_consented_channel_outside_every_candidate_list_is_never_used():
    ctx = make_ctx(consents={"marketing:phone": True})

    decision = run(make_action(channel="email"), ctx)

    assert decision.code is ReasonCode.NO_CONSENT


# -- quiet hours ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "verdict", "not_before"),
    [
        ("2024-06-10T20:59:59+00:00", Verdict.SEND, None),
        ("2024-06-10T21:00:00+00:00", Verdict.DEFER, "2024-06-11T08:00:00Z"),
        ("2024-06-11T03:00:00+00:00", Verdict.DEFER, "2024-06-11T08:00:00Z"),
        ("2024-06-11T07:59:59+00:00", Verdict.DEFER, "2024-06-11T08:00:00Z"),
        ("2024-06-11T08:00:00+00:00", Verdict.SEND, None),
    ],
)
def test_quiet_hours_boundaries_start_quiet_and_end_allowed(now, verdict, not_before):
    decision = run(make_action(now), make_ctx())

    assert decision.verdict is verdict
    assert (decision.not_before and utc(decision.not_before)) == not_before
    if verdict is Verdict.DEFER:
        assert decision.code is ReasonCode.QUIET_HOURS
        assert decision.channel == "email"
        assert "quiet hours 21:00-08:00 local time" in decision.reason


@pytest.mark.parametrize(
    ("zone", "now", "not_before"),
    [
        # London, spring forward: 22:00 GMT Saturday -> 08:00 BST Sunday = 07:00 UTC
        ("Europe/London", "2024-03-30T22:00:00+00:00", "2024-03-31T07:00:00Z"),
        # inside the short night itself, after the jump
        ("Europe/London", "2024-03-31T01:30:00+00:00", "2024-03-31T07:00:00Z"),
        # London, fall back: 21:30 BST Saturday -> 08:00 GMT Sunday = 08:00 UTC
        ("Europe/London", "2024-10-26T20:30:00+00:00", "2024-10-27T08:00:00Z"),
        # New York, spring forward: 01:00 EST -> 08:00 EDT = 12:00 UTC
        ("America/New_York", "2024-03-10T06:00:00+00:00", "2024-03-10T12:00:00Z"),
        # New York, fall back: 01:30 EDT (first pass) -> 08:00 EST = 13:00 UTC
        ("America/New_York", "2024-11-03T05:30:00+00:00", "2024-11-03T13:00:00Z"),
        # the day before each change, for contrast
        ("America/New_York", "2024-03-09T06:00:00+00:00", "2024-03-09T13:00:00Z"),
        ("America/New_York", "2024-11-02T05:30:00+00:00", "2024-11-02T12:00:00Z"),
    ],
)
def test_quiet_hours_defer_to_local_0800_across_a_dst_change(zone, now, not_before):
    decision = run(make_action(now), make_ctx(timezone=zone))

    assert decision.verdict is Verdict.DEFER
    assert decision.code is ReasonCode.QUIET_HOURS
    assert utc(decision.not_before) == not_before


def test_a_quiet_end_in_the_skipped_hour_is_the_instant_the_clock_jumps_past_it():
    # Given quiet hours ending at 01:30, which London skips on 2024-03-31
    rules = policy(quiet_hours={"end": "01:30"})
    ctx = make_ctx(timezone="Europe/London")

    # When marketing is decided at 00:30 GMT
    action = make_action("2024-03-31T00:30:00+00:00")
    deferred = run(action, ctx, rules)

    # Then it waits for 01:00 UTC (00:59:59 GMT -> 02:00 BST), and may go then, not earlier
    assert utc(deferred.not_before) == "2024-03-31T01:00:00Z"
    assert run(action, ctx, rules, deferred.not_before).verdict is Verdict.SEND
    assert run(action, ctx, rules, deferred.not_before - 1).verdict is Verdict.DEFER


def test_a_quiet_end_in_the_repeated_hour_is_its_first_occurrence():
    # Given quiet hours ending at 01:30, which London passes twice on 2024-10-27
    rules = policy(quiet_hours={"end": "01:30"})
    ctx = make_ctx(timezone="Europe/London")

    # When marketing is decided at midnight BST
    action = make_action("2024-10-26T23:00:00+00:00")
    decision = run(action, ctx, rules)

    # Then it waits for 01:30 BST = 00:30 UTC, the first time the clock shows 01:30
    assert utc(decision.not_before) == "2024-10-27T00:30:00Z"
    assert run(action, ctx, rules, decision.not_before).verdict is Verdict.SEND


def test_inside_the_second_pass_of_a_repeated_quiet_hour_the_end_is_ahead_not_behind():
    rules = policy(quiet_hours={"end": "01:30"})
    ctx = make_ctx(timezone="Europe/London")

    # 01:10 GMT, the second pass of the repeated hour: wall clock 01:10 is quiet again
    decision = run(make_action("2024-10-27T01:10:00+00:00"), ctx, rules)

    assert decision.verdict is Verdict.DEFER
    assert utc(decision.not_before) == "2024-10-27T01:30:00Z"


def test_service_is_not_subject_to_quiet_hours_unless_configured():
    night = make_action("2024-06-10T23:00:00+00:00", priority=SERVICE)

    default = run(night, make_ctx())
    configured = run(night, make_ctx(), policy(quiet_hours={"service": True}))

    assert default.verdict is Verdict.SEND
    assert (configured.verdict, utc(configured.not_before)) == (
        Verdict.DEFER,
        "2024-06-11T08:00:00Z",
    )


def test_quiet_hours_can_be_turned_off():
    decision = run(
        make_action("2024-06-10T23:00:00+00:00"), make_ctx(), policy(quiet_hours={"enabled": False})
    )

    assert decision.verdict is Verdict.SEND


def test_quiet_hours_within_one_day_use_that_days_end():
    rules = policy(quiet_hours={"start": "12:00", "end": "14:00"})

    lunch = run(make_action("2024-06-10T12:00:00+00:00"), make_ctx(), rules)
    evening = run(make_action("2024-06-10T22:00:00+00:00"), make_ctx(), rules)

    assert utc(lunch.not_before) == "2024-06-10T14:00:00Z"
    assert evening.verdict is Verdict.SEND


def test_an_unknown_time_zone_is_read_as_utc():
    decision = run(make_action("2024-06-10T22:00:00+00:00"), make_ctx(timezone="Mars/Olympus"))

    assert utc(decision.not_before) == "2024-06-11T08:00:00Z"


# -- frequency caps ----------------------------------------------------------------


def test_second_marketing_message_of_a_day_is_deferred_to_the_next_day_after_quiet_hours():
    ctx = make_ctx(history=[sent("email", "2024-06-10T09:00:00+00:00")])

    decision = run(make_action("2024-06-10T15:00:00+00:00"), ctx)

    assert decision.verdict is Verdict.DEFER
    assert decision.code is ReasonCode.FREQUENCY_CAP
    assert decision.channel == "email"
    assert utc(decision.not_before) == "2024-06-11T08:00:00Z"
    assert "email reached its cap of 1 per local day" in decision.reason


def test_the_next_free_day_starts_at_local_midnight_in_the_customers_zone():
    # Given a London customer (BST, UTC+1) who got a marketing email at 23:30 local
    ctx = make_ctx(timezone="Europe/London", history=[sent("email", "2024-06-10T22:30:00+00:00")])
    rules = policy(quiet_hours={"enabled": False})

    # When another comes at 23:45 local (still June 10 there, 22:45 UTC)
    same_day = run(make_action("2024-06-10T22:45:00+00:00"), ctx, rules)
    # and one at 00:30 local on June 11 (still June 10 in UTC)
    next_day = run(make_action("2024-06-10T23:30:00+00:00"), ctx, rules)

    # Then the first waits for local midnight, 23:00 UTC; the second goes
    assert utc(same_day.not_before) == "2024-06-10T23:00:00Z"
    assert next_day.verdict is Verdict.SEND


def test_a_channel_over_its_cap_is_skipped_for_one_with_room():
    ctx = make_ctx(
        consents={"marketing:email": True, "marketing:push": True},
        history=[sent("email", "2024-06-10T09:00:00+00:00")],
    )

    decision = run(make_action("2024-06-10T15:00:00+00:00"), ctx)

    assert (decision.verdict, decision.channel) == (Verdict.SEND, "push")
    assert "instead of email (held back longer there by a frequency cap)" in decision.reason
    assert "unreachable" not in decision.reason


def test_a_switch_that_passes_an_unreachable_channel_names_it_on_the_record():
    # Given e-mail (the action's channel) at its cap for the day, and push unreachable
    ctx = make_ctx(
        consents={"marketing:email": True, "marketing:push": True, "marketing:sms": True},
        preferred=("push", "sms"),
        history=[sent("email", "2024-06-10T09:00:00+00:00")],
        unreachable={"push": ts("2024-07-01T00:00:00+00:00")},
    )

    decision = run(make_action("2024-06-10T15:00:00+00:00"), ctx)

    assert (decision.verdict, decision.channel) == (Verdict.SEND, "sms")
    assert decision.code is ReasonCode.CHANNEL_UNREACHABLE
    assert decision.reason == (
        "Sent on sms instead of email (held back longer there by a frequency cap)"
        " (skipped as unreachable: push until 2024-07-01T00:00:00Z)."
    )


def test_service_is_never_deferred_by_a_full_cap():
    ctx = make_ctx(history=[sent("email", "2024-06-10T09:00:00+00:00")])

    decision = run(make_action("2024-06-10T15:00:00+00:00", priority=SERVICE), ctx)

    assert (decision.verdict, decision.channel) == (Verdict.SEND, "email")


def test_service_messages_count_towards_the_marketing_cap():
    ctx = make_ctx(history=[sent("email", "2024-06-10T09:00:00+00:00", SERVICE)])

    counted = run(make_action("2024-06-10T15:00:00+00:00"), ctx)
    not_counted = run(
        make_action("2024-06-10T15:00:00+00:00"), ctx, policy(caps={"count_service": False})
    )

    assert (counted.verdict, counted.code) == (Verdict.DEFER, ReasonCode.FREQUENCY_CAP)
    assert not_counted.verdict is Verdict.SEND


def test_mixed_priorities_service_first_then_marketing_waits_for_the_next_day():
    # Given a marketing email sent this morning
    history = [sent("email", "2024-06-10T09:00:00+00:00")]
    ctx = make_ctx(history=history)
    service = make_action("2024-06-10T12:00:00+00:00", priority=SERVICE, action_id="svc")

    # When a service message comes over the cap, it goes and is recorded
    assert run(service, ctx).verdict is Verdict.SEND
    record_contact(history, ts("2024-06-10T12:00:00+00:00"), "email", "service", 8, 50)

    # Then a marketing message that afternoon waits for the next day
    later = run(make_action("2024-06-10T16:00:00+00:00"), make_ctx(history=history))
    assert utc(later.not_before) == "2024-06-11T08:00:00Z"


def test_a_full_week_defers_marketing_to_the_start_of_the_next_local_week():
    # Given marketing emails on Monday, Tuesday and Wednesday (cap 3 a week)
    history = [sent("email", f"2024-06-{d}T10:00:00+00:00") for d in (10, 11, 12)]
    thursday = make_action("2024-06-13T10:00:00+00:00")

    decision = run(thursday, make_ctx(history=history))

    # Then Thursday's waits for Monday 08:00 (Monday 00:00 is in quiet hours)
    assert decision.code is ReasonCode.FREQUENCY_CAP
    assert utc(decision.not_before) == "2024-06-17T08:00:00Z"
    assert "email reached its cap of 3 per local week" in decision.reason


def test_the_week_starts_on_the_configured_day():
    history = [sent("email", f"2024-06-{d}T10:00:00+00:00") for d in (10, 11, 12)]
    thursday = make_action("2024-06-13T10:00:00+00:00")

    starts_thursday = run(
        thursday, make_ctx(history=history), policy(caps={"week_starts_on": "thursday"})
    )
    starts_sunday = run(
        thursday,
        make_ctx(history=history),
        policy(caps={"week_starts_on": "sunday"}, quiet_hours={"enabled": False}),
    )

    assert starts_thursday.verdict is Verdict.SEND
    assert utc(starts_sunday.not_before) == "2024-06-16T00:00:00Z"


def test_a_total_cap_holds_back_every_channel():
    ctx = make_ctx(
        consents={"marketing:email": True, "marketing:push": True},
        history=[sent("email", "2024-06-10T09:00:00+00:00")],
    )
    rules = policy(caps={"total_day": 1})

    # When a marketing push comes: push has room of its own, but not in the total
    decision = run(make_action("2024-06-10T15:00:00+00:00", channel="push"), ctx, rules)

    assert (decision.verdict, decision.channel) == (Verdict.DEFER, "push")
    assert decision.code is ReasonCode.FREQUENCY_CAP
    assert "the total cap of 1 per local day is reached" in decision.reason


def test_total_caps_count_each_send_once_and_hold_at_the_cap():
    rules = policy(caps={"total_day": 2, "total_week": 3})
    consents = {"marketing:email": True, "marketing:push": True, "marketing:sms": True}

    def push(at: str, *history: list[Any], caps: PolicyRules = rules) -> PolicyDecision:
        ctx = make_ctx(consents=consents, history=list(history))
        return run(make_action(at, channel="push"), ctx, caps)

    # Monday 10 June: one send of the day leaves room for a second, not a third
    monday = "2024-06-10T15:00:00+00:00"
    email, sms = (
        sent("email", "2024-06-10T09:00:00+00:00"),
        sent("sms", "2024-06-10T10:00:00+00:00"),
    )
    assert push(monday, email).verdict is Verdict.SEND
    assert "the total cap of 2 per local day is reached" in push(monday, email, sms).reason
    # Thursday: two sends earlier in the week leave room for a third, not a fourth
    thursday = "2024-06-13T15:00:00+00:00"
    week = [sent("email", "2024-06-11T09:00:00+00:00"), sent("sms", "2024-06-12T09:00:00+00:00")]
    assert push(thursday, *week).verdict is Verdict.SEND
    full = push(thursday, *week, sent("email", "2024-06-13T09:00:00+00:00"))
    assert "the total cap of 3 per local week is reached" in full.reason
    # A send of the next week's Monday is not in this week's count
    next_monday = sent("email", "2024-06-17T09:00:00+00:00")
    one_a_week = policy(caps={"total_week": 1})
    assert push("2024-06-16T15:00:00+00:00", next_monday, caps=one_a_week).verdict is Verdict.SEND


def test_a_cap_day_that_is_23_hours_long_still_ends_at_local_midnight():
    # London 2024-03-31 is 23 hours long; the next local day starts 2024-03-31T23:00Z
    ctx = make_ctx(timezone="Europe/London", history=[sent("email", "2024-03-31T00:30:00+00:00")])
    rules = policy(quiet_hours={"enabled": False})

    decision = run(make_action("2024-03-31T12:00:00+00:00"), ctx, rules)

    assert utc(decision.not_before) == "2024-03-31T23:00:00Z"


# -- deferral, re-evaluation, expiry ----------------------------------------------


@pytest.mark.parametrize(
    ("expires_at", "verdict"),
    [
        ("2024-06-11T07:59:59+00:00", Verdict.SUPPRESS),
        ("2024-06-11T08:00:00+00:00", Verdict.SUPPRESS),  # valid strictly before expires_at
        ("2024-06-11T08:00:01+00:00", Verdict.DEFER),
    ],
)
def test_a_deferral_that_reaches_expires_at_is_suppressed_as_expired(expires_at, verdict):
    ctx = make_ctx(history=[sent("email", "2024-06-10T09:00:00+00:00")])

    decision = run(make_action("2024-06-10T15:00:00+00:00", expires_at=expires_at), ctx)

    assert decision.verdict is verdict
    if verdict is Verdict.SUPPRESS:
        assert decision.code is ReasonCode.EXPIRED
        assert decision.not_before is None and decision.channel is None
        assert "email reached its cap of 1 per local day" in decision.reason


def test_deferred_then_re_evaluated_then_deferred_again_then_expired():
    # Given a capped customer and an action valid for two days
    history = [sent("email", "2024-06-10T09:00:00+00:00")]
    action = make_action("2024-06-10T15:00:00+00:00", expires_at="2024-06-12T12:00:00+00:00")

    # When it is decided, it is deferred to the next morning
    first = run(action, make_ctx(history=history))
    assert utc(first.not_before) == "2024-06-11T08:00:00Z"

    # When another marketing email took that slot first, re-evaluation defers it again
    record_contact(history, first.not_before, "email", "marketing", 8, 50)
    second = run(action, make_ctx(history=history), now=first.not_before)
    assert (second.verdict, utc(second.not_before)) == (Verdict.DEFER, "2024-06-12T08:00:00Z")

    # and at its new not_before it may go
    assert run(action, make_ctx(history=history), now=second.not_before).verdict is Verdict.SEND

    # When the customer got a third one first, the next slot is past expiry
    record_contact(history, second.not_before, "email", "marketing", 8, 50)
    third = run(action, make_ctx(history=history), now=second.not_before)
    assert (third.verdict, third.code) == (Verdict.SUPPRESS, ReasonCode.EXPIRED)


def test_on_the_live_clock_an_action_delivered_at_or_after_its_expiry_is_suppressed():
    # A history replayed on the live clock, or a backlog after an outage: the action goes
    # out now, at the wall clock, not at the event time it was decided on
    action = make_action("2024-06-10T10:00:00+00:00", expires_at="2024-06-11T10:00:00+00:00")

    before = expired_on_delivery(action, ts("2024-06-11T09:59:59+00:00"))
    at_expiry = expired_on_delivery(action, ts("2024-06-11T10:00:00+00:00"))

    assert before is None
    assert at_expiry is not None
    assert (at_expiry.verdict, at_expiry.code) == (Verdict.SUPPRESS, ReasonCode.EXPIRED)
    assert "before the worker reached it" in at_expiry.reason
    assert expired_on_delivery(make_action(), ts("2030-01-01T00:00:00+00:00")) is None


def test_an_action_already_past_its_expiry_is_suppressed():
    action = make_action("2024-06-10T10:00:00+00:00", expires_at="2024-06-10T11:00:00+00:00")

    decision = run(action, make_ctx(), now="2024-06-10T11:00:00+00:00")

    assert (decision.verdict, decision.code) == (Verdict.SUPPRESS, ReasonCode.EXPIRED)
    assert "before it could be sent" in decision.reason


def test_an_actions_own_not_before_defers_it_until_then():
    action = make_action("2024-06-10T10:00:00+00:00", not_before="2024-06-11T10:00:00+00:00")

    early = run(action, make_ctx())
    due = run(action, make_ctx(), now="2024-06-11T10:00:00+00:00")

    assert (early.verdict, early.code, utc(early.not_before)) == (
        Verdict.DEFER,
        ReasonCode.NOT_YET_DUE,
        "2024-06-11T10:00:00Z",
    )
    assert due.verdict is Verdict.SEND


def test_a_not_before_inside_quiet_hours_moves_on_to_their_end():
    action = make_action("2024-06-10T10:00:00+00:00", not_before="2024-06-10T22:00:00+00:00")

    decision = run(action, make_ctx())

    assert (decision.code, utc(decision.not_before)) == (
        ReasonCode.NOT_YET_DUE,
        "2024-06-11T08:00:00Z",
    )


# -- guardrails ------------------------------------------------------------------------


def test_an_open_complaint_stops_marketing_but_not_service():
    ctx = make_ctx(open_complaints=1)

    marketing = run(make_action(), ctx)
    service = run(make_action(priority=SERVICE), ctx)

    assert (marketing.verdict, marketing.code) == (Verdict.SUPPRESS, ReasonCode.OPEN_COMPLAINT)
    assert service.verdict is Verdict.SEND


@pytest.mark.parametrize(
    ("field", "code", "section", "days"),
    [
        ("last_return_at", ReasonCode.RECENT_RETURN, "return_days", 7),
        ("last_negative_review_at", ReasonCode.RECENT_NEGATIVE_REVIEW, "negative_review_days", 14),
    ],
)
def test_marketing_resumes_exactly_n_days_after_a_return_or_negative_review(
    field, code, section, days
):
    now = ts("2024-06-20T10:00:00+00:00")
    rules = policy(guardrails={section: days})

    inside = run(make_action(), make_ctx(**{field: now - days * DAY + 1}), rules, now)
    boundary = run(make_action(), make_ctx(**{field: now - days * DAY}), rules, now)

    assert (inside.verdict, inside.code) == (Verdict.SUPPRESS, code)
    assert f"within {days} days" in inside.reason
    assert f"(until {utc(now + 1)})" in inside.reason
    assert boundary.verdict is Verdict.SEND


def test_a_zero_day_guardrail_is_off():
    now = ts("2024-06-20T10:00:00+00:00")

    decision = run(
        make_action(), make_ctx(last_return_at=now), policy(guardrails={"return_days": 0}), now
    )

    assert decision.verdict is Verdict.SEND


def test_an_open_risk_flag_stops_marketing_unless_turned_off():
    ctx = make_ctx(open_risk_flags=1)

    default = run(make_action(), ctx)
    off = run(make_action(), ctx, policy(guardrails={"open_risk_flag": False}))

    assert (default.verdict, default.code) == (Verdict.SUPPRESS, ReasonCode.OPEN_RISK_FLAG)
    assert off.verdict is Verdict.SEND


def test_checks_run_in_order_consent_guardrails_holdout_timing():
    everything_in_holdout = policy(holdout={"share": 1.0})
    night = make_action("2024-06-10T23:00:00+00:00")

    no_consent = run(night, make_ctx(consents={}, open_complaints=1), everything_in_holdout)
    guarded = run(night, make_ctx(open_complaints=1), everything_in_holdout)
    held = run(night, make_ctx(), everything_in_holdout)

    assert no_consent.code is ReasonCode.NO_CONSENT
    assert guarded.code is ReasonCode.OPEN_COMPLAINT
    assert held.code is ReasonCode.HELD_OUT


# -- control groups -----------------------------------------------------------------


IDS = [f"cust-{i:05d}" for i in range(10_000)]


def test_holdout_gives_the_same_answer_on_every_call():
    first = [held_out(c, "win_back", 0.3) for c in IDS[:500]]

    assert [held_out(c, "win_back", 0.3) for c in IDS[:500]] == first
    assert any(first) and not all(first)


def test_holdout_does_not_depend_on_pythons_salted_hash():
    # Given two interpreters with different hash seeds
    code = (
        "from agents.policy import held_out;"
        "print(''.join('1' if held_out(f'cust-{i}', 'birthday', 0.5) else '0' for i in range(200)))"
    )
    answers = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
        ).stdout
        for seed in ("1", "2")
    }

    # Then both pick the same customers, and the same as this process
    here = "".join("1" if held_out(f"cust-{i}", "birthday", 0.5) else "0" for i in range(200))
    assert answers == {here + "\n"}


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_holdout_takes_roughly_the_configured_share(share):
    taken = sum(held_out(c, "win_back", share) for c in IDS) / len(IDS)

    # 10,000 draws: the standard deviation is at most 0.005
    assert abs(taken - share) < 0.02


def test_holdout_groups_of_different_action_types_are_independent():
    a = {c for c in IDS if held_out(c, "win_back", 0.5)}
    b = {c for c in IDS if held_out(c, "birthday", 0.5)}

    assert a != b
    assert abs(len(a & b) / len(IDS) - 0.25) < 0.02


def test_raising_the_share_only_adds_customers_to_the_control_group():
    small = {c for c in IDS if held_out(c, "win_back", 0.1)}
    large = {c for c in IDS if held_out(c, "win_back", 0.2)}

    assert small < large


def test_share_zero_holds_out_nobody_and_share_one_everybody():
    assert not any(held_out(c, "win_back", 0.0) for c in IDS[:1000])
    assert all(held_out(c, "win_back", 1.0) for c in IDS[:1000])


def test_holdout_per_action_type_overrides_the_default_share():
    rules = policy(holdout={"share": 0.0, "by_type": [{"action_type": "win_back", "share": 1.0}]})

    win_back = run(make_action(action_type=ActionType.WIN_BACK), make_ctx(), rules)
    birthday = run(make_action(action_type=ActionType.BIRTHDAY), make_ctx(), rules)

    assert (win_back.verdict, win_back.code, win_back.channel) == (
        Verdict.HOLD_OUT,
        ReasonCode.HELD_OUT,
        "email",
    )
    assert "100% of customers are held out of win_back" in win_back.reason
    assert birthday.verdict is Verdict.SEND


def test_service_actions_are_held_out_only_when_configured():
    escalation = make_action(priority=SERVICE, action_type=ActionType.COMPLAINT_ESCALATION)

    default = run(escalation, make_ctx(), policy(holdout={"share": 1.0}))
    included = run(escalation, make_ctx(), policy(holdout={"share": 1.0, "include_service": True}))

    assert default.verdict is Verdict.SEND
    assert included.verdict is Verdict.HOLD_OUT


def test_decide_holds_out_exactly_the_customers_held_out_names():
    rules = policy(holdout={"share": 0.3})
    verdicts = {c: run(make_action(), make_ctx(customer_id=c), rules).verdict for c in IDS[:300]}

    assert {c for c, v in verdicts.items() if v is Verdict.HOLD_OUT} == {
        c for c in IDS[:300] if held_out(c, "win_back", 0.3)
    }


# -- one coupon a day for a silent customer -------------------------------------------

#: Bought 40 days before 2024-06-10: silent (policy.coupons.silent_after_days = 30).
SILENT = ts("2024-05-01T10:00:00+00:00")
#: Two channels granted and wide caps: only the coupon limit can hold a coupon back.
ROOMY = {"caps": {"per_channel_day": 5, "per_channel_week": 10}}
BOTH = {"marketing:email": True, "marketing:sms": True}


def coupon(at: str = "2024-06-10T15:00:00+00:00", **kw: Any) -> Action:
    return make_action(at, action_type=ActionType.REPURCHASE_REMINDER, **kw)


def test_a_second_coupon_on_a_local_day_is_suppressed_for_a_silent_customer():
    # Given a silent customer who got a welcome-back coupon this morning
    history = [sent("email", "2024-06-10T09:00:00+00:00", action_type="welcome_back")]
    ctx = make_ctx(consents=BOTH, history=history, last_purchase_at=SILENT)

    # When a repurchase reminder (a coupon too) comes in the afternoon
    decision = run(coupon(), ctx, policy(**ROOMY))

    # Then it is dropped: one coupon a local day
    assert (decision.verdict, decision.code) == (Verdict.SUPPRESS, ReasonCode.FREQUENCY_CAP)
    assert "one coupon per local day for a silent customer" in decision.reason
    assert "2024-06-10" in decision.reason


def test_the_next_local_day_has_room_for_a_coupon_again():
    history = [sent("email", "2024-06-10T09:00:00+00:00", action_type="welcome_back")]
    ctx = make_ctx(consents=BOTH, history=history, last_purchase_at=SILENT)

    decision = run(coupon("2024-06-11T09:00:00+00:00"), ctx, policy(**ROOMY))

    assert decision.verdict is Verdict.SEND


def test_the_coupon_day_is_the_customers_local_day():
    # Given a Shanghai customer (UTC+8) who got a coupon at 01:00 local on June 11
    history = [sent("email", "2024-06-10T17:00:00+00:00", action_type="birthday")]
    ctx = make_ctx(
        timezone="Asia/Shanghai", consents=BOTH, history=history, last_purchase_at=SILENT
    )
    rules = policy(quiet_hours={"enabled": False}, **ROOMY)

    # When coupons come at 23:30 local on June 10 and at 11:00 local on June 11
    before = run(coupon("2024-06-10T15:30:00+00:00"), ctx, rules)
    same_day = run(coupon("2024-06-11T03:00:00+00:00"), ctx, rules)

    # Then only the one on the same local day is held back
    assert before.verdict is Verdict.SEND
    assert same_day.verdict is Verdict.SUPPRESS


@pytest.mark.parametrize(
    ("last_purchase_at", "limited"),
    [
        (ts("2024-05-11T15:00:00+00:00"), True),  # exactly 30 days before: silent
        (ts("2024-05-11T15:00:01+00:00"), False),  # a second less
        (None, False),  # never bought: not silent
    ],
)
def test_only_silent_customers_are_held_to_one_coupon_a_day(last_purchase_at, limited):
    history = [sent("email", "2024-06-10T09:00:00+00:00", action_type="welcome_back")]
    ctx = make_ctx(consents=BOTH, history=history, last_purchase_at=last_purchase_at)

    decision = run(coupon(), ctx, policy(**ROOMY))

    assert (decision.verdict is Verdict.SUPPRESS) is limited


def _silent_ctx(*rows: list[Any]) -> ContactContext:
    return make_ctx(consents=BOTH, history=list(rows), last_purchase_at=SILENT)


def test_what_counts_as_a_coupon_is_marketing_of_a_listed_type():
    rules = policy(**ROOMY)
    morning = "2024-06-10T09:00:00+00:00"

    # a service message of a listed type, an unlisted type, an old row without a type:
    # none of them used up the day's coupon
    for row in (
        sent("email", morning, SERVICE, "win_back_escalation"),
        sent("email", morning, MARKETING, "browse_recommendation"),
        sent("email", morning),
    ):
        assert run(coupon(), _silent_ctx(row), rules).verdict is Verdict.SEND
    # and neither a service action nor an unlisted type is held back by one
    coupon_sent = sent("email", morning, MARKETING, "welcome_back")
    for action in (
        coupon(priority=SERVICE),
        make_action("2024-06-10T15:00:00+00:00", action_type=ActionType.TIER_NUDGE),
    ):
        assert run(action, _silent_ctx(coupon_sent), rules).verdict is Verdict.SEND


def test_the_coupon_limit_can_be_raised_or_turned_off():
    history = [sent("email", "2024-06-10T09:00:00+00:00", action_type="welcome_back")]
    ctx = make_ctx(consents=BOTH, history=history, last_purchase_at=SILENT)

    two = run(coupon(), ctx, policy(coupons={"per_day": 2}, **ROOMY))
    off = run(coupon(), ctx, policy(coupons={"enabled": False}, **ROOMY))

    assert two.verdict is Verdict.SEND
    assert off.verdict is Verdict.SEND


def test_over_limit_defer_holds_the_coupon_to_the_next_local_day_after_quiet_hours():
    history = [sent("email", "2024-06-10T09:00:00+00:00", action_type="welcome_back")]
    ctx = make_ctx(consents=BOTH, history=history, last_purchase_at=SILENT)

    decision = run(coupon(), ctx, policy(coupons={"over_limit": "defer"}, **ROOMY))

    assert (decision.verdict, decision.code) == (Verdict.DEFER, ReasonCode.FREQUENCY_CAP)
    assert utc(decision.not_before) == "2024-06-11T08:00:00Z"
    assert "one coupon per local day for a silent customer" in decision.reason


def test_two_coupons_of_one_moment_are_put_in_order_too():
    birthday = make_action(action_type=ActionType.BIRTHDAY, action_id="b")
    welcome_back = make_action(action_type=ActionType.WELCOME_BACK, action_id="w")

    in_order = ranked([birthday, welcome_back], PolicyRules())

    assert [a.action_id for a in in_order] == ["w", "b"]


def test_ranked_puts_coupons_in_the_configured_order_and_leaves_the_rest_in_place():
    def act(action_type: ActionType, priority: Priority = MARKETING) -> Action:
        return make_action(action_type=action_type, priority=priority, action_id=action_type)

    candidates = [
        act(ActionType.REPURCHASE_REMINDER),
        act(ActionType.FOLLOW_UP, SERVICE),
        act(ActionType.BIRTHDAY),
        act(ActionType.TIER_NUDGE),
        act(ActionType.WELCOME_BACK),
    ]

    default = [a.action_type.value for a in ranked(candidates, PolicyRules())]
    birthday_first = ranked(
        candidates, policy(coupons={"order": ["birthday", "welcome_back", "repurchase_reminder"]})
    )

    assert default == [
        "welcome_back",
        "follow_up",
        "repurchase_reminder",
        "tier_nudge",
        "birthday",
    ]
    assert [a.action_type.value for a in birthday_first] == [
        "birthday",
        "follow_up",
        "welcome_back",
        "tier_nudge",
        "repurchase_reminder",
    ]
    assert ranked(candidates, policy(coupons={"enabled": False})) == candidates


# -- contact history ---------------------------------------------------------------


def test_record_contact_keeps_history_sorted_and_bounded_in_time():
    history: list[list[Any]] = []
    t = ts("2024-06-10T10:00:00+00:00")

    record_contact(history, t, "email", "marketing", 8, 50)
    record_contact(history, t - 3 * DAY, "push", "service", 8, 50)
    record_contact(history, t + 8 * DAY, "sms", "marketing", 8, 50)

    # the push 11 days before the newest is gone; exactly 8 days before is kept
    assert history == [[t, "email", "marketing"], [t + 8 * DAY, "sms", "marketing"]]


def test_record_contact_records_the_action_type_when_given():
    history: list[list[Any]] = []
    t = ts("2024-06-10T10:00:00+00:00")

    record_contact(history, t, "email", "marketing", 8, 50, "welcome_back")
    record_contact(history, t + 1, "sms", "service", 8, 50)

    assert history == [[t, "email", "marketing", "welcome_back"], [t + 1, "sms", "service"]]


def test_record_contact_keeps_at_most_max_entries_dropping_the_oldest():
    history: list[list[Any]] = []
    t = ts("2024-06-10T10:00:00+00:00")

    for i in range(5):
        record_contact(history, t + i, "email", "service", 8, 3)

    assert [row[0] for row in history] == [t + 2, t + 3, t + 4]


# -- the decision record ---------------------------------------------------------------


def test_decision_record_carries_the_decision_and_a_deterministic_id():
    action = make_action("2024-06-10T22:00:00+00:00")
    decision = run(action, make_ctx())
    now = action.created_at.timestamp()

    record = decision_record(action, decision, now)

    assert isinstance(record, ActionDecision)
    doc = record.model_dump(mode="json")
    assert doc["decision"] == "deferred"
    assert doc["code"] == "quiet_hours"
    assert doc["channel"] == "email"
    assert doc["action_type"] == "win_back"
    assert doc["not_before"] == "2024-06-11T08:00:00Z"
    assert doc["decided_at"] == "2024-06-10T22:00:00Z"
    assert uuid.UUID(doc["decision_id"]).version == 5
    assert record == decision_record(action, decision, now)
    assert ActionDecision.model_validate_json(json.dumps(doc)) == record


def test_decision_ids_differ_by_verdict_and_time():
    at = dt.datetime(2024, 6, 10, 22, tzinfo=dt.UTC)
    same_instant = at.astimezone(dt.timezone(dt.timedelta(hours=2)))

    assert decision_id_for("a", "deferred", at) == decision_id_for("a", "deferred", same_instant)
    assert decision_id_for("a", "deferred", at) != decision_id_for("a", "sent", at)
    assert decision_id_for("a", "deferred", at) != decision_id_for(
        "a", "deferred", at + dt.timedelta(seconds=1)
    )


def test_reasons_name_no_customer():
    ctx = make_ctx(customer_id="alice@example.com", open_complaints=1)

    reasons = [
        run(make_action(), ctx).reason,
        run(make_action(), make_ctx(customer_id="alice@example.com", consents={})).reason,
        run(
            make_action("2024-06-10T23:00:00+00:00"), make_ctx(customer_id="alice@example.com")
        ).reason,
    ]

    assert all("alice" not in r for r in reasons)


# -- configuration ------------------------------------------------------------------------


def test_policy_defaults():
    rules = Rules().policy

    assert rules.consent.marketing == "opt_in"
    assert rules.fallback_channels == ("email", "push", "sms")
    assert (rules.quiet_hours.start, rules.quiet_hours.end) == ("21:00", "08:00")
    assert rules.quiet_hours.service is False
    assert (rules.caps.per_channel_day, rules.caps.per_channel_week) == (1, 3)
    assert (rules.caps.total_day, rules.caps.total_week) == (None, None)
    assert rules.caps.count_service is True
    assert (rules.guardrails.return_days, rules.guardrails.negative_review_days) == (7, 7)
    assert rules.holdout.share == 0.0
    assert rules.holdout.share_for("win_back") == 0.0
    coupons = rules.coupons
    assert (coupons.enabled, coupons.per_day, coupons.over_limit) == (True, 1, "suppress")
    assert coupons.order == (
        "win_back_escalation",
        "welcome_back",
        "repurchase_reminder",
        "birthday",
        "anniversary",
        "vip_coupon",
    )
    assert coupons.silent_after_days == 30


def test_a_silent_customer_is_one_definition_unless_the_policy_names_its_own():
    assert (
        Rules.from_mapping({"care": {"win_back": {"silent_days": 12}}}).policy.coupons.silent_days
        == 12
    )
    own = Rules.from_mapping(
        {
            "care": {"win_back": {"silent_days": 12}},
            "policy": {"coupons": {"silent_after_days": 45}},
        }
    )
    assert own.policy.coupons.silent_days == 45


def test_policy_section_loads_from_a_rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        "[policy]\n"
        'fallback_channels = ["sms", "wechat"]\n'
        "[policy.consent]\n"
        'marketing = "opt_out"\n'
        "[policy.quiet_hours]\n"
        'start = "22:30"\nend = "07:15"\n'
        "[policy.caps]\n"
        "per_channel_day = 2\ntotal_week = 5\n"
        "[policy.guardrails]\n"
        "negative_review_days = 30\n"
        "[policy.holdout]\n"
        "share = 0.05\n"
        "[[policy.holdout.by_type]]\n"
        'action_type = "win_back"\nshare = 0.2\n',
        encoding="utf-8",
    )

    rules = Rules.load(path).policy

    assert rules.fallback_channels == ("sms", "wechat")
    assert rules.consent.marketing == "opt_out"
    assert (rules.quiet_hours.start_time, rules.quiet_hours.end_time) == (
        dt.time(22, 30),
        dt.time(7, 15),
    )
    assert (rules.caps.per_channel_day, rules.caps.total_week) == (2, 5)
    assert rules.guardrails.negative_review_days == 30
    assert rules.holdout.share_for("win_back") == 0.2
    assert rules.holdout.share_for("birthday") == 0.05


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        (
            {"fallback_channels": ["email", "pigeon"]},
            "policy.fallback_channels[1]",
            "unknown channel",
        ),
        ({"fallback_channels": ["sms", "sms"]}, "policy.fallback_channels[1]", "listed twice"),
        ({"consent": {"marketing": "maybe"}}, "policy.consent.marketing", "opt_in, opt_out"),
        ({"quiet_hours": {"start": "25:00"}}, "policy.quiet_hours.start", "HH:MM"),
        ({"quiet_hours": {"end": "8:00"}}, "policy.quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"end": "08:60"}}, "policy.quiet_hours.end", "HH:MM"),
        ({"quiet_hours": {"start": "08:00"}}, "policy.quiet_hours.end", "must differ"),
        ({"caps": {"per_channel_day": 0}}, "policy.caps.per_channel_day", ">= 1"),
        ({"caps": {"per_channel_day": 4}}, "policy.caps.per_channel_day", "per_channel_week"),
        ({"caps": {"total_day": 3, "total_week": 2}}, "policy.caps.total_day", "total_week"),
        ({"caps": {"per_channel_week": 60}}, "policy.caps.per_channel_week", "history_max"),
        ({"caps": {"week_starts_on": "funday"}}, "policy.caps.week_starts_on", "monday"),
        ({"guardrails": {"return_days": -1}}, "policy.guardrails.return_days", ">= 0"),
        ({"history_days": 6}, "policy.history_days", ">= 7"),
        ({"holdout": {"share": 1.5}}, "policy.holdout.share", "between 0 and 1"),
        ({"holdout": {"share": -0.1}}, "policy.holdout.share", "between 0 and 1"),
        (
            {"holdout": {"by_type": [{"action_type": "spam", "share": 0.1}]}},
            "policy.holdout.by_type[0].action_type",
            "unknown action type",
        ),
        (
            {
                "holdout": {
                    "by_type": [
                        {"action_type": "birthday", "share": 0.1},
                        {"action_type": "birthday", "share": 0.2},
                    ]
                }
            },
            "policy.holdout.by_type[1].action_type",
            "listed twice",
        ),
        (
            {"holdout": {"by_type": [{"action_type": "birthday", "share": 2}]}},
            "policy.holdout.by_type[0].share",
            "between 0 and 1",
        ),
        (
            {"holdout": {"by_type": [{"action_type": "birthday"}]}},
            "policy.holdout.by_type[0].share",
            "required",
        ),
        ({"quiet": {}}, "policy.quiet", "unknown key"),
        ({"coupons": {"per_day": 0}}, "policy.coupons.per_day", ">= 1"),
        ({"coupons": {"over_limit": "drop"}}, "policy.coupons.over_limit", "suppress, defer"),
        ({"coupons": {"order": ["welcome_back", "spam"]}}, "policy.coupons.order[1]", "unknown"),
        (
            {"coupons": {"order": ["birthday", "birthday"]}},
            "policy.coupons.order[1]",
            "listed twice",
        ),
        ({"coupons": {"silent_after_days": -1}}, "policy.coupons.silent_after_days", ">= 0"),
    ],
)
def test_a_wrong_policy_section_is_a_config_error_naming_the_key(section, key, problem):
    with pytest.raises(ConfigError) as caught:
        Rules.from_mapping({"policy": section})

    assert caught.value.key == key
    assert problem in caught.value.problem
