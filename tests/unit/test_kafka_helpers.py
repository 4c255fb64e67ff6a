"""The runtime module's small pieces that need no broker (streams.kafka): the default
partitioner, the plain record queue the feed's own tests read with, and what a
changelog record looks like to a store that is not faust's memory store."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams import kafka
from streams.tools import replay

#: murmur2 values from Kafka's own tests (UtilsTest.testMurmur2).
KAFKA_MURMUR2 = ((b"21", -973932308), (b"foobar", -790332482))


@pytest.mark.parametrize(
    "partition_for", [kafka.partition_for, replay.partition_for], ids=["worker", "replay"]
)
def test_a_keys_partition_is_kafkas_default_partitioners(partition_for):
    """The worker's sends and the replay's (which keeps a copy, so that it runs without
    faust) must put a customer where any Kafka producer's default partitioner does:
    the hash made positive, modulo the partitions."""
    for key, hashed in KAFKA_MURMUR2:
        for n in (1, 4, 7):
            assert partition_for(key, n) == (hashed & 0x7FFFFFFF) % n


def test_the_worker_and_the_replay_put_every_key_on_the_same_partition():
    keys = [f"cust-{i:05d}".encode() for i in range(2_000)]
    for n in (3, 8, 12):
        assert [kafka.partition_for(k, n) for k in keys] == [
            replay.partition_for(k, n) for k in keys
        ]


def test_the_record_queue_hands_records_out_partition_after_partition_up_to_a_limit():
    queue = kafka.RecordQueue()
    first, second = TP("t", 0), TP("t", 1)
    assert queue.buffered(first) == 0 and len(queue) == 0
    queue.accept(first, ["a", "b", "c"], 3, None)
    queue.accept(second, ["x"], 1, None)
    assert (queue.buffered(first), queue.buffered(second), len(queue)) == (3, 1, 4)

    assert queue.take(2) == ["a", "b"]
    assert queue.take(5) == ["c", "x"]
    assert queue.take(5) == [] and queue.buffered(first) == 0

    queue.accept(first, ["d"], 4, None)
    queue.revoke([first])
    assert len(queue) == 0


def test_a_store_other_than_the_memory_store_gets_the_records_as_they_are():
    """RocksDB reads a changelog record's bytes as they are (a tombstone's key may be all
    it has); nothing is decoded for it at the end of a recovery."""
    keyed = ConsumerRecord("log", 3, 9, 0, 0, b"c-1", b"v", None, 3, 1, ())
    unkeyed = ConsumerRecord("log", 3, 10, 0, 0, None, None, None, 0, 0, ())
    taken: list = []
    store = type("Rocks", (), {"data": object(), "apply_changelog_batch": taken.extend})()

    kafka._apply_restored(store, TP("log", 3), [keyed, unkeyed])

    assert [(e.key, e.value, e.message.offset, e.message.partition) for e in taken] == [
        ("c-1", b"v", 9, 3),
        (None, None, 10, 3),
    ]
    assert kafka.decode_restored(store.data) == 0
