"""The one faust App, and the registry of every topic and table it uses.

No topic name appears anywhere else: agents import the objects declared here.
Settings and rules are read once, when this module is imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from streams import codec
from streams.batching import BatchBuffer, RawBatchTopic
from streams.rules import Rules
from streams.settings import Settings

settings = Settings.from_env()
rules = Rules.load(settings.rules_file)


#: Reserved table key of the seal records (never a customer id: ids are printable).
SEAL_KEY = "\x00seal"


class StateTable(faust.Table):
    """A table written in batches: one changelog record per key per batch.

    faust's ``table[key] = value`` takes the changelog partition from the
    event being iterated and sends one buffered message per write. A batch
    spans partitions, so :meth:`write_batch` takes the partition from the
    caller (the source records' partition: input topics and the changelog are
    co-partitioned by customer id) and hands each partition's writes to the
    Kafka client as a single record batch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keys are customer ids as UTF-8; values are JSON through our codec.
        self.key_serializer = "raw"
        self.value_serializer = codec.CODEC_NAME

    async def write_batch(self, writes: Mapping[int, Sequence[tuple[str, Any]]]) -> None:
        """Store ``{partition: [(key, value), ...]}`` and make it durable in the changelog.

        Returns once the broker has acknowledged every record. Each
        partition's records go out as one record batch, followed by a seal
        (below), so at most two produce entries per partition per batch.

        The seal: recovery reads a changelog partition up to its end offset.
        Tansu reports that end offset as (base offset of the partition's last
        record batch + 1), which is short when that batch holds several
        records, so a recovering worker would miss the rest. A tombstone for
        a reserved key, alone in its own record batch, keeps the reported end
        offset exact on Tansu; on Apache Kafka it is a harmless,
        compacted-away record.
        """
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        topic = self.changelog_topic.get_topic_name()
        data = self.data
        pending = []
        for partition, items in writes.items():
            batch = producer.create_batch()
            for key, value in items:
                _store_put(data, key, value, partition)
                raw_key, raw_value = key.encode(), codec.dumps(value.to_dict())
                if batch.append(key=raw_key, value=raw_value, timestamp=None) is None:  # full
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=raw_key, value=raw_value, timestamp=None)
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            seal = producer.create_batch()
            seal.append(key=SEAL_KEY.encode(), value=None, timestamp=None)
            pending.append(await producer.send_batch(seal, topic, partition=partition))
        for metadata in await asyncio.gather(*pending):
            # RocksDB keeps the last persisted offset to resume recovery from it.
            data.set_persisted_offset(metadata.topic_partition, metadata.offset)


def _store_put(store: Any, key: str, value: Any, partition: int) -> None:
    """``store[key] = value`` in ``partition``, outside faust's per-event context.

    faust's RocksDB store keeps one database per partition and takes the
    partition from the event being iterated; batches have none, so the
    partition is given here. The memory store has no partitions.
    """
    if hasattr(store, "_db_for_partition"):
        encoded = store._encode_key(key)
        store._key_index[encoded] = partition
        store._db_for_partition(partition).put(encoded, store._encode_value(value))
    else:
        store[key] = value


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2), as any producer picks it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def send_keyed(topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    """Send ``(key, value)`` records to ``topic``, one record batch per partition.

    The partition is Kafka's default for the key (murmur2), as any producer
    would pick. Returns the futures of the broker's acknowledgements. Much
    cheaper than one ``Topic.send`` per record when a batch emits many.
    """
    if not records:
        return []
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    known = producer.client.cluster.partitions_for_topic(topic)
    n = len(known) if known else settings.partitions
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        by_partition.setdefault(partition_for(key, n), []).append((key, value))
    pending = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


class CrmApp(faust.App):
    """The faust App, counting finished rebalances (see ``reseek_after_rebalance``)."""

    rebalances_ended = 0

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        inputs.buffer.forget_offsets()
        signals.buffer.forget_offsets()

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.rebalances_ended += 1


app = CrmApp(
    settings.app_id,
    broker=settings.kafka_broker,
    broker_credentials=settings.broker_credentials(),  # SASL/TLS: README "Security"
    store=settings.store,
    datadir=settings.data_dir,
    autodiscover=False,
    origin="streams",
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    table_standby_replicas=0,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout,
    broker_rebalance_timeout=settings.rebalance_timeout,
    broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
    web_enabled=True,
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_bind=settings.web_host,
    producer_linger_ms=5,
    logging_config=None,
)

_topics = settings.topics


def _batch_topic(names: list[str]) -> RawBatchTopic:
    """Topics one agent takes in batches of raw records (streams.batching)."""
    return RawBatchTopic(
        app,
        topics=names,
        buffer=BatchBuffer(maxsize=max(4 * settings.batch_max, 8192)),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


#: Input topics, consumed together by one agent in batches (streams.batching).
#: Values stay raw bytes: the ingress decodes and validates them itself, once.
inputs = _batch_topic(list(_topics.inputs))


def subscribe_inputs() -> None:
    """Register the input topics with the consumer (call once the event loop is set)."""
    inputs.subscribe()


actions = app.topic(
    _topics.actions, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
)
customer_changes = app.topic(
    _topics.customer_changes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
)
dead_letters = app.topic(
    _topics.dlq, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
)

#: Cross-customer signals (schemas.signals), keyed by aggregation key; consumed in
#: batches by agents.aggregates, co-partitioned with the ``aggregates`` table.
signals = _batch_topic([_topics.signals])


def subscribe_signals() -> None:
    """Register the signals topic with the consumer (call once the event loop is set)."""
    signals.subscribe()


aggregates: StateTable = app.tables.add(  # type: ignore[assignment]
    StateTable(
        app,
        name="aggregates",
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        key_type=str,
        help="Per aggregation key state (agents.aggregate_rules.KeyState as JSON).",
    )
)

customers: StateTable = app.tables.add(  # type: ignore[assignment]
    StateTable(
        app,
        name="customers",
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        key_type=str,
        help="Per-customer state (agents.state.CustomerState as JSON).",
    )
)
