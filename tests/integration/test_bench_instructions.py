"""bench.instructions under the real valgrind: a count that means something comes back."""

from __future__ import annotations

import json
from pathlib import Path

from bench.instructions import main


def test_the_working_trees_fold_is_counted_under_callgrind(tmp_path: Path, capsys):
    # When a few storefront events are folded under callgrind
    out = tmp_path / "instructions.json"
    assert main(["--events", "40", "--customers", "8", "--json", str(out)]) == 0

    # Then both runs counted, the folding one more, and the figure per event is the fold's:
    # tens of thousands of instructions (validation, rules, the stored JSON), not millions
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["fold_instructions"] > run["prepare_instructions"] > 10**8
    assert 20_000 < run["per_event"] < 5_000_000
    assert run["per_event"] == (run["fold_instructions"] - run["prepare_instructions"]) / 40
    assert "fold instructions per event" in capsys.readouterr().out
