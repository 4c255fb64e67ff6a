"""``crmstream clock tick`` / ``clock show`` and the lookup's clock, through the real
broker: one tick moves every partition's stream time, and a lookup without
``--as-of`` is judged at the partition's watermark, not at today's date."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli import run
from tests.integration.broker import produce

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def _z(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_a_tick_moves_every_partition_and_the_lookup_follows_the_watermark(
    crm_settings, workers, events
):
    # Given a worker on the replay clock and one order, 120 days ago by the wall clock
    _, port = workers.start(CRM_CLOCK="replay")
    url = f"http://127.0.0.1:{port}"
    env = crm_settings.as_env()
    placed = (dt.datetime.now(dt.UTC) - 120 * DAY).replace(microsecond=0)
    produce(crm_settings, [events.order("ck-1", at=placed.isoformat(), order_id="ck-1-o1")])
    _wait_for(
        lambda: run("customer", "ck-1", "--json", "--url", url, env=env).returncode == 0,
        60,
        "the order to be folded",
    )

    # When a clock.tick 40 days after the order goes to every partition
    tick_at = placed + 40 * DAY
    sent = run("clock", "tick", "--to", tick_at.isoformat(), env=env)

    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.splitlines()
    assert len(lines) == crm_settings.partitions
    for partition, line in enumerate(lines):
        assert line.startswith(f"{crm_settings.topics.customers}[{partition}]@"), line
        assert f"tick:{_z(tick_at)}:{partition}" in line

    # Then every partition's stream time (and, lateness 0, watermark) is the tick's
    def clock_moved() -> dict[str, Any] | None:
        shown = run("clock", "show", "--json", "--url", url, env=env)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)[url]
        parts = doc["partitions"]
        times = {p: c["stream_time"] for p, c in parts.items()}
        if len(parts) == crm_settings.partitions and all(
            t and dt.datetime.fromisoformat(t) == tick_at for t in times.values()
        ):
            return doc
        return None

    doc = _wait_for(clock_moved, 60, "every partition's stream time at the tick")
    assert doc["clock"] == "replay"
    for clock in doc["partitions"].values():
        assert dt.datetime.fromisoformat(clock["watermark"]) == tick_at
    text = run("clock", "show", "--url", url, env=env)
    assert text.returncode == 0 and "clock replay" in text.stdout

    # And the lookup without --as-of is judged at that watermark: dormant (40 days),
    # not churned as the wall clock (120 days) would have it
    looked = run("customer", "ck-1", "--json", "--url", url, env=env)
    assert looked.returncode == 0, looked.stderr
    profile = json.loads(looked.stdout)
    assert profile["as_of_source"] == "watermark"
    assert profile["as_of"] == _z(tick_at)
    assert profile["stage"]["name"] == "dormant"
    assert profile["rfm"]["recency_days"] == 40
    now = _z(dt.datetime.now(dt.UTC).replace(microsecond=0))
    by_wall = json.loads(run("customer", "ck-1", "--json", "--as-of", now, "--url", url).stdout)
    assert by_wall["as_of_source"] == "requested"
    assert by_wall["stage"]["name"] == "churned"
    said = run("customer", "ck-1", "--url", url, env=env).stdout
    assert f"as of {_z(tick_at)}: the watermark of partition" in said

    # A bare date is midnight UTC; a day before the order's is more than the state can say
    day = run("customer", "ck-1", "--json", "--as-of", tick_at.date().isoformat(), "--url", url)
    assert json.loads(day.stdout)["as_of"] == f"{tick_at.date().isoformat()}T00:00:00Z"
    early = run("customer", "ck-1", "--as-of", (placed - DAY).date().isoformat(), "--url", url)
    assert early.returncode == 1
    assert f"oldest answerable time is {placed.date().isoformat()}T00:00:00Z" in early.stderr
