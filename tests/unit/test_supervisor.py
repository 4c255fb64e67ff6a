"""``crmstream up`` / ``demo`` start a worker that exits again, with back-off, and stop the
stack when one keeps dying (streams.tools.runner.RestartPolicy, Supervisor), without processes."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from schemas.errors import EmbeddedServiceError
from streams.settings import Settings
from streams.tools.runner import RestartPolicy, Running, Supervisor, exit_text


def test_each_exit_within_the_window_doubles_the_wait():
    policy = RestartPolicy()

    delays = [policy.exited(now) for now in (0.0, 1.0, 3.0, 6.0)]

    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert policy.attempt == 4


def test_the_fifth_exit_within_a_minute_gives_up():
    policy = RestartPolicy()
    for now in (0.0, 10.0, 20.0, 30.0):
        assert policy.exited(now) is not None

    assert policy.exited(40.0) is None


def test_exits_older_than_the_window_are_forgotten():
    policy = RestartPolicy()
    for now in (0.0, 10.0, 20.0, 30.0):
        policy.exited(now)

    # a minute after the last one, the worker starts over from the first delay
    assert policy.exited(95.0) == 0.5
    assert policy.attempt == 1


def test_the_wait_is_capped():
    policy = RestartPolicy(max_exits=100, window=1e9)

    delays = [policy.exited(float(n)) for n in range(12)]

    assert max(delays) == 30.0  # type: ignore[type-var]


def test_exit_statuses_in_words():
    assert exit_text(1) == "code 1"
    assert exit_text(-signal.SIGKILL) == "killed by SIGKILL"


# -- the supervisor, on fake processes -------------------------------------------------


class FakeProc:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


@dataclass
class FakeChild:
    name: str
    proc: FakeProc = field(default_factory=FakeProc)
    log_path: Path = Path("/tmp/worker-0.log")


@dataclass
class FakeStack:
    respawned: list[str] = field(default_factory=list)
    workdir: Path = Path("/tmp")

    def respawn(self, child: FakeChild) -> FakeChild:
        self.respawned.append(child.name)
        return FakeChild(child.name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def said(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr("streams.tools.runner.say", lines.append)
    monkeypatch.setattr("streams.tools.runner._answers_ready", lambda url: True)
    return lines


def supervised(workers: int = 1):
    stack = FakeStack()
    children = [FakeChild(f"worker-{i}") for i in range(workers)]
    running = Running(stack, Settings(), [(c, 7000 + i) for i, c in enumerate(children)])  # type: ignore[arg-type]
    clock = Clock()
    return Supervisor(running, clock=clock), running, stack, clock


def test_a_worker_that_exits_is_started_again_after_its_delay(said):
    supervisor, running, stack, clock = supervised()
    running.workers[0][0].proc.code = -signal.SIGKILL

    supervisor.poll()
    assert said[-1].startswith(
        "crmstream: worker-0 exited (killed by SIGKILL); restarting in 0.5 s"
    )
    assert "attempt 1" in said[-1] and "worker-0.log" in said[-1]
    assert stack.respawned == []

    clock.now = 0.6
    supervisor.poll()
    assert stack.respawned == ["worker-0"]
    assert running.workers[0][1] == 7000  # same web port

    supervisor.poll()
    assert said[-1] == "crmstream: worker-0 ready again at http://127.0.0.1:7000"


def test_only_the_worker_that_exited_is_touched(said):
    supervisor, running, stack, clock = supervised(workers=2)
    survivor = running.workers[0][0]
    running.workers[1][0].proc.code = 1

    supervisor.poll()
    clock.now = 1.0
    supervisor.poll()

    assert stack.respawned == ["worker-1"]
    assert running.workers[0][0] is survivor


def test_a_worker_that_keeps_dying_stops_the_stack_naming_its_log(said):
    supervisor, running, _, clock = supervised()
    for _ in range(4):
        running.workers[0][0].proc.code = 1
        supervisor.poll()  # exit seen: restart scheduled
        clock.now += 5
        supervisor.poll()  # restarted
    running.workers[0][0].proc.code = 3

    with pytest.raises(EmbeddedServiceError) as error:
        supervisor.poll()

    message = str(error.value)
    assert "worker-0 exited 5 times within 60 s" in message
    assert "last: code 3" in message and "worker-0.log" in message
    assert [line.split(" (attempt ")[1][0] for line in said if "restarting" in line] == list("1234")
