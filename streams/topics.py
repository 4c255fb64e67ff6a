"""Create crmstream's topics on a broker (idempotent)."""

from __future__ import annotations

import asyncio
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
    where = settings.broker_bootstrap
    warned = False
    try:
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=where, **settings.kafka_client_options())
            try:
                await admin.start()
                return admin
            except KafkaConnectionError:
                await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerUnreachable(
                    f"cannot reach the Kafka broker at {where} "
                    f"after {timeout:.0f}s (set KAFKA_BROKER)"
                )
            if not warned:
                print(f"crmstream: waiting for the broker at {where} ...", file=sys.stderr)
                warned = True
            await asyncio.sleep(0.5)
    finally:
        client_log.setLevel(level)
