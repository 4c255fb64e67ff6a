"""Create crmstream's topics on a broker (idempotent)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from streams.errors import BrokerUnreachable
from streams.settings import Settings

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36


async def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every input and output topic that is missing; return those created."""
    names = [*settings.topics.inputs, *settings.topics.outputs]
    admin = await _connect(settings, timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, settings.partitions, 1) for n in missing]
            )
            for topic, code, *_ in response.topic_errors:
                if code not in (0, TOPIC_EXISTS):
                    raise RuntimeError(f"could not create topic {topic}: error code {code}")
        return missing
    finally:
        await admin.close()


async def _connect(settings: Settings, timeout: float) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + timeout
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # one line from us, not one per attempt
    try:
        for attempt in itertools.count():
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker_bootstrap)
            try:
                await admin.start()
                return admin
            except KafkaConnectionError:
                await admin.close()
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerUnreachable(
                        f"cannot reach the Kafka broker at {settings.broker_bootstrap} "
                        f"after {timeout:.0f}s (set KAFKA_BROKER)"
                    ) from None
                if attempt == 0:
                    where = settings.broker_bootstrap
                    print(f"crmstream: waiting for the broker at {where} ...", file=sys.stderr)
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")
    finally:
        client_log.setLevel(level)
