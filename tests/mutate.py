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
    """One place to mutate: the kind of change, where (line, column), which operand of a
    comparison, and which of the nodes of that kind starting there (``a and b or c``:
    two), counted children first."""

    kind: str  # compare, operator, boolop, not, number, bool
    line: int
    col: int
    index: int = 0
    nth: int = 0


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


def _kind(node: ast.AST) -> str | None:
    """The kind of change ``node`` takes, if any."""
    if isinstance(node, ast.Compare):
        return "compare"
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left = node.left  # not "%" formatting
        return (
            None if isinstance(left, ast.Constant) and isinstance(left.value, str) else "operator"
        )
    if isinstance(node, ast.BoolOp):
        return "boolop"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return "not"
    if isinstance(node, ast.Constant) and type(node.value) is bool:
        return "bool"
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return "number"
    return None


def _children_first(node: ast.AST) -> Iterator[ast.AST]:
    """The order a :class:`ast.NodeTransformer` finishes the nodes in."""
    for child in ast.iter_child_nodes(node):
        yield from _children_first(child)
    yield node


def sites(tree: ast.Module) -> list[Site]:
    """Every place :func:`mutant` can change, in source order."""
    skip = _left_alone(tree)
    seen: dict[tuple[str, int, int], int] = {}
    found: list[Site] = []
    for node in _children_first(tree):
        kind = _kind(node)
        if kind is None:
            continue
        key = (kind, node.lineno, node.col_offset)  # type: ignore[attr-defined]
        nth = seen[key] = seen.get(key, -1) + 1
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            found += [
                Site(kind, *key[1:], i, nth)
                for i, op in enumerate(node.ops)
                if type(op) in COMPARISONS
            ]
        else:
            found.append(Site(kind, *key[1:], 0, nth))
    return sorted(found, key=lambda s: (s.line, s.col, s.kind, s.nth, s.index))


class _Mutator(ast.NodeTransformer):
    """Changes the node at ``site`` (and nothing else); ``before`` / ``after`` say how."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.before = self.after = ""
        self._seen: dict[tuple[str, int, int], int] = {}

    def visit(self, node: ast.AST) -> ast.AST:
        node = self.generic_visit(node)  # children first, as sites() counts them
        kind = _kind(node)
        if kind is None or self.after:
            return node
        key = (kind, node.lineno, node.col_offset)  # type: ignore[attr-defined]
        nth = self._seen[key] = self._seen.get(key, -1) + 1
        site = self.site
        if (kind, *key[1:], nth) != (site.kind, site.line, site.col, site.nth):
            return node
        self.before = ast.unparse(node)
        changed: ast.AST = node
        if isinstance(node, ast.Compare):
            node.ops[site.index] = COMPARISONS[type(node.ops[site.index])]()
        elif isinstance(node, ast.BinOp):
            node.op = OPERATORS[type(node.op)]()
        elif isinstance(node, ast.BoolOp):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif isinstance(node, ast.UnaryOp):
            changed = node.operand
        elif isinstance(node, ast.Constant):
            value = node.value
            new = (
                (not value)
                if type(value) is bool
                else 1
                if value == 0
                else value + 1
                if type(value) is int
                else value * 1.5
            )
            changed = ast.copy_location(ast.Constant(new), node)
        self.after = ast.unparse(changed)
        return changed


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
