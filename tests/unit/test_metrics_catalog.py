"""The metrics catalog (deploy/METRICS.md) matches the code, and labels stay bounded."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from streams import metrics

CATALOG = Path(__file__).parents[2] / "deploy" / "METRICS.md"
#: Label names that would put an unbounded value (an id, free text) into a series.
UNBOUNDED = re.compile(r"(^|_)(id|ids|customer|order|sku|email|phone|name|text|reason|query)$")


def _ours() -> dict[str, MetricWrapperBase]:
    return {
        m._name: m  # type: ignore[attr-defined]
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase) and m._name.startswith("crm_")  # type: ignore[attr-defined]
    }


def _catalog_rows() -> dict[str, tuple[str, list[str]]]:
    rows = {}
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`crm_"):
            labels = re.findall(r"`([a-z_]+)`", cells[2])
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def test_every_metric_is_in_the_catalog_with_its_type_and_labels():
    rows = _catalog_rows()
    ours = _ours()
    assert set(rows) == {_exposed_name(m) for m in ours.values()}
    for metric in ours.values():
        kind, labels = rows[_exposed_name(metric)]
        assert kind == metric._type, _exposed_name(metric)  # type: ignore[attr-defined]
        assert labels == list(metric._labelnames), _exposed_name(metric)  # type: ignore[attr-defined]


def _exposed_name(metric: MetricWrapperBase) -> str:
    name: str = metric._name  # type: ignore[attr-defined]
    return f"{name}_total" if metric._type == "counter" else name  # type: ignore[attr-defined]


def test_no_label_can_carry_an_id_or_free_text():
    ours = _ours()
    assert sum(1 for m in ours.values() if m._labelnames) >= 30  # type: ignore[attr-defined]
    for metric in ours.values():
        for label in metric._labelnames:  # type: ignore[attr-defined]
            assert not UNBOUNDED.search(label), f"{metric._name} has label {label!r}"  # type: ignore[attr-defined]


def test_the_metrics_page_exposes_every_catalogued_metric():
    body, _ = metrics.exposition()
    text = body.decode()
    rows = _catalog_rows()
    assert len(rows) >= 60
    for name, (kind, _) in rows.items():
        assert f"# TYPE {name} {kind}" in text


def test_the_metrics_page_can_be_asked_for_a_few_samples_only():
    metrics.BATCH_SIZE.observe(3)

    body, _ = metrics.exposition(["crm_batch_records_count", "crm_worker_ready"])
    text = body.decode()

    assert "crm_batch_records_count " in text
    assert "crm_worker_ready " in text
    # Nothing else: not the histogram's other samples, not the other metrics
    assert "crm_batch_records_sum" not in text
    assert "crm_batch_records_bucket" not in text
    assert "crm_events_in_total" not in text


def test_the_page_is_prometheus_text_with_the_charset_left_to_the_server():
    """aiohttp adds the charset itself and refuses a content type that carries one."""
    _, content_type = metrics.exposition()

    assert content_type.startswith("text/plain; version=")
    assert "charset" not in content_type


def test_readiness_is_one_or_zero_on_the_page_and_to_the_health_check():
    was = metrics.is_ready()
    try:
        metrics.set_ready(True)
        assert metrics.is_ready()
        assert REGISTRY.get_sample_value("crm_worker_ready") == 1
        metrics.set_ready(False)
        assert not metrics.is_ready()
        assert REGISTRY.get_sample_value("crm_worker_ready") == 0
    finally:
        metrics.set_ready(was)
