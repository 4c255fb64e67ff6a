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

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas import codec
from schemas.flags import Flag, FlagStatus
from streams.flag_reviews import (
    Decision,
    FlagReviewError,
    FlagView,
    Outgoing,
    plan_review,
    send,
)
from streams.settings import Settings
from streams.tools.topic_read import read_to_end

__all__ = [
    "Decision",
    "FlagLog",
    "FlagReviewError",
    "FlagView",
    "Outgoing",
    "fold_flags",
    "plan_review",
    "read_flags",
    "send",
]


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
    from streams.topics import ensure_topics

    await ensure_topics(settings, timeout=connect_timeout)
    topic = settings.topics.flags
    read = await read_to_end(
        settings,
        [topic],
        lambda r: (r.timestamp, r.key, r.value),  # every record: fold_flags counts bad ones
        read_timeout=read_timeout,
    )
    # Each partition in log order; partitions interleaved by record time.
    merged = heapq.merge(*read[topic].values(), key=lambda rec: rec[0])
    return fold_flags((key, value) for _, key, value in merged)
