"""Producing to and reading from the real broker, for integration tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from schemas import codec
from streams.settings import Settings, Topics


def produce(settings: Settings, records: list[Any]) -> None:
    """Send ``(topic, key, value)`` (or ``(topic, key, value, partition)``) records and
    wait for the broker's acks."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker_bootstrap, linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(r[0], r[2], key=r[1], partition=r[3] if len(r) > 3 else None)
                for r in records
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


def ticks(settings: Settings, at: dt.datetime) -> list[tuple[str, None, bytes, int]]:
    """A ``clock.tick`` at ``at`` for every partition (schemas.control): on the replay
    clock, timers due before ``at`` fire on every partition."""
    return [
        (
            settings.topics.customers,
            None,
            codec.dumps(
                {
                    "type": "clock.tick",
                    "event_id": f"tick:{at.isoformat()}:{p}",
                    "occurred_at": at.isoformat(),
                }
            ),
            p,
        )
        for p in range(settings.partitions)
    ]


def consume(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 90.0,
    settle: float = 3.0,
) -> list[dict[str, Any]]:
    """Read ``topic`` from the beginning until ``until(records)`` holds, then ``settle``
    seconds more (so extra, unwanted records would be seen too), or fail at ``timeout``.
    """

    async def run() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.broker_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=300)
                for part in batch.values():
                    records.extend(codec.loads(r.value) for r in part)
                now = time.monotonic()
                if settled_at is None and until(records):
                    settled_at = now + settle
                if settled_at is not None and now >= settled_at:
                    return records
                if now > deadline:
                    raise AssertionError(
                        f"timed out after {timeout}s on {topic}: {len(records)} records so far"
                    )
        finally:
            await consumer.stop()

    return asyncio.run(run())


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in a Prometheus text page matching ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def ago(days: float = 0, hours: float = 0) -> str:
    """An ISO time that long before the last midday (UTC): recent enough for the live
    clock, whose actions expire (one older than its expiry is suppressed, not sent),
    and never in the default quiet hours, whatever the time the test runs at."""
    now = dt.datetime.now(dt.UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if noon > now - dt.timedelta(minutes=5):
        noon -= dt.timedelta(days=1)
    return (noon - dt.timedelta(days=days, hours=hours)).isoformat()


class EventFactory:
    """Builds valid input records, ``(topic, key, value)``, for one test's topics."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.topics
        self._seq = itertools.count(1)

    def _record(self, topic: str, customer_id: str, event_type: str, at: str, **fields: Any):  # type: ignore[no-untyped-def]
        body = {
            "event_id": fields.pop("event_id", f"ev-{next(self._seq)}"),
            "customer_id": customer_id,
            "occurred_at": at,
            "type": event_type,
            **fields,
        }
        return topic, customer_id.encode(), codec.dumps(body)

    def order(
        self,
        customer_id: str,
        event_type: str = "order.placed",
        *,
        at: str | None = None,
        order_id: str = "o-1",
        amount: float = 42.0,
        **fields: Any,
    ):  # type: ignore[no-untyped-def]
        return self._record(
            self.topics.orders,
            customer_id,
            event_type,
            at or ago(hours=1),
            order_id=order_id,
            amount=amount,
            currency="GBP",
            items=[{"sku": "SKU-1", "category": "books", "qty": 1, "price": amount}],
            **fields,
        )

    def view(self, customer_id: str, *, at: str | None = None, **fields: Any):  # type: ignore[no-untyped-def]
        return self._record(
            self.topics.browsing,
            customer_id,
            "browse.view",
            at or ago(hours=2),
            sku="SKU-1",
            **fields,
        )


def prefixed_topics(prefix: str) -> Topics:
    """Every topic under a name of its own: ``<prefix>.`` before its default name."""
    return Topics(**{name: f"{prefix}.{f.default}" for name, f in Topics.model_fields.items()})


def ensure_settings_partitions(settings: Settings, partitions: int) -> Settings:
    """``settings`` with topics of their own (prefixed ``p<partitions>-``) and a group of
    their own, for a test that needs more partitions than the fixture's; create the
    topics with :func:`streams.topics.ensure_topics`."""
    prefix = f"p{partitions}-"
    topics = settings.topics.replace(
        **{name: prefix + value for name, value in settings.topics.model_dump().items()}
    )
    return settings.replace(
        partitions=partitions, topics=topics, app_id=f"{settings.app_id}-p{partitions}"
    )


def changelog_values(
    settings: Settings, table: str = "customers", timeout: float = 60.0
) -> dict[str, bytes]:
    """The last value of every key on ``table``'s changelog up to its end offsets when
    called, as the bytes the broker holds (reserved and deleted keys left out). Each
    changelog write ends in a seal batch, so the embedded broker's end offsets are
    exact; a live worker's later writes are not waited for."""

    async def read() -> dict[str, bytes]:
        topic = f"{settings.app_id}-{table}-changelog"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.broker_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        values: dict[str, bytes] = {}
        try:
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            deadline = time.monotonic() + timeout
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout}s"
                batch = await consumer.getmany(timeout_ms=300)
                for part in batch.values():
                    for r in part:
                        key = r.key.decode()
                        if key.startswith("\x00"):
                            continue
                        if r.value is None:
                            values.pop(key, None)
                        else:
                            values[key] = r.value
        finally:
            await consumer.stop()
        return values

    return asyncio.run(read())


def record_batches(settings: Settings, topic: str, partition: int) -> list[list[bytes | None]]:
    """The record batches of one partition, as the broker stores them, from its start to
    its end (16 MiB a fetch): each a list of its records' keys. A consumer hands out
    records one by one; a fetch returns whole batches, so what one batch holds a reader
    gets at once."""

    async def read() -> list[list[bytes | None]]:
        client = AIOKafkaClient(bootstrap_servers=settings.broker_bootstrap)
        await client.bootstrap()
        try:
            client.add_topic(topic)
            await client.force_metadata_update()
            node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            batches: list[list[bytes | None]] = []
            offset = 0
            while True:
                wanted = [(topic, [(partition, offset, 16 << 20)])]
                response = await client.send(node, FetchRequest(100, 1, 16 << 20, 0, wanted))
                ((_, ((_, error, _, *data),)),) = response.topics
                assert error == 0, f"fetch of {topic}[{partition}] failed: error {error}"
                records = MemoryRecords(data[-1])
                fetched = 0
                while (batch := records.next_batch()) is not None:
                    batches.append([record.key for record in batch])
                    fetched += 1
                    offset = batch.next_offset
                if not fetched:
                    return batches
        finally:
            await client.close()

    return asyncio.run(read())
