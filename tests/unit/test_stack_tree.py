"""A worker the embedded stack starts runs the code of the tree that started it.

The benchmarks compare two checkouts by running each one's ``python -m bench...``
from its own tree with one venv. The venv's editable install points at one of them;
a worker started from the other must not import that one's ``streams``. Before this
test, ``Stack.start_worker`` passed no ``PYTHONPATH``: a "before" tree's bench timed
the installed tree's worker (found in the eighteenth session, issue 14, when a
write-behind change showed the same state writes per event in both trees).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from streams.tools import embedded
from streams.tools.embedded import Stack

ROOT = Path(__file__).resolve().parents[2]


def test_the_stack_gives_its_workers_the_tree_it_was_imported_from(tmp_path: Path) -> None:
    # Given a copy of the package tree, the stack as imported from it
    copy = tmp_path / "checkout"
    for package in ("streams", "schemas", "agents"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.pyc"))
    probe = (
        "import sys, streams.tools.embedded as e;"
        "s = e.Stack(workdir=__import__('pathlib').Path(sys.argv[1]));"
        "print(s.worker_env({})['PYTHONPATH'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "work")],
        cwd=copy,
        capture_output=True,
        text=True,
        check=True,
    )
    python_path = out.stdout.strip()

    # When a Python started with the worker's environment, elsewhere, imports streams
    where = subprocess.run(
        [sys.executable, "-c", "import streams; print(streams.__file__)"],
        cwd=tmp_path,
        env={"PYTHONPATH": python_path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    # Then it gets the copy's streams, not the installed tree's
    assert Path(where).resolve() == (copy / "streams" / "__init__.py").resolve()


def test_a_workers_own_python_path_stays_after_the_tree(tmp_path: Path) -> None:
    stack = Stack(workdir=tmp_path)
    env = stack.worker_env({"PYTHONPATH": "/elsewhere", "CRM_BATCH_MAX": "10"})
    assert env["PYTHONPATH"].split(":") == [str(embedded.SOURCE_ROOT), "/elsewhere"]
    assert env["CRM_BATCH_MAX"] == "10"
