"""bench.instructions' arithmetic: where it reads callgrind's count, and what it takes
as the fold's instructions per event (and refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.instructions import BenchError, _short, commit_of, instructions_in, per_event


@pytest.mark.parametrize("head", ["summary", "totals"])
def test_the_count_is_read_from_callgrinds_summary_line(tmp_path: Path, head: str):
    out = tmp_path / "callgrind.out"
    out.write_text(
        f"version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfl=x\n1 5\n{head}: 4172370853\n"
    )

    assert instructions_in(out) == 4_172_370_853


def test_an_output_without_a_summary_is_refused(tmp_path: Path):
    out = tmp_path / "callgrind.out"
    out.write_text("version: 1\nevents: Ir\n")  # cut short: callgrind was killed

    with pytest.raises(BenchError, match="no summary line"):
        instructions_in(out)


def test_the_fold_is_what_the_folding_run_counts_beyond_the_preparing_one():
    assert per_event(prepare=2_000_000, fold=2_600_000, events=200) == 3_000.0


@pytest.mark.parametrize(("prepare", "fold", "events"), [(10, 10, 5), (10, 9, 5), (1, 9, 0)])
def test_a_fold_that_did_nothing_or_no_events_is_refused(prepare, fold, events):
    with pytest.raises(BenchError):
        per_event(prepare, fold, events)


def test_a_tree_with_changes_is_printed_as_such():
    commit = "d3ab535475" + "0" * 30
    assert _short(commit) == "d3ab535475"
    assert _short(commit + "+changes") == "d3ab535475+changes"


def test_a_ref_is_resolved_before_anything_is_counted():
    assert len(commit_of("HEAD")) == 40

    with pytest.raises(BenchError, match="--against no-such-ref-here: no such commit"):
        commit_of("no-such-ref-here")
