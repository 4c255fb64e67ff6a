"""Running one worker process: topics, agents, web pages, faust's Worker."""

from __future__ import annotations

import asyncio
import logging

from agents.rules import Rules
from streams.settings import Settings
from streams.topics import ensure_topics


def run_worker() -> int:
    """Start a worker with the environment's settings; returns when it stops (SIGTERM/SIGINT)."""
    settings = Settings.from_env()  # fail fast on bad settings and rules, before any I/O
    Rules.load(settings.rules_file)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(ensure_topics(settings))

    import faust

    import streams.ops  # registers the lag and recovery sampler
    import streams.web  # noqa: F401  (registers the pages)
    from streams import aggregates_agent, customer_agent  # noqa: F401  (register the agents)
    from streams.app import app, subscribe

    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    subscribe()
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True)
    # faust's terminal spinner raises the root logger to DEBUG, which makes every
    # debug call in faust and aiokafka build a record: ~11% of a busy worker.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
