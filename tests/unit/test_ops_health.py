"""Readiness when the broker goes silent, and the watch on a rebalance that never gives an
assignment (streams.ops), without a broker."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams.kafka import consumer_last_response
from streams.ops import AssignmentWatch, BrokerContact, Operations, silence_limit
from streams.settings import Settings


@pytest.mark.parametrize(
    ("session_timeout", "limit"),
    [(6.0, 4.0), (10.0, 6.0), (30.0, 15.0), (3.0, 2.0), (45.0, 22.5)],
)
def test_silence_limit_is_half_the_session_timeout_and_two_heartbeats_at_least(
    session_timeout, limit
):
    assert silence_limit(session_timeout) == limit
    assert silence_limit(session_timeout) < session_timeout


def test_silence_grows_from_the_last_response_even_once_connections_are_gone():
    contact = BrokerContact(limit=4.0)

    assert contact.note(None, now=10.0) is None  # never heard from a broker yet
    assert contact.note(100.0, now=100.0) == 0.0
    assert contact.note(100.0, now=101.0) == 1.0
    assert contact.note(None, now=103.0) == 3.0  # every connection closed
    assert not contact.silent(3.0)
    assert not contact.silent(4.0)  # at the limit: not yet
    assert contact.note(None, now=104.5) == 4.5
    assert contact.silent(4.5)


def test_an_older_response_time_never_moves_the_contact_back():
    contact = BrokerContact(limit=4.0)
    contact.note(100.0, now=100.0)

    assert contact.note(90.0, now=101.0) == 1.0


def _consumer(*connections: tuple[bool, float]):
    conns = {
        i: SimpleNamespace(connected=lambda up=up: up, _last_action=at)
        for i, (up, at) in enumerate(connections)
    }
    client = SimpleNamespace(_conns=conns)
    return SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_client=client)))


def test_the_last_response_is_the_latest_of_the_open_connections():
    consumer = _consumer((True, 5.0), (True, 9.0), (False, 12.0))

    assert consumer_last_response(consumer) == 9.0


def test_no_client_or_no_open_connection_is_no_response():
    assert consumer_last_response(SimpleNamespace()) is None
    assert consumer_last_response(_consumer((False, 3.0))) is None
    assert consumer_last_response(_consumer()) is None


def test_a_rebalance_without_assignment_is_due_after_the_limit():
    watch = AssignmentWatch(limit=60.0)

    watch.rebalance_started(100.0)
    watch.rebalance_started(130.0)  # still the same rebalance: the wait counts from 100

    assert not watch.due(159.0)
    assert watch.due(160.0)


def test_an_assignment_ends_the_wait_and_the_rejoin_count():
    watch = AssignmentWatch(limit=60.0)
    watch.rebalance_started(0.0)
    assert watch.rejoined(60.0) == 1

    watch.assigned()

    assert watch.waiting_since is None and watch.rejoins == 0
    assert watch.waited(1000.0) == 0.0
    assert not watch.due(1000.0)


def test_each_rejoin_restarts_the_count():
    watch = AssignmentWatch(limit=60.0)
    watch.rebalance_started(0.0)

    assert watch.rejoined(60.0) == 1
    assert not watch.due(100.0)
    assert watch.due(120.0)
    assert watch.rejoined(120.0) == 2


def test_a_limit_of_zero_never_rejoins_and_any_other_does():
    watch = AssignmentWatch(limit=0.0)
    watch.rebalance_started(0.0)

    assert not watch.due(1e9)
    short = AssignmentWatch(limit=0.5)
    short.rebalance_started(0.0)
    assert short.due(0.5)


@pytest.mark.parametrize(("limit", "watchdogs"), [(60.0, 1), (0.0, 0)])
def test_one_watch_runs_however_many_rebalances_start_and_none_with_a_limit_of_zero(
    limit: float, watchdogs: int
):
    """Two watches would each leave and rejoin the group: the second rebalance must not
    start another."""

    async def rebalance_twice() -> list[asyncio.Task[None]]:
        settings = Settings(assignment_timeout=limit)
        app = SimpleNamespace(should_stop=False)
        ops = Operations(SimpleNamespace(settings=settings, app=app, feed=None))  # type: ignore[arg-type]
        started = []
        for _ in range(2):
            await ops._rebalance_started(None)
            if ops.watchdog is not None:
                started.append(ops.watchdog)
        app.should_stop = True
        for task in started:
            task.cancel()
        return started

    started = asyncio.run(rebalance_twice())

    assert len(set(started)) == watchdogs


def test_while_the_broker_is_silent_the_decision_is_postponed():
    watch = AssignmentWatch(limit=60.0)
    watch.rebalance_started(0.0)

    watch.postpone(60.0)

    assert watch.rejoins == 0
    assert not watch.due(100.0)
    assert watch.due(120.0)
