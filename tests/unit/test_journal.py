"""What the journal keeps for a customer's lookup (agents.journal): its bounds, its order,
repeats, and its stored forms. Pure: rows and times given, no broker.

Found by ``./dev mutate agents/journal.py``: the lookup's tests read the journal
through whole histories, and passed on changes to each bound and to the place of a
late event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from agents import journal
from agents.journal import E_AT, E_REF, E_TYPE, F_EVIDENCE, F_REASON, O_ACTION_ID, O_REASON
from tests.unit.conftest import T0

Make = Callable[..., BaseModel]


def _outcome(j: journal.Journal, n: int, keep: int = 5, reason: str = "why", **kw: Any) -> None:
    fields: dict[str, Any] = {
        "at": 1000.0 + n,
        "action_id": f"act-{n}",
        "action_type": "repurchase_reminder",
        "verdict": "sent",
        "channel": "email",
        "code": None,
        "not_before": None,
        "rule_id": "care.repurchase",
        "reason": reason,
        "keep": keep,
    } | kw
    journal.note_outcome(j, **fields)


def test_outcomes_keep_the_newest_up_to_the_bound_and_none_at_zero() -> None:
    j = journal.Journal()
    for n in range(4):
        _outcome(j, n, keep=3)
    assert [row[O_ACTION_ID] for row in j.outcomes] == ["act-1", "act-2", "act-3"]

    _outcome(j, 9, keep=1)
    assert [row[O_ACTION_ID] for row in j.outcomes] == ["act-9"]

    off = journal.Journal()
    _outcome(off, 0, keep=0)
    assert off.outcomes == []


def test_the_same_outcome_again_is_kept_once_and_another_at_its_instant_is_kept() -> None:
    j = journal.Journal()
    _outcome(j, 0)
    _outcome(j, 0, reason="the batch done again")  # every field but the reason the same
    _outcome(j, 0, verdict="deferred", channel=None, code="quiet_hours")

    assert [row[3] for row in j.outcomes] == ["sent", "deferred"]


@pytest.mark.parametrize(
    ("length", "kept"),
    [(journal.MAX_REASON - 1, None), (journal.MAX_REASON, None), (journal.MAX_REASON + 1, 240)],
)
def test_a_reason_longer_than_the_limit_is_cut_to_it_with_an_ellipsis(
    length: int, kept: int | None
) -> None:
    reason = "".join(chr(ord("a") + i % 26) for i in range(length))
    j = journal.Journal()

    _outcome(j, 0, reason=reason)

    stored = j.outcomes[0][O_REASON]
    if kept is None:
        assert stored == reason
    else:
        assert kept == journal.MAX_REASON
        assert stored == reason[: kept - 1] + "…"
        assert len(stored) == kept


def test_a_flags_note_keeps_the_limits_and_drops_flags_no_longer_held() -> None:
    j = journal.Journal()
    evidence = [f"evt-{i}" for i in range(12)]

    journal.note_flag(j, "flag-a", "r" * 300, evidence, held={"flag-a"})
    journal.note_flag(j, "flag-b", "returns", ["evt-x"], held={"flag-b"})

    assert list(j.flags) == ["flag-b"]
    journal.note_flag(j, "flag-a", "r" * 300, evidence, held={"flag-a", "flag-b"})
    note = j.flags["flag-a"]
    assert note[F_REASON] == "r" * journal.MAX_REASON
    assert note[F_EVIDENCE] == evidence[-journal.MAX_EVIDENCE :]
    assert journal.MAX_EVIDENCE == 10


def test_the_timeline_keeps_events_by_time_late_ones_in_their_place(event_factory: Make) -> None:
    def at(minutes: int) -> dt.datetime:
        return T0 + dt.timedelta(minutes=minutes)

    j = journal.Journal()
    for minutes, order in [(10, "o-10"), (20, "o-20"), (20, "o-20b"), (5, "o-5"), (20, "o-late")]:
        journal.note_event(j, event_factory("order.paid", at=at(minutes), order_id=order), 10)
    journal.note_event(j, event_factory("order.paid", at=at(15), order_id="o-15"), 10)
    journal.note_event(j, event_factory("order.paid", at=at(1), order_id="o-1"), 10)
    journal.note_event(j, event_factory("order.paid", at=at(10), order_id="o-10b"), 10)

    # each after those of its own time, before the later ones
    assert [row[E_REF] for row in j.events] == [
        "order o-1",
        "order o-5",
        "order o-10",
        "order o-10b",
        "order o-15",
        "order o-20",
        "order o-20b",
        "order o-late",
    ]


def test_the_timeline_keeps_the_newest_up_to_the_bound_and_none_at_zero(
    event_factory: Make,
) -> None:
    j = journal.Journal()
    for n in range(4):
        event = event_factory("order.paid", at=T0 + dt.timedelta(hours=n), order_id=f"o-{n}")
        journal.note_event(j, event, 3)
    assert [row[E_REF] for row in j.events] == ["order o-1", "order o-2", "order o-3"]

    journal.note_event(j, event_factory("order.paid", at=T0 + dt.timedelta(days=1)), 1)
    assert [row[E_REF] for row in j.events] == ["order ord-1"]

    off = journal.Journal()
    journal.note_event(off, event_factory("order.paid"), 0)
    assert off.events == []


@pytest.mark.parametrize(
    "event_type",
    [
        *("browse.view", "browse.search", "browse.cart_add", "browse.favorite"),
        *("outcome.delivered", "outcome.opened", "outcome.clicked"),
    ],
)
def test_browsing_and_routine_messaging_outcomes_stay_out_of_the_timeline(
    event_type: str, event_factory: Make
) -> None:
    j = journal.Journal()
    journal.note_event(j, event_factory(event_type), 10)
    assert j.events == []


@pytest.mark.parametrize(
    ("event_type", "fields", "ref"),
    [
        ("order.placed", {}, "order ord-1, 49.90 GBP"),
        ("order.returned", {}, "order ord-1, refund 20.00"),
        ("order.shipped", {}, "order ord-1"),
        ("complaint.opened", {}, "complaint cmp-1: logistics, medium, via online"),
        ("complaint.closed", {}, "complaint cmp-1"),
        ("review.posted", {}, "rating 4/5, review rev-1"),
        ("review.posted", {"order_id": "ord-9"}, "rating 4/5, review rev-1, order ord-9"),
        ("customer.consent_changed", {"granted": False}, "marketing on email withdrawn"),
        ("customer.profile_upserted", {}, "preferred channels: none"),
        (
            "customer.profile_upserted",
            {"preferred_channels": ["sms", "email"]},
            "preferred channels: sms, email",
        ),
        ("customer.flag_reviewed", {}, "flag flag-1 cleared by op-7"),
        ("outcome.bounced", {}, "bounced on email, action act-1"),
        ("care.requested", {}, "logistics_apology proposed by aggregates.logistics_delay"),
        ("customer.erasure_requested", {}, ""),
    ],
)
def test_a_timeline_row_names_ids_amounts_and_codes_never_free_text(
    event_type: str, fields: dict[str, Any], ref: str, event_factory: Make
) -> None:
    j = journal.Journal()

    journal.note_event(j, event_factory(event_type, at=T0, **fields), 10)

    ((at, kind, text),) = j.events
    assert (at, kind, text) == (T0.timestamp(), event_type, ref)
    assert j.events[0][E_AT] == at and j.events[0][E_TYPE] == kind


def test_both_stored_forms_give_back_the_journal_and_share_no_list_with_it() -> None:
    j = journal.Journal()
    _outcome(j, 0)
    j.events.append([1.0, "order.paid", "order o-1"])
    journal.note_flag(j, "flag-a", "returns", ["evt-1", "evt-2"], held={"flag-a"})

    for restored in (
        journal.Journal.from_stored(j.stored()),
        journal.Journal.from_dict(j.to_dict()),
    ):
        assert restored == j
        restored.flags["flag-a"][F_EVIDENCE].append("evt-3")
        restored.events[0].append("x")
        assert j.flags["flag-a"][F_EVIDENCE] == ["evt-1", "evt-2"]
        assert j.events[0] == [1.0, "order.paid", "order o-1"]

    assert journal.Journal.from_dict(None) == journal.Journal()
    assert not journal.Journal()
    assert journal.Journal(flags={"f": ["r", []]})
