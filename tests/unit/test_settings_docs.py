"""The settings' documents say what the code does: README's table gives each variable's
default as the worker takes it without the variable, every variable an operator may set
is in the README, the generated reference (docs/settings.md) is current, and
``crmstream settings check`` says what an environment would run with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.settings import Settings
from streams.tools import settings_doc
from streams.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEFAULTS = Settings.from_env({}).as_env()
#: Set by tests alone (the settings' own description says so).
UNDOCUMENTED = {"CRM_FAILPOINTS"}


def _settings_table() -> list[tuple[list[str], str]]:
    """Each row of the table headed ``| variable | default | meaning |``: the variables
    it names and its default cell."""
    lines = README[README.index("| variable | default | meaning |") :].splitlines()[2:]
    rows = []
    for line in lines:
        cells = re.match(r"\| (.+?) \| (.+?) \|", line)
        if cells is None:
            break
        rows.append((re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]), cells[2]))
    return rows


def _documented_defaults() -> list[tuple[str, str]]:
    """(variable, its documented default) for each variable of the table: the values in
    backticks, in the order of the variables (``30`` / ``30``); none given: empty."""
    pairs = []
    for names, cell in _settings_table():
        if cell == "see topics":
            continue
        values = re.findall(r"`([^`]*)`", cell.split(" (")[0])
        if cell.startswith("(none"):
            values = [""] * len(names)
        assert len(values) == len(names), (names, cell)
        pairs += zip(names, values, strict=True)
    return pairs


@pytest.mark.parametrize(("variable", "documented"), _documented_defaults())
def test_each_documented_default_is_what_the_worker_takes_without_the_variable(
    variable: str, documented: str
) -> None:
    assert variable in DEFAULTS, f"README documents {variable}, which the settings do not read"
    said = f"{variable}: README says {documented!r}, the code's default is {DEFAULTS[variable]!r}"
    if documented:
        assert Settings.from_env({variable: documented}).as_env() == DEFAULTS, said
    else:
        assert DEFAULTS[variable] == "", said


def test_every_topic_variable_follows_the_documented_rule_from_the_topics_table() -> None:
    topics = re.findall(r"^\| `(crm\.[a-z-]+)` \| (?:in|out|internal) \|", README, re.MULTILINE)
    by_rule = {"CRM_TOPIC_" + t.removeprefix("crm.").upper().replace("-", "_"): t for t in topics}

    assert by_rule == {n: v for n, v in DEFAULTS.items() if n.startswith("CRM_TOPIC_")}


def test_every_variable_an_operator_sets_is_in_the_readme() -> None:
    missing = [
        name
        for name in DEFAULTS
        if f"`{name}`" not in README
        and not name.startswith("CRM_TOPIC_")
        and name not in UNDOCUMENTED
    ]

    assert missing == []


def test_the_settings_reference_is_current() -> None:
    committed = (ROOT / settings_doc.PATH).read_text(encoding="utf-8")

    assert committed == settings_doc.reference(), (
        f"{settings_doc.PATH} is stale: crmstream settings reference > {settings_doc.PATH}"
    )


def test_the_reference_lists_every_variable_once_with_its_default_and_range() -> None:
    reference = settings_doc.reference()
    listed = re.findall(r"^\| `([A-Z0-9_]+)` \|", reference, re.MULTILINE)

    assert sorted(listed) == sorted(n for n in DEFAULTS if n not in settings_doc.FOLDED)
    assert all(f"`{name}`" in reference for name in settings_doc.FOLDED)
    assert "| `CRM_PARTITIONS` | `4` | at least 1 |" in reference
    assert "| `CRM_UI_ENABLED` | `0` | `0` or `1` |" in reference
    assert "| `CRM_CLOCK` | `live` | `live` or `replay` |" in reference
    assert "| `CRM_ASSIGNMENT_TIMEOUT` | `60` | 0 (never) or 5 to 3600 seconds |" in reference


def test_settings_check_lists_what_differs_with_secrets_masked(monkeypatch, capsys) -> None:
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_PARTITIONS", "8")
    monkeypatch.setenv("CRM_UI_ENABLED", "1")
    monkeypatch.setenv("CRM_UI_TOKEN", "a-token-of-24-characters")

    assert main(["settings", "check"]) == 0

    out = capsys.readouterr().out
    assert out.splitlines() == [
        "crmstream: the settings are valid; 3 changed from their defaults",
        "  CRM_PARTITIONS=8",
        "  CRM_UI_ENABLED=True",
        "  CRM_UI_TOKEN=**********",
    ]


def test_settings_check_names_a_wrong_variable_and_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CRM_PARTITIONS", "0")

    assert main(["settings", "check"]) == 2

    assert capsys.readouterr().err == (
        "crmstream: configuration error at 'CRM_PARTITIONS': must be at least 1 (got '0')\n"
    )


DAY = 86_400


HAND_WRITTEN_RANGES = [
    ("CRM_WEB_PORT", 1, 65535, "must be a TCP port (1-65535)"),
    ("CRM_CLOCK_LATENESS", 0, 30 * DAY, "must be between 0 and 30 days in seconds"),
    ("CRM_ALLOWED_LATENESS", 60, 3660 * DAY, "must be between 60 s and 3660 days in seconds"),
    ("CRM_MAX_CLOCK_SKEW", 0, 30 * DAY, "must be between 0 and 30 days in seconds"),
    ("CRM_PROPOSAL_LOOKAHEAD", 0, 7 * DAY, "must be between 0 and 7 days in seconds"),
    ("CRM_ASSIGNMENT_TIMEOUT", 5, 3600, "must be 0 (never) or 5 to 3600 seconds"),
]


def test_every_range_written_out_by_hand_is_checked_below() -> None:
    extras = {
        variable: Settings.model_fields[field].json_schema_extra
        for field, variable in Settings.variables().items()
    }
    written = {v for v, extra in extras.items() if isinstance(extra, dict) and "problem" in extra}

    assert written == {row[0] for row in HAND_WRITTEN_RANGES}


@pytest.mark.parametrize(("variable", "low", "high", "text"), HAND_WRITTEN_RANGES)
def test_a_range_written_out_by_hand_is_the_range_taken(
    variable: str, low: int, high: int, text: str
) -> None:
    """These settings' refusals (and so docs/settings.md) state their range in words of
    their own: the ends they name are taken, one past them refused with those words."""
    for taken in (low, high):
        Settings.from_env({variable: str(taken)})
    for refused in (low - 1, high + 1):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({variable: str(refused)})
        assert str(raised.value) == (
            f"configuration error at '{variable}': {text} (got '{refused}')"
        )
