"""The customer model: lifecycle stage, RFM, grade, counters and tags, as of a time.

Everything here is a pure function of a :class:`~agents.state.CustomerState`
and a time ``at`` (event time, or the wall clock for a live lookup). The
state keeps one small row of daily totals per day with activity
(``CustomerState.activity.days``, at most ``Rules.history_days`` rows), so every
window is recomputed exactly from it: a late event or a return changes the
figures of every window it falls in, and nothing depends on arrival order.

Definitions (the README's "Customer model" section says the same):

* **Days** are UTC calendar days: ``day(t) = floor(t / 86400)``.
* **R** (recency) = ``day(at) - day(last purchase)``, whole days.
* A **W-day window** as of ``at`` holds the days ``day(at) - W + 1 .. day(at)``.
* **F** in a window = orders placed - orders cancelled; **M** = amount placed -
  amount cancelled - amount refunded, each floored at 0 (a refund whose order
  is older than the window takes nothing below zero). Reported per window and per
  month (``* days_per_month / W``); money is summed in integer cents.
* The **RFM group** is the first row of ``rfm.groups`` whose bounds all hold
  for R and the per-month F and M of ``rfm.group_window_days``, compared
  exactly (no floating-point rounding at the boundaries).
* The **stage** follows :class:`~agents.rules.LifecycleRules`' order.
"""

from __future__ import annotations

import bisect
import datetime as dt
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

from agents.days import (  # noqa: F401  (re-exported: the model's vocabulary)
    D_CANCELLED,
    D_COMPLAINTS,
    D_DAY,
    D_NEG_REVIEWS,
    D_NET_CENTS,
    D_PLACED,
    D_RETURNS,
    DAY,
    ROW_WIDTH,
    Grade,
    Stage,
    day_of,
    iso_day,
)
from agents.rules import COUNTERS, GradeRules, LifecycleRules, RfmGroup, Rules

if TYPE_CHECKING:
    from agents.state import CustomerState


class Totals(NamedTuple):
    """Sums of the daily rows in one window (a tuple: cheap to build, never tracked by the GC)."""

    placed: int
    cancelled: int
    net_cents: int
    returns: int
    complaints: int
    negative_reviews: int

    @property
    def orders(self) -> int:
        """Net orders: placed minus cancelled."""
        return self.placed - self.cancelled

    def counter(self, name: str) -> int:
        if name == "cancellations":
            return self.cancelled
        return int(getattr(self, name))


_new_tuple = tuple.__new__


def window_totals(
    rows: Sequence[Sequence[int]], at_day: int, windows: tuple[int, ...]
) -> dict[int, Totals]:
    """Totals per window (days, ascending) as of ``at_day``; later rows are not counted.

    One pass from the newest row back: running sums, read off at each window's edge.
    """
    out: dict[int, Totals] = {}
    placed = cancelled = cents = returns = complaints = negative = 0
    k, n = 0, len(windows)
    edge = at_day - windows[0]  # a row on or before this day is outside windows[k]
    for row in reversed(rows):
        day = row[0]
        if day > at_day:
            continue
        if day <= edge:
            sums = _new_tuple(Totals, (placed, cancelled, cents, returns, complaints, negative))
            while k < n and day <= at_day - windows[k]:
                out[windows[k]] = sums
                k += 1
            if k == n:
                return out
            edge = at_day - windows[k]
        _, p, c, m, r, cm, ng = row
        placed += p
        cancelled += c
        cents += m
        returns += r
        complaints += cm
        negative += ng
    last = _new_tuple(Totals, (placed, cancelled, cents, returns, complaints, negative))
    while k < n:
        out[windows[k]] = last
        k += 1
    return out


# The views are named tuples: an assessment runs after most events, and a tuple
# is the cheapest immutable record to build. Each keeps the function and the
# values that explain it, and formats its reason only when someone reads it.


class StageView(NamedTuple):
    name: str
    since: float | None
    why: Callable[..., str]
    args: tuple[Any, ...] = ()

    @property
    def reason(self) -> str:
        return self.why(*self.args)


class RfmView(NamedTuple):
    recency_days: int | None
    #: Per window (days): (F, M in cents).
    windows: dict[int, tuple[int, int]]
    group: str
    why: Callable[..., str]
    args: tuple[Any, ...] = ()

    @property
    def reason(self) -> str:
        return self.why(*self.args)


class GradeView(NamedTuple):
    name: str
    score: float
    components: dict[str, float | None]
    why: Callable[..., str]
    args: tuple[Any, ...] = ()

    @property
    def reason(self) -> str:
        return self.why(*self.args)


class Assessment(NamedTuple):
    """The model's view of one customer as of ``at``."""

    at: float
    stage: StageView
    rfm: RfmView
    grade: GradeView
    totals: dict[int, Totals]
    tenure_days: int | None
    #: Days with a purchase, up to ``at``, ascending.
    purchase_days: list[int]


def assess(state: CustomerState, at: float, rules: Rules) -> Assessment:
    """Stage, RFM and grade of ``state`` as of ``at`` (seconds since the epoch)."""
    plan = _plan(rules)
    at_day, totals, purchase_days, recency, tenure = _inputs(state, at, plan.windows)
    stage = _stage(state, at_day, recency, tenure, purchase_days, totals, rules)
    rfm = _rfm(recency, totals, plan, rules)
    grade = _grade(state, totals, plan, rules)
    return Assessment(at, stage, rfm, grade, totals, tenure, purchase_days)


def stage_as_of(state: CustomerState, at: float, rules: Rules) -> StageView:
    """``assess(state, at, rules).stage``, without the RFM group and the grade."""
    at_day, totals, purchase_days, recency, tenure = _inputs(state, at, _plan(rules).stage_windows)
    return _stage(state, at_day, recency, tenure, purchase_days, totals, rules)


def stage_and_grade(state: CustomerState, at: float, rules: Rules) -> tuple[StageView, GradeView]:
    """``assess(state, at, rules)``'s stage and grade, without the RFM group."""
    plan = _plan(rules)
    at_day, totals, purchase_days, recency, tenure = _inputs(state, at, plan.stage_grade_windows)
    stage = _stage(state, at_day, recency, tenure, purchase_days, totals, rules)
    return stage, _grade(state, totals, plan, rules)


def _inputs(
    state: CustomerState, at: float, windows: tuple[int, ...]
) -> tuple[int, dict[int, Totals], list[int], int | None, int | None]:
    """(day of ``at``, totals per window, purchase days, R, tenure) as of ``at``.

    R and tenure are whole days, ``None`` before the first purchase.
    """
    at_day = day_of(at)
    rows = state.activity.days
    totals = window_totals(rows, at_day, windows)
    purchase_days = [r[D_DAY] for r in rows if r[D_PLACED] > 0 and r[D_DAY] <= at_day]
    last_day = (
        purchase_days[-1] if purchase_days else _day_if_before(state.activity.last_purchase_at, at)
    )
    first_day = _day_if_before(state.activity.first_purchase_at, at)
    recency = None if last_day is None else at_day - last_day
    tenure = None if first_day is None else at_day - first_day
    return at_day, totals, purchase_days, recency, tenure


def _no_purchase() -> str:
    return "no purchase yet"


def _day_if_before(at: float | None, limit: float) -> int | None:
    return None if at is None or at > limit else day_of(at)


def next_change_day(state: CustomerState, view: Assessment, rules: Rules) -> int | None:
    """The first day after ``view``'s on which time alone may change stage, group or grade.

    Every day on which something they read can move without a new event:
    R crossing the dormant or churned threshold, or an R bound that changes
    the RFM group at today's F and M; tenure ending a "new" stage or reaching
    the loyal tenure; a reactivation running out; the oldest daily row leaving
    a window that is read (the RFM group's and the grade's always, the active
    window only while tenure is under ``new_days``, the loyal window only from
    ``loyal_min_tenure_days``). Before that day an event that feeds none of
    them cannot change them, so it need not re-assess. ``None``: nothing can
    change by time alone.
    """
    plan = _plan(rules)
    life = rules.lifecycle
    at_day = day_of(view.at)
    rows = state.activity.days
    best: int | None = None
    recency, tenure = view.rfm.recency_days, view.tenure_days
    if recency is not None:
        last = at_day - recency
        if recency < life.dormant_after_days:
            best = last + life.dormant_after_days
        elif recency < life.churned_after_days:
            best = last + life.churned_after_days
        group_step = _next_group_step(recency, view.rfm, plan, rules)
        if group_step is not None:
            best = _earlier(best, last + group_step)
        best = _earlier_or(best, _leaves(rows, at_day, plan.group_window))
    best = _earlier_or(best, _leaves(rows, at_day, rules.grade.window_days))
    if tenure is not None:
        first = at_day - tenure
        if tenure < life.new_days:
            # The active window counts only while tenure is under new_days.
            leaves = _leaves(rows, at_day, life.active_window_days)
            if leaves is not None and leaves < first + life.new_days:
                best = _earlier(best, leaves)
            if view.stage.name == Stage.NEW:
                best = _earlier(best, first + life.new_days)
        if tenure < life.loyal_min_tenure_days:
            best = _earlier(best, first + life.loyal_min_tenure_days)
        else:
            best = _earlier_or(best, _leaves(rows, at_day, life.loyal_window_days))
    if view.stage.name == Stage.REACTIVATED and view.stage.since is not None:
        best = _earlier(best, int(view.stage.since // DAY) + life.reactivated_days)
    return best


def grade_window_change_day(state: CustomerState, at: float, rules: Rules) -> int | None:
    """The day the oldest daily row inside the grade's window as of ``at`` leaves it."""
    return _leaves(state.activity.days, day_of(at), rules.grade.window_days)


def _leaves(rows: Sequence[Sequence[int]], at_day: int, window: int) -> int | None:
    """The day the oldest row inside the ``window`` days up to ``at_day`` leaves it."""
    i = bisect.bisect_right(rows, at_day - window, key=_row_day)
    return rows[i][D_DAY] + window if i < len(rows) else None


def _next_group_step(recency: int, rfm: RfmView, plan: _Plan, rules: Rules) -> int | None:
    """The first R above ``recency`` at which the RFM group changes, F and M staying as they are.

    Between two of ``_Plan.group_steps`` no R bound starts or stops holding,
    so the group can only change at one of them.
    """
    if not plan.group_steps or plan.group_steps[-1] <= recency:
        return None
    f, m_cents = rfm.windows[plan.group_window]
    for step in plan.group_steps:  # ascending
        if step > recency and _group_name(step, f, m_cents, plan, rules) != rfm.group:
            return step
    return None


def group_for(recency: int, f: int, m_cents: int, rules: Rules) -> str:
    """The RFM group of R = ``recency`` days and, over ``rfm.group_window_days``, ``f`` net
    orders and ``m_cents`` net spend (exact comparison, as the assessment does)."""
    return _group_name(recency, f, m_cents, _plan(rules), rules)


def _group_name(recency: int, f: int, m_cents: int, plan: _Plan, rules: Rules) -> str:
    group = _first_group(recency, f, m_cents, plan, rules)
    return rules.rfm.fallback_group if group is None else group.name


def _earlier(best: int | None, day: int) -> int:
    return day if best is None or day < best else best


def _earlier_or(best: int | None, day: int | None) -> int | None:
    return best if day is None else _earlier(best, day)


_row_day = operator.itemgetter(D_DAY)


# -- what an assessment needs from the rules, derived once per Rules object ----------


@dataclass(frozen=True, slots=True)
class _Plan:
    rules: Rules
    #: ``Rules.assessment_windows``: every window an assessment sums.
    windows: tuple[int, ...]
    #: The windows the stage alone reads (active, loyal), ascending.
    stage_windows: tuple[int, ...]
    #: The windows the stage and the grade read, ascending.
    stage_grade_windows: tuple[int, ...]
    #: Each RFM group with its exact R, F, M bounds as integers: for each dimension
    #: (low numerator, low denominator, high numerator, high denominator); an open
    #: upper bound has denominator 0.
    groups: tuple[tuple[RfmGroup, tuple[int, ...]], ...]
    #: (component, weight) of the grade, weight > 0 only, in ``GradeRules.weights`` order.
    grade_weights: tuple[tuple[str, float], ...]
    #: ``rfm.group_window_days``.
    group_window: int
    #: R (days) at which some RFM group's R bound starts or stops holding, ascending.
    group_steps: tuple[int, ...]


def _make_plan(rules: Rules) -> _Plan:
    life, rfm = rules.lifecycle, rules.rfm
    groups = []
    for group, bounds in rfm.exact_groups:
        ints: list[int] = []
        for low, high in bounds:
            ints += [low.numerator, low.denominator]
            ints += [0, 0] if high is None else [high.numerator, high.denominator]
        groups.append((group, tuple(ints)))
    group_steps = set()
    for group in rfm.groups:
        if group.r_max_days is not None:
            group_steps.add(group.r_max_days + 1)
        if group.r_min_days is not None:
            group_steps.add(group.r_min_days)
    return _Plan(
        rules=rules,
        windows=rules.assessment_windows,
        stage_windows=tuple(sorted({life.active_window_days, life.loyal_window_days})),
        stage_grade_windows=tuple(
            sorted({life.active_window_days, life.loyal_window_days, rules.grade.window_days})
        ),
        groups=tuple(groups),
        grade_weights=tuple((n, w) for n, w in rules.grade.weights if w > 0),
        group_window=rfm.group_window_days,
        group_steps=tuple(sorted(group_steps)),
    )


_plans: dict[int, _Plan] = {}


def _plan(rules: Rules) -> _Plan:
    """The plan of ``rules`` (cached by identity: Rules objects are frozen)."""
    plan = _plans.get(id(rules))
    if plan is None or plan.rules is not rules:
        if len(_plans) >= 64:  # tests build many; a worker has one
            _plans.clear()
        plan = _plans[id(rules)] = _make_plan(rules)
    return plan


# -- lifecycle ---------------------------------------------------------------------


def _stage(
    state: CustomerState,
    at_day: int,
    recency: int | None,
    tenure: int | None,
    purchase_days: list[int],
    totals: dict[int, Totals],
    rules: Rules,
) -> StageView:
    life = rules.lifecycle
    if recency is None or tenure is None:
        return StageView(Stage.POTENTIAL, None, _no_purchase)
    last_day = at_day - recency
    if recency >= life.churned_after_days:
        return StageView(
            Stage.CHURNED,
            (last_day + life.churned_after_days) * DAY,
            _why_silent,
            (recency, "churned", life.churned_after_days),
        )
    if recency >= life.dormant_after_days:
        return StageView(
            Stage.DORMANT,
            (last_day + life.dormant_after_days) * DAY,
            _why_silent,
            (recency, "dormant", life.dormant_after_days),
        )
    comeback = _reactivation(state, at_day, tenure, purchase_days, rules)
    if comeback is not None:
        return StageView(Stage.REACTIVATED, comeback[0] * DAY, _why_comeback, comeback)
    loyal_orders = totals[life.loyal_window_days].orders
    if tenure >= life.loyal_min_tenure_days and loyal_orders >= life.loyal_min_orders:
        return StageView(Stage.LOYAL, None, _why_loyal, (tenure, loyal_orders, life))
    active_orders = totals[life.active_window_days].orders
    if tenure < life.new_days and active_orders < life.active_min_orders:
        return StageView(Stage.NEW, (at_day - tenure) * DAY, _why_new, (tenure, life.new_days))
    return StageView(
        Stage.ACTIVE, None, _why_active, (recency, active_orders, life.active_window_days)
    )


def _why_silent(recency: int, stage: str, after: int) -> str:
    return f"no purchase for {recency} days ({stage} after {after})"


def _why_comeback(day: int, gap: int | None) -> str:
    gap_text = f"{gap} days" if gap is not None else "a long spell"
    return f"bought again on {iso_day(day)} after {gap_text} without a purchase"


def _why_loyal(tenure: int, orders: int, life: LifecycleRules) -> str:
    return (
        f"customer for {tenure} days with {orders} orders in "
        f"{life.loyal_window_days} days (loyal from {life.loyal_min_tenure_days} days "
        f"and {life.loyal_min_orders} orders)"
    )


def _why_new(tenure: int, new_days: int) -> str:
    return f"first purchase {tenure} days ago (new for {new_days} days)"


def _why_active(recency: int, orders: int, window: int) -> str:
    return f"last purchase {recency} days ago, {orders} orders in {window} days"


def _reactivation(
    state: CustomerState, at_day: int, tenure: int, purchase_days: list[int], rules: Rules
) -> tuple[int, int | None] | None:
    """(day, gap) of the latest purchase within ``reactivated_days`` that ended a dormant spell.

    The gap is ``None`` when the purchase before it is older than the kept
    history (``Rules.history_days`` guarantees such a gap is long enough).
    """
    life = rules.lifecycle
    first_day = at_day - tenure
    for i in range(len(purchase_days) - 1, -1, -1):
        day = purchase_days[i]
        if at_day - day >= life.reactivated_days:
            return None
        if day == first_day:
            return None  # the very first purchase is a start, not a comeback
        if i > 0:
            gap = day - purchase_days[i - 1]
            if gap >= life.dormant_after_days:
                return day, gap
        else:  # the purchase before this one was pruned: older than the history
            return day, None
    return None


# -- RFM -------------------------------------------------------------------------


def _rfm(recency: int | None, totals: dict[int, Totals], plan: _Plan, rules: Rules) -> RfmView:
    cfg = rules.rfm
    # Floored at 0: a cancellation or refund whose order is older than the window
    # takes nothing below zero.
    windows = {}
    for w in cfg.windows_days:
        t = totals[w]
        windows[w] = (max(0, t.placed - t.cancelled), max(0, t.net_cents))
    if recency is None:
        return RfmView(None, windows, cfg.fallback_group, _no_purchase)
    w = cfg.group_window_days
    f, m_cents = windows[w]
    args = (recency, f, m_cents, cfg.days_per_month, w)
    group = _first_group(recency, f, m_cents, plan, rules)
    if group is None:
        return RfmView(recency, windows, cfg.fallback_group, _why_no_group, args)
    return RfmView(recency, windows, group.name, _why_group, (group, *args))


def _first_group(recency: int, f: int, m_cents: int, plan: _Plan, rules: Rules) -> RfmGroup | None:
    """The first ``rfm.groups`` row whose bounds hold for R and the group window's F and M."""
    dpm, w = rules.rfm.days_per_month, plan.group_window
    # Per month: F * dpm / W and M * dpm / (W * 100), compared exactly as integers.
    f_n, m_n, m_d = f * dpm, m_cents * dpm, w * 100
    for group, bounds in plan.groups:
        if _r_holds(recency, bounds) and _fm_hold(f_n, w, m_n, m_d, bounds):
            return group
    return None


def _r_holds(r: int, bounds: tuple[int, ...]) -> bool:
    """Whether R lies within a group's R bounds (``_Plan.groups``), inclusive."""
    return r * bounds[1] >= bounds[0] and (not bounds[3] or r * bounds[3] <= bounds[2])


def _fm_hold(f_n: int, f_d: int, m_n: int, m_d: int, bounds: tuple[int, ...]) -> bool:
    """Whether F = ``f_n / f_d`` and M = ``m_n / m_d`` lie within a group's bounds, inclusive.

    ``bounds`` (see ``_Plan.groups``): low and high of R, F, M as integer
    fractions; a high with denominator 0 is open.
    """
    _, _, _, _, fl_n, fl_d, fh_n, fh_d, ml_n, ml_d, mh_n, mh_d = bounds
    return (
        f_n * fl_d >= fl_n * f_d
        and (not fh_d or f_n * fh_d <= fh_n * f_d)
        and m_n * ml_d >= ml_n * m_d
        and (not mh_d or m_n * mh_d <= mh_n * m_d)
    )


def _why_group(group: RfmGroup, r: int, f: int, m_cents: int, dpm: int, w: int) -> str:
    return _group_reason(group, r, Fraction(f * dpm, w), Fraction(m_cents * dpm, w * 100), w)


def _why_no_group(r: int, f: int, m_cents: int, dpm: int, w: int) -> str:
    return (
        f"R={r} days, F={f * dpm / w:.2f}/month, "
        f"M={m_cents * dpm / (w * 100):.2f}/month "
        f"({w}-day window) match no group"
    )


def _group_reason(group: RfmGroup, r: int, f: Fraction, m: Fraction, w: int) -> str:
    parts = [f"R={r} days"]
    if group.r_max_days is not None:
        parts[-1] += f" <= {group.r_max_days}"
    if group.r_min_days is not None:
        parts[-1] += f" >= {group.r_min_days}"
    for label, value, low, high in (
        ("F", f, group.f_min, group.f_max),
        ("M", m, group.m_min, group.m_max),
    ):
        text = f"{label}={float(value):.2f}/month"
        if low is not None:
            text += f" >= {low:g}"
        if high is not None:
            text += f" <= {high:g}"
        parts.append(text)
    return f"{', '.join(parts)} ({w}-day window)"


def per_month(value: int, window: int, rules: Rules, cents: bool = False) -> float:
    """A window total per month, rounded for display (2 decimals)."""
    scale = 100 if cents else 1
    return round(value * rules.rfm.days_per_month / (window * scale), 2)


# -- grade -----------------------------------------------------------------------


def _grade(state: CustomerState, totals: dict[int, Totals], plan: _Plan, rules: Rules) -> GradeView:
    cfg = rules.grade
    year = totals[cfg.window_days]
    placed_ever = state.activity.order_count
    components: dict[str, float | None] = {
        "payment": min(1.0, state.activity.paid_orders / placed_ever)
        if state.activity.paid_orders and placed_ever
        else None,
        "returns": 1.0 - min(1.0, year.returns / year.placed) if year.placed > 0 else None,
        "reviews": (state.activity.rating_sum / state.activity.review_count - 1) / 4
        if state.activity.review_count
        else None,
        "activity": min(1.0, max(0, year.orders) / cfg.activity_target_orders),
        "disputes": 1.0 - min(1.0, year.complaints / cfg.disputes_cap),
    }
    weighted = total = 0.0
    for name, weight in plan.grade_weights:  # weight > 0
        value = components[name]
        if value is not None:
            weighted += weight * value
            total += weight
    score = round(100 * weighted / total, 1) if total else 0.0
    spend = year.net_cents / 100
    avg_review = (
        state.activity.rating_sum / state.activity.review_count
        if state.activity.review_count
        else None
    )
    blocked = (
        spend < cfg.core_min_spend,
        avg_review is not None and avg_review < cfg.core_min_review,
        year.complaints > cfg.core_max_complaints,
    )
    args = (score, cfg, blocked, spend, avg_review, year.complaints)
    if score >= cfg.core_min_score and not any(blocked):
        return GradeView(Grade.CORE, score, components, _why_grade, args)
    if score >= cfg.potential_min_score:
        return GradeView(Grade.POTENTIAL, score, components, _why_grade, args)
    return GradeView(Grade.ORDINARY, score, components, _why_grade, args)


def _why_grade(
    score: float,
    cfg: GradeRules,
    blocked: tuple[bool, bool, bool],
    spend: float,
    avg_review: float | None,
    complaints: int,
) -> str:
    text = f"score {score:g}"
    if score >= cfg.core_min_score:
        if not any(blocked):
            return (
                f"{text} >= {cfg.core_min_score:g}, net spend {spend:.2f} in "
                f"{cfg.window_days} days >= {cfg.core_min_spend:g}, no major disputes"
            )
        blockers = [
            f"net spend {spend:.2f} in {cfg.window_days} days < {cfg.core_min_spend:g}",
            f"average review {avg_review or 0:.1f} < {cfg.core_min_review:g}",
            f"{complaints} complaints in {cfg.window_days} days",
        ]
        named = [b for b, on in zip(blockers, blocked, strict=True) if on]
        text += f" (not core: {'; '.join(named)})"
    op = ">=" if score >= cfg.potential_min_score else "<"
    return f"{text} {op} {cfg.potential_min_score:g}"


# -- features and tags -------------------------------------------------------------


def features(state: CustomerState, view: Assessment, rules: Rules) -> dict[str, float]:
    """The numeric features tag rules test (names: ``Rules.feature_names()``)."""
    out: dict[str, float] = {
        "order_count": state.activity.order_count,
        "spend": state.activity.spend,
        "score": view.grade.score,
    }
    if view.rfm.recency_days is not None:
        out["recency_days"] = view.rfm.recency_days
    if view.tenure_days is not None:
        out["tenure_days"] = view.tenure_days
    for w, (f, m_cents) in view.rfm.windows.items():
        out[f"orders_{w}d"] = f
        out[f"frequency_{w}d"] = per_month(f, w, rules)
        out[f"monetary_{w}d"] = per_month(m_cents, w, rules, cents=True)
    for w in rules.counters.windows_days:
        t = view.totals[w]
        for name in COUNTERS:
            out[f"{name}_{w}d"] = t.counter(name)
    return out


def tags(state: CustomerState, view: Assessment, rules: Rules) -> list[str]:
    """Value, behaviour, preference and risk tags, sorted."""
    cfg = rules.tags
    out = {f"value:{view.rfm.group}", f"grade:{view.grade.name}", f"stage:{view.stage.name}"}
    ranked = sorted(state.activity.categories.items(), key=lambda kv: (-kv[1], kv[0]))
    out.update(f"behaviour:likes:{name}" for name, _ in ranked[: cfg.top_categories])
    if state.profile.preferred_channels:
        out.add(f"preference:channel:{state.profile.preferred_channels[0]}")
    if state.activity.item_count:
        average = state.activity.item_value_cents / state.activity.item_count / 100
        band = (
            "budget"
            if average <= cfg.budget_max_item_price
            else "premium"
            if average >= cfg.premium_min_item_price
            else "mid"
        )
        out.add(f"preference:price:{band}")
    values = features(state, view, rules)
    for rule in cfg.rules:
        value = values.get(rule.feature)
        if value is None:
            continue
        if (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max):
            out.add(rule.tag)
    from agents.flags import flag_tags  # agents.flags needs this module's state type

    out.update(flag_tags(state))  # risk:flag:<kind> while a flag is open or confirmed
    return sorted(out)


def counters(view: Assessment, rules: Rules) -> dict[str, dict[str, int]]:
    """``{"returns": {"7d": 0, "30d": 1, ...}, ...}``."""
    return {
        name: {f"{w}d": view.totals[w].counter(name) for w in rules.counters.windows_days}
        for name in COUNTERS
    }


def profile(state: CustomerState, at: float, rules: Rules) -> dict[str, Any]:
    """The customer's profile as of ``at``: what the lookup and the Redis projection show."""
    view = assess(state, at, rules)
    rfm = view.rfm
    return {
        "customer_id": state.customer_id,
        "as_of": _iso(at),
        "stage": {
            "name": view.stage.name,
            "since": _iso(state.assessment.stage_since)
            if state.assessment.stage == view.stage.name
            and state.assessment.stage_since is not None
            else _iso(view.stage.since),
            "reason": view.stage.reason,
        },
        "rfm": {
            "recency_days": rfm.recency_days,
            "group": rfm.group,
            "reason": rfm.reason,
            "group_window_days": rules.rfm.group_window_days,
            "windows": {
                f"{w}d": {
                    "frequency": f,
                    "monetary": round(m / 100, 2),
                    "frequency_per_month": per_month(f, w, rules),
                    "monetary_per_month": per_month(m, w, rules, cents=True),
                }
                for w, (f, m) in rfm.windows.items()
            },
        },
        "grade": {
            "name": view.grade.name,
            "score": view.grade.score,
            "reason": view.grade.reason,
            "components": {
                k: None if v is None else round(v, 3) for k, v in view.grade.components.items()
            },
        },
        "tags": tags(state, view, rules),
        "counters": counters(view, rules),
        "lifetime": {
            "orders": state.activity.order_count,
            "spend": state.activity.spend,
            "first_purchase_at": _iso(state.activity.first_purchase_at),
            "last_purchase_at": _iso(state.activity.last_purchase_at),
            "last_event_at": _iso(state.activity.last_event_at),
        },
        "preferred_channels": list(state.profile.preferred_channels),
        "timezone": state.profile.timezone,
        "recent_actions": [
            {"action_id": a, "action_type": t, "created_at": _iso(c)}
            for a, t, c in reversed(state.contact.recent_actions)
        ],
        "erased": state.erased_at is not None,
    }


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
