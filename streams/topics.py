"""Create crmstream's topics on a broker (idempotent).

Every topic gets ``CRM_PARTITIONS`` partitions, ``CRM_REPLICATION_FACTOR``
replicas and ``min.insync.replicas`` = ``CRM_MIN_INSYNC_REPLICAS`` (the tables'
changelogs get the same from faust, :mod:`streams.app`). An existing topic is
left as it is.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from schemas.errors import BrokerUnreachable
from streams.settings import Settings

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40


async def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every input and output topic that is missing; return those created."""
    names = [*settings.topics.inputs, *settings.topics.outputs]
    admin = await _connect(settings, timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        n,
                        settings.partitions,
                        settings.replication_factor,
                        topic_configs=settings.topic_config(),
                    )
                    for n in missing
                ]
            )
            for topic, code, *_ in response.topic_errors:
                if code not in (0, TOPIC_EXISTS):
                    raise RuntimeError(creation_error(settings, topic, code))
        return missing
    finally:
        await admin.close()


def creation_error(settings: Settings, topic: str, code: int) -> str:
    """Why ``topic`` could not be created, naming the setting to change."""
    if code == INVALID_REPLICATION_FACTOR:
        return (
            f"could not create topic {topic}: the cluster has fewer brokers than "
            f"CRM_REPLICATION_FACTOR={settings.replication_factor}"
        )
    if code == INVALID_CONFIG:
        return (
            f"could not create topic {topic}: the broker refused "
            f"min.insync.replicas={settings.min_insync_replicas} (CRM_MIN_INSYNC_REPLICAS)"
        )
    return f"could not create topic {topic}: error code {code}"


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
