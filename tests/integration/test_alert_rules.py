"""The Prometheus alert rules, checked and unit-tested for real with promtool.

``promtool check rules`` validates every file in ``deploy/prometheus/rules/``
and ``promtool test rules`` runs every unit-test file in
``deploy/prometheus/tests/``. Each alert needs a firing and a not-firing case
in a test file that loads its rules file, and a runbook section. promtool comes
from Debian's ``prometheus`` package (``./dev test`` installs it); without it
these tests fail, they do not skip.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"

INSTALL_HINT = (
    "promtool is not on PATH: install Debian's `prometheus` package "
    "(apt-get install -y prometheus), or run `./dev test`, which installs it"
)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the repository root; a missing promtool fails the test."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return subprocess.run(
        [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    """Fail with promtool's own output unless it succeeded."""
    if proc.returncode != 0:
        pytest.fail(
            f"`promtool {' '.join(proc.args[1:])}` exited with {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )


def test_there_are_rules_and_rule_tests() -> None:
    assert RULE_FILES, "no rule files in deploy/prometheus/rules/"
    assert TEST_FILES, "no promtool unit tests in deploy/prometheus/tests/"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    _check(_promtool("check", "rules", _rel(path)))


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    _check(_promtool("test", "rules", _rel(path)))


# --- coverage: every rule is tested ---------------------------------------------


@dataclass
class Rules:
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)
    file_of: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def rules() -> Rules:
    found = Rules()
    for path in RULE_FILES:
        for group in _load(path).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                assert name, f"{path.name}: rule without alert or record name: {rule}"
                assert name not in found.file_of, f"{name} defined twice"
                found.file_of[name] = path.resolve()
                if "alert" in rule:
                    found.alerts[name] = rule
                else:
                    found.records.add(name)
    return found


def _rule_files_of(test_file: Path, spec: dict[str, Any]) -> set[Path]:
    """The rule files a promtool test file loads (globs, relative to its folder)."""
    return {
        Path(match).resolve()
        for pattern in spec.get("rule_files") or []
        for match in glob.glob(str(test_file.parent / pattern))
    }


def test_every_rule_has_firing_and_quiet_cases(rules: Rules) -> None:
    firing: dict[str, list[str]] = defaultdict(list)
    quiet: dict[str, list[str]] = defaultdict(list)
    recorded: dict[str, list[str]] = defaultdict(list)
    problems = []
    for test_file in TEST_FILES:
        spec = _load(test_file)
        loaded = _rule_files_of(test_file, spec)
        if not loaded:
            problems.append(f"{test_file.name}: rule_files matches no file")
        for case in spec.get("tests") or []:
            where = f"{test_file.name} / {case.get('name', '(unnamed test)')}"
            for check in case.get("alert_rule_test") or []:
                name = check.get("alertname")
                if rules.file_of.get(name) not in loaded:
                    # promtool passes `exp_alerts: []` for an alert it does not know.
                    problems.append(f"{where}: {name!r} is not an alert in its rule_files")
                    continue
                (firing if check.get("exp_alerts") else quiet)[name].append(where)
            for check in case.get("promql_expr_test") or []:
                for record in rules.records:
                    if re.search(rf"\b{re.escape(record)}\b", check.get("expr", "")):
                        recorded[record].append(where)
    for name in sorted(rules.alerts):
        if not firing[name]:
            problems.append(f"{name}: no test case where it fires (exp_alerts non-empty)")
        if not quiet[name]:
            problems.append(f"{name}: no test case where it does not fire (exp_alerts: [])")
    for name in sorted(rules.records):
        if not recorded[name]:
            problems.append(f"recording rule {name}: no promql_expr_test uses it")
    assert not problems, "promtool unit tests in deploy/prometheus/tests/:\n" + "\n".join(problems)


# --- runbook ----------------------------------------------------------------------


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors: set[str] = set()
    seen: dict[str, int] = defaultdict(int)
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return anchors


def test_every_alert_links_a_runbook_section(rules: Rules) -> None:
    anchors = _github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    problems = []
    for name, rule in sorted(rules.alerts.items()):
        url = (rule.get("annotations") or {}).get("runbook_url", "")
        target, _, anchor = url.partition("#")
        if not target.endswith("deploy/RUNBOOK.md"):
            problems.append(f"{name}: runbook_url {url!r} does not point at deploy/RUNBOOK.md")
        elif anchor not in anchors:
            problems.append(f"{name}: runbook_url {url!r}: no heading with anchor {anchor!r}")
    assert not problems, "\n".join(problems)
