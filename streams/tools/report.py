"""``crmstream report actions``: the uplift report (:mod:`agents.uplift`) from the topics.

Reads ``crm.actions``, ``crm.action-decisions``, ``crm.action-outcomes`` and
``crm.conversions`` from their beginning to their end as of now (records that do
not decode are skipped and counted), and prints, per action type, treated against
held out: sent, delivered, opened, clicked, converted, revenue and the conversion
uplift with its 95 % interval -- a table, or ``--json``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from schemas import codec
from schemas.errors import BrokerUnreachable
from streams.settings import Settings


async def read_topics(
    settings: Settings,
    topics: list[str],
    connect_timeout: float = 30.0,
    read_timeout: float = 300.0,
) -> dict[str, list[dict[str, Any]]]:
    """Every record (decoded JSON objects) of ``topics`` from the beginning to their end
    as of now; creates missing topics first, like every command that talks to the broker."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.topics import ensure_topics

    await ensure_topics(settings, timeout=connect_timeout)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    out: dict[str, list[dict[str, Any]]] = {topic: [] for topic in topics}
    try:
        await consumer.topics()  # load the metadata
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        # As in flag_admin.read_flags: the end offsets say when to stop waiting, an empty
        # fetch that nothing more is there (Tansu reports a batch's end low).
        waiting = {tp for tp in tps if ends[tp] > starts[tp]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_timeout
        while True:
            batch = await consumer.getmany(timeout_ms=300 if not waiting else 1000)
            for tp, records in batch.items():
                for r in records:
                    try:
                        value = codec.loads(r.value) if r.value else None
                    except codec.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        out[tp.topic].append(value)
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
            if not waiting and not batch:
                break
            if loop.time() > deadline:
                raise BrokerUnreachable(
                    f"could not read {', '.join(topics)} to their end within {read_timeout:.0f}s"
                )
    finally:
        await consumer.stop()
    return out


async def action_report(
    settings: Settings, since: str | None = None, read_timeout: float = 300.0
) -> Any:
    """The :class:`agents.uplift.Report` of everything on the topics now."""
    from agents import uplift

    t = settings.topics
    names = [t.actions, t.action_decisions, t.outcomes, t.conversions]
    records = await read_topics(settings, names, read_timeout=read_timeout)
    return uplift.build(
        records[t.actions],
        records[t.action_decisions],
        records[t.outcomes],
        records[t.conversions],
        since=since,
    )
