"""Every worker keeps fetching through rebalances, at the shortest fetch wait.

At ``CRM_FETCH_WAIT`` 10 ms a worker fetched nothing after a two-worker
rebalance in 4 of 11 runs of test_kpis.py (on a loaded machine). The cause
found: the input feed seeked partitions with faust's ``Consumer.seek``, which
runs aiokafka's ``seek`` on the worker's event loop while aiokafka's fetcher
runs on faust's consumer thread (test_feed_seeks.py shows the race itself).
This is the worker-level guard: two workers at a 10 ms fetch wait on 16
partitions (a hundred seeks per positioning) see a second worker join and
leave several times while new customers keep arriving; every customer of
every wave must be welcomed, and each worker must keep handling events. It did
not fail here before the fix (0 of 5 runs, 3 of them beside a CPU hog): the race
needs the consumer thread to switch in at the wrong instant.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from streams.topics import ensure_topics
from tests.integration.broker import consume, ensure_settings_partitions, metric_value, produce

pytestmark = pytest.mark.integration

FAST = {"CRM_FETCH_WAIT": "0.01"}
PER_WAVE = 80
PARTITIONS = 16


@pytest.fixture
def crm_settings(crm_settings, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[care]\nenabled = false\n[policy.consent]\nmarketing = "opt_out"\n')
    settings = ensure_settings_partitions(crm_settings, PARTITIONS).replace(rules_file=str(rules))
    asyncio.run(ensure_topics(settings))
    return settings


def _welcomed(actions: list[dict]) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(a["customer_id"] for a in actions if a["action_type"] == "welcome")


def test_workers_keep_fetching_through_rebalances_at_a_10ms_fetch_wait(
    crm_settings, workers, events
):
    t = crm_settings.topics
    sent: list[str] = []

    def wave() -> None:
        customers = [f"w{len(sent) // PER_WAVE}-{i:03d}" for i in range(PER_WAVE)]
        produce(crm_settings, [events.order(c, order_id=f"o-{c}") for c in customers])
        sent.extend(customers)

    def all_welcomed() -> None:
        actions = consume(
            crm_settings, t.actions, until=lambda r: len(r) >= len(sent), timeout=120, settle=0
        )
        welcomed = _welcomed(actions)
        missing = [c for c in sent if c not in welcomed]
        assert not missing, f"{len(missing)} of {len(sent)} customers never handled"

    def handled(port: int) -> float:
        return metric_value(workers.metrics(port), "crm_events_in_total")

    # Given two workers at a 10 ms fetch wait, the second joining before any input
    # (the first's partitions were never committed: aiokafka resets them itself while
    # the feed seeks them), then the second leaving again
    _, port_a = workers.start(**FAST)
    second, _ = workers.start(**FAST)
    wave()
    all_welcomed()
    second.stop()
    wave()
    all_welcomed()

    # When a second worker joins (a rebalance) and leaves again (another), while
    # new customers arrive before, during and after each rebalance
    for _ in range(2):
        wave()
        second, port_b = workers.start(**FAST)
        before = {port_a: handled(port_a), port_b: 0.0}
        wave()
        # Then every customer is handled, and each worker handled some of them
        all_welcomed()
        deadline = time.monotonic() + 60
        while not all(handled(p) > before[p] for p in before):
            assert time.monotonic() < deadline, "a worker handled nothing after the rebalance"
            time.sleep(0.5)
        wave()
        second.stop()
        wave()
        all_welcomed()
