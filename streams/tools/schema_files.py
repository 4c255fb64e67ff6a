"""The files ``crmstream schemas export`` writes: every contract (:mod:`schemas.export`)
and the rules file's schema (:func:`agents.rules.json_schema`), so an editor
validates a rules file as it validates an event."""

from __future__ import annotations

from pathlib import Path

from agents import rules
from schemas import export


def documents() -> export.Documents:
    return {
        "rules": (
            "crmstream rules file (TOML, CRM_RULES_FILE; every key optional)",
            rules.json_schema(),
        )
    }


def render() -> dict[str, bytes]:
    return export.render(documents())


def stale_files(directory: Path = export.SCHEMA_DIR) -> list[str]:
    return export.stale_files(directory, documents())


def write(directory: Path = export.SCHEMA_DIR) -> list[Path]:
    return export.write(directory, documents())
