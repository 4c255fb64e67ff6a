"""Domain rules: every threshold, window and template, with domain.md's defaults.

The rules live in one TOML file (``CRM_RULES_FILE``); anything it leaves out
keeps the default below. A wrong file fails at start-up with a
:class:`~schemas.errors.ConfigError` naming the key, e.g.
``configuration error at 'lifecycle.active_window_days': must be >= 1``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.actions import ActionType
from schemas.base import Channel
from schemas.complaints import ComplaintChannel, ComplaintType, Severity
from schemas.errors import ConfigError


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

    #: At most this many applied events per customer are remembered to recognise
    #: repeats (agents.seen; those within CRM_ALLOWED_LATENESS of the stream time).
    #: Past it the oldest are forgotten, and events of that customer dated before
    #: them are refused (``too_late``) rather than risk applying one twice.
    dedupe_window: int = field(default=512, metadata=_min(1))


# -- care triggers and timers (domain.md §3) -------------------------------------------


@dataclass(frozen=True)
class FollowUpRule:
    """Purchase -> a non-sales follow-up about the experience, 24 h later (002 §2.1)."""

    enabled: bool = True
    delay_hours: float = field(default=24.0, metadata=_min(0))
    template_id: str = "purchase_follow_up"
    #: Orders placed within this many minutes of the first order of a pending follow-up
    #: join it: one follow-up, ``delay_hours`` after that first order, for all of them
    #: (at most ``care.recent_orders`` orders each; 0: one follow-up per order).
    coalesce_minutes: float = field(default=60.0, metadata=_min(0))


@dataclass(frozen=True)
class CategoryCare:
    """Delivery care for one category: which guide, and whether a repurchase coupon goes too."""

    category: str
    guide: str
    template_id: str
    coupon: bool = False


_DEFAULT_CATEGORY_CARE = (
    CategoryCare("appliances", "installation_and_maintenance", "care_appliances"),
    CategoryCare("cosmetics", "usage_cycle", "care_cosmetics", coupon=True),
    CategoryCare("fragile", "handling_tips", "care_fragile"),
)


@dataclass(frozen=True)
class DeliveryCareRule:
    """Delivery -> care by category (000; 004 §1)."""

    enabled: bool = True
    categories: tuple[CategoryCare, ...] = _DEFAULT_CATEGORY_CARE


@dataclass(frozen=True)
class AbandonmentRule:
    """A view or cart add with no order within N hours -> recommend that item (002 §2.2)."""

    enabled: bool = True
    view_delay_hours: float = field(default=24.0, metadata=_min(0))
    cart_delay_hours: float = field(default=4.0, metadata=_min(0))
    template_id: str = "browse_recommendation"
    expires_after_hours: float = field(default=48.0, metadata=_min(1))


@dataclass(frozen=True)
class CategoryCycle:
    category: str
    days: int = field(default=30, metadata=_min(1))


@dataclass(frozen=True)
class RepurchaseRule:
    """The category's repurchase cycle elapsed since the last purchase -> reminder (000)."""

    enabled: bool = True
    default_cycle_days: int = field(default=30, metadata=_min(1))
    cycles: tuple[CategoryCycle, ...] = (
        CategoryCycle("cosmetics", 30),
        CategoryCycle("groceries", 14),
    )
    template_id: str = "repurchase_reminder"
    coupon_kind: str = "repurchase_coupon"
    expires_after_days: int = field(default=7, metadata=_min(1))


@dataclass(frozen=True)
class VipRule:
    """High-value customers: monthly exclusive coupon, quarterly follow-up (002 §5.1, 004 §1)."""

    enabled: bool = True
    group: str = "high_value"
    coupon_every_days: int = field(default=30, metadata=_min(1))
    follow_up_every_days: int = field(default=90, metadata=_min(1))
    coupon_template_id: str = "vip_monthly_coupon"
    follow_up_template_id: str = "vip_quarterly_follow_up"


@dataclass(frozen=True)
class TierNudgeRule:
    """One order short of the next RFM group -> "one more order" nudge (002 §2.2).

    ``ladder`` lists RFM groups from lower to higher; a customer in a rung (or
    in none) is nudged when one more order of their average value would put them
    in the next rung. At most once per ``min_interval_days``.
    """

    enabled: bool = True
    ladder: tuple[str, ...] = ("potential", "high_value")
    min_interval_days: int = field(default=30, metadata=_min(1))
    template_id: str = "tier_nudge"


@dataclass(frozen=True)
class GreetingRule:
    """Birthday and first-order anniversary greetings at a local hour (000, 004 §1)."""

    birthday: bool = True
    anniversary: bool = True
    #: Local hour (customer's timezone) the greeting is due at.
    local_hour: int = field(default=10, metadata=_min(0))
    birthday_template_id: str = "birthday_greeting"
    anniversary_template_id: str = "order_anniversary"
    coupon_kind: str = "greeting_coupon"


#: Days without a purchase that make a customer silent (domain.md §3, 004 §4).
DEFAULT_SILENT_DAYS = 30


@dataclass(frozen=True)
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

    enabled: bool = True
    silent_days: int = field(default=DEFAULT_SILENT_DAYS, metadata=_min(1))
    complaints_max: int = field(default=3, metadata=_min(0))
    complaints_window_days: int = field(default=30, metadata=_min(1))
    on_negative_review: bool = True
    check_after_days: int = field(default=7, metadata=_min(1))
    strategies: tuple[str, ...] = ("retention_coupon", "exclusive_offer", "personal_call")
    welcome_back_template_id: str = "welcome_back_coupon"
    win_back_template_id: str = "win_back_empathy"
    escalation_template_id: str = "win_back_next_strategy"
    churned_survey: bool = True
    survey_template_id: str = "churn_reason_survey"
    #: Strategies that are a task for service staff (priority service), not a message.
    service_strategies: tuple[str, ...] = ("personal_call",)
    call_channel: str = Channel.PHONE.value
    call_template_id: str = "win_back_personal_call"
    guardrail_retries: int = field(default=1, metadata=_min(0))


@dataclass(frozen=True)
class CareRules:
    """Care and retention triggers (domain.md §3) and the durable timers behind them."""

    #: All care triggers at once (the welcome rule has its own switch).
    enabled: bool = True
    follow_up: FollowUpRule = field(default_factory=FollowUpRule)
    delivery: DeliveryCareRule = field(default_factory=DeliveryCareRule)
    abandonment: AbandonmentRule = field(default_factory=AbandonmentRule)
    repurchase: RepurchaseRule = field(default_factory=RepurchaseRule)
    vip: VipRule = field(default_factory=VipRule)
    tier_nudge: TierNudgeRule = field(default_factory=TierNudgeRule)
    greetings: GreetingRule = field(default_factory=GreetingRule)
    win_back: WinBackRule = field(default_factory=WinBackRule)
    #: Channel for care actions when the customer states no preference.
    default_channel: str = Channel.EMAIL.value
    #: Marketing actions expire this long after their logical time unless a rule says otherwise.
    expires_after_days: int = field(default=14, metadata=_min(1))
    #: Timers one customer may hold at once (keeps state bounded); more are dropped and counted.
    max_timers: int = field(default=32, metadata=_min(4))
    #: Orders remembered per customer for delivery care and follow-ups.
    recent_orders: int = field(default=8, metadata=_min(1))
    #: Publish stage changes reached by time alone (dormant, churned) when they happen,
    #: from a timer, instead of when the customer's next event arrives.
    timed_stage_changes: bool = True


#: Values of ``policy.consent.marketing``.
CONSENT_MODES = ("opt_in", "opt_out")
#: Values of ``policy.caps.week_starts_on`` (index = ``date.weekday()``).
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class ConsentPolicy:
    """domain.md §9: consent per purpose and channel (see docs/contact-policy.md).

    Service messages go out on their own legal basis (contract / legitimate
    interest) unless the customer withdrew *service* consent on that channel;
    this setting is about marketing only.
    """

    #: ``"opt_in"``: marketing needs an explicit grant on the channel;
    #: ``"opt_out"``: marketing may go out unless consent was explicitly withdrawn.
    marketing: str = "opt_in"


@dataclass(frozen=True)
class QuietHoursPolicy:
    """Local hours (customer's time zone) in which marketing is deferred, never sent."""

    enabled: bool = True
    #: Start and end as local ``"HH:MM"``; start > end crosses midnight. The end is
    #: the first allowed minute (a message may go out at exactly 08:00).
    start: str = "21:00"
    end: str = "08:00"
    #: Whether service messages wait for the end of quiet hours too.
    service: bool = False

    @functools.cached_property
    def start_time(self) -> dt.time:
        return _hhmm_checked(self.start)

    @functools.cached_property
    def end_time(self) -> dt.time:
        return _hhmm_checked(self.end)


@dataclass(frozen=True)
class CapPolicy:
    """Frequency caps per local calendar day and week (domain.md §6: do not over-disturb).

    Marketing over a cap is deferred to the next period with room. Service
    messages are never held back by a cap, but (with ``count_service``) they
    use it up, so a busy service day leaves less room for marketing.
    """

    #: Messages per channel per local day / week.
    per_channel_day: int = field(default=1, metadata=_min(1))
    per_channel_week: int = field(default=3, metadata=_min(1))
    #: Messages over all channels per local day / week; absent: no total cap.
    total_day: int | None = field(default=None, metadata=_min(1))
    total_week: int | None = field(default=None, metadata=_min(1))
    #: Whether sent service messages count towards the caps.
    count_service: bool = True
    #: First day of the local calendar week the weekly caps count in.
    week_starts_on: str = "monday"


@dataclass(frozen=True)
class GuardrailPolicy:
    """domain.md §4/§6: when no marketing goes out at all (service is unaffected)."""

    #: No marketing while the customer has an open complaint.
    open_complaint: bool = True
    #: No marketing for this many days after a return / a negative review (0: off).
    return_days: int = field(default=7, metadata=_min(0))
    negative_review_days: int = field(default=7, metadata=_min(0))
    #: No marketing while an unreviewed risk flag is open.
    open_risk_flag: bool = True


#: Values of ``policy.coupons.over_limit``.
COUPON_OVER_LIMIT = ("suppress", "defer")


@dataclass(frozen=True)
class CouponPolicy:
    """004: no "discount bombing" of silent customers -- one coupon a local day.

    A *coupon* is a marketing action of a type listed in ``order``; a customer is
    *silent* when their last purchase is ``silent_after_days`` or more before the
    decision. Candidates decided together are taken in ``order`` (the first ones
    first); a coupon over ``per_day`` is suppressed (``over_limit = "suppress"``)
    or deferred to the next local day with room (``"defer"``), ``frequency_cap``.
    """

    enabled: bool = True
    per_day: int = field(default=1, metadata=_min(1))
    #: Coupon action types, highest priority first.
    order: tuple[str, ...] = (
        ActionType.WIN_BACK_ESCALATION.value,
        ActionType.WELCOME_BACK.value,
        ActionType.REPURCHASE_REMINDER.value,
        ActionType.BIRTHDAY.value,
        ActionType.ANNIVERSARY.value,
        ActionType.VIP_COUPON.value,
    )
    #: Absent: ``care.win_back.silent_days`` (filled in by :class:`Rules`).
    silent_after_days: int | None = field(default=None, metadata=_min(0))
    over_limit: str = "suppress"

    @property
    def silent_days(self) -> int:
        return DEFAULT_SILENT_DAYS if self.silent_after_days is None else self.silent_after_days

    @functools.cached_property
    def rank(self) -> dict[str, int]:
        """Coupon action type -> its place in ``order``."""
        return {name: i for i, name in enumerate(self.order)}


@dataclass(frozen=True)
class HoldoutShare:
    """A holdout share for one action type, overriding ``policy.holdout.share``."""

    action_type: str
    share: float = field(metadata=_min(0))


@dataclass(frozen=True)
class HoldoutPolicy:
    """Control groups: a share of customers per action type is held out (recorded, not sent)."""

    #: Share (0..1) held out of every action type without its own entry in ``by_type``.
    share: float = field(default=0.0, metadata=_min(0))
    by_type: tuple[HoldoutShare, ...] = ()
    #: Whether service actions can be held out too (by default only marketing is).
    include_service: bool = False

    def share_for(self, action_type: str) -> float:
        return self._shares.get(action_type, self.share)

    @functools.cached_property
    def _shares(self) -> dict[str, float]:
        return {entry.action_type: entry.share for entry in self.by_type}


@dataclass(frozen=True)
class PolicyRules:
    """The contact policy every action passes (domain.md §6, §9; agents.policy)."""

    #: Channels tried, in order, after the action's own and the customer's preferred ones.
    fallback_channels: tuple[str, ...] = (
        Channel.EMAIL.value,
        Channel.PUSH.value,
        Channel.SMS.value,
    )
    #: Contact history kept per customer for the caps: days back from the latest send,
    #: and at most this many sends (a local week needs 7 days).
    history_days: int = field(default=8, metadata=_min(7))
    history_max: int = field(default=50, metadata=_min(1))
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

    def check(self) -> None:
        """Cross-field checks; raise :class:`ConfigError` naming the key."""
        channels = {c.value for c in Channel}
        if self.consent.marketing not in CONSENT_MODES:
            raise ConfigError(
                "policy.consent.marketing", f"must be one of {', '.join(CONSENT_MODES)}"
            )
        seen: set[str] = set()
        for i, name in enumerate(self.fallback_channels):
            key = f"policy.fallback_channels[{i}]"
            if name not in channels:
                raise ConfigError(
                    key, f"unknown channel '{name}' (known: {', '.join(sorted(channels))})"
                )
            if name in seen:
                raise ConfigError(key, f"channel '{name}' is listed twice")
            seen.add(name)
        quiet = self.quiet_hours
        for name in ("start", "end"):
            if _hhmm(getattr(quiet, name)) is None:
                raise ConfigError(
                    f"policy.quiet_hours.{name}", "must be a local time HH:MM (00:00-23:59)"
                )
        if quiet.start_time == quiet.end_time:
            raise ConfigError(
                "policy.quiet_hours.end",
                "must differ from policy.quiet_hours.start (turn them off with enabled = false)",
            )
        caps = self.caps
        if caps.week_starts_on not in WEEKDAYS:
            raise ConfigError("policy.caps.week_starts_on", f"must be one of {', '.join(WEEKDAYS)}")
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
        holdout = self.holdout
        if holdout.share > 1:
            raise ConfigError("policy.holdout.share", "must be between 0 and 1")
        types = {t.value for t in ActionType}
        named: set[str] = set()
        for i, entry in enumerate(holdout.by_type):
            key = f"policy.holdout.by_type[{i}]"
            if entry.action_type not in types:
                raise ConfigError(
                    f"{key}.action_type", f"unknown action type '{entry.action_type}'"
                )
            if entry.action_type in named:
                raise ConfigError(f"{key}.action_type", f"'{entry.action_type}' is listed twice")
            named.add(entry.action_type)
            if entry.share > 1:
                raise ConfigError(f"{key}.share", "must be between 0 and 1")
        coupons = self.coupons
        if coupons.over_limit not in COUPON_OVER_LIMIT:
            raise ConfigError(
                "policy.coupons.over_limit", f"must be one of {', '.join(COUPON_OVER_LIMIT)}"
            )
        listed: set[str] = set()
        for i, name in enumerate(coupons.order):
            key = f"policy.coupons.order[{i}]"
            if name not in types:
                raise ConfigError(key, f"unknown action type '{name}'")
            if name in listed:
                raise ConfigError(key, f"'{name}' is listed twice")
            listed.add(name)


def _hhmm(text: str) -> dt.time | None:
    """``"08:00"`` -> 08:00; None unless exactly ``HH:MM`` within a day."""
    hours, sep, minutes = text.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and (hours + minutes).isdigit()):
        return None
    h, m = int(hours), int(minutes)
    return dt.time(h, m) if h < 24 and m < 60 else None


def _hhmm_checked(text: str) -> dt.time:
    parsed = _hhmm(text)
    if parsed is None:  # PolicyRules.check names the key first; this is for direct use
        raise ConfigError("policy.quiet_hours", f"not a local time HH:MM: {text!r}")
    return parsed


@dataclass(frozen=True)
class WorkCalendar:
    """The working-day calendar solution deadlines are counted in.

    A deadline of N working days falls at the same local wall time on the
    Nth working day after the start (opened Friday 16:00 -> Wednesday 16:00
    for N = 3), in ``timezone`` (so DST-correct).
    """

    #: IANA zone the working days are counted in.
    timezone: str = "UTC"
    #: ISO weekdays that are working days (1 = Monday ... 7 = Sunday).
    working_weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)
    #: Non-working dates (ISO, ``"2024-12-25"``), skipped like weekends.
    holidays: tuple[str, ...] = ()

    @functools.cached_property
    def holiday_dates(self) -> frozenset[dt.date]:
        return frozenset(dt.date.fromisoformat(d) for d in self.holidays)


@dataclass(frozen=True)
class FirstResponseRule:
    """First response (acknowledgment, resolution or closing) within hours of opening."""

    hours: float = field(default=2.0, metadata=_min(0))
    #: Complaints from these channels must be answered faster (social media).
    fast_channels: tuple[str, ...] = ("social",)
    fast_hours: float = field(default=1.0, metadata=_min(0))


@dataclass(frozen=True)
class SolutionRule:
    """A solution (resolution or closing) for complex complaints within working days.

    Complex: severity in ``complex_severities`` or type in ``complex_types``.
    """

    working_days: int = field(default=3, metadata=_min(1))
    complex_severities: tuple[str, ...] = ("high", "critical")
    complex_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class SatisfactionFollowUpRule:
    """A satisfaction follow-up some hours after the resolution."""

    enabled: bool = True
    after_hours: float = field(default=24.0, metadata=_min(0))
    template_id: str = "complaint_satisfaction_follow_up"
    #: Survey code sent in the ``survey`` parameter.
    survey: str = "complaint_satisfaction"
    #: The customer's first preferred channel, else ``channel``.
    use_preferred_channel: bool = True
    channel: str = Channel.EMAIL.value
    #: The follow-up's ``expires_at``: this long after it is due.
    expires_after_hours: float = field(default=48.0, metadata=_min(1))


@dataclass(frozen=True)
class EscalationRule:
    """Escalations for service staff (missed deadlines, reopened, still unhappy)."""

    #: ``phone``: a supervisor calls the customer back.
    channel: str = Channel.PHONE.value
    template_id: str = "complaint_escalation"


@dataclass(frozen=True)
class SuggestionRule:
    """A resolution suggestion code for a complaint type (and optionally severities)."""

    complaint_type: str
    suggestion: str
    #: Only for these severities; empty: any severity.
    severities: tuple[str, ...] = ()


_DEFAULT_SUGGESTIONS = (
    SuggestionRule("product", "refund_with_20pct_coupon", severities=("high", "critical")),
    SuggestionRule("product", "exchange_with_extended_warranty"),
    SuggestionRule("service", "coupon_and_dedicated_agent"),
    SuggestionRule("logistics", "reship_and_late_delivery_compensation"),
)


@dataclass(frozen=True)
class ComplaintRules:
    """domain.md §5: complaint SLAs, follow-up, escalation (see docs/complaints.md)."""

    #: Off: complaints are still recorded (for ``open_complaints``), but no timers,
    #: actions or SLA counts.
    enabled: bool = True
    #: Open complaints (not resolved or closed) tracked per customer; past it a new
    #: complaint is counted but not tracked.
    max_open: int = field(default=10, metadata=_min(1))
    #: Resolved or closed complaints kept per customer (oldest closed dropped first).
    keep_settled: int = field(default=5, metadata=_min(0))
    first_response: FirstResponseRule = field(default_factory=FirstResponseRule)
    solution: SolutionRule = field(default_factory=SolutionRule)
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    follow_up: SatisfactionFollowUpRule = field(default_factory=SatisfactionFollowUpRule)
    escalation: EscalationRule = field(default_factory=EscalationRule)
    #: Checked in order; the first row matching type (and severity) gives the code.
    suggestions: tuple[SuggestionRule, ...] = _DEFAULT_SUGGESTIONS
    #: The code when no row matches (or the type is not known).
    default_suggestion: str = "supervisor_review"


def _check_complaints(rules: ComplaintRules) -> None:
    def one_of(key: str, values: str | tuple[str, ...], allowed: type[StrEnum]) -> None:
        known = [m.value for m in allowed]
        if isinstance(values, str):
            values, keys = (values,), [key]
        else:
            keys = [f"{key}[{i}]" for i in range(len(values))]
        for at, value in zip(keys, values, strict=True):
            if value not in known:
                raise ConfigError(at, f"must be one of {', '.join(known)}")

    first = rules.first_response
    for name in ("hours", "fast_hours"):
        if getattr(first, name) <= 0:
            raise ConfigError(f"complaints.first_response.{name}", "must be > 0")
    if first.fast_hours > first.hours:
        raise ConfigError(
            "complaints.first_response.fast_hours",
            f"must be <= complaints.first_response.hours ({first.hours})",
        )
    one_of("complaints.first_response.fast_channels", first.fast_channels, ComplaintChannel)
    solution = rules.solution
    one_of("complaints.solution.complex_severities", solution.complex_severities, Severity)
    one_of("complaints.solution.complex_types", solution.complex_types, ComplaintType)
    cal = rules.calendar
    try:
        ZoneInfo(cal.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("complaints.calendar.timezone", "unknown time zone") from None
    if not cal.working_weekdays:
        raise ConfigError("complaints.calendar.working_weekdays", "needs at least one weekday")
    for i, day in enumerate(cal.working_weekdays):
        if not 1 <= day <= 7:
            raise ConfigError(
                f"complaints.calendar.working_weekdays[{i}]", "must be 1..7 (1 = Monday)"
            )
    if len(set(cal.working_weekdays)) != len(cal.working_weekdays):
        raise ConfigError("complaints.calendar.working_weekdays", "has a weekday twice")
    for i, holiday in enumerate(cal.holidays):
        try:
            dt.date.fromisoformat(holiday)
        except ValueError:
            raise ConfigError(
                f"complaints.calendar.holidays[{i}]", "expected an ISO date (YYYY-MM-DD)"
            ) from None
    follow = rules.follow_up
    if follow.after_hours <= 0:
        raise ConfigError("complaints.follow_up.after_hours", "must be > 0")
    for key, channel in (
        ("complaints.follow_up.channel", follow.channel),
        ("complaints.escalation.channel", rules.escalation.channel),
    ):
        if channel not in {c.value for c in Channel}:
            raise ConfigError(key, f"must be one of {', '.join(c.value for c in Channel)}")
    for i, row in enumerate(rules.suggestions):
        key = f"complaints.suggestions[{i}]"
        one_of(f"{key}.complaint_type", row.complaint_type, ComplaintType)
        one_of(f"{key}.severities", row.severities, Severity)


@dataclass(frozen=True)
class FlagRules:
    """domain.md §4 (003; 002 §6.1): anomaly flags on one customer's behaviour.

    Windows are on event time and inclusive: "within 30 days" means the first
    and the last event are at most 30 days apart. See ``docs/flags.md``.
    """

    enabled: bool = True
    #: Kinds (``repeated_returns``, ``cancellations``, ``negative_review``,
    #: ``complaints``, ``suspicious_reviews``) that are never raised.
    disabled_kinds: tuple[str, ...] = ()
    #: Repeated returns: at least this many ``order.returned`` within the window.
    returns_min: int = field(default=3, metadata=_min(1))
    returns_window_days: int = field(default=30, metadata=_min(1))
    #: Cancellations: a run of this many consecutive orders (by order time) all
    #: cancelled, or at least ``cancellations_ratio`` of at least
    #: ``cancellations_ratio_min_orders`` orders, within the window.
    cancellations_streak: int = field(default=3, metadata=_min(1))
    cancellations_ratio: float = field(default=0.5, metadata=_min(0))
    cancellations_ratio_min_orders: int = field(default=4, metadata=_min(1))
    cancellations_window_days: int = field(default=30, metadata=_min(1))
    #: Many complaints: more than this many ``complaint.opened`` within the window.
    complaints_more_than: int = field(default=3, metadata=_min(0))
    complaints_window_days: int = field(default=30, metadata=_min(1))
    #: Suspicious reviews: at least ``suspicious_min_reviews`` reviews rated
    #: ``suspicious_max_rating`` or lower, within the window (hours), about at
    #: least ``suspicious_min_orders`` distinct orders.
    suspicious_min_reviews: int = field(default=3, metadata=_min(1))
    suspicious_max_rating: int = field(default=1, metadata=_min(1))
    suspicious_window_hours: int = field(default=24, metadata=_min(1))
    suspicious_min_orders: int = field(default=2, metadata=_min(1))
    #: Evidence events remembered per signal (returns, orders, complaints, low reviews).
    evidence_keep: int = field(default=20, metadata=_min(1))
    #: Reviewed flags remembered per customer beyond the open ones and the
    #: newest confirmed flag of each kind (which are always kept).
    reviewed_keep: int = field(default=5, metadata=_min(0))


def _check_flags(flags: FlagRules) -> None:
    """The flag rules' cross-field checks (called by :meth:`Rules._check`)."""
    from schemas.flags import CUSTOMER_KINDS

    known = sorted(kind.value for kind in CUSTOMER_KINDS)
    for i, kind in enumerate(flags.disabled_kinds):
        if kind not in known:
            raise ConfigError(
                f"flags.disabled_kinds[{i}]", f"unknown kind '{kind}' (known: {', '.join(known)})"
            )
    if not 0 < flags.cancellations_ratio <= 1:
        raise ConfigError("flags.cancellations_ratio", "must be above 0 and at most 1")
    if flags.suspicious_max_rating > 5:
        raise ConfigError("flags.suspicious_max_rating", "must be <= 5 (ratings are 1..5)")
    needs = {
        "flags.returns_min": flags.returns_min,
        "flags.cancellations_streak": flags.cancellations_streak,
        "flags.cancellations_ratio_min_orders": flags.cancellations_ratio_min_orders,
        "flags.complaints_more_than + 1": flags.complaints_more_than + 1,
        "flags.suspicious_min_reviews": flags.suspicious_min_reviews,
    }
    for key, need in needs.items():
        if flags.evidence_keep < need:
            raise ConfigError(
                "flags.evidence_keep",
                f"must be >= {need} ({key}): the evidence kept must hold a whole window",
            )


# -- cross-customer aggregates (streams.aggregates_agent) ---------------------------------

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
    """Rules that count events across many customers (``streams.aggregates_agent``)."""

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
    care: CareRules = field(default_factory=CareRules)
    policy: PolicyRules = field(default_factory=PolicyRules)
    complaints: ComplaintRules = field(default_factory=ComplaintRules)
    flags: FlagRules = field(default_factory=FlagRules)
    aggregates: AggregateRules = field(default_factory=AggregateRules)

    def __post_init__(self) -> None:
        # A silent customer is one definition: policy.coupons.silent_after_days,
        # when absent, is care.win_back.silent_days.
        coupons = self.policy.coupons
        if coupons.silent_after_days is None:
            days = self.care.win_back.silent_days
            policy = dataclasses.replace(
                self.policy, coupons=dataclasses.replace(coupons, silent_after_days=days)
            )
            object.__setattr__(self, "policy", policy)

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
        _check_care(self)
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
        self.policy.check()
        _check_complaints(self.complaints)
        _check_flags(self.flags)
        _check_aggregates(self.aggregates)

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


def _check_care(rules: Rules) -> None:
    care = rules.care
    channels = {c.value for c in Channel}
    if care.default_channel not in channels:
        raise ConfigError("care.default_channel", f"must be one of {', '.join(sorted(channels))}")
    if not 0 <= care.greetings.local_hour <= 23:
        raise ConfigError("care.greetings.local_hour", "must be an hour 0..23")
    groups = {g.name for g in rules.rfm.groups} | {rules.rfm.fallback_group}
    hint = f"unknown RFM group (known: {', '.join(sorted(groups))}; or disable the rule)"
    if care.vip.enabled and care.vip.group not in groups:
        raise ConfigError("care.vip.group", hint)
    if care.tier_nudge.enabled:
        for i, name in enumerate(care.tier_nudge.ladder):
            if name not in groups:
                raise ConfigError(f"care.tier_nudge.ladder[{i}]", hint)
    win_back = care.win_back
    if not win_back.strategies:
        raise ConfigError("care.win_back.strategies", "needs at least one strategy")
    for i, name in enumerate(win_back.service_strategies):
        if name not in win_back.strategies:
            raise ConfigError(
                f"care.win_back.service_strategies[{i}]",
                f"'{name}' is not one of care.win_back.strategies",
            )
    if win_back.call_channel not in channels:
        raise ConfigError(
            "care.win_back.call_channel", f"must be one of {', '.join(sorted(channels))}"
        )
    for key, items in (
        ("care.delivery.categories", [c.category for c in care.delivery.categories]),
        ("care.repurchase.cycles", [c.category for c in care.repurchase.cycles]),
    ):
        if len(set(items)) != len(items):
            raise ConfigError(key, "names a category twice")


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


# -- the rules file's JSON Schema ---------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The rules file's JSON Schema (exported as ``schemas/json/rules.v1.schema.json``,
    so an editor validates a rules file written as TOML): the same tables, keys, types
    and lower bounds :meth:`Rules.from_mapping` takes; unknown keys are refused. The
    checks across keys (:meth:`Rules._check`, e.g. churned after dormant) stay in the
    loader."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(Rules).json_schema()
    classes: dict[str, type] = {}
    _collect_classes(Rules, classes)
    definitions = schema.get("$defs", {})
    for name, kind in classes.items():
        target = schema if kind is Rules else definitions.get(name)
        if target is not None:
            _tighten(target, kind)
    return schema


def _collect_classes(kind: type, into: dict[str, type]) -> None:
    into[kind.__name__] = kind
    for hint in get_type_hints(kind).values():
        for candidate in (hint, *get_args(hint)):
            if isinstance(candidate, type) and is_dataclass(candidate):
                _collect_new(candidate, into)


def _collect_new(kind: type, into: dict[str, type]) -> None:
    if kind.__name__ not in into:
        _collect_classes(kind, into)


def _tighten(schema: dict[str, Any], kind: type) -> None:
    """What the loader enforces beyond the types: no unknown key, the ``min`` bounds,
    non-empty strings, positive array items."""
    schema["additionalProperties"] = False
    hints = get_type_hints(kind)
    properties = schema.get("properties", {})
    for f in fields(kind):
        prop = properties.get(f.name)
        if prop is None:
            continue
        hint = hints[f.name]
        if get_origin(hint) in (Union, UnionType):
            (hint,) = (a for a in get_args(hint) if a is not type(None))
        if get_origin(hint) is tuple:
            (item,) = (a for a in get_args(hint) if a is not Ellipsis)
            if item in (int, float) and isinstance(prop.get("items"), dict):
                prop["items"]["minimum"] = 1
            continue
        target = prop
        if "anyOf" in prop:  # X | None: the X branch
            target = next((b for b in prop["anyOf"] if b.get("type") != "null"), prop)
        if hint is str and target.get("type") == "string":
            target["minLength"] = 1
        minimum = f.metadata.get("min")
        if minimum is not None and hint in (int, float):
            target["minimum"] = minimum
