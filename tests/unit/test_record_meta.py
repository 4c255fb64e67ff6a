"""Where a record came from (schemas.deadletter.RecordMeta): one per record fetched.

The worker makes one for every record it admits (``InputMerges.accept``). As a frozen
dataclass it took ~0.8 us, four ``object.__setattr__`` calls; as a named tuple ~0.25 us,
about 1 % of a storefront event's CPU (issue 14). Unit tier.
"""

from __future__ import annotations

import pickle

import pytest

from schemas.deadletter import ErrorCode, RecordMeta, dead_letter


def test_a_record_meta_is_a_tuple_of_its_four_fields() -> None:
    meta = RecordMeta("crm.browsing", 3, 1_234, 1_700_000_000_000)

    assert isinstance(meta, tuple)  # made by tuple.__new__, no setattr per field
    assert (meta.topic, meta.partition, meta.offset, meta.timestamp_ms) == (
        "crm.browsing",
        3,
        1_234,
        1_700_000_000_000,
    )
    assert RecordMeta(topic="crm.orders", partition=0, offset=7).timestamp_ms is None


def test_a_record_meta_cannot_be_changed_and_compares_by_value() -> None:
    meta = RecordMeta("crm.orders", 0, 7)

    with pytest.raises(AttributeError):
        meta.offset = 8  # type: ignore[misc]
    assert meta == RecordMeta("crm.orders", 0, 7) and hash(meta) == hash(
        RecordMeta("crm.orders", 0, 7)
    )
    assert pickle.loads(pickle.dumps(meta)) == meta


def test_a_dead_letter_reads_where_its_record_came_from() -> None:
    letter = dead_letter(
        ErrorCode.NOT_JSON, "value is not JSON", b"c-1", b"{", RecordMeta("crm.orders", 2, 41, 5)
    )

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "crm.orders",
        2,
        41,
    )
    assert letter.source_timestamp_ms == 5
