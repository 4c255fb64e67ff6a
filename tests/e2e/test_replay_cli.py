"""``crmstream replay`` run as a user runs it: a subprocess on the UCI slice.

The counts the command must report are computed here from the file with
nothing but the csv module. One test sends to a real embedded broker (Tansu)
and reads the orders topic back.
"""

from __future__ import annotations

import asyncio
import csv
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streams import codec
from streams.embedded import Stack
from streams.settings import Settings
from tests import cli

pytestmark = pytest.mark.e2e

SLICE = Path(__file__).resolve().parents[1] / "data" / "online_retail_slice.csv"


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return cli.run(*args, env=env, timeout=timeout)


def slice_counts() -> dict[str, Any]:
    """Rows, rejects by reason and orders by type, from the file itself."""
    with open(SLICE, newline="") as f:
        rows = list(csv.DictReader(f))
    adjustment = [r for r in rows if int(r["Quantity"]) < 0 and not r["InvoiceNo"].startswith("C")]
    guest = [r for r in rows if not r["CustomerID"] and r not in adjustment]
    invoices = {
        (r["InvoiceNo"], r["CustomerID"].removesuffix(".0")) for r in rows if r["CustomerID"]
    }
    returned = {inv for inv, _ in invoices if inv.startswith("C")}
    return {
        "rows": len(rows),
        "rejected": {"missing_customer_id": len(guest), "stock_adjustment": len(adjustment)},
        "orders": {"order.placed": len(invoices) - len(returned), "order.returned": len(returned)},
        "customer_of": dict(invoices),
    }


def test_help_lists_replay():
    result = run("--help")

    assert result.returncode == 0
    assert "replay" in result.stdout


def test_dry_run_json_summary_counts_rows_orders_and_rejects(tmp_path):
    expected = slice_counts()
    rejects = tmp_path / "rejects.csv"

    result = run("replay", str(SLICE), "--dry-run", "--json", "--rejects", str(rejects))

    assert result.returncode == 0, result.stderr
    summary = codec.loads(result.stdout)
    assert summary["dry_run"] is True
    assert summary["rows_read"] == expected["rows"]
    assert summary["orders_by_type"] == expected["orders"]
    assert summary["orders_built"] == sum(expected["orders"].values())
    assert summary["events_sent"] == 0
    assert {code: r["rows"] for code, r in summary["rejected_by_reason"].items()} == expected[
        "rejected"
    ]
    assert summary["rows_rejected"] == sum(expected["rejected"].values())
    for reason in summary["rejected_by_reason"].values():
        assert len(reason["first_lines"]) == min(3, reason["rows"])
    with open(rejects, newline="") as f:
        rejected = list(csv.DictReader(f))
    assert len(rejected) == summary["rows_rejected"]
    assert {r["reject_reason"] for r in rejected} == set(expected["rejected"])


def test_plain_summary_is_readable():
    result = run("replay", str(SLICE), "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "dry run: nothing sent" in result.stdout
    assert "missing_customer_id" in result.stdout
    assert "rows read" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--map", "customer=CustomerID,order_id=InvoiceNo,occurred_at=InvoiceDate"], "customer"),
        (
            [
                "--map",
                "customer_id=Client,order_id=InvoiceNo,occurred_at=InvoiceDate,price=UnitPrice",
            ],
            "Client",
        ),
        (["--timezone", "Nowhere/Atlantis"], "--timezone"),
    ],
)
def test_bad_options_exit_2_naming_the_key_and_send_nothing(args, named):
    # no broker is listening here: exiting 2 at once proves nothing was tried
    result = run(
        "replay", str(SLICE), *args, env={"KAFKA_BROKER": "kafka://127.0.0.1:9"}, timeout=20
    )

    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_replay_sends_one_event_per_order_keyed_by_customer(tmp_path):
    expected = slice_counts()
    with Stack(tmp_path / "stack") as stack:
        stack.start_broker()
        env = {"KAFKA_BROKER": stack.broker_url}

        result = run("replay", str(SLICE), "--json", env=env)
        again = run("replay", str(SLICE), "--json", env=env)

        assert result.returncode == 0, result.stderr
        summary = codec.loads(result.stdout)
        assert summary["events_sent_by_type"] == expected["orders"]
        records = read_topic(stack.broker_url, Settings().topics.orders)

    n = sum(expected["orders"].values())
    assert again.returncode == 0, again.stderr
    ids = Counter(value["event_id"] for _, value in records)
    assert len(ids) == n  # one event per order ...
    assert set(ids.values()) == {2}  # ... and the second run repeated the same ids
    for key, value in records:
        assert key == value["customer_id"] == expected["customer_of"][value["order_id"]]
        assert value["event_id"] == f"replay:{value['type']}:{value['order_id']}"


def read_topic(broker_url: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record of ``topic`` as (key, value); done after 3 s without a record."""

    async def go() -> list[tuple[str, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker_url.split("://", 1)[1],
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[tuple[str, dict[str, Any]]] = []
        try:
            idle = 0
            while idle < 3:
                batch = await consumer.getmany(timeout_ms=1000)
                idle = 0 if batch else idle + 1
                for part in batch.values():
                    out.extend((r.key.decode(), codec.loads(r.value)) for r in part)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())
