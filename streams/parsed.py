"""Which customer states the memory store keeps parsed (``CRM_STATES_PARSED``).

A parsed customer state (:class:`agents.state.CustomerState`) takes about 6.5 KB
of heap on the storefront mix; the bytes it is stored as (packed,
:func:`schemas.codec.pack`) about 0.5 KB. The memory store keeps the states of the
customers written last parsed (at most ``limit``), and every other one as the bytes
that went to its changelog. Whoever reads a table value takes either form
(``streams.projection.as_state``, ``agents.customer_events``): a state kept as
bytes is parsed when read (unpacked, decoded and built: 13.5 µs in-process for a
storefront state at 100k customers, ``bench.state_size``'s ``read_us_per_state``), and
stays parsed once a round writes it. Recovered states stay bytes until written
(``streams.kafka.decode_restored``).

How many it keeps parsed follows the reads (:class:`ParsedStates`). A parsed state
saves a parse only if it is read again before it is let go, which depends on how many
customers a worker owns against ``limit``. So the store keeps the last ``least``
written parsed, and the ``limit - least`` before them only while they serve at least
``hit_rate`` of the reads (``CRM_STATES_PARSED_MIN``, ``CRM_STATES_PARSED``,
``CRM_STATES_PARSED_HIT_RATE``; figures in ``bench/README.md``, thirty-second
session).

So a worker's heap is about the states kept parsed x 6.5 KB plus 0.5 KB per customer it owns,
plus the states its rounds in flight read from bytes (each round at most about
``CRM_BATCH_STATES_FROM_BYTES``, parsed until written), and a round pays the parse
for each customer it touches whose state is not kept parsed.
RocksDB stores keep no state in memory at all: this applies to the memory store only.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings


class ParsedStates:
    """The customers whose state the store holds parsed, least recently written first,
    with the bytes each was written as (to put in its place when it is let go); and how
    many to hold.

    The last ``least`` written are held parsed. The ``limit - least`` written before
    them are held parsed too while the reads show that they pay. The loader says of
    each state it reads from the store whether it found it parsed (:meth:`bytes_of`)
    or not (:meth:`read_unparsed`: as bytes, or a new customer's), and those older
    keys are remembered, with or without their states. So every :attr:`window` reads
    (``least``) give the share of the last ``limit`` reads or so whose customer was
    among the last ``limit`` written but not among the last ``least``, whatever the
    store held then (:attr:`estimate`): what the older states serve, or would. At
    ``hit_rate`` or more the store holds ``limit``, below it ``least``.

    A customer read again soon after it was written (a session's events, batch after
    batch) is served by the last ``least`` alone, so it does not count. A new
    customer's state counts as a read that nothing serves. Early in a first start every
    customer read again was written lately, so counting only those reads made the
    older states look worth keeping until the history grew: at 100k customers on the
    storefront mix the first estimate (of 20,000 reads) read 0.45 and fell to 0.18 over
    160k reads, and the store held ``limit`` meanwhile (a memory peak the allocator
    keeps). Counting new customers, estimates read 0 to 0.17 over the first 20k reads,
    then 0.17-0.18 (``bench/README.md``, thirty-second session).

    With ``least`` at ``limit`` (the default) or a ``hit_rate`` of 0 it always holds
    ``limit``.
    """

    def __init__(self, limit: int, least: int | None = None, hit_rate: float = 0.25) -> None:
        self.limit = limit
        self.least = limit if least is None or hit_rate <= 0 else min(least, limit)
        self.hit_rate = hit_rate
        #: Reads between decisions: ``least``, and at least 1,000 (or ``limit``) so that
        #: a small ``least`` does not decide on a handful. Each decides on the last
        #: ``limit`` reads or so (:attr:`_windows`). At least 1: a ``limit`` of 0 (every
        #: state parsed, nothing tracked) is a store this is built for too.
        self.window = max(1, self.least, min(self.limit, 1000))
        #: (reads, of them served by the older states) of the last few windows: a
        #: window of 5,000 reads alone swung from 0.14 to 0.28 at 100k customers (the
        #: timers' sweeps load customers in bursts), and each swing over ``hit_rate``
        #: took the states of 10,000 more customers for a while.
        self._windows: deque[tuple[int, int]] = deque(maxlen=max(1, -(-limit // self.window)))
        #: How many it holds parsed at most now: ``least`` or ``limit``.
        self.keep = self.least
        #: The share of the last ``limit`` reads or so (whole windows) that found their
        #: customer among the last ``limit`` written but not the last ``least``; None
        #: until a window's reads.
        self.estimate: float | None = None
        #: The last ``least`` written: parsed.
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        #: The ``limit - least`` written before them: their bytes if held parsed, None
        #: if let go (while it holds ``least``).
        self._older: OrderedDict[str, bytes | None] = OrderedDict()
        self._older_parsed = 0
        self._reads = 0
        self._older_reads = 0

    def __len__(self) -> int:
        """The states it holds parsed."""
        return len(self._recent) + self._older_parsed

    @property
    def full(self) -> bool:
        """Whether states have been let go for their bytes (or will be at the next write)."""
        return bool(self.limit) and len(self) >= self.keep

    def bytes_of(self, key: str) -> bytes | None:
        """The bytes ``key`` was last written as, if the store keeps it parsed (a read:
        the loader asks this of every state it finds parsed)."""
        raw = self._recent.get(key)
        if raw is not None:
            self._reads += 1
            return raw
        raw = self._older.get(key)
        if raw is not None:
            self._reads += 1
            self._older_reads += 1
        return raw

    def read_unparsed(self, key: str) -> None:
        """Note a read of a state the store does not hold parsed: kept as bytes, or none
        yet (a new customer, whose state starts in the round)."""
        self._reads += 1
        if key in self._older:
            self._older_reads += 1

    def written(self, store: MutableMapping[str, Any], rows: Iterable[tuple[str, bytes]]) -> int:
        """Note ``(key, stored bytes)`` just written parsed to ``store``; put the stored
        bytes in place of the states past the number kept. Returns how many were let go."""
        released = self._decide(store)
        recent = self._recent
        older = self._older
        for key, raw in rows:
            if older and key in older and older.pop(key) is not None:
                self._older_parsed -= 1
            recent[key] = raw
            recent.move_to_end(key)
        holds_older = self.keep > self.least
        while len(recent) > self.least:
            key, raw = recent.popitem(last=False)
            if holds_older:
                older[key] = raw
                self._older_parsed += 1
            else:
                released += _let_go(store, key, raw)
                older[key] = None
        for _ in range(len(older) - (self.limit - self.least)):
            key, held = older.popitem(last=False)
            if held is not None:
                self._older_parsed -= 1
                released += _let_go(store, key, held)
        return released

    def _decide(self, store: MutableMapping[str, Any]) -> int:
        """Every :attr:`window` reads: hold ``limit`` or ``least`` (letting the older states go
        for their bytes). Returns how many were let go."""
        if self._reads < self.window or self.limit <= self.least:
            return 0
        windows = self._windows
        windows.append((self._reads, self._older_reads))
        self._reads = self._older_reads = 0
        self.estimate = sum(older for _, older in windows) / sum(reads for reads, _ in windows)
        keep = self.limit if self.estimate >= self.hit_rate else self.least
        if keep == self.keep:
            return 0
        self.keep = keep
        released = 0
        if keep == self.least:
            older = self._older
            for key, held in older.items():
                if held is not None:
                    released += _let_go(store, key, held)
                    older[key] = None
            self._older_parsed = 0
        return released


def _let_go(store: MutableMapping[str, Any], key: str, raw: bytes) -> int:
    """Put ``raw`` in place of ``key``'s parsed state; 1 if there was one. A state gone
    (erased, or its partition given up) or already bytes is left alone."""
    value = store.get(key)
    if value is not None and not isinstance(value, bytes):
        store[key] = raw
        return 1
    return 0


def parsed_states(settings: Settings) -> ParsedStates:
    """The store's parsed states as ``settings`` say (``CRM_STATES_PARSED``,
    ``CRM_STATES_PARSED_MIN``, ``CRM_STATES_PARSED_HIT_RATE``)."""
    return ParsedStates(
        settings.states_parsed, settings.states_parsed_min, settings.states_parsed_hit_rate
    )
