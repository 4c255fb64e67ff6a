"""Importing any module reads no environment and opens no connection: the runtime is
built by streams.app.create_app from settings and rules (issue 13)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[str]:
    names = []
    for package in ("schemas", "agents", "streams"):
        path = ROOT / package
        for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
            names.append(info.name)
    return sorted(names)


def test_every_module_imports_under_a_broken_environment_without_reading_it() -> None:
    # Settings that fail validation, and a rules file that does not exist: a module that
    # read either at import would raise here; one that connected would hang or fail.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "KAFKA_", "REDIS_"))}
    env |= {
        "CRM_PARTITIONS": "not-a-number",
        "CRM_RULES_FILE": "/nonexistent/rules.toml",
        "KAFKA_BROKER": "kafka://127.0.0.1:9",
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    modules = _modules()
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"

    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert "streams.customer_agent" in modules and "streams.app" in modules
