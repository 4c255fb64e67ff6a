"""What one customer adds to the population gauges (``crm_customers_by_stage``,
``crm_customers_by_rfm_group``, ``crm_customers_buyers``, ``crm_customers_net_spend_cents``,
``crm_complaints_open``, ``crm_flags_open``: deploy/METRICS.md), and which customers a
batch leaves with a timer due (``due_after_fold``).

Found by ``./dev mutate agents/customer_events.py`` (lines 1066-1290): the takeover's
tests compare the keys read from a stored form with those of the built state, so a
change to both passed; and nothing pinned which customers the round sweeps again.
Pure: states built by hand.
"""

from __future__ import annotations

from collections import Counter

from agents.customer_events import (
    ONE_TIME_BUYER,
    REPEAT_BUYER,
    BatchResult,
    due_after_fold,
    gauge_basis,
    gauge_keys,
    gauge_moves,
    net_spend_cents,
)
from agents.state import CustomerState


def _customer(**activity: float) -> CustomerState:
    state = CustomerState("cust-1")
    state.assessment.assessed_at = 1.0e9
    state.assessment.stage = "active"
    state.assessment.rfm_group = "champions"
    for name, value in activity.items():
        setattr(state.activity, name, value)
    return state


def test_a_customer_counts_by_stage_group_purchases_spend_open_complaints_and_open_flags() -> None:
    # Given a repeat buyer with a cancellation and a refund, complaints open, settled and
    # of no type, and flags open and cleared
    state = _customer(order_count=2, spend=100.0, cancelled_amount=10.0, refunded=5.5)
    state.complaints = {
        "c1": {"state": "acknowledged", "type": "logistics"},
        "c2": {"state": "closed", "type": "quality"},
        "c3": {"state": "opened"},
    }
    state.flags.raised = {
        "f1": ["repeated_returns", "open", 1.0e9, None],
        "f2": ["repeated_cancellations", "cleared", 1.0e9, None],
    }

    # Then it counts once in each population it is in, with its net spend in cents
    assert gauge_keys(state) == Counter(
        {
            ("stage", "active"): 1,
            ("rfm_group", "champions"): 1,
            ("buyers", REPEAT_BUYER): 1,
            ("net_spend_cents", REPEAT_BUYER): 8_450,
            ("complaint", "logistics"): 1,
            ("complaint", "unknown"): 1,
            ("flag", "repeated_returns"): 1,
        }
    )
    assert net_spend_cents(state) == 8_450


def test_a_one_time_buyer_and_a_customer_not_assessed_or_without_a_group() -> None:
    once = _customer(order_count=1, spend=20.0)
    once.assessment.rfm_group = None
    never = CustomerState("cust-2")

    assert gauge_keys(once) == Counter(
        {("stage", "active"): 1, ("buyers", ONE_TIME_BUYER): 1, ("net_spend_cents", "once"): 2_000}
    )
    assert gauge_keys(never) == Counter()
    assert gauge_keys(None) == Counter()


def _timer(due: float) -> list:
    return [due, "care.follow_up", "", "e-1", {}]


def test_the_batch_leaves_for_a_sweep_the_changed_customers_with_a_timer_due() -> None:
    # Given a batch's states: changed with a timer due (on two partitions), changed
    # with one due later, changed without timers, unchanged with one due, swept already
    # with one due, and on a partition with no watermark yet
    result = BatchResult()
    plan = {
        "due-0": (0, [_timer(50.0)], True),
        "later": (0, [_timer(500.0)], True),
        "no-timers": (0, [], True),
        "unchanged": (0, [_timer(50.0)], False),
        "swept": (0, [_timer(50.0)], True),
        "no-clock": (2, [_timer(50.0)], True),
        "due-1": (1, [_timer(100.0)], True),
    }
    for customer_id, (partition, rows, changed) in plan.items():
        state = CustomerState(customer_id)
        state.timers = rows
        result.states[customer_id] = (partition, state)
        if changed:
            result.changed.add(customer_id)
    marks = {0: (100.0, False), 1: (100.0, True), 2: None}
    asked: list[int] = []

    def until(partition: int) -> tuple[float, bool] | None:
        asked.append(partition)
        return marks[partition]

    # When the round asks which of them to sweep after the fold
    due = due_after_fold(result, [("swept", 0)], until)

    # Then those changed, not swept, with a timer due by their partition's watermark
    # (inclusive where it says so), in the batch's order; each watermark read once
    assert due == [("due-0", 0), ("due-1", 1)]
    assert sorted(asked) == [0, 1, 2]
    assert due_after_fold(BatchResult(), [], until) == []


def test_a_batch_moves_the_gauges_by_each_changed_customers_keys_now_minus_as_loaded() -> None:
    # Given customers as loaded: one who buys again, one who does not change, one new,
    # and a baseline of a customer the batch no longer holds
    again = _customer(order_count=1, spend=20.0)
    same = _customer(order_count=1, spend=5.0)
    baselines = {"again": gauge_basis(again), "same": gauge_basis(same), "new": None}
    baselines["gone"] = gauge_basis(_customer(order_count=3, spend=1.0))
    again.activity.order_count, again.activity.spend = 2, 50.0
    new = _customer(order_count=1, spend=7.0)
    states = {"again": (0, again), "same": (0, same), "new": (1, new)}

    moves = gauge_moves(baselines, states)

    # Then the repeat buyer leaves "once" (20.00) for "repeat" (50.00) as the new one
    # joins "once" (7.00); the unchanged one and the one not held move nothing
    assert +moves == Counter(
        {
            ("buyers", REPEAT_BUYER): 1,
            ("net_spend_cents", REPEAT_BUYER): 5_000,
            ("stage", "active"): 1,
            ("rfm_group", "champions"): 1,
        }
    )
    assert -moves == Counter({("net_spend_cents", ONE_TIME_BUYER): 1_300})
    assert moves[("buyers", ONE_TIME_BUYER)] == 0
