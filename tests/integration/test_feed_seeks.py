"""The input feed seeks on the consumer's own thread (the real broker, faust's real
consumer thread, aiokafka's real fetcher).

faust runs aiokafka in a thread of its own; its ``Consumer.seek`` calls aiokafka's
``seek`` on the caller's thread, which changes the fetcher's partition states and
its table of fetched records while the fetcher's thread uses them. Here the
feed positions 16 partitions again and again while the consumer thread fetches
them, as a worker does after each rebalance: before the feed seeked through the
consumer thread, a fetch died of a ``KeyError`` within seconds, 3 runs of 3 (in a
worker that kills the fetch loop: the worker stops).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from agents.rules import Rules
from streams.app import create_app
from streams.kafka import RecordQueue
from streams.topics import ensure_topics
from tests.integration.broker import ensure_settings_partitions

pytestmark = pytest.mark.integration

PARTITIONS = 16
SECONDS = 15.0


def test_positioning_while_the_consumer_thread_fetches_breaks_nothing(crm_settings):
    settings = ensure_settings_partitions(crm_settings, PARTITIONS)
    asyncio.run(ensure_topics(settings))
    topic = settings.topics.orders

    async def run() -> tuple[int, int]:
        rt = create_app(settings.replace(fetch_wait=0.01), Rules())
        feed, consumer = rt.feed, rt.app.consumer
        queue = RecordQueue()
        feed.sinks = {topic: queue}
        thread = consumer._thread
        await thread.start()
        tps = {consumer._new_topicpartition(topic, p) for p in range(PARTITIONS)}
        aio = thread._ensure_consumer()

        async def assign() -> None:
            aio.assign(list(tps))

        await thread.call_thread(assign)
        producer = AIOKafkaProducer(bootstrap_servers=settings.broker_bootstrap, linger_ms=2)
        await producer.start()
        stop = asyncio.Event()
        fetched = positionings = 0

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                for _ in range(PARTITIONS):
                    await producer.send(topic, b"x" * 64, key=str(i).encode())
                    i += 1
                await asyncio.sleep(0.002)

        async def fetch() -> None:  # what faust's Consumer._getmany does for the feed
            nonlocal fetched
            while not stop.is_set():
                records = await thread.getmany(tps, 0.05)
                fetched += sum(len(r) for r in records.values())

        async def position() -> None:  # what the feed does after every assignment
            nonlocal positionings
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                await feed._seek_committed(0)
                positionings += 1
                await asyncio.sleep(0)
            stop.set()

        try:
            tasks = [asyncio.create_task(f()) for f in (produce, fetch, position)]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            stop.set()
            for task in tasks:
                await task  # raises what a task died of
        finally:
            await producer.stop()
            await thread.stop()
        return fetched, positionings

    fetched, positionings = asyncio.run(run())
    assert fetched > 0 and positionings > 0
