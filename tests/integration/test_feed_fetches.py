"""A partition whose fetched records wait holds back no other partition's fetches (the
real broker, faust's real consumer thread, aiokafka's real fetcher).

When an input partition's lane is full, the feed tells faust's flow control
(``on_buffer_full``), and faust's ``getmany`` stops taking that partition's records:
they stay in aiokafka's fetcher. aiokafka's fetcher then sent no fetch to the broker
at all, for any partition, until those records were 100 ms old (its
``prefetch_backoff``, which its consumer does not let anyone set). A worker draining a
backlog fills some lanes all the time, so the promise a replay waits for, a
progress record, a live event: each waited for such a stall. A trace of a storefront
drain's start showed one fetch of the signals topic take 119 ms where the fetch wait
is 30 ms (bench/README.md, "thirty-eighth session").
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from agents.rules import Rules
from streams.app import create_app

pytestmark = pytest.mark.integration

RECORDS = 50


def test_records_left_waiting_for_a_full_lane_hold_back_no_fetch(crm_settings):
    settings = crm_settings  # topics of its own, 4 partitions
    topic = settings.topics.orders

    async def run() -> tuple[float, int]:
        rt = create_app(settings.replace(fetch_wait=0.01), Rules())
        consumer = rt.app.consumer
        thread = consumer._thread
        await thread.start()
        full, flowing = (consumer._new_topicpartition(topic, p) for p in (0, 1))
        aio = thread._ensure_consumer()

        async def assign() -> None:
            aio.assign([full, flowing])
            await aio.seek_to_beginning(full, flowing)

        producer = AIOKafkaProducer(bootstrap_servers=settings.broker_bootstrap, linger_ms=2)
        await producer.start()
        try:
            for p in (0, 1):
                for i in range(RECORDS):
                    await producer.send(topic, b"x" * 64, key=str(i).encode(), partition=p)
            await producer.flush()
            await thread.call_thread(assign)
            taken = 0
            waiting = aio._fetcher._records
            # What faust's getmany does while ``full``'s lane is full: it asks only for
            # the other partition, and ``full``'s fetched records stay in the fetcher.
            for _ in range(200):
                records = await thread.getmany({flowing}, 0.05)
                taken += sum(len(r) for r in records.values())
                if full in waiting and taken:
                    break
            assert full in waiting, "the fetcher never fetched the full lane's partition"
            # How long those records, left waiting, keep the fetcher from sending any
            # fetch to their broker (aiokafka's FetchResult.calculate_backoff).
            return waiting[full]._backoff, taken
        finally:
            await producer.stop()
            await thread.stop()

    held_back, taken = asyncio.run(run())
    assert taken > 0
    assert held_back == 0
