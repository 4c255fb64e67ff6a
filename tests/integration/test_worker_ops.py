"""Worker operations on the real broker and Redis: consumer lag and recovery gauges,
health pages, and a graceful stop on SIGTERM (offsets committed, profiles flushed, exit 0).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Env, Settings
from streams.tools.embedded import Stack, free_port, redis_binary, wait_for_port
from tests.integration.broker import metric_value, produce

pytestmark = pytest.mark.integration


def committed_offsets(settings: Settings) -> dict[str, int]:
    """Per input topic: the worker group's committed offsets, summed over partitions.

    (Compared with the records sent, not with end offsets: Tansu reports a
    partition's end offset as the last record batch's base offset + 1.)
    """

    async def run() -> dict[str, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.broker_bootstrap,
            group_id=settings.app_id,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in settings.topics.inputs
                for p in range(settings.partitions)
            ]
            committed: dict[str, int] = dict.fromkeys(settings.topics.inputs, 0)
            for tp in tps:
                committed[tp.topic] += await consumer.committed(tp) or 0
            return committed
        finally:
            await consumer.stop()

    return asyncio.run(run())


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_sigterm_commits_offsets_flushes_profiles_and_exits_zero(crm_settings, workers, events):
    # Given a worker that has handled 40 orders and 40 views for 40 customers
    customers = [f"term-{i:02d}" for i in range(40)]
    records = [events.order(c, order_id=f"{c}-1") for c in customers]
    records += [events.view(c) for c in customers]
    produce(crm_settings, records)
    child, port = workers.start(CRM_OPS_SAMPLE_INTERVAL="0.5")
    wait_for(
        lambda: metric_value(workers.metrics(port), "crm_events_in_total") >= len(records),
        what="all events handled",
    )

    # When it gets SIGTERM (as docker stop or Kubernetes sends it)
    code = child.stop(grace=40.0)

    # Then it exits 0, having committed the offsets of every record it handled
    log = child.log_path.read_text(errors="replace")
    assert code == 0, f"worker exited with {code}; log tail:\n{log[-3000:]}"
    t = crm_settings.topics
    committed = committed_offsets(crm_settings)
    assert committed == {**dict.fromkeys(t.inputs, 0), t.orders: 40, t.browsing: 40}
    # And it flushed the write-behind projection on the way out
    assert "projection flushed on shutdown" in log
    client = redis.Redis.from_url(crm_settings.redis_url.get_secret_value())
    assert all(client.exists(f"crm:profile:{c}") for c in customers)


def test_health_pages_lag_and_recovery_gauges(crm_settings, workers, events):
    # Given a worker that is ready
    produce(crm_settings, [events.order(f"lag-{i}", order_id=f"l{i}") for i in range(12)])
    _, port = workers.start(CRM_OPS_SAMPLE_INTERVAL="0.5")
    base = f"http://127.0.0.1:{port}"

    # Then liveness and readiness answer 200, and readiness says recovery is over
    with urllib.request.urlopen(base + "/livez", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
        assert r.status == 200
        assert json.loads(r.read()) == {"ready": True, "rebalancing": False, "recovering": False}

    # And once the records are handled and committed, every owned input partition
    # has a lag series, and the lag is 0
    def settled() -> str | None:
        page = workers.metrics(port)
        series = [
            line for line in page.splitlines() if line.startswith("crm_consumer_lag_records{")
        ]
        handled = metric_value(page, "crm_events_in_total") >= 12
        lag = metric_value(page, "crm_consumer_lag_records")
        inputs = len(crm_settings.topics.inputs) * crm_settings.partitions
        return page if handled and len(series) == inputs and lag == 0 else None

    page = wait_for(settled, what="lag series for every input partition, all at 0")
    assert metric_value(page, "crm_consumer_lag_records", topic=crm_settings.topics.orders) == 0
    assert metric_value(page, "crm_table_recovery_in_progress") == 0
    assert metric_value(page, "crm_table_recovery_remaining_records") == 0


def test_redis_acl_user_and_password_reach_a_real_server(tmp_path):
    # Given a Redis server that requires a password and has an ACL user "crm"
    with Stack(tmp_path) as s:
        port = free_port()
        child = s.spawn(
            "redis-acl",
            [
                redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--requirepass", "def@ult pw",
                "--user", "crm", "on", ">s3cr:t/pw", "~crm:*", "+@all",
            ],
        )  # fmt: skip
        wait_for_port(port, 20, child.proc)
        url = f"redis://127.0.0.1:{port}/0"

        # When the settings name the user and password apart from the URL
        acl = Settings.from_env(
            {Env.REDIS_URL: url, Env.REDIS_USERNAME: "crm", Env.REDIS_PASSWORD: "s3cr:t/pw"}
        )
        default = Settings.from_env({Env.REDIS_URL: url, Env.REDIS_PASSWORD: "def@ult pw"})

        # Then clients made from the effective URL authenticate, and without them they cannot
        assert redis.Redis.from_url(acl.redis_url.get_secret_value()).set("crm:probe", "1")
        assert redis.Redis.from_url(default.redis_url.get_secret_value()).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(url).get("crm:probe")


def changelog_records(settings: Settings) -> int:
    """Records on the worker group's table changelogs (sum of end offsets: each
    changelog write ends in a one-record seal batch, so Tansu's end offsets are exact)."""

    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker_bootstrap)
        await consumer.start()
        try:
            tps = [
                TopicPartition(f"{settings.app_id}-{table}-changelog", p)
                for table in ("customers", "aggregates")
                for p in range(settings.partitions)
            ]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_recovery_gauges_move_while_a_restarted_worker_recovers(crm_settings, workers, events):
    # Given a worker that handled orders of 40 customers and stopped cleanly
    produce(crm_settings, [events.order(f"rg-{i:02d}", order_id=f"rg{i}") for i in range(40)])
    child, port = workers.start()
    wait_for(
        lambda: metric_value(workers.metrics(port), "crm_events_in_total") >= 40,
        what="all orders handled",
    )
    assert child.stop() == 0
    total = changelog_records(crm_settings)
    assert total >= 40

    # When a worker starts again and its recovery holds after the first batch it restores
    held, port = workers.start(wait=False, CRM_FAILPOINTS="during_restore")

    def recovering() -> str | None:
        try:
            page = workers.metrics(port)
        except OSError:
            return None
        return page if metric_value(page, "crm_table_recovery_restored_records_total") else None

    page = wait_for(recovering, what="records restored while recovering")

    # Then its metrics say it is recovering, with what it restored and what is left
    # adding up to the changelogs, and it is not ready
    restored = metric_value(page, "crm_table_recovery_restored_records_total")
    remaining = metric_value(page, "crm_table_recovery_remaining_records")
    assert metric_value(page, "crm_table_recovery_in_progress") == 1
    assert restored > 0 and remaining > 0
    assert restored + remaining == total
    assert metric_value(page, "crm_worker_ready") == 0
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
    assert answer.value.code == 503
    assert json.loads(answer.value.read())["recovering"] is True
    held.kill()

    # And a worker that recovers in full counts every changelog record, then reads 0 left
    _, port = workers.start()
    page = workers.metrics(port)
    assert metric_value(page, "crm_table_recovery_restored_records_total") == total
    assert metric_value(page, "crm_table_recovery_in_progress") == 0
    assert metric_value(page, "crm_table_recovery_remaining_records") == 0
