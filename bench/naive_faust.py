"""The naive faust anchor: what a plain faust app does with the same backlog.

    python -m bench.naive_faust --broker kafka://127.0.0.1:9092 --topics a,b,c \\
        --app-id naive-0 --partitions 4 --metrics-port 9300 [--data-dir DIR]

One faust app, one agent on every input topic, ``async for`` per event,
``orjson.loads`` of the value, and one update of a faust ``Table`` per event
(``counts[customer_id] += 1``; memory store, changelog on: each update is one
changelog record sent through faust's producer buffer). Nothing else: no
validation, no rules, no outputs. It is the code a first faust version of
crmstream would be, and the anchor crmstream's throughput is read against
(issue 14: crmstream should run at least 4x this in the same process tree).

It is run as its own process by :mod:`bench.throughput`, against the same
pre-filled topics, each pass with its own app id (consumer group and changelog).
Progress is counted in ``bench_naive_events_total`` on a Prometheus page at
``--metrics-port`` (prometheus_client's own HTTP server, in a thread), which the
benchmark polls exactly as it polls a crmstream worker's ``/metrics``.

Not naive in set-up, so that the anchor measures faust and not a misconfiguration:
uvloop as in the worker, faust's web server off, faust's terminal spinner off (it
raises the root logger to DEBUG: every debug call in faust and aiokafka would
build a record), the same session/rebalance timeouts as the benchmark's workers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.naive_faust", description=__doc__)
    p.add_argument("--broker", required=True, help="faust broker URL, e.g. kafka://host:port")
    p.add_argument("--topics", required=True, help="comma-separated input topics")
    p.add_argument("--app-id", required=True, help="faust app id (consumer group, changelog)")
    p.add_argument("--partitions", type=int, required=True, help="partitions of the topics")
    p.add_argument("--metrics-port", type=int, required=True, help="Prometheus page port")
    p.add_argument("--data-dir", default="naive-faust-data", help="faust's datadir")
    p.add_argument("--session-timeout", type=float, default=6.0)
    p.add_argument("--log-level", default="warning")
    return p


def build_app(args: argparse.Namespace) -> Any:
    """The app: one agent, one table (importing faust only here)."""
    import faust
    import orjson
    from prometheus_client import Counter

    processed = Counter("bench_naive_events_total", "Records taken by the naive faust agent.")
    not_json = Counter("bench_naive_not_json_total", "Records whose value was not JSON.")
    app = faust.App(
        args.app_id,
        broker=args.broker,
        store="memory://",
        datadir=args.data_dir,
        autodiscover=False,
        topic_partitions=args.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=args.session_timeout,
        broker_rebalance_timeout=args.session_timeout,
        broker_heartbeat_interval=min(3.0, args.session_timeout / 3),
        web_enabled=False,
        logging_config=None,
    )
    counts = app.Table("counts", default=int, partitions=args.partitions, key_type=str)
    topic = app.topic(*args.topics.split(","), key_serializer="raw", value_serializer="raw")
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    inc = processed.inc

    @app.agent(topic)
    async def count_events(stream: Any) -> None:
        async for value in stream:
            try:
                data = loads(value)
            except decode_error:
                not_json.inc()
                inc()
                continue
            customer_id = data.get("customer_id") if isinstance(data, dict) else None
            counts[str(customer_id)] += 1
            inc()

    return app


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    import asyncio

    import faust
    from prometheus_client import start_http_server

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build_app(args)
    start_http_server(args.metrics_port, addr="127.0.0.1")
    worker = faust.Worker(app, loop=loop, loglevel=args.log_level, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
