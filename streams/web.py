"""HTTP pages on the worker: metrics, liveness, readiness."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from streams import metrics
from streams.app import app


@app.page("/metrics")
async def metrics_page(web: View, request: Request) -> Response:
    body, content_type = metrics.exposition()
    return web.bytes(body, content_type=content_type)


@app.page("/livez")
async def liveness(web: View, request: Request) -> Response:
    return web.json({"status": "alive"})


@app.page("/readyz")
async def readiness(web: View, request: Request) -> Response:
    ready = _is_ready()
    body: dict[str, Any] = {"ready": ready, "rebalancing": bool(app.rebalancing)}
    return web.json(body, status=200 if ready else 503)


def _is_ready() -> bool:
    return metrics.is_ready() and not app.rebalancing and not app.in_recovery
