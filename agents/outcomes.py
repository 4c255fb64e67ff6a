"""Closing the loop (domain.md §6): what became of the actions, what it does to the
contact policy, and which purchase converts which action. Pure: no I/O, no clock but
the events' own times; counts are returned, never incremented here.

**Outcomes** (``crm.action-outcomes``, :mod:`schemas.outcomes`), folded per customer in
event-time order like every other input (:func:`on_outcome`):

- ``unsubscribed`` / ``spam_reported`` withdraw **marketing** consent on the outcome's
  channel (``consents["marketing:<channel>"] = False``, as a ``customer.consent_changed``
  withdrawal would); a later grant gives it back.
- ``outcomes.bounces`` bounced or failed sends in a row on a channel, or
  ``outcomes.unopened_deliveries`` deliveries in a row without an open or click on a
  channel that reports opens (``outcomes.unopened_channels``), make the channel
  **unreachable** for the customer for ``outcomes.unreachable_days``: the contact
  policy then skips it (:func:`closed_channels`, ``ContactContext.unreachable``) and
  falls back to the next candidate channel.
- Each of these is published as an ``ActionDecision`` with verdict ``channel_closed``.
- An outcome about an action the customer's state does not know is applied all the
  same (consent and reach are about the channel) and counted as ``unknown``.

**Attribution** (:func:`on_order`): a purchase (``order.placed``) at or after an action
(sent, or held out: the action the customer *would* have received) and before its
window ends (``outcomes.attribution_days``, per type ``outcomes.attribution_by_type``)
converts the **latest** such action not converted yet; one purchase converts at most
one action and an action is converted at most once. The conversion's revenue is the
order's total less later refunds and cancellations (each publishes the conversion again
with a higher ``revision``). Ids are uuid5 of action and order ids: a replay repeats
every conversion.

State: one :class:`OutcomeBook` per customer (``CustomerState.outcomes``, ``None``
until the customer has an action or an outcome), bounded by ``outcomes.keep_actions``
and ``outcomes.keep_orders``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agents.rules import Rules
from schemas import orders
from schemas.actions import Action, ActionType
from schemas.base import Channel
from schemas.conversions import Conversion, Group, conversion_id_for
from schemas.decisions import ActionDecision, ReasonCode, Verdict, decision_id_for
from schemas.outcomes import OutcomeKind

if TYPE_CHECKING:
    from schemas.outcomes import OutcomeEvent


class CustomerState(Protocol):
    """What this module reads and changes of ``agents.state.CustomerState`` (which holds
    an :class:`OutcomeBook`; a Protocol, so the state module alone imports this one)."""

    customer_id: str
    profile: Any  # agents.state.Profile: ``consents`` ("marketing:email" -> granted)
    outcomes: OutcomeBook | None


DAY = 86_400.0

#: An action row: [action id, action type, channel, at, group, converted (0/1)].
A_ID, A_TYPE, A_CHANNEL, A_AT, A_GROUP, A_CONVERTED = range(6)
#: A channel row: [bounced/failed in a row, delivered without an open in a row,
#: unreachable until (epoch s) or None].
C_FAILS, C_UNOPENED, C_UNTIL = range(3)
#: A converted order: [conversion id, action id, action type, channel, action at, group,
#: gross, deducted, revision, converted at, currency].
(
    O_ID,
    O_ACTION,
    O_TYPE,
    O_CHANNEL,
    O_ACTION_AT,
    O_GROUP,
    O_GROSS,
    O_DEDUCTED,
    O_REVISION,
    O_AT,
    O_CURRENCY,
) = range(11)

#: The label of an outcome about an action the customer's state does not know.
UNKNOWN = "unknown"


@dataclass(slots=True)
class OutcomeBook:
    """One customer's actions (for attribution), channel reach and converted orders."""

    #: Sent and held-out actions, oldest first (see ``A_*``). Rows here and below are
    #: replaced when they change, never changed in place: copies share them.
    actions: list[list[Any]] = field(default_factory=list)
    #: Channel -> its reach row (see ``C_*``); only channels with something to remember.
    channels: dict[str, list[Any]] = field(default_factory=dict)
    #: Order id -> its conversion (see ``O_*``), oldest first.
    orders: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"actions": self.actions, "channels": self.channels, "orders": self.orders}

    def stored(self) -> list[Any]:
        """The stored form (layout 3 of the customer state): ``[actions, channels, orders]``."""
        return [self.actions, self.channels, self.orders]

    @classmethod
    def from_stored(cls, data: list[Any]) -> OutcomeBook:
        actions, channels, orders = data
        return cls(
            [list(r) for r in actions],
            {k: list(v) for k, v in channels.items()},
            {k: list(v) for k, v in orders.items()},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutcomeBook:
        return cls(
            [list(r) for r in data.get("actions", ())],
            {k: list(v) for k, v in data.get("channels", {}).items()},
            {k: list(v) for k, v in data.get("orders", {}).items()},
        )

    def copy(self) -> OutcomeBook:
        """An independent copy: the containers are copied, the rows shared (a row is
        replaced by a changed copy, never changed in place, as ``CustomerState.days``)."""
        return OutcomeBook(list(self.actions), dict(self.channels), dict(self.orders))

    def find(self, action_id: str) -> list[Any] | None:
        for row in reversed(self.actions):
            if row[A_ID] == action_id:
                return row
        return None


@dataclass(slots=True)
class OutcomeEffect:
    """What one outcome did: its metric labels and the channel_closed records."""

    #: (action type or "unknown", channel, outcome kind): ``crm_action_outcomes_total``.
    labels: tuple[str, str, str]
    records: list[ActionDecision] = field(default_factory=list)


def book_of(state: CustomerState) -> OutcomeBook:
    if state.outcomes is None:
        state.outcomes = OutcomeBook()
    return state.outcomes


def closed_channels(state: CustomerState) -> dict[str, float]:
    """Channel -> the time until which it is unreachable (the policy compares with its
    decision time)."""
    book = state.outcomes
    if book is None or not book.channels:
        return {}
    return {c: row[C_UNTIL] for c, row in book.channels.items() if row[C_UNTIL] is not None}


def note_action(
    state: CustomerState, action: Action, channel: str, at: float, group: Group, rules: Rules
) -> None:
    """Remember an action sent (``treated``) or held out at ``at`` for attribution."""
    cfg = rules.outcomes
    if not cfg.enabled:
        return
    book = book_of(state)
    ring = book.actions
    if book.find(action.action_id) is not None:
        return  # decided again (a deferred action is recorded once, when it goes out)
    row = [action.action_id, action.action_type.value, channel, at, group.value, 0]
    i = len(ring)
    while i and ring[i - 1][A_AT] > at:
        i -= 1
    ring.insert(i, row)
    # Actions whose window has closed can convert nothing any more (looked for only
    # once the oldest one's has: this runs on every send).
    if ring[0][A_AT] + cfg.window_days(ring[0][A_TYPE]) * DAY <= at:
        ring[:] = [r for r in ring if r[A_AT] + cfg.window_days(r[A_TYPE]) * DAY > at]
    if len(ring) > cfg.keep_actions:
        del ring[: len(ring) - cfg.keep_actions]


def on_outcome(state: CustomerState, event: OutcomeEvent, rules: Rules) -> OutcomeEffect:
    """Fold one messaging outcome: consent, reach, and the channel_closed records."""
    cfg = rules.outcomes
    kind = event.kind
    channel = event.channel.value
    at: float = event.at
    book = state.outcomes
    row = None if book is None else book.find(event.action_id)
    action_type = None if row is None else str(row[A_TYPE])
    effect = OutcomeEffect((action_type or UNKNOWN, channel, kind.value))
    if not cfg.enabled:
        return effect
    action_id: str = event.action_id

    def closed(code: ReasonCode, reason: str) -> None:
        effect.records.append(_closed(state, action_id, action_type, channel, at, code, reason))

    if kind in (OutcomeKind.UNSUBSCRIBED, OutcomeKind.SPAM_REPORTED):
        state.profile.consents[f"marketing:{channel}"] = False
        unsubscribed = kind is OutcomeKind.UNSUBSCRIBED
        what = "unsubscribed" if unsubscribed else "reported the message as spam"
        closed(
            ReasonCode.UNSUBSCRIBED if unsubscribed else ReasonCode.SPAM_REPORTED,
            f"Marketing consent on {channel} withdrawn: the customer {what}. No marketing "
            f"on {channel} until they grant it again.",
        )
        return effect
    book = book_of(state)
    reach = list(book.channels.get(channel, (0, 0, None)))  # this book's own copy
    book.channels[channel] = reach
    if kind in (OutcomeKind.BOUNCED, OutcomeKind.FAILED):
        reach[C_FAILS] += 1
        if reach[C_FAILS] >= cfg.bounces:
            why = f"{reach[C_FAILS]} sends in a row bounced or failed"
            closed(ReasonCode.CHANNEL_UNREACHABLE, _unreachable(reach, channel, at, why, cfg))
    elif kind is OutcomeKind.DELIVERED:
        reach[C_FAILS] = 0
        if cfg.unopened_deliveries and channel in cfg.unopened_channels:
            reach[C_UNOPENED] += 1
            if reach[C_UNOPENED] >= cfg.unopened_deliveries:
                why = f"{reach[C_UNOPENED]} deliveries in a row without an open or click"
                closed(ReasonCode.CHANNEL_UNREACHABLE, _unreachable(reach, channel, at, why, cfg))
    else:  # opened, clicked: it reaches them
        reach[C_FAILS] = 0
        reach[C_UNOPENED] = 0
    if (
        reach[C_FAILS] == 0
        and reach[C_UNOPENED] == 0
        and (reach[C_UNTIL] is None or reach[C_UNTIL] <= at)
    ):
        del book.channels[channel]  # nothing left to remember
    return effect


def _unreachable(reach: list[Any], channel: str, at: float, why: str, cfg: Any) -> str:
    until = at + cfg.unreachable_days * DAY
    reach[C_FAILS] = 0
    reach[C_UNOPENED] = 0
    reach[C_UNTIL] = until
    return (
        f"{channel} unreachable for this customer until {_iso(until)}: {why}; "
        f"the next preferred channel is used."
    )


def _closed(
    state: CustomerState,
    action_id: str,
    action_type: str | None,
    channel: str,
    at: float,
    code: ReasonCode,
    reason: str,
) -> ActionDecision:
    when = _utc(at)
    return ActionDecision(
        decision_id=decision_id_for(
            action_id, f"{Verdict.CHANNEL_CLOSED.value}:{code.value}", when
        ),
        action_id=action_id,
        customer_id=state.customer_id,
        action_type=None if action_type is None else ActionType(action_type),
        decision=Verdict.CHANNEL_CLOSED,
        code=code,
        reason=reason,
        channel=Channel(channel),
        not_before=None,
        decided_at=when,
    )


def on_order(state: CustomerState, event: Any, rules: Rules) -> list[Conversion]:
    """Attribute a purchase, or revise a converted order's revenue after a refund or a
    cancellation; the conversion records to publish."""
    book = state.outcomes
    if book is None or not rules.outcomes.enabled:
        return []
    at: float = event.at
    if isinstance(event, orders.OrderPlaced):
        return _convert(state, book, event, at, rules)
    stored = book.orders.get(event.order_id)
    if stored is None:
        return []
    converted = list(stored)  # this book's own copy
    if isinstance(event, orders.OrderReturned):
        amount = event.refund_amount
    elif isinstance(event, orders.OrderCancelled):
        amount = converted[O_GROSS] - converted[O_DEDUCTED]  # nothing of it is left
    else:
        return []
    converted[O_DEDUCTED] = round(min(converted[O_GROSS], converted[O_DEDUCTED] + amount), 2)
    converted[O_REVISION] += 1
    book.orders[event.order_id] = converted
    return [_record(state, event.order_id, converted, at)]


def _convert(
    state: CustomerState, book: OutcomeBook, event: orders.OrderPlaced, at: float, rules: Rules
) -> list[Conversion]:
    if event.order_id in book.orders:
        return []
    cfg = rules.outcomes
    ring = book.actions
    for i in range(len(ring) - 1, -1, -1):  # newest first: the latest qualifying one wins
        row = ring[i]
        if row[A_CONVERTED] or row[A_AT] > at:
            continue
        if at >= row[A_AT] + cfg.window_days(row[A_TYPE]) * DAY:
            continue
        ring[i] = [*row[:A_CONVERTED], 1]
        conversion = [
            conversion_id_for(row[A_ID], event.order_id),
            row[A_ID],
            row[A_TYPE],
            row[A_CHANNEL],
            row[A_AT],
            row[A_GROUP],
            round(event.amount, 2),
            0.0,
            0,
            at,
            event.currency,
        ]
        book.orders[event.order_id] = conversion
        if len(book.orders) > cfg.keep_orders:
            del book.orders[next(iter(book.orders))]
        return [_record(state, event.order_id, conversion, at)]
    return []


def _record(state: CustomerState, order_id: str, row: list[Any], as_of: float) -> Conversion:
    return Conversion(
        conversion_id=row[O_ID],
        revision=row[O_REVISION],
        action_id=row[O_ACTION],
        customer_id=state.customer_id,
        action_type=ActionType(row[O_TYPE]),
        group=Group(row[O_GROUP]),
        channel=None if row[O_CHANNEL] is None else Channel(row[O_CHANNEL]),
        action_at=_utc(row[O_ACTION_AT]),
        order_id=order_id,
        currency=row[O_CURRENCY],
        revenue=max(0.0, round(row[O_GROSS] - row[O_DEDUCTED], 2)),
        converted_at=_utc(row[O_AT]),
        as_of=_utc(as_of),
    )


def _utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def _iso(t: float) -> str:
    return _utc(t).isoformat(timespec="seconds").replace("+00:00", "Z")
