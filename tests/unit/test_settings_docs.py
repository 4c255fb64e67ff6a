"""README's settings table says what the code does: each variable's documented default
is the one the worker takes when the variable is not set, and every variable an
operator may set is in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
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
