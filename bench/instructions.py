"""The fold's CPU work counted in instructions: an A/B that this VM's noise cannot move.

    python -m bench.instructions [--mix storefront] [--events 5000] [--customers 2000]
                                 [--against REF] [--json FILE]

On this shared 2-vCPU VM the same fold reads ±10 % from one run to the next in
events/s and in CPU time, so a lever worth 1-3 % cannot be told from noise by
timing it (bench/README.md, "Instructions per event"). Valgrind's callgrind counts
the instructions a process executes, the same on every run of the same code and
input, whatever else the machine does.

For the working tree (and, with ``--against REF``, for REF checked out in a
temporary git worktree), it runs :func:`bench.fold.run_pass` over ``--events``
simulator records under callgrind twice, with ``PYTHONHASHSEED=0`` and the worker's
collector thresholds: once only preparing (start-up, generating the records, the
rules), once preparing and folding. The difference per record is the fold's
instructions per event: the worker's per-event CPU work in-process (validation,
rules, state serialisation), not its record delivery, broker or Redis.

Instructions are not time: a change that trades instructions for cache misses (or
the other way round) shows here as it does not in time. Use it to decide between
two versions of the same code, beside a timed run (``bench.fold``,
``bench.throughput``) for what the worker gains. Valgrind is Debian's ``valgrind``
package; a run takes about a minute per 1,000 storefront events per tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The simulator's mixes bench.fold generates (bench.throughput's backfill is not one).
MIXES = ("storefront", "simulator")
#: The tree's packages the child imports.
_PACKAGES = ("agents", "bench", "schemas", "streams")

#: What each callgrind run executes, in the tree under test (its own bench.fold and
#: product code): ``fold`` = 1 folds the records, 0 stops after preparing them.
_CHILD = """
import gc, sys
from agents.rules import Rules
from bench.fold import records, run_pass
mix, events, customers, seed, fold = sys.argv[1], *map(int, sys.argv[2:6])
batch = records(events, customers, seed, mix)
rules = Rules()
gc.collect()
gc.freeze()
gc.set_threshold(*map(int, sys.argv[6].split(",")))
if fold:
    run_pass(batch, rules, 1800, True)
"""


class BenchError(Exception):
    """The measurement could not be taken (a run failed, a bad ref, a count that makes
    no sense)."""


@dataclass(frozen=True)
class Count:
    """One tree's figure."""

    tree: str
    commit: str
    prepare_instructions: int
    fold_instructions: int
    events: int

    @property
    def per_event(self) -> float:
        return per_event(self.prepare_instructions, self.fold_instructions, self.events)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def instructions_in(out_file: Path) -> int:
    """The total instructions of a callgrind output file (its ``summary:`` line, or
    ``totals:`` in older valgrinds)."""
    for line in out_file.read_text().splitlines():
        head, _, value = line.partition(":")
        if head in ("summary", "totals") and value.strip():
            return int(value.split()[0])
    raise BenchError(f"{out_file} has no summary line: did callgrind finish?")


def per_event(prepare: int, fold: int, events: int) -> float:
    """Instructions per folded event: the folding run's less the preparing run's."""
    if events <= 0:
        raise BenchError("--events must be positive")
    if fold <= prepare:
        raise BenchError(
            f"the folding run counted {fold:,} instructions, the preparing run {prepare:,}: "
            "the fold did no work?"
        )
    return (fold - prepare) / events


def child_command(
    valgrind: str, out_file: Path, mix: str, events: int, customers: int, seed: int, fold: bool
) -> list[str]:
    from streams.settings import Settings
    from streams.worker import gc_thresholds

    return [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out_file}",
        "-q",
        sys.executable,
        "-c",
        _CHILD,
        mix,
        str(events),
        str(customers),
        str(seed),
        "1" if fold else "0",
        ",".join(map(str, gc_thresholds(Settings.from_env()))),
    ]


def count(
    label: str,
    tree: Path,
    commit: str,
    valgrind: str,
    mix: str,
    events: int,
    customers: int,
    seed: int,
) -> Count:
    """Both callgrind runs in ``tree`` (``label`` names it in the progress lines)."""
    # Compiled first, so that neither run pays for compiling the tree's modules (a fresh
    # worktree has no bytecode: the first run alone would, and the difference with it).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *_PACKAGES],
        cwd=tree,
        capture_output=True,
        check=False,
    )
    totals = []
    with tempfile.TemporaryDirectory(prefix="crm-callgrind-") as tmp:
        for fold in (False, True):
            out_file = Path(tmp) / f"callgrind.{int(fold)}.out"
            env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)}
            what = "folding" if fold else "preparing"
            say(f"{label} ({_short(commit)}): {what} {events:,} {mix} events under callgrind ...")
            started = time.monotonic()
            done = subprocess.run(
                child_command(valgrind, out_file, mix, events, customers, seed, fold),
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise BenchError(
                    f"the {what} run in {tree} exited {done.returncode}:\n{done.stderr[-2000:]}"
                )
            totals.append(instructions_in(out_file))
            say(f"  {totals[-1]:,} instructions in {time.monotonic() - started:.0f} s")
    return Count(str(tree), commit, totals[0], totals[1], events)


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def commit_of(ref: str) -> str:
    """The commit ``ref`` names (a :class:`BenchError` if none)."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except BenchError:
        raise BenchError(f"--against {ref}: no such commit in {ROOT}") from None


@contextmanager
def checked_out(commit: str) -> Iterator[Path]:
    """``commit`` in a temporary git worktree, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="crm-against-"))
    tree = tmp / "tree"
    _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree
    finally:
        _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


def _short(commit: str) -> str:
    """A commit as printed: 10 hex digits, and ``+changes`` for a tree with changes."""
    return commit[:10] + commit[40:]


def working_tree_commit() -> str:
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return commit + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description="Count the fold's instructions per event with valgrind's callgrind: "
        "the working tree, and another commit with --against.",
    )
    p.add_argument("--mix", choices=MIXES, default="storefront", help="(storefront)")
    p.add_argument("--events", type=int, default=5_000, help="records folded (default 5000)")
    p.add_argument("--customers", type=int, default=2_000, help="simulated customers (2000)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (7)")
    p.add_argument("--against", metavar="REF", help="a git ref to count too (e.g. HEAD, main~3)")
    p.add_argument("--json", dest="json_out", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print(
            "bench.instructions needs valgrind: apt-get install valgrind (Debian's package)",
            file=sys.stderr,
        )
        return 2
    try:
        if args.events <= 0:
            raise BenchError("--events must be positive")
        against = None if args.against is None else commit_of(args.against)  # before the wait
        runs = [
            count(
                "working tree",
                ROOT,
                working_tree_commit(),
                valgrind,
                args.mix,
                args.events,
                args.customers,
                args.seed,
            )
        ]
        if against is not None:
            with checked_out(against) as tree:
                runs.append(
                    count(
                        args.against,
                        tree,
                        against,
                        valgrind,
                        args.mix,
                        args.events,
                        args.customers,
                        args.seed,
                    )
                )
        figures = [r.per_event for r in runs]  # refuses a run that folded nothing
    except BenchError as exc:
        print(f"bench.instructions: {exc}", file=sys.stderr)
        return 1
    print(
        f"fold instructions per event: {args.events:,} {args.mix} events, "
        f"{args.customers:,} customers"
    )
    print(f"  working tree ({_short(runs[0].commit)})  {figures[0]:>12,.0f}")
    report: dict[str, object] = {
        "mix": args.mix,
        "events": args.events,
        "customers": args.customers,
        "seed": args.seed,
        "runs": [{**asdict(r), "per_event": r.per_event} for r in runs],
    }
    if args.against:
        ratio = figures[0] / figures[1]
        print(f"  {args.against} ({_short(runs[1].commit)})  {figures[1]:>12,.0f}")
        print(f"  working tree / {args.against}: {ratio:.4f} ({(ratio - 1) * 100:+.2f} %)")
        report["ratio_to_against"] = ratio
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
