"""The rules file's JSON Schema (schemas/json/rules.v1.schema.json) says what the loader
says: the examples the docs show pass both, and each kind of mistake the loader names
by key is refused by the schema too (so an editor flags it before a worker does)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agents.rules import Rules
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "json" / "rules.v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _toml_examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        blocks = re.findall(r"```toml\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
        found += [(f"{path.name}#{i}", block) for i, block in enumerate(blocks)]
    return found


def _test_rules_files() -> list[tuple[str, str]]:
    """The rules files the integration and e2e tests write: module-level strings named
    ``*RULES`` (a ``{placeholder}`` filled with 1)."""
    found = []
    for path in sorted((ROOT / "tests").glob("*/test_*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
                continue
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(node.value.value, str) and any(n.endswith("RULES") for n in names):
                text = re.sub(r"\{(\w+)\}", "1", node.value.value)
                found.append((f"{path.parent.name}/{path.name}:{names[0]}", text))
    return found


def _schema_errors(raw: dict[str, Any]) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(raw)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize(("where", "text"), _toml_examples(), ids=lambda v: v[:40])
def test_every_rules_example_in_the_docs_loads_and_validates(where: str, text: str) -> None:
    raw = tomllib.loads(text)

    Rules.from_mapping(raw)
    assert _schema_errors(raw) == [], where


def test_the_tests_find_the_rules_files_they_write() -> None:
    assert len(_test_rules_files()) >= 5


@pytest.mark.parametrize(("where", "text"), _test_rules_files(), ids=lambda v: v[:60])
def test_every_rules_file_the_tests_write_loads_and_validates(where: str, text: str) -> None:
    raw = tomllib.loads(text)

    Rules.from_mapping(raw)
    assert _schema_errors(raw) == [], where


def test_the_defaults_written_out_validate() -> None:
    defaults = json.loads(json.dumps(dataclasses.asdict(Rules()), default=str))

    assert _schema_errors(defaults) == []


@pytest.mark.parametrize(
    "raw",
    [
        {"lifecycle": {"new_dayz": 30}},  # a typo
        {"welcomme": {}},  # an unknown table
        {"lifecycle": {"active_window_days": 0}},  # below its minimum
        {"lifecycle": {"new_days": "30"}},  # a string for a number
        {"lifecycle": {"new_days": True}},  # a boolean for a number
        {"lifecycle": {"new_days": 7.5}},  # a fraction for a whole number
        {"welcome": {"enabled": 1}},  # a number for a boolean
        {"welcome": {"template_id": ""}},  # an empty string
        {"rfm": {"windows_days": [30, 0]}},  # an array item below 1
        {"lifecycle": []},  # an array for a table
        {"welcome": {"channel": "fax"}},  # not a channel
        {"policy": {"fallback_channels": ["email", "pigeon"]}},  # not a channel, in an array
        {"policy": {"consent": {"marketing": "maybe"}}},  # not one of the choices
        {"policy": {"coupons": {"order": ["spam"]}}},  # not an action type
        {"grade": {"core_min_score": 101}},  # above its maximum
        {"policy": {"holdout": {"share": 1.5}}},  # a share above 1
        {"flags": {"cancellations_ratio": 0}},  # not above its exclusive minimum
        {"complaints": {"calendar": {"working_weekdays": [1, 8]}}},  # not a weekday
        {"complaints": {"solution": {"complex_severities": ["urgent"]}}},  # not a severity
        {"aggregates": {"logistics_delay": {"dimensions": ["depot"]}}},  # not a dimension
        {"policy": {"quiet_hours": {"start": "25:00"}}},  # not a time of day
        {"rfm": {"groups": [{"name": "x", "f_mni": 1}]}},  # a typo in an array of tables
    ],
    ids=str,
)
def test_a_mistake_the_loader_names_is_refused_by_the_schema_too(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Rules.from_mapping(raw)
    assert _schema_errors(raw) != []
