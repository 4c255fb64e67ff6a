"""At which time a customer lookup is evaluated (``GET /customers/{id}``, ``crmstream
customer``): the time a person asks for, the worker clock's default, and the oldest
time a customer's state can answer. Pure: no I/O, no faust.

**The default.** Without ``as_of`` the lookup uses the worker's clock for the
customer's partition: on the replay clock that partition's watermark (the time
its timers have reached), on the live clock now; in both cases the customer's
own latest event time if that is later (an event may be dated a little ahead of
either), and on the replay clock that time too while the partition has no clock
yet. So a replayed customer is judged at the replay's time, not at today's.

**The oldest answerable time** is the start of the UTC day of the customer's
latest event ``L`` (``last_event_at``). :func:`agents.model.profile` is exact
from there on, and not before, in any configuration:

- its windows are summed from the daily rows (``CustomerState.days``), which are
  pruned relative to ``L``: after any event the rows of the days
  ``day(L) - history_days + 1 ..`` are all kept, older ones may be gone. A
  lookup on day ``A`` sums the days ``A - W + 1 .. A`` of its widest window
  ``W`` (``max(rules.assessment_windows)``), so it is complete only for
  ``A >= day(L) - (history_days - W)``; with the defaults ``history_days == W``
  (365), i.e. ``A >= day(L)``: a day before it, the 365-day window reaches a day
  that may be pruned (so the oldest *kept* day is not an answerable one);
- its lifetime figures (orders, spend, paid orders and reviews for the grade,
  category affinity, first and last purchase) have every folded event in them,
  so on a day before ``day(L)`` they would count events that had not happened.

The model is day-granular (a lookup counts every row of its own day), so the
whole of ``day(L)`` is answerable.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from agents.model import DAY, day_of, iso_day

if TYPE_CHECKING:
    from agents.rules import Rules
    from agents.state import CustomerState

#: Where a lookup's time came from (the document's ``as_of_source``).
REQUESTED = "requested"
WATERMARK = "watermark"
NOW = "now"
LATEST_EVENT = "latest_event"

_BARE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(raw: str, name: str = "as_of", *, now: float | None = None) -> float:
    """Epoch seconds of ``raw``: ISO 8601 with a zone (``Z`` allowed), or a bare date
    ``YYYY-MM-DD`` (midnight UTC); also ``now`` when ``now`` is given (its value).

    :class:`ValueError` with a message naming ``name`` otherwise; a time without a
    zone is refused (it would mean a different moment on every machine).
    """
    text = raw.strip()
    if now is not None and text.lower() == "now":
        return now
    shown = repr(raw[:40])
    try:
        if _BARE_DATE.fullmatch(text):
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name} is not a date (YYYY-MM-DD) or an ISO 8601 time: {shown}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(
            f"{name} {shown} has no zone: add one (e.g. 2011-12-10T09:00:00Z or "
            "2011-12-10T09:00:00+01:00), or give a bare date (2011-12-10 = midnight UTC)"
        )
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"{name} is out of range: {shown}") from None


def lookup_time(
    clock: str,
    wall: float,
    watermark: float | None,
    latest_event: float | None,
    partition: int,
) -> tuple[float, str, str]:
    """``(time, source, reason)`` of a lookup without ``as_of`` (see the module doc).

    ``watermark``: the replay clock's watermark of the customer's ``partition`` on
    this worker (None: no clock yet); ``latest_event``: the customer's
    ``last_event_at``; ``wall``: now.
    """
    if clock == "live":
        if latest_event is not None and latest_event > wall:
            return latest_event, LATEST_EVENT, "the customer's latest event, later than now"
        return wall, NOW, "now (live clock)"
    if watermark is None:
        if latest_event is None:
            return wall, NOW, f"now: partition {partition} has no clock yet, the customer no event"
        return (
            latest_event,
            LATEST_EVENT,
            f"the customer's latest event: partition {partition} has no clock yet (replay clock)",
        )
    if latest_event is not None and latest_event > watermark:
        return (
            latest_event,
            LATEST_EVENT,
            f"the customer's latest event, later than partition {partition}'s watermark "
            "(replay clock)",
        )
    return watermark, WATERMARK, f"the watermark of partition {partition} (replay clock)"


def oldest_as_of(state: CustomerState) -> float | None:
    """The oldest time a lookup of ``state`` can answer: the start of the UTC day of
    its latest event (see the module doc); None (any time) before any event."""
    if state.activity.last_event_at is None:
        return None
    return float(day_of(state.activity.last_event_at) * DAY)


def too_old(state: CustomerState, rules: Rules, at: float) -> str | None:
    """Why ``at`` is older than ``state`` can answer (a message), or None if it can."""
    oldest = oldest_as_of(state)
    if oldest is None or at >= oldest:
        return None
    return (
        f"as_of {iso(at)} is before the day of this customer's latest event "
        f"({iso_day(day_of(oldest))}): the state has that event folded in, and keeps its "
        f"daily totals for {rules.history_days} days back from it (the widest window is "
        f"{max(rules.assessment_windows)} days), so it cannot say what the customer looked "
        f"like earlier. The oldest answerable time is {iso(oldest)}"
    )


def iso(at: float) -> str:
    """``at`` as ISO 8601 UTC with ``Z``, as the profile documents write times."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
