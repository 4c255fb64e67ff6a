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
    Assessment,
    Stage,
    assess,
    day_of,
    grade_window_change_day,
    next_change_day,
    stage_and_grade,
    stage_as_of,
)
from agents.rules import Rules
from agents.state import CustomerState
from schemas.actions import ClockMode
from schemas.base import built
from schemas.changes import CustomerChange, Dimension, change_id_for, time_change_id_for


def clock_of(state: CustomerState, event_at: float) -> float:
    """The customer's clock once ``event_at`` is applied: never moves backwards."""
    last = state.activity.last_event_at
    return event_at if last is None or event_at > last else last


#: (stage, reason, since, the event that started it) before an event is applied.
TimedStage = tuple[str, str, float, str | None]


def time_driven_stage(state: CustomerState, at: float, rules: Rules) -> TimedStage:
    """(stage, reason, since, trigger) as of ``at`` *before* the event is applied, if
    time alone may have changed it since the last assessment
    (``CustomerState.assessment.next_change_day``); ``trigger`` is what a time-driven change
    names (:func:`time_trigger`, before the event).

    Returns the stored stage when nothing could have changed by time alone.
    """
    trigger = time_trigger(state)
    due = state.assessment.next_change_day
    if state.assessment.assessed_at is None or due is None or day_of(at) < due:
        return (
            state.assessment.stage,
            state.assessment.stage_reason,
            state.assessment.stage_since or at,
            trigger,
        )
    stage = stage_as_of(state, at, rules)
    return stage.name, stage.reason, stage.since if stage.since is not None else at, trigger


def time_trigger(state: CustomerState) -> str | None:
    """The event a change reached by the passing of time names: the last purchase
    (dormant and churned count from it), else the customer's latest event."""
    return state.activity.last_purchase_event_id or state.activity.last_event_id


def reassess(
    state: CustomerState,
    at: float,
    trigger_event_id: str | None,
    before_event: TimedStage | None,
    rules: Rules,
    grade_only: bool = False,
    view: Assessment | None = None,
) -> list[CustomerChange]:
    """Assess ``state`` as of ``at``, record the result in it, return the changes.

    ``trigger_event_id``: the event being applied, or ``None`` when a timer
    re-assesses the customer because time alone may have changed something.

    ``before_event`` is :func:`time_driven_stage`'s answer for the state as it
    was before the event was applied (``None``: the event cannot have changed
    the stage, so it is the stage after).

    Change ids: a change the event causes is identified by the customer, the
    dimension, the event and the new value; a change reached by the passing of
    time (dormant, churned, a window sliding) by the customer, the dimension,
    the day it happened and the new value, and it names the event that started
    it (:func:`time_trigger`). So the same transition always has the same id,
    and two different transitions never share one.

    ``grade_only``: the event fed only the grade (a payment, a review or a
    complaint: no purchase, no order count or amount), and time alone cannot
    have changed anything since the last assessment (the event is before
    ``CustomerState.assessment.next_change_day``). Then stage and RFM group are what they
    were: only the grade is re-assessed (with the stage's reason as of
    ``at``), and the next change day is kept, or brought forward to the day
    the oldest row in the grade's window leaves it (a complaint's row may be
    that one). The changes are the same as a full re-assessment's, and so is
    the state, but for a next change day that may differ (still a valid bound).

    ``view``: ``assess(state, at, rules)`` taken already (the caller passes it on to the
    tier nudge), else worked out here.
    """
    if grade_only:
        stage, grade = stage_and_grade(state, at, rules)
        if stage.name == state.assessment.stage:  # always, unless the caller's promise is broken
            changes: list[CustomerChange] = []
            state.assessment.stage_reason = stage.reason
            if grade.name != state.assessment.grade:
                _change(
                    changes,
                    state,
                    trigger_event_id,
                    Dimension.GRADE,
                    state.assessment.grade,
                    grade.name,
                    grade.reason,
                    at,
                )
                state.assessment.grade = grade.name
            state.assessment.score = grade.score
            state.assessment.assessed_at = at
            leaves = grade_window_change_day(state, at, rules)
            if leaves is not None and (
                state.assessment.next_change_day is None
                or leaves < state.assessment.next_change_day
            ):
                state.assessment.next_change_day = leaves
            return changes
    if view is None:
        view = assess(state, at, rules)
    changes = []
    who = (changes, state, trigger_event_id)

    current = state.assessment.stage
    timed, timed_reason, timed_since, timed_trigger = before_event or (
        view.stage.name,
        "",
        at,
        None,
    )
    if timed != current and timed != view.stage.name:
        _change(
            changes,
            state,
            None,
            Dimension.STAGE,
            current,
            timed,
            timed_reason,
            timed_since,
            timed_trigger,
        )
        current, state.assessment.stage_since = timed, timed_since
    if view.stage.name != current:
        since = view.stage.since
        # Reached by time alone (dormant, churned): dated the day it was reached.
        by_time = view.stage.name in (Stage.DORMANT, Stage.CHURNED)
        when = since if by_time and since is not None and since <= at else at
        _change(
            changes,
            state,
            None if by_time else trigger_event_id,
            Dimension.STAGE,
            current,
            view.stage.name,
            view.stage.reason,
            when,
        )
        state.assessment.stage_since = when
    state.assessment.stage = view.stage.name
    state.assessment.stage_reason = view.stage.reason

    if view.rfm.group != state.assessment.rfm_group:
        _change(
            *who,
            Dimension.RFM_GROUP,
            state.assessment.rfm_group,
            view.rfm.group,
            view.rfm.reason,
            at,
        )
        state.assessment.rfm_group = view.rfm.group
    if view.grade.name != state.assessment.grade:
        _change(
            *who, Dimension.GRADE, state.assessment.grade, view.grade.name, view.grade.reason, at
        )
        state.assessment.grade = view.grade.name
    state.assessment.score = view.grade.score
    state.assessment.assessed_at = at
    state.assessment.next_change_day = next_change_day(state, view, rules)
    return changes


def _change(
    changes: list[CustomerChange],
    state: CustomerState,
    trigger_event_id: str | None,
    dimension: Dimension,
    before: str | None,
    after: str,
    reason: str,
    when: float,
    time_trigger_id: str | None = None,
) -> None:
    """Record one change; ``trigger_event_id`` None: reached by the passing of time
    (identified by its day, naming ``time_trigger_id`` or :func:`time_trigger`)."""
    customer_id = state.customer_id
    if trigger_event_id is None:
        change_id = time_change_id_for(customer_id, dimension, day_of(when), after)
        trigger = time_trigger_id or time_trigger(state) or f"time:{day_of(when)}"
    else:
        change_id = change_id_for(customer_id, dimension, trigger_event_id, after)
        trigger = trigger_event_id
    # Built without re-validation (hot path: schemas.base.built); tests validate these records
    # against the contract.
    changes.append(
        built(
            CustomerChange,
            change_id=change_id,
            customer_id=customer_id,
            dimension=dimension,
            before=before,
            after=after,
            reason=reason,
            trigger_event_id=trigger,
            occurred_at=dt.datetime.fromtimestamp(when, dt.UTC),
            schema_version=1,
            clock=ClockMode.EVENT,
        )
    )
