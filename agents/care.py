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

* :func:`on_sent` / :func:`on_not_sent` run when the contact policy has sent
  an action, or suppressed or held it out: a win-back case opens only once its
  first contact went out, and moves on (or ends) by what became of each step.

Every action's logical time (``created_at``) is the event's time or the
timer's due time, never the wall clock, and its id derives from the rule,
the customer and the cause, so replaying the same history gives the same
actions with the same ids at the same logical times.

Win-back cases (domain.md §3: "check after 7 days whether they bought, else
change strategy") live in one ``WIN_BACK_CHECK`` timer, data ``since`` (when
the first contact was sent), ``step`` (the last strategy sent), ``case`` (the
event id that opened it), ``service`` (a churn-warning case: its steps are
service), ``held`` (guardrail suppressions retried), ``retry`` (the next step
is that retry) and ``pending`` (a step is with the contact policy: the timer
then waits until that step expires). A purchase at or after ``since`` closes
the case.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from agents import timers
from agents.model import D_COMPLAINTS, D_DAY, DAY, Assessment, assess, day_of, group_for
from agents.rules import Rules
from agents.state import CustomerState
from agents.timers import T_DATA, T_KIND, Timer, TimerData
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
from schemas.base import Channel, built
from schemas.decisions import ReasonCode

if TYPE_CHECKING:
    from agents.policy import PolicyDecision

log = logging.getLogger(__name__)

HOUR = 3_600

#: Joins the order ids of a coalesced follow-up in its timer data (never in an id).
_SEP = "\x1f"
#: Rule ids of the contacts that open a win-back case, and of its later steps.
WIN_BACK = "care.win_back"
WELCOME_BACK = "care.welcome_back"
WIN_BACK_ESCALATION = "care.win_back_escalation"
#: Verdict codes of the guardrails: a case step they suppress is tried again later.
GUARDRAIL_CODES = frozenset(
    {
        ReasonCode.OPEN_COMPLAINT,
        ReasonCode.RECENT_RETURN,
        ReasonCode.RECENT_NEGATIVE_REVIEW,
        ReasonCode.OPEN_RISK_FLAG,
    }
)

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
    """What :func:`on_event` needs from the state as it was before the event. Only the
    kinds in :data:`BEFORE_KINDS` read it; for the others the caller passes
    :data:`NOT_TAKEN` (taking it for every event cost 0.6 % of the fold's instructions)."""

    first_purchase_at: float | None
    last_purchase_at: float | None
    timezone: str

    @classmethod
    def of(cls, state: CustomerState) -> Before:
        return cls(
            state.activity.first_purchase_at,
            state.activity.last_purchase_at,
            state.profile.timezone,
        )


#: The event kinds whose care rules read :class:`Before` (a purchase: first order,
#: order dates; a profile: the zone it had). A rule that reads it for another kind
#: must add that kind here (``test_care.py`` fails the read otherwise).
BEFORE_KINDS: frozenset[type] = frozenset({orders.OrderPlaced, customers.ProfileUpserted})
#: What :func:`on_event` gets for the other kinds.
NOT_TAKEN = Before(None, None, "")


# -- what a care action is ------------------------------------------------------------


class _Kind(NamedTuple):
    """What a care rule sends: its rule id, action type and priority."""

    rule_id: str
    action_type: ActionType
    priority: Priority


class _When(NamedTuple):
    """When an action is made, on which clock, and the event that caused it."""

    at: float
    clock: ClockMode
    trigger: str


def _fired(t: Timer, clock: ClockMode) -> _When:
    """An action a fired timer makes: at its due time, caused by what set the timer."""
    return _When(t.due, clock, t.cause)


_DELIVERY = _Kind("care.delivery", ActionType.DELIVERY_CARE, Priority.SERVICE)
_TIER_NUDGE = _Kind("care.tier_nudge", ActionType.TIER_NUDGE, Priority.MARKETING)
_WIN_BACK = _Kind(WIN_BACK, ActionType.WIN_BACK, Priority.SERVICE)
_FOLLOW_UP = _Kind("care.follow_up", ActionType.FOLLOW_UP, Priority.SERVICE)
_ABANDONMENT = _Kind("care.abandonment", ActionType.BROWSE_RECOMMENDATION, Priority.MARKETING)
_REPURCHASE = _Kind("care.repurchase", ActionType.REPURCHASE_REMINDER, Priority.MARKETING)
_WELCOME_BACK = _Kind(WELCOME_BACK, ActionType.WELCOME_BACK, Priority.MARKETING)
_CHURN_SURVEY = _Kind("care.churn_survey", ActionType.CHURN_SURVEY, Priority.MARKETING)
_BIRTHDAY = _Kind("care.birthday", ActionType.BIRTHDAY, Priority.MARKETING)
_ANNIVERSARY = _Kind("care.anniversary", ActionType.ANNIVERSARY, Priority.MARKETING)


# -- events ----------------------------------------------------------------------------


def on_event(
    state: CustomerState,
    event: BaseModel,
    before: Before,
    rules: Rules,
    assessed: Assessment | None = None,
) -> list[Action]:
    """Actions ``event`` causes at once; sets and cancels the care timers in ``state``.
    ``assessed``: the segments' assessment of ``state`` after ``event``, if they took one
    (:func:`agents.segments.reassess`), for the tier nudge to read (:func:`_rfm_view`)."""
    if state.erased_at is not None:
        return []
    care = rules.care
    at: float = event.at  # type: ignore[attr-defined]
    event_id: str = event.event_id  # type: ignore[attr-defined]
    actions: list[Action] = []
    kind = type(event)  # per-type dispatch (schemas.registry.kinds)
    if kind is browsing.ItemView or kind is browsing.CartAdd:  # the most frequent: first
        _browsed(state, event, at, rules)  # type: ignore[arg-type]
    elif kind is orders.OrderPlaced:
        _placed(state, event, at, before, rules, actions, assessed)  # type: ignore[arg-type]
    elif kind is orders.OrderCancelled:
        _cancel_follow_up(state, event.order_id, rules)  # type: ignore[attr-defined]
    elif kind is orders.OrderDelivered:
        _delivered(state, event, at, rules, actions)  # type: ignore[arg-type]
    elif kind is customers.ProfileUpserted:
        if care.greetings.birthday and state.profile.birthday is not None:
            _set(state, rules, _next_birthday(state, at, rules), BIRTHDAY, "", event_id, {})
        if (
            care.greetings.anniversary
            and state.activity.first_purchase_at is not None
            and state.profile.timezone != before.timezone
        ):
            _set_anniversary(state, at, rules, event_id)
    elif kind is complaint_events.ComplaintOpened:
        window = care.win_back.complaints_window_days
        recent = sum(
            row[D_COMPLAINTS] for row in state.activity.days if row[D_DAY] > day_of(at) - window
        )
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
        kind is reviews.ReviewPosted
        and care.win_back.on_negative_review
        and event.rating <= rules.counters.negative_review_max_rating  # type: ignore[attr-defined]
    ):
        rating = event.rating  # type: ignore[attr-defined]
        _open_win_back(state, at, event_id, f"a negative review ({rating} of 5)", rules, actions)
    _vip(state, at, event_id, rules)
    return actions


def _placed(
    state: CustomerState,
    event: orders.OrderPlaced,
    at: float,
    before: Before,
    rules: Rules,
    actions: list[Action],
    assessed: Assessment | None = None,
) -> None:
    care = rules.care
    categories = sorted({item.category for item in event.items})
    ring = state.activity.recent_orders
    ring.append([event.order_id, at, categories])
    if len(ring) > care.recent_orders:
        del ring[: len(ring) - care.recent_orders]
    if care.follow_up.enabled:
        _follow_up(state, event, at, rules)
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
    _nudge(state, event, at, rules, actions, assessed)


def _follow_up(state: CustomerState, event: orders.OrderPlaced, at: float, rules: Rules) -> None:
    """One follow-up per group of orders placed within ``coalesce_minutes`` of the
    group's first order, due ``delay_hours`` after that first order.

    The timer's key is the order that started the group (the root of the action
    id), its data the group's order ids and first order time.
    """
    rule = rules.care.follow_up
    groups = [Timer.of(row) for row in state.timers if row[T_KIND] == FOLLOW_UP]
    if any(event.order_id in _group_orders(t) for t in groups):
        return  # the same order again
    window = rule.coalesce_minutes * 60
    joinable = [
        t
        for t in groups
        if window > 0
        and abs(at - _group_first(t, rules)) <= window
        and len(_group_orders(t)) < rules.care.recent_orders
    ]
    if not joinable:
        data: TimerData = {"orders": event.order_id, "first": at}
        _set(
            state,
            rules,
            at + rule.delay_hours * HOUR,
            FOLLOW_UP,
            event.order_id,
            event.event_id,
            data,
        )
        return
    group = min(joinable, key=lambda t: (abs(at - _group_first(t, rules)), t.due, t.key))
    first = min(at, _group_first(group, rules))
    data = {"orders": _SEP.join([*_group_orders(group), event.order_id]), "first": first}
    _set(state, rules, first + rule.delay_hours * HOUR, FOLLOW_UP, group.key, group.cause, data)


def _group_orders(t: Timer) -> list[str]:
    """The order ids of a follow-up timer (one set before coalescing: its key alone)."""
    joined = t.data.get("orders")
    return str(joined).split(_SEP) if joined else [t.key]


def _group_first(t: Timer, rules: Rules) -> float:
    first = t.data.get("first")
    return float(first) if first is not None else t.due - rules.care.follow_up.delay_hours * HOUR


def _cancel_follow_up(state: CustomerState, order_id: str, rules: Rules) -> None:
    """A cancelled order leaves its follow-up group; an empty group is cancelled."""
    for row in list(state.timers):
        if row[T_KIND] != FOLLOW_UP:
            continue
        t = Timer.of(row)
        ids = _group_orders(t)
        if order_id not in ids:
            continue
        ids.remove(order_id)
        timers.cancel(state.timers, FOLLOW_UP, t.key)
        if ids:
            data: TimerData = {**t.data, "orders": _SEP.join(ids)}
            _set(state, rules, t.due, FOLLOW_UP, t.key, t.cause, data)


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
        for order_id, _placed_at, cats in state.activity.recent_orders:
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
                _DELIVERY,
                _When(at, ClockMode.EVENT, event.event_id),
                cause=f"{event.order_id}:{care.category}",
                template_id=care.template_id,
                params=params,
                reason=f"Order delivered with {care.category} items: "
                f"{care.guide.replace('_', ' ')}.",
                expires_after_days=None,
            )
        )


def _browsed(
    state: CustomerState, event: browsing.ItemView | browsing.CartAdd, at: float, rules: Rules
) -> None:
    rule = rules.care.abandonment
    if not rule.enabled:
        return
    cart = type(event) is browsing.CartAdd
    held = state.timers
    pending = timers.index_of(held, ABANDONED)
    if pending is not None and held[pending][T_DATA].get("cart") and not cart:
        return  # a cart add outranks a later view
    delay = rule.cart_delay_hours if cart else rule.view_delay_hours
    data: TimerData = {"at": at, "sku": event.sku, "cart": cart}
    if event.category is not None:
        data["category"] = event.category
    # Most browsing events move this timer on: the walk that found it goes on to
    # replace it (``_set`` would walk the timers again, and copy the data: it is new).
    row = [at + delay * HOUR, ABANDONED, "", event.event_id, data]
    if not timers.reset_row(held, pending, row, rules.care.max_timers):
        _not_set(state, ABANDONED)


def _nudge(
    state: CustomerState,
    event: orders.OrderPlaced,
    at: float,
    rules: Rules,
    actions: list[Action],
    assessed: Assessment | None = None,
) -> None:
    """One more order of the customer's average value reaches a higher rung -> nudge."""
    rule = rules.care.tier_nudge
    if not rule.enabled or not rule.ladder:
        return
    if (
        state.contact.last_nudge_at is not None
        and at - state.contact.last_nudge_at < rule.min_interval_days * DAY
    ):
        return
    view = _rfm_view(state, at, rules, assessed)
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
    state.contact.last_nudge_at = at
    actions.append(
        _action(
            state,
            rules,
            _TIER_NUDGE,
            _When(at, ClockMode.EVENT, event.event_id),
            cause=f"{target}:{event.event_id}",
            template_id=rule.template_id,
            params={"next_group": target, "orders_to_next": 1},
            reason=f"One more order of the usual value makes the customer '{target}'.",
        )
    )


def _rfm_view(
    state: CustomerState, at: float, rules: Rules, assessed: Assessment | None
) -> Assessment:
    """The assessment the tier nudge reads: the segments' (``assessed``) when it is as of
    ``at``, the order's own time; else its own. Between the two, the welcome rule and the
    order's care rules change the customer's contact flags, timers and recent orders,
    which no assessment reads (``agents.model`` reads the activity's days, purchases and
    counts): the same state, so the same view. ``tests/unit/test_assessed_once.py``
    holds a simulated history to that. An order read after a later event of its
    customer is assessed by the segments at the customer's clock, not at ``at``."""
    if assessed is not None and assessed.at == at:
        return assessed
    return assess(state, at, rules)


def _open_win_back(
    state: CustomerState, at: float, cause: str, why: str, rules: Rules, actions: list[Action]
) -> None:
    """Churn warning: an empathetic contact now; once it is sent (:func:`on_sent`), a
    check ``check_after_days`` later. It takes over an open silence case (the
    customer's dissatisfaction now comes first); an open churn-warning case is enough,
    unless the customer bought since it opened (:func:`_bought_since`)."""
    rule = rules.care.win_back
    case = timers.find(state.timers, WIN_BACK_CHECK)
    if not rule.enabled or (
        case is not None and case.data.get("service") and not _bought_since(state, case)
    ):
        return  # one win-back case at a time
    actions.append(
        _action(
            state,
            rules,
            _WIN_BACK,
            _When(at, ClockMode.EVENT, cause),
            cause=cause,
            template_id=rule.win_back_template_id,
            params={"strategy": rule.strategies[0], "step": 0},
            reason=f"Churn warning: {why}; an empathetic contact with a retention benefit.",
        )
    )


def _vip(state: CustomerState, at: float, cause: str, rules: Rules) -> None:
    rule = rules.care.vip
    if not rule.enabled or state.assessment.rfm_group != rule.group:
        return
    if timers.find(state.timers, VIP_COUPON) is None:
        _set(state, rules, at, VIP_COUPON, "", cause, {})
    if timers.find(state.timers, VIP_FOLLOW_UP) is None:
        _set(state, rules, at + rule.follow_up_every_days * DAY, VIP_FOLLOW_UP, "", cause, {})


# -- what the contact policy decided ---------------------------------------------------


def on_sent(state: CustomerState, action: Action, at: float, rules: Rules) -> None:
    """The contact policy sent ``action`` at ``at`` (called by the router for every action
    it sends): what a rule does only once its contact really went out.

    A win-back case opens when its first contact (churn warning, welcome back) is
    sent -- ``since`` = that send, so a purchase at that very instant counts as one
    after it -- and its next check is ``check_after_days`` after each step sent. A
    churn-warning contact sent during a silence case turns it into a churn-warning
    case (service steps, from step 0 again). A case the customer bought since is over
    (its next check only closes it), so a new contact opens a case of its own.
    """
    if state.erased_at is not None or not rules.care.win_back.enabled:
        return
    rule_id = action.rule_id
    if rule_id not in (WIN_BACK, WELCOME_BACK, WIN_BACK_ESCALATION):
        return
    rule = rules.care.win_back
    case = timers.find(state.timers, WIN_BACK_CHECK)
    if rule_id == WIN_BACK_ESCALATION:
        if case is None or not _is_step_of(case, action):
            return  # not the step this case waits for (the case ended meanwhile)
        data: TimerData = {**case.data, "pending": False, "retry": 0}
        _set(state, rules, at + rule.check_after_days * DAY, WIN_BACK_CHECK, "", case.cause, data)
        return
    if (
        case is not None
        and (rule_id == WELCOME_BACK or case.data.get("service"))
        and not _bought_since(state, case)
    ):
        return  # one win-back case at a time (a churn warning takes over a silence case)
    cause = action.trigger_event_ids[0]
    data = {"since": at, "step": 0, "case": cause, "service": rule_id == WIN_BACK, "held": 0}
    _set(state, rules, at + rule.check_after_days * DAY, WIN_BACK_CHECK, "", cause, data)


def on_not_sent(
    state: CustomerState, action: Action, verdict: PolicyDecision, at: float, rules: Rules
) -> None:
    """The contact policy suppressed or held out ``action`` (``verdict``: its
    :class:`agents.policy.PolicyDecision`); a deferred action is decided again later.

    A win-back case's first contact not sent opens no case. A later step a
    guardrail suppressed is tried again at the next check (at most
    ``guardrail_retries`` times per case); any other step not sent ends the case.
    """
    if action.rule_id != WIN_BACK_ESCALATION or state.erased_at is not None:
        return
    rule = rules.care.win_back
    case = timers.find(state.timers, WIN_BACK_CHECK)
    if case is None or not _is_step_of(case, action):
        return
    held = int(case.data.get("held", 0))
    if verdict.code in GUARDRAIL_CODES and held < rule.guardrail_retries:
        step = int(case.data["step"]) - 1  # the check finds this step next, as a retry
        data: TimerData = {
            **case.data,
            "step": step,
            "held": held + 1,
            "retry": held + 1,
            "pending": False,
        }
        _set(state, rules, at + rule.check_after_days * DAY, WIN_BACK_CHECK, "", case.cause, data)
        return
    timers.cancel(state.timers, WIN_BACK_CHECK)  # the case ends; the decision record says why


def _bought_since(state: CustomerState, case: Timer) -> bool:
    """Whether the customer bought since ``case`` opened (at its very instant included):
    its next check closes it, so a new case may take its place."""
    last = state.activity.last_purchase_at
    return last is not None and last >= float(case.data["since"])


def _is_step_of(case: Timer, action: Action) -> bool:
    """Whether ``action`` is the step ``case`` is waiting for the policy's verdict on."""
    return bool(case.data.get("pending")) and action.params.get("step") == case.data["step"]


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
    last = state.activity.last_purchase_at
    return last is None or last <= float(since)


def _fire_follow_up(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.follow_up
    ids = _group_orders(t)
    reason = f"Follow-up {rule.delay_hours:g} h after a purchase: how was it? (no sales)"
    if len(ids) > 1:
        listed = f" ({', '.join(ids)})"
        reason = (
            f"Follow-up {rule.delay_hours:g} h after the first of {len(ids)} purchases placed "
            f"within {rule.coalesce_minutes:g} min{listed}: how were they? (no sales)"
        )
        if len(reason) > 500:  # the contract's limit: the count alone
            reason = reason.replace(listed, "")
    return [
        _action(
            state,
            rules,
            _FOLLOW_UP,
            _fired(t, clock),
            cause=t.key,
            template_id=rule.template_id,
            params={"order_id": _latest_order(state, ids)},
            reason=reason,
            expires_after_days=1,
        )
    ]


def _latest_order(state: CustomerState, ids: list[str]) -> str:
    """The order of ``ids`` placed last (by the recent-orders ring; else the last joined)."""
    placed = {row[0]: row[1] for row in state.activity.recent_orders}
    known = [(placed[i], n, i) for n, i in enumerate(ids) if i in placed]
    return max(known)[2] if known else ids[-1]


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
            _ABANDONMENT,
            _fired(t, clock),
            cause=t.cause,
            template_id=rule.template_id,
            params=params,
            reason=f"An item {what} with no order within {hours:g} h: recommend it.",
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
            _REPURCHASE,
            _fired(t, clock),
            cause=t.cause,
            template_id=rule.template_id,
            params=params,
            reason=f"Repurchase cycle of {days} days elapsed since the last purchase"
            + (f" ({category})." if category else "."),
            expires_after_days=rule.expires_after_days,
        )
    ]


def _fire_silent(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.win_back
    if not _no_purchase_since(state, t.data["since"]):
        return []
    return [
        _action(
            state,
            rules,
            _WELCOME_BACK,
            _fired(t, clock),
            cause=t.cause,
            template_id=rule.welcome_back_template_id,
            params={"days_since_purchase": rule.silent_days, "coupon_kind": "welcome_back"},
            reason=f"Silent for {rule.silent_days} days (no purchase): a welcome-back coupon.",
        )
    ]


def _fire_win_back_check(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.win_back
    if t.data.get("pending"):
        return []  # the step expired without a verdict (its deferral was lost): the case ends
    if _bought_since(state, t):
        return []  # bought since the contact (or at its very instant): the case is closed
    step = int(t.data["step"]) + 1
    if step >= len(rule.strategies):
        return []  # every strategy tried: the case ends (the churn survey may follow)
    strategy = rule.strategies[step]
    case = str(t.data["case"])
    retry = int(t.data.get("retry", 0))
    call = strategy in rule.service_strategies
    service = call or bool(t.data.get("service"))
    action = _action(
        state,
        rules,
        _Kind(
            WIN_BACK_ESCALATION,
            ActionType.WIN_BACK_ESCALATION,
            Priority.SERVICE if service else Priority.MARKETING,
        ),
        _fired(t, clock),
        cause=f"{case}:{step}:retry{retry}" if retry else f"{case}:{step}",
        template_id=rule.call_template_id if call else rule.escalation_template_id,
        params={"strategy": strategy, "step": step},
        reason=f"No purchase {rule.check_after_days} days after the win-back contact: "
        + (
            f"a {strategy.replace('_', ' ')} by service staff."
            if call
            else f"next strategy '{strategy}'."
        ),
    )
    if call:
        action = action.model_copy(update={"channel": Channel(rule.call_channel)})
    # The case waits for the policy's verdict on this step (on_sent / on_not_sent), at
    # most until the step expires.
    assert action.expires_at is not None
    data: TimerData = {**t.data, "step": step, "pending": True}
    _set(state, rules, action.expires_at.timestamp(), WIN_BACK_CHECK, "", t.cause, data)
    return [action]


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
            _CHURN_SURVEY,
            _fired(t, clock),
            cause=t.cause,
            template_id=rule.survey_template_id,
            params={"survey": "churn_reason", "days_since_purchase": days},
            reason=f"Churned ({days} days without a purchase): ask why.",
        )
    ]


def _fire_birthday(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.greetings
    if not rule.birthday or state.profile.birthday is None:
        return []
    year = _local(t.due, state.profile.timezone).year
    _set(state, rules, _next_birthday(state, now, rules), BIRTHDAY, "", t.cause, {})
    return [
        _action(
            state,
            rules,
            _BIRTHDAY,
            _fired(t, clock),
            cause=str(year),
            template_id=rule.birthday_template_id,
            params={"occasion": "birthday", "coupon_kind": rule.coupon_kind},
            reason="Birthday greeting with a personal coupon.",
            expires_after_days=7,
        )
    ]


def _fire_anniversary(
    state: CustomerState, t: Timer, clock: ClockMode, rules: Rules, now: float
) -> list[Action]:
    rule = rules.care.greetings
    if not rule.anniversary or state.activity.first_purchase_at is None:
        return []
    years = int(t.data.get("years", 1))
    _set_anniversary(state, now, rules, t.cause)
    return [
        _action(
            state,
            rules,
            _ANNIVERSARY,
            _fired(t, clock),
            cause=str(years),
            template_id=rule.anniversary_template_id,
            params={
                "occasion": "order_anniversary",
                "years": years,
                "coupon_kind": rule.coupon_kind,
            },
            reason=f"{years} year{'s' if years != 1 else ''} since the first order.",
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
            _Kind(
                t.kind,
                ActionType.VIP_COUPON if coupon else ActionType.VIP_FOLLOW_UP,
                Priority.MARKETING if coupon else Priority.SERVICE,
            ),
            _fired(t, clock),
            cause=str(day_of(t.due)),
            template_id=rule.coupon_template_id if coupon else rule.follow_up_template_id,
            params={"tier": rule.group, **({"coupon_kind": "vip_exclusive"} if coupon else {})},
            reason=f"High-value customer: the exclusive coupon (every {every} days)."
            if coupon
            else f"High-value customer: the follow-up (every {every} days).",
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
    row = [due, kind, key, cause, dict(data)]  # a row of its own (callers share dicts)
    if not timers.set_row(state.timers, row, rules.care.max_timers):
        _not_set(state, kind)


def _not_set(state: CustomerState, kind: str) -> None:
    timers.note_dropped(kind)
    log.warning("timer %s not set: the customer holds %d timers already", kind, len(state.timers))


def _local(at: float, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, ZoneInfo(zone))


def _at_local_hour(day: dt.date, zone: str, hour: int) -> float:
    """``day`` at ``hour`` o'clock in ``zone`` (a time skipped by DST moves forward)."""
    return dt.datetime.combine(day, dt.time(hour), tzinfo=ZoneInfo(zone)).timestamp()


def _on(year: int, month: int, day: int) -> dt.date:
    """The date, with 29 February as 28 February in other years."""
    if month == 2 and day == 29 and not calendar.isleap(year):
        day = 28
    return dt.date(year, month, day)


def _next_birthday(state: CustomerState, after: float, rules: Rules) -> float:
    assert state.profile.birthday is not None
    month, day = (int(x) for x in state.profile.birthday.split("-"))
    hour = rules.care.greetings.local_hour
    year = _local(after, state.profile.timezone).year
    due = _at_local_hour(_on(year, month, day), state.profile.timezone, hour)
    if due <= after:
        due = _at_local_hour(_on(year + 1, month, day), state.profile.timezone, hour)
    return due


def _set_anniversary(state: CustomerState, after: float, rules: Rules, cause: str) -> None:
    """The next first-order anniversary after ``after``, at the local greeting hour."""
    assert state.activity.first_purchase_at is not None
    first = _local(state.activity.first_purchase_at, state.profile.timezone).date()
    hour = rules.care.greetings.local_hour
    years = max(1, _local(after, state.profile.timezone).year - first.year)
    due = _at_local_hour(
        _on(first.year + years, first.month, first.day), state.profile.timezone, hour
    )
    if due <= after:
        years += 1
        due = _at_local_hour(
            _on(first.year + years, first.month, first.day), state.profile.timezone, hour
        )
    _set(state, rules, due, ANNIVERSARY, "", cause, {"years": years})


def _action(
    state: CustomerState,
    rules: Rules,
    kind: _Kind,
    when: _When,
    *,
    cause: str,
    template_id: str,
    params: dict[str, ParamValue],
    reason: str,
    expires_after_days: float | None = 0,
) -> Action:
    """An action on the customer's first preferred channel (the contact policy may change it).

    Its id is deterministic: the rule's id, the customer and ``cause`` (the instance:
    an order, a case step, a year). ``expires_after_days``: 0 the rules' default,
    None never.
    """
    created = dt.datetime.fromtimestamp(when.at, dt.UTC)
    if expires_after_days == 0:
        expires_after_days = rules.care.expires_after_days
    channel = (
        state.profile.preferred_channels[0]
        if state.profile.preferred_channels
        else rules.care.default_channel
    )
    # Built without re-validation (one per care action on the hot path: schemas.base.built):
    # every field comes from this module; tests/unit/test_care.py validates each action
    # it sees.
    return built(
        Action,
        schema_version=1,
        action_id=action_id_for(kind.rule_id, state.customer_id, cause),
        customer_id=state.customer_id,
        action_type=kind.action_type,
        priority=kind.priority,
        channel=Channel(channel),
        template_id=template_id,
        params=params,
        reason=reason,
        rule_id=kind.rule_id,
        trigger_event_ids=[when.trigger],
        created_at=created,
        clock=when.clock,
        not_before=None,
        expires_at=(
            None if expires_after_days is None else created + dt.timedelta(days=expires_after_days)
        ),
    )
