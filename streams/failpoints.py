"""Failpoints: named places in the batch loop where a test can make the worker die.

``CRM_FAILPOINTS=after_send`` makes the worker exit at once (``os._exit``, as
abruptly as SIGKILL: no flush, no commit, no leaving the group) the first time
it gets there, so a test can check that every input record still ends applied
or dead-lettered exactly as without the crash. Empty (the default): every
:func:`hit` is a set lookup and nothing else.

Points, in the order a batch passes them (streams.customer_agent.handle_round, then
the round's writes, which run while the next round folds):
``after_fold`` (folded and timers fired, nothing sent), ``after_send`` (dead
letters and outputs acknowledged by the broker, state not written),
``after_write`` (state written, offsets not yet marked handled or committed).

Two points hold instead of exiting: ``during_restore`` stops the fetch loop for
good once the first changelog batch of a recovery is restored in bulk
(streams.kafka.InputFeed), so the worker stays in recovery, its pages still
answering, until it is stopped: a test can then read the recovery gauges.
``signals_unacknowledged`` makes the aggregates agent's first batch of signals wait
for good for the broker's acknowledgements of what it sent (streams.aggregates_agent),
as behind a broker slow to acknowledge: a test can then see what else goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os

#: Points where the worker exits (crash tests run each).
POINTS = ("after_fold", "after_send", "after_write")
#: Points where the worker holds instead.
HOLDS = ("during_restore", "signals_unacknowledged")

log = logging.getLogger(__name__)

_armed: set[str] = set()


def arm(spec: str) -> None:
    """Arm the comma-separated failpoints of ``spec`` (the CRM_FAILPOINTS setting)."""
    names = {name.strip() for name in spec.split(",") if name.strip()}
    unknown = names - set(POINTS) - set(HOLDS)
    if unknown:
        raise ValueError(f"unknown failpoints: {', '.join(sorted(unknown))}")
    _armed.clear()
    _armed.update(names)


async def hold(name: str, doing: str) -> None:
    """Wait for good if ``name`` (one of :data:`HOLDS`) is armed, saying what is held
    (``doing``): the worker stays as it is, its pages answering, until it is stopped."""
    if name in _armed:
        log.critical("failpoint %s: %s (CRM_FAILPOINTS)", name, doing)
        await asyncio.Event().wait()


def hit(name: str) -> None:
    """Exit the process at once if ``name`` is armed."""
    if name in _armed:
        log.critical("failpoint %s: exiting now (CRM_FAILPOINTS)", name)
        logging.shutdown()
        os._exit(86)
