"""Anomaly flags on one customer (domain.md §4) and their review (the appeal path).

Pure functions of :class:`~agents.state.CustomerState`; no I/O, event time only.

- :func:`detect` is called after ``state.apply(event)``: it records the
  event as evidence (when it is one) and returns the flags it raises, already
  recorded in the state. The caller publishes them on ``crm.flags``.
- :func:`review` applies an operator's decision (``customer.flag_reviewed``)
  and returns the audit record to publish, or ``None`` for a flag this
  customer does not have (never raised, or forgotten by an erasure).
- :func:`open_flags` and :func:`flag_tags` are views for the contact policy
  and the profile.

Rules (thresholds in :class:`agents.rules.FlagRules`, see ``docs/flags.md``):
repeated returns, cancellations (streak or ratio), a negative review, many
complaints, a suspicious review pattern. Windows are inclusive: ``n`` events
"within 30 days" are at most 30 days apart, and the window always contains
the event being decided on (so a late, out-of-order event is counted with
its neighbours in event time).

Lifecycle of a flag: ``open`` -> ``cleared`` or ``confirmed`` (an operator may
change a decision later). At most one open flag per kind; none is raised
while a flag of that kind is open or confirmed. Clearing sets the kind's
*floor* (the review time, or the newest evidence of that kind if later):
evidence at or before it no longer counts, so only new evidence raises a new
flag. ``flag_id`` is ``flag_id_for(kind, customer, event id that crossed the
threshold)``: replaying the same history repeats the same ids.

State kept (``CustomerState.flags``, bounded): ``raised`` (open ones, the newest
confirmed one per kind, and at most ``flags.reviewed_keep`` other reviewed ones),
``floors`` (one number per kind) and ``evidence`` (one ring per
signal, at most ``flags.evidence_keep`` rows, none older than its window
behind the newest):

==============  ==================================================================
signal          row
==============  ==================================================================
``returned``    ``[event_id, at]`` of ``order.returned``
``complaint``   ``[event_id, at]`` of ``complaint.opened``
``low_review``  ``[event_id, at, order key]`` of reviews rated <= ``suspicious_max_rating``
``orders``      ``[order_id, placed_at, placed_event_id, cancelled_at, cancel_event_id]``
==============  ==================================================================

Negative reviews need no ring: each one is its own evidence.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from agents.rules import FlagRules, Rules
from agents.state import CustomerState
from schemas import complaints, orders, reviews
from schemas.customers import FlagReviewed
from schemas.flags import Flag, FlagKind, FlagStatus, flag_id_for

#: Index of each field in a stored flag: ``state.flags.raised[flag_id]``.
F_KIND, F_STATUS, F_RAISED_AT, F_REVIEWED_AT = range(4)
#: Index of each field in an ``orders`` evidence row.
O_ID, O_PLACED_AT, O_PLACED_EVENT, O_CANCELLED_AT, O_CANCEL_EVENT = range(5)

RETURNED, COMPLAINT, LOW_REVIEW, ORDERS = "returned", "complaint", "low_review", "orders"

#: The evidence signal(s) each kind counts (for the floor set on clearance).
_SIGNALS = {
    FlagKind.REPEATED_RETURNS: RETURNED,
    FlagKind.CANCELLATIONS: ORDERS,
    FlagKind.COMPLAINTS: COMPLAINT,
    FlagKind.SUSPICIOUS_REVIEWS: LOW_REVIEW,
}

#: Evidence ids a flag record can carry (the contract's limit).
_MAX_EVIDENCE = 50

DAY = 86_400.0
HOUR = 3_600.0

Row = list[Any]


# -- the public functions -------------------------------------------------------------


def detect(state: CustomerState, event: BaseModel, rules: Rules) -> list[Flag]:
    """Record ``event`` as evidence and return the flags it raises (recorded in ``state``).

    Call after ``state.apply(event, rules)``. Nothing is detected for an
    erased customer (erasure ends profiling) or with ``flags.enabled`` off.
    """
    cfg = rules.flags
    if not cfg.enabled or state.erased_at is not None:
        return []
    at: float = event.at  # type: ignore[attr-defined]
    event_id: str = event.event_id  # type: ignore[attr-defined]
    raised: list[Flag] = []

    def on(kind: FlagKind) -> bool:
        return kind.value not in cfg.disabled_kinds

    if isinstance(event, orders.OrderReturned) and on(FlagKind.REPEATED_RETURNS):
        _remember(state, RETURNED, [event_id, at], cfg.returns_window_days * DAY, cfg)
        raised += _counted(
            state,
            event,
            FlagKind.REPEATED_RETURNS,
            RETURNED,
            cfg.returns_min,
            cfg.returns_window_days,
            "returns",
        )
    elif isinstance(event, orders.OrderPlaced | orders.OrderCancelled) and on(
        FlagKind.CANCELLATIONS
    ):
        _order_seen(state, event, at, cfg)
        raised += _cancellations(state, event, cfg)
    elif isinstance(event, complaints.ComplaintOpened) and on(FlagKind.COMPLAINTS):
        _remember(state, COMPLAINT, [event_id, at], cfg.complaints_window_days * DAY, cfg)
        raised += _counted(
            state,
            event,
            FlagKind.COMPLAINTS,
            COMPLAINT,
            cfg.complaints_more_than + 1,
            cfg.complaints_window_days,
            "complaints opened",
        )
    elif isinstance(event, reviews.ReviewPosted):
        if event.rating <= rules.counters.negative_review_max_rating and on(
            FlagKind.NEGATIVE_REVIEW
        ):
            raised += _negative_review(state, event, rules)
        if event.rating <= cfg.suspicious_max_rating and on(FlagKind.SUSPICIOUS_REVIEWS):
            key = event.order_id if event.order_id is not None else f"sku:{event.sku}"
            _remember(
                state, LOW_REVIEW, [event_id, at, key], cfg.suspicious_window_hours * HOUR, cfg
            )
            raised += _suspicious(state, event, cfg)
    if raised:
        _prune_reviewed(state, cfg)
    return raised


def review(state: CustomerState, event: FlagReviewed) -> Flag | None:
    """Apply an operator's decision on one of this customer's flags.

    Returns the audit record for ``crm.flags`` (same ``flag_id``, the new
    status, ``reviewed_by``, the operator's reason; its evidence is the
    command event's id), or ``None`` if this customer has no such flag. A
    repeated decision is recorded again (every operator action is audited).
    Clearing sets the kind's floor, so only later evidence raises a new flag.
    """
    entry = state.flags.raised.get(event.flag_id)
    if entry is None:
        return None
    kind = FlagKind(entry[F_KIND])
    at = event.at
    entry[F_STATUS] = event.decision
    entry[F_REVIEWED_AT] = at
    if event.decision == FlagStatus.CLEARED:
        floor = max(at, entry[F_RAISED_AT], _newest_evidence(state, kind))
        state.flags.floors[kind.value] = max(floor, state.flags.floors.get(kind.value, floor))
    return Flag(
        flag_id=event.flag_id,
        kind=kind,
        status=FlagStatus(event.decision),
        customer_id=state.customer_id,
        subject=None,
        evidence_event_ids=[event.event_id],
        reason=event.reason,
        occurred_at=event.occurred_at.astimezone(dt.UTC),
        reviewed_by=event.reviewed_by,
    )


def open_flags(state: CustomerState) -> list[tuple[str, str]]:
    """``(flag_id, kind)`` of the customer's open (unreviewed) flags, oldest first."""
    rows = sorted(
        (entry[F_RAISED_AT], flag_id, entry[F_KIND])
        for flag_id, entry in state.flags.raised.items()
        if entry[F_STATUS] == FlagStatus.OPEN
    )
    return [(flag_id, kind) for _, flag_id, kind in rows]


def flag_tags(state: CustomerState) -> list[str]:
    """``risk:flag:<kind>`` for every kind with an open or confirmed flag (cleared: none)."""
    return sorted(
        {
            f"risk:flag:{entry[F_KIND]}"
            for entry in state.flags.raised.values()
            if entry[F_STATUS] in (FlagStatus.OPEN, FlagStatus.CONFIRMED)
        }
    )


# -- the rules ----------------------------------------------------------------------


def _counted(
    state: CustomerState,
    event: BaseModel,
    kind: FlagKind,
    signal: str,
    threshold: int,
    window_days: int,
    noun: str,
) -> list[Flag]:
    """A flag if ``threshold`` events of ``signal`` fall within ``window_days`` days."""
    if _blocked(state, kind):
        return []
    rows = _fresh(state, kind, state.flags.evidence.get(signal, []), 1)
    at = event.at  # type: ignore[attr-defined]
    inside = _window(rows, 1, at, window_days * DAY, lambda w: len(w) >= threshold)
    if inside is None:
        return []
    reason = f"{len(inside)} {noun} within {window_days} days (flagged at {threshold})."
    return [_raise(state, event, kind, [r[0] for r in inside], reason)]


def _cancellations(state: CustomerState, event: BaseModel, cfg: FlagRules) -> list[Flag]:
    """A streak of consecutive cancelled orders, or a high cancelled share, in the window."""
    kind = FlagKind.CANCELLATIONS
    if _blocked(state, kind):
        return []
    floor = state.flags.floors.get(kind.value)
    rows = [
        r
        for r in state.flags.evidence.get(ORDERS, [])
        if floor is None or max(r[O_PLACED_AT], r[O_CANCELLED_AT] or 0.0) > floor
    ]
    days = cfg.cancellations_window_days
    found: list[str] = []

    def hit(window: list[Row]) -> bool:
        streak = run = 0
        for r in window:
            run = run + 1 if r[O_CANCELLED_AT] is not None else 0
            streak = max(streak, run)
        cancelled = sum(1 for r in window if r[O_CANCELLED_AT] is not None)
        if streak >= cfg.cancellations_streak:
            found.append(
                f"{streak} consecutive orders cancelled within {days} days "
                f"(flagged at a streak of {cfg.cancellations_streak})."
            )
        elif (
            len(window) >= cfg.cancellations_ratio_min_orders
            and cancelled / len(window) >= cfg.cancellations_ratio
        ):
            found.append(
                f"{cancelled} of {len(window)} orders within {days} days cancelled "
                f"(flagged at a share of {cfg.cancellations_ratio:g} "
                f"over {cfg.cancellations_ratio_min_orders}+ orders)."
            )
        return bool(found)

    at = event.at  # type: ignore[attr-defined]
    inside = _window(rows, O_PLACED_AT, at, days * DAY, hit)
    if inside is None:
        return []
    evidence = [
        e for r in inside for e in (r[O_PLACED_EVENT], r[O_CANCEL_EVENT]) if e
    ]  # placements and cancellations of the window's orders
    return [_raise(state, event, kind, evidence, found[-1])]


def _negative_review(state: CustomerState, event: reviews.ReviewPosted, rules: Rules) -> list[Flag]:
    """One flag per negative review, unless one is open or confirmed."""
    kind = FlagKind.NEGATIVE_REVIEW
    floor = state.flags.floors.get(kind.value)
    if _blocked(state, kind) or (floor is not None and event.at <= floor):
        return []
    limit = rules.counters.negative_review_max_rating
    reason = f"Review rated {event.rating} of 5 (negative at {limit} or lower)."
    return [_raise(state, event, kind, [event.event_id], reason)]


def _suspicious(state: CustomerState, event: reviews.ReviewPosted, cfg: FlagRules) -> list[Flag]:
    """Many low reviews in a short time, across distinct orders."""
    kind = FlagKind.SUSPICIOUS_REVIEWS
    if _blocked(state, kind):
        return []
    rows = _fresh(state, kind, state.flags.evidence.get(LOW_REVIEW, []), 1)

    def hit(window: list[Row]) -> bool:
        return (
            len(window) >= cfg.suspicious_min_reviews
            and len({r[2] for r in window}) >= cfg.suspicious_min_orders
        )

    hours = cfg.suspicious_window_hours
    inside = _window(rows, 1, event.at, hours * HOUR, hit)
    if inside is None:
        return []
    orders_seen = len({r[2] for r in inside})
    reason = (
        f"{len(inside)} reviews rated {cfg.suspicious_max_rating} or lower within {hours} h "
        f"across {orders_seen} orders (flagged at {cfg.suspicious_min_reviews} reviews, "
        f"{cfg.suspicious_min_orders} orders)."
    )
    return [_raise(state, event, kind, [r[0] for r in inside], reason)]


# -- helpers ------------------------------------------------------------------------


def _blocked(state: CustomerState, kind: FlagKind) -> bool:
    """Whether a flag of ``kind`` is open or confirmed (then none is raised)."""
    return any(
        entry[F_KIND] == kind and entry[F_STATUS] != FlagStatus.CLEARED
        for entry in state.flags.raised.values()
    )


def _fresh(state: CustomerState, kind: FlagKind, rows: list[Row], at: int) -> list[Row]:
    """The rows after the kind's floor (all of them if it was never cleared)."""
    floor = state.flags.floors.get(kind.value)
    return rows if floor is None else [r for r in rows if r[at] > floor]


def _window(
    rows: list[Row], at: int, t: float, span: float, hit: Callable[[list[Row]], bool]
) -> list[Row] | None:
    """The first window ``[end - span, end]`` containing ``t`` whose rows satisfy ``hit``.

    Ends tried: ``t`` itself, then each later row time up to ``t + span`` (an
    out-of-order event can complete a window that ends after it). ``rows``
    are sorted by ``row[at]``.
    """
    ends = [t, *sorted({r[at] for r in rows if t < r[at] <= t + span})]
    for end in ends:
        inside = [r for r in rows if end - span <= r[at] <= end]
        if inside and hit(inside):
            return inside
    return None


def _raise(
    state: CustomerState, event: BaseModel, kind: FlagKind, evidence: list[str], reason: str
) -> Flag:
    event_id: str = event.event_id  # type: ignore[attr-defined]
    occurred: dt.datetime = event.occurred_at  # type: ignore[attr-defined]
    flag_id = flag_id_for(kind.value, state.customer_id, event_id)
    state.flags.raised[flag_id] = [kind.value, FlagStatus.OPEN.value, occurred.timestamp(), None]
    return Flag(
        flag_id=flag_id,
        kind=kind,
        status=FlagStatus.OPEN,
        customer_id=state.customer_id,
        subject=None,
        evidence_event_ids=list(dict.fromkeys(evidence))[-_MAX_EVIDENCE:],
        reason=reason,
        occurred_at=occurred.astimezone(dt.UTC),
        reviewed_by=None,
    )


def _remember(state: CustomerState, signal: str, row: Row, span: float, cfg: FlagRules) -> None:
    """Insert ``row`` (sorted by time) into the signal's ring; bound it by count and age."""
    ring = state.flags.evidence.setdefault(signal, [])
    if any(r[0] == row[0] for r in ring):
        return  # the same event again (a retry beyond the dedupe window)
    bisect.insort(ring, row, key=lambda r: r[1])
    _bound(ring, 1, span, cfg)


def _order_seen(
    state: CustomerState,
    event: orders.OrderPlaced | orders.OrderCancelled,
    at: float,
    cfg: FlagRules,
) -> None:
    """Record a placement or cancellation in the ``orders`` ring (one row per order)."""
    ring = state.flags.evidence.setdefault(ORDERS, [])
    placed = isinstance(event, orders.OrderPlaced)
    i = next((i for i, r in enumerate(ring) if r[O_ID] == event.order_id), None)
    if i is None:
        row = [event.order_id, at, "", None, None]
        bisect.insort(ring, row, key=lambda r: r[O_PLACED_AT])
    else:
        # Rows are replaced, never changed in place: a copy of the state shares them.
        row = ring[i] = list(ring[i])
        if placed and not row[O_PLACED_EVENT]:  # the cancellation came first: time now known
            del ring[i]
            row[O_PLACED_AT] = at
            bisect.insort(ring, row, key=lambda r: r[O_PLACED_AT])
    if placed:
        row[O_PLACED_EVENT] = row[O_PLACED_EVENT] or event.event_id
    elif row[O_CANCELLED_AT] is None:
        row[O_CANCELLED_AT] = at
        row[O_CANCEL_EVENT] = event.event_id
    _bound(ring, O_PLACED_AT, cfg.cancellations_window_days * DAY, cfg)


def _bound(ring: list[Row], at: int, span: float, cfg: FlagRules) -> None:
    """Keep at most ``evidence_keep`` rows, none older than ``span`` before the newest."""
    horizon = ring[-1][at] - span
    old = bisect.bisect_left(ring, horizon, key=lambda r: r[at])
    drop = max(old, len(ring) - cfg.evidence_keep)
    if drop > 0:
        del ring[:drop]


def _newest_evidence(state: CustomerState, kind: FlagKind) -> float:
    """The latest event time of the evidence ``kind`` counts (0 without any)."""
    signal = _SIGNALS.get(kind)
    rows = state.flags.evidence.get(signal, []) if signal else []
    if signal == ORDERS:
        return max((max(r[O_PLACED_AT], r[O_CANCELLED_AT] or 0.0) for r in rows), default=0.0)
    return max((r[1] for r in rows), default=0.0)


def _prune_reviewed(state: CustomerState, cfg: FlagRules) -> None:
    """Forget the oldest reviewed flags beyond ``reviewed_keep``; open ones and the
    newest confirmed flag of each kind (it blocks re-raising) always stay."""
    flags = state.flags.raised
    newest_confirmed: dict[str, tuple[float, str]] = {}
    reviewed: list[tuple[float, str]] = []
    for flag_id, entry in flags.items():
        if entry[F_STATUS] == FlagStatus.OPEN:
            continue
        stamp = (entry[F_REVIEWED_AT] or 0.0, flag_id)
        reviewed.append(stamp)
        if entry[F_STATUS] == FlagStatus.CONFIRMED:
            best = newest_confirmed.get(entry[F_KIND])
            if best is None or stamp > best:
                newest_confirmed[entry[F_KIND]] = stamp
    keep = set(newest_confirmed.values())
    others = sorted((s for s in reviewed if s not in keep), reverse=True)
    for _, flag_id in others[cfg.reviewed_keep :]:
        del flags[flag_id]
