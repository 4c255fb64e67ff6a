"""Domain rules: every threshold, window and template, with domain.md's defaults.

The rules live in one TOML file (``CRM_RULES_FILE``); anything it leaves out
keeps the default below. Each table is a frozen pydantic dataclass that refuses
unknown keys (``extra="forbid"``) and declares its types and bounds, so the same
classes validate a file and give its JSON Schema (:func:`json_schema`). Checks
across keys are model validators. A wrong file fails at start-up with a
:class:`~schemas.errors.ConfigError` naming the key, e.g.
``configuration error at 'lifecycle.active_window_days': must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import tomllib
from dataclasses import field
from fractions import Fraction
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass

from schemas.actions import ActionType
from schemas.base import Channel
from schemas.complaints import ComplaintChannel, ComplaintType, Severity
from schemas.errors import ConfigError

#: Every rules table: no unknown keys. Values are checked on construction (from a
#: file or in code); a table given as an instance is taken as it is.
_CONFIG = ConfigDict(extra="forbid")

# The value types of a rules file. TOML has its own types, so no coercion: a
# string is not a number, 1 is not true, 30.0 is not a whole number.
Int = Annotated[int, Strict()]
#: A number: an integer or a float (stored as a float).
Number = Annotated[float, Strict()]
Flag = Annotated[bool, Strict()]
#: Names, template ids, codes: never empty.
Text = Annotated[str, Strict(), Field(min_length=1)]
#: A review rating, 1..5.
Rating = Annotated[Number, Field(ge=1, le=5)]


@dataclass(frozen=True, config=_CONFIG)
class WelcomeRule:
    """domain.md §3: first purchase -> welcome with first-order gift and usage guide."""

    enabled: Flag = True
    template_id: Text = "welcome_first_order"
    channel: Channel = Channel.EMAIL
    gift: Text = "first_order_gift"
    expires_after_days: Annotated[Int, Field(ge=1)] = 30


@dataclass(frozen=True, config=_CONFIG)
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
    new_days: Annotated[Int, Field(ge=1)] = 30
    #: Net orders within ``active_window_days`` that make a new customer active early.
    active_min_orders: Annotated[Int, Field(ge=2)] = 2
    active_window_days: Annotated[Int, Field(ge=1)] = 30
    #: Days without a purchase after which a customer is dormant (domain.md §2, 004 §4).
    dormant_after_days: Annotated[Int, Field(ge=1)] = 30
    #: Days without a purchase after which a customer is churned (> dormant).
    churned_after_days: Annotated[Int, Field(ge=2)] = 90
    #: How long "reactivated" lasts after a purchase that ended a dormant spell.
    reactivated_days: Annotated[Int, Field(ge=1)] = 30
    #: Maturity: tenure (days since the first purchase) needed to be loyal.
    loyal_min_tenure_days: Annotated[Int, Field(ge=1)] = 180
    loyal_window_days: Annotated[Int, Field(ge=1)] = 365
    loyal_min_orders: Annotated[Int, Field(ge=1)] = 6

    @model_validator(mode="after")
    def _check(self) -> LifecycleRules:
        if self.churned_after_days <= self.dormant_after_days:
            raise ConfigError(
                "lifecycle.churned_after_days",
                f"must be greater than lifecycle.dormant_after_days ({self.dormant_after_days})",
            )
        return self


@dataclass(frozen=True, config=_CONFIG)
class RfmGroup:
    """One row of the RFM threshold table: all given bounds must hold (inclusive).

    R is whole days since the last purchase; F and M are per month over
    ``rfm.group_window_days`` (net of cancellations and returns).
    """

    name: Text
    r_max_days: Annotated[Int, Field(ge=0)] | None = None
    r_min_days: Annotated[Int, Field(ge=0)] | None = None
    f_min: Annotated[Number, Field(ge=0)] | None = None
    f_max: Annotated[Number, Field(ge=0)] | None = None
    m_min: Annotated[Number, Field(ge=0)] | None = None
    m_max: Annotated[Number, Field(ge=0)] | None = None

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


_DEFAULT_GROUPS = (
    RfmGroup("high_value", r_max_days=7, f_min=3, m_min=800),
    RfmGroup("potential", r_max_days=15, f_min=2, m_min=500),
    RfmGroup("sleeping", r_min_days=30, f_max=1, m_max=300),
)


@dataclass(frozen=True, config=_CONFIG)
class RfmRules:
    """domain.md §2 (002 §1.2/§3.2): RFM windows and the group threshold table."""

    #: Rolling windows (days) reported for F and M; day granularity, event time.
    windows_days: tuple[Annotated[Int, Field(ge=1)], ...] = (30, 90, 365)
    #: The window whose monthly-normalised F and M decide the group.
    group_window_days: Annotated[Int, Field(ge=1)] = 90
    #: Days per month when normalising F and M ("per month").
    days_per_month: Annotated[Int, Field(ge=1)] = 30
    #: Checked in order; the first row whose bounds all hold names the group.
    groups: tuple[RfmGroup, ...] = _DEFAULT_GROUPS
    #: The group of everyone no row matches (and of customers with no purchase).
    fallback_group: Text = "other"

    @model_validator(mode="after")
    def _check(self) -> RfmRules:
        _check_windows("rfm.windows_days", self.windows_days)
        if self.group_window_days not in self.windows_days:
            raise ConfigError("rfm.group_window_days", "must be one of rfm.windows_days")
        _check_groups(self)
        return self

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


@dataclass(frozen=True, config=_CONFIG)
class GradeRules:
    """domain.md §2 (source 003): a score from five components -> core / potential / ordinary.

    Each component is 0..1 (1 = best); one without data (no reviews, no
    payment events) is left out and the weights of the rest are rescaled.
    """

    window_days: Annotated[Int, Field(ge=1)] = 365
    weight_payment: Annotated[Number, Field(ge=0)] = 0.2
    weight_returns: Annotated[Number, Field(ge=0)] = 0.25
    weight_reviews: Annotated[Number, Field(ge=0)] = 0.2
    weight_activity: Annotated[Number, Field(ge=0)] = 0.2
    weight_disputes: Annotated[Number, Field(ge=0)] = 0.15
    #: Net orders in the window that count as fully active.
    activity_target_orders: Annotated[Int, Field(ge=1)] = 12
    #: Complaints in the window at which the disputes component reaches 0.
    disputes_cap: Annotated[Int, Field(ge=1)] = 3
    #: Scores are 0..100.
    core_min_score: Annotated[Number, Field(ge=0, le=100)] = 75.0
    #: "High value = yearly spend over a threshold" (net, in the window).
    core_min_spend: Annotated[Number, Field(ge=0)] = 2000.0
    #: Average review rating a core customer must keep, when they have reviews.
    core_min_review: Rating = 4.0
    #: "No major disputes": complaints in the window a core customer may have.
    core_max_complaints: Annotated[Int, Field(ge=0)] = 0
    potential_min_score: Annotated[Number, Field(ge=0, le=100)] = 50.0

    @model_validator(mode="after")
    def _check(self) -> GradeRules:
        if self.potential_min_score > self.core_min_score:
            raise ConfigError(
                "grade.potential_min_score",
                f"overlaps core: must be <= grade.core_min_score ({self.core_min_score})",
            )
        if not any(weight > 0 for _, weight in self.weights):
            raise ConfigError("grade.weight_*", "at least one weight must be above 0")
        return self

    @functools.cached_property
    def weights(self) -> tuple[tuple[str, float], ...]:
        """(component, weight) for every component, in GRADE_COMPONENTS order."""
        return tuple((name, getattr(self, f"weight_{name}")) for name in GRADE_COMPONENTS)


@dataclass(frozen=True, config=_CONFIG)
class CounterRules:
    """Windowed counters (returns, cancellations, complaints, negative reviews)."""

    windows_days: tuple[Annotated[Int, Field(ge=1)], ...] = (7, 30, 90)
    #: A review with this rating or lower is negative (domain.md §4).
    negative_review_max_rating: Annotated[Int, Field(ge=1, le=5)] = 2

    @model_validator(mode="after")
    def _check(self) -> CounterRules:
        _check_windows("counters.windows_days", self.windows_days)
        return self


@dataclass(frozen=True, config=_CONFIG)
class TagRule:
    """A tag set while a feature is within [min, max]: ``risk:returns`` if returns_90d >= 3."""

    tag: Text
    feature: Text
    min: Number | None = None
    max: Number | None = None


_DEFAULT_TAG_RULES = (
    TagRule("risk:returns", "returns_90d", min=3),
    TagRule("risk:cancellations", "cancellations_30d", min=3),
    TagRule("risk:negative_reviews", "negative_reviews_90d", min=2),
    TagRule("risk:complaints", "complaints_30d", min=4),
)


@dataclass(frozen=True, config=_CONFIG)
class TagRules:
    """domain.md §2 (000 §2): value, behaviour, preference and risk tags."""

    #: Categories remembered per customer for affinity (the least-weighted drops out).
    category_slots: Annotated[Int, Field(ge=1)] = 12
    #: How many top categories become ``behaviour:likes:<category>`` tags.
    top_categories: Annotated[Int, Field(ge=0)] = 3
    #: Affinity weight of an ordered item and of browsing signals.
    weight_order: Annotated[Int, Field(ge=0)] = 3
    weight_view: Annotated[Int, Field(ge=0)] = 1
    weight_cart_add: Annotated[Int, Field(ge=0)] = 2
    weight_favorite: Annotated[Int, Field(ge=0)] = 2
    #: Average item price bands for ``preference:price:budget|mid|premium``.
    budget_max_item_price: Annotated[Number, Field(ge=0)] = 10.0
    premium_min_item_price: Annotated[Number, Field(ge=0)] = 100.0
    #: Threshold tags on features (see :meth:`Rules.feature_names`, which
    #: :class:`Rules` checks them against); extend or replace in the file.
    rules: tuple[TagRule, ...] = _DEFAULT_TAG_RULES

    @model_validator(mode="after")
    def _check(self) -> TagRules:
        if self.budget_max_item_price > self.premium_min_item_price:
            raise ConfigError(
                "tags.budget_max_item_price",
                f"overlaps premium: must be <= tags.premium_min_item_price "
                f"({self.premium_min_item_price})",
            )
        for i, rule in enumerate(self.rules):
            if rule.min is None and rule.max is None:
                raise ConfigError(f"tags.rules[{i}]", "needs min, max or both")
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                raise ConfigError(f"tags.rules[{i}].min", "must be <= max")
        return self


@dataclass(frozen=True, config=_CONFIG)
class ModelRules:
    """The customer model as a whole."""

    #: Derive lifecycle, RFM, grade and tags, publish changes and project to Redis.
    enabled: Flag = True
    #: Recent actions remembered per customer (for the profile and lookup); also how
    #: many contact-policy outcomes (sent, deferred, suppressed, held out) the lookup
    #: shows (agents.journal).
    recent_actions: Annotated[Int, Field(ge=0)] = 10
    #: Recent events (browsing left out) remembered per customer for the lookup's
    #: timeline (agents.journal); 0: none.
    recent_events: Annotated[Int, Field(ge=0)] = 20


@dataclass(frozen=True, config=_CONFIG)
class StateRules:
    """Bounds that keep per-customer state small."""

    #: At most this many applied events per customer are remembered to recognise
    #: repeats (agents.seen; those within CRM_ALLOWED_LATENESS of the stream time).
    #: Past it the oldest are forgotten, and events of that customer dated before
    #: them are refused (``too_late``) rather than risk applying one twice.
    dedupe_window: Annotated[Int, Field(ge=1)] = 512


# -- care triggers and timers (domain.md §3) -------------------------------------------


@dataclass(frozen=True, config=_CONFIG)
class FollowUpRule:
    """Purchase -> a non-sales follow-up about the experience, 24 h later (002 §2.1)."""

    enabled: Flag = True
    delay_hours: Annotated[Number, Field(ge=0)] = 24.0
    template_id: Text = "purchase_follow_up"
    #: Orders placed within this many minutes of the first order of a pending follow-up
    #: join it: one follow-up, ``delay_hours`` after that first order, for all of them
    #: (at most ``care.recent_orders`` orders each; 0: one follow-up per order).
    coalesce_minutes: Annotated[Number, Field(ge=0)] = 60.0


@dataclass(frozen=True, config=_CONFIG)
class CategoryCare:
    """Delivery care for one category: which guide, and whether a repurchase coupon goes too."""

    category: Text
    guide: Text
    template_id: Text
    coupon: Flag = False


_DEFAULT_CATEGORY_CARE = (
    CategoryCare("appliances", "installation_and_maintenance", "care_appliances"),
    CategoryCare("cosmetics", "usage_cycle", "care_cosmetics", coupon=True),
    CategoryCare("fragile", "handling_tips", "care_fragile"),
)


@dataclass(frozen=True, config=_CONFIG)
class DeliveryCareRule:
    """Delivery -> care by category (000; 004 §1)."""

    enabled: Flag = True
    categories: tuple[CategoryCare, ...] = _DEFAULT_CATEGORY_CARE


@dataclass(frozen=True, config=_CONFIG)
class AbandonmentRule:
    """A view or cart add with no order within N hours -> recommend that item (002 §2.2)."""

    enabled: Flag = True
    view_delay_hours: Annotated[Number, Field(ge=0)] = 24.0
    cart_delay_hours: Annotated[Number, Field(ge=0)] = 4.0
    template_id: Text = "browse_recommendation"
    expires_after_hours: Annotated[Number, Field(ge=1)] = 48.0


@dataclass(frozen=True, config=_CONFIG)
class CategoryCycle:
    category: Text
    days: Annotated[Int, Field(ge=1)] = 30


@dataclass(frozen=True, config=_CONFIG)
class RepurchaseRule:
    """The category's repurchase cycle elapsed since the last purchase -> reminder (000)."""

    enabled: Flag = True
    default_cycle_days: Annotated[Int, Field(ge=1)] = 30
    cycles: tuple[CategoryCycle, ...] = (
        CategoryCycle("cosmetics", 30),
        CategoryCycle("groceries", 14),
    )
    template_id: Text = "repurchase_reminder"
    coupon_kind: Text = "repurchase_coupon"
    expires_after_days: Annotated[Int, Field(ge=1)] = 7


@dataclass(frozen=True, config=_CONFIG)
class VipRule:
    """High-value customers: monthly exclusive coupon, quarterly follow-up (002 §5.1, 004 §1)."""

    enabled: Flag = True
    group: Text = "high_value"
    coupon_every_days: Annotated[Int, Field(ge=1)] = 30
    follow_up_every_days: Annotated[Int, Field(ge=1)] = 90
    coupon_template_id: Text = "vip_monthly_coupon"
    follow_up_template_id: Text = "vip_quarterly_follow_up"


@dataclass(frozen=True, config=_CONFIG)
class TierNudgeRule:
    """One order short of the next RFM group -> "one more order" nudge (002 §2.2).

    ``ladder`` lists RFM groups from lower to higher; a customer in a rung (or
    in none) is nudged when one more order of their average value would put them
    in the next rung. At most once per ``min_interval_days``.
    """

    enabled: Flag = True
    ladder: tuple[Text, ...] = ("potential", "high_value")
    min_interval_days: Annotated[Int, Field(ge=1)] = 30
    template_id: Text = "tier_nudge"


@dataclass(frozen=True, config=_CONFIG)
class GreetingRule:
    """Birthday and first-order anniversary greetings at a local hour (000, 004 §1)."""

    birthday: Flag = True
    anniversary: Flag = True
    #: Local hour (customer's timezone) the greeting is due at.
    local_hour: Annotated[Int, Field(ge=0, le=23)] = 10
    birthday_template_id: Text = "birthday_greeting"
    anniversary_template_id: Text = "order_anniversary"
    coupon_kind: Text = "greeting_coupon"


#: Days without a purchase that make a customer silent (domain.md §3, 004 §4).
DEFAULT_SILENT_DAYS = 30


@dataclass(frozen=True, config=_CONFIG)
class WinBackRule:
    """Silence and churn warnings (004 §4; 002 §2.4, §6.1).

    ``silent_days`` without a purchase -> "welcome back" coupon; more than
    ``complaints_max`` complaints in ``complaints_window_days`` or a negative
    review -> an empathetic win-back contact. Either opens a win-back case,
    checked ``check_after_days`` later: a purchase since -> closed; none -> the
    next entry of ``strategies`` (an escalation), until they run out.
    ``churned_survey``: a churned customer (``lifecycle.churned_after_days``
    without a purchase) gets a churn-reason survey.

    A case opens only once its first contact was *sent* (the contact policy may
    suppress it). A churn-warning case (complaints, a negative review) is service
    recovery: its steps are service, like its first contact. A silence case's
    steps are marketing, except ``service_strategies`` (a call by staff: service,
    on ``call_channel``). A step the contact policy's guardrails suppressed is
    tried again at the next check, at most ``guardrail_retries`` times per case;
    any other step not sent ends the case.
    """

    enabled: Flag = True
    silent_days: Annotated[Int, Field(ge=1)] = DEFAULT_SILENT_DAYS
    complaints_max: Annotated[Int, Field(ge=0)] = 3
    complaints_window_days: Annotated[Int, Field(ge=1)] = 30
    on_negative_review: Flag = True
    check_after_days: Annotated[Int, Field(ge=1)] = 7
    strategies: tuple[Text, ...] = ("retention_coupon", "exclusive_offer", "personal_call")
    welcome_back_template_id: Text = "welcome_back_coupon"
    win_back_template_id: Text = "win_back_empathy"
    escalation_template_id: Text = "win_back_next_strategy"
    churned_survey: Flag = True
    survey_template_id: Text = "churn_reason_survey"
    #: Strategies that are a task for service staff (priority service), not a message.
    service_strategies: tuple[Text, ...] = ("personal_call",)
    call_channel: Channel = Channel.PHONE
    call_template_id: Text = "win_back_personal_call"
    guardrail_retries: Annotated[Int, Field(ge=0)] = 1

    @model_validator(mode="after")
    def _check(self) -> WinBackRule:
        if not self.strategies:
            raise ConfigError("care.win_back.strategies", "needs at least one strategy")
        for i, name in enumerate(self.service_strategies):
            if name not in self.strategies:
                raise ConfigError(
                    f"care.win_back.service_strategies[{i}]",
                    f"'{name}' is not one of care.win_back.strategies",
                )
        return self


@dataclass(frozen=True, config=_CONFIG)
class CareRules:
    """Care and retention triggers (domain.md §3) and the durable timers behind them."""

    #: All care triggers at once (the welcome rule has its own switch).
    enabled: Flag = True
    follow_up: FollowUpRule = field(default_factory=FollowUpRule)
    delivery: DeliveryCareRule = field(default_factory=DeliveryCareRule)
    abandonment: AbandonmentRule = field(default_factory=AbandonmentRule)
    repurchase: RepurchaseRule = field(default_factory=RepurchaseRule)
    vip: VipRule = field(default_factory=VipRule)
    tier_nudge: TierNudgeRule = field(default_factory=TierNudgeRule)
    greetings: GreetingRule = field(default_factory=GreetingRule)
    win_back: WinBackRule = field(default_factory=WinBackRule)
    #: Channel for care actions when the customer states no preference.
    default_channel: Channel = Channel.EMAIL
    #: Marketing actions expire this long after their logical time unless a rule says otherwise.
    expires_after_days: Annotated[Int, Field(ge=1)] = 14
    #: Timers one customer may hold at once (keeps state bounded); more are dropped and counted.
    max_timers: Annotated[Int, Field(ge=4)] = 32
    #: Orders remembered per customer for delivery care and follow-ups.
    recent_orders: Annotated[Int, Field(ge=1)] = 8
    #: Publish stage changes reached by time alone (dormant, churned) when they happen,
    #: from a timer, instead of when the customer's next event arrives.
    timed_stage_changes: Flag = True

    @model_validator(mode="after")
    def _check(self) -> CareRules:
        for key, items in (
            ("care.delivery.categories", [c.category for c in self.delivery.categories]),
            ("care.repurchase.cycles", [c.category for c in self.repurchase.cycles]),
        ):
            if len(set(items)) != len(items):
                raise ConfigError(key, "names a category twice")
        return self


#: Values of ``policy.consent.marketing``.
ConsentMode = Literal["opt_in", "opt_out"]
#: Values of ``policy.caps.week_starts_on``.
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
#: The weekdays in ``date.weekday()`` order.
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
#: A share of customers, 0..1.
Share = Annotated[Number, Field(ge=0, le=1)]


@dataclass(frozen=True, config=_CONFIG)
class ConsentPolicy:
    """domain.md §9: consent per purpose and channel (see docs/contact-policy.md).

    Service messages go out on their own legal basis (contract / legitimate
    interest) unless the customer withdrew *service* consent on that channel;
    this setting is about marketing only.
    """

    #: ``"opt_in"``: marketing needs an explicit grant on the channel;
    #: ``"opt_out"``: marketing may go out unless consent was explicitly withdrawn.
    marketing: ConsentMode = "opt_in"


_HHMM_PROBLEM = "must be a local time HH:MM (00:00-23:59)"


def _hhmm(text: str) -> str:
    """``"08:00"`` as it is; a ValueError unless exactly ``HH:MM`` within a day."""
    hours, sep, minutes = text.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and (hours + minutes).isdigit()):
        raise ValueError(_HHMM_PROBLEM)
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(_HHMM_PROBLEM)
    return text


#: A local wall time ``"HH:MM"``, kept as written (``dt.time`` from :meth:`dt.time.fromisoformat`).
LocalTime = Annotated[
    str,
    Strict(),
    AfterValidator(_hhmm),
    WithJsonSchema({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}),
]


@dataclass(frozen=True, config=_CONFIG)
class QuietHoursPolicy:
    """Local hours (customer's time zone) in which marketing is deferred, never sent."""

    enabled: Flag = True
    #: Start and end as local ``"HH:MM"``; start > end crosses midnight. The end is
    #: the first allowed minute (a message may go out at exactly 08:00).
    start: LocalTime = "21:00"
    end: LocalTime = "08:00"
    #: Whether service messages wait for the end of quiet hours too.
    service: Flag = False

    @model_validator(mode="after")
    def _check(self) -> QuietHoursPolicy:
        if self.start_time == self.end_time:
            raise ConfigError(
                "policy.quiet_hours.end",
                "must differ from policy.quiet_hours.start (turn them off with enabled = false)",
            )
        return self

    @functools.cached_property
    def start_time(self) -> dt.time:
        return dt.time.fromisoformat(self.start)

    @functools.cached_property
    def end_time(self) -> dt.time:
        return dt.time.fromisoformat(self.end)


@dataclass(frozen=True, config=_CONFIG)
class CapPolicy:
    """Frequency caps per local calendar day and week (domain.md §6: do not over-disturb).

    Marketing over a cap is deferred to the next period with room. Service
    messages are never held back by a cap, but (with ``count_service``) they
    use it up, so a busy service day leaves less room for marketing.
    """

    #: Messages per channel per local day / week.
    per_channel_day: Annotated[Int, Field(ge=1)] = 1
    per_channel_week: Annotated[Int, Field(ge=1)] = 3
    #: Messages over all channels per local day / week; absent: no total cap.
    total_day: Annotated[Int, Field(ge=1)] | None = None
    total_week: Annotated[Int, Field(ge=1)] | None = None
    #: Whether sent service messages count towards the caps.
    count_service: Flag = True
    #: First day of the local calendar week the weekly caps count in.
    week_starts_on: Weekday = "monday"


@dataclass(frozen=True, config=_CONFIG)
class GuardrailPolicy:
    """domain.md §4/§6: when no marketing goes out at all (service is unaffected)."""

    #: No marketing while the customer has an open complaint.
    open_complaint: Flag = True
    #: No marketing for this many days after a return / a negative review (0: off).
    return_days: Annotated[Int, Field(ge=0)] = 7
    negative_review_days: Annotated[Int, Field(ge=0)] = 7
    #: No marketing while an unreviewed risk flag is open.
    open_risk_flag: Flag = True


#: Values of ``policy.coupons.over_limit``.
CouponOverLimit = Literal["suppress", "defer"]


@dataclass(frozen=True, config=_CONFIG)
class CouponPolicy:
    """004: no "discount bombing" of silent customers -- one coupon a local day.

    A *coupon* is a marketing action of a type listed in ``order``; a customer is
    *silent* when their last purchase is ``silent_after_days`` or more before the
    decision. Candidates decided together are taken in ``order`` (the first ones
    first); a coupon over ``per_day`` is suppressed (``over_limit = "suppress"``)
    or deferred to the next local day with room (``"defer"``), ``frequency_cap``.
    """

    enabled: Flag = True
    per_day: Annotated[Int, Field(ge=1)] = 1
    #: Coupon action types, highest priority first.
    order: tuple[ActionType, ...] = (
        ActionType.WIN_BACK_ESCALATION,
        ActionType.WELCOME_BACK,
        ActionType.REPURCHASE_REMINDER,
        ActionType.BIRTHDAY,
        ActionType.ANNIVERSARY,
        ActionType.VIP_COUPON,
    )
    #: Absent: ``care.win_back.silent_days`` (filled in by :class:`Rules`).
    silent_after_days: Annotated[Int, Field(ge=0)] | None = None
    over_limit: CouponOverLimit = "suppress"

    @property
    def silent_days(self) -> int:
        return DEFAULT_SILENT_DAYS if self.silent_after_days is None else self.silent_after_days

    @functools.cached_property
    def rank(self) -> dict[str, int]:
        """Coupon action type -> its place in ``order``."""
        return {name: i for i, name in enumerate(self.order)}


@dataclass(frozen=True, config=_CONFIG)
class HoldoutShare:
    """A holdout share for one action type, overriding ``policy.holdout.share``."""

    action_type: ActionType
    share: Share


@dataclass(frozen=True, config=_CONFIG)
class HoldoutPolicy:
    """Control groups: a share of customers per action type is held out (recorded, not sent)."""

    #: Share (0..1) held out of every action type without its own entry in ``by_type``.
    share: Share = 0.0
    by_type: tuple[HoldoutShare, ...] = ()
    #: Whether service actions can be held out too (by default only marketing is).
    include_service: Flag = False

    def share_for(self, action_type: str) -> float:
        return self._shares.get(action_type, self.share)

    @functools.cached_property
    def _shares(self) -> dict[str, float]:
        return {entry.action_type: entry.share for entry in self.by_type}


@dataclass(frozen=True, config=_CONFIG)
class PolicyRules:
    """The contact policy every action passes (domain.md §6, §9; agents.policy)."""

    #: Channels tried, in order, after the action's own and the customer's preferred ones.
    fallback_channels: tuple[Channel, ...] = (Channel.EMAIL, Channel.PUSH, Channel.SMS)
    #: Contact history kept per customer for the caps: days back from the latest send,
    #: and at most this many sends (a local week needs 7 days).
    history_days: Annotated[Int, Field(ge=7)] = 8
    history_max: Annotated[Int, Field(ge=1)] = 50
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    quiet_hours: QuietHoursPolicy = field(default_factory=QuietHoursPolicy)
    caps: CapPolicy = field(default_factory=CapPolicy)
    guardrails: GuardrailPolicy = field(default_factory=GuardrailPolicy)
    holdout: HoldoutPolicy = field(default_factory=HoldoutPolicy)
    coupons: CouponPolicy = field(default_factory=CouponPolicy)

    @functools.cached_property
    def week_start(self) -> int:
        """``policy.caps.week_starts_on`` as a ``date.weekday()`` number."""
        return WEEKDAYS.index(self.caps.week_starts_on)

    @model_validator(mode="after")
    def _check(self) -> PolicyRules:
        _listed_once("policy.fallback_channels", self.fallback_channels)
        caps = self.caps
        for day, week in (("per_channel_day", "per_channel_week"), ("total_day", "total_week")):
            day_cap, week_cap = getattr(caps, day), getattr(caps, week)
            if day_cap is not None and week_cap is not None and day_cap > week_cap:
                raise ConfigError(
                    f"policy.caps.{day}", f"must be <= policy.caps.{week} ({week_cap})"
                )
        for name in ("per_channel_week", "total_week"):
            cap = getattr(caps, name)
            if cap is not None and cap > self.history_max:
                raise ConfigError(
                    f"policy.caps.{name}",
                    f"must be <= policy.history_max ({self.history_max}), or the history "
                    "forgets sends the cap needs to count",
                )
        by_type = tuple(entry.action_type for entry in self.holdout.by_type)
        _listed_once("policy.holdout.by_type", by_type, ".action_type")
        _listed_once("policy.coupons.order", self.coupons.order)
        return self


def _listed_once(key: str, items: tuple[Any, ...], suffix: str = "") -> None:
    """A ConfigError at ``key[i]`` + ``suffix`` for the second listing of any item."""
    seen: set[Any] = set()
    for i, item in enumerate(items):
        if item in seen:
            raise ConfigError(f"{key}[{i}]{suffix}", f"'{item}' is listed twice")
        seen.add(item)


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone") from None
    return name


def _iso_date(value: Any) -> Any:
    """A TOML date as it is, an ISO date string as a date; anything else is refused."""
    if type(value) is dt.date:
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("expected an ISO date (YYYY-MM-DD)")


#: An IANA time zone name (``"Europe/Berlin"``).
TimeZoneName = Annotated[Text, AfterValidator(_time_zone)]
#: A calendar date, written ``"2024-12-25"`` (or as a TOML date).
IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


@dataclass(frozen=True, config=_CONFIG)
class WorkCalendar:
    """The working-day calendar solution deadlines are counted in.

    A deadline of N working days falls at the same local wall time on the
    Nth working day after the start (opened Friday 16:00 -> Wednesday 16:00
    for N = 3), in ``timezone`` (so DST-correct).
    """

    #: IANA zone the working days are counted in.
    timezone: TimeZoneName = "UTC"
    #: ISO weekdays that are working days (1 = Monday ... 7 = Sunday).
    working_weekdays: tuple[Annotated[Int, Field(ge=1, le=7)], ...] = (1, 2, 3, 4, 5)
    #: Non-working dates (ISO, ``"2024-12-25"``), skipped like weekends.
    holidays: tuple[IsoDate, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> WorkCalendar:
        key = "complaints.calendar.working_weekdays"
        if not self.working_weekdays:
            raise ConfigError(key, "needs at least one weekday")
        if len(set(self.working_weekdays)) != len(self.working_weekdays):
            raise ConfigError(key, "has a weekday twice")
        return self

    @functools.cached_property
    def holiday_dates(self) -> frozenset[dt.date]:
        return frozenset(self.holidays)


@dataclass(frozen=True, config=_CONFIG)
class FirstResponseRule:
    """First response (acknowledgment, resolution or closing) within hours of opening."""

    hours: Annotated[Number, Field(gt=0)] = 2.0
    #: Complaints from these channels must be answered faster (social media).
    fast_channels: tuple[ComplaintChannel, ...] = (ComplaintChannel.SOCIAL,)
    fast_hours: Annotated[Number, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> FirstResponseRule:
        if self.fast_hours > self.hours:
            raise ConfigError(
                "complaints.first_response.fast_hours",
                f"must be <= complaints.first_response.hours ({self.hours})",
            )
        return self


@dataclass(frozen=True, config=_CONFIG)
class SolutionRule:
    """A solution (resolution or closing) for complex complaints within working days.

    Complex: severity in ``complex_severities`` or type in ``complex_types``.
    """

    working_days: Annotated[Int, Field(ge=1)] = 3
    complex_severities: tuple[Severity, ...] = (Severity.HIGH, Severity.CRITICAL)
    complex_types: tuple[ComplaintType, ...] = ()


@dataclass(frozen=True, config=_CONFIG)
class SatisfactionFollowUpRule:
    """A satisfaction follow-up some hours after the resolution."""

    enabled: Flag = True
    after_hours: Annotated[Number, Field(gt=0)] = 24.0
    template_id: Text = "complaint_satisfaction_follow_up"
    #: Survey code sent in the ``survey`` parameter.
    survey: Text = "complaint_satisfaction"
    #: The customer's first preferred channel, else ``channel``.
    use_preferred_channel: Flag = True
    channel: Channel = Channel.EMAIL
    #: The follow-up's ``expires_at``: this long after it is due.
    expires_after_hours: Annotated[Number, Field(ge=1)] = 48.0


@dataclass(frozen=True, config=_CONFIG)
class EscalationRule:
    """Escalations for service staff (missed deadlines, reopened, still unhappy)."""

    #: ``phone``: a supervisor calls the customer back.
    channel: Channel = Channel.PHONE
    template_id: Text = "complaint_escalation"


@dataclass(frozen=True, config=_CONFIG)
class SuggestionRule:
    """A resolution suggestion code for a complaint type (and optionally severities)."""

    complaint_type: ComplaintType
    suggestion: Text
    #: Only for these severities; empty: any severity.
    severities: tuple[Severity, ...] = ()


_DEFAULT_SUGGESTIONS = (
    SuggestionRule(
        ComplaintType.PRODUCT,
        "refund_with_20pct_coupon",
        severities=(Severity.HIGH, Severity.CRITICAL),
    ),
    SuggestionRule(ComplaintType.PRODUCT, "exchange_with_extended_warranty"),
    SuggestionRule(ComplaintType.SERVICE, "coupon_and_dedicated_agent"),
    SuggestionRule(ComplaintType.LOGISTICS, "reship_and_late_delivery_compensation"),
)


@dataclass(frozen=True, config=_CONFIG)
class ComplaintRules:
    """domain.md §5: complaint SLAs, follow-up, escalation (see docs/complaints.md)."""

    #: Off: complaints are still recorded (for ``open_complaints``), but no timers,
    #: actions or SLA counts.
    enabled: Flag = True
    #: Open complaints (not resolved or closed) tracked per customer; past it a new
    #: complaint is counted but not tracked.
    max_open: Annotated[Int, Field(ge=1)] = 10
    #: Resolved or closed complaints kept per customer (oldest closed dropped first).
    keep_settled: Annotated[Int, Field(ge=0)] = 5
    first_response: FirstResponseRule = field(default_factory=FirstResponseRule)
    solution: SolutionRule = field(default_factory=SolutionRule)
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    follow_up: SatisfactionFollowUpRule = field(default_factory=SatisfactionFollowUpRule)
    escalation: EscalationRule = field(default_factory=EscalationRule)
    #: Checked in order; the first row matching type (and severity) gives the code.
    suggestions: tuple[SuggestionRule, ...] = _DEFAULT_SUGGESTIONS
    #: The code when no row matches (or the type is not known).
    default_suggestion: Text = "supervisor_review"


@dataclass(frozen=True, config=_CONFIG)
class FlagRules:
    """domain.md §4 (003; 002 §6.1): anomaly flags on one customer's behaviour.

    Windows are on event time and inclusive: "within 30 days" means the first
    and the last event are at most 30 days apart. See ``docs/flags.md``.
    """

    enabled: Flag = True
    #: Kinds (``repeated_returns``, ``cancellations``, ``negative_review``,
    #: ``complaints``, ``suspicious_reviews``) that are never raised.
    disabled_kinds: tuple[Text, ...] = ()
    #: Repeated returns: at least this many ``order.returned`` within the window.
    returns_min: Annotated[Int, Field(ge=1)] = 3
    returns_window_days: Annotated[Int, Field(ge=1)] = 30
    #: Cancellations: a run of this many consecutive orders (by order time) all
    #: cancelled, or at least ``cancellations_ratio`` of at least
    #: ``cancellations_ratio_min_orders`` orders, within the window.
    cancellations_streak: Annotated[Int, Field(ge=1)] = 3
    cancellations_ratio: Annotated[Number, Field(gt=0, le=1)] = 0.5
    cancellations_ratio_min_orders: Annotated[Int, Field(ge=1)] = 4
    cancellations_window_days: Annotated[Int, Field(ge=1)] = 30
    #: Many complaints: more than this many ``complaint.opened`` within the window.
    complaints_more_than: Annotated[Int, Field(ge=0)] = 3
    complaints_window_days: Annotated[Int, Field(ge=1)] = 30
    #: Suspicious reviews: at least ``suspicious_min_reviews`` reviews rated
    #: ``suspicious_max_rating`` or lower, within the window (hours), about at
    #: least ``suspicious_min_orders`` distinct orders.
    suspicious_min_reviews: Annotated[Int, Field(ge=1)] = 3
    suspicious_max_rating: Annotated[Int, Field(ge=1, le=5)] = 1
    suspicious_window_hours: Annotated[Int, Field(ge=1)] = 24
    suspicious_min_orders: Annotated[Int, Field(ge=1)] = 2
    #: Evidence events remembered per signal (returns, orders, complaints, low reviews).
    evidence_keep: Annotated[Int, Field(ge=1)] = 20
    #: Reviewed flags remembered per customer beyond the open ones and the
    #: newest confirmed flag of each kind (which are always kept).
    reviewed_keep: Annotated[Int, Field(ge=0)] = 5

    @model_validator(mode="after")
    def _check(self) -> FlagRules:
        from schemas.flags import CUSTOMER_KINDS

        known = sorted(kind.value for kind in CUSTOMER_KINDS)
        for i, kind in enumerate(self.disabled_kinds):
            if kind not in known:
                raise ConfigError(
                    f"flags.disabled_kinds[{i}]",
                    f"unknown kind '{kind}' (known: {', '.join(known)})",
                )
        needs = {
            "flags.returns_min": self.returns_min,
            "flags.cancellations_streak": self.cancellations_streak,
            "flags.cancellations_ratio_min_orders": self.cancellations_ratio_min_orders,
            "flags.complaints_more_than + 1": self.complaints_more_than + 1,
            "flags.suspicious_min_reviews": self.suspicious_min_reviews,
        }
        for key, need in needs.items():
            if self.evidence_keep < need:
                raise ConfigError(
                    "flags.evidence_keep",
                    f"must be >= {need} ({key}): the evidence kept must hold a whole window",
                )
        return self


# -- cross-customer aggregates (streams.aggregates_agent) ---------------------------------

#: Aggregation dimensions a late delivery can be counted by.
DelayDimension = Literal["carrier", "region", "carrier+region"]


@dataclass(frozen=True, config=_CONFIG)
class LogisticsDelayRule:
    """domain.md §3 (004 §1): many late deliveries of one carrier or region ->
    an apology with compensation to each affected customer, once."""

    enabled: Flag = True
    #: A delivery is late when it arrives more than this many hours after ``promised_at``.
    grace_hours: Annotated[Number, Field(ge=0)] = 0.0
    #: Rolling window (event time, whole hours) in which late deliveries are counted.
    window_hours: Annotated[Int, Field(ge=1)] = 24
    #: Late deliveries of one key within the window that make it a mass delay.
    threshold: Annotated[Int, Field(ge=1)] = 20
    #: What late deliveries are grouped by: ``carrier``, ``region``, ``carrier+region``.
    dimensions: tuple[DelayDimension, ...] = ("carrier", "region")
    #: Late deliveries remembered per key (to apologise to when the threshold is reached).
    max_affected: Annotated[Int, Field(ge=1)] = 500
    template_id: Text = "logistics_delay_apology"
    #: The channel of every apology (the customer's preferred channel is not known here).
    channel: Channel = Channel.EMAIL
    compensation: Text = "late_delivery_coupon"
    coupon_kind: Text = "late_delivery"

    @model_validator(mode="after")
    def _check(self) -> LogisticsDelayRule:
        key = "aggregates.logistics_delay"
        if not self.dimensions:
            raise ConfigError(f"{key}.dimensions", "needs at least one dimension")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ConfigError(f"{key}.dimensions", "has a dimension twice")
        if self.max_affected < self.threshold:
            raise ConfigError(
                f"{key}.max_affected", f"must be >= {key}.threshold ({self.threshold})"
            )
        return self


@dataclass(frozen=True, config=_CONFIG)
class ComplaintSurgeRule:
    """domain.md §5 (004 §2): a complaint type growing > 50 % week over week."""

    enabled: Flag = True
    #: Week-over-week growth above which a type surges (0.5 = ratio above 1.5): yellow.
    growth: Annotated[Number, Field(ge=0)] = 0.5
    #: Growth above which a surge is red (1.0 = the count doubled).
    red_growth: Annotated[Number, Field(ge=0)] = 1.0
    #: Complaints of the type in the last 7 days needed for any surge (and for a
    #: ratio at all when the 7 days before had none).
    min_count: Annotated[Int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _check(self) -> ComplaintSurgeRule:
        if self.red_growth < self.growth:
            raise ConfigError(
                "aggregates.complaint_surge.red_growth",
                f"must be >= aggregates.complaint_surge.growth ({self.growth})",
            )
        return self


@dataclass(frozen=True, config=_CONFIG)
class AggregateRules:
    """Rules that count events across many customers (``streams.aggregates_agent``)."""

    logistics_delay: LogisticsDelayRule = field(default_factory=LogisticsDelayRule)
    complaint_surge: ComplaintSurgeRule = field(default_factory=ComplaintSurgeRule)
    #: Recent signal ids remembered per aggregation key, to drop re-sent signals.
    dedupe_window: Annotated[Int, Field(ge=1)] = 256


# -- messaging outcomes and attribution (agents.outcomes, docs/outcomes.md) ----------------


@dataclass(frozen=True, config=_CONFIG)
class AttributionWindow:
    """The attribution window of one action type, overriding ``outcomes.attribution_days``."""

    action_type: ActionType
    days: Annotated[Int, Field(ge=1)]


#: Win-back and welcome-back count a purchase within 30 days (domain.md §3: the
#: silence and churn cycles are 30 days); every other action type, within a week.
_DEFAULT_WINDOWS = (
    AttributionWindow(ActionType.WELCOME_BACK, 30),
    AttributionWindow(ActionType.WIN_BACK, 30),
    AttributionWindow(ActionType.WIN_BACK_ESCALATION, 30),
)


@dataclass(frozen=True, config=_CONFIG)
class OutcomeRules:
    """domain.md §6 ("measure reach, open, conversion ...; switch channel when reach is
    low"): what messaging outcomes do to the contact policy, and which purchase converts
    which action. See ``docs/outcomes.md``."""

    enabled: Flag = True
    #: Bounced or failed sends in a row on one channel that make it unreachable.
    bounces: Annotated[Int, Field(ge=1)] = 3
    #: Deliveries in a row without an open or click that make a channel in
    #: ``unopened_channels`` unreachable (0: never).
    unopened_deliveries: Annotated[Int, Field(ge=0)] = 10
    #: Channels whose messaging services report opens (elsewhere no open means nothing).
    unopened_channels: tuple[Channel, ...] = (Channel.EMAIL, Channel.PUSH)
    #: Days a channel stays unreachable for the customer once marked.
    unreachable_days: Annotated[Int, Field(ge=1)] = 30
    #: Days after an action (sent or held out) within which a purchase converts it,
    #: for action types without their own entry in ``attribution_by_type``.
    attribution_days: Annotated[Int, Field(ge=1)] = 7
    #: Per action type; a list given in the rules file replaces this default one.
    attribution_by_type: tuple[AttributionWindow, ...] = _DEFAULT_WINDOWS
    #: Actions (sent or held out) kept per customer for attribution, newest kept.
    keep_actions: Annotated[Int, Field(ge=1)] = 20
    #: Converted orders kept per customer to attribute their later refunds, newest kept.
    keep_orders: Annotated[Int, Field(ge=1)] = 10

    def window_days(self, action_type: str) -> int:
        return self._windows.get(action_type, self.attribution_days)

    @functools.cached_property
    def _windows(self) -> dict[str, int]:
        return {str(w.action_type): w.days for w in self.attribution_by_type}

    @model_validator(mode="after")
    def _check(self) -> OutcomeRules:
        _listed_once("outcomes.unopened_channels", self.unopened_channels)
        types = tuple(w.action_type for w in self.attribution_by_type)
        _listed_once("outcomes.attribution_by_type", types, ".action_type")
        return self


@dataclass(frozen=True, config=_CONFIG)
class Rules:
    """The rules file: one table per concern, every key optional (domain.md's defaults)."""

    welcome: WelcomeRule = field(default_factory=WelcomeRule)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    rfm: RfmRules = field(default_factory=RfmRules)
    grade: GradeRules = field(default_factory=GradeRules)
    counters: CounterRules = field(default_factory=CounterRules)
    tags: TagRules = field(default_factory=TagRules)
    model: ModelRules = field(default_factory=ModelRules)
    state: StateRules = field(default_factory=StateRules)
    care: CareRules = field(default_factory=CareRules)
    policy: PolicyRules = field(default_factory=PolicyRules)
    complaints: ComplaintRules = field(default_factory=ComplaintRules)
    flags: FlagRules = field(default_factory=FlagRules)
    aggregates: AggregateRules = field(default_factory=AggregateRules)
    outcomes: OutcomeRules = field(default_factory=OutcomeRules)

    @model_validator(mode="after")
    def _check(self) -> Rules:
        """The checks across tables (each table checks its own keys)."""
        care, rfm = self.care, self.rfm
        groups = {g.name for g in rfm.groups} | {rfm.fallback_group}
        hint = f"unknown RFM group (known: {', '.join(sorted(groups))}; or disable the rule)"
        if care.vip.enabled and care.vip.group not in groups:
            raise ConfigError("care.vip.group", hint)
        if care.tier_nudge.enabled:
            for i, name in enumerate(care.tier_nudge.ladder):
                if name not in groups:
                    raise ConfigError(f"care.tier_nudge.ladder[{i}]", hint)
        known = self.feature_names()
        for i, rule in enumerate(self.tags.rules):
            if rule.feature not in known:
                raise ConfigError(
                    f"tags.rules[{i}].feature",
                    f"unknown feature (known: {', '.join(sorted(known))})",
                )
        # A silent customer is one definition: policy.coupons.silent_after_days,
        # when absent, is care.win_back.silent_days.
        coupons = self.policy.coupons
        if coupons.silent_after_days is None:
            days = care.win_back.silent_days
            policy = dataclasses.replace(
                self.policy, coupons=dataclasses.replace(coupons, silent_after_days=days)
            )
            object.__setattr__(self, "policy", policy)
        return self

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
        """The rules a parsed TOML file gives; a :class:`ConfigError` names the first
        wrong key."""
        try:
            return _ADAPTER.validate_python(raw)
        except ValidationError as exc:
            raise _config_error(exc) from None

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


_ADAPTER: TypeAdapter[Rules] = TypeAdapter(Rules)


# -- pydantic's errors as one line naming the key ---------------------------------------

_PROBLEMS = {
    "missing": "is required",
    "missing_argument": "is required",
    "dataclass_type": "expected a table",
    "dataclass_exact_type": "expected a table",
    "dict_type": "expected a table",
    "bool_type": "expected true or false",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a non-empty string",
    "string_too_short": "expected a non-empty string",
    "tuple_type": "expected an array",
    "list_type": "expected an array",
}
_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden")
_OUT_OF_RANGE = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")
_OPERATORS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _config_error(exc: ValidationError) -> ConfigError:
    """The first of pydantic's errors as a :class:`ConfigError`: the dotted key
    (``rfm.groups[0].f_min``) and a one-line reason."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind, ctx = error["type"], error.get("ctx", {})
    try:
        problem = _problem(kind, ctx, loc, error["input"])
    except (KeyError, TypeError, ValueError):  # a shape not foreseen: pydantic's first line
        problem = None
    problem = problem or _PROBLEMS.get(kind) or error["msg"].splitlines()[0]
    return ConfigError(key or "<root>", problem)


def _problem(kind: str, ctx: dict[str, Any], loc: tuple[int | str, ...], value: Any) -> str | None:
    if kind in _UNKNOWN_KEY:
        table = _bare(_hint_at(loc[:-1]))
        known = sorted(f.name for f in dataclasses.fields(table))
        return f"unknown key (known here: {', '.join(known)})"
    if kind in _OUT_OF_RANGE:
        return _range_problem(_hint_at(loc), ctx)
    if kind == "enum":
        enum = _bare(_hint_at(loc))
        words = "".join(f" {c}" if c.isupper() else c for c in enum.__name__).strip().lower()
        values = ", ".join(member.value for member in enum)
        return f"unknown {words} '{value}' (must be one of {values})"
    if kind == "literal_error":
        return f"must be one of {', '.join(get_args(_bare(_hint_at(loc))))}"
    if kind == "value_error":
        return str(ctx["error"])
    return None


def _hint_at(loc: tuple[int | str, ...]) -> Any:
    """The annotation (with its bounds) of the value at ``loc`` in a rules mapping."""
    hint: Any = Rules
    for part in loc:
        hint = _bare(hint)
        if isinstance(part, int):
            (hint, _) = get_args(hint)  # tuple[X, ...]
        else:
            hint = get_type_hints(hint, include_extras=True)[part]
    return hint


def _bare(hint: Any) -> Any:
    """X of ``X | None`` and of ``Annotated[X, ...]``."""
    if get_origin(hint) in (Union, UnionType):
        (hint,) = (a for a in get_args(hint) if a is not type(None))
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


def _range_problem(hint: Any, ctx: dict[str, Any]) -> str:
    """``must be >= 1``; with bounds on both sides the whole range: ``must be between 0 and 1``."""
    if get_origin(hint) in (Union, UnionType):
        (hint,) = (a for a in get_args(hint) if a is not type(None))
    bounds: dict[str, Any] = {}
    for meta in get_args(hint)[1:] if get_origin(hint) is Annotated else ():
        for constraint in getattr(meta, "metadata", [meta]):
            for name in _OPERATORS:
                if getattr(constraint, name, None) is not None:
                    bounds[name] = getattr(constraint, name)
    if "le" in bounds and "ge" in bounds:
        return f"must be between {bounds['ge']} and {bounds['le']}"
    if "le" in bounds and "gt" in bounds:
        return f"must be above {bounds['gt']} and at most {bounds['le']}"
    ((op, limit),) = ctx.items()
    return f"must be {_OPERATORS[op]} {bounds.get(op, limit)}"


# -- the rules file's JSON Schema ---------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The rules file's JSON Schema (exported as ``schemas/json/rules.v1.schema.json``,
    so an editor validates a rules file written as TOML), from the same models
    :meth:`Rules.from_mapping` validates with: tables, keys, types, bounds and
    choices; unknown keys are refused. The checks across keys (the model
    validators, e.g. churned after dormant) stay in the loader."""
    return _ADAPTER.json_schema()
