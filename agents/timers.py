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
``care.max_timers`` in all (the rules file), keeps the state bounded.

The functions here are pure list operations; which timers exist, and what a
fired timer does, is the care rules' business (:mod:`agents.care`).
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Index of each field in a stored timer row.
T_DUE, T_KIND, T_KEY, T_CAUSE, T_DATA = range(5)

TimerData = dict[str, str | int | float | bool]

#: Timers not set (the customer held ``care.max_timers`` already) or dropped
#: (poison isolation), by kind, since the runtime last took the tally. The pure
#: code counts; the runtime shell turns the tally into a metric.
_dropped: Counter[str] = Counter()


def note_dropped(kind: str, n: int = 1) -> None:
    """Count ``n`` timers of ``kind`` that will never fire."""
    _dropped[kind] += n


def take_dropped() -> Counter[str]:
    """The tally since the last call, which resets it."""
    taken = Counter(_dropped)
    _dropped.clear()
    return taken


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
    return set_row(timers, timer.row(), limit)


def set_row(timers: list[list[Any]], row: list[Any], limit: int) -> bool:
    """:func:`set_timer` with the stored row ``[due, kind, key, cause, data]`` itself (the
    list is kept: the caller must not change it afterwards). In place: the timer it
    replaces is deleted where it stands, the others are not copied."""
    cancel(timers, row[T_KIND], row[T_KEY])
    return _insert(timers, row, limit)


def reset_row(timers: list[list[Any]], at: int | None, row: list[Any], limit: int) -> bool:
    """:func:`set_row` for a caller that has looked for the timer ``row`` replaces:
    ``at`` is where :func:`index_of` found the first of its kind and key (None: there
    is none). The walk goes on from there only, so the two walk the timers once between
    them where ``find_row`` and ``set_row`` walked them twice (a browsing event moves
    its customer's abandonment timer on)."""
    if at is not None:
        kind, key = row[T_KIND], row[T_KEY]
        del timers[at]
        i = len(timers)
        while i > at:  # the same kind and key again (set_row drops every one)
            i -= 1
            later = timers[i]
            if later[T_KIND] == kind and later[T_KEY] == key:
                del timers[i]
    return _insert(timers, row, limit)


def _insert(timers: list[list[Any]], row: list[Any], limit: int) -> bool:
    if len(timers) >= limit:
        return False
    bisect.insort(timers, row, key=_sort_key)
    return True


def cancel(timers: list[list[Any]], kind: str, key: str | None = None) -> int:
    """Remove the timers of ``kind`` (only ``key``'s, if given), in place; how many were
    removed."""
    removed = 0
    i = len(timers)
    while i:  # from the end: a deletion leaves the rows still to look at where they are
        i -= 1
        row = timers[i]
        if row[T_KIND] == kind and (key is None or row[T_KEY] == key):
            del timers[i]
            removed += 1
    return removed


def find(timers: list[list[Any]], kind: str, key: str = "") -> Timer | None:
    row = find_row(timers, kind, key)
    return None if row is None else Timer.of(row)


def find_row(timers: list[list[Any]], kind: str, key: str = "") -> list[Any] | None:
    """The stored row of the timer of ``kind`` and ``key`` (read it, never change it)."""
    at = index_of(timers, kind, key)
    return None if at is None else timers[at]


def index_of(timers: list[list[Any]], kind: str, key: str = "") -> int | None:
    """Where the timer of ``kind`` and ``key`` is in ``timers``; None if there is none."""
    for at, row in enumerate(timers):
        if row[T_KIND] == kind and row[T_KEY] == key:
            return at
    return None


def is_due(timers: list[list[Any]], until: float, inclusive: bool = True) -> bool:
    """Whether the earliest timer is due before ``until`` (or at it, if ``inclusive``)."""
    if not timers:
        return False
    due: float = timers[0][T_DUE]
    return due < until or (inclusive and due == until)


def pop_next(timers: list[list[Any]], until: float, inclusive: bool = True) -> Timer | None:
    """Remove and return the earliest timer if it is due (:func:`is_due`).

    One at a time: firing a timer may set another that is already due.
    """
    if is_due(timers, until, inclusive):
        return Timer.of(timers.pop(0))
    return None


# -- the due-time index ---------------------------------------------------------------


class TimerIndex:
    """Which customers have a timer due, by partition, without walking every customer.

    One min-heap of ``(due, customer id)`` per partition, plus each indexed
    customer's earliest due time. :meth:`note` is called with a customer's
    earliest due time after every state write; a heap entry that no longer
    matches (the timer moved or was cancelled) is dropped or re-pushed when it
    surfaces, so both operations are O(log n). What is due is found without
    looking at what is not: :meth:`pop_due` pops only entries due by the
    watermark, and :meth:`overdue` walks only the part of the heap due before
    its time, so a sweep costs in proportion to the timers due, never to the
    timers pending. The index is memory only: the timers themselves are in the
    state table, and the index is rebuilt from it when partitions are assigned
    (:meth:`rebuild`).

    A customer's earliest timer that moves earlier leaves its later entry behind
    until its time comes, which may be days of event time (a re-assessment); once
    the earlier timer has fired, the customer is indexed again with a second entry
    at that time. At 100k customers the heaps held 161k entries for 89k customers
    (``bench/README.md``), and more the longer a worker runs. Once the heaps hold
    half as many entries again as the customers indexed, and ``slack`` more, they
    are built again with one entry per customer (:meth:`_compact`: O(n) each time,
    so O(1) per entry pushed over time). ``slack`` None: never (tests).
    """

    def __init__(self, slack: int | None = 1024) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        self._due: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._slack = slack
        #: Heap entries in all, stale ones included.
        self.entries = 0
        self.pending = 0
        #: Heap entries :meth:`pop_due` and :meth:`overdue` have looked at, in all:
        #: the work of the sweeps and of the overdue gauge (tests hold it to the due).
        self.examined = 0

    def __len__(self) -> int:
        """Customers with at least one pending timer."""
        return len(self._due)

    def note(self, customer_id: str, partition: int, rows: list[list[Any]]) -> None:
        """Record ``customer_id``'s timers (its state's ``timers``; empty: none left)."""
        self.pending += len(rows) - self._count.pop(customer_id, 0)
        if not rows:
            if self._due.pop(customer_id, None) is not None:
                self._compact_if_loose()
            return
        self._count[customer_id] = len(rows)
        due = rows[0][T_DUE]
        known = self._due.get(customer_id)
        self._due[customer_id] = due
        if known is None or due < known:
            heapq.heappush(self._heaps.setdefault(partition, []), (due, customer_id))
            self.entries += 1
            self._compact_if_loose()

    def _compact_if_loose(self) -> None:
        customers = len(self._due)
        if self._slack is not None and self.entries > customers + customers // 2 + self._slack:
            self._compact()

    def _compact(self) -> None:
        """Each heap with one entry per customer it indexes, at its current due time:
        what :meth:`pop_due` pops, and in what order, is the same."""
        due = self._due.get
        for partition, heap in self._heaps.items():
            kept: dict[str, tuple[float, str]] = {}
            for entry in heap:  # an entry at the due time as it is: most of them
                at, customer_id = entry
                current = due(customer_id)
                if current is None or current < at:
                    continue
                if current == at:
                    kept[customer_id] = entry
                elif customer_id not in kept:  # moved later: at its due time now
                    kept[customer_id] = (current, customer_id)
            self._heaps[partition] = heap = list(kept.values())
            heapq.heapify(heap)
        self.entries = sum(len(heap) for heap in self._heaps.values())

    def pop_due(
        self, until: Callable[[int], tuple[float, bool] | None], limit: int
    ) -> list[tuple[str, int]]:
        """Up to ``limit`` (customer id, partition) pairs with a timer due by ``until(partition)``.

        ``until`` gives each partition's watermark ``(time, inclusive)``: due
        before the time, or at it if inclusive (``None``: no clock yet). The
        customers returned are removed from the index; note them again after
        their timers have fired.
        """
        out: list[tuple[str, int]] = []
        for partition, heap in self._heaps.items():
            mark = until(partition)
            if mark is None:
                continue
            now, inclusive = mark
            while (
                heap
                and (heap[0][0] < now or (inclusive and heap[0][0] == now))
                and len(out) < limit
            ):
                self.examined += 1
                due, customer_id = heapq.heappop(heap)
                self.entries -= 1
                current = self._due.get(customer_id)
                if current is None or current < due:
                    continue  # cancelled, or an earlier entry exists
                if current > due:  # moved later: wait for the new due time
                    heapq.heappush(heap, (current, customer_id))
                    self.entries += 1
                    continue
                del self._due[customer_id]
                self.pending -= self._count.pop(customer_id, 0)
                out.append((customer_id, partition))
        return out

    def overdue(self, now: float, partition: int) -> int:
        """Customers of ``partition`` whose earliest timer was due before ``now``.

        Walks the heap from its root and leaves every subtree whose root is due at
        or after ``now`` (a child is never due before its parent): the entries due
        before ``now`` and at most two more per such entry are looked at, not the
        whole heap.
        """
        heap = self._heaps.get(partition)
        if not heap:
            return 0
        due = self._due
        size = len(heap)
        found: set[str] = set()
        todo = [0]
        while todo:
            i = todo.pop()
            self.examined += 1
            at, customer_id = heap[i]
            if at >= now:
                continue
            # The customer's earliest timer now, not the entry's time: a timer that
            # moved later is indexed by its old entry until that surfaces.
            current = due.get(customer_id)
            if current is not None and current < now:
                found.add(customer_id)
            todo.extend(child for child in (2 * i + 1, 2 * i + 2) if child < size)
        return len(found)

    def clear(self) -> None:
        self._heaps.clear()
        self._due.clear()
        self._count.clear()
        self.entries = 0
        self.pending = 0

    def rebuild(self, entries: Iterable[tuple[str, int, list[list[Any]]]]) -> None:
        """Index from scratch: (customer id, partition, timer rows) per customer."""
        self.clear()
        for customer_id, partition, rows in entries:
            self.note(customer_id, partition, rows)
