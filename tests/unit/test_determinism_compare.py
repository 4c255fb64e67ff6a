"""bench.determinism's comparison: what is required to agree and what is set aside."""

from __future__ import annotations

import datetime as dt

import orjson

from bench.determinism import (
    FAMILIES,
    AsideFigures,
    Copies,
    Outputs,
    ScenarioResult,
    aside_of,
    customers_of,
    figures_of,
    promises_broken,
)
from schemas.commands import PROMISE_KEY, promise_record


def outputs(
    actions: dict[str, dict],
    states: dict[str, dict],
    proposed: set[str],
    dead_letters: dict[str, dict] | None = None,
    commands_topic: str = "run.crm.commands",
) -> Outputs:
    families: dict = {f.name: {} for f in FAMILIES}
    families["actions"] = {k: Copies(v) for k, v in actions.items()}
    families["dead letters"] = {k: Copies(v) for k, v in (dead_letters or {}).items()}
    records = {f.name: len(families[f.name]) for f in FAMILIES}
    return Outputs(families, records, states, 0, proposed, commands_topic)


def c2_differs(proposed_here: set[str]) -> tuple[Outputs, Outputs]:
    """A reference that proposed to c2, and a run that agrees on c1 and not on c2."""
    reference = outputs(
        {"a1": {"customer_id": "c1", "n": 1}, "a2": {"customer_id": "c2", "n": 1}},
        {"c1": {"x": 1}, "c2": {"x": 1}},
        proposed={"c2"},
    )
    same_but_c2 = outputs(
        {"a1": {"customer_id": "c1", "n": 1}, "a2": {"customer_id": "c2", "n": 2}},
        {"c1": {"x": 1}, "c2": {"x": 2}},
        proposed=proposed_here,
    )
    return reference, same_but_c2


def test_customers_proposed_to_in_either_run_are_compared_apart_and_not_required():
    reference, same_but_c2 = c2_differs(proposed_here=set())
    aside = aside_of(same_but_c2, reference)
    families = figures_of(same_but_c2, reference, aside)
    customers = customers_of(same_but_c2, reference, aside)

    assert aside.ids == {"c2"}
    assert sum(f.differences for f in families.values()) + customers.differences == 0
    assert (aside.records, aside.states) == (1, 1)


def test_any_other_customer_must_agree():
    reference = outputs({"a1": {"customer_id": "c1", "n": 1}}, {"c1": {"x": 1}}, proposed={"c2"})
    scenario = outputs({"a1": {"customer_id": "c1", "n": 2}}, {"c1": {"x": 2}}, proposed={"c2"})
    aside = aside_of(scenario, reference)
    families = figures_of(scenario, reference, aside)
    customers = customers_of(scenario, reference, aside)
    assert families["actions"].differing == 1 and customers.differing == 1
    assert (aside.records, aside.states) == (0, 0)


def test_proposals_refused_as_too_late_are_counted_apart():
    """A proposal that reached its customer more than the allowed lateness late is a
    dead letter of the scenario's own commands topic: set aside, counted as refused;
    any other dead letter must agree."""
    refused = {"source_topic": "s.crm.commands", "error_code": "too_late"}
    other = {"source_topic": "run.crm.orders", "error_code": "not_json"}
    reference = outputs({}, {}, proposed=set(), commands_topic="r.crm.commands")
    scenario = outputs(
        {}, {}, proposed=set(), dead_letters={"d1": refused}, commands_topic="s.crm.commands"
    )
    aside = aside_of(scenario, reference)
    assert figures_of(scenario, reference, aside)["dead letters"].differences == 0
    assert (aside.refused, aside.records) == (1, 1)

    scenario = outputs({}, {}, proposed=set(), dead_letters={"d2": other})
    aside = aside_of(scenario, reference)
    assert figures_of(scenario, reference, aside)["dead letters"].only_in_scenario == 1


def test_a_repeat_that_differs_is_a_difference_unless_its_customer_is_set_aside():
    """A crash re-derives what its last round sent. For a customer a proposal went to,
    the re-derivation can meet the proposal where the first pass had not (a frequency
    cap then counts it), so its repeat may differ: compared apart, like the rest of
    that customer's records (seen in CI: a welcome repeated with a later not_before)."""

    def c2_proposed_to() -> Outputs:
        return outputs(
            {"a1": {"customer_id": "c1", "n": 1}, "a2": {"customer_id": "c2", "n": 1}},
            {"c1": {"x": 1}, "c2": {"x": 1}},
            proposed={"c2"},
        )

    reference, scenario = c2_proposed_to(), c2_proposed_to()
    repeat = scenario.families["actions"]["a2"]
    repeat.copies, repeat.differing, repeat.differing_fields = 2, 1, "n"
    aside = aside_of(scenario, reference)
    families = figures_of(scenario, reference, aside)

    assert families["actions"].repeats_differing == 0
    assert sum(f.differences for f in families.values()) == 0
    assert aside.repeats_differing == 1
    assert aside.as_json()["repeats_differing"] == 1

    other = scenario.families["actions"]["a1"]
    other.copies, other.differing, other.differing_fields = 2, 1, "n"
    families = figures_of(scenario, reference, aside_of(scenario, reference))
    assert families["actions"].repeats_differing == 1
    assert families["actions"].differences == 1
    assert "c1" in families["actions"].examples[0] or "a1" in families["actions"].examples[0]


def test_with_promises_the_customers_proposed_to_must_agree_like_every_other():
    reference, same_but_c2 = c2_differs(proposed_here={"c2"})
    aside = aside_of(same_but_c2, reference, promised=True)
    families = figures_of(same_but_c2, reference, aside)
    customers = customers_of(same_but_c2, reference, aside)

    assert aside.required and aside.ids == set() and aside.proposed_to == 1
    assert families["actions"].differing == 1 and customers.differing == 1


# -- promises kept: no proposal after a promise past it ------------------------------


def _promise(source: int, until: float | None) -> tuple[bytes, bytes]:
    return PROMISE_KEY, promise_record(source, float("inf") if until is None else until)


def _command(event_id: str, at: float) -> tuple[bytes, bytes]:
    when = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    value = {"type": "care.requested", "event_id": event_id, "occurred_at": when}
    return b"c1", orjson.dumps(value)


def test_a_proposal_after_every_signals_partition_promised_past_it_is_a_broken_promise():
    # Partition 1 promised 200 but partition 0 only 100: a command at 150 may be
    # partition 0's (in time); once both promised past it, it came late.
    log = {
        0: [_promise(0, 100.0), _promise(1, 200.0), _command("a", 150.0)],
        3: [_promise(0, 300.0), _promise(1, 200.0), _command("b", 150.0)],
    }
    assert promises_broken(log, proposers=2) == (1, 2)


def test_a_command_at_the_promise_a_repeat_and_none_until_new_input_are_kept_promises():
    log = {
        0: [
            _command("a", 50.0),
            _promise(0, 100.0),
            _promise(1, 100.0),
            _command("b", 100.0),  # at the promise: commands go last at one instant
            _command("a", 50.0),  # a restarted agent sends its last commands again
            _promise(0, None),  # every source caught up: none until new input
            _promise(1, None),
            _promise(0, 400.0),  # new input: a new owner promises from its bookkeeping
            _promise(1, 400.0),
            _command("c", 400.0),
        ]
    }
    assert promises_broken(log, proposers=2) == (0, 2)  # "a" before any promise: unchecked


def test_a_lower_promise_does_not_take_back_how_far_the_partition_may_have_gone():
    log = {0: [_promise(0, 300.0), _promise(0, 100.0), _command("a", 200.0)]}
    assert promises_broken(log, proposers=1) == (1, 1)


def test_a_scenario_with_a_broken_promise_fails_even_with_identical_outputs():
    result = ScenarioResult("again", "app", 1, drained=True)
    assert result.ok
    result.aside = AsideFigures(required=True, proposed_to=3, promises_broken=1)
    assert not result.ok
