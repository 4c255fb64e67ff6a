"""What a customer's lookup shows that no other part of the state keeps: the journal.

Service staff act on a customer's recent contact-policy outcomes (sent, deferred,
suppressed, held out: each with channel and reason), on the evidence of open
flags, and on the customer's recent events. The fold records them here
(:func:`note_outcome`, :func:`note_flag`, :func:`note_event`); the lookup
(:mod:`agents.lookup`) reads them. Pure: no I/O, no clock but the times given.

Bounded: ``model.recent_actions`` outcomes, ``model.recent_events`` events
(browsing and routine messaging outcomes are left out: most of the traffic, and
staff do not act on a page view or a delivery), and the reason and evidence of the
flags the state still holds. Rows hold ids, types, codes, channels and amounts --
never free text from an event (notes, review texts, search queries) or contact
details.

Stored form (in ``CustomerState.journal``): ``{"outcomes": [...], "events": [...],
"flags": {...}}``, rows as JSON arrays (layouts: the ``O_*`` and ``E_*`` indexes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas import browsing, commands, complaints, customers, orders, outcomes, reviews
from schemas.registry import kinds

#: Index of each field in an outcome row.
O_AT, O_ACTION_ID, O_TYPE, O_VERDICT, O_CHANNEL, O_CODE, O_NOT_BEFORE, O_RULE, O_REASON = range(9)
#: Index of each field in an event row: ``[at, type, ref]`` (ref: ids, amounts, codes).
E_AT, E_TYPE, E_REF = range(3)
#: Index of each field of a flag's note: ``[reason, evidence event ids]``.
F_REASON, F_EVIDENCE = range(2)

#: Longest reason kept per outcome (the contract allows 500; the lookup needs the gist).
MAX_REASON = 240
#: Evidence ids kept per flag.
MAX_EVIDENCE = 10

#: The keys of the stored form.
JOURNAL_FIELDS = frozenset({"outcomes", "events", "flags"})

#: Left out of the timeline: browsing (most of the traffic) and the routine messaging
#: outcomes (a delivery, open, click per action); bounces, failures, unsubscribes and
#: spam reports stay in.
_LEFT_OUT = (
    browsing.ItemView,
    browsing.Search,
    browsing.CartAdd,
    browsing.Favorite,
    outcomes.OutcomeDelivered,
    outcomes.OutcomeOpened,
    outcomes.OutcomeClicked,
)


_LEFT_OUT_KINDS = kinds(_LEFT_OUT)  # for ``type(event) in`` (schemas.registry.kinds)


@dataclass(slots=True)
class Journal:
    """Recent outcomes and events of one customer, and their open flags' evidence."""

    #: Contact-policy outcomes, oldest first (layout: ``O_*``).
    outcomes: list[list[Any]] = field(default_factory=list)
    #: Recent events but browsing, oldest first (layout: ``E_*``).
    events: list[list[Any]] = field(default_factory=list)
    #: flag id -> ``[reason, evidence event ids]`` (layout: ``F_*``).
    flags: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": self.outcomes, "events": self.events, "flags": self.flags}

    def stored(self) -> list[Any]:
        """The stored form (layout 3 of the customer state): ``[outcomes, events, flags]``."""
        return [self.outcomes, self.events, self.flags]

    @classmethod
    def from_stored(cls, data: list[Any]) -> Journal:
        outcomes, events, flags = data
        return cls(
            [list(r) for r in outcomes],
            [list(r) for r in events],
            {k: [v[0], list(v[1])] for k, v in flags.items()},
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Journal:
        if data is None:
            return cls()
        return cls(
            [list(r) for r in data.get("outcomes", ())],
            [list(r) for r in data.get("events", ())],
            {k: [v[0], list(v[1])] for k, v in data.get("flags", {}).items()},
        )

    def copy(self) -> Journal:
        """Lists copied, rows shared (rows are replaced, never changed in place)."""
        return Journal(list(self.outcomes), list(self.events), dict(self.flags))

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.events or self.flags)


def note_outcome(
    journal: Journal,
    at: float,
    action_id: str,
    action_type: str,
    verdict: str,
    channel: str | None,
    code: str | None,
    not_before: float | None,
    rule_id: str,
    reason: str,
    keep: int,
) -> None:
    """Record one contact-policy outcome (the newest ``keep`` are kept)."""
    if keep <= 0:
        return
    row = [at, action_id, action_type, verdict, channel, code, not_before, rule_id]
    row.append(reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…")
    ring = journal.outcomes
    if ring and ring[-1][:O_REASON] == row[:O_REASON]:
        return  # the same outcome again (a batch done again)
    ring.append(row)
    if len(ring) > keep:
        del ring[: len(ring) - keep]


def note_flag(journal: Journal, flag_id: str, reason: str, evidence: list[str], held: Any) -> None:
    """Record a raised flag's reason and evidence; drop notes of flags no longer ``held``
    (the state's ``flags``: its bound applies here too)."""
    journal.flags[flag_id] = [reason[:MAX_REASON], list(evidence[-MAX_EVIDENCE:])]
    for old in [f for f in journal.flags if f not in held]:
        del journal.flags[old]


def note_event(journal: Journal, event: BaseModel, keep: int) -> None:
    """Record an applied event in the timeline (not browsing; the newest ``keep``)."""
    if keep <= 0 or type(event) in _LEFT_OUT_KINDS:
        return
    at: float = event.at  # type: ignore[attr-defined]
    row = [at, event.type, _ref(event)]  # type: ignore[attr-defined]
    ring = journal.events
    if not ring or ring[-1][E_AT] <= at:
        ring.append(row)
    else:  # a late event: in its place by time
        i = len(ring)
        while i > 0 and ring[i - 1][E_AT] > at:
            i -= 1
        ring.insert(i, row)
    if len(ring) > keep:
        del ring[: len(ring) - keep]


def _ref(event: BaseModel) -> str:
    """What identifies the event for staff: ids, amounts, codes (never free text)."""
    if isinstance(event, orders.OrderReturned):
        return f"order {event.order_id}, refund {event.refund_amount:.2f}"
    if isinstance(event, orders.OrderPlaced | orders.OrderCancelled):
        return f"order {event.order_id}, {event.amount:.2f} {event.currency}"
    if isinstance(event, orders._OrderEvent):
        return f"order {event.order_id}"
    if isinstance(event, complaints.ComplaintOpened):
        return (
            f"complaint {event.complaint_id}: {event.complaint_type.value}, "
            f"{event.severity.value}, via {event.channel.value}"
        )
    if isinstance(event, complaints._ComplaintEvent):
        return f"complaint {event.complaint_id}"
    if isinstance(event, reviews.ReviewPosted):
        order = f", order {event.order_id}" if event.order_id else ""
        return f"rating {event.rating}/5, review {event.review_id}{order}"
    if isinstance(event, customers.ConsentChanged):
        word = "granted" if event.granted else "withdrawn"
        return f"{event.purpose.value} on {event.channel.value} {word}"
    if isinstance(event, customers.ProfileUpserted):
        channels = ", ".join(c.value for c in event.preferred_channels) or "none"
        return f"preferred channels: {channels}"
    if isinstance(event, customers.FlagReviewed):
        return f"flag {event.flag_id} {event.decision} by {event.reviewed_by}"
    if isinstance(event, outcomes._OutcomeEvent):
        kind = event.kind.value
        return f"{kind} on {event.channel.value}, action {event.action_id}"
    if isinstance(event, commands.CareRequested):
        return f"{event.action.action_type.value} proposed by {event.action.rule_id}"
    return ""
