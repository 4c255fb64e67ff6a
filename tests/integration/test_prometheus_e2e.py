"""A real Prometheus server scrapes a real worker and fires a real alert.

Prometheus (Debian's ``prometheus`` package, ``./dev test`` installs it) runs
on loopback with a generated config: scrape and rule evaluation every second,
one target (the worker's ``/metrics``), and the rules of
``deploy/prometheus/rules/`` with the same expressions and only their ``for:``
shortened. Valid events leave CrmstreamDeadLettersHigh quiet; malformed
records make it fire, as seen through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.tools.embedded import free_port, wait_for_port
from tests.integration.broker import produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
ALERT = "CrmstreamDeadLettersHigh"
#: Every alert's ``for:`` in the test copy of the rules.
SHORT_FOR = "3s"


def derived_rules(paths: list[Path]) -> dict[str, Any]:
    """The real rule groups with every alert's ``for:`` set to :data:`SHORT_FOR`."""
    groups = []
    for path in paths:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = SHORT_FOR
            groups.append(group)
    return {"groups": groups}


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.get("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name]

    def value(self, expr: str) -> float | None:
        result = self.get("/api/v1/query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None


def wait_ready(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until Prometheus answers ``/-/ready`` with 200 (its storage is open)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # refused, or 503 while it starts (HTTPError is an OSError)
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"Prometheus not ready at {url}; its log: {log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus scraping ``127.0.0.1:port``; stopped (and waited for) at the end."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail(
            "prometheus is not installed: apt-get install -y prometheus (or ./dev test)",
            pytrace=False,
        )
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_port: int) -> Prometheus:
        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump(derived_rules(RULES)), encoding="utf-8")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "crmstream",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                }
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        procs.append(proc)
        wait_for_port(port, 30, proc)  # type: ignore[arg-type]
        url = f"http://127.0.0.1:{port}"
        # The port opens before the storage is: until /-/ready says 200, queries get 503.
        wait_ready(url, 30, proc, tmp_path / "prometheus.log")
        return Prometheus(url)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def poll(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_the_derived_rules_keep_every_expression():
    derived = derived_rules(RULES)["groups"]
    original = [g for p in RULES for g in yaml.safe_load(p.read_text(encoding="utf-8"))["groups"]]

    assert [r["expr"] for g in derived for r in g["rules"]] == [
        r["expr"] for g in original for r in g["rules"]
    ]
    assert {r.get("for") for g in derived for r in g["rules"] if "alert" in r} == {SHORT_FOR}


def test_malformed_records_make_the_dead_letter_alert_fire_in_prometheus(
    crm_settings, workers, events, prometheus_for
):
    t = crm_settings.topics
    # Given a worker scraped by Prometheus, handling valid events only
    _, port = workers.start()
    prometheus = prometheus_for(port)
    produce(crm_settings, [events.order(f"prom-{i}", order_id=f"p{i}") for i in range(10)])
    poll(
        lambda: (prometheus.value('sum(crm_events_in_total{job="crmstream"})') or 0) >= 10,
        60,
        "Prometheus to see the valid events",
    )
    up = prometheus.value('up{job="crmstream"}')
    assert up == 1
    time.sleep(5)  # longer than the shortened for: the alert would be firing by now
    assert prometheus.alerts(ALERT) == []

    # When a producer sends malformed records
    produce(crm_settings, [(t.orders, b"bad", b"{not json") for _ in range(30)])

    # Then Prometheus evaluates the real expression and the alert becomes firing
    firing = poll(
        lambda: [a for a in prometheus.alerts(ALERT) if a["state"] == "firing"],
        60,
        f"{ALERT} to fire",
    )
    assert firing[0]["labels"]["severity"] == "warning"
    assert firing[0]["annotations"]["runbook_url"].endswith("#crmstreamdeadlettershigh")
    ratio = prometheus.value("crmstream:dead_letter_ratio:rate5m")
    assert ratio is not None and ratio > 0.05
