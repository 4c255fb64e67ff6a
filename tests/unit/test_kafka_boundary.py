"""The runtime boundary's contract with faust and aiokafka (streams/kafka.py).

streams/kafka.py replaces faust's per-record delivery and uses private parts of
faust, mode and aiokafka to do it; they are pinned exactly in pyproject.toml.
This test names every private attribute the boundary relies on and fails, with
the missing name, as soon as an installed version lacks one -- the first thing
to look at when the pins move. The integration tier then runs them against the
real broker.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _defines(cls: type, name: str) -> bool:
    """The class has the attribute, or one of its (library) classes' code assigns it."""
    if hasattr(cls, name):
        return True
    assigned = re.compile(rf"self\.{re.escape(name)}\s*[:=]")
    return any(
        klass.__module__.startswith(("faust", "aiokafka", "mode"))
        and assigned.search(inspect.getsource(klass))
        for klass in cls.__mro__
    )


def _relied_on() -> list[tuple[type, str]]:
    import aiokafka
    from aiokafka.client import AIOKafkaClient
    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.consumer.fetcher import Fetcher
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from faust.app.base import App
    from faust.stores import memory, rocksdb
    from faust.tables.manager import TableManager
    from faust.tables.recovery import Recovery
    from faust.transport.drivers import aiokafka as driver

    names = {
        App: "_new_consumer _consumer consumer_generation_id rebalancing",
        driver.Consumer: (
            "_drain_messages _wait_next_records _to_message _commit _read_offset _thread "
            "_stopped suspend_flow callback flow_active should_stop on_buffer_full "
            "on_buffer_drop wait_first highwater earliest_offsets consumer_stopped_errors "
            "_get_active_partitions"
        ),
        driver.AIOKafkaConsumerThread: "_ensure_consumer _create_worker_consumer call_thread",
        driver.Producer: "_ensure_producer",
        aiokafka.AIOKafkaConsumer: "_coordinator _client _fetch_max_wait_ms _fetcher",
        Fetcher: "_prefetch_backoff",
        GroupCoordinator: "fetch_committed_offsets _send_req",
        AIOKafkaClient: "_conns",
        AIOKafkaConnection: "_last_action",
        # streams.kafka.TableManager.on_start is faust's, less its 1 s sleep.
        TableManager: "on_start _update_channels recovery should_stop",
        Recovery: "active_tps active_offsets",
        rocksdb.Store: "_encode_key _db_for_partition _key_index",
        memory.Store: "_key_partition",
    }
    return [(cls, name) for cls, spaced in names.items() for name in spaced.split()]


def test_every_private_part_the_boundary_uses_exists_in_the_installed_versions() -> None:
    missing = [
        f"{cls.__module__}.{cls.__qualname__}.{name}"
        for cls, name in _relied_on()
        if not _defines(cls, name)
    ]
    assert missing == []


def test_the_boundary_names_only_parts_listed_here() -> None:
    # Every ``obj._private`` the boundary touches on a library object is one this test checks.
    source = (ROOT / "streams" / "kafka.py").read_text()
    used = set(re.findall(r"\b(?!self\b|feed\b)[a-z_]+\.(_[a-z][a-z_]*)\b", source))
    checked = {name for _, name in _relied_on()}
    assert used - checked == set()


@pytest.mark.parametrize("package", ["faust-streaming", "mode-streaming", "aiokafka"])
def test_the_installed_version_is_the_pinned_one(package: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = dict(d.split("==", 1) for d in pyproject["project"]["dependencies"] if "==" in d)
    assert metadata.version(package) == pins[package]


def test_no_other_module_touches_a_private_part_of_a_library_object() -> None:
    # ``os._exit`` and a named tuple's ``_replace`` are public API in private-looking dress.
    private = re.compile(r"\b(?!self\b|cls\b|os\b|parts\b)[a-z_]+\.(_[a-z][a-z_]*)\b")
    by_name = re.compile(r"getattr\([^,]+,\s*\"(_[a-z][a-z_]*)\"")
    offenders = {}
    for path in sorted((ROOT / "streams").rglob("*.py")):
        if path.name == "kafka.py":
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        found = set(private.findall(code)) | set(by_name.findall(code))
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(found)
    assert offenders == {}


def test_the_input_consumer_waits_at_the_broker_only_as_long_as_the_setting_says() -> None:
    # faust hard-codes fetch_max_wait_ms=1500 for its worker consumer; the embedded
    # broker answers a waiting fetch only at its end, so that was an action's latency.
    import asyncio

    from agents.rules import Rules
    from streams.app import create_app
    from streams.settings import Settings

    async def fetch_wait_ms(settings: Settings) -> int:
        app = create_app(settings, Rules()).app
        client = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return int(client._fetch_max_wait_ms)
        finally:
            await client.stop()

    assert asyncio.run(fetch_wait_ms(Settings())) == 30
    assert asyncio.run(fetch_wait_ms(Settings(fetch_wait=0.25))) == 250


def test_the_producer_batches_as_many_bytes_as_the_setting_says() -> None:
    # faust's default, 16 KiB, put a round's ~3 MB of changelog records in ~200 record
    # batches that the producer sent one after another per partition.
    import asyncio

    from agents.rules import Rules
    from streams.app import create_app
    from streams.settings import Settings

    async def batch_bytes(settings: Settings) -> tuple[int, int]:
        app = create_app(settings, Rules()).app
        producer = app.producer._new_producer()
        try:
            return producer._message_accumulator._batch_size, producer._max_request_size
        finally:
            await producer.stop()

    size, request = asyncio.run(batch_bytes(Settings()))
    assert size == 960 * 1024 and request >= 4 * size
    assert asyncio.run(batch_bytes(Settings(producer_batch_bytes=65536)))[0] == 65536


def test_a_record_batch_the_worker_fills_is_sent_without_waiting_out_the_linger() -> None:
    # streams.kafka sends record batches it fills itself (outputs, changelog, progress,
    # promises); nothing is added to them later. aiokafka holds a batch still open for
    # the producer's linger (MessageBatch.remaining_linger; faust's producer_linger_ms,
    # 5 ms) before its sender takes it, so every write of a round waited that long, and
    # a promise's round trip through the aggregates agent four times.
    import asyncio

    from aiokafka.producer.message_accumulator import MessageBatch
    from aiokafka.structs import TopicPartition

    from agents.rules import Rules
    from streams.app import create_app
    from streams.kafka import _send_batches
    from streams.settings import Settings

    async def sent_batches() -> list[MessageBatch]:
        app = create_app(Settings(producer_batch_bytes=65536), Rules()).app
        producer = app.producer._new_producer()
        linger = producer._message_accumulator._linger_time
        assert linger > 0
        handed: list[MessageBatch] = []

        class Producer:
            create_batch = producer.create_batch

            async def send_batch(self, batch: Any, topic: str, *, partition: int) -> None:
                tp = TopicPartition(topic, partition)
                handed.append(MessageBatch(tp, batch, 30.0, linger))

        try:
            records = {0: [(b"c-%d" % i, b"x" * 1024) for i in range(100)], 1: [(b"c", b"{}")]}
            await _send_batches(Producer(), "crm.test", records)
        finally:
            await producer.stop()
        return handed

    handed = asyncio.run(sent_batches())
    assert len(handed) >= 3  # partition 0's records fill more than one batch
    assert [batch.remaining_linger() for batch in handed] == [None] * len(handed)


def test_the_table_managers_start_is_fausts_less_its_sleep() -> None:
    # streams.kafka.TableManager.on_start repeats faust's steps without the 1 s sleep
    # before them: a faust version whose start does more must be looked at first.
    from faust.tables.manager import TableManager as Faust

    from streams.kafka import TableManager

    def awaited(method: object) -> list[str]:
        lines = inspect.getsource(method).splitlines()  # type: ignore[arg-type]
        return [line.strip() for line in lines if line.strip().startswith("await ")]

    assert awaited(Faust.on_start) == [
        "await self.sleep(1.0)",
        "await self._update_channels()",
        "await self.recovery.start()",
    ]
    assert awaited(TableManager.on_start) == awaited(Faust.on_start)[1:]
