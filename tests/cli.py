"""Running the ``crmstream`` command line as a user would: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "streams.tools.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``crmstream ARGS`` with this environment plus ``env``; output captured as text."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
