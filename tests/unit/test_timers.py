"""The timer list's operations (agents.timers), held to their plain definitions."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agents import care, timers
from agents.customer_events import decide
from agents.rules import Rules
from agents.state import CustomerState
from agents.timers import T_DATA, T_KEY, T_KIND
from tests.unit.conftest import CUSTOMER, T0


def _reference_set(rows: list[list[Any]], row: list[Any], limit: int) -> bool:
    """``set_row`` by its definition: drop every timer of the row's kind and key, then
    insert the row after every timer that sorts before it or with it."""
    rows[:] = [r for r in rows if not (r[T_KIND] == row[T_KIND] and r[T_KEY] == row[T_KEY])]
    if len(rows) >= limit:
        return False
    bisect.insort(rows, row, key=lambda r: (r[0], r[1], r[2]))
    return True


_kinds = st.sampled_from(["care.abandoned", "care.follow_up", "model.reassess"])
_keys = st.sampled_from(["", "o-1", "o-2"])
_dues = st.sampled_from([0.0, 10.0, 10.0, 20.0, 30.0, 40.0])
_rows = st.builds(lambda d, k, key, c: [d, k, key, c, {}], _dues, _kinds, _keys, st.text("ab"))


@settings(max_examples=400, deadline=None)
@given(
    start=st.lists(_rows, max_size=8),
    operations=st.lists(st.tuples(st.booleans(), _rows), max_size=12),
    limit=st.integers(1, 9),
)
def test_setting_and_cancelling_timers_in_place_matches_their_definition(
    start: list[list[Any]], operations: list[tuple[bool, list[Any]]], limit: int
) -> None:
    # Given a sorted timer list (a stored state may even hold a kind and key twice)
    start.sort(key=lambda r: (r[0], r[1], r[2]))
    mine, expected = [list(r) for r in start], [list(r) for r in start]

    # When timers are set and cancelled, in place and by the definition
    for is_set, row in operations:
        if is_set:
            assert timers.set_row(mine, list(row), limit) == _reference_set(
                expected, list(row), limit
            )
        else:
            kept = [
                r for r in expected if not (r[T_KIND] == row[T_KIND] and r[T_KEY] == row[T_KEY])
            ]
            assert timers.cancel(mine, row[T_KIND], row[T_KEY]) == len(expected) - len(kept)
            expected[:] = kept

    # Then both lists hold the same timers in the same order
    assert mine == expected


@settings(max_examples=400, deadline=None)
@given(
    start=st.lists(_rows, max_size=8),
    rows=st.lists(_rows, min_size=1, max_size=6),
    limit=st.integers(1, 9),
)
def test_resetting_a_timer_found_already_matches_setting_it(
    start: list[list[Any]], rows: list[list[Any]], limit: int
) -> None:
    # Given a sorted timer list (a stored state may even hold a kind and key twice)
    start.sort(key=lambda r: (r[0], r[1], r[2]))
    mine, expected = [list(r) for r in start], [list(r) for r in start]

    # When each row is set where index_of found its kind and key, and by the definition
    for row in rows:
        at = timers.index_of(mine, row[T_KIND], row[T_KEY])
        assert (at is None) == (timers.find_row(mine, row[T_KIND], row[T_KEY]) is None)
        assert timers.reset_row(mine, at, list(row), limit) == _reference_set(
            expected, list(row), limit
        )

    # Then both lists hold the same timers in the same order
    assert mine == expected


def test_moving_a_timer_keeps_the_list_object():
    # Given a customer's timers, held by reference elsewhere (the state's part)
    rows = [[10.0, "a", "", "e-1", {}], [20.0, "b", "", "e-2", {}], [30.0, "c", "", "e-3", {}]]
    held = rows

    # When one moves later, past another, and one moves within its place
    timers.set_row(rows, [35.0, "a", "", "e-4", {}], 9)
    timers.set_row(rows, [25.0, "b", "", "e-5", {}], 9)

    # Then the same list holds them, in due order
    assert held is rows
    assert [(r[0], r[1]) for r in rows] == [(25.0, "b"), (30.0, "c"), (35.0, "a")]


def test_a_view_moves_its_abandonment_timer_in_one_walk(
    event_factory: Callable[..., BaseModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a customer with an abandonment timer among others (an order's)
    state = CustomerState(CUSTOMER)
    rules = Rules()
    decide(state, event_factory("order.placed", at=T0), rules)
    decide(state, event_factory("browse.view", at=T0 + dt.timedelta(minutes=5), sku="sku-1"), rules)
    kinds = [row[T_KIND] for row in state.timers]
    assert kinds.count(care.ABANDONED) == 1 and len(kinds) > 2

    # When a later view moves it on, with the second walk (cancel) out of reach
    def second_walk(*args: Any) -> int:
        raise AssertionError("the timers were walked again to cancel the row found")

    monkeypatch.setattr(timers, "cancel", second_walk)
    decide(state, event_factory("browse.view", at=T0 + dt.timedelta(hours=1), sku="sku-2"), rules)

    # Then the one abandonment timer is due a view's delay after the second view, for it,
    # in its place by due time, and the other timers are as they were
    (moved,) = [row for row in state.timers if row[T_KIND] == care.ABANDONED]
    due = (T0 + dt.timedelta(hours=1)).timestamp() + rules.care.abandonment.view_delay_hours * 3600
    assert moved[0] == due and moved[T_DATA]["sku"] == "sku-2"
    assert sorted(row[T_KIND] for row in state.timers) == sorted(kinds)
    assert state.timers == sorted(state.timers, key=lambda r: (r[0], r[1], r[2]))


def test_a_timer_due_at_the_watermark_fires_only_if_the_watermark_is_inclusive():
    # Given a timer due at 10 (a watermark "at 10, exclusive" says events at 10 may still
    # come: what is due at 10 waits for them)
    rows = [[10.0, "a", "", "e-1", {}]]

    # Then it is due before 10 only if the watermark takes 10 in, and always after 10
    assert timers.is_due(rows, 10.0, inclusive=True)
    assert not timers.is_due(rows, 10.0, inclusive=False)
    assert timers.is_due(rows, 10.5, inclusive=False)
    assert not timers.is_due(rows, 9.5, inclusive=True)
    assert not timers.is_due([], 10.0)
    assert timers.pop_next(rows, 10.0, inclusive=False) is None
    assert rows and timers.pop_next(rows, 10.0) == timers.Timer(10.0, "a", "", "e-1", {})
    assert rows == []


def test_a_rebuilt_index_counts_what_it_was_given_not_what_it_held():
    # Given an index that held timers, rebuilt from a restored table (an assignment)
    index = timers.TimerIndex()
    index.note("old", 0, [[5.0, "k", "", "e", {}]])
    rows = [[10.0, "k", "", "e", {}], [20.0, "k", "x", "e", {}]]

    index.rebuild([("a", 0, rows), ("b", 1, rows[:1]), ("c", 1, [])])

    # Then it counts the given timers and customers only, and pops them by their clocks
    assert (index.pending, len(index)) == (3, 2)
    assert index.pop_due(lambda p: (15.0, True), 10) == [("a", 0), ("b", 1)]
    assert index.pending == 0
