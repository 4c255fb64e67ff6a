"""Segment changes: re-assess a customer after each event and say what changed.

The customer's own clock is the latest event time it has seen, so a late
event re-computes the windows without moving the clock back. A stage reached
by the passing of time alone (dormant, churned) is found when the next event
arrives a day or more later: it is published first, dated the day it was
reached, and then any change the event itself causes (e.g. dormant ->
reactivated). Stages reached while no events arrive at all are the durable
timers' job (the care-trigger issue), not this module's.
"""

from __future__ import annotations

import datetime as dt

from agents.model import (
    Stage,
    assess,
    day_of,
    grade_window_change_day,
    next_change_day,
    stage_and_grade,
    stage_as_of,
)
from agents.state import CustomerState
from schemas.actions import ClockMode
from schemas.changes import CustomerChange, Dimension, change_id_for
from streams.rules import Rules


def clock_of(state: CustomerState, event_at: float) -> float:
    """The customer's clock once ``event_at`` is applied: never moves backwards."""
    last = state.last_event_at
    return event_at if last is None or event_at > last else last


def time_driven_stage(state: CustomerState, at: float, rules: Rules) -> tuple[str, str, float]:
    """(stage, reason, since) as of ``at`` *before* the event is applied, if time alone
    may have changed it since the last assessment (``CustomerState.next_change_day``).

    Returns the stored stage when nothing could have changed by time alone.
    """
    due = state.next_change_day
    if state.assessed_at is None or due is None or day_of(at) < due:
        return state.stage, state.stage_reason, state.stage_since or at
    stage = stage_as_of(state, at, rules)
    return stage.name, stage.reason, stage.since if stage.since is not None else at


def reassess(
    state: CustomerState,
    at: float,
    trigger_event_id: str,
    before_event: tuple[str, str, float] | None,
    rules: Rules,
    grade_only: bool = False,
) -> list[CustomerChange]:
    """Assess ``state`` as of ``at``, record the result in it, return the changes.

    ``before_event`` is :func:`time_driven_stage`'s answer for the state as it
    was before the event was applied (``None``: the event cannot have changed
    the stage, so it is the stage after).

    ``grade_only``: the event fed only the grade (a payment, a review or a
    complaint: no purchase, no order count or amount), and time alone cannot
    have changed anything since the last assessment (the event is before
    ``CustomerState.next_change_day``). Then stage and RFM group are what they
    were: only the grade is re-assessed (with the stage's reason as of
    ``at``), and the next change day is kept, or brought forward to the day
    the oldest row in the grade's window leaves it (a complaint's row may be
    that one). The changes are the same as a full re-assessment's, and so is
    the state, but for a next change day that may differ (still a valid bound).
    """
    if grade_only:
        stage, grade = stage_and_grade(state, at, rules)
        if stage.name == state.stage:  # always, unless the caller's promise is broken
            changes: list[CustomerChange] = []
            state.stage_reason = stage.reason
            if grade.name != state.grade:
                _change(
                    changes,
                    state.customer_id,
                    trigger_event_id,
                    Dimension.GRADE,
                    state.grade,
                    grade.name,
                    grade.reason,
                    at,
                )
                state.grade = grade.name
            state.score = grade.score
            state.assessed_at = at
            leaves = grade_window_change_day(state, at, rules)
            if leaves is not None and (
                state.next_change_day is None or leaves < state.next_change_day
            ):
                state.next_change_day = leaves
            return changes
    view = assess(state, at, rules)
    changes = []
    who = (changes, state.customer_id, trigger_event_id)

    current = state.stage
    timed, timed_reason, timed_since = before_event or (view.stage.name, "", at)
    if timed != current and timed != view.stage.name:
        _change(*who, Dimension.STAGE, current, timed, timed_reason, timed_since)
        current, state.stage_since = timed, timed_since
    if view.stage.name != current:
        since = view.stage.since
        # Reached by time alone (dormant, churned): dated the day it was reached.
        by_time = view.stage.name in (Stage.DORMANT, Stage.CHURNED)
        when = since if by_time and since is not None and since <= at else at
        _change(*who, Dimension.STAGE, current, view.stage.name, view.stage.reason, when)
        state.stage_since = when
    state.stage = view.stage.name
    state.stage_reason = view.stage.reason

    if view.rfm.group != state.rfm_group:
        _change(*who, Dimension.RFM_GROUP, state.rfm_group, view.rfm.group, view.rfm.reason, at)
        state.rfm_group = view.rfm.group
    if view.grade.name != state.grade:
        _change(*who, Dimension.GRADE, state.grade, view.grade.name, view.grade.reason, at)
        state.grade = view.grade.name
    state.score = view.grade.score
    state.assessed_at = at
    state.next_change_day = next_change_day(state, view, rules)
    return changes


def _change(
    changes: list[CustomerChange],
    customer_id: str,
    trigger_event_id: str,
    dimension: Dimension,
    before: str | None,
    after: str,
    reason: str,
    when: float,
) -> None:
    # Built without re-validation (hot path); tests validate these records
    # against the contract.
    changes.append(
        CustomerChange.model_construct(
            change_id=change_id_for(customer_id, dimension, trigger_event_id, after),
            customer_id=customer_id,
            dimension=dimension,
            before=before,
            after=after,
            reason=reason,
            trigger_event_id=trigger_event_id,
            occurred_at=dt.datetime.fromtimestamp(when, dt.UTC),
            schema_version=1,
            clock=ClockMode.EVENT,
        )
    )
