"""Determinism acceptance, short form (issue 11): ``bench.determinism --short`` on the
session's broker and Redis.

One simulator history (malformed records and retries included) is processed from
scratch by one worker (reference), by one worker again, by two workers with
rebalances, and by one worker SIGKILLed every few seconds, each fault while input
is left; every scenario must
give the reference's actions, decisions, changes, flags and dead letters (by id,
with the same content) and the same final state per customer. Repeats of an id
with identical content are allowed (at-least-once, deterministic ids). That includes
the customers the aggregates agent proposed an action to: the workers promise how far
the proposals are dated (CRM_PROPOSAL_LOOKAHEAD, README "Event time"), so each enters
its customer's stream at its place in event time, whichever worker was faster.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import determinism
from streams.tools.embedded import Stack

pytestmark = pytest.mark.integration

#: Redis databases 10..13: clear of db 0 (the session's) and of those other tests use.
REDIS_DB_BASE = 10


#: Each mix's history: the CI preset. A storefront's drains about twice as fast, so three
#: times the records keep input left for every fault; its longer span holds more delay
#: episodes (526 of its 2,000 customers get a proposal).
HISTORIES = {
    "simulator": dataclasses.replace(determinism.SHORT, redis_db_base=REDIS_DB_BASE),
    "storefront": dataclasses.replace(
        determinism.SHORT,
        mix="storefront",
        customers=2_000,
        events=150_000,
        redis_db_base=REDIS_DB_BASE,
    ),
}


@pytest.mark.parametrize("mix", sorted(HISTORIES))
def test_same_history_gives_same_outputs_and_state_in_every_scenario(
    stack: Stack, tmp_path: Path, mix: str
) -> None:
    # Given one input history of the mix and four ways of processing it from scratch
    options = HISTORIES[mix]

    # When each scenario runs until drained
    report = determinism.run_on_stack(stack, options, workdir=tmp_path)
    text = determinism.render(report)
    print(text)

    # Then every scenario drained and gave exactly what the reference gave
    assert report.error is None, text
    assert [s.name for s in report.scenarios] == list(determinism.SCENARIOS), text
    assert all(s.drained and s.error is None for s in report.scenarios), text
    assert report.differences == 0, text
    assert report.ok, text
    # And each fault came while input was left (report.ok holds this too): a SIGKILL, and
    # worker 1's stop after worker 2 joined
    scenarios = {s.name: s for s in report.scenarios}
    assert scenarios["sigkill"].kills >= 1, text
    assert not any(s.unexercised for s in report.scenarios), text
    # And nothing was set aside: the customers a cross-customer proposal went to were
    # compared with the rest and agreed, and there were such customers, none refused
    compared = [s for s in report.scenarios if s.compared]
    assert all(s.aside.required and not s.aside.ids for s in compared), text
    assert all(s.aside.proposed_to > 0 and s.aside.refused == 0 for s in compared), text
    # And every promise was kept: no proposal came after every signals partition had
    # promised past it (read off each scenario's commands topic)
    assert all(s.aside.promises_broken == 0 < s.aside.promises_checked for s in compared), text
