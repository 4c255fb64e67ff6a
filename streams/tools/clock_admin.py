"""``crmstream clock``: move the partitions' stream time, and read the workers' clocks.

``clock tick --to TIME`` sends one ``clock.tick`` control record
(:class:`schemas.control.ClockTick`) to every partition of an input topic: each
partition's stream time moves to TIME (if it was earlier), so on the replay
clock the timers due before it fire. ``clock show`` reads ``GET /clock`` from
workers: per partition they own, its stream time, watermark, how far timers
have fired, whether its inputs are caught up, records buffered.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from schemas import codec
from schemas.control import ClockTick
from schemas.errors import CrmStreamError
from streams.as_of import iso
from streams.settings import Settings
from streams.tools.replay import duration_text


class ClockError(CrmStreamError):
    """A worker could not be asked for its clock; the message says why."""


@dataclass(frozen=True)
class Tick:
    """One ``clock.tick`` record for one partition."""

    topic: str
    partition: int
    event_id: str
    value: bytes


def ticks(topic: str, partitions: list[int], at: float) -> list[Tick]:
    """A ``clock.tick`` at ``at`` for each of ``partitions`` of ``topic``, validated
    against the contract; event id ``tick:<time>:<partition>``."""
    when = iso(at)
    out = []
    for partition in partitions:
        event_id = f"tick:{when}:{partition}"
        record = ClockTick.model_validate(
            {"type": "clock.tick", "event_id": event_id, "occurred_at": when}
        )
        value = codec.dumps(record.model_dump(mode="json"))
        out.append(Tick(topic, partition, event_id, value))
    return out


async def send_ticks(
    settings: Settings, topic: str, at: float, connect_timeout: float
) -> list[tuple[Tick, int]]:
    """Send a tick at ``at`` to every partition of ``topic`` (created with the other
    topics if missing) and wait for the broker's acks: ``(tick, offset)`` each.

    :class:`~schemas.errors.BrokerUnreachable` if the broker does not answer within
    ``connect_timeout`` seconds.
    """
    from aiokafka import AIOKafkaProducer

    from streams.topics import ensure_topics

    await ensure_topics(settings, timeout=connect_timeout)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_bootstrap,
        acks="all",
        request_timeout_ms=int(max(connect_timeout, 1) * 1000),
        **settings.kafka_client_options(),
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batch = ticks(topic, partitions, at)
        pending = [
            await producer.send(t.topic, t.value, key=None, partition=t.partition) for t in batch
        ]
        acked = await asyncio.gather(*pending)
        return [(t, meta.offset) for t, meta in zip(batch, acked, strict=True)]
    finally:
        await producer.stop()


def fetch_clock(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    """A worker's ``GET /clock`` document, or :class:`ClockError` saying why not."""
    url = f"{base_url.rstrip('/')}/clock"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            doc = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = " (a worker without /clock: older than this crmstream?)" if exc.code == 404 else ""
        raise ClockError(f"{url} answered HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClockError(
            f"no worker answering at {base_url} ({reason}); start one with "
            "'crmstream up' or 'crmstream worker', or pass --url"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("partitions"), dict):
        raise ClockError(f"{url} did not answer with a clock document")
    return doc


def render_clock(url: str, doc: dict[str, Any]) -> str:
    """A worker's clock for a person: one header line, one line per partition."""
    clock = doc.get("clock", "?")
    lines = [
        f"{url}  clock {clock}, timer lateness "
        f"{duration_text(doc.get('clock_lateness_seconds', 0))}; events refused when older "
        "than stream time - "
        f"{duration_text(doc.get('allowed_lateness_seconds', 0))} or later than now + "
        f"{duration_text(doc.get('max_clock_skew_seconds', 0))}"
    ]
    parts = doc["partitions"]
    if not parts:
        lines.append("  no partition assigned yet (rebalancing, or more workers than partitions)")
        return "\n".join(lines)
    # The replay clock with promises: records wait until the aggregates agent has promised
    # no proposal before them (README, "Event time").
    promised = any("proposals_until" in p for p in parts.values())
    lines.append(
        f"  {'partition':>9}  {'stream time':<32}  {'watermark':<32}  "
        f"{'timers fired through':<32}  caught up  buffered"
        + ("  proposals until" if promised else "")
    )
    for partition, p in sorted(parts.items(), key=lambda kv: int(kv[0])):
        times = [p.get(k) or "-" for k in ("stream_time", "watermark", "timers_fired_through")]
        caught_up = ("settling" if p.get("settling") else "yes") if p.get("caught_up") else "no"
        buffered = str(p.get("buffered", 0))
        line = (
            f"  {partition:>9}  {times[0]:<32}  {times[1]:<32}  {times[2]:<32}  "
            f"{caught_up:<9}  {buffered}"
        )
        if promised:
            until = p.get("proposals_until") or "(not every signals partition has promised)"
            line = f"{line}{'':<{max(1, 10 - len(buffered))}}{until}"
        lines.append(line)
    return "\n".join(lines)
