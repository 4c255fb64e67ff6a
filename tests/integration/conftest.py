"""Integration fixtures: the real embedded broker (Tansu) and a real Redis,
started once per test session -- once per process when ``./dev test`` runs two
(pytest-xdist): each process has its own. Each test gets its own topics and
consumer group (a fresh ``Settings``), so tests share the servers but not data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.tools.embedded import Child, Stack, free_port
from streams.tools.runner import Running, wait_ready
from streams.topics import ensure_topics
from tests.integration.broker import EventFactory, prefixed_topics

_counter = itertools.count()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack")) as s:
        s.start_broker()
        s.start_redis()
        yield s


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Stack]:
    """A Redis of this test's own, to stop and restart (the session's is shared)."""
    with Stack(tmp_path / "own-redis") as stack:
        stack.start_redis()
        yield stack


@pytest.fixture
def crm_settings(stack: Stack, request: pytest.FixtureRequest) -> Settings:
    """Settings for this test: own topics, own consumer group, the shared servers."""
    n = next(_counter)
    prefix = f"t{n}-{request.node.name[:30]}".replace("[", "-").replace("]", "")
    topics = prefixed_topics(prefix)
    settings = Settings(
        kafka_broker=stack.broker_url,
        redis_url=stack.redis_url,
        app_id=f"crm-{prefix}",
        partitions=4,
        session_timeout=6.0,
        rebalance_timeout=6.0,
        log_level="info",
        topics=topics,
    )
    asyncio.run(ensure_topics(settings))
    return settings


@dataclasses.dataclass
class Workers:
    stack: Stack
    settings: Settings
    tmp: Path
    started: list[tuple[Child, int]] = dataclasses.field(default_factory=list)

    def start(self, *, wait: bool = True, name: str | None = None, **env: str) -> tuple[Child, int]:
        port = free_port()
        index = len(self.started)
        full_env = self.settings.as_env() | {
            "CRM_WEB_PORT": str(port),
            "CRM_DATA_DIR": str(self.tmp / f"w{index}"),
            **env,
        }
        child = self.stack.start_worker(name or f"{self.settings.app_id}-w{index}", full_env)
        self.started.append((child, port))
        if wait:
            wait_ready(Running(self.stack, self.settings, [(child, port)]), timeout=120)
        return child, port

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until every started worker still running answers ``/readyz``
        (after starts with ``wait=False``)."""
        running = [(child, port) for child, port in self.started if child.proc.poll() is None]
        wait_ready(Running(self.stack, self.settings, running), timeout=timeout)

    def metrics(self, port: int, *names: str) -> str:
        """The worker's ``/metrics`` page; with ``names``, only those samples."""
        query = "?" + "&".join(f"name[]={name}" for name in names) if names else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=5) as r:
            return r.read().decode()

    def stop_all(self) -> None:
        for child, _ in self.started:
            child.stop()
            if child in self.stack.children:
                self.stack.children.remove(child)


@pytest.fixture
def workers(stack: Stack, crm_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(stack, crm_settings, tmp_path)
    yield w
    w.stop_all()


@pytest.fixture
def events(crm_settings: Settings) -> EventFactory:
    return EventFactory(crm_settings)
