"""tests.mutate: the mutation-testing tool finds the decisions a test leaves unchecked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.mutate import Site, main, mutant, mutate, sites

MODULE = '''\
import dataclasses


@dataclasses.dataclass(frozen=True)
class Limit:
    """Over 10 is over."""

    value: int = 10

    def over(self, amount):
        return amount > self.value
'''

WEAK = """\
from pkg.limits import Limit


def test_over():
    assert Limit().over(11)
    assert not Limit().over(3)
"""

STRONG = (
    WEAK
    + """

def test_the_limit_itself_is_not_over():
    assert not Limit().over(10)
"""
)


def tree(tmp_path: Path, tests: str) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "limits.py").write_text(MODULE)
    (tmp_path / "test_limits.py").write_text(tests)
    return tmp_path


def test_docstrings_and_decorators_are_left_alone():
    found = sites(ast.parse(MODULE))

    assert found == [Site("number", 8, 17), Site("compare", 11, 15, 0)]
    assert mutant(ast.parse(MODULE), found[1])[1] == "amount > self.value -> amount >= self.value"


def test_two_operations_that_start_at_one_place_are_two_mutants():
    tree = ast.parse("x = a and b or c\n")

    changes = [mutant(tree, s)[1] for s in sites(tree)]

    assert changes == ["a and b -> a or b", "a and b or c -> (a and b) and c"]


def test_a_boundary_the_tests_leave_unchecked_survives_and_a_checked_one_does_not(tmp_path):
    said: list[str] = []

    outcomes = list(
        mutate(tree(tmp_path, WEAK), "pkg/limits.py", ["test_limits.py"], say=said.append)
    )

    assert [(o.change, o.killed) for o in outcomes] == [
        ("10 -> 11", True),  # Limit().over(11) is no longer over
        ("amount > self.value -> amount >= self.value", False),  # over(10) is never asked
    ]
    assert said[0].startswith("mutate: 2 mutants of pkg/limits.py")
    assert "SURVIVED" in said[-1]
    assert (tmp_path / "pkg" / "limits.py").read_text() == MODULE  # a copy was mutated


def test_the_test_at_the_boundary_kills_every_mutant(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tree(tmp_path, STRONG))

    assert main(["pkg/limits.py", "test_limits.py"]) == 0

    assert "mutate: 2 of 2 mutants killed; 0 survived" in capsys.readouterr().out


def test_tests_that_fail_before_any_change_are_an_error(tmp_path):
    broken = tree(tmp_path, WEAK.replace("over(11)", "over(1)"))

    with pytest.raises(RuntimeError, match=r"fail .* before any change"):
        list(mutate(broken, "pkg/limits.py", ["test_limits.py"], say=lambda _: None))
