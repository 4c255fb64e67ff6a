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

How many it keeps parsed follows the reads (:class:`ParsedStates`). A parsed state
saves a parse only if it is read again before it is let go, which depends on how many
customers a worker owns against ``limit``. On the storefront mix, the last 20,000
written held the customer of 93 % of the reads at 20k customers per worker, 43 % at 50k
and 22 % at 100k (the stream of keys alone, ``bench/README.md``, thirty-second
session). So the store keeps ``limit`` parsed only while at least ``hit_rate`` of the
reads would find their state among the last ``limit`` written, and ``least`` otherwise
(``CRM_STATES_PARSED``, ``CRM_STATES_PARSED_MIN``, ``CRM_STATES_PARSED_HIT_RATE``).

So a worker's heap is about the states kept parsed x 6.5 KB plus 0.5 KB per customer it owns,
plus the states its rounds in flight read from bytes (each round at most about
``CRM_BATCH_STATES_FROM_BYTES``, parsed until written), and a round pays the parse
for each customer it touches that was not written among the last ``limit``.
RocksDB stores keep no state in memory at all: this applies to the memory store only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings


class ParsedStates:
    """The customers whose state the store holds parsed, least recently written first,
    with the bytes each was written as (to put in its place when it is let go); and how
    many to hold.

    It holds ``least`` until the reads show that ``limit`` would pay: the loader says of
    each state it reads from the store whether it found it parsed (:meth:`bytes_of`)
    or as bytes (:meth:`read_as_bytes`), and the keys let go are remembered (without
    their states) until ``limit`` keys written since push them out. So every ``limit``
    reads give the share of them that found their customer among the last ``limit``
    written, whatever the store held then (:attr:`estimate`): at ``hit_rate`` or more it
    holds ``limit``, below it ``least``. New customers' states are not reads. With
    ``least`` at ``limit`` (the default) or a ``hit_rate`` of 0 it always holds ``limit``.
    """

    def __init__(self, limit: int, least: int | None = None, hit_rate: float = 0.5) -> None:
        self.limit = limit
        self.least = limit if least is None or hit_rate <= 0 else min(least, limit)
        self.hit_rate = hit_rate
        #: How many it holds parsed now: ``least`` or ``limit``.
        self.keep = self.least
        #: The share of the last ``limit`` reads that found their customer among the last
        #: ``limit`` written; None until that many reads.
        self.estimate: float | None = None
        self._written: OrderedDict[str, bytes] = OrderedDict()
        #: Keys let go since written, least recently first: with :attr:`_written`, the
        #: last ``limit`` keys written.
        self._let_go: OrderedDict[str, None] = OrderedDict()
        self._reads = 0
        self._found = 0

    def __len__(self) -> int:
        return len(self._written)

    @property
    def full(self) -> bool:
        """Whether states have been let go for their bytes (or will be at the next write)."""
        return bool(self.limit) and len(self._written) >= self.keep

    def bytes_of(self, key: str) -> bytes | None:
        """The bytes ``key`` was last written as, if the store keeps it parsed (a read:
        the loader asks this of every state it finds parsed)."""
        raw = self._written.get(key)
        if raw is not None:
            self._reads += 1
            self._found += 1
        return raw

    def read_as_bytes(self, key: str) -> None:
        """Note a read of a state the store keeps as bytes."""
        self._reads += 1
        if key in self._let_go:
            self._found += 1

    def written(self, store: MutableMapping[str, Any], rows: Iterable[tuple[str, bytes]]) -> int:
        """Note ``(key, stored bytes)`` just written parsed to ``store``; put the stored
        bytes in place of the states past the number kept. Returns how many were let go."""
        if self._reads >= self.limit > self.least:
            self.estimate = self._found / self._reads
            self.keep = self.limit if self.estimate >= self.hit_rate else self.least
            self._reads = self._found = 0
        kept = self._written
        let_go = self._let_go
        for key, raw in rows:
            if let_go:
                let_go.pop(key, None)
            kept[key] = raw
            kept.move_to_end(key)
        released = 0
        while len(kept) > self.keep:
            key, raw = kept.popitem(last=False)
            value = store.get(key)
            # Gone (erased, or its partition given up) or already bytes: left alone.
            if value is not None and not isinstance(value, bytes):
                store[key] = raw
                released += 1
            if self.keep < self.limit:
                let_go[key] = None
        for _ in range(len(kept) + len(let_go) - self.limit):
            let_go.popitem(last=False)
        return released


def parsed_states(settings: Settings) -> ParsedStates:
    """The store's parsed states as ``settings`` say (``CRM_STATES_PARSED``,
    ``CRM_STATES_PARSED_MIN``, ``CRM_STATES_PARSED_HIT_RATE``)."""
    return ParsedStates(
        settings.states_parsed, settings.states_parsed_min, settings.states_parsed_hit_rate
    )
