"""Closing the loop (agents.outcomes): messaging outcomes change consent and reach, the
contact policy falls back to the next channel, and purchases convert the actions
(treated or held out) -- pure, through the customer fold, with an explicit clock."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from agents import outcomes
from agents.customer_events import Decision, decide, fold_batch, route
from agents.journal import O_CHANNEL
from agents.rules import Rules
from agents.state import CustomerState, Profile
from schemas.actions import Action, ActionType, Priority
from schemas.conversions import Group, conversion_id_for
from schemas.deadletter import DeadLetter, ErrorCode
from schemas.decisions import ReasonCode, Verdict
from schemas.errors import ConfigError
from schemas.ingress import admit
from tests.unit.conftest import CUSTOMER, T0

DAY = 86_400.0


def at(days: float = 0, hours: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=days, hours=hours)


def rules(welcome: bool = False, **outcome_rules: Any) -> Rules:
    """No quiet hours, no caps, no care rules in the way: only what outcomes do."""
    return Rules.from_mapping(
        {
            "welcome": {"enabled": welcome},
            "care": {"enabled": False},
            "policy": {
                "quiet_hours": {"enabled": False},
                "caps": {"per_channel_day": 50, "per_channel_week": 50},
                "holdout": {"by_type": [{"action_type": "welcome_back", "share": 1.0}]},
            },
            "outcomes": outcome_rules,
        }
    )


def customer() -> CustomerState:
    """Prefers e-mail, then SMS; marketing consent on both."""
    return CustomerState(
        customer_id=CUSTOMER,
        profile=Profile(
            preferred_channels=["email", "sms"],
            consents={"marketing:email": True, "marketing:sms": True},
        ),
    )


def action(
    when: dt.datetime,
    action_id: str = "act-1",
    action_type: ActionType = ActionType.REPURCHASE_REMINDER,
    channel: str = "email",
) -> Action:
    return Action(
        action_id=action_id,
        customer_id=CUSTOMER,
        action_type=action_type,
        priority=Priority.MARKETING,
        channel=channel,
        template_id="tpl",
        reason="test",
        rule_id="test.rule",
        trigger_event_ids=["evt-1"],
        created_at=when,
    )


def send(state: CustomerState, a: Action, r: Rules) -> Decision:
    decision = Decision()
    route(state, [a], None, r, decision)
    return decision


@pytest.fixture
def outcome(event_factory: Callable[..., Any]) -> Callable[..., Any]:
    def make(kind: str, when: dt.datetime, action_id: str = "act-1", channel: str = "email"):
        return event_factory(f"outcome.{kind}", at=when, action_id=action_id, channel=channel)

    return make


# -- consequences ------------------------------------------------------------------


def test_unsubscribe_withdraws_marketing_consent_on_that_channel_with_a_record(outcome):
    # Given a customer who was sent a reminder by e-mail
    r, state = rules(), customer()
    assert [a.channel.value for a in send(state, action(at()), r).actions] == ["email"]

    # When the messaging service reports an unsubscribe from it
    decision = decide(state, outcome("unsubscribed", at(hours=1)), r)

    # Then marketing consent on e-mail is withdrawn, on the record
    assert state.profile.consents["marketing:email"] is False
    (record,) = decision.verdicts
    assert record.decision is Verdict.CHANNEL_CLOSED
    assert record.code is ReasonCode.UNSUBSCRIBED
    assert record.action_id == "act-1"
    assert record.action_type is ActionType.REPURCHASE_REMINDER
    assert record.channel.value == "email"
    assert CUSTOMER not in record.reason
    # And the next marketing action goes on SMS, never on e-mail
    later = send(state, action(at(days=2), "act-2"), r)
    assert [a.channel.value for a in later.actions] == ["sms"]


def test_spam_report_on_the_only_channel_suppresses_later_marketing(outcome):
    # Given consent on e-mail only
    r, state = rules(), customer()
    state.profile.consents = {"marketing:email": True}
    send(state, action(at()), r)

    # When the customer reports the message as spam
    (record,) = decide(state, outcome("spam_reported", at(hours=1)), r).verdicts

    # Then the channel is closed and the next marketing action is suppressed, no_consent
    assert record.code is ReasonCode.SPAM_REPORTED
    later = send(state, action(at(days=2), "act-2"), r)
    assert later.actions == []
    assert [v.code for v in later.verdicts] == [ReasonCode.NO_CONSENT]


def test_three_bounces_make_the_channel_unreachable_and_the_next_one_is_used(outcome):
    # Given three e-mails sent
    r, state = rules(), customer()
    for i in range(3):
        send(state, action(at(days=i), f"act-{i}"), r)

    # When all three bounce
    records = [
        v
        for i in range(3)
        for v in decide(state, outcome("bounced", at(days=i, hours=1), f"act-{i}"), r).verdicts
    ]

    # Then the third marks e-mail unreachable for 30 days, on the record
    (closed,) = records
    assert closed.decision is Verdict.CHANNEL_CLOSED
    assert closed.code is ReasonCode.CHANNEL_UNREACHABLE
    assert closed.action_id == "act-2"
    assert "3 sends in a row bounced or failed" in closed.reason
    # And the next e-mail action goes on SMS, recorded as moved past the unreachable channel
    moved = send(state, action(at(days=5), "act-9"), r)
    assert [a.channel.value for a in moved.actions] == ["sms"]
    (record,) = moved.verdicts
    assert (record.decision, record.code) == (Verdict.SEND, ReasonCode.CHANNEL_UNREACHABLE)
    assert "instead of email (unreachable until" in record.reason
    # (and the customer's journal names the channel it went out on)
    assert state.journal.outcomes[-1][O_CHANNEL] == "sms"
    # And after outcomes.unreachable_days e-mail is used again, a plain send
    back = send(state, action(at(days=2, hours=1) + dt.timedelta(days=30), "act-10"), r)
    assert [a.channel.value for a in back.actions] == ["email"]
    assert back.verdicts == []


@pytest.mark.parametrize("reached", ["delivered", "opened"])
def test_a_delivery_or_an_open_between_bounces_resets_the_count(outcome, reached):
    # Two bounces, a message that reached them, two more failures: three never in a row
    r, state = rules(), customer()
    events = ["bounced", "bounced", reached, "bounced", "failed"]
    records = [
        v for i, kind in enumerate(events) for v in decide(state, outcome(kind, at(i)), r).verdicts
    ]

    assert records == []
    assert outcomes.closed_channels(state) == {}


@pytest.mark.parametrize(
    ("kind", "limits"),
    [("bounced", {"bounces": 3}), ("delivered", {"unopened_deliveries": 3})],
)
def test_a_channel_reachable_again_counts_from_nothing(outcome, kind, limits):
    # Given e-mail closed by three bounces (or unopened deliveries) in a row
    r, state = rules(**limits), customer()
    for i in range(3):
        decide(state, outcome(kind, at(hours=i)), r)
    until = outcomes.closed_channels(state)["email"]
    assert until == at(hours=2).timestamp() + 30 * DAY

    # When its 30 days are over, to the second, and an open says so: nothing is left to
    # remember
    back = dt.datetime.fromtimestamp(until, dt.UTC)
    decide(state, outcome("opened", back), r)
    assert state.outcomes.channels == {}

    # Then it takes three in a row again, not two, to close it
    verdicts = [
        decide(state, outcome(kind, back + dt.timedelta(hours=1 + i)), r).verdicts for i in range(3)
    ]
    assert [len(v) for v in verdicts] == [0, 0, 1]


@pytest.mark.parametrize(
    ("kind", "limits"),
    [("bounced", {"bounces": 3}), ("delivered", {"unopened_deliveries": 3})],
)
def test_a_closed_channel_counts_afresh_after_its_period_without_an_open(outcome, kind, limits):
    # Closed by three in a row; the period ends; two more do not close it again
    r, state = rules(**limits), customer()
    for i in range(3):
        decide(state, outcome(kind, at(hours=i)), r)

    later = at(days=40)
    verdicts = [
        decide(state, outcome(kind, later + dt.timedelta(hours=i)), r).verdicts for i in range(2)
    ]

    assert verdicts == [[], []]
    assert outcomes.closed_channels(state) == {"email": at(hours=2).timestamp() + 30 * DAY}


def test_deliveries_without_an_open_close_a_channel_that_reports_opens(outcome):
    r, state = rules(unopened_deliveries=3), customer()

    verdicts = [decide(state, outcome("delivered", at(i)), r).verdicts for i in range(3)]

    assert [len(v) for v in verdicts] == [0, 0, 1]
    assert "3 deliveries in a row without an open or click" in verdicts[2][0].reason
    # An open in between would have reset it; SMS reports no opens, so never counts
    other = customer()
    for i, kind in enumerate(["delivered", "delivered", "opened", "delivered", "delivered"]):
        assert decide(other, outcome(kind, at(i)), r).verdicts == []
    for i in range(5):
        assert decide(other, outcome("delivered", at(10 + i), channel="sms"), r).verdicts == []


def test_no_reachable_channel_suppresses_with_its_own_code(outcome):
    r, state = rules(bounces=1), customer()
    decide(state, outcome("bounced", at(), channel="email"), r)
    decide(state, outcome("failed", at(), channel="sms"), r)

    # Push has no consent, so nothing is left
    decision = send(state, action(at(days=1)), r)

    assert decision.actions == []
    (record,) = decision.verdicts
    assert (record.decision, record.code) == (Verdict.SUPPRESS, ReasonCode.CHANNEL_UNREACHABLE)


def test_an_outcome_for_an_unknown_action_is_applied_and_counted_as_unknown(outcome):
    r, state = rules(), customer()

    decision = decide(state, outcome("unsubscribed", at(), action_id="never-seen"), r)

    assert decision.outcomes == [(CUSTOMER, "unknown", "email", "unsubscribed")]
    (record,) = decision.verdicts
    assert record.action_type is None
    assert state.profile.consents["marketing:email"] is False


def test_outcomes_of_a_known_action_are_labelled_with_its_type(outcome):
    r, state = rules(), customer()
    send(state, action(at()), r)

    decision = decide(state, outcome("opened", at(hours=2)), r)

    assert decision.outcomes == [(CUSTOMER, "repurchase_reminder", "email", "opened")]


def test_a_malformed_outcome_goes_to_the_dlq_with_its_bytes(meta_factory):
    raw = b'{"event_id":"e-1","customer_id":"cust-0001","type":"outcome.opened",'
    raw += b'"occurred_at":"2024-03-01T09:00:00+00:00","channel":"email"}'

    letter = admit("outcomes", b"cust-0001", raw, meta_factory("outcomes"))

    assert isinstance(letter, DeadLetter)
    assert letter.error_code is ErrorCode.SCHEMA_INVALID
    assert "action_id" in letter.error
    assert letter.source_topic == "crm.action-outcomes"
    assert base64.b64decode(letter.value_b64) == raw


def test_an_outcome_of_another_family_type_is_refused_on_the_outcome_topic(meta_factory):
    raw = b'{"event_id":"e-1","customer_id":"cust-0001","type":"order.placed",'
    raw += b'"occurred_at":"2024-03-01T09:00:00+00:00"}'

    letter = admit("outcomes", b"cust-0001", raw, meta_factory("outcomes"))

    assert isinstance(letter, DeadLetter)
    assert letter.error_code is ErrorCode.UNKNOWN_EVENT_TYPE


# -- attribution --------------------------------------------------------------------


def test_a_purchase_in_the_window_converts_the_latest_action_once(order_factory):
    # Given two reminders sent a day apart
    r, state = rules(), customer()
    send(state, action(at(0), "act-a"), r)
    send(state, action(at(1), "act-b"), r)

    # When the customer buys, then buys again
    first = decide(state, order_factory(at=at(2), order_id="o-1", amount=80.0), r)
    second = decide(state, order_factory(at=at(3), order_id="o-2", amount=20.0), r)
    third = decide(state, order_factory(at=at(4), order_id="o-3", amount=20.0), r)

    # Then the first purchase converts the latest action, the second the earlier one,
    # and the third nothing: each action converts once, each purchase one action
    (c1,) = first.conversions
    (c2,) = second.conversions
    assert (c1.action_id, c1.order_id, c1.revenue, c1.group) == (
        "act-b",
        "o-1",
        80.0,
        Group.TREATED,
    )
    assert (c2.action_id, c2.order_id) == ("act-a", "o-2")
    assert third.conversions == []
    assert c1.conversion_id == conversion_id_for("act-b", "o-1")
    assert c1.revision == 0
    assert c1.channel.value == "email"


def test_a_purchase_at_the_instant_of_an_action_converts_it(order_factory):
    r, state = rules(), customer()
    send(state, action(at(1)), r)

    (conversion,) = decide(state, order_factory(at=at(1), order_id="o-1"), r).conversions

    assert conversion.action_id == "act-1"


def test_of_two_actions_at_one_instant_the_one_sent_last_is_the_latest(order_factory):
    r, state = rules(), customer()
    send(state, action(at(1), "act-a"), r)
    send(state, action(at(1), "act-b", ActionType.BIRTHDAY), r)

    (conversion,) = decide(state, order_factory(at=at(2), order_id="o-1"), r).conversions

    assert conversion.action_id == "act-b"


def test_actions_noted_out_of_time_order_are_kept_in_time_order():
    r, state = rules(), customer()
    group = Group.TREATED
    for day, action_id in [(2, "act-2"), (4, "act-4"), (1, "act-1"), (3, "act-3")]:
        outcomes.note_action(
            state, action(at(day), action_id), "email", at(day).timestamp(), group, r
        )

    assert [row[outcomes.A_ID] for row in state.outcomes.actions] == [
        "act-1",
        "act-2",
        "act-3",
        "act-4",
    ]


def test_an_action_whose_window_has_closed_is_forgotten_when_the_next_is_sent():
    # A repurchase reminder converts for 7 days: a purchase on day 7 is too late for it
    r, state = rules(), customer()
    treated = Group.TREATED
    outcomes.note_action(state, action(at(0), "act-0"), "email", at(0).timestamp(), treated, r)

    # A second before its window closes it is kept; at the instant it closes it is not
    just_before = at(7).timestamp() - 1
    outcomes.note_action(state, action(at(7), "act-1"), "email", just_before, treated, r)
    kept = [row[outcomes.A_ID] for row in state.outcomes.actions]
    outcomes.note_action(state, action(at(7), "act-2"), "email", at(7).timestamp(), treated, r)

    assert kept == ["act-0", "act-1"]
    assert [row[outcomes.A_ID] for row in state.outcomes.actions] == ["act-1", "act-2"]


def test_a_purchase_after_the_window_converts_nothing(order_factory):
    r, state = rules(), customer()
    send(state, action(at(0)), r)  # repurchase reminder: 7 days

    late = decide(state, order_factory(at=at(7), order_id="o-1"), r)

    assert late.conversions == []


def test_windows_are_per_action_type(order_factory):
    r, state = rules(attribution_by_type=[{"action_type": "birthday", "days": 2}]), customer()
    send(state, action(at(0), "bday", ActionType.BIRTHDAY), r)

    assert decide(state, order_factory(at=at(2), order_id="o-1"), r).conversions == []
    # A list of windows replaces the default one: win_back is back to the default 7
    assert r.outcomes.window_days("win_back") == 7
    assert r.outcomes.window_days("birthday") == 2


def test_refunds_revise_the_revenue_of_a_converted_order(order_factory, event_factory):
    r, state = rules(), customer()
    send(state, action(at(0)), r)
    decide(state, order_factory(at=at(1), order_id="o-1", amount=100.0), r)

    refund = event_factory(
        "order.returned", at=at(3), order_id="o-1", amount=100.0, refund_amount=30.0
    )
    (revised,) = decide(state, refund, r).conversions
    cancel = event_factory("order.cancelled", at=at(4), order_id="o-1", amount=100.0)
    (cancelled,) = decide(state, cancel, r).conversions

    assert (revised.revision, revised.revenue) == (1, 70.0)
    assert revised.conversion_id == conversion_id_for("act-1", "o-1")
    assert (cancelled.revision, cancelled.revenue) == (2, 0.0)


def test_held_out_customers_convert_the_action_they_would_have_received(order_factory):
    # Given welcome_back is held out for everyone (share 1.0)
    r, state = rules(), customer()
    held = send(state, action(at(0), "wb", ActionType.WELCOME_BACK), r)
    assert held.actions == [] and held.verdicts[0].decision is Verdict.HOLD_OUT

    # When they buy within 30 days
    (conversion,) = decide(state, order_factory(at=at(20), order_id="o-1"), r).conversions

    # Then the held-out action is converted, in the control group
    assert (conversion.action_id, conversion.group) == ("wb", Group.HELD_OUT)
    assert conversion.channel.value == "email"


def test_the_purchase_that_triggers_an_action_does_not_convert_it(order_factory):
    # The welcome a first purchase triggers is routed after that purchase is attributed
    r, state = rules(welcome=True), customer()

    decision = decide(state, order_factory(at=at(0), order_id="o-1"), r)

    assert [a.action_type for a in decision.actions] == [ActionType.WELCOME]
    assert decision.conversions == []


def test_a_replayed_history_gives_the_same_conversions(record_factory):
    def history() -> list[Any]:
        return [
            record_factory(
                "customer.profile_upserted", at=at(0), event_id="p", preferred_channels=["email"]
            ),
            record_factory(
                "customer.consent_changed",
                at=at(0),
                event_id="c",
                purpose="marketing",
                channel="email",
                granted=True,
            ),
            record_factory("order.placed", at=at(0, 1), event_id="o1", order_id="o-1"),
            record_factory("order.placed", at=at(3), event_id="o2", order_id="o-2"),
            record_factory(
                "order.returned",
                at=at(5),
                event_id="o3",
                order_id="o-2",
                amount=49.9,
                refund_amount=9.9,
            ),
        ]

    r = rules(welcome=True)
    first = fold_batch(history(), lambda _: None, r).conversions
    second = fold_batch(history(), lambda _: None, r).conversions

    assert first  # the welcome (sent on the first order) converts the second order
    assert [c.model_dump() for c in first] == [c.model_dump() for c in second]
    assert [c.revision for c in first] == [0, 1]


# -- state --------------------------------------------------------------------------


def test_the_book_survives_storage_and_copies_are_independent(
    outcome, order_factory, event_factory
):
    r, state = rules(), customer()
    send(state, action(at(0)), r)
    decide(state, outcome("bounced", at(0, 1)), r)
    decide(state, order_factory(at=at(1), order_id="o-1", amount=50.0), r)

    stored = CustomerState.from_dict(state.to_dict())
    clone = state.copy()
    decide(clone, outcome("bounced", at(1, 1)), r)
    refund = event_factory("order.returned", at=at(2), order_id="o-1", refund_amount=10.0)
    decide(clone, refund, r)
    send(clone, action(at(3), "act-2"), r)
    decide(clone, order_factory(at=at(3, 1), order_id="o-2"), r)

    assert stored.outcomes == state.outcomes
    assert state.outcomes.channels["email"][outcomes.C_FAILS] == 1
    assert state.outcomes.orders["o-1"][outcomes.O_DEDUCTED] == 0.0
    assert [row[outcomes.A_ID] for row in state.outcomes.actions] == ["act-1"]
    assert clone.outcomes.channels["email"][outcomes.C_FAILS] == 2
    assert clone.outcomes.orders["o-1"][outcomes.O_DEDUCTED] == 10.0
    assert clone.outcomes.actions[-1][outcomes.A_CONVERTED] == 1


def test_a_customer_without_outcomes_stores_nothing_new():
    stored = CustomerState(customer_id="c").to_dict()

    assert "outcomes" not in stored
    assert CustomerState.from_dict(stored).outcomes is None


def test_the_book_is_bounded(outcome):
    r, state = rules(keep_actions=3), customer()
    for i in range(10):
        send(state, action(at(hours=i), f"act-{i}"), r)

    assert [row[outcomes.A_ID] for row in state.outcomes.actions] == ["act-7", "act-8", "act-9"]


def test_the_book_keeps_the_latest_conversions(order_factory):
    r, state = rules(keep_orders=2), customer()
    for i in range(3):
        send(state, action(at(i), f"act-{i}"), r)
        decide(state, order_factory(at=at(i, 1), order_id=f"o-{i}"), r)

    assert list(state.outcomes.orders) == ["o-1", "o-2"]


# -- rules --------------------------------------------------------------------------


def test_outcome_rules_have_documented_defaults():
    cfg = Rules().outcomes
    assert (cfg.bounces, cfg.unopened_deliveries, cfg.unreachable_days) == (3, 10, 30)
    assert cfg.attribution_days == 7
    assert {w.action_type: w.days for w in cfg.attribution_by_type} == {
        "welcome_back": 30,
        "win_back": 30,
        "win_back_escalation": 30,
    }


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"attribution_by_type": [{"action_type": "spam", "days": 3}]}, "attribution_by_type[0]"),
        ({"unopened_channels": ["pigeon"]}, "outcomes.unopened_channels[0]"),
        ({"bounces": 0}, "outcomes.bounces"),
    ],
)
def test_a_wrong_outcome_rule_names_its_key(section, key):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping({"outcomes": section})

    assert key in raised.value.key
