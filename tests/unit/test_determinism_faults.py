"""bench.determinism's fault scenarios must inject their faults while input is left.

A scenario whose SIGKILL, join or stop came once the input had drained tested nothing:
the worker got fast enough that the sigkill scenario's first SIGKILL, 10 s after the
worker was ready, came after a 60k-event history had drained, and it passed with no
SIGKILL at all. Such a scenario now fails, and says which option to change.

Unit tier: the scenario drivers against a stand-in for the worker pool (the real pool
starts worker processes on the embedded stack: ``tests/integration/test_determinism.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace

from bench.determinism import (
    DEFAULT,
    SHORT,
    Options,
    Progress,
    Report,
    ScenarioResult,
    drive_rebalance,
    drive_sigkill,
    render,
)

QUICK = dataclasses.replace(
    DEFAULT,
    first_kill_after=0.01,
    kill_every=0.01,
    join_after=0.0,
    stop_after=0.0,
    restart_after=0.0,
)


class Pool:
    """Starts, kills and stops nothing: lowers the input lag as a worker's work would."""

    def __init__(self, progress: Progress, lags: list[int]) -> None:
        self.progress = progress
        self.lags = lags  # the input lag the watcher reads next, one per step
        self.slots = {"w1": SimpleNamespace(was_ready=True), "w2": SimpleNamespace(was_ready=True)}
        self.killed = 0
        self.stopped = 0

    def _step(self) -> None:
        self.progress.input_lag = self.lags.pop(0) if self.lags else 0

    def start(self, slot: str) -> None:
        self._step()

    async def wait_ready(self, slot: str) -> None:
        await asyncio.sleep(0)

    async def kill(self, slot: str) -> None:
        self.killed += 1

    async def stop(self, slot: str) -> int:
        self.stopped += 1
        self._step()
        return 0


def _run(driver, lags: list[int], options: Options) -> tuple[Progress, Pool]:
    progress = Progress(time.monotonic(), "test")
    pool = Pool(progress, lags)
    asyncio.run(driver(pool, progress, options))
    return progress, pool


def test_a_sigkill_scenario_whose_input_drained_before_its_first_sigkill_is_not_exercised():
    # Given a worker that drains the whole input before the first SIGKILL is due
    progress, pool = _run(drive_sigkill, [0], QUICK)
    # Then nothing was killed, and the scenario says so
    assert pool.killed == 0 and progress.kills == 0
    assert len(progress.unexercised) == 1
    assert "no SIGKILL" in progress.unexercised[0]
    assert "--first-kill-after" in progress.unexercised[0]


def test_a_sigkill_scenario_that_kills_while_input_is_left_is_exercised():
    # Given input left at the first SIGKILL and drained by the next
    progress, pool = _run(drive_sigkill, [60_000, 0], QUICK)
    assert pool.killed == 1 and progress.kills == 1
    assert progress.unexercised == []


def test_a_rebalance_whose_stop_came_once_the_input_had_drained_is_not_exercised():
    # Given input left when worker 2 joins, and none when worker 1 is stopped
    progress, pool = _run(drive_rebalance, [60_000, 0, 0, 0], QUICK)
    assert pool.stopped == 1
    assert len(progress.unexercised) == 1
    assert "--stop-after" in progress.unexercised[0]


def test_a_rebalance_with_input_left_at_the_join_and_the_stop_is_exercised():
    progress, _ = _run(drive_rebalance, [60_000, 30_000, 0, 0], QUICK)
    assert progress.unexercised == []


def test_a_scenario_that_was_not_exercised_fails_the_run():
    # Given a run whose every scenario drained with the reference's outputs, but whose
    # sigkill scenario killed nothing
    scenarios = [
        ScenarioResult(name, f"app-{name}", n, drained=True, compared=True)
        for n, name in enumerate(("reference", "again", "rebalance", "sigkill"))
    ]
    scenarios[3].unexercised = [
        "no SIGKILL: the input drained within 10 s of the worker's readiness"
    ]
    report = Report(DEFAULT, "run", scenarios=scenarios)
    # Then it does not pass, and the report says why
    assert not scenarios[3].ok and not report.ok
    text = render(report)
    assert "verdict: NOT EXERCISED: no SIGKILL" in text
    assert "determinism: FAIL" in text and "not exercised: sigkill" in text


def test_the_presets_inject_their_first_fault_early():
    # The 60k-event history drains in about 9 s of one worker's work on this VM
    # (bench/README.md): the first SIGKILL and the stop must come well within that
    assert (DEFAULT.first_kill_after or DEFAULT.kill_every) <= 3.0
    assert DEFAULT.stop_after <= 1.0
    assert (SHORT.first_kill_after or SHORT.kill_every) <= 1.5
