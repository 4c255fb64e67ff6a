"""Read whole topics, from their beginning to their end as of now.

One loop for every reader that folds whole topics: ``crmstream flags``
(:func:`streams.tools.flag_admin.read_flags`), ``crmstream report actions``
(:func:`streams.tools.report.read_topics`) and ``bench.determinism``'s
comparison of the outputs (``bench.determinism.read_all``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from schemas.errors import BrokerUnreachable
from streams.settings import Settings

T = TypeVar("T")

#: What :func:`read_to_end` returns: per topic (every topic asked for), per partition
#: (ascending), the decoded records in offset order.
Read = dict[str, dict[int, list[T]]]


async def read_to_end(
    settings: Settings,
    topics: Sequence[str],
    decode: Callable[[Any], T | None],
    *,
    read_timeout: float,
    poll_ms: int = 1000,
    last_poll_ms: int = 300,
    max_records: int | None = None,
    max_partition_fetch_bytes: int | None = None,
) -> Read[T]:
    """Every record of ``topics`` (all their partitions, no consumer group), from the
    beginning to the end as of now, each passed through ``decode``.

    ``decode(record)`` gets aiokafka's ``ConsumerRecord`` and returns what to keep,
    or None to leave the record out (the caller decides what a bad record is, and
    whether it counts it). A topic the broker does not know reads as empty: creating
    missing topics first (:func:`streams.topics.ensure_topics`) is the caller's choice.

    When the read stops, and why both conditions are needed:

    - It waits until every partition's position has reached its end offset, listed
      once at the start (partitions with no records, end = beginning, are not
      waited on). A fetch may come back empty before the data has arrived (the
      first fetches after connecting), so an empty fetch alone would end the read
      too early; the listed end offsets say what must be read.
    - Then it stops at the first fetch that comes back empty (``last_poll_ms``).
      The listed end offset is not always the end: the embedded Tansu broker
      answers ListOffsets(latest) with the last record batch's base offset + 1, so
      the position passes it as soon as the first record of that batch is handed
      out, while the batch's other records (and, with ``max_records``, the rest of
      a large fetch) are still in the consumer's buffer. Only an empty fetch says
      that nothing more is there. (Records appended meanwhile are read too: the
      end is that of a moment a little after the call.)
    - Either way the read is bounded by ``read_timeout`` seconds, checked after
      every fetch (a broker that stops answering, or a topic written faster than
      it is read): then :class:`~schemas.errors.BrokerUnreachable`.

    ``poll_ms`` is each fetch's wait while partitions are awaited; ``last_poll_ms``
    the wait once none is (the last, empty fetch costs all of it). ``max_records``
    caps the records per fetch, ``max_partition_fetch_bytes`` the bytes per
    partition and fetch (aiokafka's default, 1 MiB, when None). An offset out of
    range (the log's start moved on: retention) resets to the earliest offset,
    never to the end.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    options: dict[str, Any] = dict(settings.kafka_client_options())
    if max_partition_fetch_bytes is not None:
        options["max_partition_fetch_bytes"] = max_partition_fetch_bytes
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    out: Read[T] = {topic: {} for topic in topics}
    try:
        await consumer.topics()  # load the metadata
        tps = [
            TopicPartition(topic, p)
            for topic in out
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return out
        for tp in tps:
            out[tp.topic][tp.partition] = []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        waiting = {tp for tp in tps if ends[tp] > starts[tp]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_timeout
        while True:
            batch = await consumer.getmany(
                timeout_ms=poll_ms if waiting else last_poll_ms, max_records=max_records
            )
            for tp, records in batch.items():
                kept = out[tp.topic][tp.partition]
                for record in records:
                    value = decode(record)
                    if value is not None:
                        kept.append(value)
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    waiting.discard(tp)
            if not waiting and not batch:
                return out
            if loop.time() > deadline:
                what = ", ".join(topics) + (" to its end" if len(topics) == 1 else " to their end")
                raise BrokerUnreachable(f"could not read {what} within {read_timeout:.0f}s")
    finally:
        await consumer.stop()
