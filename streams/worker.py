"""Running one worker process: topics, the runtime (:func:`build`), faust's Worker."""

from __future__ import annotations

import asyncio
import gc
import logging

from agents.rules import Rules
from streams import metrics, web
from streams.aggregates_agent import AggregatesAgent
from streams.app import Runtime, create_app
from streams.customer_agent import CustomerAgent
from streams.ops import Operations
from streams.settings import Settings
from streams.topics import ensure_topics

#: The collector's thresholds past the youngest generation's (CRM_GC_THRESHOLD):
#: a generation-1 collection every 20 young ones, a full one every 100 of those.
GC_OLDER = (20, 100)


def gc_thresholds(settings: Settings) -> tuple[int, int, int]:
    """The collector's thresholds for a worker with ``settings`` (``gc.set_threshold``)."""
    return (settings.gc_threshold, *GC_OLDER)


def build(settings: Settings, rules: Rules) -> Runtime:
    """The runtime with every shell installed: operations, pages, both agents."""
    rt = create_app(settings, rules)
    operations = Operations(rt)
    operations.install()
    aggregates = AggregatesAgent(rt)
    customers = CustomerAgent(rt)
    web.install(rt, operations, customers.inputs, customers.noteworthy_customers)
    aggregates.install()
    customers.install()
    return rt


def run_worker() -> int:
    """Start a worker with the environment's settings; returns when it stops (SIGTERM/SIGINT)."""
    settings = Settings.from_env()  # fail fast on bad settings and rules, before any I/O
    rules = Rules.load(settings.rules_file)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(ensure_topics(settings))
    gc.set_threshold(*gc_thresholds(settings))
    metrics.watch_gc()

    import faust

    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    rt = build(settings, rules)
    rt.subscribe()
    worker = faust.Worker(rt.app, loop=loop, loglevel=settings.log_level, quiet=True)
    # faust's terminal spinner raises the root logger to DEBUG, which makes every
    # debug call in faust and aiokafka build a record: ~11% of a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
