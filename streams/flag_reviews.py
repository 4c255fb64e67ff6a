"""Reviews of anomaly flags (appeals): the record a review sends, and sending it.

One path for every operator's review, whether from ``crmstream flags clear|confirm``
(streams.tools.flag_admin) or the customer page's form (streams.web): the same
record, sent and acknowledged the same way, so every review is audited alike.

- a customer flag: a ``customer.flag_reviewed`` command on ``crm.customers``,
  keyed by the customer id. The worker that owns the customer applies it to the
  customer's state (the flag stops holding back marketing when cleared) and
  appends the review record to ``crm.flags``;
- a flag about many customers (``complaint_surge``, ``logistics_delay``): the
  review record itself, appended to ``crm.flags`` with the original key.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from schemas import codec
from schemas.customers import FlagReviewed
from schemas.errors import CrmStreamError
from schemas.flags import CUSTOMER_KINDS, Flag, FlagKind, FlagStatus
from streams.settings import Settings

Decision = Literal["cleared", "confirmed"]

#: Bounds of a review's reason and operator name (the command's contract).
MAX_REASON = 500
MAX_OPERATOR = 100


def check_review(decision: str, reason: str, operator: str) -> str | None:
    """What is wrong with a review's input (a message), or None: the decision is
    ``cleared`` or ``confirmed``, the reason 1 to 500 characters, the operator's name
    1 to 100 (the command's bounds)."""
    if decision not in ("cleared", "confirmed"):
        return "choose clear or confirm"
    if not reason or len(reason) > MAX_REASON:
        return f"the reason must be 1 to {MAX_REASON} characters"
    if not operator or len(operator) > MAX_OPERATOR:
        return f"the operator's name must be 1 to {MAX_OPERATOR} characters"
    return None


class FlagReviewError(CrmStreamError):
    """A review that cannot be made: unknown flag, same decision again, bad input."""


@dataclass
class FlagView:
    """One flag as the log says it is now."""

    flag_id: str
    kind: str
    status: str
    customer_id: str | None
    subject: str | None
    raised_at: str | None
    reason: str
    evidence_event_ids: list[str] = field(default_factory=list)
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_reason: str | None = None
    #: The record key of the raising record (the review record reuses it).
    key: bytes | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["key"]
        return doc

    def line(self) -> str:
        """One line for a person: status, kind, id, whom, when, why."""
        who = f"customer {self.customer_id}" if self.customer_id else self.subject or "-"
        text = (
            f"{self.status:<9} {self.kind:<18} {self.flag_id}  {who}  "
            f"raised {self.raised_at or '?'}  {self.reason}"
        )
        if self.status != FlagStatus.OPEN:
            text += (
                f"\n{'':<29}{self.status} by {self.reviewed_by or '?'} "
                f"at {self.reviewed_at or '?'}: {self.review_reason or ''}"
            )
        return text


@dataclass(frozen=True)
class Outgoing:
    """A record to send for a review: where, with which key, and what."""

    topic: str
    key: bytes
    value: bytes
    description: str


def plan_review(
    view: FlagView,
    decision: Decision,
    reason: str,
    reviewed_by: str,
    settings: Settings,
    now: dt.datetime,
    event_id: str | None = None,
) -> Outgoing:
    """The record that reviews ``view``; raises :class:`FlagReviewError` if it cannot."""
    if view.status == decision:
        raise FlagReviewError(
            f"flag {view.flag_id} is already {decision} (by {view.reviewed_by or '?'} "
            f"at {view.reviewed_at or '?'}: {view.review_reason or ''})"
        )
    try:
        if view.customer_id is not None and FlagKind(view.kind) in CUSTOMER_KINDS:
            command = FlagReviewed(
                type="customer.flag_reviewed",
                schema_version=1,
                event_id=event_id or str(uuid.uuid4()),
                customer_id=view.customer_id,
                occurred_at=now,
                flag_id=view.flag_id,
                decision=decision,
                reason=reason,
                reviewed_by=reviewed_by,
            )
            return Outgoing(
                settings.topics.customers,
                view.customer_id.encode(),
                codec.dumps(command.model_dump(mode="json")),
                f"sent customer.flag_reviewed {command.event_id} to {settings.topics.customers}; "
                f"the worker records the review on {settings.topics.flags}",
            )
        record = Flag(
            flag_id=view.flag_id,
            kind=FlagKind(view.kind),
            status=FlagStatus(decision),
            customer_id=view.customer_id,
            subject=view.subject,
            evidence_event_ids=[],
            reason=reason,
            occurred_at=now,
            reviewed_by=reviewed_by,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise FlagReviewError(f"invalid review ({problems})") from None
    key = view.key if view.key is not None else (view.subject or view.flag_id).encode()
    return Outgoing(
        settings.topics.flags,
        key,
        codec.dumps(record.model_dump(mode="json")),
        f"appended the review record to {settings.topics.flags}",
    )


async def send(settings: Settings, outgoing: Outgoing) -> None:
    """Send one record and wait for the broker's acknowledgement."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_bootstrap, **settings.kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(outgoing.topic, outgoing.value, key=outgoing.key)
    finally:
        await producer.stop()
