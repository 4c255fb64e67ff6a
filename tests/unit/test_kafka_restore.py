"""The bulk restore's store writes (streams.kafka): a memory store keeps each restored
key's last value as bytes and decodes it once when recovery ends."""

from __future__ import annotations

import asyncio

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from agents.rules import Rules
from schemas import codec
from streams.app import create_app
from streams.kafka import _apply_restored, decode_restored
from streams.settings import Settings

TOPIC = "crmstream-customers-changelog"


def record(offset: int, key: str, value: object | None) -> ConsumerRecord:  # type: ignore[type-arg]
    raw = None if value is None else codec.dumps(value)
    return ConsumerRecord(
        TOPIC, 2, offset, 0, 0, key.encode(), raw, None, len(key), len(raw or b""), ()
    )


def customers_table():  # type: ignore[no-untyped-def]
    async def build():  # type: ignore[no-untyped-def]
        return create_app(Settings(), Rules()).customers

    return asyncio.run(build())


def test_a_restore_keeps_the_last_bytes_of_each_key_and_decodes_each_key_once() -> None:
    table = customers_table()
    store = table.data
    tp = TP(TOPIC, 2)

    # Given three versions of one customer, one of another, and a customer removed
    _apply_restored(
        table,
        tp,
        [
            record(0, "a", {"v": 2, "n": 1}),
            record(1, "b", {"v": 2, "n": 10}),
            record(2, "a", {"v": 2, "n": 2}),
            record(3, "gone", {"v": 2, "n": 0}),
        ],
    )
    _apply_restored(table, tp, [record(4, "a", {"v": 2, "n": 3}), record(5, "gone", None)])

    # Then the store holds each key's last value, still encoded, with its partition
    assert store.data == {"a": codec.dumps({"v": 2, "n": 3}), "b": codec.dumps({"v": 2, "n": 10})}
    assert store._key_partition == {"a": 2, "b": 2}

    # And when recovery ends each key is decoded once, into what a reader expects
    assert decode_restored(store) == 2
    assert store.data == {"a": {"v": 2, "n": 3}, "b": {"v": 2, "n": 10}}
    assert decode_restored(store) == 0
