"""Care and retention triggers (domain.md §3) on durable per-customer timers.

Two entry points, both pure functions of the customer state and the rules:

* :func:`on_event` runs after an event is folded into the state: it sends
  what is due at once (delivery care) and sets, moves or cancels the timers
  of everything that is due later (follow-up, abandonment, repurchase,
  silence, churn, greetings, VIP care) in ``CustomerState.timers``.
* :func:`on_timer` runs when one of those timers is due (the caller has
  already removed it): it checks the condition still holds *at the due
  time* -- e.g. no purchase since the cart add -- and returns the action,
  setting the next timer where the rule repeats (greetings, VIP care,
  win-back checks).

Every action's logical time (``created_at``) is the event's time or the
timer's due time, never the wall clock, and its id derives from the rule,
the customer and the cause, so replaying the same history gives the same
actions with the same ids at the same logical times.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from agents import timers
from agents.model import D_COMPLAINTS, D_DAY, DAY, assess, day_of, group_for
from agents.state import CustomerState
from agents.timers import Timer, TimerData
from schemas import browsing, customers, orders, reviews
from schemas import complaints as complaint_events
from schemas.actions import (
    Action,
    ActionType,
    ClockMode,
    ParamValue,
    Priority,
    action_id_for,
)
from schemas.base import Channel
from streams import metrics
from streams.rules import Rules

log = logging.getLogger(__name__)

HOUR = 3_600

# Timer kinds (the ``kind`` of a timer row).
FOLLOW_UP = "care.follow_up"
ABANDONED = "care.abandoned"
REPURCHASE = "care.repurchase"
SILENT = "care.silent"
WIN_BACK_CHECK = "care.win_back_check"
CHURNED = "care.churned"
BIRTHDAY = "care.birthday"
ANNIVERSARY = "care.anniversary"
VIP_COUPON = "care.vip_coupon"
VIP_FOLLOW_UP = "care.vip_follow_up"

CARE_TIMER_KINDS = frozenset(
    {
        FOLLOW_UP,
        ABANDONED,
        REPURCHASE,
        SILENT,
        WIN_BACK_CHECK,
        CHURNED,
        BIRTHDAY,
        ANNIVERSARY,
        VIP_COUPON,
        VIP_FOLLOW_UP,
    }
)


class Before(NamedTuple):
    """What :func:`on_event` needs from the state as it was before the event."""

    first_purchase_at: float | None
    last_purchase_at: float | None
    timezone: str

    @classmethod
    def of(cls, state: CustomerState) -> Before:
        return cls(state.first_purchase_at, state.last_purchase_at, state.timezone)


# -- events ----------------------------------------------------------------------------


def on_event(state: CustomerState, event: BaseModel, before: Before, rules: Rules) -> list[Action]:
    """Actions ``event`` causes at once; sets and cancels the care timers in ``state``."""
    if state.erased_at is not None:
        return []
    care = rules.care
    at: float = event.occurred_at.timestamp()  # type: ignore[attr-defined]
    event_id: str = event.event_id  # type: ignore[attr-defined]
    actions: list[Action] = []
    if isinstance(event, orders.OrderPlaced):
        _placed(state, event, at, before, rules, actions)
    elif isinstance(event, orders.OrderCancelled):
        timers.cancel(state.timers, FOLLOW_UP, event.order_id)
    elif isinstance(event, orders.OrderDelivered):
        _delivered(state, event, at, rules, actions)
    elif isinstance(event, browsing.ItemView | browsing.CartAdd):
        _browsed(state, event, at, rules)
    elif isinstance(event, customers.ProfileUpserted):
        if care.greetings.birthday and state.birthday is not None:
            _set(state, rules, _next_birthday(state, at, rules), BIRTHDAY, "", event_id, {})
        if (
            care.greetings.anniversary
            and state.first_purchase_at is not None
            and state.timezone != before.timezone
        ):
            _set_anniversary(state, at, rules, event_id)
    elif isinstance(event, complaint_events.ComplaintOpened):
        window = care.win_back.complaints_window_days
        recent = sum(row[D_COMPLAINTS] for row in state.days if row[D_DAY] > day_of(at) - window)
        if recent > care.win_back.complaints_max:
            _open_win_back(
                state,
                at,
                event_id,
                f"{recent} complaints within {window} days (more than "
                f"{care.win_back.complaints_max})",
                rules,
                actions,
            )
    elif (
        isinstance(event, reviews.ReviewPosted)
        and care.win_back.on_negative_review
        and event.rating <= rules.counters.negative_review_max_rating
    ):
        _open_win_back(
            state, at, event_id, f"a negative review ({event.rating} of 5)", rules, actions
        )
    _vip(state, at, event_id, rules)
    return actions


def _placed(
    state: CustomerState,
    event: orders.OrderPlaced,
    at: float,
    before: Before,
    rules: Rules,
    actions: list[Action],
) -> None:
    care = rules.care
    categories = sorted({item.category for item in event.items})
    ring = state.recent_orders
    ring.append([event.order_id, at, categories])
    if len(ring) > care.recent_orders:
        del ring[: len(ring) - care.recent_orders]
    if care.follow_up.enabled:
        due = at + care.follow_up.delay_hours * HOUR
        _set(state, rules, due, FOLLOW_UP, event.order_id, event.event_id, {})
    timers.cancel(state.timers, ABANDONED)
    if before.first_purchase_at is None and care.greetings.anniversary:
        _set_anniversary(state, at, rules, event.event_id)
    if before.last_purchase_at is not None and at < before.last_purchase_at:
        return  # a late order: the timers that count from the last purchase stay put
    since: TimerData = {"since": at}
    if care.repurchase.enabled:
        cycles = {c.category: c.days for c in care.repurchase.cycles}
        known = [(cycles[c], c) for c in categories if c in cycles]
        days, category = min(known) if known else (care.repurchase.default_cycle_days, "")
        data: TimerData = {
            "since": at,
            "category": category or (categories[0] if categories else ""),
        }
        _set(state, rules, at + days * DAY, REPURCHASE, "", event.event_id, data)
    if care.win_back.enabled:
        _set(state, rules, at + care.win_back.silent_days * DAY, SILENT, "", event.event_id, since)
        if care.win_back.churned_survey:
            due = at + rules.lifecycle.churned_after_days * DAY
            _set(state, rules, due, CHURNED, "", event.event_id, since)
    _nudge(state, event, at, rules, actions)


def _delivered(
    state: CustomerState,
    event: orders.OrderDelivered,
    at: float,
    rules: Rules,
    actions: list[Action],
) -> None:
    rule = rules.care.delivery
    if not rule.enabled:
        return
    categories = {item.category for item in event.items}
    if not categories:
        for order_id, _placed_at, cats in state.recent_orders:
            if order_id == event.order_id:
                categories = set(cats)
    for care in rule.categories:
        if care.category not in categories:
            continue
        params: dict[str, ParamValue] = {
            "order_id": event.order_id,
            "category": care.category,
            "guide": care.guide,
        }
        if care.coupon:
            params["coupon_kind"] = rules.care.repurchase.coupon_kind
        actions.append(
            _action(
                state,
                rules,
                rule_id="care.delivery",
                action_type=ActionType.DELIVERY_CARE,
                priority=Priority.SERVICE,
                cause=f"{event.order_id}:{care.category}",
                at=at,
                clock=ClockMode.EVENT,
                template_id=care.template_id,
                params=params,
                reason=f"Order delivered with {care.category} items: "
                f"{care.guide.replace('_', ' ')}.",
                trigger=event.event_id,
                expires_after_days=None,
            )
        )


def _browsed(
    state: CustomerState, event: browsing.ItemView | browsing.CartAdd, at: float, rules: Rules
) -> None:
    rule = rules.care.abandonment
    if not rule.enabled:
        return
    cart = isinstance(event, browsing.CartAdd)
    pending = timers.find(state.timers, ABANDONED)
    if pending is not None and pending.data.get("cart") and not cart:
        return  # a cart add outranks a later view
    delay = rule.cart_delay_hours if cart else rule.view_delay_hours
    data: TimerData = {"at": at, "sku": event.sku, "cart": cart}
    if event.category is not None:
        data["category"] = event.category
    _set(state, rules, at + delay * HOUR, ABANDONED, "", event.event_id, data)


def _nudge(
    state: CustomerState, event: orders.OrderPlaced, at: float, rules: Rules, actions: list[Action]
) -> None:
    """One more order of the customer's average value reaches a higher rung -> nudge."""
    rule = rules.care.tier_nudge
    if not rule.enabled or not rule.ladder:
        return
    if state.last_nudge_at is not None and at - state.last_nudge_at < rule.min_interval_days * DAY:
        return
    view = assess(state, at, rules)
    rung = rule.ladder.index(view.rfm.group) if view.rfm.group in rule.ladder else -1
    if rung + 1 >= len(rule.ladder):
        return
    f, m_cents = view.rfm.windows[rules.rfm.group_window_days]
    if f <= 0:
        return
    # One more order of their average value, today (R = 0): which group then?
    target = group_for(0, f + 1, m_cents + m_cents // f, rules)
    if target not in rule.ladder or rule.ladder.index(target) <= rung:
        return  # the same rung (or off the ladder): no nudge
    state.last_nudge_at = at
    actions.append(
        _action(
            state,
            rules,
            rule_id="care.tier_nudge",
            action_type=ActionType.TIER_NUDGE,
            priority=Priority.MARKETING,
            cause=f"{target}:{event.event_id}",
            at=at,
            clock=ClockMode.EVENT,
            template_id=rule.template_id,
            params={"next_group": target, "orders_to_next": 1},
            reason=f"One more order of the usual value makes the customer '{target}'.",
            trigger=event.event_id,
        )
    )


def _open_win_back(
    state: CustomerState, at: float, cause: str, why: str, rules: Rules, actions: list[Action]
) -> None:
    """Churn warning: an empathetic contact now and a check ``check_after_days`` later."""
    rule = rules.care.win_back
    if not rule.enabled or timers.find(state.timers, WIN_BACK_CHECK) is not None:
        return  # one win-back case at a time
    actions.append(
        _action(
            state,
            rules,
            rule_id="care.win_back",
            action_type=ActionType.WIN_BACK,
            priority=Priority.SERVICE,
            cause=cause,
            at=at,
            clock=ClockMode.EVENT,
            template_id=rule.win_back_template_id,
            params={"strategy": rule.strategies[0], "step": 0},
            reason=f"Churn warning: {why}; an empathetic contact with a retention benefit.",
            trigger=cause,
        )
    )
    data: TimerData = {"since": at, "step": 0, "case": cause}
    _set(state, rules, at + rule.check_after_days * DAY, WIN_BACK_CHECK, "", cause, data)


def _vip(state: CustomerState, at: float, cause: str, rules: Rules) -> None:
    rule = rules.care.vip
    if not rule.enabled or state.rfm_group != rule.group:
        return
    if timers.find(state.timers, VIP_COUPON) is None:
        _set(state, rules, at, VIP_COUPON, "", cause, {})
    if timers.find(state.timers, VIP_FOLLOW_UP) is None:
        _set(state, rules, at + rule.follow_up_every_days * DAY, VIP_FOLLOW_UP, "", cause, {})


# -- what the contact policy decided ---------------------------------------------------


def on_sent(state: CustomerState, action: Action, at: float, rules: Rules) -> None:
    """The contact policy sent ``action`` at ``at`` (called by the router for every action
    it sends): what a rule does only once its contact really went out."""
    return None


def on_not_sent(
    state: CustomerState, action: Action, verdict: Any, at: float, rules: Rules
) -> None:
    """The contact policy suppressed or held out ``action`` (``verdict``: its
    :class:`agents.policy.PolicyDecision`); a deferred action is decided again later."""
    return None


# -- timers ----------------------------------------------------------------------------


def on_timer(
    state: CustomerState, timer: Timer, clock: ClockMode, rules: Rules, now: float | None = None
) -> list[Action]:
    """What a due care timer does (already removed from ``state.timers``).

    ``now``: when it fires (its due time on the replay clock, the wall clock on
    the live clock). A repeating timer (greetings, VIP care) that fires late
    re-arms for its next occurrence after ``now``, so catching up on a long
    gap fires each series once, not once per missed occurrence.
    """
    if state.erased_at is not None:
        return []
    handler = _HANDLERS.get(timer.kind)
    if handler is None:
        log.warning("unknown care timer kind %r dropped", timer.kind)
        return []
    return handler(state, timer, clock, rules, timer.due if now is None else max(now, timer.due))


def _no_purchase_since(state: CustomerState, since: Any) -> bool:
    last = state.last_purchase_at
    return last is None or last <= float(since)


def _fire_follow_up(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.follow_up
    return [
        _action(
            state,
            rules,
            rule_id="care.follow_up",
            action_type=ActionType.FOLLOW_UP,
            priority=Priority.SERVICE,
            cause=t.key,
            at=t.due,
            clock=clock,
            template_id=rule.template_id,
            params={"order_id": t.key},
            reason=f"Follow-up {rule.delay_hours:g} h after a purchase: how was it? (no sales)",
            trigger=t.cause,
            expires_after_days=1,
        )
    ]


def _fire_abandoned(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.abandonment
    if not _no_purchase_since(state, t.data["at"]):
        return []
    what = "added to the cart" if t.data.get("cart") else "viewed"
    params: dict[str, ParamValue] = {"sku": str(t.data["sku"])}
    if "category" in t.data:
        params["category"] = str(t.data["category"])
    hours = (t.due - float(t.data["at"])) / HOUR
    return [
        _action(
            state,
            rules,
            rule_id="care.abandonment",
            action_type=ActionType.BROWSE_RECOMMENDATION,
            priority=Priority.MARKETING,
            cause=t.cause,
            at=t.due,
            clock=clock,
            template_id=rule.template_id,
            params=params,
            reason=f"An item {what} with no order within {hours:g} h: recommend it.",
            trigger=t.cause,
            expires_after_days=rule.expires_after_hours / 24,
        )
    ]


def _fire_repurchase(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.repurchase
    if not _no_purchase_since(state, t.data["since"]):
        return []
    days = round((t.due - float(t.data["since"])) / DAY)
    category = str(t.data.get("category") or "")
    params: dict[str, ParamValue] = {
        "days_since_purchase": days,
        "coupon_kind": rule.coupon_kind,
    }
    if category:
        params["category"] = category
    return [
        _action(
            state,
            rules,
            rule_id="care.repurchase",
            action_type=ActionType.REPURCHASE_REMINDER,
            priority=Priority.MARKETING,
            cause=t.cause,
            at=t.due,
            clock=clock,
            template_id=rule.template_id,
            params=params,
            reason=f"Repurchase cycle of {days} days elapsed since the last purchase"
            + (f" ({category})." if category else "."),
            trigger=t.cause,
            expires_after_days=rule.expires_after_days,
        )
    ]


def _fire_silent(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.win_back
    if not _no_purchase_since(state, t.data["since"]):
        return []
    actions = [
        _action(
            state,
            rules,
            rule_id="care.welcome_back",
            action_type=ActionType.WELCOME_BACK,
            priority=Priority.MARKETING,
            cause=t.cause,
            at=t.due,
            clock=clock,
            template_id=rule.welcome_back_template_id,
            params={"days_since_purchase": rule.silent_days, "coupon_kind": "welcome_back"},
            reason=f"Silent for {rule.silent_days} days (no purchase): a welcome-back coupon.",
            trigger=t.cause,
        )
    ]
    if timers.find(state.timers, WIN_BACK_CHECK) is None:
        data: TimerData = {"since": t.due, "step": 0, "case": t.cause}
        _set(state, rules, t.due + rule.check_after_days * DAY, WIN_BACK_CHECK, "", t.cause, data)
    return actions


def _fire_win_back_check(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.win_back
    if not _no_purchase_since(state, t.data["since"]):
        return []  # bought since the contact: the case is closed
    step = int(t.data["step"]) + 1
    if step >= len(rule.strategies):
        return []  # every strategy tried: the case ends (the churn survey may follow)
    strategy = rule.strategies[step]
    case = str(t.data["case"])
    data: TimerData = {"since": t.data["since"], "step": step, "case": case}
    _set(state, rules, t.due + rule.check_after_days * DAY, WIN_BACK_CHECK, "", t.cause, data)
    return [
        _action(
            state,
            rules,
            rule_id="care.win_back_escalation",
            action_type=ActionType.WIN_BACK_ESCALATION,
            priority=Priority.MARKETING,
            cause=f"{case}:{step}",
            at=t.due,
            clock=clock,
            template_id=rule.escalation_template_id,
            params={"strategy": strategy, "step": step},
            reason=f"No purchase {rule.check_after_days} days after the win-back contact: "
            f"next strategy '{strategy}'.",
            trigger=t.cause,
        )
    ]


def _fire_churned(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.win_back
    if not _no_purchase_since(state, t.data["since"]):
        return []
    days = rules.lifecycle.churned_after_days
    return [
        _action(
            state,
            rules,
            rule_id="care.churn_survey",
            action_type=ActionType.CHURN_SURVEY,
            priority=Priority.MARKETING,
            cause=t.cause,
            at=t.due,
            clock=clock,
            template_id=rule.survey_template_id,
            params={"survey": "churn_reason", "days_since_purchase": days},
            reason=f"Churned ({days} days without a purchase): ask why.",
            trigger=t.cause,
        )
    ]


def _fire_birthday(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.greetings
    if not rule.birthday or state.birthday is None:
        return []
    year = _local(t.due, state.timezone).year
    _set(state, rules, _next_birthday(state, now, rules), BIRTHDAY, "", t.cause, {})
    return [
        _action(
            state,
            rules,
            rule_id="care.birthday",
            action_type=ActionType.BIRTHDAY,
            priority=Priority.MARKETING,
            cause=str(year),
            at=t.due,
            clock=clock,
            template_id=rule.birthday_template_id,
            params={"occasion": "birthday", "coupon_kind": rule.coupon_kind},
            reason="Birthday greeting with a personal coupon.",
            trigger=t.cause,
            expires_after_days=7,
        )
    ]


def _fire_anniversary(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.greetings
    if not rule.anniversary or state.first_purchase_at is None:
        return []
    years = int(t.data.get("years", 1))
    _set_anniversary(state, now, rules, t.cause)
    return [
        _action(
            state,
            rules,
            rule_id="care.anniversary",
            action_type=ActionType.ANNIVERSARY,
            priority=Priority.MARKETING,
            cause=str(years),
            at=t.due,
            clock=clock,
            template_id=rule.anniversary_template_id,
            params={
                "occasion": "order_anniversary",
                "years": years,
                "coupon_kind": rule.coupon_kind,
            },
            reason=f"{years} year{'s' if years != 1 else ''} since the first order.",
            trigger=t.cause,
            expires_after_days=7,
        )
    ]


def _fire_vip(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.vip
    if not rule.enabled or assess(state, t.due, rules).rfm.group != rule.group:
        return []  # no longer high value: the series stops (restarts when they are again)
    coupon = t.kind == VIP_COUPON
    every = rule.coupon_every_days if coupon else rule.follow_up_every_days
    following = t.due + every * DAY
    if following <= now:  # caught up late (live clock): the next one after now
        following = now + every * DAY
    _set(state, rules, following, t.kind, "", t.cause, {})
    return [
        _action(
            state,
            rules,
            rule_id=t.kind,
            action_type=ActionType.VIP_COUPON if coupon else ActionType.VIP_FOLLOW_UP,
            priority=Priority.MARKETING if coupon else Priority.SERVICE,
            cause=str(day_of(t.due)),
            at=t.due,
            clock=clock,
            template_id=rule.coupon_template_id if coupon else rule.follow_up_template_id,
            params={"tier": rule.group, **({"coupon_kind": "vip_exclusive"} if coupon else {})},
            reason=(
                f"High-value customer: the exclusive coupon (every {every} days)."
                if coupon
                else f"High-value customer: the follow-up (every {every} days)."
            ),
            trigger=t.cause,
        )
    ]


_HANDLERS: Mapping[str, Any] = {
    FOLLOW_UP: _fire_follow_up,
    ABANDONED: _fire_abandoned,
    REPURCHASE: _fire_repurchase,
    SILENT: _fire_silent,
    WIN_BACK_CHECK: _fire_win_back_check,
    CHURNED: _fire_churned,
    BIRTHDAY: _fire_birthday,
    ANNIVERSARY: _fire_anniversary,
    VIP_COUPON: _fire_vip,
    VIP_FOLLOW_UP: _fire_vip,
}


# -- helpers -----------------------------------------------------------------------------


def _set(
    state: CustomerState, rules: Rules, due: float, kind: str, key: str, cause: str, data: TimerData
) -> None:
    if not timers.set_timer(
        state.timers, Timer(due, kind, key, cause, data), rules.care.max_timers
    ):
        metrics.TIMERS_DROPPED.labels(kind).inc()
        log.warning(
            "timer %s not set: the customer holds %d timers already", kind, len(state.timers)
        )


def _local(at: float, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, ZoneInfo(zone))


def _at_local_hour(day: dt.date, zone: str, hour: int) -> float:
    """``day`` at ``hour`` o'clock in ``zone`` (a time skipped by DST moves forward)."""
    return dt.datetime.combine(day, dt.time(hour), tzinfo=ZoneInfo(zone)).timestamp()


def _on(year: int, month: int, day: int) -> dt.date:
    """The date, with 29 February as 28 February in other years."""
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    return dt.date(year, month, day)


def _next_birthday(state: CustomerState, after: float, rules: Rules) -> float:
    assert state.birthday is not None
    month, day = (int(x) for x in state.birthday.split("-"))
    hour = rules.care.greetings.local_hour
    year = _local(after, state.timezone).year
    due = _at_local_hour(_on(year, month, day), state.timezone, hour)
    if due <= after:
        due = _at_local_hour(_on(year + 1, month, day), state.timezone, hour)
    return due


def _set_anniversary(state: CustomerState, after: float, rules: Rules, cause: str) -> None:
    """The next first-order anniversary after ``after``, at the local greeting hour."""
    assert state.first_purchase_at is not None
    first = _local(state.first_purchase_at, state.timezone).date()
    hour = rules.care.greetings.local_hour
    years = max(1, _local(after, state.timezone).year - first.year)
    due = _at_local_hour(_on(first.year + years, first.month, first.day), state.timezone, hour)
    if due <= after:
        years += 1
        due = _at_local_hour(_on(first.year + years, first.month, first.day), state.timezone, hour)
    _set(state, rules, due, ANNIVERSARY, "", cause, {"years": years})


def _action(
    state: CustomerState,
    rules: Rules,
    *,
    rule_id: str,
    action_type: ActionType,
    priority: Priority,
    cause: str,
    at: float,
    clock: ClockMode,
    template_id: str,
    params: dict[str, ParamValue],
    reason: str,
    trigger: str,
    expires_after_days: float | None = 0,
) -> Action:
    """An action on the customer's first preferred channel (the contact policy may change it)."""
    created = dt.datetime.fromtimestamp(at, dt.UTC)
    if expires_after_days == 0:
        expires_after_days = rules.care.expires_after_days
    channel = (
        state.preferred_channels[0] if state.preferred_channels else rules.care.default_channel
    )
    # Built without re-validation (one per care action on the hot path): every field
    # comes from this module; tests/unit/test_care.py validates each action it sees.
    return Action.model_construct(
        schema_version=1,
        action_id=action_id_for(rule_id, state.customer_id, cause),
        customer_id=state.customer_id,
        action_type=action_type,
        priority=priority,
        channel=Channel(channel),
        template_id=template_id,
        params=params,
        reason=reason,
        rule_id=rule_id,
        trigger_event_ids=[trigger],
        created_at=created,
        clock=clock,
        not_before=None,
        expires_at=(
            None if expires_after_days is None else created + dt.timedelta(days=expires_after_days)
        ),
    )
