"""A worker's start and restart wait for the broker, not for faust's fixed sleeps.

Measured (``bench.restart``, 50k customers, the twenty-fifth session): between its
process start and its first record a restarted worker slept two whole seconds in
faust for nothing. faust's ``TableManager.on_start`` sleeps 1 s before it registers
the tables' changelogs (for tables declared after the app starts; every crmstream
table is declared in ``create_app``), and faust's ``Consumer._wait_next_records``
sleeps 1 s when no partition is active -- which is the case right after a
recovery, until the streams' partitions resume, so the fetch loop that asked then
positioned the partitions a second late. Both are faust's code taking a whole
second where there is nothing to wait for; these tests run faust's and
crmstream's code with the sleeps observed, not skipped.
"""

from __future__ import annotations

import asyncio
from types import MethodType, SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer


def test_the_table_manager_registers_the_changelogs_without_a_sleep_first() -> None:
    from agents.rules import Rules
    from streams.app import create_app
    from streams.settings import Settings

    async def start() -> tuple[list[str], list[float]]:
        manager = create_app(Settings(), Rules()).app.tables
        steps: list[str] = []
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        async def update_channels() -> None:
            steps.append("changelogs registered")

        async def start_recovery() -> None:
            steps.append("recovery started")

        manager.sleep = sleep  # faust's Service.sleep: what its on_start waits with
        manager._update_channels = update_channels
        manager._recovery = SimpleNamespace(start=start_recovery)
        await manager.on_start()
        return steps, slept

    steps, slept = asyncio.run(start())
    assert steps == ["changelogs registered", "recovery started"]
    assert slept == []


class _NothingActive:
    """What the fetch loop reads of faust's consumer, between a recovery and the
    streams' resumption: flow active, partitions assigned, none active yet. Its
    ``_wait_next_records`` is faust's own; ``sleep`` (faust's Service.sleep) notes
    the seconds asked and returns at once."""

    def __init__(self, looks: int) -> None:
        self.flow_active = True
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.not_waiting_next_records = asyncio.Event()
        self.app = SimpleNamespace(client_only=False)
        self._stopped = asyncio.Event()
        self.slept: list[float] = []
        self.looks = 0
        self._left = looks
        self._wait_next_records = MethodType(FaustConsumer._wait_next_records, self)

    def _get_active_partitions(self) -> set[Any]:
        self.looks += 1
        self._left -= 1
        if self._left <= 0:
            self._stopped.set()  # enough: the fetch loop ends at its next check
        return set()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_fetch_loop_does_not_sleep_a_second_while_no_partition_is_active() -> None:
    from streams.kafka import NOTHING_ACTIVE_PAUSE, InputFeed

    async def drain() -> _NothingActive:
        consumer = _NothingActive(looks=3)
        app = SimpleNamespace(
            consumer=consumer, consumer_generation_id=1, rebalancing=False, should_stop=False
        )
        feed = InputFeed(app, {}, buffer_limit=10, commit_interval=60.0)
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        await asyncio.wait_for(feed.drain(fetcher), timeout=30)
        return consumer

    consumer = asyncio.run(drain())
    assert consumer.looks == 3  # it looked again and again, as faust's loop does ...
    assert consumer.slept == []  # ... without faust's sleep(1) between the looks
    assert 0 < NOTHING_ACTIVE_PAUSE <= 0.1
