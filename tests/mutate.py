"""Mutation testing: do the tests notice when a module's decisions change?

``python -m tests.mutate agents/complaints.py tests/unit/test_complaints.py`` (or
``./dev mutate ...``) changes the module one small step at a time -- a comparison
turned round or made inclusive (``<`` / ``<=``, ``==`` / ``!=``, ``in`` / ``not in``),
``and`` / ``or``, a ``not`` dropped, ``+`` / ``-``, a number moved by one, a
boolean flipped -- and runs the given tests on each such *mutant* with ``-x``. A
mutant the tests pass on *survived*: either the tests do not pin that decision (a
boundary nobody checked), or the change makes no difference (an *equivalent*
mutant: ``at > last`` against ``at >= last`` before ``last = at``). Each survivor is
for a person to judge; the tool only finds them.

It works on a copy of the working tree (the files git tracks, as they are now, in a
temporary directory), so the tree is never changed, even if it is stopped. Before
the mutants it runs the tests once on the module as the mutants are written (the
source regenerated from its syntax tree, without comments): they must pass. A
mutant whose tests run past ``--timeout`` counts as killed (an endless loop stops
CI too). Docstrings and the arguments of decorators are left alone.

It is slow by nature, one test run per mutant (about 2-5 s each for a module's own
test file): name the tests that test the module, and run it on a module at a time.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: Comparisons and their mutants (each turned round or made inclusive / exclusive).
COMPARISONS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
#: Arithmetic operators and their mutants.
OPERATORS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
}


@dataclass(frozen=True)
class Site:
    """One place to mutate: the kind of change, and where (line, column, operand)."""

    kind: str  # compare, operator, boolop, not, number, bool
    line: int
    col: int
    index: int = 0


@dataclass
class Outcome:
    site: Site
    #: The changed expression as source: ``before -> after``.
    change: str
    killed: bool
    timed_out: bool
    seconds: float


def _left_alone(tree: ast.Module) -> set[int]:
    """ids of the nodes never mutated: docstrings and everything in a decorator."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                skip.add(id(body[0].value))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                skip.update(id(n) for n in ast.walk(decorator))
    return skip


def sites(tree: ast.Module) -> list[Site]:
    """Every place :func:`mutant` can change, in source order."""
    skip = _left_alone(tree)
    found: list[Site] = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        where = (node.lineno, node.col_offset)
        if isinstance(node, ast.Compare):
            found += [
                Site("compare", *where, i)
                for i, op in enumerate(node.ops)
                if type(op) in COMPARISONS
            ]
        elif isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            if not (isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)):
                found.append(Site("operator", *where))  # not "%" formatting
        elif isinstance(node, ast.BoolOp):
            found.append(Site("boolop", *where))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Site("not", *where))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            found.append(Site("bool", *where))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            found.append(Site("number", *where))
    return sorted(found, key=lambda s: (s.line, s.col, s.kind, s.index))


class _Mutator(ast.NodeTransformer):
    """Changes the node at ``site`` (and nothing else); ``before`` / ``after`` say how."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.before = self.after = ""

    def _here(self, node: ast.AST, kind: str) -> bool:
        at = (getattr(node, "lineno", None), getattr(node, "col_offset", None))
        return self.site.kind == kind and at == (self.site.line, self.site.col) and not self.after

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if self._here(node, "compare"):
            self.before = ast.unparse(node)
            i = self.site.index
            node.ops[i] = COMPARISONS[type(node.ops[i])]()
            self.after = ast.unparse(node)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if self._here(node, "operator"):
            self.before = ast.unparse(node)
            node.op = OPERATORS[type(node.op)]()
            self.after = ast.unparse(node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        if self._here(node, "boolop"):
            self.before = ast.unparse(node)
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.after = ast.unparse(node)
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if self._here(node, "not"):
            self.before, self.after = ast.unparse(node), ast.unparse(node.operand)
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if self._here(node, "bool"):
            new: object = not value
        elif self._here(node, "number"):
            new = 1 if value == 0 else value + 1 if type(value) is int else value * 1.5
        else:
            return node
        self.before, self.after = repr(value), repr(new)
        return ast.copy_location(ast.Constant(new), node)


def mutant(tree: ast.Module, site: Site) -> tuple[str, str] | None:
    """The module's source with ``site`` changed, and the change as ``before -> after``
    (None if the site is not in ``tree``)."""
    changer = _Mutator(site)
    changed = ast.fix_missing_locations(changer.visit(copy.deepcopy(tree)))
    if not changer.after:
        return None
    return ast.unparse(changed), f"{changer.before} -> {changer.after}"


def _copy_tree(root: Path, into: Path) -> None:
    """The files git tracks under ``root`` (as they are in the working tree) into ``into``;
    every file below ``root`` when it is not a git checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
    )
    names = (
        [n for n in listed.stdout.decode().split("\0") if n]
        if listed.returncode == 0
        else [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    )
    for name in names:
        source = root / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _run_tests(
    tree: Path, tests: Sequence[str], timeout: float, python: str
) -> tuple[bool, bool, float]:
    """Whether the tests pass in ``tree``, whether they ran out of time, and how long."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, True, time.monotonic() - started
    return done.returncode == 0, False, time.monotonic() - started


def mutate(
    root: Path,
    module: str,
    tests: Sequence[str],
    *,
    lines: tuple[int, int] | None = None,
    timeout: float = 120.0,
    python: str = sys.executable,
    say: Callable[[str], None] = print,
) -> Iterator[Outcome]:
    """Each mutant of ``module`` (a path under ``root``) and whether ``tests`` killed it.

    Raises RuntimeError if the tests fail on the module before any change."""
    with tempfile.TemporaryDirectory(prefix="crm-mutate-") as scratch:
        tree = Path(scratch)
        _copy_tree(root, tree)
        target = tree / module
        original = ast.parse(target.read_text(), filename=module)
        target.write_text(ast.unparse(original))
        passed, _, seconds = _run_tests(tree, tests, timeout, python)
        if not passed:
            raise RuntimeError(
                f"the tests fail (or time out) on {module} before any change: {' '.join(tests)}"
            )
        chosen = [s for s in sites(original) if lines is None or lines[0] <= s.line <= lines[1]]
        say(f"mutate: {len(chosen)} mutants of {module}; the tests took {seconds:.1f} s")
        for n, site in enumerate(chosen, 1):
            made = mutant(original, site)
            if made is None:
                continue
            source, change = made
            target.write_text(source)
            passed, timed_out, seconds = _run_tests(tree, tests, timeout, python)
            outcome = Outcome(site, change, not passed, timed_out, round(seconds, 2))
            verdict = "timed out" if timed_out else "killed" if not passed else "SURVIVED"
            say(f"mutate: {n}/{len(chosen)} line {site.line}: {change}  {verdict}")
            yield outcome


def _lines(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.mutate",
        description=(
            "Mutation testing: change MODULE one small step at a time (comparisons, "
            "and/or, not, +/-, numbers, booleans) and run TESTS on each change; list the "
            "changes the tests pass on (survivors: an unchecked decision, or a change "
            "that makes no difference). Works on a copy of the tree."
        ),
    )
    p.add_argument("module", help="the module to mutate, as a path (agents/complaints.py)")
    p.add_argument(
        "tests",
        nargs="+",
        help="pytest arguments: the tests that test it (after -- if one starts with -)",
    )
    p.add_argument("--lines", type=_lines, help="only mutate these lines (120-180)")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds one test run may take; a mutant that takes longer counts as killed "
        "(default: 120)",
    )
    p.add_argument("--json", type=Path, dest="json_out", help="write every outcome here too")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path.cwd()
    if not (root / args.module).is_file():
        print(f"mutate: no such file: {args.module}", file=sys.stderr)
        return 2
    try:
        outcomes = list(
            mutate(root, args.module, args.tests, lines=args.lines, timeout=args.timeout)
        )
    except RuntimeError as exc:
        print(f"mutate: {exc}", file=sys.stderr)
        return 1
    survivors = [o for o in outcomes if not o.killed]
    print(
        f"mutate: {len(outcomes) - len(survivors)} of {len(outcomes)} mutants killed; "
        f"{len(survivors)} survived"
    )
    source = (root / args.module).read_text().splitlines()
    for o in survivors:
        print(f"  line {o.site.line}: {o.change}    | {source[o.site.line - 1].strip()}")
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
