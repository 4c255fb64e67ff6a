"""The contact policy: whether, when and on which channel an action goes out.

Pure functions, no I/O, no wall clock: :func:`decide` is a function of the
candidate action, the customer's :class:`ContactContext`, the logical decision
time ``now`` (the action's ``created_at``, or later when a deferred action is
re-evaluated at its ``not_before``) and :class:`~agents.rules.PolicyRules`.
The caller builds the context from the customer's state, records what was sent
with :func:`record_contact` and publishes every decision that did not send at
once as an :class:`~schemas.decisions.ActionDecision` (:func:`decision_record`).

Checks, in this order; the first that stops the action decides (domain.md §4,
§6, §9; the full text is ``docs/contact-policy.md``):

1. **Consent** per purpose and channel. The candidate channels are the
   action's own, then the customer's preferred ones, then
   ``policy.fallback_channels``; those without consent are skipped. Marketing
   needs an explicit grant (``policy.consent.marketing = "opt_in"``) or only
   lacks an explicit withdrawal (``"opt_out"``). Service messages
   (``Priority.SERVICE``) go out on their own legal basis (contract /
   legitimate interest) unless the customer withdrew *service* consent on that
   channel. No channel left -> suppressed, ``no_consent``.
2. **Guardrails** (marketing only): an open complaint, a return or a negative
   review less than N days ago, an open risk flag -> suppressed.
3. **Control group**: a deterministic share of customers per action type
   (marketing only unless ``policy.holdout.include_service``) -> held out:
   recorded, not sent. It comes after consent and guardrails, so the control
   group is drawn from customers who could have received the action.
   **One coupon a day** for a silent customer (``policy.coupons``): a coupon
   (a marketing action of a type in ``coupons.order``) on a local day that
   already had ``coupons.per_day`` of them is suppressed (or deferred to the
   next local day), ``frequency_cap``. The caller decides candidates of one
   moment in :func:`ranked` order, so the higher-ranked coupon goes first.
4. **Timing**, from ``max(now, action.not_before)``: quiet hours in the
   customer's time zone (marketing; service only with
   ``policy.quiet_hours.service``) move it to the end of quiet hours;
   frequency caps per channel and in total, per local day and week, move
   marketing to the start of the next local day / week with room. Service is
   never held back by a cap but counts towards it
   (``policy.caps.count_service``). Marketing takes the candidate channel with
   the earliest allowed time (ties: candidate order), so a channel over its cap
   is skipped while another has room. Earliest time = now -> sent; later ->
   deferred with ``not_before``.
5. **Expiry**: an action is valid strictly before its ``expires_at``; one whose
   earliest allowed time is at or after it is suppressed, ``expired``.

Local days, weeks and quiet hours follow the wall clock of the customer's zone
(``zoneinfo``): on a day with a DST change the day is 23 or 25 hours long; a
boundary that falls in the skipped hour is the instant the clock jumps past
it, and one in the repeated hour is its first occurrence.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.rules import PolicyRules
from schemas.actions import Action, Priority
from schemas.base import Channel
from schemas.decisions import ActionDecision, ReasonCode, Verdict, decision_id_for

__all__ = [
    "ContactContext",
    "PolicyDecision",
    "ReasonCode",
    "Verdict",
    "consented",
    "decide",
    "decision_record",
    "expired_on_delivery",
    "held_out",
    "is_coupon",
    "ranked",
    "record_contact",
]

DAY = 86_400.0

#: Index of each field in a stored contact-history row
#: ``[sent_at, channel, priority, action_type]`` (rows stored before the action type
#: was recorded have three fields).
H_AT, H_CHANNEL, H_PRIORITY, H_TYPE = range(4)
#: The priorities' values, read once (an enum member's ``.value`` is a property call).
_SERVICE, _MARKETING = Priority.SERVICE.value, Priority.MARKETING.value


@dataclass(frozen=True, slots=True)
class ContactContext:
    """What the policy needs to know about one customer, built by the caller from its state."""

    customer_id: str
    #: IANA zone name, e.g. ``"Europe/London"`` (an unknown name counts as UTC).
    timezone: str
    #: :class:`schemas.base.Channel` values, most preferred first.
    preferred_channels: tuple[str, ...]
    #: ``"marketing:email" -> granted`` (keys from :func:`agents.state.consent_key`).
    consents: Mapping[str, bool]
    #: Recently SENT actions: ``(sent_at epoch s, channel, priority[, action_type])``.
    history: Sequence[Sequence[Any]]
    open_complaints: int = 0
    last_return_at: float | None = None
    last_negative_review_at: float | None = None
    open_risk_flags: int = 0
    #: The latest purchase (None: never bought, so never silent).
    last_purchase_at: float | None = None
    #: Channel -> until when it is unreachable for this customer (messaging outcomes:
    #: bounces, failures, no opens; agents.outcomes). Skipped before that time.
    unreachable: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    verdict: Verdict
    #: The channel it goes on (sent, deferred) or would have gone on (held out).
    channel: str | None
    #: Deferred: the earliest allowed time (epoch seconds).
    not_before: float | None
    #: Why it was not sent at once; None for a plain send.
    code: ReasonCode | None
    #: Readable, without personal data.
    reason: str


def decide(action: Action, ctx: ContactContext, now: float, rules: PolicyRules) -> PolicyDecision:
    """The policy's verdict on ``action`` for this customer at logical time ``now``."""
    service = action.priority is Priority.SERVICE
    purpose = _SERVICE if service else _MARKETING
    candidates = _candidates(action, ctx, rules)
    allowed = [c for c in candidates if _consented(ctx.consents, purpose, c, rules)]
    if not allowed:
        return _stop(
            Verdict.SUPPRESS,
            ReasonCode.NO_CONSENT,
            f"No {purpose} consent on any candidate channel ({', '.join(candidates)}).",
        )
    consented = allowed
    closed = {c: u for c, u in ctx.unreachable.items() if now < u} if ctx.unreachable else {}
    if closed:
        reachable = [c for c in allowed if c not in closed]
        if not reachable:
            return _stop(
                Verdict.SUPPRESS,
                ReasonCode.CHANNEL_UNREACHABLE,
                "Every channel with consent is unreachable for now ("
                + ", ".join(f"{c} until {_iso(closed[c])}" for c in allowed)
                + "): their sends bounced, failed or went unopened.",
            )
        allowed = reachable
    if not service:
        guard = _guardrail(ctx, now, rules)
        if guard is not None:
            return _stop(Verdict.SUPPRESS, *guard)
    if not service or rules.holdout.include_service:
        share = rules.holdout.share_for(action.action_type.value)
        if held_out(ctx.customer_id, action.action_type.value, share):
            return PolicyDecision(
                Verdict.HOLD_OUT,
                allowed[0],
                None,
                ReasonCode.HELD_OUT,
                f"Control group: {share:.0%} of customers are held out of "
                f"{action.action_type.value} to measure its uplift.",
            )
    clock = _Clock(_zone(ctx.timezone), rules)
    start = now if action.not_before is None else max(now, action.not_before.timestamp())
    expires = None if action.expires_at is None else action.expires_at.timestamp()
    quiet = rules.quiet_hours.enabled and (not service or rules.quiet_hours.service)
    held: tuple[ReasonCode, str] | None = None  # what moved ``start`` on, if anything
    if _silent_coupon(action, ctx, now, rules):
        day = clock.day(start)
        if _coupons_on(ctx.history, day, clock, rules) >= rules.coupons.per_day:
            why = (
                f"one coupon per local day for a silent customer (no purchase for "
                f"{rules.coupons.silent_days} days): {rules.coupons.per_day} already sent "
                f"on {day.isoformat()}"
            )
            if rules.coupons.over_limit == "suppress":
                return _stop(Verdict.SUPPRESS, ReasonCode.FREQUENCY_CAP, f"Suppressed: {why}.")
            start = clock.day_start(day + dt.timedelta(days=1))
            held = (ReasonCode.FREQUENCY_CAP, why)
    if service:  # never held back by a cap: the first channel with consent
        plan = _earliest(allowed[0], start, now, expires, clock, quiet, None, held)
    else:
        sends = _counted_sends(ctx.history, clock, rules)
        plans = [_earliest(c, start, now, expires, clock, quiet, sends, held) for c in allowed]
        found = [p for p in plans if p.at is not None]
        if not found:
            return _stop(
                Verdict.SUPPRESS,
                ReasonCode.FREQUENCY_CAP,
                "No free slot within the frequency caps on any allowed channel.",
            )
        plan = min(found, key=lambda p: p.at if p.at is not None else float("inf"))
    # Unreachable channels the customer would have been contacted on before this one.
    passed = consented[: consented.index(plan.channel)] if closed else []
    skipped = {c: closed[c] for c in passed if c in closed}
    return _timed(action, plan, now, expires, allowed, skipped)


def expired_on_delivery(action: Action, wall: float) -> PolicyDecision | None:
    """On the live clock an action goes out at the wall clock ``wall``: one whose
    ``expires_at`` has passed by then (history replayed on the live clock, a
    backlog after an outage) is suppressed, ``expired``; None if it is still valid."""
    if action.expires_at is None:
        return None
    expires = action.expires_at.timestamp()
    if wall < expires:
        return None
    return _stop(
        Verdict.SUPPRESS,
        ReasonCode.EXPIRED,
        f"Expired: it expired at {_iso(expires)}, before the worker reached it "
        f"(live clock at {_iso(wall)}).",
    )


def held_out(customer_id: str, action_type: str, share: float) -> bool:
    """Whether the customer is in the control group of ``action_type`` for a ``share`` (0..1).

    Deterministic and stable across processes and versions (blake2b of the
    customer id and action type, not Python's salted ``hash``): the same
    customer is always in or out for the same action type, and the groups of
    different action types are independent.
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.blake2b(
        f"{customer_id}\x1f{action_type}".encode(), digest_size=8, person=b"crm.holdout"
    ).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def ranked(candidates: Sequence[Action], rules: PolicyRules) -> list[Action]:
    """``candidates`` in the order the policy decides them: the coupons among them
    (:func:`is_coupon`) by their place in ``policy.coupons.order``, in the slots the
    coupons hold; every other action keeps its place. Stable and deterministic."""
    slots = [i for i, action in enumerate(candidates) if is_coupon(action, rules)]
    out = list(candidates)
    if len(slots) > 1:
        rank = rules.coupons.rank
        coupons = sorted((candidates[i] for i in slots), key=lambda a: rank[a.action_type.value])
        for i, action in zip(slots, coupons, strict=True):
            out[i] = action
    return out


def is_coupon(action: Action, rules: PolicyRules) -> bool:
    """Whether ``action`` counts as a coupon: marketing, of a type in ``coupons.order``."""
    return (
        rules.coupons.enabled
        and action.priority is Priority.MARKETING
        and action.action_type.value in rules.coupons.rank
    )


def record_contact(
    history: list[list[Any]],
    at: float,
    channel: str,
    priority: str,
    keep_days: int,
    max_entries: int,
    action_type: str | None = None,
) -> None:
    """Add a sent action to the contact history (sorted by time), keeping it bounded.

    Drops rows more than ``keep_days`` before the newest one, then the oldest
    rows beyond ``max_entries`` (``policy.history_days`` / ``policy.history_max``).
    ``action_type`` (recorded as a fourth field) lets the coupon limit count coupons.
    """
    row = [at, channel, priority] if action_type is None else [at, channel, priority, action_type]
    bisect.insort(history, row, key=lambda row: row[H_AT])
    horizon = history[-1][H_AT] - keep_days * DAY
    old = bisect.bisect_left(history, horizon, key=lambda row: row[H_AT])
    if old:
        del history[:old]
    if len(history) > max_entries:
        del history[: len(history) - max_entries]


def decision_record(action: Action, decision: PolicyDecision, decided_at: float) -> ActionDecision:
    """The :class:`~schemas.decisions.ActionDecision` for ``decision`` on ``action``."""
    at = _utc(decided_at)
    return ActionDecision(
        decision_id=decision_id_for(action.action_id, decision.verdict.value, at),
        action_id=action.action_id,
        customer_id=action.customer_id,
        action_type=action.action_type,
        decision=decision.verdict,
        code=decision.code,
        reason=decision.reason,
        channel=None if decision.channel is None else Channel(decision.channel),
        not_before=None if decision.not_before is None else _utc(decision.not_before),
        decided_at=at,
    )


# -- consent, channels, guardrails ---------------------------------------------


def _candidates(action: Action, ctx: ContactContext, rules: PolicyRules) -> list[str]:
    """The action's channel, the preferred ones, the fallback order; each once."""
    order = [action.channel.value, *ctx.preferred_channels, *rules.fallback_channels]
    return list(dict.fromkeys(order))


def consented(consents: Mapping[str, bool], purpose: str, channel: str, rules: PolicyRules) -> bool:
    """Whether ``purpose`` (service, marketing) may use ``channel`` for these consents:
    the customer's record, else the policy's default (marketing opt-in or opt-out)."""
    return _consented(consents, purpose, channel, rules)


def _consented(
    consents: Mapping[str, bool], purpose: str, channel: str, rules: PolicyRules
) -> bool:
    given = consents.get(f"{purpose}:{channel}")
    if purpose == _MARKETING and rules.consent.marketing == "opt_in":
        return given is True
    return given is not False


def _guardrail(
    ctx: ContactContext, now: float, rules: PolicyRules
) -> tuple[ReasonCode, str] | None:
    """The first guardrail that holds marketing back, with its reason; None if none does."""
    g = rules.guardrails
    if g.open_complaint and ctx.open_complaints > 0:
        return (
            ReasonCode.OPEN_COMPLAINT,
            f"No marketing while a complaint is open ({ctx.open_complaints} open).",
        )
    for code, since, days, what in (
        (ReasonCode.RECENT_RETURN, ctx.last_return_at, g.return_days, "return"),
        (
            ReasonCode.RECENT_NEGATIVE_REVIEW,
            ctx.last_negative_review_at,
            g.negative_review_days,
            "negative review",
        ),
    ):
        if days and since is not None and now < since + days * DAY:
            until = _iso(since + days * DAY)
            return code, f"No marketing within {days} days after a {what} (until {until})."
    if g.open_risk_flag and ctx.open_risk_flags > 0:
        return (
            ReasonCode.OPEN_RISK_FLAG,
            f"No marketing while a risk flag awaits review ({ctx.open_risk_flags} open).",
        )
    return None


# -- one coupon a day ------------------------------------------------------------


def _silent_coupon(action: Action, ctx: ContactContext, now: float, rules: PolicyRules) -> bool:
    """A coupon for a customer whose last purchase is ``silent_days`` or more ago."""
    last = ctx.last_purchase_at
    return (
        last is not None
        and now - last >= rules.coupons.silent_days * DAY
        and is_coupon(action, rules)
    )


def _coupons_on(
    history: Sequence[Sequence[Any]], day: dt.date, clock: _Clock, rules: PolicyRules
) -> int:
    """Coupons sent on the local ``day`` (rows without an action type are not counted)."""
    rank = rules.coupons.rank
    marketing = _MARKETING
    return sum(
        1
        for row in history
        if len(row) > H_TYPE
        and row[H_TYPE] in rank
        and row[H_PRIORITY] == marketing
        and clock.day(row[H_AT]) == day
    )


# -- timing: quiet hours, caps, expiry ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    channel: str
    #: Earliest allowed time; None: no slot found.
    at: float | None
    #: The first thing that held it back, and in words.
    code: ReasonCode | None
    why: str


#: Per zone, per hour of UTC time it was asked about (``t // 3600``): the epoch in
#: local time, ``1970-01-01 + offset``, or :data:`_VARIES` for an hour in which the
#: offset changes. At most :data:`_HOURS_KEPT` hours in all zones together: then every
#: zone's table starts again (about 4 MB when full; a customer base in every one of
#: tzdata's ~600 zones would otherwise keep hundreds of hours in each).
_OFFSETS: dict[dt.tzinfo, dict[float, Any]] = {}
_HOURS_KEPT = 65_536
_learned = 0  # hours in the tables
_EPOCH = dt.datetime(1970, 1, 1)
#: One local epoch per offset, shared by every hour and zone with that offset.
_EPOCHS: dict[dt.timedelta, dt.datetime] = {}
_VARIES: Any = object()
#: The last instant the learned offsets serve (epoch seconds, the year 3000); the zone
#: itself answers for the rest, and for instants before 1970.
_LEARNED_UNTIL = 32503680000.0


class _Clock:
    """Local wall-clock arithmetic in one zone (DST-correct).

    :meth:`wall` gives what ``datetime.fromtimestamp(t, zone)`` gives (naive), to the
    microsecond, from the zone's offset in the hour of UTC time ``t`` falls in, learned
    once per zone and hour: 0.6 µs a call instead of 1.14 (a decision reads the local
    date of each row of the contact history). ``timedelta(0, t)`` rounds ``t`` to the
    microsecond as ``fromtimestamp`` does, half to even. An hour's offset is the one at
    its first second and at the next hour's first second, if those agree (a rounding
    may reach the next hour's first second); else that hour asks the zone every time.
    That holds if no zone changes its offset twice within an hour: none in tzdata does
    (``tests/unit/test_policy_clock.py`` reads every zone's transitions)."""

    __slots__ = ("hours", "rules", "week_start", "zone")

    def __init__(self, zone: dt.tzinfo, rules: PolicyRules) -> None:
        self.zone = zone
        self.rules = rules
        self.week_start = rules.week_start
        hours = _OFFSETS.get(zone)
        if hours is None:
            hours = _OFFSETS[zone] = {}
        self.hours = hours

    def wall(self, t: float) -> dt.datetime:
        """The naive local wall-clock time at instant ``t`` (``fold`` left 0: no caller
        reads it, and naive times compare without it)."""
        epoch = self.hours.get(t // 3600)
        if epoch is None:
            epoch = self._learn(t)
        if epoch is not _VARIES:
            return epoch + dt.timedelta(0, t)
        return dt.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)

    def day(self, t: float) -> dt.date:
        """The local date at instant ``t``."""
        return self.wall(t).date()

    def _learn(self, t: float) -> Any:
        """The local epoch for the hour ``t`` falls in (see the class), or
        :data:`_VARIES`; kept for instants from 1970 to the year 3000."""
        global _learned
        if not 0.0 <= t < _LEARNED_UNTIL:
            return _VARIES
        hour = t // 3600
        first, then = (
            dt.datetime.fromtimestamp(s, self.zone).utcoffset()
            for s in (int(hour) * 3600, int(hour) * 3600 + 3600)
        )
        epoch = _VARIES
        if first is not None and first == then and not first % dt.timedelta(seconds=1):
            epoch = _EPOCHS.get(first)
            if epoch is None:
                epoch = _EPOCHS[first] = _EPOCH + first
        if _learned >= _HOURS_KEPT:
            for hours in _OFFSETS.values():
                hours.clear()
            _learned = 0
        self.hours[hour] = epoch
        _learned += 1
        return epoch

    def instants(self, wall: dt.datetime) -> list[float]:
        """The instants the local clock reaches ``wall``, ascending: one; two in a
        repeated hour; in a skipped hour, the instant the clock jumps past it."""
        lo, hi = sorted(wall.replace(tzinfo=self.zone, fold=f).timestamp() for f in (0, 1))
        if self.wall(lo) == wall:
            return [lo] if lo == hi or self.wall(hi) != wall else [lo, hi]
        # In the gap: the clock shows less than ``wall`` at ``lo`` and more at ``hi``.
        while hi - lo > 1:
            mid = float((lo + hi) // 2)
            if self.wall(mid) >= wall:
                hi = mid
            else:
                lo = mid
        return [hi]

    def day_start(self, day: dt.date) -> float:
        return self.instants(dt.datetime.combine(day, dt.time()))[0]

    def week_of(self, day: dt.date) -> dt.date:
        return day - dt.timedelta(days=(day.weekday() - self.week_start) % 7)

    def is_quiet(self, t: float) -> bool:
        q = self.rules.quiet_hours
        now = self.wall(t).time()
        if q.start_time < q.end_time:
            return q.start_time <= now < q.end_time
        return now >= q.start_time or now < q.end_time

    def quiet_end(self, t: float) -> float:
        """The first instant after ``t`` (inside quiet hours) at which they end."""
        q = self.rules.quiet_hours
        local = self.wall(t)
        day = local.date()
        if q.start_time > q.end_time and local.time() >= q.start_time:
            day += dt.timedelta(days=1)
        for _ in range(2):
            for at in self.instants(dt.datetime.combine(day, q.end_time)):
                if at > t:
                    return at
            day += dt.timedelta(days=1)
        raise AssertionError("quiet hours end within two days")  # pragma: no cover


#: A counted send: (local date, channel).
_Send = tuple[dt.date, str]


def _counted_sends(
    history: Sequence[Sequence[Any]], clock: _Clock, rules: PolicyRules
) -> list[_Send]:
    count_service = rules.caps.count_service
    return [
        (clock.day(row[H_AT]), row[H_CHANNEL])
        for row in history
        if count_service or row[H_PRIORITY] != _SERVICE
    ]


def _earliest(
    channel: str,
    start: float,
    now: float,
    expires: float | None,
    clock: _Clock,
    quiet: bool,
    sends: list[_Send] | None,
    held: tuple[ReasonCode, str] | None = None,
) -> _Plan:
    """The earliest time from ``start`` at which ``channel`` is outside quiet hours (if
    ``quiet``) and under its caps (if ``sends`` are given); stops at ``expires``.
    ``held``: what moved ``start`` past ``now`` (default: the action's ``not_before``)."""
    code: ReasonCode | None = None
    why = ""
    if start > now:
        code, why = held or (ReasonCode.NOT_YET_DUE, "its scheduled not_before")
    t = start
    # Each step passes quiet hours or a period holding counted sends: this bounds the loop.
    for _ in range(4 * len(sends or ()) + 16):
        if expires is not None and t >= expires:
            break
        if quiet and clock.is_quiet(t):
            step, step_code = clock.quiet_end(t), ReasonCode.QUIET_HOURS
            q = clock.rules.quiet_hours
            step_why = f"quiet hours {q.start}-{q.end} local time"
        elif sends is not None and (blocked := _cap_block(channel, t, clock, sends)) is not None:
            step, step_why = blocked
            step_code = ReasonCode.FREQUENCY_CAP
        else:
            break
        if code is None:
            code, why = step_code, step_why
        t = step
    else:
        return _Plan(channel, None, code, why)
    return _Plan(channel, t, code, why)


def _cap_block(
    channel: str, t: float, clock: _Clock, sends: list[_Send]
) -> tuple[float, str] | None:
    """If a cap is full at ``t``: the start of the next local day / week, and which cap."""
    caps = clock.rules.caps
    day = clock.day(t)
    week = clock.week_of(day)
    week_end = week + dt.timedelta(days=7)
    day_all = week_all = day_channel = week_channel = 0
    for sent_day, sent_channel in sends:
        if week <= sent_day < week_end:
            week_all += 1
            same = sent_channel == channel
            week_channel += same
            if sent_day == day:
                day_all += 1
                day_channel += same
    if week_channel >= caps.per_channel_week:
        full = f"{channel} reached its cap of {caps.per_channel_week} per local week"
    elif caps.total_week is not None and week_all >= caps.total_week:
        full = f"the total cap of {caps.total_week} per local week is reached"
    else:
        full = ""
    if full:
        return clock.day_start(week_end), full
    if day_channel >= caps.per_channel_day:
        full = f"{channel} reached its cap of {caps.per_channel_day} per local day"
    elif caps.total_day is not None and day_all >= caps.total_day:
        full = f"the total cap of {caps.total_day} per local day is reached"
    if full:
        return clock.day_start(day + dt.timedelta(days=1)), full
    return None


def _timed(
    action: Action,
    plan: _Plan,
    now: float,
    expires: float | None,
    allowed: list[str],
    closed: Mapping[str, float],
) -> PolicyDecision:
    at = plan.at
    assert at is not None
    if expires is not None and at >= expires:
        if at <= now:
            why = f"it expired at {_iso(expires)}, before it could be sent"
        else:
            why = (
                f"held back by {plan.why} until {_iso(at)}, not before it expires at "
                f"{_iso(expires)}"
            )
        return _stop(Verdict.SUPPRESS, ReasonCode.EXPIRED, f"Expired: {why}.")
    switched = "" if plan.channel == action.channel.value else _switch(action, allowed, closed)
    if closed and action.channel.value not in closed:
        switched += (
            " (skipped as unreachable: "
            + ", ".join(f"{c} until {_iso(u)}" for c, u in closed.items())
            + ")"
        )
    if at <= now:
        # Moved past an unreachable channel: not a plain send, so it is recorded.
        code = ReasonCode.CHANNEL_UNREACHABLE if closed else None
        return PolicyDecision(
            Verdict.SEND, plan.channel, None, code, f"Sent on {plan.channel}{switched}."
        )
    return PolicyDecision(
        Verdict.DEFER,
        plan.channel,
        at,
        plan.code,
        f"Deferred to {_iso(at)} on {plan.channel}{switched}: {plan.why}.",
    )


def _switch(action: Action, allowed: list[str], closed: Mapping[str, float]) -> str:
    requested = action.channel.value
    if requested in closed:
        return (
            f" instead of {requested} (unreachable until {_iso(closed[requested])}: "
            f"bounced, failed or unopened)"
        )
    if requested not in allowed:
        return f" instead of {requested} (no consent there)"
    return f" instead of {requested} (held back longer there by a frequency cap)"


def _stop(verdict: Verdict, code: ReasonCode, reason: str) -> PolicyDecision:
    return PolicyDecision(verdict, None, None, code, reason)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def _iso(t: float) -> str:
    return _utc(t).isoformat(timespec="seconds").replace("+00:00", "Z")
