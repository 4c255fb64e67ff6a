"""Reading crmstream's outbound topics: for ``actions tail`` and the demo's live view."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas import codec
from streams.settings import Settings


async def tail(
    settings: Settings, topic: str, *, from_beginning: bool = True, idle_timeout: float = 0.0
) -> AsyncIterator[dict[str, Any]]:
    """Yield decoded records of ``topic`` (no consumer group: reads every partition).

    With ``idle_timeout`` > 0 the iteration ends after that many seconds without a record.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        metadata_max_age_ms=5000,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500 if idle_timeout else 1000)
            if not batch and idle_timeout:
                idle_timeout -= 0.5
                if idle_timeout <= 0:
                    return
                continue
            for records in batch.values():
                for record in records:
                    try:
                        yield codec.loads(record.value)
                    except codec.JSONDecodeError:
                        yield {"undecodable": base64.b64encode(record.value or b"").decode()}
    finally:
        await consumer.stop()


def describe_action(action: dict[str, Any]) -> str:
    """One line for a person: when, what, to whom, why."""
    return (
        f"{action.get('created_at', '?')}  {action.get('action_type', '?'):<12} "
        f"{action.get('customer_id', '?'):<16} via {action.get('channel', '?'):<6} "
        f"{action.get('reason', '')}"
    )


@dataclass
class Tally:
    """What the demo has seen flow, for the live view and the final summary."""

    produced: Counter[str] = field(default_factory=Counter)
    produced_types: Counter[str] = field(default_factory=Counter)
    malformed_sent: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    action_ids: set[str] = field(default_factory=set)
    duplicate_action_ids: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    recent_actions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=6))
    latest_reason: dict[str, str] = field(default_factory=dict)

    def on_action(self, action: dict[str, Any]) -> None:
        action_id = action.get("action_id", "")
        if action_id in self.action_ids:
            self.duplicate_action_ids += 1
            return
        self.action_ids.add(action_id)
        self.actions[action.get("action_type", "?")] += 1
        self.recent_actions.append(action)

    def on_dead_letter(self, dead: dict[str, Any]) -> None:
        code = dead.get("error_code", "?")
        self.dead_letters[code] += 1
        self.latest_reason[code] = dead.get("error", "")

    def summary(self) -> dict[str, Any]:
        return {
            "events_produced": sum(self.produced.values()),
            "events_by_family": dict(self.produced),
            "events_by_type": dict(self.produced_types),
            "malformed_sent": self.malformed_sent,
            "actions": sum(self.actions.values()),
            "actions_by_type": dict(self.actions),
            "duplicate_action_ids": self.duplicate_action_ids,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letters_by_code": dict(self.dead_letters),
        }


async def follow(settings: Settings, tally: Tally, stop: asyncio.Event) -> None:
    """Feed ``tally`` from the actions and dead-letter topics until ``stop`` is set."""

    async def pump(topic: str, sink: Any) -> None:
        async for record in tail(settings, topic):
            sink(record)
            if stop.is_set():
                return

    tasks = [
        asyncio.create_task(pump(settings.topics.actions, tally.on_action)),
        asyncio.create_task(pump(settings.topics.dlq, tally.on_dead_letter)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
