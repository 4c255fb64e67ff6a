"""Anomaly flags (agents.flags): each rule at its boundaries, one open flag per kind,
the review (appeal) path, tags, bounded state and the rules' configuration errors.

Events are folded the way the agent does it: ``state.apply`` then ``detect``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agents.flags import detect, flag_tags, open_flags, review
from agents.rules import FlagRules, Rules
from agents.state import CustomerState
from schemas.errors import ConfigError
from schemas.flags import Flag, FlagKind, FlagStatus, flag_id_for
from tests.unit.conftest import CUSTOMER, T0

Make = Callable[..., BaseModel]


@pytest.fixture
def fold() -> Callable[..., list[Flag]]:
    """``fold(state, *events, rules=Rules()) -> flags raised``, as the agent folds them."""

    def run(state: CustomerState, *events: BaseModel, rules: Rules | None = None) -> list[Flag]:
        rules = rules or Rules()
        raised: list[Flag] = []
        for event in events:
            state.apply(event, rules)
            raised += detect(state, event, rules)
        return raised

    return run


@pytest.fixture
def state() -> CustomerState:
    return CustomerState(customer_id=CUSTOMER)


def at(days: float = 0, hours: float = 0, seconds: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=days, hours=hours, seconds=seconds)


@pytest.fixture
def returned(event_factory: Make) -> Make:
    def make(when: dt.datetime, **kw: Any) -> BaseModel:
        return event_factory("order.returned", at=when, **kw)

    return make


@pytest.fixture
def placed(event_factory: Make) -> Make:
    def make(order_id: str, when: dt.datetime, **kw: Any) -> BaseModel:
        return event_factory("order.placed", at=when, order_id=order_id, **kw)

    return make


@pytest.fixture
def cancelled(event_factory: Make) -> Make:
    def make(order_id: str, when: dt.datetime, **kw: Any) -> BaseModel:
        return event_factory("order.cancelled", at=when, order_id=order_id, **kw)

    return make


@pytest.fixture
def reviewed(event_factory: Make) -> Make:
    def make(rating: int, when: dt.datetime, order_id: str | None = "ord-1", **kw: Any) -> Any:
        return event_factory(
            "review.posted", at=when, rating=rating, order_id=order_id, text="awful", **kw
        )

    return make


@pytest.fixture
def complained(event_factory: Make) -> Make:
    def make(when: dt.datetime, **kw: Any) -> BaseModel:
        return event_factory("complaint.opened", at=when, **kw)

    return make


@pytest.fixture
def decision(event_factory: Make) -> Make:
    def make(flag_id: str, verdict: str, when: dt.datetime | None = None, **kw: Any) -> Any:
        return event_factory(
            "customer.flag_reviewed",
            at=when or at(60),
            flag_id=flag_id,
            decision=verdict,
            reason=kw.pop("reason", "checked the orders"),
            reviewed_by=kw.pop("reviewed_by", "op-7"),
            **kw,
        )

    return make


# -- repeated returns ------------------------------------------------------------------


def test_two_returns_in_30_days_raise_nothing(state, fold, returned):
    assert fold(state, returned(at(0)), returned(at(10))) == []
    assert open_flags(state) == []


def test_third_return_in_30_days_flags_customer(state, fold, returned):
    # Given two returns, When a third comes within 30 days
    first, second, third = returned(at(0)), returned(at(10)), returned(at(20))
    flags = fold(state, first, second, third)

    # Then one repeated-returns flag, raised by the third, with all three as evidence
    assert len(flags) == 1
    flag = flags[0]
    assert flag.kind == FlagKind.REPEATED_RETURNS
    assert flag.status == FlagStatus.OPEN
    assert flag.customer_id == CUSTOMER
    assert flag.flag_id == flag_id_for("repeated_returns", CUSTOMER, third.event_id)
    assert flag.evidence_event_ids == [first.event_id, second.event_id, third.event_id]
    assert flag.occurred_at == at(20)
    assert flag.reason == "3 returns within 30 days (flagged at 3)."
    assert open_flags(state) == [(flag.flag_id, "repeated_returns")]


def test_returns_exactly_30_days_apart_are_within_the_window(state, fold, returned):
    assert len(fold(state, returned(at(0)), returned(at(15)), returned(at(30)))) == 1


@pytest.mark.parametrize("last", [at(31), at(30, seconds=1)])
def test_returns_more_than_30_days_apart_raise_nothing(state, fold, returned, last):
    assert fold(state, returned(at(0)), returned(at(15)), returned(last)) == []


def test_a_late_return_completes_the_window_it_belongs_to(state, fold, returned):
    # Given returns on days 40 and 45, When a return of day 35 arrives late
    flags = fold(state, returned(at(40)), returned(at(45)), returned(at(35)))

    # Then it is counted with its neighbours in event time
    assert [f.kind for f in flags] == [FlagKind.REPEATED_RETURNS]
    assert flags[0].occurred_at == at(35)


def test_a_late_return_completes_a_window_that_ends_exactly_30_days_after_it(state, fold, returned):
    flags = fold(state, returned(at(40)), returned(at(45)), returned(at(15)))

    assert [f.kind for f in flags] == [FlagKind.REPEATED_RETURNS]


def test_the_same_return_read_twice_counts_once(state, fold, returned):
    first, second = returned(at(0)), returned(at(1))

    assert fold(state, first, first, second) == []
    assert len(state.flags.evidence["returned"]) == 2


def test_a_flag_carries_the_newest_50_evidence_ids_at_most(state, fold, returned):
    rules = Rules.from_mapping({"flags": {"returns_min": 55, "evidence_keep": 60}})
    events = [returned(at(hours=h)) for h in range(55)]

    (flag,) = fold(state, *events, rules=rules)

    assert flag.evidence_event_ids == [e.event_id for e in events[-50:]]


# -- cancellations --------------------------------------------------------------------


def test_three_consecutive_cancelled_orders_are_a_streak(state, fold, placed, cancelled):
    # Given three orders, When all three are cancelled
    events = [placed("a", at(0)), placed("b", at(1)), placed("c", at(2))]
    events += [cancelled("a", at(3)), cancelled("b", at(3, hours=1))]
    assert fold(state, *events) == []
    flags = fold(state, cancelled("c", at(3, hours=2)))

    # Then the third cancellation raises a cancellations flag (streak)
    assert [f.kind for f in flags] == [FlagKind.CANCELLATIONS]
    assert "3 consecutive orders cancelled within 30 days" in flags[0].reason
    assert len(flags[0].evidence_event_ids) == 6  # three placements, three cancellations


def test_a_kept_order_breaks_the_streak(state, fold, placed, cancelled):
    # a, b cancelled; c kept; d cancelled: 3 of 4 cancelled but no streak of 3 ...
    events = [placed(o, at(i)) for i, o in enumerate("abcd")]
    events += [cancelled("a", at(5)), cancelled("b", at(5)), cancelled("d", at(5))]
    flags = fold(state, *events, rules=Rules.from_mapping({"flags": {"cancellations_ratio": 0.8}}))

    # ... and 3/4 is below a ratio of 0.8: nothing
    assert flags == []


def test_a_kept_order_starts_the_run_again_from_nothing(state, fold, placed, cancelled):
    # a cancelled, b kept, c and d cancelled: runs of 1 and 2, never 3
    events = [placed(o, at(i)) for i, o in enumerate("abcd")]
    events += [cancelled("a", at(5)), cancelled("c", at(5)), cancelled("d", at(5))]
    flags = fold(state, *events, rules=Rules.from_mapping({"flags": {"cancellations_ratio": 0.8}}))

    assert flags == []


def test_half_of_four_orders_cancelled_is_the_ratio(state, fold, placed, cancelled):
    # Given orders a..d with a and c cancelled (no streak of 3)
    events = [placed("a", at(0)), placed("b", at(1)), placed("c", at(2))]
    events += [cancelled("a", at(2)), cancelled("c", at(3))]
    assert fold(state, *events) == []  # 2 of 3: too few orders for the ratio

    # When a fourth order is placed, 2 of 4 = 0.5 reaches the ratio
    flags = fold(state, placed("d", at(4)))

    assert [f.kind for f in flags] == [FlagKind.CANCELLATIONS]
    assert flags[0].reason.startswith("2 of 4 orders within 30 days cancelled")


def test_one_of_four_orders_cancelled_is_below_the_ratio(state, fold, placed, cancelled):
    events = [placed(o, at(i)) for i, o in enumerate("abcd")] + [cancelled("b", at(5))]
    assert fold(state, *events) == []


def test_cancelled_orders_older_than_the_window_do_not_count(state, fold, placed, cancelled):
    # a and b placed and cancelled on days 0-1; c placed on day 31 and cancelled
    events = [placed("a", at(0)), cancelled("a", at(0)), placed("b", at(1)), cancelled("b", at(1))]
    events += [placed("c", at(31, hours=1)), cancelled("c", at(31, hours=2))]
    assert fold(state, *events) == []


def test_a_cancellation_before_its_placement_is_counted_once(state, fold, placed, cancelled):
    events = [cancelled("a", at(1)), placed("a", at(0)), placed("b", at(2)), cancelled("b", at(2))]
    events += [placed("c", at(3))]
    assert fold(state, *events) == []
    rows = state.flags.evidence["orders"]
    assert [r[0] for r in rows] == ["a", "b", "c"]
    assert rows[0][1] == at(0).timestamp()  # the placement's time, once it was read
    assert fold(state, cancelled("c", at(4)))[0].kind == FlagKind.CANCELLATIONS


def test_an_order_cancelled_twice_before_its_placement_is_read_keeps_the_first_time(
    state, fold, placed, cancelled
):
    fold(state, cancelled("a", at(5)), cancelled("a", at(6)))

    ((order, time, *_),) = state.flags.evidence["orders"]
    assert (order, time) == ("a", at(5).timestamp())


# -- negative reviews ---------------------------------------------------------------


def test_rating_2_is_a_negative_review_and_3_is_not(state, fold, reviewed):
    assert fold(state, reviewed(3, at(0))) == []
    flags = fold(state, reviewed(2, at(1)))

    assert [f.kind for f in flags] == [FlagKind.NEGATIVE_REVIEW]
    assert flags[0].reason == "Review rated 2 of 5 (negative at 2 or lower)."
    assert "awful" not in flags[0].reason  # never the review text


def test_negative_review_threshold_comes_from_the_counters_rule(state, fold, reviewed):
    rules = Rules.from_mapping({"counters": {"negative_review_max_rating": 3}})
    assert [f.kind for f in fold(state, reviewed(3, at(0)), rules=rules)] == [
        FlagKind.NEGATIVE_REVIEW
    ]


def test_second_negative_review_while_one_is_open_raises_nothing(state, fold, reviewed):
    assert len(fold(state, reviewed(2, at(0)))) == 1
    assert fold(state, reviewed(2, at(1))) == []
    assert len(open_flags(state)) == 1


# -- complaints ---------------------------------------------------------------------


def test_three_complaints_in_30_days_are_not_many(state, fold, complained):
    assert fold(state, *(complained(at(d)) for d in (0, 10, 20))) == []


def test_fourth_complaint_in_30_days_flags_customer(state, fold, complained):
    flags = fold(state, *(complained(at(d)) for d in (0, 10, 20, 30)))

    assert [f.kind for f in flags] == [FlagKind.COMPLAINTS]
    assert flags[0].reason == "4 complaints opened within 30 days (flagged at 4)."


def test_complaints_spread_over_31_days_are_not_many(state, fold, complained):
    assert fold(state, *(complained(at(d)) for d in (0, 10, 20, 31))) == []


# -- suspicious reviews -------------------------------------------------------------


def test_three_one_star_reviews_on_one_order_are_not_suspicious(state, fold, reviewed):
    flags = fold(state, *(reviewed(1, at(hours=h), order_id="o-1") for h in (0, 1, 2)))
    assert [f.kind for f in flags] == [FlagKind.NEGATIVE_REVIEW]


def test_three_one_star_reviews_across_two_orders_in_24h_are_suspicious(state, fold, reviewed):
    events = [
        reviewed(1, at(hours=0), order_id="o-1"),
        reviewed(1, at(hours=5), order_id="o-1"),
        reviewed(1, at(hours=24), order_id="o-2"),
    ]
    flags = fold(state, *events)

    assert [f.kind for f in flags] == [FlagKind.NEGATIVE_REVIEW, FlagKind.SUSPICIOUS_REVIEWS]
    suspicious = flags[1]
    assert suspicious.evidence_event_ids == [e.event_id for e in events]
    assert "across 2 orders" in suspicious.reason
    assert "awful" not in suspicious.reason


def test_one_star_reviews_just_over_24h_apart_are_not_suspicious(state, fold, reviewed):
    events = [
        reviewed(1, at(hours=0), order_id="o-1"),
        reviewed(1, at(hours=5), order_id="o-2"),
        reviewed(1, at(hours=24, seconds=1), order_id="o-3"),
    ]
    assert [f.kind for f in fold(state, *events)] == [FlagKind.NEGATIVE_REVIEW]


def test_two_star_reviews_do_not_count_as_one_star(state, fold, reviewed):
    events = [reviewed(2, at(hours=h), order_id=f"o-{h}") for h in (0, 1, 2)]
    assert FlagKind.SUSPICIOUS_REVIEWS not in {f.kind for f in fold(state, *events)}


# -- one open flag per kind; review ----------------------------------------------------


def test_only_one_open_flag_per_kind(state, fold, returned):
    flags = fold(state, *(returned(at(d)) for d in range(6)))
    assert len(flags) == 1
    assert len(open_flags(state)) == 1


def test_kinds_are_independent(state, fold, returned, complained):
    flags = fold(
        state, *(returned(at(d)) for d in range(3)), *(complained(at(d)) for d in range(4))
    )
    assert sorted(f.kind for f in flags) == [FlagKind.COMPLAINTS, FlagKind.REPEATED_RETURNS]
    assert flag_tags(state) == ["risk:flag:complaints", "risk:flag:repeated_returns"]


def test_clearing_returns_the_audit_record_and_drops_the_tag(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    command = decision(flag.flag_id, "cleared", reason="courier damage, not the customer")

    record = review(state, command)

    assert record is not None
    assert record.flag_id == flag.flag_id
    assert record.kind == FlagKind.REPEATED_RETURNS
    assert record.status == FlagStatus.CLEARED
    assert record.customer_id == CUSTOMER
    assert record.reviewed_by == "op-7"
    assert record.reason == "courier damage, not the customer"
    assert record.occurred_at == at(60)
    assert record.evidence_event_ids == [command.event_id]
    assert open_flags(state) == []
    assert flag_tags(state) == []


def test_after_clearing_old_evidence_does_not_reraise(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    review(state, decision(flag.flag_id, "cleared", when=at(10)))

    # one new return plus two old ones in the window: the old ones no longer count
    assert fold(state, returned(at(11)), returned(at(12))) == []


def test_after_clearing_new_evidence_raises_a_new_flag(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    review(state, decision(flag.flag_id, "cleared", when=at(10)))

    flags = fold(state, returned(at(11)), returned(at(12)), returned(at(13)))

    assert len(flags) == 1
    assert flags[0].flag_id != flag.flag_id
    assert len(flags[0].evidence_event_ids) == 3
    assert open_flags(state) == [(flags[0].flag_id, "repeated_returns")]


def test_a_return_dated_at_the_clearance_is_not_new_evidence(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    review(state, decision(flag.flag_id, "cleared", when=at(10)))

    assert fold(state, returned(at(10)), returned(at(11)), returned(at(12))) == []
    assert len(fold(state, returned(at(13)))) == 1


def test_after_clearing_an_order_counts_by_its_latest_event(
    state, fold, placed, cancelled, decision
):
    events = [placed(o, at(i)) for i, o in enumerate("abc")]
    (flag,) = fold(state, *events, *(cancelled(o, at(3)) for o in "abc"))
    review(state, decision(flag.flag_id, "cleared", when=at(10)))

    # g placed and cancelled at the clearance is old; e and f are new: a run of two
    events = [placed("g", at(10)), cancelled("g", at(10))]
    events += [placed(o, at(11 + i)) for i, o in enumerate("ef")]
    assert fold(state, *events, cancelled("e", at(13)), cancelled("f", at(13))) == []

    # d, placed before the clearance but cancelled after it, is new too: a run of three
    flags = fold(state, placed("d", at(9)), cancelled("d", at(14)))
    assert [f.kind for f in flags] == [FlagKind.CANCELLATIONS]


def test_evidence_seen_before_a_backdated_clearance_stays_old(state, fold, returned, decision):
    # Returns on days 0-4 (the flag is raised on day 2), cleared with a review dated day 3
    (flag,) = fold(state, *(returned(at(d)) for d in range(5)))
    review(state, decision(flag.flag_id, "cleared", when=at(3)))

    # The returns of days 3 and 4 were already judged: one more is not three new ones
    assert fold(state, returned(at(5))) == []


def test_orders_seen_before_a_backdated_clearance_stay_old(
    state, fold, placed, cancelled, decision
):
    # a, b, c cancelled on days 3-5 (the flag is raised on day 5); d placed on day 6 and
    # cancelled on day 8; the clearance is dated day 7
    events = [placed(o, at(i)) for i, o in enumerate("abc")]
    events += [cancelled(o, at(3 + i)) for i, o in enumerate("abc")]
    (flag,) = fold(state, *events, placed("d", at(6)), cancelled("d", at(8)))
    review(state, decision(flag.flag_id, "cleared", when=at(7)))

    # d was judged with the rest: e and f make a run of two new ones, not three
    events = [placed("e", at(9)), cancelled("e", at(9)), placed("f", at(10))]
    assert fold(state, *events, cancelled("f", at(10))) == []


def test_confirmed_flag_blocks_reraising_and_keeps_the_tag(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    record = review(state, decision(flag.flag_id, "confirmed", when=at(10)))

    assert record is not None and record.status == FlagStatus.CONFIRMED
    assert open_flags(state) == []
    assert flag_tags(state) == ["risk:flag:repeated_returns"]
    assert fold(state, *(returned(at(d)) for d in range(11, 20))) == []


def test_a_confirmed_flag_cleared_later_lets_new_evidence_raise(state, fold, returned, decision):
    (flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    review(state, decision(flag.flag_id, "confirmed", when=at(10)))
    review(state, decision(flag.flag_id, "cleared", when=at(11)))

    assert len(fold(state, *(returned(at(d)) for d in (12, 13, 14)))) == 1


def test_cleared_negative_review_reraises_on_a_new_negative_review(state, fold, reviewed, decision):
    (flag,) = fold(state, reviewed(1, at(0)))
    review(state, decision(flag.flag_id, "cleared", when=at(1)))

    assert [f.kind for f in fold(state, reviewed(2, at(2)))] == [FlagKind.NEGATIVE_REVIEW]


def test_a_negative_review_dated_at_the_clearance_raises_nothing(state, fold, reviewed, decision):
    (flag,) = fold(state, reviewed(1, at(0)))
    review(state, decision(flag.flag_id, "cleared", when=at(1)))

    assert fold(state, reviewed(2, at(1))) == []
    assert [f.kind for f in fold(state, reviewed(2, at(1, seconds=1)))] == [
        FlagKind.NEGATIVE_REVIEW
    ]


def test_after_clearing_suspicious_reviews_only_new_ones_count(state, fold, reviewed, decision):
    def suspicious(*events: BaseModel) -> list[Flag]:
        return [f for f in fold(state, *events) if f.kind == FlagKind.SUSPICIOUS_REVIEWS]

    (flag,) = suspicious(*(reviewed(1, at(0, hours=h), order_id=f"o{h}") for h in range(3)))
    review(state, decision(flag.flag_id, "cleared", when=at(0, hours=3)))

    assert suspicious(*(reviewed(1, at(0, hours=h), order_id=f"o{h}") for h in (4, 5))) == []
    assert len(suspicious(reviewed(1, at(0, hours=6), order_id="o6"))) == 1


def test_review_of_an_unknown_flag_is_none(state, decision):
    assert review(state, decision("no-such-flag", "cleared")) is None


def test_review_of_another_customers_flag_is_none(fold, returned, decision):
    alice, bob = CustomerState(customer_id="alice"), CustomerState(customer_id="bob")
    (flag,) = fold(alice, *(returned(at(d), customer_id="alice") for d in range(3)))

    assert review(bob, decision(flag.flag_id, "cleared", customer_id="bob")) is None
    assert open_flags(alice) == [(flag.flag_id, "repeated_returns")]


def test_open_flags_lists_oldest_first(state, fold, returned, complained):
    fold(state, *(complained(at(d)) for d in range(4)), *(returned(at(d + 5)) for d in range(3)))
    assert [kind for _, kind in open_flags(state)] == ["complaints", "repeated_returns"]


# -- configuration, state bounds, erasure ----------------------------------------------


def test_thresholds_come_from_the_rules(state, fold, returned):
    rules = Rules.from_mapping({"flags": {"returns_min": 2, "returns_window_days": 7}})
    assert len(fold(state, returned(at(0)), returned(at(7)), rules=rules)) == 1


def test_disabled_flags_raise_nothing_and_keep_no_evidence(state, fold, returned):
    rules = Rules.from_mapping({"flags": {"enabled": False}})
    assert fold(state, *(returned(at(d)) for d in range(5)), rules=rules) == []
    assert state.flags.evidence == {}


def test_a_disabled_kind_is_never_raised(state, fold, returned, complained):
    rules = Rules.from_mapping({"flags": {"disabled_kinds": ["repeated_returns"]}})
    events = [*(returned(at(d)) for d in range(3)), *(complained(at(d)) for d in range(4))]
    assert [f.kind for f in fold(state, *events, rules=rules)] == [FlagKind.COMPLAINTS]


def test_evidence_rings_are_bounded_by_count_and_age(state, fold, returned, placed):
    rules = Rules.from_mapping({"flags": {"evidence_keep": 5}})
    fold(state, *(returned(at(hours=h)) for h in range(40)), rules=rules)
    assert len(state.flags.evidence["returned"]) == 5

    fold(state, returned(at(100)), rules=rules)  # 100 days later: the old ones are past the window
    assert len(state.flags.evidence["returned"]) == 1

    fold(state, *(placed(f"o{i}", at(100, hours=i)) for i in range(30)), rules=rules)
    assert len(state.flags.evidence["orders"]) == 5


def test_reviewed_flags_are_pruned_but_the_blocking_confirmed_one_stays(
    state, fold, reviewed, returned, decision
):
    # Given a confirmed returns flag and many negative reviews, each cleared
    (returns_flag,) = fold(state, *(returned(at(d)) for d in range(3)))
    review(state, decision(returns_flag.flag_id, "confirmed", when=at(3)))
    cleared = []
    for day in range(10, 30):
        event = reviewed(1, at(day), order_id=f"o-{day}")
        (flag,) = fold(state, event)
        review(state, decision(flag.flag_id, "cleared", when=at(day, hours=1)))
        cleared.append(event.event_id)

    # When one more is raised, Then only reviewed_keep (5) cleared ones stay, plus the
    # confirmed one and the open one
    fold(state, reviewed(1, at(40), order_id="o-40"))
    statuses = sorted(entry[1] for entry in state.flags.raised.values())
    assert statuses == ["cleared"] * 5 + ["confirmed", "open"]
    # the newest cleared ones: those reviewed on days 25 to 29
    kept = {i for i, entry in state.flags.raised.items() if entry[1] == "cleared"}
    assert kept == {flag_id_for("negative_review", CUSTOMER, e) for e in cleared[-5:]}
    assert returns_flag.flag_id in state.flags.raised
    assert "risk:flag:repeated_returns" in flag_tags(state)


def test_state_round_trip_keeps_flags_and_copies_them(state, fold, returned):
    fold(state, *(returned(at(d)) for d in range(3)))
    restored = CustomerState.from_dict(state.to_dict())
    copy = state.copy()

    assert restored.flags == state.flags
    assert restored.flags.evidence == state.flags.evidence
    copy.flags.raised.clear()
    copy.flags.evidence["returned"].clear()
    assert state.flags.raised and state.flags.evidence["returned"]


def test_erasure_forgets_flags_and_evidence(state, fold, returned, event_factory):
    fold(state, *(returned(at(d)) for d in range(3)))
    fold(state, event_factory("customer.erasure_requested", at=at(5)))

    assert state.flags.raised == {} and state.flags.evidence == {} and state.flags.floors == {}
    assert flag_tags(state) == []


def test_a_flag_review_is_not_an_interaction(state, decision):
    state.apply(decision("f-1", "cleared"), Rules())
    assert state.activity.interactions == 0


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"cancellations_ratio": 1.5}, "flags.cancellations_ratio", "at most 1"),
        ({"cancellations_ratio": 0}, "flags.cancellations_ratio", "above 0"),
        ({"returns_min": 0}, "flags.returns_min", ">= 1"),
        ({"suspicious_max_rating": 6}, "flags.suspicious_max_rating", "between 1 and 5"),
        ({"disabled_kinds": ["teleports"]}, "flags.disabled_kinds[0]", "unknown kind"),
        ({"evidence_keep": 2}, "flags.evidence_keep", "flags.returns_min"),
        (
            {"evidence_keep": 5, "complaints_more_than": 5},
            "flags.evidence_keep",
            "complaints_more_than",
        ),
        ({"returns_window": 30}, "flags.returns_window", "unknown key"),
        ({"enabled": "yes"}, "flags.enabled", "true or false"),
    ],
)
def test_wrong_flag_rules_name_the_key(section, key, message):
    with pytest.raises(ConfigError) as caught:
        Rules.from_mapping({"flags": section})
    assert caught.value.key == key
    assert message in caught.value.problem


def test_flag_rule_defaults_are_domain_md():
    flags = Rules().flags
    assert (flags.returns_min, flags.returns_window_days) == (3, 30)
    assert (flags.cancellations_streak, flags.cancellations_ratio) == (3, 0.5)
    assert (flags.cancellations_ratio_min_orders, flags.cancellations_window_days) == (4, 30)
    assert (flags.complaints_more_than, flags.complaints_window_days) == (3, 30)
    assert (flags.suspicious_min_reviews, flags.suspicious_max_rating) == (3, 1)
    assert (flags.suspicious_window_hours, flags.suspicious_min_orders) == (24, 2)


def test_the_documented_flags_section_is_the_defaults():
    doc = (Path(__file__).parents[2] / "docs" / "flags.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", doc, re.DOTALL)
    documented = Rules.from_mapping(tomllib.loads(block))

    assert documented == Rules()
    assert set(tomllib.loads(block)["flags"]) == {f.name for f in dataclasses.fields(FlagRules)}


def test_a_copy_shares_no_order_evidence_row_it_can_change(event_factory):
    # Given a state whose "orders" evidence ring holds a placed order, and a copy of it
    # (copies share evidence rows: rows are replaced, never changed in place)
    original = CustomerState(customer_id=CUSTOMER)
    placed = event_factory("order.placed", customer_id=CUSTOMER, order_id="o-1")
    detect(original, placed, Rules())
    before = [list(row) for row in original.flags.evidence["orders"]]
    clone = original.copy()

    # When the copy sees that order cancelled
    cancelled = event_factory(
        "order.cancelled", customer_id=CUSTOMER, order_id="o-1", at=T0 + dt.timedelta(hours=1)
    )
    detect(clone, cancelled, Rules())

    # Then the original's row is as it was, and the copy's row has the cancellation
    assert original.flags.evidence["orders"] == before
    assert clone.flags.evidence["orders"][0][0] == "o-1"
    assert clone.flags.evidence["orders"][0] != before[0]
