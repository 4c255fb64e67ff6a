"""The operator side of flags (streams.tools.flag_admin): folding crm.flags, planning a review."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from schemas import codec
from schemas.customers import FlagReviewed
from schemas.flags import Flag
from streams.flag_reviews import MAX_OPERATOR, MAX_REASON, check_review
from streams.settings import Settings
from streams.tools.flag_admin import FlagReviewError, FlagView, fold_flags, plan_review

NOW = dt.datetime(2026, 3, 20, 12, 0, tzinfo=dt.UTC)


def record(key: str = "cust-1", **fields: Any) -> tuple[bytes, bytes]:
    body = {
        "flag_id": "f-1",
        "kind": "repeated_returns",
        "customer_id": "cust-1",
        "evidence_event_ids": ["e1", "e2", "e3"],
        "reason": "3 returns within 30 days (flagged at 3).",
        "occurred_at": "2026-03-10T10:00:00+00:00",
        **fields,
    }
    return key.encode(), codec.dumps(Flag.model_validate(body).model_dump(mode="json"))


def test_the_latest_status_wins_and_the_raising_facts_stay():
    log = fold_flags(
        [
            record(),
            record(
                status="cleared",
                evidence_event_ids=["cmd-1"],
                reason="courier damage",
                reviewed_by="op-1",
                occurred_at="2026-03-11T09:00:00+00:00",
            ),
            record(
                status="confirmed",
                evidence_event_ids=["cmd-2"],
                reason="second look: real",
                reviewed_by="op-2",
                occurred_at="2026-03-12T09:00:00+00:00",
            ),
        ]
    )

    (view,) = log.flags.values()
    assert view.status == "confirmed"
    assert view.reason == "3 returns within 30 days (flagged at 3)."
    assert view.evidence_event_ids == ["e1", "e2", "e3"]
    assert view.raised_at == "2026-03-10T10:00:00+00:00"
    assert (view.reviewed_by, view.review_reason) == ("op-2", "second look: real")
    assert view.key == b"cust-1"
    assert "confirmed by op-2" in view.line()


def test_records_that_are_not_flags_are_counted_not_fatal():
    log = fold_flags([(b"k", b"{not json"), (b"k", codec.dumps({"flag_id": "x"})), record()])
    assert log.unreadable == 2
    assert list(log.flags) == ["f-1"]


def test_select_filters_by_status_and_kind():
    log = fold_flags(
        [
            record(),
            record(flag_id="f-2", kind="complaints", reason="4 complaints"),
            record(
                flag_id="f-2", kind="complaints", status="cleared", reason="ok", reviewed_by="o"
            ),
        ]
    )
    assert [f.flag_id for f in log.select(open_only=True)] == ["f-1"]
    assert [f.flag_id for f in log.select(kind="complaints")] == ["f-2"]


def view(**fields: Any) -> FlagView:
    base: dict[str, Any] = {
        "flag_id": "f-1",
        "kind": "repeated_returns",
        "status": "open",
        "customer_id": "cust-1",
        "subject": None,
        "raised_at": "2026-03-10T10:00:00+00:00",
        "reason": "3 returns",
        "key": b"cust-1",
    }
    return FlagView(**{**base, **fields})


def test_a_customer_flag_review_is_a_command_keyed_by_the_customer():
    settings = Settings()
    out = plan_review(view(), "cleared", "courier damage", "op-7", settings, NOW, "cmd-1")

    assert out.topic == settings.topics.customers
    assert out.key == b"cust-1"
    command = FlagReviewed.model_validate(codec.loads(out.value))
    assert (command.event_id, command.flag_id, command.decision) == ("cmd-1", "f-1", "cleared")
    assert (command.reviewed_by, command.reason, command.occurred_at) == (
        "op-7",
        "courier damage",
        NOW,
    )


def test_a_surge_flag_review_is_a_flag_record_with_the_original_key():
    settings = Settings()
    surge = view(kind="complaint_surge", customer_id=None, subject="type=logistics", key=b"s")
    out = plan_review(surge, "confirmed", "strike", "op-2", settings, NOW)

    assert (out.topic, out.key) == (settings.topics.flags, b"s")
    flag = Flag.model_validate(codec.loads(out.value))
    assert (flag.status, flag.subject, flag.reviewed_by) == ("confirmed", "type=logistics", "op-2")


def test_the_same_decision_twice_is_refused():
    with pytest.raises(FlagReviewError, match="already cleared"):
        plan_review(
            view(status="cleared", reviewed_by="op-1"), "cleared", "x", "op", Settings(), NOW
        )


def test_a_review_form_is_checked_against_the_commands_bounds():
    assert check_review("cleared", "r" * MAX_REASON, "o" * MAX_OPERATOR) is None
    assert check_review("confirmed", "r", "o") is None
    assert check_review("delete", "r", "o") == "choose clear or confirm"
    for reason in ("", "r" * (MAX_REASON + 1)):
        assert check_review("cleared", reason, "o") == "the reason must be 1 to 500 characters"
    for operator in ("", "o" * (MAX_OPERATOR + 1)):
        assert (
            check_review("cleared", "r", operator)
            == "the operator's name must be 1 to 100 characters"
        )


def test_a_flag_about_many_customers_is_reviewed_by_a_record_keyed_by_its_subject():
    """A surge flag that names a customer is still not the customer's: no command."""
    settings = Settings()
    surge = view(kind="complaint_surge", customer_id="cust-9", subject="type=logistics", key=None)

    out = plan_review(surge, "cleared", "one-off", "op-3", settings, NOW)

    assert (out.topic, out.key) == (settings.topics.flags, b"type=logistics")
    without_subject = view(kind="complaint_surge", customer_id=None, key=None)
    out = plan_review(without_subject, "cleared", "one-off", "op-3", settings, NOW)
    assert out.key == b"f-1"


def test_a_review_the_contract_refuses_names_the_field():
    with pytest.raises(FlagReviewError) as refused:
        plan_review(
            view(kind="complaint_surge", customer_id=None), "cleared", "", "op", Settings(), NOW
        )

    assert str(refused.value) == "invalid review (reason: String should have at least 1 character)"


def test_a_refused_repeat_says_who_reviewed_it_when_and_why():
    done = view(
        status="cleared", reviewed_by="op-1", reviewed_at="2026-03-11T09:00:00Z", review_reason="ok"
    )
    with pytest.raises(FlagReviewError) as refused:
        plan_review(done, "cleared", "x", "op", Settings(), NOW)
    assert str(refused.value) == (
        "flag f-1 is already cleared (by op-1 at 2026-03-11T09:00:00Z: ok)"
    )

    with pytest.raises(FlagReviewError) as refused:
        plan_review(view(status="confirmed"), "confirmed", "x", "op", Settings(), NOW)
    assert str(refused.value) == "flag f-1 is already confirmed (by ? at ?: )"


def test_a_flag_reads_as_one_line_and_its_review_as_a_second():
    assert view().line() == (
        "open      repeated_returns   f-1  customer cust-1  "
        "raised 2026-03-10T10:00:00+00:00  3 returns"
    )
    surge = view(
        kind="complaint_surge",
        customer_id=None,
        subject="type=logistics",
        raised_at=None,
        status="cleared",
        reviewed_by="op-2",
        reviewed_at="2026-03-11T09:00:00Z",
        review_reason="strike",
    )
    assert surge.line() == (
        "cleared   complaint_surge    f-1  type=logistics  raised ?  3 returns\n"
        + " " * 29
        + "cleared by op-2 at 2026-03-11T09:00:00Z: strike"
    )
    anonymous = view(customer_id=None, status="confirmed")
    assert anonymous.line().splitlines() == [
        "confirmed repeated_returns   f-1  -  raised 2026-03-10T10:00:00+00:00  3 returns",
        " " * 29 + "confirmed by ? at ?: ",
    ]
