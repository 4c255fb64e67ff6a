"""``streams.tools.topic_read.read_to_end`` on the real broker (Tansu): whole topics read
to their end, although Tansu lists a partition's end at its last batch's base offset + 1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from schemas import codec
from schemas.errors import BrokerUnreachable
from streams.tools.topic_read import read_to_end
from tests.integration.broker import produce

pytestmark = pytest.mark.integration


def _value(record: Any) -> int | None:
    value = codec.loads(record.value)
    return value["n"] if isinstance(value, dict) else None


def test_every_record_of_every_partition_in_offset_order_and_decode_leaves_some_out(
    crm_settings,
) -> None:
    # Given 300 records on partition 0 and 5 on partition 2, sent in multi-record
    # batches (the producer lingers: Tansu then lists partition 0's end far short of
    # 300, at 1 when they go as one batch), one that decodes to nothing among them
    topic = crm_settings.topics.flags
    records = [(topic, b"k", codec.dumps({"n": n}), 0) for n in range(300)]
    records[7] = (topic, b"k", codec.dumps(["not", "an", "object"]), 0)
    records += [(topic, b"k", codec.dumps({"n": 1000 + n}), 2) for n in range(5)]
    produce(crm_settings, records)

    # When both topics asked for are read to their end (one unknown to the broker)
    read = asyncio.run(read_to_end(crm_settings, [topic, "no-such-topic"], _value, read_timeout=60))

    # Then every record is there, each partition in offset order; the empty ones and
    # the unknown topic are there too, empty
    assert read[topic] == {
        0: [n for n in range(300) if n != 7],
        1: [],
        2: [1000 + n for n in range(5)],
        3: [],
    }
    assert read["no-such-topic"] == {}


def test_a_read_that_cannot_finish_in_time_says_so(crm_settings) -> None:
    # Given a topic with records
    topic = crm_settings.topics.flags
    produce(crm_settings, [(topic, b"k", codec.dumps({"n": n}), 0) for n in range(10)])

    # When it must be read within no time at all, then the read says what it could not do
    with pytest.raises(BrokerUnreachable, match=f"could not read {topic} to its end within 0s"):
        asyncio.run(read_to_end(crm_settings, [topic], _value, read_timeout=0))
