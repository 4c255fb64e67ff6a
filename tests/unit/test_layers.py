"""The layer contracts in pyproject.toml (run by ``lint-imports`` in ./dev lint) cover
every module: a new runtime module cannot slip out of the "tools sit on the runtime"
contract by not being listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_runtime_module_is_forbidden_to_import_the_tools() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [
        c for c in config["contracts"] if c.get("forbidden_modules") == ["streams.tools"]
    ]
    runtime = {
        f"streams.{path.stem}"
        for path in (ROOT / "streams").glob("*.py")
        if path.stem != "__init__"
    }

    assert set(contract["source_modules"]) == runtime
