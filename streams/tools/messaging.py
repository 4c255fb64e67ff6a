"""A simulated messaging service, for the demo and the tests (``crmstream messaging``).

It reads ``crm.actions`` (what it is asked to send) and the ``held_out`` records of
``crm.action-decisions`` (the control group), and answers as a real e-mail/SMS/push
provider and real customers would, on ``crm.action-outcomes`` and ``crm.orders``:

- a sent action is ``delivered`` (``delivery_rate``) or ``bounced``/``failed``; a
  delivered one is ``opened`` (``open_rate``), an opened one ``clicked``
  (``click_rate``); a delivered one may be ``unsubscribed`` from
  (``unsubscribe_rate``);
- the customer buys (an ``order.placed`` within ``convert_within_hours`` of the
  action) with probability ``base_conversion`` if held out and ``base_conversion +
  uplift[action type]`` if treated: the **true uplift** the report should find.

Deterministic: every draw comes from a generator seeded with ``seed`` and the action
id, so the same actions give the same outcomes and orders, whatever the order they
are read in. Event times follow the action's ``created_at`` (or the decision's
``decided_at``), so it works on the replay clock as on the live one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import codec
from streams.settings import Settings


@dataclass(frozen=True)
class MessagingConfig:
    delivery_rate: float = 0.95
    #: Of the sends not delivered, the share that bounce (the rest fail).
    bounce_share: float = 0.7
    open_rate: float = 0.4
    click_rate: float = 0.3
    unsubscribe_rate: float = 0.005
    #: Chance a customer buys after an action with no effect (and in the control group).
    base_conversion: float = 0.10
    #: Action type -> the true conversion uplift of being sent it (0.05 = +5 points).
    uplift: Mapping[str, float] = field(default_factory=dict)
    convert_within_hours: float = 72.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "delivery_rate",
            "bounce_share",
            "open_rate",
            "click_rate",
            "unsubscribe_rate",
            "base_conversion",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for kind, up in self.uplift.items():
            if not 0 <= self.base_conversion + up <= 1:
                raise ValueError(f"base_conversion + uplift of {kind} must be between 0 and 1")


Record = tuple[str, str, dict[str, Any]]  # (family, customer id, payload)


class MessagingService:
    """The pure part: an action (or a held-out decision) in, outcome and order records out."""

    def __init__(self, config: MessagingConfig) -> None:
        self.config = config

    def _rng(self, action_id: str) -> random.Random:
        digest = hashlib.blake2b(f"{self.config.seed}\x1f{action_id}".encode(), digest_size=8)
        return random.Random(int.from_bytes(digest.digest(), "big"))

    def on_action(self, action: Mapping[str, Any]) -> list[Record]:
        """The outcomes of a sent action, and the order if the customer buys."""
        cfg = self.config
        action_id = str(action["action_id"])
        customer = str(action["customer_id"])
        channel = str(action["channel"])
        at = _time(str(action["created_at"]))
        rng = self._rng(action_id)
        out: list[Record] = []

        def outcome(kind: str, minutes: float) -> None:
            when = at + dt.timedelta(minutes=minutes)
            out.append(
                (
                    "outcomes",
                    customer,
                    {
                        "type": f"outcome.{kind}",
                        "event_id": f"sim-{action_id}-{kind}",
                        "customer_id": customer,
                        "occurred_at": when.isoformat(),
                        "action_id": action_id,
                        "channel": channel,
                    },
                )
            )

        delivered = rng.random() < cfg.delivery_rate
        if not delivered:
            outcome("bounced" if rng.random() < cfg.bounce_share else "failed", 1)
        else:
            outcome("delivered", 1)
            if rng.random() < cfg.open_rate:
                outcome("opened", 30)
                if rng.random() < cfg.click_rate:
                    outcome("clicked", 31)
            if rng.random() < cfg.unsubscribe_rate:
                outcome("unsubscribed", 32)
        # The uplift is the effect of being sent the action (intention to treat), whatever
        # became of the message: what treated against held out measures.
        rate = cfg.base_conversion + cfg.uplift.get(str(action["action_type"]), 0.0)
        if rng.random() < rate:
            out.append(self._order(customer, action_id, at, rng.random(), rng.random()))
        return out

    def on_held_out(self, decision: Mapping[str, Any]) -> list[Record]:
        """The order a held-out customer places anyway (the base conversion)."""
        cfg = self.config
        action_id = str(decision["action_id"])
        rng = self._rng(action_id)
        at = _time(str(decision["decided_at"]))
        if rng.random() < cfg.base_conversion:
            customer = str(decision["customer_id"])
            return [self._order(customer, action_id, at, rng.random(), rng.random())]
        return []

    def _order(
        self, customer: str, action_id: str, at: dt.datetime, hours: float, amount: float
    ) -> Record:
        when = at + dt.timedelta(hours=1 + hours * (self.config.convert_within_hours - 1))
        order_id = f"sim-{hashlib.blake2b(action_id.encode(), digest_size=6).hexdigest()}"
        return (
            "orders",
            customer,
            {
                "type": "order.placed",
                "event_id": f"sim-{order_id}",
                "customer_id": customer,
                "occurred_at": when.isoformat(),
                "order_id": order_id,
                "amount": round(20 + 180 * amount, 2),
                "currency": "GBP",
            },
        )


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def run(
    settings: Settings,
    config: MessagingConfig,
    *,
    from_beginning: bool = True,
    idle_exit: float = 0.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Answer every action and held-out decision as it appears (from the beginning of
    the topics, or from now); with ``idle_exit`` > 0, stop after that many idle seconds,
    and in any case once ``stop`` is set. Returns how many records it produced."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    service = MessagingService(config)
    topics = settings.topics
    by_family = {"outcomes": topics.outcomes, "orders": topics.orders}
    consumer = AIOKafkaConsumer(
        topics.actions,
        topics.action_decisions,
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        metadata_max_age_ms=5000,
        **settings.kafka_client_options(),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_bootstrap, linger_ms=20, **settings.kafka_client_options()
    )
    await consumer.start()
    await producer.start()
    produced = 0
    answered: set[str] = set()  # an action read twice (at least once) is answered once
    idle = 0.0
    try:
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batch:
                idle += 0.5
                if idle_exit and idle >= idle_exit:
                    return produced
                continue
            idle = 0.0
            futures = []
            for tp, records in batch.items():
                for r in records:
                    try:
                        value = codec.loads(r.value) if r.value else None
                    except codec.JSONDecodeError:
                        continue
                    if not isinstance(value, dict):
                        continue
                    key = str(value.get("action_id"))
                    if tp.topic == topics.actions and key not in answered:
                        answers = service.on_action(value)
                    elif value.get("decision") == "held_out" and key not in answered:
                        answers = service.on_held_out(value)
                    else:
                        continue
                    answered.add(key)
                    for family, customer, payload in answers:
                        futures.append(
                            await producer.send(
                                by_family[family], codec.dumps(payload), key=customer.encode()
                            )
                        )
            if futures:
                await asyncio.gather(*futures)
                produced += len(futures)
        return produced
    finally:
        await producer.stop()
        await consumer.stop()
