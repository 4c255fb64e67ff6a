"""The one faust App, and the registry of every topic and table it uses.

No topic name appears anywhere else: agents import the objects declared here.
Settings and rules are read once, when this module is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust

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
    event being iterated; a batch spans partitions, so :meth:`put` takes the
    partition explicitly (the source record's partition: input topics and
    the changelog are co-partitioned by customer id).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keys are customer ids as UTF-8; values are JSON through our codec.
        self.key_serializer = "raw"
        self.value_serializer = codec.CODEC_NAME

    def put(self, key: str, value: Any, partition: int) -> None:
        self.data[key] = value
        self.send_changelog(partition, key, value)

    def drop(self, key: str, partition: int) -> None:
        self.data.pop(key, None)
        self.send_changelog(partition, key, None, value_serializer="raw")

    async def seal(self, partitions: Iterable[int]) -> None:
        """Make the changelog's end offset exact for ``partitions``; returns once durable.

        Recovery reads a changelog partition up to its end offset. Tansu
        reports the end offset of a partition as (base offset of its last
        record batch + 1), which is short when that batch holds several
        records, so a recovering worker would miss the rest. Flushing the
        batch's writes and then appending one tombstone for a reserved key,
        alone in its own record batch, keeps the reported end offset exact
        on Tansu; on Apache Kafka it is a harmless, compacted-away record.
        """
        producer = self.app.producer
        await producer.flush()
        for partition in partitions:
            self.send_changelog(partition, SEAL_KEY, None, value_serializer="raw")
        await producer.flush()


app = faust.App(
    settings.app_id,
    broker=settings.kafka_broker,
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

#: Input topics, consumed together by one agent in batches (streams.batching).
#: Values stay raw bytes: the ingress decodes and validates them itself, once.
inputs = RawBatchTopic(
    app,
    topics=list(_topics.inputs),
    buffer=BatchBuffer(maxsize=max(4 * settings.batch_max, 8192)),
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.partitions,
)


def subscribe_inputs() -> None:
    """Register the input topics with the consumer (call once the event loop is set)."""
    inputs.subscribe()


actions = app.topic(
    _topics.actions, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
)
dead_letters = app.topic(
    _topics.dlq, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
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
