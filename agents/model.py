"""The customer model: lifecycle stage, RFM, grade, counters and tags, as of a time.

Everything here is a pure function of a :class:`~agents.state.CustomerState`
and a time ``at`` (event time, or the wall clock for a live lookup). The
state keeps one small row of daily totals per day with activity
(``CustomerState.days``, at most ``Rules.history_days`` rows), so every
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
* The **stage** follows :class:`~streams.rules.LifecycleRules`' order.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from streams.rules import COUNTERS, RfmGroup, Rules

if TYPE_CHECKING:
    from agents.state import CustomerState

DAY = 86_400

# Columns of a row of ``CustomerState.days``.
D_DAY, D_PLACED, D_CANCELLED, D_NET_CENTS, D_RETURNS, D_COMPLAINTS, D_NEG_REVIEWS = range(7)
ROW_WIDTH = 7


def day_of(at: float) -> int:
    return int(at // DAY)


def iso_day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


class Stage:
    POTENTIAL = "potential"
    NEW = "new"
    ACTIVE = "active"
    DORMANT = "dormant"
    CHURNED = "churned"
    LOYAL = "loyal"
    REACTIVATED = "reactivated"

    ALL = (POTENTIAL, NEW, ACTIVE, DORMANT, CHURNED, LOYAL, REACTIVATED)


class Grade:
    CORE = "core"
    POTENTIAL = "potential"
    ORDINARY = "ordinary"

    ALL = (CORE, POTENTIAL, ORDINARY)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums of the daily rows in one window."""

    placed: int = 0
    cancelled: int = 0
    net_cents: int = 0
    returns: int = 0
    complaints: int = 0
    negative_reviews: int = 0

    @property
    def orders(self) -> int:
        """Net orders: placed minus cancelled."""
        return self.placed - self.cancelled

    def counter(self, name: str) -> int:
        if name == "cancellations":
            return self.cancelled
        return int(getattr(self, name))


def window_totals(
    rows: list[list[int]], at_day: int, windows: tuple[int, ...]
) -> dict[int, Totals]:
    """Totals per window (days, ascending) as of ``at_day``; later rows are not counted.

    One pass from the newest row back: running sums, read off at each window's edge.
    """
    out: dict[int, Totals] = {}
    placed = cancelled = cents = returns = complaints = negative = 0
    k, n = 0, len(windows)
    for row in reversed(rows):
        age = at_day - row[D_DAY]
        if age < 0:
            continue
        while k < n and age >= windows[k]:
            out[windows[k]] = Totals(placed, cancelled, cents, returns, complaints, negative)
            k += 1
        if k == n:
            break
        _, p, c, m, r, cm, ng = row
        placed += p
        cancelled += c
        cents += m
        returns += r
        complaints += cm
        negative += ng
    if k < n:
        last = Totals(placed, cancelled, cents, returns, complaints, negative)
        for w in windows[k:]:
            out[w] = last
    return out


class _Explained:
    """A view whose readable reason is only formatted when someone reads it."""

    __slots__ = ()
    why: Callable[[], str]

    @property
    def reason(self) -> str:
        return self.why()


@dataclass(frozen=True, slots=True)
class StageView(_Explained):
    name: str
    since: float | None
    why: Callable[[], str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RfmView(_Explained):
    recency_days: int | None
    #: Per window (days): (F, M in cents).
    windows: dict[int, tuple[int, int]]
    group: str
    why: Callable[[], str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class GradeView(_Explained):
    name: str
    score: float
    components: dict[str, float | None]
    why: Callable[[], str] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Assessment:
    """The model's view of one customer as of ``at``."""

    at: float
    stage: StageView
    rfm: RfmView
    grade: GradeView
    totals: dict[int, Totals] = field(repr=False)
    tenure_days: int | None
    #: Days with a purchase, up to ``at``, ascending.
    purchase_days: list[int] = field(repr=False)


def assess(state: CustomerState, at: float, rules: Rules) -> Assessment:
    """Stage, RFM and grade of ``state`` as of ``at`` (seconds since the epoch)."""
    at_day = day_of(at)
    totals = window_totals(state.days, at_day, rules.assessment_windows)
    purchase_days = [r[D_DAY] for r in state.days if r[D_PLACED] > 0 and r[D_DAY] <= at_day]
    last_day = purchase_days[-1] if purchase_days else _day_if_before(state.last_purchase_at, at)
    first_day = _day_if_before(state.first_purchase_at, at)
    recency = None if last_day is None else at_day - last_day
    tenure = None if first_day is None else at_day - first_day
    stage = _stage(state, at_day, recency, tenure, purchase_days, totals, rules)
    rfm = _rfm(recency, totals, rules)
    return Assessment(at, stage, rfm, _grade(state, totals, rules), totals, tenure, purchase_days)


def _no_purchase() -> str:
    return "no purchase yet"


def _day_if_before(at: float | None, limit: float) -> int | None:
    return None if at is None or at > limit else day_of(at)


def next_change_day(state: CustomerState, view: Assessment, rules: Rules) -> int | None:
    """The first day after ``view``'s on which time alone may change stage, group or grade.

    Conservative: every day on which an input of theirs can move without a
    new event -- R or tenure crossing a threshold, a reactivation running
    out, any daily row leaving a window they read. Before that day an event
    that feeds none of them cannot change them, so it need not re-assess.
    ``None``: nothing can change by time alone (no purchase, no rows).
    """
    life, rfm = rules.lifecycle, rules.rfm
    at_day = day_of(view.at)
    candidates: list[int] = []
    recency, tenure = view.rfm.recency_days, view.tenure_days
    if recency is not None:
        last = at_day - recency
        candidates += [last + life.dormant_after_days, last + life.churned_after_days]
        for group in rfm.groups:
            if group.r_max_days is not None:
                candidates.append(last + group.r_max_days + 1)
            if group.r_min_days is not None:
                candidates.append(last + group.r_min_days)
    if tenure is not None:
        first = at_day - tenure
        candidates += [first + life.new_days, first + life.loyal_min_tenure_days]
    candidates += [d + life.reactivated_days for d in view.purchase_days[-8:]]
    rows = state.days
    for window in rules.model_windows:
        i = bisect.bisect_right(rows, at_day - window, key=lambda r: r[D_DAY])
        if i < len(rows):
            candidates.append(rows[i][D_DAY] + window)
    later = [c for c in candidates if c > at_day]
    return min(later) if later else None


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
            lambda: f"no purchase for {recency} days (churned after {life.churned_after_days})",
        )
    if recency >= life.dormant_after_days:
        return StageView(
            Stage.DORMANT,
            (last_day + life.dormant_after_days) * DAY,
            lambda: f"no purchase for {recency} days (dormant after {life.dormant_after_days})",
        )
    comeback = _reactivation(state, at_day, tenure, purchase_days, rules)
    if comeback is not None:
        day, gap = comeback
        gap_text = f"{gap} days" if gap is not None else "a long spell"
        return StageView(
            Stage.REACTIVATED,
            day * DAY,
            lambda: f"bought again on {iso_day(day)} after {gap_text} without a purchase",
        )
    loyal_orders = totals[life.loyal_window_days].orders
    if tenure >= life.loyal_min_tenure_days and loyal_orders >= life.loyal_min_orders:
        return StageView(
            Stage.LOYAL,
            None,
            lambda: (
                f"customer for {tenure} days with {loyal_orders} orders in "
                f"{life.loyal_window_days} days (loyal from {life.loyal_min_tenure_days} days "
                f"and {life.loyal_min_orders} orders)"
            ),
        )
    active_orders = totals[life.active_window_days].orders
    if tenure < life.new_days and active_orders < life.active_min_orders:
        return StageView(
            Stage.NEW,
            (at_day - tenure) * DAY,
            lambda: f"first purchase {tenure} days ago (new for {life.new_days} days)",
        )
    return StageView(
        Stage.ACTIVE,
        None,
        lambda: (
            f"last purchase {recency} days ago, {active_orders} orders in "
            f"{life.active_window_days} days"
        ),
    )


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


def _rfm(recency: int | None, totals: dict[int, Totals], rules: Rules) -> RfmView:
    cfg = rules.rfm
    # Floored at 0: a cancellation or refund whose order is older than the window
    # takes nothing below zero.
    windows = {w: (max(0, totals[w].orders), max(0, totals[w].net_cents)) for w in cfg.windows_days}
    if recency is None:
        return RfmView(None, windows, cfg.fallback_group, _no_purchase)
    w = cfg.group_window_days
    f, m_cents = windows[w]
    # Per month: F * dpm / W and M * dpm / (W * 100), compared exactly as integers.
    dpm = cfg.days_per_month
    values = ((recency, 1), (f * dpm, w), (m_cents * dpm, w * 100))
    for group, bounds in cfg.exact_groups:
        if _matches(values, bounds):
            f_pm, m_pm = Fraction(f * dpm, w), Fraction(m_cents * dpm, w * 100)
            return RfmView(
                recency,
                windows,
                group.name,
                lambda: _group_reason(group, recency, f_pm, m_pm, w),  # noqa: B023 (returned at once)
            )
    return RfmView(
        recency,
        windows,
        cfg.fallback_group,
        lambda: (
            f"R={recency} days, F={f * dpm / w:.2f}/month, "
            f"M={m_cents * dpm / (w * 100):.2f}/month "
            f"({w}-day window) match no group"
        ),
    )


def _matches(
    values: tuple[tuple[int, int], ...], bounds: tuple[tuple[Fraction, Fraction | None], ...]
) -> bool:
    """Whether each value ``n / d`` lies within its (low, high) bounds, inclusive."""
    for (n, d), (low, high) in zip(values, bounds, strict=True):
        if n * low.denominator < low.numerator * d:
            return False
        if high is not None and n * high.denominator > high.numerator * d:
            return False
    return True


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


def _grade(state: CustomerState, totals: dict[int, Totals], rules: Rules) -> GradeView:
    cfg = rules.grade
    year = totals[cfg.window_days]
    placed_ever = state.order_count
    components: dict[str, float | None] = {
        "payment": min(1.0, state.paid_orders / placed_ever)
        if state.paid_orders and placed_ever
        else None,
        "returns": 1.0 - min(1.0, year.returns / year.placed) if year.placed > 0 else None,
        "reviews": (state.rating_sum / state.review_count - 1) / 4 if state.review_count else None,
        "activity": min(1.0, max(0, year.orders) / cfg.activity_target_orders),
        "disputes": 1.0 - min(1.0, year.complaints / cfg.disputes_cap),
    }
    weighted = total = 0.0
    for name, weight in cfg.weights:
        value = components[name]
        if value is not None and weight > 0:
            weighted += weight * value
            total += weight
    score = round(100 * weighted / total, 1) if total else 0.0
    spend = year.net_cents / 100
    avg_review = state.rating_sum / state.review_count if state.review_count else None
    blocked = (
        spend < cfg.core_min_spend,
        avg_review is not None and avg_review < cfg.core_min_review,
        year.complaints > cfg.core_max_complaints,
    )

    def why() -> str:
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
                f"{year.complaints} complaints in {cfg.window_days} days",
            ]
            named = [b for b, on in zip(blockers, blocked, strict=True) if on]
            text += f" (not core: {'; '.join(named)})"
        op = ">=" if score >= cfg.potential_min_score else "<"
        return f"{text} {op} {cfg.potential_min_score:g}"

    if score >= cfg.core_min_score and not any(blocked):
        return GradeView(Grade.CORE, score, components, why)
    if score >= cfg.potential_min_score:
        return GradeView(Grade.POTENTIAL, score, components, why)
    return GradeView(Grade.ORDINARY, score, components, why)


# -- features and tags -------------------------------------------------------------


def features(state: CustomerState, view: Assessment, rules: Rules) -> dict[str, float]:
    """The numeric features tag rules test (names: ``Rules.feature_names()``)."""
    out: dict[str, float] = {
        "order_count": state.order_count,
        "spend": state.spend,
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
    ranked = sorted(state.categories.items(), key=lambda kv: (-kv[1], kv[0]))
    out.update(f"behaviour:likes:{name}" for name, _ in ranked[: cfg.top_categories])
    if state.preferred_channels:
        out.add(f"preference:channel:{state.preferred_channels[0]}")
    if state.item_count:
        average = state.item_value_cents / state.item_count / 100
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
            "since": _iso(state.stage_since)
            if state.stage == view.stage.name and state.stage_since is not None
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
            "orders": state.order_count,
            "spend": state.spend,
            "first_purchase_at": _iso(state.first_purchase_at),
            "last_purchase_at": _iso(state.last_purchase_at),
            "last_event_at": _iso(state.last_event_at),
        },
        "preferred_channels": list(state.preferred_channels),
        "timezone": state.timezone,
        "recent_actions": [
            {"action_id": a, "action_type": t, "created_at": _iso(c)}
            for a, t, c in reversed(state.recent_actions)
        ],
        "erased": state.erased_at is not None,
    }


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
