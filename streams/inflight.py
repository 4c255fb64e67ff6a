"""Rounds' writes in flight: a round hands its writes over, and the next round folds
while the broker acknowledges them.

A batch round (``streams.customer_agent.CustomerAgent.handle_round``) folds its
records, then writes: its outputs, acknowledged; then its states, acknowledged;
only then are its offsets marked handled (while a backlog drains, full rounds hold
their states back and one later round writes them: :class:`HeldWrites`). The fold
is CPU, the writes are waiting for the broker (two acknowledged writes, one after
the other: 44 ms of a 64 ms round at 1,750 events/s). :class:`InFlight` lets the
writes of the last ``depth`` rounds run as tasks while the agent folds the next round.

Order is kept by the tasks themselves: each round's writes wait for the previous
round's to finish before its state records go out, so state records and handled
offsets follow the rounds' order (outputs go out in round order, as the agent
sends them before it starts the task). A failed round fails every round after it,
and the failure is raised to the agent at its next :meth:`trim` (and every one after).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas import codec


class InFlight:
    """The writes of the rounds in flight, oldest first, at most ``depth`` once a
    round is handed over (:meth:`trim`). ``depth`` 0: every round waits for its own."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._tasks: deque[asyncio.Task[None]] = deque()
        #: The first failure collected: raised again by every later trim and settle
        #: (nothing written after a failed round counts until the worker restarts).
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def last(self) -> asyncio.Task[None] | None:
        """The latest round's writes (the next round's wait for them), or None."""
        return self._tasks[-1] if self._tasks else None

    def start(self, writes: Coroutine[Any, Any, None]) -> None:
        """Run a round's writes as a task."""
        self._tasks.append(asyncio.ensure_future(writes))

    async def trim(self) -> None:
        """Collect the rounds done (raising the first failure) and wait until at most
        ``depth`` are in flight."""
        tasks = self._tasks
        while tasks and (tasks[0].done() or len(tasks) > self.depth):
            task = tasks[0]
            await asyncio.wait([task])
            if tasks and tasks[0] is task:  # a settle meanwhile may have collected it
                tasks.popleft()
                self._collect(task)
        if self.failure is not None:
            raise self.failure

    async def settle(self) -> None:
        """Wait for every round's writes (before partitions move, or the worker stops).
        Raises the first failure (the rounds after it fail with it) once all are done.
        Waiting callers do not cancel the writes if they are cancelled themselves."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks)
        for task in tasks:
            if task in self._tasks:
                self._tasks.remove(task)
            self._collect(task)
        if self.failure is not None:
            raise self.failure

    def _collect(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()  # each one retrieved
        if self.failure is None:
            self.failure = error


#: Fewer stored forms than this are packed on the event loop's thread: a hop to the
#: packing thread and back costs more than ~1 ms of packing (and the GIL may keep the
#: result waiting a switch interval, 5 ms, while the loop is busy).
PACK_OFF_LOOP_FROM = 128


class Packer:
    """Packs the stored forms a round writes (``CRM_STATE_PACKING``): a batch of them on
    a thread of its own, beside the event loop, which folds the next round meanwhile.

    zstd packs a whole batch in one call that lets go of the GIL (:func:`schemas.codec.
    pack_many`): ~8.5 µs per storefront state that the loop's thread no longer spends,
    where a second core has room (on this 2-core VM, beside the embedded broker). A
    small batch (live traffic), and packings that would hold the GIL per value, are
    packed on the loop's thread, as before."""

    def __init__(self) -> None:
        # Never shut down: the last writes of a stopping worker still pack here; an idle
        # thread is joined at the interpreter's exit.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="crm-pack")

    async def pack(self, forms: list[bytes], level: int, packing: int) -> list[bytes]:
        """:func:`schemas.codec.pack` of each of ``forms``, in order."""
        if len(forms) < PACK_OFF_LOOP_FROM or not codec.in_one_call(level, packing):
            return codec.pack_many(forms, level, packing)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, codec.pack_many, forms, level, packing)


#: Flush once this many customers' states are held, whatever the interval (bounds the
#: stored forms kept for them: a few KB each).
MAX_HELD = 20_000


class HeldWrites:
    """What full rounds hold back while a backlog drains (write-behind,
    ``CRM_STATE_FLUSH_INTERVAL``): per customer, the latest state and stored form; per
    partition, the latest clock and the furthest offset handled; the population gauges'
    moves and the records' append times, summed. :meth:`take` hands it all over to be
    written at once, in the order of the rounds' writes (after the last round's)."""

    __slots__ = ("appended_at", "clocks", "forms", "handled", "moves", "since", "states")

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        #: Customer id -> the stored form of its latest round (the customers to write).
        self.forms: dict[str, bytes] = {}
        #: Customer id -> (partition, state), for those customers and maybe others the
        #: rounds loaded (a round's ``BatchResult.states`` as it is: no copy per customer).
        self.states: dict[str, tuple[int, Any]] = {}
        self.clocks: dict[int, dict[str, Any]] = {}
        self.handled: dict[tuple[str, int], int] = {}
        self.moves: Counter[tuple[str, str]] = Counter()
        self.appended_at: list[float] = []
        #: When the first round now held was (monotonic), or None.
        self.since: float | None = None

    def __bool__(self) -> bool:
        return self.since is not None

    def hold(
        self,
        forms: Mapping[str, bytes],
        states: Mapping[str, tuple[int, Any]],
        clocks: Mapping[int, dict[str, Any]],
        handled: Mapping[tuple[str, int], int],
        moves: Mapping[tuple[str, str], int],
        appended_at: Iterable[float],
        now: float,
    ) -> None:
        """Add one round's writes (its offsets only move forward)."""
        if self.since is None:
            self.since = now
        self.forms.update(forms)
        self.states.update(states)
        self.clocks.update(clocks)
        furthest = self.handled
        for tp, offset in handled.items():
            if offset > furthest.get(tp, -1):
                furthest[tp] = offset
        self.moves.update(moves)
        self.appended_at.extend(appended_at)

    def due(self, caught_up: bool, interval: float, now: float) -> bool:
        """Whether what is held (a round at least: asked after :meth:`hold`) must be
        written now."""
        assert self.since is not None
        return caught_up or now - self.since >= interval or len(self.forms) >= MAX_HELD

    def take(self) -> HeldWrites:
        """What is held, handed over; this one starts empty."""
        taken = HeldWrites()
        for name in self.__slots__:
            setattr(taken, name, getattr(self, name))
        self._clear()
        return taken
