"""bench.determinism's comparison: what is required to agree and what is set aside."""

from __future__ import annotations

from bench.determinism import (
    FAMILIES,
    Copies,
    Outputs,
    aside_of,
    customers_of,
    figures_of,
)


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
