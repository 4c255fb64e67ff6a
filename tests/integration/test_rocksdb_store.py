"""The RocksDB store (CRM_STORE=rocksdb://) on the real broker: a restarted worker
takes its customers' state from its local store and reads nothing back from the
changelog; without its data directory it restores the changelog instead."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.broker import changelog_values, metric_value, produce
from tests.integration.test_worker_ops import changelog_records

pytestmark = pytest.mark.integration

CUSTOMERS = [f"rdb-{i:02d}" for i in range(24)]
AS_OF = "2026-03-03"


def lookup(port: int, customer_id: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{port}/customers/{customer_id}?as_of={AS_OF}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def documents(port: int) -> dict[str, Any]:
    found = {}
    for customer in CUSTOMERS:
        status, doc = lookup(port, customer)
        assert status == 200, (customer, doc)
        found[customer] = doc
    return found


@pytest.fixture
def stopped_worker(crm_settings, workers, events):  # type: ignore[no-untyped-def]
    """A RocksDB worker that handled two orders per customer, stopped cleanly, its
    states stored plain: (its environment, the customers' lookup documents)."""
    records = [
        events.order(c, at=f"2026-03-0{day}T12:00:00+00:00", order_id=f"{c}-{day}", amount=40.0)
        for day in (1, 2)
        for c in CUSTOMERS
    ]
    produce(crm_settings, records)
    # No care timers and the replay clock: nothing changes the customers between the
    # lookups before the stop and after the restart but what the store keeps.
    rules = workers.tmp / "rules.toml"
    rules.write_text("[care]\nenabled = false\n")
    env = {
        "CRM_STORE": "rocksdb://",
        "CRM_DATA_DIR": str(workers.tmp / "rocks"),
        "CRM_CLOCK": "replay",
        "CRM_RULES_FILE": str(rules),
    }
    # It stores its states plain, as releases before packing did; the restarted
    # workers pack (CRM_STATE_PACKING's default) and must read them back.
    child, port = workers.start(**env, CRM_STATE_PACKING="0")
    deadline = time.monotonic() + 60
    while metric_value(workers.metrics(port), "crm_events_in_total") < len(records):
        assert time.monotonic() < deadline, "the orders were not processed"
        time.sleep(0.3)
    before = documents(port)
    assert child.stop() == 0
    assert {v[:1] for v in changelog_values(crm_settings).values()} == {b"{"}
    return env, before


def test_a_restarted_rocksdb_worker_keeps_its_state_without_reading_the_changelog(
    crm_settings, workers, stopped_worker
):
    env, before = stopped_worker
    assert changelog_records(crm_settings) > len(CUSTOMERS)

    # When the worker starts again on its data directory
    _, port = workers.start(**env)

    # Then it restored nothing from the changelog, yet every customer is as before
    assert metric_value(workers.metrics(port), "crm_table_recovery_restored_records_total") == 0
    assert documents(port) == before


def test_a_rocksdb_worker_without_its_data_directory_restores_the_changelog(
    crm_settings, workers, stopped_worker
):
    env, before = stopped_worker
    total = changelog_records(crm_settings)

    # When its local store is lost and the worker starts again
    shutil.rmtree(env["CRM_DATA_DIR"])
    _, port = workers.start(**env)

    # Then it reads the whole changelog back, and every customer is as before
    assert metric_value(workers.metrics(port), "crm_table_recovery_restored_records_total") == total
    assert documents(port) == before
