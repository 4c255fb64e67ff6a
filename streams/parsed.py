"""Which customer states the memory store keeps parsed (``CRM_STATES_PARSED``).

A parsed customer state (:class:`agents.state.CustomerState`) takes about 6.5 KB
of heap on the storefront mix; the bytes it is stored as (packed,
:func:`schemas.codec.pack`) about 0.5 KB. The memory store keeps the states of the
last ``limit`` customers written parsed, and every other one as the bytes that
went to its changelog. Whoever reads a table value takes either form
(``streams.projection.as_state``, ``agents.customer_events``): a state kept as
bytes is parsed when read (unpacked, decoded and built: 13.5 µs in-process for a
storefront state at 100k customers, ``bench.state_size``'s ``read_us_per_state``), and
stays parsed once a round writes it. Recovered states stay bytes until written
(``streams.kafka.decode_restored``).

So a worker's heap is about ``limit`` x 6.5 KB plus 0.5 KB per customer it owns,
plus the states its rounds in flight read from bytes (each round at most about
``CRM_BATCH_STATES_FROM_BYTES``, parsed until written), and a round pays the parse
for each customer it touches that was not written among the last ``limit``.
RocksDB stores keep no state in memory at all: this applies to the memory store only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Any


class ParsedStates:
    """The customers whose state the store holds parsed, least recently written first,
    with the bytes each was written as (to put in its place when it is let go)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._written: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._written)

    @property
    def full(self) -> bool:
        """Whether states have been let go for their bytes (or will be at the next write)."""
        return bool(self.limit) and len(self._written) >= self.limit

    def bytes_of(self, key: str) -> bytes | None:
        """The bytes ``key`` was last written as, if the store keeps it parsed."""
        return self._written.get(key)

    def written(self, store: MutableMapping[str, Any], rows: Iterable[tuple[str, bytes]]) -> int:
        """Note ``(key, stored bytes)`` just written parsed to ``store``; put the stored
        bytes in place of the states past the limit. Returns how many were let go."""
        kept = self._written
        for key, raw in rows:
            kept[key] = raw
            kept.move_to_end(key)
        released = 0
        while len(kept) > self.limit:
            key, raw = kept.popitem(last=False)
            value = store.get(key)
            # Gone (erased, or its partition given up) or already bytes: left alone.
            if value is not None and not isinstance(value, bytes):
                store[key] = raw
                released += 1
        return released
