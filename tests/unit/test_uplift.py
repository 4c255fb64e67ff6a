"""The uplift report (agents.uplift): counts per action type, treated vs held out, and the
Newcombe interval checked against the published examples."""

from __future__ import annotations

from typing import Any

import pytest

from agents import uplift


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (0, 10, 0, 20, -0.1611, 0.2775),
    ],
)
def test_newcombe_interval_matches_the_published_examples(x1, n1, x2, n2, low, high):
    d, lo, hi = uplift.newcombe(x1, n1, x2, n2)

    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval():
    assert tuple(round(v, 4) for v in uplift.wilson(81, 263)) == (0.2553, 0.3662)
    assert uplift.wilson(0, 0) == (0.0, 1.0)


def _action(i: int, kind: str = "repurchase_reminder", at: str = "2026-01-05T10:00:00Z"):
    return {"action_id": f"t-{i}", "action_type": kind, "channel": "email", "created_at": at}


def _held(i: int, kind: str = "repurchase_reminder", at: str = "2026-01-05T10:00:00Z"):
    return {
        "action_id": f"h-{i}",
        "action_type": kind,
        "decision": "held_out",
        "decided_at": at,
    }


def _conversion(action_id: str, group: str, revenue: float, revision: int = 0) -> dict[str, Any]:
    return {
        "conversion_id": f"conv-{action_id}",
        "action_id": action_id,
        "group": group,
        "revenue": revenue,
        "revision": revision,
        "currency": "GBP",
    }


def test_the_report_counts_each_arm_and_keeps_the_latest_revision():
    actions = [_action(i) for i in range(4)] + [_action(0)]  # a repeated send counts once
    decisions = [_held(i) for i in range(2)] + [
        {"action_id": "x", "action_type": None, "decision": "channel_closed"}
    ]
    outcomes = [
        {"action_id": "t-0", "type": "outcome.delivered"},
        {"action_id": "t-1", "type": "outcome.delivered"},
        {"action_id": "t-1", "type": "outcome.opened"},
        {"action_id": "t-2", "type": "outcome.clicked"},
        {"action_id": "unknown", "type": "outcome.opened"},
    ]
    conversions = [
        _conversion("t-0", "treated", 100.0),
        _conversion("t-0", "treated", 60.0, revision=1),  # refunded 40
        _conversion("t-1", "treated", 20.0),
        _conversion("h-0", "held_out", 10.0),
    ]

    (row,) = uplift.build(actions, decisions, outcomes, conversions).rows

    assert (row.sent, row.delivered, row.opened, row.clicked) == (4, 2, 2, 1)
    assert (row.converted, row.revenue) == (2, 80.0)
    assert (row.held_out, row.held_out_converted, row.held_out_revenue) == (2, 1, 10.0)
    assert row.treated_rate == 0.5 and row.held_out_rate == 0.5
    assert row.uplift == pytest.approx(0.0)
    assert row.low is not None and row.low < 0 < row.high


def test_an_action_type_without_a_control_group_has_no_uplift():
    report = uplift.build([_action(0, "welcome")], [], [], [])

    (row,) = report.rows
    assert row.uplift is None
    assert "n/a" in uplift.table(report)


def test_since_leaves_out_older_actions_and_their_conversions():
    actions = [_action(0, at="2026-01-01T10:00:00Z"), _action(1, at="2026-01-06T10:00:00Z")]
    conversions = [_conversion("t-0", "treated", 5.0)]

    (row,) = uplift.build(actions, [], [], conversions, since="2026-01-05T00:00:00Z").rows

    assert (row.sent, row.converted) == (1, 0)


def test_the_table_names_the_columns_and_the_method():
    actions = [_action(i) for i in range(200)]
    decisions = [_held(i) for i in range(200)]
    conversions = [_conversion(f"t-{i}", "treated", 1.0) for i in range(60)]
    conversions += [_conversion(f"h-{i}", "held_out", 1.0) for i in range(20)]

    text = uplift.table(uplift.build(actions, decisions, [], conversions))

    header, _rule, line = text.splitlines()[:3]
    assert header.split()[:3] == ["action", "type", "sent"]
    assert line.split()[0] == "repurchase_reminder"
    assert "+20.0 [" in line and "not significant" not in line
    assert "Newcombe" in text
