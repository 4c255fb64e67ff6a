"""The broker's floor for ``bench.latency``: a relay that does no work.

    python -m bench.relay --bootstrap HOST:PORT --inputs T1,T2,... --output T
                          [--share 40] [--fetch-wait-ms 30] [--linger-ms 5]

It stands where the worker stands and takes the same two hops through the broker,
and nothing else: a consumer with no group reads every partition of the inputs
from the beginning (``getmany``, the worker's fetch wait), and for the records
:func:`chosen` (one in ``--share`` by event id, about the storefront mix's share of
events that become actions) sends an action-shaped record (:func:`floor_action`)
to the output, under the input's key; a batch's sends are acknowledged before the
next batch is read, as a worker round's outputs are. No validation, no state, no
rules, no changelog, no group join. What ``bench.latency`` measures through it is
what the embedded broker, this machine and the bench's own clients cost two hops
at that rate: the latency a worker could not go under.

It prints ``relay ready`` once its partitions are assigned and positioned, and runs
until it is stopped (SIGTERM or SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
import time
import zlib
from typing import Any

import orjson

#: What ``bench.latency`` counts the floor's actions as (see ``on_the_wire``).
RULE_ID = "floor.relay"


def chosen(event_id: str, share: int) -> bool:
    """Whether the relay answers this event: one in ``share``, by a hash of its id (the
    same events in every pass of the same seed)."""
    return zlib.crc32(event_id.encode()) % share == 0


def floor_action(event_id: str, now: float) -> bytes:
    """The record the relay sends for ``event_id``: shaped as an action that an event
    triggered directly (``clock`` "event", no ``not_before``), so ``bench.latency``
    measures it as it measures crmstream's."""
    return orjson.dumps(
        {
            "action_id": f"floor-{event_id}",
            "action_type": "floor",
            "rule_id": RULE_ID,
            "clock": "event",
            "not_before": None,
            "trigger_event_ids": [event_id],
            "created_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        }
    )


def answers(value: bytes | None, share: int) -> str | None:
    """The event id of a record the relay answers, else None (not JSON, no string
    ``event_id``, or not :func:`chosen`)."""
    try:
        event_id = orjson.loads(value or b"").get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return event_id if isinstance(event_id, str) and chosen(event_id, share) else None


async def relay(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Forward until ``stop`` is set; returns the number of records sent."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_wait_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=args.linger_ms)
    await consumer.start()
    await producer.start()
    sent = 0
    try:
        await consumer.topics()
        parts = [
            TopicPartition(topic, p)
            for topic in args.inputs
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not parts:
            raise LookupError(f"no partitions found for {', '.join(args.inputs)}")
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        print(f"relay ready ({len(parts)} partitions)", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            acks: list[Any] = []
            for records in batches.values():
                for record in records:
                    event_id = answers(record.value, args.share)
                    if event_id is not None:
                        value = floor_action(event_id, time.time())
                        acks.append(await producer.send(args.output, value, key=record.key))
            if acks:
                await asyncio.gather(*acks)
                sent += len(acks)
    finally:
        await consumer.stop()
        await producer.stop()
    return sent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.relay",
        description="The broker's floor for bench.latency: forward one event in --share "
        "as an action-shaped record, with no work in between.",
    )
    p.add_argument("--bootstrap", required=True, help="the broker, HOST:PORT")
    p.add_argument(
        "--inputs",
        required=True,
        type=lambda s: [t for t in s.split(",") if t],
        help="input topics, comma-separated",
    )
    p.add_argument("--output", required=True, help="the topic the action-shaped records go to")
    p.add_argument("--share", type=int, default=40, help="answer one event in SHARE (40)")
    p.add_argument(
        "--fetch-wait-ms", type=int, default=30, help="the consumer's fetch_max_wait_ms (30)"
    )
    p.add_argument("--linger-ms", type=int, default=5, help="the producer's linger_ms (5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.share < 1:
        print("relay: --share must be at least 1", file=sys.stderr)
        return 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await relay(args, stop)

    try:
        sent = asyncio.run(run())
    except LookupError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    print(f"relay: {sent} records sent", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
