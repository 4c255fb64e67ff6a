"""``crmstream topics`` (:func:`streams.topics.ensure_topics`) on the real broker: every
topic a deployment reads or writes is created once, with ``CRM_PARTITIONS``
partitions, and a second run creates nothing."""

from __future__ import annotations

import asyncio

import pytest

from streams.tools.topic_read import read_to_end
from streams.topics import ensure_topics
from tests.integration.broker import prefixed_topics

pytestmark = pytest.mark.integration


def test_every_missing_topic_is_created_with_its_partitions_and_then_left_alone(crm_settings):
    # Given a deployment whose topics do not exist yet (the fixture made its own)
    prefix = f"{crm_settings.app_id}-new"
    topics = prefixed_topics(prefix)
    settings = crm_settings.replace(topics=topics, partitions=3)
    every = [*topics.inputs, *topics.outputs]

    # When its topics are ensured twice
    created = asyncio.run(ensure_topics(settings))
    again = asyncio.run(ensure_topics(settings))

    # Then the first run created each of them, the second none
    assert sorted(created) == sorted(every) and len(set(every)) == len(every)
    assert again == []
    # And the broker holds each with CRM_PARTITIONS partitions
    read = asyncio.run(read_to_end(settings, every, lambda r: r.offset, read_timeout=60))
    assert {topic: sorted(parts) for topic, parts in read.items()} == {t: [0, 1, 2] for t in every}


def test_two_deployments_that_create_the_same_topics_at_once_both_go_on(crm_settings):
    """Workers started together each ensure the topics; the broker answers the later
    creation of a topic with 'already exists' (36), which is what was asked for."""
    prefix = f"{crm_settings.app_id}-twice"
    topics = prefixed_topics(prefix)
    settings = crm_settings.replace(topics=topics)

    async def both() -> list[list[str]]:
        return list(await asyncio.gather(ensure_topics(settings), ensure_topics(settings)))

    first, second = asyncio.run(both())

    assert set(first) | set(second) == {*topics.inputs, *topics.outputs}
    assert asyncio.run(ensure_topics(settings)) == []
