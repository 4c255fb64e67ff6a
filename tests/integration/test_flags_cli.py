"""``crmstream flags list|clear|confirm`` on the real broker, run as a user runs them."""

from __future__ import annotations

import json

import pytest

from schemas import codec
from schemas.customers import FlagReviewed
from schemas.flags import Flag, FlagKind, FlagStatus, flag_id_for
from tests import cli
from tests.integration.broker import consume, produce

pytestmark = pytest.mark.integration

RETURNS_ID = flag_id_for("repeated_returns", "cust-9", "ev-ret-3")
REVIEW_ID = flag_id_for("negative_review", "cust-9", "ev-rev-1")
SURGE_ID = flag_id_for("complaint_surge", "complaint_type=logistics", "2026-W10")


def _record(topic: str, key: str, **fields: object) -> tuple[str, bytes, bytes]:
    flag = Flag.model_validate(fields)  # the records a worker would write
    return topic, key.encode(), codec.dumps(flag.model_dump(mode="json"))


@pytest.fixture
def flag_log(crm_settings):
    topic = crm_settings.topics.flags
    records = [
        _record(
            topic,
            "cust-9",
            flag_id=RETURNS_ID,
            kind="repeated_returns",
            customer_id="cust-9",
            evidence_event_ids=["ev-ret-1", "ev-ret-2", "ev-ret-3"],
            reason="3 returns within 30 days (flagged at 3).",
            occurred_at="2026-03-10T10:00:00+00:00",
        ),
        _record(
            topic,
            "cust-9",
            flag_id=REVIEW_ID,
            kind="negative_review",
            customer_id="cust-9",
            evidence_event_ids=["ev-rev-1"],
            reason="Review rated 1 of 5 (negative at 2 or lower).",
            occurred_at="2026-03-11T10:00:00+00:00",
        ),
        _record(
            topic,
            "cust-9",
            flag_id=REVIEW_ID,
            kind="negative_review",
            status="confirmed",
            customer_id="cust-9",
            evidence_event_ids=["ev-cmd-1"],
            reason="abusive wording, reported to trust and safety",
            reviewed_by="op-1",
            occurred_at="2026-03-12T10:00:00+00:00",
        ),
        _record(
            topic,
            "complaint_type=logistics",
            flag_id=SURGE_ID,
            kind="complaint_surge",
            subject="complaint_type=logistics",
            evidence_event_ids=["c-1", "c-2"],
            reason="logistics complaints +80% week over week (flagged above 50%).",
            occurred_at="2026-03-09T00:00:00+00:00",
        ),
    ]
    produce(crm_settings, records)
    return records


def test_flags_list_folds_the_log_by_flag_id(crm_settings, flag_log):
    # When an operator lists the flags as JSON
    done = cli.run("flags", "list", "--json", env=crm_settings.as_env())

    # Then each flag appears once, with its latest status
    assert done.returncode == 0, done.stderr
    flags = {f["flag_id"]: f for f in json.loads(done.stdout)}
    assert set(flags) == {RETURNS_ID, REVIEW_ID, SURGE_ID}
    assert flags[RETURNS_ID]["status"] == "open"
    assert flags[RETURNS_ID]["evidence_event_ids"] == ["ev-ret-1", "ev-ret-2", "ev-ret-3"]
    assert flags[REVIEW_ID]["status"] == "confirmed"
    assert flags[REVIEW_ID]["reviewed_by"] == "op-1"
    assert flags[REVIEW_ID]["reason"].startswith("Review rated 1 of 5")
    assert flags[SURGE_ID]["customer_id"] is None
    assert "3 flag(s) shown" in done.stderr

    # And the filters select by status and kind
    only_open = cli.run("flags", "list", "--open", "--json", env=crm_settings.as_env())
    assert {f["flag_id"] for f in json.loads(only_open.stdout)} == {RETURNS_ID, SURGE_ID}
    by_kind = cli.run("flags", "list", "--kind", "complaint_surge", env=crm_settings.as_env())
    assert by_kind.returncode == 0
    assert SURGE_ID in by_kind.stdout and RETURNS_ID not in by_kind.stdout


def test_clearing_a_customer_flag_sends_a_flag_reviewed_command(crm_settings, flag_log):
    # When an operator clears the returns flag
    done = cli.run(
        "flags",
        "clear",
        RETURNS_ID,
        "--reason",
        "courier damaged the parcels",
        "--by",
        "op-7",
        env=crm_settings.as_env(),
    )

    # Then a valid customer.flag_reviewed command is on crm.customers, keyed by the customer
    assert done.returncode == 0, done.stderr
    assert f"flag {RETURNS_ID} (repeated_returns, customer cust-9) cleared by op-7" in done.stdout
    records = consume(
        crm_settings, crm_settings.topics.customers, until=lambda r: len(r) >= 1, settle=1.0
    )
    assert len(records) == 1
    command = FlagReviewed.model_validate(records[0])
    assert command.flag_id == RETURNS_ID
    assert command.customer_id == "cust-9"
    assert command.decision == "cleared"
    assert command.reason == "courier damaged the parcels"
    assert command.reviewed_by == "op-7"
    # and nothing was written to crm.flags directly: the worker records the review
    flags = consume(crm_settings, crm_settings.topics.flags, until=lambda r: len(r) >= 4, settle=1)
    assert len(flags) == 4


def test_confirming_a_surge_flag_appends_the_review_record(crm_settings, flag_log):
    # When an operator confirms the complaint surge (a flag about no single customer)
    done = cli.run(
        "flags",
        "confirm",
        SURGE_ID,
        "--reason",
        "carrier strike in the north",
        "--by",
        "op-2",
        env=crm_settings.as_env(),
    )
    assert done.returncode == 0, done.stderr

    # Then the review record is appended to crm.flags with the surge's key
    records = consume(
        crm_settings, crm_settings.topics.flags, until=lambda r: len(r) >= 5, settle=1.0
    )
    reviews = [Flag.model_validate(r) for r in records if r["flag_id"] == SURGE_ID]
    assert [r.status for r in reviews] == [FlagStatus.OPEN, FlagStatus.CONFIRMED]
    review = reviews[1]
    assert review.kind == FlagKind.COMPLAINT_SURGE
    assert review.subject == "complaint_type=logistics"
    assert review.customer_id is None
    assert review.reviewed_by == "op-2"
    assert review.reason == "carrier strike in the north"
    assert (
        consume(crm_settings, crm_settings.topics.customers, until=lambda r: True, settle=1.0) == []
    )

    # And the list shows it confirmed; confirming again is refused
    listed = cli.run("flags", "list", "--json", env=crm_settings.as_env())
    assert {f["flag_id"]: f["status"] for f in json.loads(listed.stdout)}[SURGE_ID] == "confirmed"
    again = cli.run("flags", "confirm", SURGE_ID, "--reason", "x", env=crm_settings.as_env())
    assert again.returncode == 1
    assert f"flag {SURGE_ID} is already confirmed (by op-2" in again.stderr


def test_reviewing_an_unknown_or_already_reviewed_flag_fails_clearly(crm_settings, flag_log):
    unknown = cli.run("flags", "clear", "no-such-flag", "--reason", "x", env=crm_settings.as_env())
    assert unknown.returncode == 1
    assert "no flag no-such-flag on" in unknown.stderr
    assert "crmstream flags list" in unknown.stderr

    same = cli.run("flags", "confirm", REVIEW_ID, "--reason", "x", env=crm_settings.as_env())
    assert same.returncode == 1
    assert "already confirmed (by op-1" in same.stderr
    nothing = consume(crm_settings, crm_settings.topics.customers, until=lambda r: True, settle=1)
    assert nothing == []


def test_an_unreachable_broker_is_reported_with_exit_1():
    from streams.tools.embedded import free_port

    done = cli.run(
        "flags",
        "list",
        "--connect-timeout",
        "1",
        env={"KAFKA_BROKER": f"kafka://127.0.0.1:{free_port()}"},
    )

    assert done.returncode == 1
    assert "waiting for the broker" in done.stderr
    assert "cannot reach the Kafka broker" in done.stderr
