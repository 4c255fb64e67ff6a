"""When a lookup is evaluated (streams.as_of): the time asked for, the clock's default,
and the oldest time a customer's state can answer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from agents.model import profile
from agents.rules import Rules
from agents.state import CustomerState
from streams import as_of


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


# -- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1998-06-30", "1998-06-30T00:00:00+00:00"),
        ("2011-12-10T09:30:00Z", "2011-12-10T09:30:00+00:00"),
        ("2011-12-10T09:30:00+01:00", "2011-12-10T08:30:00+00:00"),
        ("2011-12-10T09:30:00.250-05:00", "2011-12-10T14:30:00.250+00:00"),
        (" 2011-12-10 ", "2011-12-10T00:00:00+00:00"),
    ],
)
def test_a_bare_date_is_midnight_utc_and_a_zoned_time_is_that_moment(raw, expected):
    assert as_of.parse_time(raw) == ts(expected)


@pytest.mark.parametrize("raw", ["1998-06-30T00:00", "2011-12-10T09:30:00", "2011-12-10 09:30"])
def test_a_time_without_a_zone_is_refused_with_the_fix(raw):
    with pytest.raises(ValueError, match="has no zone") as refused:
        as_of.parse_time(raw)

    assert "2011-12-10 = midnight UTC" in str(refused.value)


@pytest.mark.parametrize("raw", ["yesterday", "", "2011-13-01", "2011-12-32", "12/10/2011"])
def test_a_value_that_is_no_time_is_refused_naming_the_parameter(raw):
    with pytest.raises(ValueError, match=r"^as_of is not a date"):
        as_of.parse_time(raw)


def test_now_is_a_time_only_where_the_caller_allows_it():
    assert as_of.parse_time("now", "--to", now=1234.5) == 1234.5
    assert as_of.parse_time("NOW", "--to", now=1234.5) == 1234.5
    with pytest.raises(ValueError, match=r"^as_of is not a date"):
        as_of.parse_time("now")


# -- the default time: the worker's clock -------------------------------------------

WALL = ts("2026-12-01T12:00:00+00:00")
MARK = ts("2011-12-10T00:00:00+00:00")


@pytest.mark.parametrize(
    ("clock", "watermark", "latest", "expected", "source"),
    [
        # the replay clock: the partition's watermark, not the wall clock
        ("replay", MARK, MARK - 86_400, MARK, "watermark"),
        ("replay", MARK, MARK, MARK, "watermark"),
        # ... unless the customer's own latest event is later (clock lateness)
        ("replay", MARK, MARK + 60, MARK + 60, "latest_event"),
        # ... or the partition has no clock yet
        ("replay", None, MARK - 86_400, MARK - 86_400, "latest_event"),
        ("replay", None, None, WALL, "now"),
        # the live clock: now, or a (slightly future-dated) latest event
        ("live", MARK, MARK, WALL, "now"),
        ("live", None, WALL - 5, WALL, "now"),
        ("live", None, WALL + 3600, WALL + 3600, "latest_event"),
    ],
)
def test_without_as_of_the_lookup_uses_the_clock_of_the_customers_partition(
    clock, watermark, latest, expected, source
):
    at, got_source, reason = as_of.lookup_time(clock, WALL, watermark, latest, partition=2)

    assert (at, got_source) == (expected, source)
    assert reason
    if clock == "replay":
        assert "partition 2" in reason


# -- the oldest answerable time -----------------------------------------------------


class KeepEverything(Rules):
    """The default rules, but a state that never prunes its daily rows: the reference."""

    @property
    def history_days(self) -> int:
        return 100_000


RULES = Rules()
LATEST = dt.datetime(2025, 1, 10, 15, 30, tzinfo=dt.UTC)
#: 365 days before the latest event's day: inside the 365-day window of the day
#: before it, and dropped from the state by the latest event (history_days = 365).
PRUNED = LATEST - dt.timedelta(days=365)


@pytest.fixture
def histories(order_factory: Callable[..., Any]) -> tuple[CustomerState, CustomerState]:
    """One customer's state with the default rules, and the same without any pruning:
    orders on PRUNED and on LATEST's day."""
    events = [
        order_factory(at=PRUNED, order_id="o-1", amount=80.0),
        order_factory(at=LATEST, order_id="o-2", amount=20.0),
    ]
    pruned, full = CustomerState("c-1"), CustomerState("c-1")
    for event in events:
        pruned.apply(event, RULES)
        full.apply(event, KeepEverything())
    assert [row[0] for row in pruned.activity.days] == [LATEST.timestamp() // 86_400]
    assert len(full.activity.days) == 2
    return pruned, full


def test_the_oldest_answerable_time_is_the_start_of_the_latest_events_day(histories):
    pruned, _ = histories

    assert as_of.oldest_as_of(pruned) == ts("2025-01-10T00:00:00+00:00")
    assert as_of.oldest_as_of(CustomerState("no-event-yet")) is None


@pytest.mark.parametrize(
    "at",
    ["2025-01-10T00:00:00+00:00", "2025-01-10T15:30:00+00:00", "2025-03-01T00:00:00+00:00"],
)
def test_from_the_latest_events_day_on_the_answer_is_exact(histories, at):
    pruned, full = histories

    assert as_of.too_old(pruned, RULES, ts(at)) is None
    answer, reference = profile(pruned, ts(at), RULES), profile(full, ts(at), RULES)
    # the one designed difference: a comeback whose previous purchase was pruned
    # reads "after a long spell" instead of "after 365 days"
    reasons = answer["stage"].pop("reason"), reference["stage"].pop("reason")
    assert reasons[0] == reasons[1] or "after a long spell" in reasons[0]
    assert answer == reference


def test_a_second_before_it_is_refused_saying_why_and_the_oldest_time(histories):
    pruned, _ = histories

    message = as_of.too_old(pruned, RULES, ts("2025-01-09T23:59:59+00:00"))

    assert message is not None
    assert "before the day of this customer's latest event (2025-01-10)" in message
    assert "365 days" in message
    assert message.endswith("The oldest answerable time is 2025-01-10T00:00:00Z")


@pytest.mark.parametrize(
    "at",
    [
        "2025-01-09T00:00:00+00:00",  # the day before the latest event's
        "2024-01-12T00:00:00+00:00",  # the oldest day whose row the state surely keeps
    ],
)
def test_before_it_the_state_would_answer_wrong(histories, at):
    """Why the boundary is the latest event's day, not the oldest kept day: the widest
    window (365 days) reaches the pruned row, and the lifetime figures hold later events."""
    pruned, full = histories

    wrong, right = profile(pruned, ts(at), RULES), profile(full, ts(at), RULES)

    assert wrong["rfm"]["windows"]["365d"]["frequency"] == 0
    assert right["rfm"]["windows"]["365d"]["frequency"] == 1
    assert wrong["stage"]["name"] == "potential"  # the pruned purchase is not seen
    assert right["stage"]["name"] != "potential"
    assert right["lifetime"]["orders"] == 2  # the later order, even without pruning
    assert as_of.too_old(pruned, RULES, ts(at)) is not None
