"""Every record crmstream writes to a topic, declared once: which topic, which key,
which JSON form.

The agents' shells send a batch's outputs with :func:`send`, which serialises
them and hands them to the producer one record batch per partition
(:func:`streams.kafka.send_keyed`), returning the broker's acknowledgements to
wait for. Keys are the customer id, except dead letters (their source topic) and
signals and cross-customer flags (what they count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas import codec
from schemas.actions import Action
from schemas.base import json_encoder
from schemas.changes import CustomerChange
from schemas.commands import care_requested
from schemas.conversions import Conversion
from schemas.deadletter import DeadLetter
from schemas.decisions import ActionDecision
from schemas.flags import Flag
from schemas.signals import Signal
from streams.kafka import send_keyed
from streams.settings import Settings, Topics

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Output(Generic[T]):
    """One kind of outgoing record."""

    topic: Callable[[Topics], str]
    key: Callable[[T], str]
    #: The record's value: its JSON bytes (a contract's: schemas.base.json_encoder).
    encode: Callable[[T], bytes]


DEAD_LETTERS: Output[DeadLetter] = Output(
    lambda t: t.dlq, lambda d: d.source_topic, json_encoder(DeadLetter)
)
ACTIONS: Output[Action] = Output(lambda t: t.actions, lambda a: a.customer_id, json_encoder(Action))
DECISIONS: Output[ActionDecision] = Output(
    lambda t: t.action_decisions, lambda d: d.customer_id, json_encoder(ActionDecision)
)
CHANGES: Output[CustomerChange] = Output(
    lambda t: t.customer_changes, lambda c: c.customer_id, json_encoder(CustomerChange)
)
#: A customer's flag under its customer id; a cross-customer one under its subject.
FLAGS: Output[Flag] = Output(
    lambda t: t.flags, lambda f: f.customer_id or f.subject or "", json_encoder(Flag)
)
SIGNALS: Output[Signal] = Output(lambda t: t.signals, lambda s: s.key, json_encoder(Signal))
#: Purchases attributed to actions (agents.outcomes), keyed by customer id.
CONVERSIONS: Output[Conversion] = Output(
    lambda t: t.conversions, lambda c: c.customer_id, json_encoder(Conversion)
)
#: Proposals of the cross-customer rules, to the customer agent (schemas.commands).
COMMANDS: Output[Action] = Output(
    lambda t: t.commands, lambda a: a.customer_id, lambda a: codec.dumps(care_requested(a))
)


async def send(
    app: Any,
    settings: Settings,
    output: Output[T],
    items: Iterable[T],
    then_everywhere: Sequence[tuple[bytes, bytes]] = (),
) -> list[Any]:
    """Send ``items`` as ``output`` records, and after them ``then_everywhere`` (raw
    records) to every partition, in the same record batches; the futures of the
    broker's acks."""
    key, encode = output.key, output.encode
    records = [(key(item).encode(), encode(item)) for item in items]
    return await send_keyed(
        app, output.topic(settings.topics), records, settings.partitions, then_everywhere
    )
