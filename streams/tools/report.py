"""``crmstream report actions``: the uplift report (:mod:`agents.uplift`) from the topics.

Reads ``crm.actions``, ``crm.action-decisions``, ``crm.action-outcomes`` and
``crm.conversions`` from their beginning to their end as of now (records that are
not JSON objects are skipped), and prints, per action type, treated against
held out: sent, delivered, opened, clicked, converted, revenue and the conversion
uplift with its 95 % interval -- a table, or ``--json``.
"""

from __future__ import annotations

from typing import Any

from schemas import codec
from streams.settings import Settings
from streams.tools.topic_read import read_to_end


async def read_topics(
    settings: Settings,
    topics: list[str],
    connect_timeout: float = 30.0,
    read_timeout: float = 300.0,
) -> dict[str, list[dict[str, Any]]]:
    """Every record (decoded JSON objects) of ``topics`` from the beginning to their end
    as of now (:func:`streams.tools.topic_read.read_to_end`), each topic's partitions
    one after the other; creates missing topics first, like every command that talks
    to the broker."""
    from streams.topics import ensure_topics

    await ensure_topics(settings, timeout=connect_timeout)
    read = await read_to_end(
        settings,
        topics,
        _json_object,
        read_timeout=read_timeout,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    return {
        topic: [r for records in parts.values() for r in records] for topic, parts in read.items()
    }


def _json_object(record: Any) -> dict[str, Any] | None:
    """A record's value as a JSON object; None (skipped) for anything else."""
    try:
        value = codec.loads(record.value) if record.value else None
    except codec.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def action_report(
    settings: Settings, since: str | None = None, read_timeout: float = 300.0
) -> Any:
    """The :class:`agents.uplift.Report` of everything on the topics now."""
    from agents import uplift

    t = settings.topics
    names = [t.actions, t.action_decisions, t.outcomes, t.conversions]
    records = await read_topics(settings, names, read_timeout=read_timeout)
    return uplift.build(
        records[t.actions],
        records[t.action_decisions],
        records[t.outcomes],
        records[t.conversions],
        since=since,
    )
