"""Operator tools for anomaly flags: ``crmstream flags list|clear|confirm``.

``crm.flags`` is an audit log (see :mod:`schemas.flags`): a flag is raised by
an ``open`` record and reviewed by later records with the same ``flag_id``.
:func:`read_flags` reads the topic from its beginning to its current end (a
plain consumer, no group) and :func:`fold_flags` folds the records by
``flag_id``: the raising record gives kind, subject, evidence and reason;
the latest record gives the status (and who reviewed it, when and why).

A review goes where the flag's owner will see it:

- a customer flag: a ``customer.flag_reviewed`` command on ``crm.customers``,
  keyed by the customer id. The worker that owns the customer applies it to
  the customer's state (the flag stops holding back marketing when cleared)
  and appends the review record to ``crm.flags``;
- a flag about many customers (``complaint_surge``, ``logistics_delay``): the
  review record itself, appended to ``crm.flags`` with the original key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from schemas import codec
from schemas.customers import FlagReviewed
from schemas.errors import BrokerUnreachable, CrmStreamError
from schemas.flags import CUSTOMER_KINDS, Flag, FlagKind, FlagStatus
from streams.settings import Settings

Decision = Literal["cleared", "confirmed"]


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


@dataclass
class FlagLog:
    """The folded topic, plus how many records could not be read."""

    flags: dict[str, FlagView] = field(default_factory=dict)
    unreadable: int = 0

    def select(self, *, open_only: bool = False, kind: str | None = None) -> list[FlagView]:
        """The flags (raised order) with the given status filter and kind."""
        return [
            f
            for f in self.flags.values()
            if (not open_only or f.status == FlagStatus.OPEN) and (kind is None or f.kind == kind)
        ]


def fold_flags(records: Iterable[tuple[bytes | None, bytes | None]]) -> FlagLog:
    """Fold ``(key, value)`` records of ``crm.flags`` (in log order) by ``flag_id``."""
    log = FlagLog()
    for key, value in records:
        try:
            flag = Flag.model_validate(codec.loads(value or b""))
        except (codec.JSONDecodeError, ValidationError):
            log.unreadable += 1
            continue
        at = flag.occurred_at.isoformat()
        view = log.flags.get(flag.flag_id)
        if view is None or flag.status == FlagStatus.OPEN:
            # the raising record (or a review whose raising record is gone): the facts
            view = log.flags[flag.flag_id] = FlagView(
                flag_id=flag.flag_id,
                kind=flag.kind.value,
                status=flag.status.value,
                customer_id=flag.customer_id,
                subject=flag.subject,
                raised_at=at if flag.status == FlagStatus.OPEN else None,
                reason=flag.reason,
                evidence_event_ids=list(flag.evidence_event_ids),
                key=key,
            )
        if flag.status != FlagStatus.OPEN:
            view.status = flag.status.value
            view.reviewed_by = flag.reviewed_by
            view.reviewed_at = at
            view.review_reason = flag.reason
    return log


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


# -- I/O -----------------------------------------------------------------------------


async def read_flags(
    settings: Settings, connect_timeout: float = 30.0, read_timeout: float = 120.0
) -> FlagLog:
    """Read ``crm.flags`` from its beginning to its end as of now, and fold it.

    Raises :class:`~schemas.errors.BrokerUnreachable` when the broker does not
    answer within ``connect_timeout`` seconds (creating missing topics first,
    like every crmstream command that talks to the broker), or when the topic
    cannot be read to its end within ``read_timeout`` seconds.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.topics import ensure_topics

    await ensure_topics(settings, timeout=connect_timeout)
    topic = settings.topics.flags
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    try:
        await consumer.topics()  # load the metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return FlagLog()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        by_partition: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {
            p: [] for p in partitions
        }
        # The end offsets say when to stop waiting; a fetch that comes back empty says
        # nothing more is there (some brokers, Tansu among them, report the end of a
        # multi-record batch low, so records past the reported end are read too).
        waiting = {tp for tp in tps if ends[tp] > starts[tp]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_timeout
        while True:
            batch = await consumer.getmany(timeout_ms=300 if not waiting else 1000)
            for tp, records in batch.items():
                by_partition[tp.partition].extend((r.timestamp, r.key, r.value) for r in records)
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
            if not waiting and not batch:
                break
            if loop.time() > deadline:
                raise BrokerUnreachable(
                    f"could not read {topic} to its end within {read_timeout:.0f}s"
                )
    finally:
        await consumer.stop()
    # Each partition in log order; partitions interleaved by record time.
    merged = heapq.merge(*by_partition.values(), key=lambda rec: rec[0])
    return fold_flags((key, value) for _, key, value in merged)


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
