"""Every record crmstream writes to a topic, declared once: which topic, which key,
which JSON form.

The agents' shells send a batch's outputs with :func:`send`, which serialises
them and hands them to the producer one record batch per partition
(:func:`streams.kafka.send_keyed`), returning the broker's acknowledgements to
wait for. Keys are the customer id, except dead letters (their source topic) and
signals and cross-customer flags (what they count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from schemas import codec
from schemas.actions import Action
from schemas.changes import CustomerChange, change_record
from schemas.commands import care_requested
from schemas.conversions import Conversion
from schemas.deadletter import DeadLetter
from schemas.decisions import ActionDecision
from schemas.flags import Flag
from schemas.signals import Signal
from streams.kafka import send_keyed
from streams.settings import Settings, Topics

T = TypeVar("T")


def _json(record: BaseModel) -> Any:
    return record.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class Output(Generic[T]):
    """One kind of outgoing record."""

    topic: Callable[[Topics], str]
    key: Callable[[T], str]
    value: Callable[[T], Any]


DEAD_LETTERS: Output[DeadLetter] = Output(lambda t: t.dlq, lambda d: d.source_topic, _json)
ACTIONS: Output[Action] = Output(lambda t: t.actions, lambda a: a.customer_id, _json)
DECISIONS: Output[ActionDecision] = Output(
    lambda t: t.action_decisions, lambda d: d.customer_id, _json
)
#: ``change_record``: the same document as pydantic's, without its serializer (hot path).
CHANGES: Output[CustomerChange] = Output(
    lambda t: t.customer_changes, lambda c: c.customer_id, change_record
)
#: A customer's flag under its customer id; a cross-customer one under its subject.
FLAGS: Output[Flag] = Output(lambda t: t.flags, lambda f: f.customer_id or f.subject or "", _json)
SIGNALS: Output[Signal] = Output(lambda t: t.signals, lambda s: s.key, _json)
#: Purchases attributed to actions (agents.outcomes), keyed by customer id.
CONVERSIONS: Output[Conversion] = Output(lambda t: t.conversions, lambda c: c.customer_id, _json)
#: Proposals of the cross-customer rules, to the customer agent (schemas.commands).
COMMANDS: Output[Action] = Output(lambda t: t.commands, lambda a: a.customer_id, care_requested)


async def send(app: Any, settings: Settings, output: Output[T], items: Iterable[T]) -> list[Any]:
    """Send ``items`` as ``output`` records; the futures of the broker's acks."""
    key, value = output.key, output.value
    records = [(key(item).encode(), codec.dumps(value(item))) for item in items]
    return await send_keyed(app, output.topic(settings.topics), records, settings.partitions)
