"""The aggregates agent's merge: the signals of every customer partition in one order.

The signals of one aggregation key come from every customer partition (the
*sources*), so the order in which they reach a ``crm.signals`` partition
depends on timing: which worker folded its round first. Folded in that order,
a delay episode could open in one run and not in the next. :class:`SourceMerge`
(one per ``crm.signals`` partition) releases them in an order that depends on
the sources' sequences alone:

* each signal carries its source and that source's **stream time** when the
  source event was released (:class:`schemas.signals.Signal`); along one
  source it never decreases;
* each source also reports its progress (:class:`schemas.signals.SourceProgress`:
  its stream time, and whether every input of it is caught up) on every
  signals partition, after the signals of its round;
* the merge keeps one lane per source, in log order, and releases the signal
  with the smallest ``(stream time, source)`` among the lane heads, once every
  *empty* lane is known to come after it: its last progress is later (or as
  late, from a higher source), or says caught up (``idle``), or it has said
  nothing for ``idle_after`` seconds (released without it, and counted, as
  Kafka Streams' ``max.task.idle.ms``);
* a progress record at a lane's head is taken at once (it releases nothing).

So the released sequence is the merge of the sources' sequences by ``(stream
time, source)``, whatever the interleaving on the topic and wherever progress
records fall, unless a source was waited for in vain (idle or silent). A source
is one of the ``sources`` customer partitions; a signal of another source (a
misconfigured sender) gets a lane that never holds the others back. A record
that is not a signal of a known place -- an older version's signal without a
source, a record that is not JSON -- is released at once, in log order (the
fold validates it; a bad one becomes a dead letter).

Restarts: the merge's bookkeeping (:meth:`SourceMerge.snapshot`: per lane the
offset of the last record it took, its progress) is stored with the keys'
states; :meth:`SourceMerge.restore` takes it back, and a record read again at
or before its lane's offset is skipped. Offsets commit up to the first record
still held (:meth:`SourceMerge.first_held`).

Pure: no I/O; the caller passes a monotonic clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.base import zoned_timestamp
from schemas.signals import PROGRESS

#: Sort time of a source without a stream time yet (before any other).
NONE_YET = float("-inf")
INF = float("inf")


@dataclass(slots=True)
class Entry:
    """One buffered ``crm.signals`` record of a lane."""

    at: float
    offset: int
    #: The fetched record (handed to the fold); None for a progress record.
    record: Any = None
    #: A progress record's ``idle``.
    idle: bool = False


@dataclass(slots=True)
class SourceLane:
    """One source's records on one signals partition, in log order."""

    source: int
    #: Whether an empty lane can hold the others back (a source of the deployment).
    blocking: bool = True
    queue: deque[Entry] = field(default_factory=deque)
    #: Offset of the last record taken from this lane (re-reads at or before it skip).
    offset: int = -1
    #: Latest progress: every signal still to come has a stream time at or after it.
    floor: float = NONE_YET
    #: Whether the latest progress said every input of the source is caught up.
    idle: bool = False
    #: Monotonic time since when the lane has been empty while another waited on it.
    silent_since: float | None = None

    def after(self, at: float, source: int) -> bool:
        """Whether everything still to come on this empty lane sorts after ``(at, source)``."""
        return self.idle or self.floor > at or (self.floor == at and self.source > source)


@dataclass(slots=True)
class Counts:
    """What the merge did, for metrics (the caller takes and resets them)."""

    #: Records read again at or before their lane's offset (taken before a restart).
    skipped: int = 0
    #: Times a signal went without waiting any longer for a silent source.
    idle_releases: int = 0


class SourceMerge:
    """The merge of one ``crm.signals`` partition (see the module docstring)."""

    def __init__(self, sources: int, idle_after: float) -> None:
        self.sources = sources
        self.idle_after = idle_after
        self.lanes: dict[int, SourceLane] = {s: SourceLane(s) for s in range(sources)}
        #: Records released at once (no known place), in log order.
        self.loose: deque[Entry] = deque()
        #: The offset after the last record accepted (None: none yet).
        self.position: int | None = None
        #: Whether a lane's offset or progress moved since the last :meth:`snapshot`.
        self.moved = False
        #: Whether the last :meth:`release` stopped to wait for a source.
        self.waiting = False
        #: Whether a source reported its progress since the caller last reset this (the
        #: aggregates agent repeats its promises to the customer partitions then).
        self.heard = False
        self.counts = Counts()

    def __len__(self) -> int:
        return len(self.loose) + sum(len(lane.queue) for lane in self.lanes.values())

    def _lane(self, source: int) -> SourceLane:
        lane = self.lanes.get(source)
        if lane is None:
            lane = self.lanes[source] = SourceLane(source, blocking=False)
        return lane

    # -- in --------------------------------------------------------------------------

    def accept(self, records: Iterable[Any]) -> None:
        """Buffer fetched records (aiokafka ``ConsumerRecord``: offset, value), in log order."""
        for record in records:
            self.position = record.offset + 1
            place = _place(record.value)
            if place is None:
                self.loose.append(Entry(NONE_YET, record.offset, record))
                continue
            source, at, progress, idle = place
            lane = self._lane(source)
            if record.offset <= lane.offset:
                self.counts.skipped += 1  # taken before a restart
                continue
            lane.queue.append(Entry(at, record.offset, None if progress else record, idle))

    # -- out -------------------------------------------------------------------------

    def release(self, limit: int, monotonic_now: float) -> list[Any]:
        """Up to ``limit`` signal records in merge order, as far as the sources allow."""
        out = [entry.record for entry in self.loose]
        self.loose.clear()
        lanes = list(self.lanes.values())
        self.waiting = False
        while len(out) < limit:
            head: tuple[float, int] | None = None
            head_lane: SourceLane | None = None
            for lane in lanes:
                queue = lane.queue
                while queue and queue[0].record is None:  # progress: taken at once
                    self._take_progress(lane, queue.popleft())
                if queue and (head is None or (queue[0].at, lane.source) < head):
                    head, head_lane = (queue[0].at, lane.source), lane
            if head is None or head_lane is None:
                break
            if not self._others_allow(head, head_lane, lanes, monotonic_now):
                self.waiting = True
                break
            entry = head_lane.queue.popleft()
            head_lane.offset = entry.offset
            self.moved = True
            out.append(entry.record)
        return out

    def floor(self) -> float:
        """A stream time every signal still to be released is placed at or after: the
        least, over the sources, of the first record waiting in its lane, else of its
        progress (a caught-up source: INF); NONE_YET while a source has said nothing.
        The aggregates agent promises the customer partitions no proposal before it (plus
        the lookahead)."""
        floor = INF
        for lane in self.lanes.values():
            if not lane.blocking:
                continue
            if lane.queue:
                at = lane.queue[0].at
            elif lane.idle:
                continue
            else:
                at = lane.floor
            if at < floor:
                floor = at
        return floor

    def _take_progress(self, lane: SourceLane, entry: Entry) -> None:
        self.heard = True
        lane.offset = entry.offset
        lane.floor = max(lane.floor, entry.at)
        lane.idle = entry.idle
        lane.silent_since = None
        self.moved = True

    def _others_allow(
        self,
        head: tuple[float, int],
        head_lane: SourceLane,
        lanes: Sequence[SourceLane],
        monotonic_now: float,
    ) -> bool:
        """Whether every other empty lane is known to come after ``head``, or silent
        past the limit."""
        for lane in lanes:
            if lane is head_lane or lane.queue or not lane.blocking:
                continue
            if lane.after(*head):
                lane.silent_since = None
                continue
            if lane.silent_since is None:
                lane.silent_since = monotonic_now
            if monotonic_now - lane.silent_since < self.idle_after:
                return False
            self.counts.idle_releases += 1
            lane.silent_since = monotonic_now  # count each silent period once
        return True

    # -- commits and restarts -----------------------------------------------------------

    def first_held(self) -> int | None:
        """The offset to commit: the first record still held, else the position."""
        held = [lane.queue[0].offset for lane in self.lanes.values() if lane.queue]
        if self.loose:
            held.append(self.loose[0].offset)
        return min(held) if held else self.position

    def snapshot(self) -> dict[str, Any]:
        """What a restart needs: per lane the last offset taken and the progress."""
        self.moved = False
        return {
            "lanes": {
                str(lane.source): [
                    lane.offset,
                    None if lane.floor == NONE_YET else lane.floor,
                    lane.idle,
                ]
                for lane in self.lanes.values()
                if lane.offset >= 0
            }
        }

    def restore(self, stored: Any) -> None:
        """Take back a :meth:`snapshot` (before any record is accepted)."""
        if not isinstance(stored, dict) or not isinstance(stored.get("lanes"), dict):
            return
        for source, row in stored["lanes"].items():
            offset, floor, idle = row
            lane = self._lane(int(source))
            lane.offset = int(offset)
            lane.floor = NONE_YET if floor is None else float(floor)
            lane.idle = bool(idle)


def _place(value: bytes | None) -> tuple[int, float, bool, bool] | None:
    """``(source, stream time, is progress, idle)`` of a record, or None: no known place."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    source = data.get("source")
    if type(source) is not int or source < 0:
        return None
    progress = data.get("kind") == PROGRESS
    idle = data.get("idle")
    if progress and (type(idle) is not bool or set(data) != _PROGRESS_FIELDS):
        return None  # not a valid progress record: the fold dead-letters it
    stamp = data.get("stream_time")
    if stamp is None:
        if not progress:
            return None  # a signal of an older version: no place in its source's sequence
        return source, NONE_YET, True, bool(idle)
    at = zoned_timestamp(stamp)
    return None if at is None else (source, at, progress, bool(idle))


_PROGRESS_FIELDS = {"schema_version", "kind", "source", "stream_time", "idle"}
