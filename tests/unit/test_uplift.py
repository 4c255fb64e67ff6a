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
    # one trial is a proportion too (Newcombe 1998, table I: 1/1 -> 0.2065 to 1)
    low, high = uplift.wilson(1, 1)
    assert (round(low, 4), high) == (0.2065, 1.0)


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


def test_only_held_out_decisions_count_as_the_control_group():
    # Given decisions on actions not sent for other reasons (deferred, suppressed)
    decisions = [_held(0)] + [
        {**_held(i), "decision": verdict} for i, verdict in ((1, "deferred"), (2, "suppressed"))
    ]

    (row,) = uplift.build([_action(0)], decisions, [], []).rows

    # Then only the held-out one is in the control group
    assert row.held_out == 1


def test_since_keeps_actions_and_hold_outs_at_that_very_time():
    at = "2026-01-05T00:00:00Z"

    (row,) = uplift.build([_action(0, at=at)], [_held(0, at=at)], [], [], since=at).rows

    assert (row.sent, row.held_out) == (1, 1)


def test_records_that_disagree_with_an_actions_arm_are_not_counted():
    # Given a held-out action a messaging service reports an outcome for, and conversions
    # whose group says the other arm (a sent action "held out", a held-out one "treated")
    outcomes = [{"action_id": "h-0", "type": "outcome.delivered"}]
    conversions = [_conversion("t-0", "held_out", 5.0), _conversion("h-0", "treated", 7.0)]

    (row,) = uplift.build([_action(0)], [_held(0)], outcomes, conversions).rows

    # Then neither arm counts them
    assert (row.sent, row.delivered, row.converted, row.revenue) == (1, 0, 0, 0.0)
    assert (row.held_out, row.held_out_converted, row.held_out_revenue) == (1, 0, 0.0)


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


def test_the_table_reads_each_figure_in_its_column():
    # Given a significant uplift (30 % of 200 sent against 10 % of 200 held out) and
    # one that is not (1 of 10 each), with revenue of more than two decimals
    actions = [_action(i) for i in range(200)] + [_action(1000 + i, "welcome") for i in range(10)]
    decisions = [_held(i) for i in range(200)] + [_held(1000 + i, "welcome") for i in range(10)]
    conversions = [_conversion(f"t-{i}", "treated", 1.0) for i in range(60)]
    conversions += [_conversion(f"h-{i}", "held_out", 1.0) for i in range(20)]
    conversions += [
        _conversion("t-1000", "treated", 1.234),
        _conversion("h-1000", "held_out", 2.345),
    ]

    report = uplift.build(actions, decisions, [], conversions)
    text = uplift.table(report)

    # Then revenue is kept to the cent, and each line reads its figures in order: the
    # action type left-aligned, the rest right-aligned, the interval in points
    assert [(r.revenue, r.held_out_revenue) for r in report.rows] == [(60.0, 20.0), (1.23, 2.35)]
    _header, _rule, first, second, _blank, footer = text.splitlines()
    assert first.split("  ")[0] == "repurchase_reminder"
    assert second.startswith("welcome     ")
    assert first.split() == [
        *("repurchase_reminder", "200", "0", "0", "0", "60", "30.0", "60.00"),
        *("200", "20", "10.0", "+20.0", "[+12.3,", "+27.5]"),
    ]
    assert second.split() == [
        *("welcome", "10", "0", "0", "0", "1", "10.0", "1.23"),
        *("10", "1", "10.0", "+0.0", "[-31.5,", "+31.5]", "(not", "significant)"),
    ]
    assert first.index("200") + len("200") == _header.index("sent") + len("sent")
    assert "Revenue net of refunds (GBP)." in footer


def test_a_table_without_conversions_names_no_currency():
    assert "Revenue net of refunds (-)." in uplift.table(uplift.build([_action(0)], [], [], []))
