"""Durable per-customer timers: what fires when, kept inside the customer's state.

A timer is ``[due, kind, key, cause, data]``: the logical time (epoch seconds)
it fires at, what fires (``"care.follow_up"``, ``"complaint.first_response"``),
which instance of that kind it is within the customer (an order id, a
complaint id, ``""`` for a singleton), the event id that set it (the action's
trigger and the root of its deterministic id) and a few plain parameters.

Timers live in :attr:`agents.state.CustomerState.timers`, sorted by due time,
so they are written to the table's changelog with the rest of the state and
survive restarts, crashes and rebalances. Setting a timer replaces the one
with the same kind and key (so a new purchase moves the repurchase reminder);
cancelling removes it. At most one timer per kind and key, and at most
``timers.max_per_customer`` in all, keeps the state bounded.

The functions here are pure list operations; which timers exist, and what a
fired timer does, is the care rules' business (:mod:`agents.care`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

#: Index of each field in a stored timer row.
T_DUE, T_KIND, T_KEY, T_CAUSE, T_DATA = range(5)

TimerData = dict[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Timer:
    """A read-only view of one stored timer."""

    due: float
    kind: str
    key: str
    cause: str
    data: TimerData = field(default_factory=dict)

    @classmethod
    def of(cls, row: list[Any]) -> Timer:
        return cls(row[T_DUE], row[T_KIND], row[T_KEY], row[T_CAUSE], dict(row[T_DATA]))

    def row(self) -> list[Any]:
        return [self.due, self.kind, self.key, self.cause, dict(self.data)]


def _sort_key(row: list[Any]) -> tuple[float, str, str]:
    return (row[T_DUE], row[T_KIND], row[T_KEY])


def set_timer(timers: list[list[Any]], timer: Timer, limit: int) -> bool:
    """Set ``timer``, replacing one of the same kind and key. False if ``limit`` is reached."""
    cancel(timers, timer.kind, timer.key)
    if len(timers) >= limit:
        return False
    bisect.insort(timers, timer.row(), key=_sort_key)
    return True


def cancel(timers: list[list[Any]], kind: str, key: str | None = None) -> int:
    """Remove the timers of ``kind`` (only ``key``'s, if given); how many were removed."""
    keep = [
        row for row in timers if not (row[T_KIND] == kind and (key is None or row[T_KEY] == key))
    ]
    removed = len(timers) - len(keep)
    if removed:
        timers[:] = keep
    return removed


def find(timers: list[list[Any]], kind: str, key: str = "") -> Timer | None:
    for row in timers:
        if row[T_KIND] == kind and row[T_KEY] == key:
            return Timer.of(row)
    return None


def next_due(timers: list[list[Any]]) -> float | None:
    """The earliest due time, or None without timers."""
    return timers[0][T_DUE] if timers else None


def pop_next(timers: list[list[Any]], until: float) -> Timer | None:
    """Remove and return the earliest timer if it is due at or before ``until``.

    One at a time: firing a timer may set another that is already due.
    """
    if timers and timers[0][T_DUE] <= until:
        return Timer.of(timers.pop(0))
    return None
