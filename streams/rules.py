"""Domain rules: every threshold, window and template, with domain.md's defaults.

The rules live in one TOML file (``CRM_RULES_FILE``); anything it leaves out
keeps the default below. A wrong file fails at start-up with a
:class:`~streams.errors.ConfigError` naming the key, e.g.
``configuration error at 'lifecycle.active_window_days': must be >= 1``.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from fractions import Fraction
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from schemas.base import Channel
from streams.errors import ConfigError


def _min(value: float) -> dict[str, float]:
    return {"min": value}


@dataclass(frozen=True)
class WelcomeRule:
    """domain.md §3: first purchase -> welcome with first-order gift and usage guide."""

    enabled: bool = True
    template_id: str = "welcome_first_order"
    channel: str = Channel.EMAIL.value
    gift: str = "first_order_gift"
    expires_after_days: int = field(default=30, metadata=_min(1))


@dataclass(frozen=True)
class LifecycleRules:
    """domain.md §2: the lifecycle classes and their windows (days, on event time).

    Evaluated in this order as of a time T (R = whole days since the last
    purchase, tenure = whole days since the first one):
    potential (no purchase) -> churned (R >= ``churned_after_days``) -> dormant
    (R >= ``dormant_after_days``) -> reactivated (a purchase after a gap of at
    least ``dormant_after_days``, within ``reactivated_days``) -> loyal (tenure
    >= ``loyal_min_tenure_days`` and >= ``loyal_min_orders`` net orders in
    ``loyal_window_days``) -> new (tenure < ``new_days`` and fewer than
    ``active_min_orders`` in ``active_window_days``) -> active.
    """

    #: Acquisition window: a first purchase keeps the customer "new" this long.
    new_days: int = field(default=30, metadata=_min(1))
    #: Net orders within ``active_window_days`` that make a new customer active early.
    active_min_orders: int = field(default=2, metadata=_min(2))
    active_window_days: int = field(default=30, metadata=_min(1))
    #: Days without a purchase after which a customer is dormant (domain.md §2, 004 §4).
    dormant_after_days: int = field(default=30, metadata=_min(1))
    #: Days without a purchase after which a customer is churned (> dormant).
    churned_after_days: int = field(default=90, metadata=_min(2))
    #: How long "reactivated" lasts after a purchase that ended a dormant spell.
    reactivated_days: int = field(default=30, metadata=_min(1))
    #: Maturity: tenure (days since the first purchase) needed to be loyal.
    loyal_min_tenure_days: int = field(default=180, metadata=_min(1))
    loyal_window_days: int = field(default=365, metadata=_min(1))
    loyal_min_orders: int = field(default=6, metadata=_min(1))


@dataclass(frozen=True)
class RfmGroup:
    """One row of the RFM threshold table: all given bounds must hold (inclusive).

    R is whole days since the last purchase; F and M are per month over
    ``rfm.group_window_days`` (net of cancellations and returns).
    """

    name: str
    r_max_days: int | None = field(default=None, metadata=_min(0))
    r_min_days: int | None = field(default=None, metadata=_min(0))
    f_min: float | None = field(default=None, metadata=_min(0))
    f_max: float | None = field(default=None, metadata=_min(0))
    m_min: float | None = field(default=None, metadata=_min(0))
    m_max: float | None = field(default=None, metadata=_min(0))

    def bounds(self) -> tuple[tuple[float, float], ...]:
        """(low, high) per dimension R, F, M; an absent bound is open."""
        inf = float("inf")
        return (
            (_or(self.r_min_days, 0), _or(self.r_max_days, inf)),
            (_or(self.f_min, 0), _or(self.f_max, inf)),
            (_or(self.m_min, 0), _or(self.m_max, inf)),
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


#: (low, high) per dimension R, F, M as exact fractions; ``None``: no upper bound.
ExactBounds = tuple[tuple[Fraction, Fraction | None], ...]

_DEFAULT_GROUPS = (
    RfmGroup("high_value", r_max_days=7, f_min=3, m_min=800),
    RfmGroup("potential", r_max_days=15, f_min=2, m_min=500),
    RfmGroup("sleeping", r_min_days=30, f_max=1, m_max=300),
)


@dataclass(frozen=True)
class RfmRules:
    """domain.md §2 (002 §1.2/§3.2): RFM windows and the group threshold table."""

    #: Rolling windows (days) reported for F and M; day granularity, event time.
    windows_days: tuple[int, ...] = (30, 90, 365)
    #: The window whose monthly-normalised F and M decide the group.
    group_window_days: int = field(default=90, metadata=_min(1))
    #: Days per month when normalising F and M ("per month").
    days_per_month: int = field(default=30, metadata=_min(1))
    #: Checked in order; the first row whose bounds all hold names the group.
    groups: tuple[RfmGroup, ...] = _DEFAULT_GROUPS
    #: The group of everyone no row matches (and of customers with no purchase).
    fallback_group: str = "other"

    @functools.cached_property
    def exact_groups(
        self,
    ) -> tuple[tuple[RfmGroup, tuple[tuple[Fraction, Fraction | None], ...]], ...]:
        """Each group with its R, F, M bounds as exact fractions of what was written
        (266.67, not its binary float); ``None`` is an open upper bound."""

        def exact(value: float) -> Fraction:
            return Fraction(repr(value))

        return tuple(
            (
                g,
                tuple(
                    (exact(lo), None if hi == float("inf") else exact(hi)) for lo, hi in g.bounds()
                ),
            )
            for g in self.groups
        )


@dataclass(frozen=True)
class GradeRules:
    """domain.md §2 (source 003): a score from five components -> core / potential / ordinary.

    Each component is 0..1 (1 = best); one without data (no reviews, no
    payment events) is left out and the weights of the rest are rescaled.
    """

    window_days: int = field(default=365, metadata=_min(1))
    weight_payment: float = field(default=0.2, metadata=_min(0))
    weight_returns: float = field(default=0.25, metadata=_min(0))
    weight_reviews: float = field(default=0.2, metadata=_min(0))
    weight_activity: float = field(default=0.2, metadata=_min(0))
    weight_disputes: float = field(default=0.15, metadata=_min(0))
    #: Net orders in the window that count as fully active.
    activity_target_orders: int = field(default=12, metadata=_min(1))
    #: Complaints in the window at which the disputes component reaches 0.
    disputes_cap: int = field(default=3, metadata=_min(1))
    core_min_score: float = field(default=75.0, metadata=_min(0))
    #: "High value = yearly spend over a threshold" (net, in the window).
    core_min_spend: float = field(default=2000.0, metadata=_min(0))
    #: Average review rating a core customer must keep, when they have reviews.
    core_min_review: float = field(default=4.0, metadata=_min(1))
    #: "No major disputes": complaints in the window a core customer may have.
    core_max_complaints: int = field(default=0, metadata=_min(0))
    potential_min_score: float = field(default=50.0, metadata=_min(0))

    @functools.cached_property
    def weights(self) -> tuple[tuple[str, float], ...]:
        """(component, weight) for every component, in GRADE_COMPONENTS order."""
        return tuple((name, getattr(self, f"weight_{name}")) for name in GRADE_COMPONENTS)


@dataclass(frozen=True)
class CounterRules:
    """Windowed counters (returns, cancellations, complaints, negative reviews)."""

    windows_days: tuple[int, ...] = (7, 30, 90)
    #: A review with this rating or lower is negative (domain.md §4).
    negative_review_max_rating: int = field(default=2, metadata=_min(1))


@dataclass(frozen=True)
class TagRule:
    """A tag set while a feature is within [min, max]: ``risk:returns`` if returns_90d >= 3."""

    tag: str
    feature: str
    min: float | None = None
    max: float | None = None


_DEFAULT_TAG_RULES = (
    TagRule("risk:returns", "returns_90d", min=3),
    TagRule("risk:cancellations", "cancellations_30d", min=3),
    TagRule("risk:negative_reviews", "negative_reviews_90d", min=2),
    TagRule("risk:complaints", "complaints_30d", min=4),
)


@dataclass(frozen=True)
class TagRules:
    """domain.md §2 (000 §2): value, behaviour, preference and risk tags."""

    #: Categories remembered per customer for affinity (the least-weighted drops out).
    category_slots: int = field(default=12, metadata=_min(1))
    #: How many top categories become ``behaviour:likes:<category>`` tags.
    top_categories: int = field(default=3, metadata=_min(0))
    #: Affinity weight of an ordered item and of browsing signals.
    weight_order: int = field(default=3, metadata=_min(0))
    weight_view: int = field(default=1, metadata=_min(0))
    weight_cart_add: int = field(default=2, metadata=_min(0))
    weight_favorite: int = field(default=2, metadata=_min(0))
    #: Average item price bands for ``preference:price:budget|mid|premium``.
    budget_max_item_price: float = field(default=10.0, metadata=_min(0))
    premium_min_item_price: float = field(default=100.0, metadata=_min(0))
    #: Threshold tags on features (see :data:`FEATURES`); extend or replace in the file.
    rules: tuple[TagRule, ...] = _DEFAULT_TAG_RULES


@dataclass(frozen=True)
class ModelRules:
    """The customer model as a whole."""

    #: Derive lifecycle, RFM, grade and tags, publish changes and project to Redis.
    enabled: bool = True
    #: Recent actions remembered per customer (for the profile and lookup).
    recent_actions: int = field(default=10, metadata=_min(0))


@dataclass(frozen=True)
class StateRules:
    """Bounds that keep per-customer state small."""

    #: How many recent event ids per customer are remembered to drop retried sends.
    dedupe_window: int = field(default=64, metadata=_min(1))


# -- cross-customer aggregates (agents.aggregates) ---------------------------------

#: Aggregation dimensions a late delivery can be counted by.
DELAY_DIMENSIONS = ("carrier", "region", "carrier+region")


@dataclass(frozen=True)
class LogisticsDelayRule:
    """domain.md §3 (004 §1): many late deliveries of one carrier or region ->
    an apology with compensation to each affected customer, once."""

    enabled: bool = True
    #: A delivery is late when it arrives more than this many hours after ``promised_at``.
    grace_hours: float = field(default=0.0, metadata=_min(0))
    #: Rolling window (event time, whole hours) in which late deliveries are counted.
    window_hours: int = field(default=24, metadata=_min(1))
    #: Late deliveries of one key within the window that make it a mass delay.
    threshold: int = field(default=20, metadata=_min(1))
    #: What late deliveries are grouped by: ``carrier``, ``region``, ``carrier+region``.
    dimensions: tuple[str, ...] = ("carrier", "region")
    #: Late deliveries remembered per key (to apologise to when the threshold is reached).
    max_affected: int = field(default=500, metadata=_min(1))
    template_id: str = "logistics_delay_apology"
    #: The channel of every apology (the customer's preferred channel is not known here).
    channel: str = Channel.EMAIL.value
    compensation: str = "late_delivery_coupon"
    coupon_kind: str = "late_delivery"


@dataclass(frozen=True)
class ComplaintSurgeRule:
    """domain.md §5 (004 §2): a complaint type growing > 50 % week over week."""

    enabled: bool = True
    #: Week-over-week growth above which a type surges (0.5 = ratio above 1.5): yellow.
    growth: float = field(default=0.5, metadata=_min(0))
    #: Growth above which a surge is red (1.0 = the count doubled).
    red_growth: float = field(default=1.0, metadata=_min(0))
    #: Complaints of the type in the last 7 days needed for any surge (and for a
    #: ratio at all when the 7 days before had none).
    min_count: int = field(default=10, metadata=_min(1))


@dataclass(frozen=True)
class AggregateRules:
    """Rules that count events across many customers (``agents.aggregates``)."""

    logistics_delay: LogisticsDelayRule = field(default_factory=LogisticsDelayRule)
    complaint_surge: ComplaintSurgeRule = field(default_factory=ComplaintSurgeRule)
    #: Recent signal ids remembered per aggregation key, to drop re-sent signals.
    dedupe_window: int = field(default=256, metadata=_min(1))


def _check_aggregates(agg: AggregateRules) -> None:
    delay = agg.logistics_delay
    key = "aggregates.logistics_delay"
    if not delay.dimensions:
        raise ConfigError(f"{key}.dimensions", "needs at least one dimension")
    for i, dim in enumerate(delay.dimensions):
        if dim not in DELAY_DIMENSIONS:
            raise ConfigError(
                f"{key}.dimensions[{i}]", f"must be one of {', '.join(DELAY_DIMENSIONS)}"
            )
    if len(set(delay.dimensions)) != len(delay.dimensions):
        raise ConfigError(f"{key}.dimensions", "has a dimension twice")
    if delay.max_affected < delay.threshold:
        raise ConfigError(f"{key}.max_affected", f"must be >= {key}.threshold ({delay.threshold})")
    if delay.channel not in {c.value for c in Channel}:
        raise ConfigError(f"{key}.channel", f"must be one of {', '.join(c.value for c in Channel)}")
    surge = agg.complaint_surge
    if surge.red_growth < surge.growth:
        raise ConfigError(
            "aggregates.complaint_surge.red_growth",
            f"must be >= aggregates.complaint_surge.growth ({surge.growth})",
        )


@dataclass(frozen=True)
class Rules:
    welcome: WelcomeRule = field(default_factory=WelcomeRule)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    rfm: RfmRules = field(default_factory=RfmRules)
    grade: GradeRules = field(default_factory=GradeRules)
    counters: CounterRules = field(default_factory=CounterRules)
    tags: TagRules = field(default_factory=TagRules)
    model: ModelRules = field(default_factory=ModelRules)
    state: StateRules = field(default_factory=StateRules)
    aggregates: AggregateRules = field(default_factory=AggregateRules)

    @classmethod
    def load(cls, path: str | Path | None) -> Rules:
        """Read a rules file; ``None`` or ``""`` gives the defaults."""
        if not path:
            return cls()
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("CRM_RULES_FILE", f"no such file: {path}") from None
        except IsADirectoryError:
            raise ConfigError("CRM_RULES_FILE", f"is a directory, not a file: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError("CRM_RULES_FILE", f"not UTF-8 text: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> Rules:
        rules = _build(cls, raw, prefix="")
        assert isinstance(rules, Rules)
        rules._check()
        return rules

    def _check(self) -> None:
        _check_aggregates(self.aggregates)
        if self.welcome.channel not in {c.value for c in Channel}:
            raise ConfigError(
                "welcome.channel", f"must be one of {', '.join(c.value for c in Channel)}"
            )
        life = self.lifecycle
        if life.churned_after_days <= life.dormant_after_days:
            raise ConfigError(
                "lifecycle.churned_after_days",
                f"must be greater than lifecycle.dormant_after_days ({life.dormant_after_days})",
            )
        _check_windows("rfm.windows_days", self.rfm.windows_days)
        _check_windows("counters.windows_days", self.counters.windows_days)
        if self.rfm.group_window_days not in self.rfm.windows_days:
            raise ConfigError("rfm.group_window_days", "must be one of rfm.windows_days")
        _check_groups(self.rfm)
        grade = self.grade
        for name in ("core_min_score", "potential_min_score"):
            if getattr(grade, name) > 100:
                raise ConfigError(f"grade.{name}", "must be <= 100 (scores are 0..100)")
        if grade.potential_min_score > grade.core_min_score:
            raise ConfigError(
                "grade.potential_min_score",
                f"overlaps core: must be <= grade.core_min_score ({grade.core_min_score})",
            )
        if grade.core_min_review > 5:
            raise ConfigError("grade.core_min_review", "must be <= 5 (ratings are 1..5)")
        if not any(getattr(grade, f"weight_{c}") > 0 for c in GRADE_COMPONENTS):
            raise ConfigError("grade.weight_*", "at least one weight must be above 0")
        if self.counters.negative_review_max_rating > 5:
            raise ConfigError("counters.negative_review_max_rating", "must be <= 5")
        tags = self.tags
        if tags.budget_max_item_price > tags.premium_min_item_price:
            raise ConfigError(
                "tags.budget_max_item_price",
                f"overlaps premium: must be <= tags.premium_min_item_price "
                f"({tags.premium_min_item_price})",
            )
        known = self.feature_names()
        for i, rule in enumerate(tags.rules):
            key = f"tags.rules[{i}]"
            if rule.feature not in known:
                raise ConfigError(
                    f"{key}.feature", f"unknown feature (known: {', '.join(sorted(known))})"
                )
            if rule.min is None and rule.max is None:
                raise ConfigError(key, "needs min, max or both")
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                raise ConfigError(f"{key}.min", "must be <= max")

    # -- derived facts ----------------------------------------------------------

    @property
    def history_days(self) -> int:
        """Days of daily activity each customer keeps: the longest window any rule reads.

        At least churned + reactivated days, so a purchase that ends a dormant
        spell can always see that spell.
        """
        life = self.lifecycle
        return max(*self.assessment_windows, life.churned_after_days + life.reactivated_days)

    @functools.cached_property
    def assessment_windows(self) -> tuple[int, ...]:
        """Every window (days) an assessment sums, ascending."""
        life = self.lifecycle
        return tuple(
            sorted(
                {
                    *self.rfm.windows_days,
                    *self.counters.windows_days,
                    self.grade.window_days,
                    life.loyal_window_days,
                    life.active_window_days,
                }
            )
        )

    @functools.cached_property
    def model_windows(self) -> tuple[int, ...]:
        """The windows stage, RFM group and grade read (not the counters' own)."""
        life = self.lifecycle
        return tuple(
            sorted(
                {
                    life.active_window_days,
                    life.loyal_window_days,
                    self.rfm.group_window_days,
                    self.grade.window_days,
                }
            )
        )

    def feature_names(self) -> frozenset[str]:
        """Numeric features tag rules can test (see :func:`agents.model.features`)."""
        names = {"recency_days", "tenure_days", "order_count", "spend", "score"}
        for w in self.rfm.windows_days:
            names |= {f"orders_{w}d", f"frequency_{w}d", f"monetary_{w}d"}
        for w in self.counters.windows_days:
            names |= {f"{counter}_{w}d" for counter in COUNTERS}
        return frozenset(names)


#: The windowed counters every customer keeps (domain.md §4 needs them).
COUNTERS = ("returns", "cancellations", "complaints", "negative_reviews")
#: The grade's components, each with a ``grade.weight_<name>``.
GRADE_COMPONENTS = ("payment", "returns", "reviews", "activity", "disputes")


def _check_windows(key: str, windows: tuple[int, ...]) -> None:
    if not windows:
        raise ConfigError(key, "needs at least one window")
    if len(set(windows)) != len(windows):
        raise ConfigError(key, "has a window twice")


def _check_groups(rfm: RfmRules) -> None:
    names = [g.name for g in rfm.groups]
    for i, group in enumerate(rfm.groups):
        key = f"rfm.groups[{i}]"
        if names.index(group.name) != i or group.name == rfm.fallback_group:
            raise ConfigError(f"{key}.name", f"'{group.name}' names two groups")
        for dim, (low, high) in zip(("r", "f", "m"), group.bounds(), strict=True):
            if low > high:
                lo_key = "r_min_days" if dim == "r" else f"{dim}_min"
                raise ConfigError(f"{key}.{lo_key}", "overlapping thresholds: min is above max")
        for earlier in rfm.groups[:i]:
            if all(
                lo_e <= lo and hi <= hi_e
                for (lo_e, hi_e), (lo, hi) in zip(earlier.bounds(), group.bounds(), strict=True)
            ):
                raise ConfigError(
                    key,
                    f"overlapping thresholds: every customer '{group.name}' would take is "
                    f"taken first by '{earlier.name}' (put the narrower group first)",
                )


def _build(kind: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", "expected a table")
    hints = get_type_hints(kind)
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            prefix + unknown[0], f"unknown key (known here: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _build_value(prefix + name, hints[name], value, known[name].metadata)
    for name, f in known.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(prefix + name, "is required")
    return kind(**values)


def _build_value(key: str, hint: Any, value: Any, metadata: Any) -> Any:
    if is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    origin = get_origin(hint)
    if origin is tuple:  # tuple[X, ...]: a TOML array (of tables, for dataclasses)
        (item,) = (a for a in get_args(hint) if a is not Ellipsis)
        if not isinstance(value, list):
            raise ConfigError(key, "expected an array")
        item_meta = metadata if is_dataclass(item) else {"min": 1}
        return tuple(_build_value(f"{key}[{i}]", item, v, item_meta) for i, v in enumerate(value))
    if origin in (Union, UnionType):  # X | None: TOML has no null, so always an X here
        (hint,) = (a for a in get_args(hint) if a is not type(None))
    return _check_scalar(key, hint, value, metadata)


def _check_scalar(key: str, hint: Any, value: Any, metadata: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, "expected an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "expected a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected a non-empty string")
        return value
    minimum = metadata.get("min")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    return value
